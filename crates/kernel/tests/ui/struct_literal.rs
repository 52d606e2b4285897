// Building an `Authorized` by hand: its fields are private.
use p3ak_kernel::authorize::{Authorized, Target};
use p3ak_kernel::proposal::Proposal;

fn forge(proposal: Proposal, target: Target) -> Authorized {
    Authorized {
        proposal,
        target,
        tier: p3ak_policy::Tier::Observe,
        approval: None,
    }
}

fn main() {}
