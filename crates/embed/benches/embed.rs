//! `cargo bench -p p3ak-embed --bench embed`: a short query, a 256-token chunk, a batch of 32
//! chunks, and `Embedder::load`. Needs a model: `P3AK_TEST_MODEL_DIR`, else the per-user cache.
//! `RAYON_NUM_THREADS=1` measures one core.
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "bench code")]
#![expect(clippy::print_stderr, reason = "the bench reports a skip on stderr")]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_embed::{Embedder, MAX_TOKENS};

fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("P3AK_TEST_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/p3ak-models/all-minilm-l6-v2"))
        .filter(|dir| dir.join("model.safetensors").is_file())
}

/// A text of exactly `MAX_TOKENS` tokens (truncated from a longer one).
fn chunk(seed: usize) -> String {
    let words = [
        "vault",
        "policy",
        "audit",
        "document",
        "encrypted",
        "search",
        "kernel",
        "private",
        "model",
        "query",
        "answer",
        "memory",
        "token",
        "chunk",
        "index",
        "key",
    ];
    (0..400)
        .map(|i| words[(i * 7 + seed) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(c: &mut Criterion) {
    let Some(dir) = model_dir() else {
        eprintln!("skipped: embed bench: no model (set P3AK_TEST_MODEL_DIR or run .ci/run)");
        return;
    };
    let mut group = c.benchmark_group("embed");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("load", |b| {
        b.iter(|| Embedder::load(black_box(&dir)).unwrap())
    });

    let embedder = Embedder::load(&dir).unwrap();
    let query = "how do I rotate the master key of my vault";
    let chunks: Vec<String> = (0..32).map(chunk).collect();
    assert_eq!(embedder.token_count(&chunks[0]).unwrap(), MAX_TOKENS);
    let batch: Vec<&str> = chunks.iter().map(String::as_str).collect();

    group.bench_function("query_10_tokens", |b| {
        b.iter(|| embedder.embed_one(black_box(query)).unwrap())
    });
    group.bench_function("chunk_256_tokens", |b| {
        b.iter(|| embedder.embed_one(black_box(&chunks[0])).unwrap())
    });
    group.bench_function("batch_32_chunks", |b| {
        b.iter(|| embedder.embed(black_box(&batch)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
