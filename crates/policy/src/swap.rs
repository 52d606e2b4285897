//! Hot swap: the kernel holds one [`PolicyCell`]; an operator's edit compiles a new [`Policy`]
//! and replaces the old one atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::policy::Policy;
use crate::types::{Request, Verdict};

/// The current policy, replaceable while decisions are running. A decision works on a
/// snapshot taken when it starts, so a swap never changes a decision in flight.
#[derive(Debug)]
pub struct PolicyCell {
    current: ArcSwap<Policy>,
}

impl PolicyCell {
    /// A cell holding `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The policy in force now. Keep the snapshot for as long as one decision lasts.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy; returns the one it replaced.
    pub fn replace(&self, policy: Policy) -> Arc<Policy> {
        self.current.swap(Arc::new(policy))
    }

    /// Decides with the policy in force when the call starts.
    #[must_use]
    pub fn decide(&self, request: &Request) -> Verdict {
        self.current.load().decide(request)
    }
}
