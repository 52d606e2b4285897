// Building an `Authorized` by hand: its fields are private.
use p3ak_kernel::authorize::Authorized;
use p3ak_kernel::proposal::Proposal;

fn forge(proposal: Proposal) -> Authorized {
    Authorized {
        proposal,
        tier: p3ak_policy::Tier::Observe,
        approval: None,
    }
}

fn main() {}
