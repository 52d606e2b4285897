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
    assert (allowed.decision, allowed.tier, allowed.rules) == (
        "allow", "observe", ["read/wordcount.count"])
    assert allowed.steps, "every rule consulted"
    assert allowed.lines[:4] == ["decision: allow (observe)", "tier: observe", "group: read",
                                 "decided by: read/wordcount.count"]
    assert "rules consulted:" in allowed.lines

    rejected = policy.explain(policy_file, agent="amber", action="wordcount.shout")
    assert (rejected.decision, rejected.rules) == ("reject", ["no-shouting"])

    escalated = policy.explain(policy_file, agent="amber", action="mail.send",
                               args={"to": "bob@example.com"})
    assert (escalated.decision, escalated.tier) == ("escalate", "act")
    assert escalated.verdict["level"] == 2
    assert escalated.reasons[0]["why"] == "mail leaves the machine"
    assert "why (as the approver sees it):" in escalated.lines
    assert any(line.startswith("  write/mail.send (") and
               line.endswith("): mail leaves the machine") for line in escalated.lines)

    unknown = policy.explain(policy_file, agent="amber", action="shell.run")
    assert (unknown.decision, unknown.rules) == ("reject", ["default:unknown"]), "deny by default"


def test_explain_declared_tiers(policy_file):
    third = policy.explain(policy_file, agent="amber", action="new.thing", declared="observe")
    assert (third.decision, third.rules) == ("reject", ["default:unknown"])
    first = policy.explain(policy_file, agent="amber", action="new.thing", declared="observe",
                           first_party=True)
    assert (first.decision, first.rules) == ("allow", ["default:declared-observe"])
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^unknown tier `root` \(observe, act, commit\)$"):
        policy.explain(policy_file, agent="amber", action="new.thing", declared="root")
    with pytest.raises(p3ak.InvalidInputError, match="`first_party` needs `declared`"):
        policy.explain(policy_file, agent="amber", action="new.thing", first_party=True)


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
