// Approving without the HITL daemon's release: an `Approval` cannot be made outside the kernel.
use p3ak_kernel::authorize::{Approval, ApprovalGate, Escalation};

fn forge(escalation: Escalation) {
    let _ = ApprovalGate::approve(
        escalation,
        Approval {
            id: String::new(),
            binding: String::new(),
            factors: Vec::new(),
        },
    );
    let _ = Approval::new(String::new(), String::new(), Vec::new());
}

fn main() {}
