//! The only place an [`Authorized`] can come from (invariant I1).
//!
//! [`Enforcer::decide`] asks the policy about a [`Proposal`]; on allow it returns an
//! `Authorized`, on escalate an [`Escalation`] that only [`ApprovalGate::approve`] can turn
//! into one, given an [`Approval`] from the pending queue. `Authorized` has private fields and
//! a constructor private to this module, and execution takes it by value, so running a tool
//! without passing through here does not compile (`tests/compile_fail/`).

use std::sync::Arc;
use std::time::Duration;

use p3ak_policy::{Context, Decision, Level, PolicyCell, Request, Tier, Verdict};

use crate::proposal::Proposal;

/// Permission to run one proposal, once.
#[derive(Debug)]
pub struct Authorized {
    proposal: Proposal,
    tier: Tier,
    approval: Option<String>,
}

impl Authorized {
    fn new(proposal: Proposal, tier: Tier, approval: Option<String>) -> Self {
        Self {
            proposal,
            tier,
            approval,
        }
    }

    /// The call it permits.
    #[must_use]
    pub fn proposal(&self) -> &Proposal {
        &self.proposal
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
    level: Level,
    tier: Tier,
    timeout: Duration,
    crawfish: Duration,
    confirm_twice: bool,
    group: Option<String>,
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
        if proposal.plugin.is_none() {
            let verdict = Verdict {
                decision: Decision::Reject,
                tier: None,
                group: None,
                rules: vec![NOT_OFFERED.to_owned()],
            };
            return (Decided::Rejected, verdict);
        }
        let mut request = Request::new(proposal.agent.clone(), proposal.action.clone())
            .with_args(proposal.args.clone())
            .with_credentials(proposal.credentials.iter().cloned())
            .with_context(context);
        if let Some(tier) = proposal.declared {
            request = request.with_declared(tier);
        }
        let verdict = self.policy.decide(&request);
        let decided = match &verdict.decision {
            Decision::Allow { tier } => Decided::Allowed(Authorized::new(proposal, *tier, None)),
            Decision::Escalate {
                level,
                timeout,
                crawfish,
                confirm_twice,
                ..
            } => Decided::Escalated(Escalation {
                proposal,
                level: *level,
                tier: verdict.tier.unwrap_or(Tier::Commit),
                timeout: *timeout,
                crawfish: *crawfish,
                confirm_twice: *confirm_twice,
                group: verdict.group.clone(),
            }),
            Decision::Reject => Decided::Rejected,
        };
        (decided, verdict)
    }
}

/// Turns an approved escalation into an [`Authorized`]. Factors and levels were checked by the
/// HITL daemon (`p3ak-hitl`), which alone can release an approval.
#[derive(Debug)]
pub struct ApprovalGate;

impl ApprovalGate {
    /// The escalation, approved.
    #[must_use]
    pub fn approve(escalation: Escalation, approval: Approval) -> Authorized {
        Authorized::new(escalation.proposal, escalation.tier, Some(approval.id))
    }
}
