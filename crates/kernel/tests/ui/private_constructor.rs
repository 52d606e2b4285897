// Calling the constructor: it is private to the enforcer's module.
use p3ak_kernel::authorize::Authorized;
use p3ak_kernel::proposal::Proposal;

fn forge(proposal: Proposal) -> Authorized {
    Authorized::new(proposal, p3ak_policy::Tier::Observe, None)
}

fn main() {}
