//! The only place an [`Authorized`] can come from (invariant I1).
//!
//! [`Enforcer::decide`] asks the policy about a [`Proposal`]; on allow it returns an
//! `Authorized`, on escalate an [`Escalation`] that only [`ApprovalGate::approve`] can turn
//! into one, given the request that was staged for it and an [`Approval`] of exactly that
//! request. `Authorized` has private fields and a constructor private to this module, and
//! execution takes it by value, so running a tool without passing through here does not
//! compile (`tests/compile_fail/`).
//!
//! What is decided is what runs: an `Authorized` carries one [`Target`] (plugin and action),
//! the policy is asked about `target.full()`, and the executor invokes `target.plugin` and
//! `target.action`, so the two cannot disagree.

use std::sync::Arc;
use std::time::Duration;

use p3ak_policy::{Context, Decision, Level, PolicyCell, Request, Tier, Verdict};

use crate::proposal::Proposal;

/// The plugin and action a decision is about, and that execution invokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The plugin.
    pub plugin: String,
    /// The action within it.
    pub action: String,
}

impl Target {
    /// `<plugin>.<action>`, as the policy names it.
    #[must_use]
    pub fn full(&self) -> String {
        format!("{}.{}", self.plugin, self.action)
    }

    /// The target of an offered proposal whose parts agree with its name; `None` otherwise.
    fn of(proposal: &Proposal) -> Option<Self> {
        let target = Self {
            plugin: proposal.plugin.clone()?,
            action: proposal.plugin_action.clone(),
        };
        (target.full() == proposal.action).then_some(target)
    }
}

/// Permission to run one proposal, once.
#[derive(Debug)]
pub struct Authorized {
    proposal: Proposal,
    target: Target,
    tier: Tier,
    approval: Option<String>,
}

impl Authorized {
    fn new(proposal: Proposal, target: Target, tier: Tier, approval: Option<String>) -> Self {
        Self {
            proposal,
            target,
            tier,
            approval,
        }
    }

    /// The call it permits.
    #[must_use]
    pub fn proposal(&self) -> &Proposal {
        &self.proposal
    }

    /// The plugin and action it permits, and only those.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The tier it runs at.
    #[must_use]
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The approval it came from, if a human gave one.
    #[must_use]
    pub fn approval(&self) -> Option<&str> {
        self.approval.as_deref()
    }
}

/// A proposal waiting for a human.
#[derive(Debug)]
pub struct Escalation {
    proposal: Proposal,
    target: Target,
    level: Level,
    tier: Tier,
    timeout: Duration,
    crawfish: Duration,
    confirm_twice: bool,
    group: Option<String>,
    notify: Vec<String>,
}

impl Escalation {
    /// The call.
    #[must_use]
    pub fn proposal(&self) -> &Proposal {
        &self.proposal
    }
    /// The approval level the policy asks for.
    #[must_use]
    pub fn level(&self) -> Level {
        self.level
    }
    /// How long to wait before the answer is no.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// The undo window after approval.
    #[must_use]
    pub fn crawfish(&self) -> Duration {
        self.crawfish
    }
    /// Whether the approval must be given twice.
    #[must_use]
    pub fn confirm_twice(&self) -> bool {
        self.confirm_twice
    }
    /// The policy group of the action (its spool category).
    #[must_use]
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }
    /// The policy's `notify:` channels for it.
    #[must_use]
    pub fn notify(&self) -> &[String] {
        &self.notify
    }
}

/// A human's yes to one escalation: the HITL daemon released it from `spool/outbox/` after
/// its undo window, and it is exactly the action the kernel staged (same binding).
#[derive(Debug)]
pub struct Approval {
    id: String,
    binding: String,
    factors: Vec<String>,
}

impl Approval {
    /// Only the pending queue makes these, from a release whose binding it checked.
    pub(crate) fn new(id: String, binding: String, factors: Vec<String>) -> Self {
        Self {
            id,
            binding,
            factors,
        }
    }

    /// The escalation's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The binding (hex SHA-256 of agent, action, arguments and time) it approved.
    #[must_use]
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The factors that approved it.
    #[must_use]
    pub fn factors(&self) -> &[String] {
        &self.factors
    }
}

/// What the enforcer decided.
#[derive(Debug)]
pub enum Decided {
    /// Run it.
    Allowed(Authorized),
    /// Ask a human.
    Escalated(Escalation),
    /// Never run it; the model hears only "action not permitted".
    Rejected,
}

/// The deciding rule when the kernel itself refuses a proposal before the policy: the agent
/// was never offered the action (unknown, masked, or its plugin is not running).
pub const NOT_OFFERED: &str = "kernel:not-offered";

/// Decides proposals against the operator's policy. Pure given the policy and context.
#[derive(Clone)]
pub struct Enforcer {
    policy: Arc<PolicyCell>,
}

impl Enforcer {
    /// An enforcer over a policy that may be swapped while running.
    #[must_use]
    pub fn new(policy: Arc<PolicyCell>) -> Self {
        Self { policy }
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> Arc<p3ak_policy::Policy> {
        self.policy.snapshot()
    }

    /// Decides one proposal. The verdict is for the audit log, never for the model.
    #[must_use]
    pub fn decide(&self, proposal: Proposal, context: Context) -> (Decided, Verdict) {
        self.decide_bounded(proposal, context, &[])
    }

    /// Decides a proposal of an agent working for others: the policy is asked for the
    /// proposing agent and for each of `bound_by` (the agents that asked it, on the way down)
    /// about the same call in the same context, and the strictest answer wins — a rejection
    /// over an escalation, a higher level over a lower one, an escalation over an allow. An
    /// asker's decision that wins is reported with the rule `delegation:<asker>` first.
    #[must_use]
    pub fn decide_bounded(
        &self,
        proposal: Proposal,
        context: Context,
        bound_by: &[String],
    ) -> (Decided, Verdict) {
        let Some(target) = Target::of(&proposal) else {
            let verdict = Verdict {
                decision: Decision::Reject,
                tier: None,
                group: None,
                rules: vec![NOT_OFFERED.to_owned()],
                reasons: Vec::new(),
            };
            return (Decided::Rejected, verdict);
        };
        let request_for = |agent: &str, context: Context| {
            let mut request = Request::new(agent.to_owned(), target.full())
                .with_args(proposal.args.clone())
                .with_credentials(proposal.credentials.iter().cloned())
                .with_context(context);
            if let Some(declared) = proposal.declared {
                request = request.with_declared(declared);
            }
            request
        };
        let mut verdict = self
            .policy
            .decide(&request_for(&proposal.agent, context.clone()));
        for asker in bound_by {
            if matches!(verdict.decision, Decision::Reject) {
                break;
            }
            let theirs = self.policy.decide(&request_for(asker, context.clone()));
            if strictness(&theirs.decision) > strictness(&verdict.decision) {
                let mut rules = vec![format!("delegation:{asker}")];
                rules.extend(theirs.rules.iter().cloned());
                verdict = Verdict { rules, ..theirs };
            }
        }
        let decided = match &verdict.decision {
            Decision::Allow { tier } => {
                Decided::Allowed(Authorized::new(proposal, target, *tier, None))
            }
            Decision::Escalate {
                level,
                timeout,
                crawfish,
                confirm_twice,
                notify,
            } => Decided::Escalated(Escalation {
                proposal,
                target,
                level: *level,
                tier: verdict.tier.unwrap_or(Tier::Commit),
                timeout: *timeout,
                crawfish: *crawfish,
                confirm_twice: *confirm_twice,
                group: verdict.group.clone(),
                notify: notify.clone(),
            }),
            Decision::Reject => Decided::Rejected,
        };
        (decided, verdict)
    }
}

/// How strict a decision is: allow < escalate (by level) < reject.
fn strictness(decision: &Decision) -> u8 {
    match decision {
        Decision::Allow { .. } => 0,
        Decision::Escalate { level, .. } => 1 + level.get(),
        Decision::Reject => u8::MAX,
    }
}

/// Why an approval does not authorize an escalation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalMismatch {
    /// The staged request is not this escalation's call.
    #[error("the staged request `{0}` is not the escalated call")]
    NotThisCall(String),
    /// The approval is for another staged request.
    #[error("the approval of `{approved}` is not for `{staged}`")]
    OtherRequest {
        /// The approved id.
        approved: String,
        /// The staged id.
        staged: String,
    },
    /// The approval binds other bytes than the staged request.
    #[error("the approval of `{0}` binds another action")]
    Binding(String),
}

/// Turns an approved escalation into an [`Authorized`]. Factors and levels were checked by the
/// HITL daemon (`p3ak-hitl`), which alone can release an approval; this checks that the
/// approval is of the request staged for exactly this call.
#[derive(Debug)]
pub struct ApprovalGate;

impl ApprovalGate {
    /// The escalation, approved — if `staged` is its call (agent, action, arguments) and
    /// `approval` is of `staged` (same id, same binding).
    pub fn approve(
        escalation: Escalation,
        staged: &p3ak_approval::binding::Request,
        approval: Approval,
    ) -> Result<Authorized, ApprovalMismatch> {
        let p = &escalation.proposal;
        if staged.agent != p.agent
            || staged.action != escalation.target.full()
            || staged.args != p.args
        {
            return Err(ApprovalMismatch::NotThisCall(staged.id.clone()));
        }
        if approval.id != staged.id {
            return Err(ApprovalMismatch::OtherRequest {
                approved: approval.id,
                staged: staged.id.clone(),
            });
        }
        let approved = p3ak_approval::binding::Binding::from_hex(&approval.binding);
        if !approved.is_some_and(|b| b.matches(&staged.binding())) {
            return Err(ApprovalMismatch::Binding(approval.id));
        }
        Ok(Authorized::new(
            escalation.proposal,
            escalation.target,
            escalation.tier,
            Some(approval.id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use p3ak_policy::Policy;

    use super::*;

    fn enforcer(policy: &str) -> Enforcer {
        Enforcer::new(Arc::new(PolicyCell::new(
            Policy::from_yaml(policy).unwrap(),
        )))
    }

    fn proposal(action: &str, plugin: &str, plugin_action: &str, path: &str) -> Proposal {
        Proposal {
            agent: "assistant".to_owned(),
            call_id: "c1".to_owned(),
            action: action.to_owned(),
            plugin: Some(plugin.to_owned()),
            plugin_action: plugin_action.to_owned(),
            args: serde_json::json!({"path": path}),
            credentials: Vec::new(),
            declared: None,
        }
    }

    const ESCALATE: &str = "version: 1\nwrite:\n  files.write: { level: 1 }\n";

    fn escalation(path: &str) -> Escalation {
        match enforcer(ESCALATE)
            .decide(
                proposal("files.write", "files", "write", path),
                Context::default(),
            )
            .0
        {
            Decided::Escalated(escalation) => escalation,
            other => panic!("not escalated: {other:?}"),
        }
    }

    fn staged(id: &str, path: &str) -> p3ak_approval::binding::Request {
        p3ak_approval::binding::Request {
            id: id.to_owned(),
            agent: "assistant".to_owned(),
            action: "files.write".to_owned(),
            args: serde_json::json!({"path": path}),
            level: 1,
            rules: vec![],
            category: "write".to_owned(),
            asked_ms: 1,
            expires_ms: 2,
            crawfish_secs: 0,
            confirm_twice: false,
            reasons: Vec::new(),
        }
    }

    fn approval(request: &p3ak_approval::binding::Request) -> Approval {
        Approval::new(request.id.clone(), request.binding().to_hex(), vec![])
    }

    #[test]
    fn invariant_i1_an_approval_authorizes_only_the_call_it_was_staged_for() {
        let a = staged("a1", "a.txt");
        let b = staged("b2", "b.txt");
        // The staged request is another call.
        assert!(matches!(
            ApprovalGate::approve(escalation("a.txt"), &b, approval(&b)),
            Err(ApprovalMismatch::NotThisCall(_))
        ));
        // The approval is of another request.
        assert!(matches!(
            ApprovalGate::approve(escalation("a.txt"), &a, approval(&b)),
            Err(ApprovalMismatch::OtherRequest { .. })
        ));
        // Same id, other bytes.
        let forged = Approval::new("a1".to_owned(), b.binding().to_hex(), vec![]);
        assert!(matches!(
            ApprovalGate::approve(escalation("a.txt"), &a, forged),
            Err(ApprovalMismatch::Binding(_))
        ));
        let authorized = ApprovalGate::approve(escalation("a.txt"), &a, approval(&a)).unwrap();
        assert_eq!(authorized.approval(), Some("a1"));
        assert_eq!(authorized.target().full(), "files.write");
    }

    #[test]
    fn invariant_i1_what_is_decided_is_what_runs() {
        let allow = enforcer("version: 1\nread:\n  files.read: { level: 0 }\n");
        let (decided, _) = allow.decide(
            proposal("files.read", "files", "read", "a"),
            Context::default(),
        );
        let Decided::Allowed(authorized) = decided else {
            panic!("not allowed");
        };
        assert_eq!(
            authorized.target(),
            &Target {
                plugin: "files".to_owned(),
                action: "read".to_owned()
            }
        );
        // A proposal whose name and parts disagree is never decided, let alone run.
        for (plugin, action) in [("shell", "read"), ("files", "delete")] {
            let (decided, verdict) = allow.decide(
                proposal("files.read", plugin, action, "a"),
                Context::default(),
            );
            assert!(matches!(decided, Decided::Rejected));
            assert_eq!(verdict.rules, vec![NOT_OFFERED.to_owned()]);
        }
    }
}
