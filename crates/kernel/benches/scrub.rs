//! What scrubbing costs: text with five secrets configured, scrubbed whole, streamed in small
//! pieces, and a JSON tool result (`cargo bench -p p3ak-kernel --bench scrub`).

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p3ak_kernel::scrub::{Scrubber, StreamScrubber};

const SECRETS: [&str; 5] = [
    "sk-live-4f9a8b7c6d5e",
    "ghp_R2d2C3po4Bb8Luke9Leia0Han1Solo",
    "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    "AKIAIOSFODNN7EXAMPLE",
    "correct horse battery staple",
];

/// `kib` KiB of prose and code, no secret in it.
fn text(kib: usize) -> String {
    let paragraph = "The quarterly report lists 42 invoices, three of them overdue; see \
        https://example.org/reports/2025-q3?id=8812. fn total(xs: &[u64]) -> u64 { xs.iter().sum() } \
        Base64 of nothing secret: aGVsbG8gd29ybGQ=, a hash 9f86d081884c7d659a2feaa0c55ad015. \
        Ünïcödé and 東京 too.\n";
    let mut out = String::new();
    while out.len() < kib * 1024 {
        out.push_str(paragraph);
    }
    out
}

fn bench(c: &mut Criterion) {
    let scrubber = Arc::new(Scrubber::new(SECRETS));
    let mut group = c.benchmark_group("scrub");
    for kib in [1, 64] {
        let clean = text(kib);
        group.throughput(Throughput::Bytes(clean.len() as u64));
        group.bench_function(format!("whole text, {kib} KiB, no secret in it"), |b| {
            b.iter(|| scrubber.scrub(&clean))
        });
        let mut dirty = clean.clone();
        dirty.insert_str(dirty.len() / 2, &format!(" {} ", SECRETS[0].to_uppercase()));
        group.bench_function(format!("whole text, {kib} KiB, one secret in it"), |b| {
            b.iter(|| scrubber.scrub(&dirty))
        });
        let pieces: Vec<String> = clean.split_inclusive(' ').map(str::to_owned).collect();
        group.bench_function(format!("streamed word by word, {kib} KiB"), |b| {
            b.iter(|| {
                let mut stream = StreamScrubber::new(Arc::clone(&scrubber));
                let mut n = 0;
                for piece in &pieces {
                    n += stream.push(piece).len();
                }
                n + stream.finish().len()
            })
        });
        let value = serde_json::json!({
            "status": 200,
            "headers": {"content-type": "text/plain"},
            "lines": clean.lines().collect::<Vec<_>>(),
        });
        group.bench_function(format!("JSON result, {kib} KiB"), |b| {
            b.iter(|| {
                let mut v = value.clone();
                scrubber.scrub_value(&mut v);
                v
            })
        });
    }
    group.finish();
    c.bench_function("build a scrubber for five secrets", |b| {
        b.iter(|| Scrubber::new(SECRETS))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
