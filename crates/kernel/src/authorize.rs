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
}

/// A human's yes to one escalation, from the pending queue.
#[derive(Debug)]
pub struct Approval {
    id: String,
}

impl Approval {
    /// Only the pending queue makes these, when the operator approves over the control socket.
    pub(crate) fn new(id: String) -> Self {
        Self { id }
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
            Decision::Escalate { level, timeout, .. } => Decided::Escalated(Escalation {
                proposal,
                level: *level,
                tier: verdict.tier.unwrap_or(Tier::Commit),
                timeout: *timeout,
            }),
            Decision::Reject => Decided::Rejected,
        };
        (decided, verdict)
    }
}

/// Turns an approved escalation into an [`Authorized`]. Factors and levels are checked by the
/// HITL daemon (its own issue); here an operator's yes on the control socket suffices.
#[derive(Debug)]
pub struct ApprovalGate;

impl ApprovalGate {
    /// The escalation, approved.
    #[must_use]
    pub fn approve(escalation: Escalation, approval: Approval) -> Authorized {
        Authorized::new(escalation.proposal, escalation.tier, Some(approval.id))
    }
}
