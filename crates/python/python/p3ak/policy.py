"""The policy engine: check a policy file, and explain the decision on one call, as
`p3ak policy check` and `p3ak policy explain` do."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from . import _native
from ._native import PolicyError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Explanation", "PolicyError", "check", "explain"]


@dataclass(frozen=True)
class Explanation:
    """The decision on one call and every rule that took part."""

    decision: str
    """`allow`, `reject` or `escalate`."""
    tier: Optional[str]
    rules: list[str]
    """The rules that decided."""
    reasons: list[dict[str, Any]] = field(default_factory=list)
    """Each rule's `why`, as the approver sees it: `rule`, `effect`, `why`."""
    steps: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """The rules consulted, in order: `kind`, `rule`, `outcome`, `effect`, `condition`."""
    warnings: list[str] = field(default_factory=list)
    """What the call left out that a rule consulted reads (each such rule rejects)."""
    policy_warnings: list[str] = field(default_factory=list, repr=False)
    """The policy file's own warnings (shadowed rules), `file:line:column: ...`."""
    verdict: dict[str, Any] = field(default_factory=dict, repr=False)
    """The whole verdict, as `p3ak policy explain --json` prints it."""

    lines: list[str] = field(default_factory=list, repr=False)
    """The explanation as `p3ak policy explain` prints it, line by line."""


def check(path: PathLike) -> dict[str, Any]:
    """Checks a policy file: `PolicyError` with `file:line:column` for each error; otherwise
    the rule count, the totals the kernel must supply, and warnings."""
    report: dict[str, Any] = json.loads(_native.policy_check(os.fspath(path)))
    return report


def explain(path: PathLike, *, agent: str, action: str,
            args: Optional[Mapping[str, Any]] = None,
            context: Optional[Mapping[str, Any]] = None,
            declared: Optional[str] = None, first_party: bool = False,
            credentials: Sequence[str] = ()) -> Explanation:
    """Decides one call under the policy file at `path` and shows every rule that took part.

    `action` is `<plugin>.<action>`; `args` the call's arguments (amounts in integer minor
    units); `context` the runtime context as `p3ak policy explain --context` takes it
    (`totals`, `time`, `channel`, `grants`, `delegation`, ...); `declared` the tier the plugin
    declared ("observe", "act", "commit"), by a first-party plugin with `first_party`;
    `credentials` the secret names the call references."""
    answer = json.loads(_native.policy_explain(
        os.fspath(path), agent, action,
        json.dumps(dict(args or {})),
        json.dumps(dict(context)) if context is not None else None,
        declared, first_party, list(credentials),
    ))
    verdict = answer["verdict"]
    return Explanation(
        decision=str(verdict["decision"]),
        tier=verdict.get("tier"),
        rules=list(verdict.get("rules") or []),
        reasons=list(verdict.get("reasons") or []),
        steps=list(answer.get("steps") or []),
        warnings=list(answer.get("warnings") or []),
        policy_warnings=list(answer.get("policy_warnings") or []),
        verdict=verdict,
        lines=list(answer.get("lines") or []),
    )
