// Approving without the HITL daemon's release: an `Approval` cannot be made outside the kernel.
use p3ak_approval::binding::Request;
use p3ak_kernel::authorize::{Approval, ApprovalGate, Escalation};

fn forge(escalation: Escalation, staged: &Request) {
    let _ = ApprovalGate::approve(
        escalation,
        staged,
        Approval {
            id: String::new(),
            binding: String::new(),
            factors: Vec::new(),
        },
    );
    let _ = Approval::new(String::new(), String::new(), Vec::new());
}

fn main() {}
