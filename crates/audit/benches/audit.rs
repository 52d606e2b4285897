//! Audit log speed: signing and checking one checkpoint (every vault commit signs one, a deep
//! verify checks every one), verifying 100K and 1M entries (hash chain, Merkle tree,
//! checkpoint), and proof generation. Run: `cargo bench -p p3ak-audit --bench audit`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_audit::{Chain, Signer};
use p3ak_crypto::Key;

fn entries(n: u64) -> Vec<Vec<u8>> {
    let mut tip = Chain::new().tip();
    (0..n)
        .map(|i| {
            tip.append(
                1_790_000_000_000 + i as i64,
                "kernel.decision",
                "agent:mail",
                &serde_json::json!({ "action": "bank.payment_send", "decision": "escalate", "level": 4, "n": i }),
            )
            .unwrap_or_default()
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let signer = Signer::from_seed(&Key::from_bytes(&mut [7; 32]));
    let public = signer.public_key();
    let mut group = c.benchmark_group("audit_checkpoint");
    let tip = Chain::new().tip();
    group.bench_function("sign a checkpoint", |b| {
        b.iter(|| black_box(signer.checkpoint([1; 16], black_box(&tip), 0)))
    });
    let cp = signer.checkpoint([1; 16], &tip, 0);
    group.bench_function("check a checkpoint's signature", |b| {
        b.iter(|| black_box(cp.verify_signature(black_box(&public)).is_ok()))
    });
    group.finish();
    let mut group = c.benchmark_group("audit_verify");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for n in [100_000u64, 1_000_000] {
        let log = entries(n);
        let mut chain = Chain::new();
        for e in &log {
            let _ = chain.push(e);
        }
        let cp = signer.checkpoint([1; 16], &chain.tip(), 0);
        group.bench_function(
            format!("{n} entries: chain + tree + signed checkpoint"),
            |b| {
                b.iter(|| {
                    let mut chain = Chain::new();
                    for e in &log {
                        chain.push(e).unwrap_or_else(|_| std::process::abort());
                    }
                    black_box(cp.verify_against(&[1; 16], &chain, &public).is_ok())
                })
            },
        );
        group.bench_function(format!("{n} entries: inclusion proof"), |b| {
            b.iter(|| black_box(chain.tree().inclusion_proof(n / 3, n)))
        });
    }
    group.finish();
}

criterion_group!(audit, benches);
criterion_main!(audit);
