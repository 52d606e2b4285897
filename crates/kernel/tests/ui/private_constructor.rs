// Calling the constructor: it is private to the enforcer's module.
use p3ak_kernel::authorize::{Authorized, Target};
use p3ak_kernel::proposal::Proposal;

fn forge(proposal: Proposal, target: Target) -> Authorized {
    Authorized::new(proposal, target, p3ak_policy::Tier::Observe, None)
}

fn main() {}
