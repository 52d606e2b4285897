// Approving without the pending queue: an `Approval` cannot be made outside the kernel.
use p3ak_kernel::authorize::{Approval, ApprovalGate, Escalation};

fn forge(escalation: Escalation) {
    let _ = ApprovalGate::approve(escalation, Approval { id: String::new() });
    let _ = Approval::new(String::new());
}

fn main() {}
