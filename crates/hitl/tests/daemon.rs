//! The daemon's service over a real spool: what moves where, what the kernel is told, and
//! that what leaves `outbox/` is exactly what was approved.

#![cfg(test)]

use std::sync::Arc;
use std::time::Duration;

use p3ak_crypto::{KdfParams, Key};
use p3ak_hitl::HitlError;
use p3ak_hitl::binding::Request;
use p3ak_hitl::daemon::{Service, ServiceOptions};
use p3ak_hitl::factors::Factors;
use p3ak_hitl::level::Proof;
use p3ak_hitl::pin::Pin;
use p3ak_hitl::spool::{Spool, SpoolKey, write_staged};
use p3ak_hitl::wire::{Refusal, ToKernel};
use tokio::sync::mpsc::UnboundedReceiver;

struct Setup {
    _dir: tempfile::TempDir,
    spool: Spool,
    key: SpoolKey,
    service: Arc<Service>,
    to_kernel: UnboundedReceiver<ToKernel>,
    seen: Vec<String>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool.prepare(&["write".to_owned()], None).unwrap();
    let state = Key::generate().unwrap();
    let factors = Factors::open_with_kdf(
        &dir.path().join("hitl"),
        &state,
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        },
    )
    .unwrap();
    let key = SpoolKey::generate().unwrap();
    let (service, to_kernel) = Service::new(ServiceOptions {
        spool: spool.clone(),
        spool_key: SpoolKey::from_hex(&key.to_hex()).unwrap(),
        factors,
    })
    .unwrap();
    Setup {
        _dir: dir,
        spool,
        key,
        service,
        to_kernel,
        seen: Vec::new(),
    }
}

fn request(id: &str, level: u8, crawfish_secs: u64, timeout_ms: i64) -> Request {
    let now = p3ak_hitl::daemon::now_ms();
    Request {
        id: id.to_owned(),
        agent: "assistant".to_owned(),
        action: "files.write".to_owned(),
        args: serde_json::json!({"path": "a.txt", "content": "hi"}),
        level,
        rules: vec!["write.files.write".to_owned()],
        category: "write".to_owned(),
        asked_ms: now,
        expires_ms: now + timeout_ms,
        crawfish_secs,
        confirm_twice: false,
        reasons: Vec::new(),
    }
}

impl Setup {
    fn stage(&self, request: &Request) {
        write_staged(
            &self.spool,
            &request.category,
            &request.id,
            &self.key.seal(request).unwrap(),
        )
        .unwrap();
        self.service
            .admit_staged(&request.id, &request.category)
            .unwrap();
    }

    /// The next release or refusal the kernel hears (audit events skipped).
    fn verdict(&mut self) -> ToKernel {
        loop {
            match self.to_kernel.try_recv() {
                Ok(ToKernel::Audit { event, .. }) => self.seen.push(event),
                Ok(other) => return other,
                Err(_) => panic!("the kernel heard nothing"),
            }
        }
    }

    fn audited(&mut self) -> Vec<String> {
        let mut kinds = std::mem::take(&mut self.seen);
        while let Ok(message) = self.to_kernel.try_recv() {
            if let ToKernel::Audit { event, .. } = message {
                kinds.push(event);
            }
        }
        kinds
    }
}

#[test]
fn invariant_i8_the_undo_window_holds_the_action_in_the_outbox_and_pull_back_cancels() {
    let mut s = setup();
    let r = request("u1", 1, 30, 60_000);
    s.stage(&r);
    let view = s.service.get("u1").unwrap();
    s.service
        .approve("u1", &view.binding, Proof::operator_yes("test"))
        .unwrap();
    assert!(
        s.spool.outbox().join("u1").exists(),
        "approved: in the outbox"
    );
    assert!(!s.spool.category("write").join("u1").exists());
    s.service.tick();
    assert!(
        s.spool.outbox().join("u1").exists(),
        "released inside its undo window"
    );
    s.service.pull_back("u1", "test").unwrap();
    assert!(s.spool.rejected().join("u1").exists());
    assert!(!s.spool.outbox().join("u1").exists());
    match s.verdict() {
        ToKernel::Refused { id, ending } => {
            assert_eq!((id.as_str(), ending.as_str()), ("u1", "pulled_back"))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.audited().contains(&"hitl.approval".to_owned()));
}

#[test]
fn invariant_i8_after_its_window_the_approved_action_is_released_from_the_outbox() {
    let mut s = setup();
    let r = request("r1", 1, 1, 60_000);
    s.stage(&r);
    let view = s.service.get("r1").unwrap();
    s.service
        .approve("r1", &view.binding, Proof::operator_yes("test"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    s.service.tick();
    assert!(s.spool.sent().join("r1").exists());
    match s.verdict() {
        ToKernel::Released {
            request, binding, ..
        } => {
            assert_eq!(*request, r);
            assert!(binding.matches(&r.binding()));
        }
        other => panic!("expected a release, got {other:?}"),
    }
    // Too late to pull back.
    assert!(matches!(
        s.service.pull_back("r1", "test"),
        Err(HitlError::Unknown(_))
    ));
}

#[test]
fn invariant_i8_a_timeout_denies_and_moves_the_action_to_rejected() {
    let mut s = setup();
    s.stage(&request("t1", 1, 0, 200));
    std::thread::sleep(Duration::from_millis(250));
    s.service.tick();
    assert!(s.spool.rejected().join("t1").exists());
    match s.verdict() {
        ToKernel::Refused { ending, .. } => assert_eq!(ending, Refusal::Expired),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let view = request("t1", 1, 0, 200).binding();
    assert!(matches!(
        s.service.approve("t1", &view, Proof::operator_yes("test")),
        Err(HitlError::Expired(_))
    ));
}

#[test]
fn invariant_i8_an_action_altered_in_the_outbox_is_not_released() {
    let mut s = setup();
    let r = request("x1", 1, 1, 60_000);
    s.stage(&r);
    let view = s.service.get("x1").unwrap();
    s.service
        .approve("x1", &view.binding, Proof::operator_yes("test"))
        .unwrap();
    // Something swaps in another sealed action under the same name.
    let mut other = r.clone();
    other.args = serde_json::json!({"path": "/etc/passwd", "content": "owned"});
    std::fs::write(s.spool.outbox().join("x1"), s.key.seal(&other).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    s.service.tick();
    match s.verdict() {
        ToKernel::Refused { ending, .. } => assert_eq!(ending, Refusal::Unreadable),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.spool.rejected().join("x1").exists());
    assert!(s.audited().contains(&"hitl.release.failed".to_owned()));
}

#[test]
fn invariant_i8_a_pin_approves_level_three_and_wrong_pins_are_audited() {
    let mut s = setup();
    s.service
        .with_factors(|f| f.set_pin(&Pin::new("246813".to_owned())?, None, 0))
        .unwrap();
    s.stage(&request("p1", 3, 0, 60_000));
    let view = s.service.get("p1").unwrap();
    assert!(matches!(
        s.service
            .approve("p1", &view.binding, Proof::operator_yes("cli")),
        Err(HitlError::TooWeak { level: 3, .. })
    ));
    assert!(
        s.service
            .verify_pin(&Pin::new("975310".to_owned()).unwrap(), "cli")
            .is_err()
    );
    let proof = s
        .service
        .verify_pin(&Pin::new("246813".to_owned()).unwrap(), "cli")
        .unwrap();
    s.service.approve("p1", &view.binding, proof).unwrap();
    assert!(matches!(s.verdict(), ToKernel::Released { .. }));
    let kinds = s.audited();
    for kind in [
        "hitl.approval.refused",
        "hitl.factor.failed",
        "hitl.factor.ok",
        "hitl.approval",
        "hitl.released",
    ] {
        assert!(
            kinds.contains(&kind.to_owned()),
            "{kind} not audited: {kinds:?}"
        );
    }
}

#[test]
fn invariant_i9_a_staged_file_that_does_not_open_is_refused_and_rejected() {
    let mut s = setup();
    write_staged(&s.spool, "write", "bad1", b"not sealed").unwrap();
    assert!(s.service.admit_staged("bad1", "write").is_err());
    assert!(s.spool.rejected().join("bad1").exists());
    assert!(matches!(s.verdict(), ToKernel::Refused { .. }));
    assert!(s.service.admit_staged("../x", "write").is_err());
}

#[test]
fn a_remembered_approval_travels_with_the_release_and_level_five_refuses_it_before_the_pin() {
    use p3ak_hitl::remember::Remember;
    use p3ak_hitl::wire::{OperatorAnswer, OperatorRequest};
    let mut s = setup();
    let r = request("m1", 1, 0, 60_000);
    s.stage(&r);
    let remember = Remember {
        args: vec!["path".to_owned()],
        for_secs: 7 * 86_400,
    };
    let answer = s.service.operator(
        &OperatorRequest::Approve {
            id: "m1".to_owned(),
            pin: None,
            totp: None,
            remember: Some(remember.clone()),
        },
        "cli uid=1000",
    );
    match answer {
        OperatorAnswer::Done { message } => {
            assert!(message.contains("remembered for 7 days"), "{message}")
        }
        other => panic!("not approved: {other:?}"),
    }
    match s.verdict() {
        ToKernel::Released { remember: got, .. } => assert_eq!(got, Some(remember.clone())),
        other => panic!("expected a release, got {other:?}"),
    }

    let r = request("m5", 5, 0, 60_000);
    s.stage(&r);
    let answer = s.service.operator(
        &OperatorRequest::Approve {
            id: "m5".to_owned(),
            pin: Some("000000".to_owned()),
            totp: None,
            remember: Some(remember),
        },
        "cli uid=1000",
    );
    match answer {
        OperatorAnswer::Error { message } => {
            assert!(message.contains("cannot be remembered"), "{message}")
        }
        other => panic!("level 5 remembered: {other:?}"),
    }
    // Refused before any factor was tried: no PIN attempt was spent.
    assert!(
        !s.audited().iter().any(|e| e.starts_with("hitl.factor")),
        "a PIN was tried"
    );
    assert!(s.service.get("m5").unwrap().confirmations.is_empty());
}
