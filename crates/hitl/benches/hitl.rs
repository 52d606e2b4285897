//! What an approval costs the machine: sealing and opening a staged request, its binding, a
//! desk decision, and a PIN check at the default Argon2id cost (`cargo bench -p p3ak-hitl`).

#![allow(clippy::unwrap_used, reason = "bench setup")]

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_hitl::binding::Request;
use p3ak_hitl::desk::Desk;
use p3ak_hitl::factors::Factors;
use p3ak_hitl::level::Proof;
use p3ak_hitl::pin::Pin;
use p3ak_hitl::spool::SpoolKey;

fn request(id: &str) -> Request {
    Request {
        id: id.to_owned(),
        agent: "assistant".to_owned(),
        action: "mail.send".to_owned(),
        args: serde_json::json!({"to": "alex@example.org", "subject": "invoice 2291", "body": "x".repeat(2000)}),
        level: 1,
        rules: vec!["send.mail.send".to_owned()],
        category: "send".to_owned(),
        asked_ms: 1,
        expires_ms: i64::MAX,
        crawfish_secs: 0,
        confirm_twice: false,
        reasons: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let key = SpoolKey::generate().unwrap();
    let r = request("bench1");
    let sealed = key.seal(&r).unwrap();
    let path = std::path::Path::new("bench1");
    c.bench_function("stage: seal a 2 KB request", |b| {
        b.iter(|| key.seal(&r).unwrap())
    });
    c.bench_function("stage: open and check it", |b| {
        b.iter(|| key.open(&sealed, "send", "bench1", path).unwrap())
    });
    c.bench_function("binding (SHA-256)", |b| b.iter(|| r.binding()));
    c.bench_function("desk: admit, approve, release", |b| {
        let mut n = 0u64;
        let mut desk = Desk::new();
        b.iter(|| {
            n += 1;
            let r = request(&format!("d{n}"));
            let binding = r.binding();
            desk.admit(r, 2).unwrap();
            desk.approve(&format!("d{n}"), &binding, Proof::operator_yes("bench"), 3)
                .unwrap();
            desk.tick(3)
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let mut factors = Factors::open(dir.path(), &p3ak_crypto::Key::generate().unwrap()).unwrap();
    let pin = Pin::new("135792".to_owned()).unwrap();
    factors.set_pin(&pin, None, 0).unwrap();
    let mut group = c.benchmark_group("factors");
    group.sample_size(10);
    group.bench_function("PIN check (Argon2id 64 MiB, 3 passes)", |b| {
        b.iter(|| factors.verify_pin(&pin, "bench", 1).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
