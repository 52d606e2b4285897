//! `cargo bench -p p3ak-embed --bench embed [-- --chunks N] [-- --only NAME]`: prints, for each
//! way of running the model, what the owner waits for:
//!
//! - `docs 1by1`: the python-faq documents (first 256 tokens of each: real text), embedded one
//!   `embed` call per document, as ingest does for a one-chunk document: ms per chunk, cores busy;
//! - `docs batch`: the same documents in one `embed` call: chunks/s, cores busy, GFLOP/s;
//! - `256 1by1` / `256 batch`: 32 synthetic chunks of exactly 256 tokens (≈ 6 GFLOP each);
//! - `query`: the 171 python-faq queries one at a time: p50 / p99;
//! - dense MRR@10 and recall@10 of those queries over those documents (a quality check).
//!
//! The rows are: `before` (candle-transformers' BERT, one batch after the other), `fused 1
//! worker` and `fused` (this crate's encoder on candle tensors, padded batches on every core),
//! `direct` (the same encoder as plain loops, each text alone: the default). `crates/embed/benches/reference.py` prints the same figures for ONNX Runtime; with
//! `P3AK_EMBED_REFERENCE_PYTHON` set to a Python that has its requirements (see
//! `reference-requirements.txt`), this bench runs it right after its own rows, on the same
//! documents, so both sets of figures come from one run under the same load.
//!
//! Needs the model (`P3AK_TEST_MODEL_DIR`, else the per-user cache) and the python-faq data
//! (`P3AK_IR_DATA`, else `shared/data/ir/python-faq` beside the repository; without it the
//! synthetic chunks stand in for the documents and the quality check is skipped).
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss,
    reason = "bench code that prints its figures"
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use p3ak_embed::{EmbedOptions, Embedder, Encoder, MAX_TOKENS};

fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("P3AK_TEST_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/p3ak-models/all-minilm-l6-v2"))
        .filter(|dir| dir.join("model.safetensors").is_file())
}

fn data_dir() -> Option<PathBuf> {
    std::env::var_os("P3AK_IR_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ir/python-faq"))
        })
        .filter(|dir| dir.join("docs.jsonl").is_file())
}

/// A text of exactly `MAX_TOKENS` tokens (truncated from a longer one); the same text
/// `reference.py` builds.
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

struct Collection {
    doc_ids: Vec<String>,
    docs: Vec<String>,
    queries: Vec<String>,
    /// The relevant document of each query.
    relevant: Vec<String>,
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn collection(dir: &Path) -> Collection {
    let docs = jsonl(&dir.join("docs.jsonl"));
    let queries = jsonl(&dir.join("queries.jsonl"));
    let qrels: std::collections::HashMap<String, String> =
        std::fs::read_to_string(dir.join("qrels.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| {
                let mut parts = line.split('\t');
                (
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                )
            })
            .collect();
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap().to_owned();
    Collection {
        doc_ids: docs.iter().map(|d| text(d, "id")).collect(),
        docs: docs.iter().map(|d| text(d, "text")).collect(),
        relevant: queries
            .iter()
            .map(|q| qrels[&text(q, "id")].clone())
            .collect(),
        queries: queries.iter().map(|q| text(q, "text")).collect(),
    }
}

/// Multiply-adds ×2 of one MiniLM-L6 forward over `tokens` tokens (matrix products only).
fn flops(tokens: usize) -> f64 {
    let (h, ff, layers) = (384.0, 1536.0, 6.0);
    let t = tokens as f64;
    layers * (2.0 * t * (4.0 * h * h + 2.0 * h * ff) + 4.0 * t * t * h)
}

/// CPU seconds of this process so far (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second here).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// (wall seconds, cores busy) of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    f();
    let wall = start.elapsed().as_secs_f64();
    (wall, (cpu_seconds() - cpu) / wall)
}

/// The 1-, 5- and 15-minute load averages (the machine is shared: figures need them beside).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let limit: usize = arg("--chunks").map_or(0, |n| n.parse().unwrap());
    let only = arg("--only");
    let Some(dir) = model_dir() else {
        eprintln!("skipped: embed bench: no model (set P3AK_TEST_MODEL_DIR or run .ci/run)");
        return;
    };
    let synthetic: Vec<String> = (0..32).map(chunk).collect();
    let data = data_dir().map(|dir| collection(&dir));
    if data.is_none() {
        eprintln!("no python-faq data (set P3AK_IR_DATA): synthetic chunks stand in");
    }
    let mut docs: Vec<&str> = match &data {
        Some(c) => c.docs.iter().map(String::as_str).collect(),
        None => synthetic.iter().map(String::as_str).collect(),
    };
    if limit > 0 {
        docs.truncate(limit);
    }
    let queries: Vec<&str> = match &data {
        Some(c) => c.queries.iter().map(String::as_str).collect(),
        None => vec!["how do I rotate the master key of my vault"; 50],
    };
    let synthetic: Vec<&str> = synthetic.iter().map(String::as_str).collect();

    let probe = Embedder::load(&dir).unwrap();
    assert_eq!(probe.token_count(synthetic[0]).unwrap(), MAX_TOKENS);
    let doc_tokens: Vec<usize> = docs.iter().map(|d| probe.token_count(d).unwrap()).collect();
    let doc_flops: f64 = doc_tokens.iter().map(|&t| flops(t)).sum();
    println!(
        "docs: {} chunks, {:.0} tokens on average ({:.2} GFLOP each); a {MAX_TOKENS}-token chunk is {:.2} GFLOP; rayon threads {}",
        docs.len(),
        doc_tokens.iter().sum::<usize>() as f64 / docs.len() as f64,
        doc_flops / docs.len() as f64 / 1e9,
        flops(MAX_TOKENS) / 1e9,
        rayon::current_num_threads(),
    );
    drop(probe);

    let configs = [
        (
            "before",
            EmbedOptions {
                encoder: Encoder::Candle,
                workers: 1,
                direct_tokens: 0,
            },
        ),
        (
            "fused 1 worker",
            EmbedOptions {
                encoder: Encoder::Fused,
                workers: 1,
                direct_tokens: 0,
            },
        ),
        (
            "fused",
            EmbedOptions {
                direct_tokens: 0,
                ..EmbedOptions::default()
            },
        ),
        ("direct", EmbedOptions::default()),
    ];
    for (name, options) in configs {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let start = Instant::now();
        let embedder = Embedder::load_with(&dir, options).unwrap();
        let load = start.elapsed().as_secs_f64();
        embedder.embed(&synthetic[..2]).unwrap();

        let (one_wall, one_cores) = timed(|| {
            for doc in &docs {
                embedder.embed_one(doc).unwrap();
            }
        });
        let mut doc_vectors = Vec::new();
        let (batch_wall, batch_cores) = timed(|| doc_vectors = embedder.embed(&docs).unwrap());
        let (one256_wall, _) = timed(|| {
            for text in &synthetic[..8] {
                embedder.embed_one(text).unwrap();
            }
        });
        let (batch256_wall, batch256_cores) = timed(|| drop(embedder.embed(&synthetic).unwrap()));
        let mut latencies = Vec::with_capacity(queries.len());
        let mut query_vectors = Vec::with_capacity(queries.len());
        for query in &queries {
            let start = Instant::now();
            query_vectors.push(embedder.embed_one(query).unwrap());
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
        latencies.sort_by(f64::total_cmp);

        let quality = match &data {
            Some(c) if docs.len() == c.docs.len() => {
                let (mut rr, mut hits) = (0.0, 0);
                for (vector, relevant) in query_vectors.iter().zip(&c.relevant) {
                    let mut ranked: Vec<(f32, usize)> = doc_vectors
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (dot(vector, d), i))
                        .collect();
                    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
                    if let Some(rank) = ranked
                        .iter()
                        .take(10)
                        .position(|&(_, i)| &c.doc_ids[i] == relevant)
                    {
                        hits += 1;
                        rr += 1.0 / (rank + 1) as f64;
                    }
                }
                let n = c.queries.len() as f64;
                format!(
                    "dense MRR@10 {:.4} recall@10 {:.4}",
                    rr / n,
                    f64::from(hits) / n
                )
            }
            _ => "quality: not measured (needs every python-faq document)".to_owned(),
        };
        println!(
            "{name}: load {:.0} ms; docs 1by1 {:.1} ms/chunk ({one_cores:.2} cores); docs batch {:.1} chunks/s ({batch_cores:.2} cores, {:.0} GFLOP/s); 256 1by1 {:.1} ms/chunk; 256 batch {:.1} chunks/s ({batch256_cores:.2} cores, {:.0} GFLOP/s); query p50 {:.2} ms p99 {:.2} ms; {quality}; load {}",
            load * 1e3,
            one_wall / docs.len() as f64 * 1e3,
            docs.len() as f64 / batch_wall,
            doc_flops / batch_wall / 1e9,
            one256_wall / 8.0 * 1e3,
            synthetic.len() as f64 / batch256_wall,
            flops(MAX_TOKENS) * synthetic.len() as f64 / batch256_wall / 1e9,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            load_average(),
        );
    }
    reference(limit);
}

/// Runs `reference.py` with the Python in `P3AK_EMBED_REFERENCE_PYTHON`, if set; its figures go
/// to stdout below ours.
fn reference(limit: usize) {
    let Some(python) = std::env::var_os("P3AK_EMBED_REFERENCE_PYTHON") else {
        println!("reference: not run (set P3AK_EMBED_REFERENCE_PYTHON to a venv's python)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference.py");
    let status = std::process::Command::new(python)
        .arg(script)
        .args(["--chunks", &limit.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "reference.py failed: {status}");
}
