//! Vault speed: put and get at 1K and 10K documents of ~4 KiB, open, unlock, rekey.
//!
//! Run: `cargo bench -p p3ak-vault --bench vault`. Files live under Cargo's target tmpdir, on
//! the same disk as the build, so fsync costs are real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use p3ak_vault::{
    Access, DocId, KdfParams, NewDocument, NewKeys, Passphrase, Protection, Unlock, Vault, VaultKey,
};

const DOC_LEN: usize = 4096;

fn pass() -> Passphrase {
    Passphrase::new("benchmark passphrase".into())
}

fn content(i: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOC_LEN);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < DOC_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(DOC_LEN);
    out
}

/// A vault holding `n` documents, and their ids.
fn filled(dir: &Path, name: &str, n: u64) -> (PathBuf, Vec<DocId>) {
    let path = dir.join(format!("{name}-{n}.vault"));
    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &pass(),
            kdf: KdfParams::RFC9106_SECOND,
        },
    )
    .unwrap();
    let contents: Vec<Vec<u8>> = (0..n).map(content).collect();
    let ids = vault
        .put_batch(contents.iter().map(|c| NewDocument::new(c)))
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    (path, ids)
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for n in [1_000u64, 10_000] {
        let (path, ids) = filled(tmp.path(), "docs", n);
        let key = VaultKey::derive(&path, &pass()).unwrap();

        let mut group = c.benchmark_group(format!("vault_{n}_docs"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));

        group.bench_function("open (key cached)", |b| {
            b.iter(|| black_box(Vault::open(&path, Unlock::Key(&key), Access::Read).unwrap()))
        });

        let reader = Vault::open(&path, Unlock::Key(&key), Access::Read).unwrap();
        let mut i = 0usize;
        group.bench_function("get 4 KiB", |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                black_box(reader.get(&ids[i]).unwrap())
            })
        });
        drop(reader);

        let writer = Vault::open(&path, Unlock::Key(&key), Access::Write).unwrap();
        let mut next = 1_000_000u64;
        group.bench_function("put 4 KiB + commit (1 fsync)", |b| {
            b.iter_batched(
                || {
                    next += 1;
                    content(next)
                },
                |doc| black_box(writer.put(NewDocument::new(&doc)).unwrap()),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("put 100 x 4 KiB in one commit", |b| {
            b.iter_batched(
                || {
                    (0..100)
                        .map(|_| {
                            next += 1;
                            content(next)
                        })
                        .collect::<Vec<_>>()
                },
                |docs| {
                    black_box(
                        writer
                            .put_batch(docs.iter().map(|d| NewDocument::new(d)))
                            .unwrap(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
        drop(writer);
        group.finish();
    }

    let mut group = c.benchmark_group("vault_keys");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let (path, _) = filled(tmp.path(), "keys", 10);
    group.bench_function("unlock (Argon2id m=64MiB t=3 p=4)", |b| {
        b.iter(|| black_box(VaultKey::derive(&path, &pass()).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("vault_log");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let (path, _) = filled(tmp.path(), "log", 0);
    let key = VaultKey::derive(&path, &pass()).unwrap();
    let writer = Vault::open(&path, Unlock::Key(&key), Access::Write).unwrap();
    group.bench_function("append 1 entry + commit (1 fsync)", |b| {
        b.iter(|| {
            black_box(
                writer
                    .log_event("bench", serde_json::json!({ "n": 1 }))
                    .unwrap(),
            )
        })
    });
    group.bench_function("append 100 entries in one commit", |b| {
        b.iter(|| {
            let events = (0..100).map(|i| ("bench", serde_json::json!({ "n": i })));
            black_box(writer.log_events(events).unwrap())
        })
    });
    drop(writer);
    group.finish();

    let mut group = c.benchmark_group("vault_log_verify");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let (path, _) = filled(tmp.path(), "logverify", 0);
    let key = VaultKey::derive(&path, &pass()).unwrap();
    let writer = Vault::open(&path, Unlock::Key(&key), Access::Write).unwrap();
    for _ in 0..10 {
        let events = (0..10_000).map(|i| ("kernel.decision", serde_json::json!({ "n": i })));
        writer.log_events(events).unwrap();
    }
    drop(writer);
    group.bench_function(
        "open + verify a 100K-entry log (decrypt, chain, tree, signatures)",
        |b| {
            b.iter(|| {
                let vault = Vault::open(&path, Unlock::Key(&key), Access::Read).unwrap();
                black_box(vault.verify(&mut |_, _| {}).unwrap().is_ok())
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("vault_rekey");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    let (path, _) = filled(tmp.path(), "rekey", 10_000);
    let copy = tmp.path().join("rekey.vault");
    group.bench_function("rekey 10K x 4 KiB (incl. Argon2id)", |b| {
        b.iter_batched(
            || {
                std::fs::copy(&path, &copy).unwrap();
                Vault::open(&copy, Unlock::Passphrase(&pass()), Access::Write).unwrap()
            },
            |vault| {
                vault
                    .rewrite(
                        NewKeys::Passphrase {
                            passphrase: &pass(),
                            kdf: KdfParams::RFC9106_SECOND,
                        },
                        &mut |_, _| {},
                    )
                    .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(vault, benches);
criterion_main!(vault);
