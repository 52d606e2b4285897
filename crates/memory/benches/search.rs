//! `cargo bench -p p3ak-memory --bench search`: open time, search latency and concurrent
//! throughput of the memory layer over generated corpora of 1K, 10K and 100K chunks.
//!
//! Each corpus is synthetic English-like text (a Zipf-distributed vocabulary of 4,000 made-up
//! words), 10 chunks of ~150 words per Markdown document, ingested into a real encrypted vault
//! in a temporary directory. Every chunk gets a random L2-normalised 384-d vector (the real
//! model would take hours at 100K); the query vector is random too, so the latencies exclude
//! the query's embedding, which is measured on its own with the real model when it is
//! installed (`P3AK_TEST_MODEL_DIR`, else the per-user cache; skipped otherwise).
//!
//! Uniform random vectors are the worst case for an approximate index (no structure to find).
//! `P3AK_BENCH_VECTORS=FILE` takes real MiniLM embeddings instead, from the retrieval bench's
//! cache (`…/p3ak-ir-cache/all-MiniLM-L6-v2.vectors`, about 12,600 texts of four collections):
//! the first 1,000 are the queries, and each chunk's vector is three others mixed (the first
//! weighing 0.5–0.8) plus a little noise, so a corpus of any size keeps real embeddings'
//! structure. From 50K chunks
//! semantic search goes through the approximate index: the bench builds it, reports its
//! recall@10 against the exact scan, and times semantic and hybrid both ways.
//!
//! Prints one `bench search/…` line per figure (machine-readable) and a table at the end.
//! `P3AK_BENCH_SIZES=1000,10000` runs only some corpus sizes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "benchmark program"
)]

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use p3ak_memory::{EmbeddingBatch, IngestItem, IngestOptions, Memory, Mode, SearchRequest};
use p3ak_testkit::corpus::{Rng, Words};
use p3ak_vault::{Access, KdfParams, Passphrase, Protection, Unlock, Vault, VaultKey};

const KDF: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    iterations: 1,
    parallelism: 1,
};
const DIMS: usize = 384;
const VOCABULARY: usize = 4000;
const CHUNKS_PER_DOC: usize = 10;
const WORDS_PER_CHUNK: usize = 150;
/// Under the chunker's 1,000-character target, so each section is exactly one chunk.
const MAX_CHUNK_CHARS: usize = 960;
const QUERIES: usize = 1000;
const WARMUP: usize = 50;
const OPEN_RUNS: usize = 5;
const THREADS: [usize; 4] = [1, 10, 50, 100];
const CONCURRENCY_SECS: u64 = 3;
const MODEL: &str = "bench-random-384";

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and text

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

/// A random unit vector.
fn unit_vector(rng: &mut Rng) -> Vec<f32> {
    normalised((0..DIMS).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect())
}

/// Where chunk and query vectors come from.
enum Vectors {
    Random,
    /// Real embeddings: queries, and a pool to derive chunk vectors from.
    Real {
        queries: Vec<Vec<f32>>,
        pool: Vec<Vec<f32>>,
    },
}

/// Noise added to each dimension of a derived chunk vector (its norm is then about 0.4
/// before normalising: neighbours stay neighbours, no two chunks are alike).
const DERIVED_NOISE: f32 = 0.02;

impl Vectors {
    fn from_env() -> Self {
        let Some(path) = std::env::var_os("P3AK_BENCH_VECTORS") else {
            return Self::Random;
        };
        let bytes = std::fs::read(&path).expect("P3AK_BENCH_VECTORS: a readable vectors file");
        let mut all = Vec::new();
        let mut at = 0;
        // The retrieval bench's cache: per entry a hash (u64), dimensions (u32), floats.
        while at + 12 <= bytes.len() {
            let dims = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            let end = at + 12 + dims * 4;
            if end > bytes.len() {
                break;
            }
            if dims == DIMS {
                all.push(
                    bytes[at + 12..end]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                );
            }
            at = end;
        }
        assert!(
            all.len() > 2 * QUERIES,
            "too few {DIMS}-d vectors in {path:?}"
        );
        let pool = all.split_off(QUERIES);
        println!(
            "vectors: {} real embeddings, {QUERIES} of them queries",
            pool.len() + QUERIES
        );
        Self::Real { queries: all, pool }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Random => "uniform random",
            Self::Real { .. } => "derived from real MiniLM embeddings",
        }
    }

    fn chunk(&self, rng: &mut Rng) -> Vec<f32> {
        match self {
            Self::Random => unit_vector(rng),
            Self::Real { pool, .. } => {
                // Three real embeddings mixed, the first dominant: at 1M chunks from ~11,600
                // embeddings, a mix of two gave ~86 near-copies of each embedding, a tight
                // cluster no real corpus has (the graph measured recall 0.69 on it).
                let mut pick = || &pool[rng.below(pool.len())];
                let (a, b, c) = (pick(), pick(), pick());
                let first = 0.5 + 0.3 * rng.unit() as f32;
                let second = (1.0 - first) * rng.unit() as f32;
                let third = 1.0 - first - second;
                normalised(
                    (0..DIMS)
                        .map(|d| {
                            first * a[d]
                                + second * b[d]
                                + third * c[d]
                                + DERIVED_NOISE * gaussian(rng)
                        })
                        .collect(),
                )
            }
        }
    }

    fn query(&self, rng: &mut Rng, i: usize) -> Vec<f32> {
        match self {
            Self::Random => unit_vector(rng),
            Self::Real { queries, .. } => queries[i % queries.len()].clone(),
        }
    }
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut Rng) -> f32 {
    let u = rng.unit().max(1e-12);
    let v = rng.unit();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// What the corpus is made of, on top of [`Words`].
trait Text {
    fn content(&self, rng: &mut Rng) -> &str;
    fn paragraph(&self, rng: &mut Rng) -> String;
    fn phrase(&self, rng: &mut Rng, lo: usize, hi: usize) -> String;
}

impl Text for Words {
    /// A word of middling to rare frequency (rank 20 and up), uniformly: what people search for.
    fn content(&self, rng: &mut Rng) -> &str {
        &self.vocab[rng.range(20, VOCABULARY - 1)]
    }

    /// About `WORDS_PER_CHUNK` words in sentences, at most `MAX_CHUNK_CHARS` characters.
    fn paragraph(&self, rng: &mut Rng) -> String {
        let mut out = String::with_capacity(MAX_CHUNK_CHARS + 16);
        let mut sentence_left = 0;
        for _ in 0..WORDS_PER_CHUNK {
            let w = self.zipf(rng);
            if out.len() + w.len() + 2 > MAX_CHUNK_CHARS {
                break;
            }
            if sentence_left == 0 {
                if !out.is_empty() {
                    out.push_str(". ");
                }
                let mut chars = w.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
                sentence_left = rng.range(8, 18);
            } else {
                out.push(' ');
                out.push_str(w);
            }
            sentence_left -= 1;
        }
        out.push('.');
        out
    }

    fn phrase(&self, rng: &mut Rng, lo: usize, hi: usize) -> String {
        let n = rng.range(lo, hi);
        (0..n)
            .map(|_| self.content(rng))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One Markdown document of `CHUNKS_PER_DOC` sections, one chunk each.
fn document(words: &Words, rng: &mut Rng) -> String {
    let mut doc = format!("# {}\n\n", words.phrase(rng, 2, 4));
    for _ in 0..CHUNKS_PER_DOC {
        doc.push_str("## ");
        doc.push_str(&words.phrase(rng, 2, 4));
        doc.push_str("\n\n");
        doc.push_str(&words.paragraph(rng));
        doc.push_str("\n\n");
    }
    doc
}

// ---------------------------------------------------------------------------------------------
// Figures

fn pass() -> Passphrase {
    Passphrase::new("correct horse battery staple".into())
}

fn label(chunks: usize) -> String {
    if chunks >= 1000 && chunks.is_multiple_of(1000) {
        format!("{}k", chunks / 1000)
    } else {
        chunks.to_string()
    }
}

/// Sorted durations' percentile (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The table printed at the end: (figure, value).
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.0.push((figure.into(), value.into()));
    }

    fn print(&self) {
        let width = self.0.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        println!();
        println!("{:<width$}  value", "figure");
        println!("{:-<width$}  {:-<40}", "", "");
        for (f, v) in &self.0 {
            println!("{f:<width$}  {v}");
        }
    }
}

/// A query pool: 2–5 content words and a random query vector each.
struct Queries(Vec<(String, Vec<f32>)>);

impl Queries {
    fn new(words: &Words, vectors: &Vectors, rng: &mut Rng, n: usize) -> Self {
        Self(
            (0..n)
                .map(|i| (words.phrase(rng, 2, 5), vectors.query(rng, i)))
                .collect(),
        )
    }
}

fn run_query(memory: &Memory<'_>, mode: Mode, query: &str, vector: &[f32]) -> usize {
    let mut request = SearchRequest::new(query);
    request.mode = mode;
    let vector = (mode != Mode::Bm25).then_some(vector);
    memory.search(&request, vector).unwrap().hits.len()
}

// `Memory` is shared by reference across the concurrency threads.
const _: () = {
    const fn assert_sync<T: Sync>() {}
    assert_sync::<Memory<'static>>();
};

/// Builds a vault of `chunks` chunks with a random vector each; returns its path.
fn build(
    dir: &Path,
    chunks: usize,
    (words, source): (&Words, &Vectors),
    rng: &mut Rng,
    table: &mut Table,
) -> PathBuf {
    let name = label(chunks);
    let path = dir.join(format!("corpus-{name}.vault"));
    let docs = chunks.div_ceil(CHUNKS_PER_DOC);
    let items: Vec<IngestItem> = (0..docs)
        .map(|i| IngestItem::Bytes {
            name: format!("corpus/doc-{i:06}.md"),
            title: None,
            bytes: document(words, rng).into_bytes(),
        })
        .collect();
    let bytes: usize = items
        .iter()
        .map(|i| match i {
            IngestItem::Bytes { bytes, .. } => bytes.len(),
            IngestItem::File(_) => 0,
        })
        .sum();

    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &pass(),
            kdf: KDF,
        },
    )
    .unwrap();
    let mut memory = Memory::open(&vault).unwrap();
    let start = Instant::now();
    let report = memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    let ingest = start.elapsed();
    assert_eq!(report.failed, 0, "{:?}", report.files.first());
    drop(memory);

    let start = Instant::now();
    let mut stored = 0;
    for files in report.files.chunks(1000) {
        let mut batch = EmbeddingBatch::default();
        for f in files {
            let vectors: Vec<Vec<f32>> = (0..f.chunks).map(|_| source.chunk(rng)).collect();
            batch.push(f.id.unwrap(), MODEL, &vectors);
        }
        stored += p3ak_memory::store_embeddings(&vault, &batch).unwrap();
    }
    let vectors = start.elapsed();
    if stored >= p3ak_memory::APPROXIMATE_MIN_ROWS {
        let start = Instant::now();
        p3ak_memory::update_approximate_index(&vault).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let mb = Memory::open(&vault).unwrap().status().approximate_bytes as f64 / 1e6;
        println!(
            "bench search/build/{name} approximate_s={secs:.2} approximate_rows_per_s={:.0} approximate_mb={mb:.1}",
            stored as f64 / secs
        );
        table.row(
            format!("build {name}: approximate index"),
            format!(
                "{stored} rows in {secs:.2} s = {:.0} rows/s (built, encrypted, committed); {mb:.1} MB",
                stored as f64 / secs
            ),
        );
    }
    drop(vault);
    let vault_mb = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e6;

    let secs = ingest.as_secs_f64();
    println!(
        "bench search/build/{name} docs={docs} chunks={} input_mb={:.1} ingest_s={secs:.2} \
         chunks_per_s={:.0} mb_per_s={:.2} vectors={stored} vectors_s={:.2} vault_mb={vault_mb:.1}",
        report.chunks,
        bytes as f64 / 1e6,
        report.chunks as f64 / secs,
        bytes as f64 / 1e6 / secs,
        vectors.as_secs_f64(),
    );
    table.row(
        format!("build {name}: ingest"),
        format!(
            "{} chunks / {docs} docs ({:.1} MB) in {secs:.2} s = {:.0} chunks/s, {:.2} MB/s",
            report.chunks,
            bytes as f64 / 1e6,
            report.chunks as f64 / secs,
            bytes as f64 / 1e6 / secs
        ),
    );
    table.row(
        format!("build {name}: store vectors"),
        format!(
            "{stored} vectors in {:.2} s; vault {vault_mb:.1} MB",
            vectors.as_secs_f64()
        ),
    );
    path
}

/// Median time of `Vault::open` (pre-derived key, read only) + `Memory::open`.
fn open_time(path: &Path, key: &VaultKey, name: &str, table: &mut Table) {
    let mut total = Vec::new();
    let mut vault_only = Vec::new();
    for _ in 0..OPEN_RUNS {
        let start = Instant::now();
        let vault = Vault::open(path, Unlock::Key(key), Access::Read).unwrap();
        let opened = start.elapsed();
        let memory = Memory::open(&vault).unwrap();
        total.push(start.elapsed());
        vault_only.push(opened);
        drop(memory);
    }
    total.sort();
    vault_only.sort();
    let (t, v) = (percentile(&total, 50.0), percentile(&vault_only, 50.0));
    println!(
        "bench search/open/{name} median_ms={:.1} vault_open_ms={:.1} memory_open_ms={:.1}",
        ms(t),
        ms(v),
        ms(t.saturating_sub(v))
    );
    table.row(
        format!("open {name}"),
        format!(
            "{:.1} ms median of {OPEN_RUNS} (vault {:.1} ms + memory {:.1} ms)",
            ms(t),
            ms(v),
            ms(t.saturating_sub(v))
        ),
    );
}

/// p50 / p99 of one query at a time over the pool.
fn latency(
    memory: &Memory<'_>,
    queries: &Queries,
    modes: &[(Mode, &str)],
    name: &str,
    table: &mut Table,
) {
    for &(mode, mode_name) in modes {
        for (q, v) in queries.0.iter().take(WARMUP) {
            run_query(memory, mode, q, v);
        }
        let mut times = Vec::with_capacity(queries.0.len());
        let mut empty = 0;
        for (q, v) in &queries.0 {
            let start = Instant::now();
            let hits = run_query(memory, mode, q, v);
            times.push(start.elapsed());
            empty += usize::from(hits == 0);
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
        let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap();
        println!(
            "bench search/{mode_name}/{name} p50_us={:.0} p99_us={:.0} mean_us={:.0} queries={} no_hits={empty}",
            us(p50),
            us(p99),
            us(mean),
            times.len()
        );
        table.row(
            format!("{mode_name} {name}"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (mean {:.2} ms, {} queries)",
                ms(p50),
                ms(p99),
                ms(mean),
                times.len()
            ),
        );
    }
}

/// Recall@10 of the approximate index against the exact scan over the bench's queries, and,
/// when searches use the index, the exact scan's latency to compare.
fn approximate(memory: &mut Memory<'_>, queries: &Queries, name: &str, table: &mut Table) {
    let vectors: Vec<Vec<f32>> = queries.0.iter().map(|(_, v)| v.clone()).collect();
    let start = Instant::now();
    let recall = memory.approximate_recall(&vectors, 10).unwrap();
    println!(
        "bench search/approximate/{name} recall_at_10={recall:.4} queries={} secs={:.1}",
        vectors.len(),
        start.elapsed().as_secs_f64()
    );
    table.row(
        format!("approximate recall@10 {name}"),
        format!(
            "{recall:.4} against the exact scan ({} queries)",
            vectors.len()
        ),
    );
    memory.scan_exactly(true);
    let exact = [
        (Mode::Semantic, "semantic-exact"),
        (Mode::Hybrid, "hybrid-exact"),
    ];
    latency(memory, queries, &exact, name, table);
    memory.scan_exactly(false);
}

/// Hybrid queries from `threads` threads sharing one `Memory`, for `CONCURRENCY_SECS`.
fn concurrency(memory: &Memory<'_>, queries: &Queries, name: &str, table: &mut Table) {
    for threads in THREADS {
        let barrier = Barrier::new(threads + 1);
        let duration = Duration::from_secs(CONCURRENCY_SECS);
        let (mut times, elapsed) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut at = t * 7919;
                        let mut times = Vec::new();
                        barrier.wait();
                        let start = Instant::now();
                        while start.elapsed() < duration {
                            let (q, v) = &queries.0[at % queries.0.len()];
                            at += 1;
                            let one = Instant::now();
                            run_query(memory, Mode::Hybrid, q, v);
                            times.push(one.elapsed());
                        }
                        times
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            let times: Vec<Duration> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            (times, start.elapsed())
        });
        times.sort();
        let qps = times.len() as f64 / elapsed.as_secs_f64();
        let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
        println!(
            "bench search/concurrent-hybrid/{name}/threads={threads} qps={qps:.0} p50_ms={:.1} p99_ms={:.1} queries={}",
            ms(p50),
            ms(p99),
            times.len()
        );
        table.row(
            format!("hybrid {name}, {threads} threads"),
            format!(
                "{qps:.0} queries/s, p50 {:.1} ms, p99 {:.1} ms",
                ms(p50),
                ms(p99)
            ),
        );
    }
}

/// The real model's time to embed one short query.
fn query_embedding(table: &mut Table) {
    let Some(dir) = p3ak_embed::test_support::model_dir() else {
        println!("bench search/query-embed skipped: no embedding model available");
        table.row("query embedding", "skipped: no model");
        return;
    };
    let start = Instant::now();
    let embedder = p3ak_embed::Embedder::load(&dir).unwrap();
    let load = start.elapsed();
    const ENGLISH: &[&str] = &[
        "tax",
        "return",
        "bank",
        "mortgage",
        "invoice",
        "contract",
        "renewal",
        "insurance",
        "policy",
        "meeting",
        "notes",
        "project",
        "deadline",
        "budget",
        "report",
        "quarterly",
        "doctor",
        "appointment",
        "travel",
        "flight",
        "hotel",
        "booking",
        "password",
        "reset",
        "server",
        "backup",
        "encryption",
        "key",
        "vault",
        "recipe",
        "dinner",
        "garden",
        "school",
        "holiday",
        "salary",
        "pension",
        "lease",
        "apartment",
        "repair",
        "warranty",
    ];
    let mut rng = Rng(42);
    let queries: Vec<String> = (0..300)
        .map(|_| {
            let n = rng.range(2, 5);
            (0..n)
                .map(|_| ENGLISH[rng.below(ENGLISH.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for q in queries.iter().take(20) {
        embedder.embed_one(q).unwrap();
    }
    let mut times: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let start = Instant::now();
            embedder.embed_one(q).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
    println!(
        "bench search/query-embed p50_ms={:.2} p99_ms={:.2} queries={} model_load_ms={:.0}",
        ms(p50),
        ms(p99),
        times.len(),
        ms(load)
    );
    table.row(
        "query embedding (MiniLM, 2-5 words)",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms ({} queries; model load {:.0} ms)",
            ms(p50),
            ms(p99),
            times.len(),
            ms(load)
        ),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let sizes: Vec<usize> = std::env::var("P3AK_BENCH_SIZES").map_or_else(
        |_| vec![1_000, 10_000, 100_000],
        |s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
    );
    let started = Instant::now();
    // Other work on the machine skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut table = Table::default();
    let mut rng = Rng(0x5eed);
    let words = Words::new(&mut rng, VOCABULARY);
    let source = Vectors::from_env();
    let queries = Queries::new(&words, &source, &mut rng, QUERIES);
    table.row("vectors", source.name());
    let dir = tempfile::tempdir().unwrap();
    let largest = sizes.iter().copied().max().unwrap_or(0);

    for &chunks in &sizes {
        let name = label(chunks);
        let path = build(dir.path(), chunks, (&words, &source), &mut rng, &mut table);
        let key = VaultKey::derive(&path, &pass()).unwrap();
        open_time(&path, &key, &name, &mut table);
        let vault = Vault::open(&path, Unlock::Key(&key), Access::Read).unwrap();
        let mut memory = Memory::open(&vault).unwrap();
        let status = memory.status();
        assert_eq!(
            status.embedded_chunks, status.chunks,
            "every chunk has a vector"
        );
        // Live objects; the vault file is larger by what earlier commits superseded.
        let (index_mb, vector_mb) = (
            status.index_bytes as f64 / 1e6,
            status.vector_bytes as f64 / 1e6,
        );
        println!("bench search/size/{name} index_mb={index_mb:.1} vectors_mb={vector_mb:.1}");
        table.row(
            format!("live objects {name}"),
            format!("index {index_mb:.1} MB, vectors {vector_mb:.1} MB"),
        );
        let all = [
            (Mode::Bm25, "bm25"),
            (Mode::Semantic, "semantic"),
            (Mode::Hybrid, "hybrid"),
        ];
        let start = Instant::now();
        if let Some(measured) = memory.approximate_index_recall() {
            let load = start.elapsed();
            println!("bench search/approximate/{name} load_ms={:.1}", ms(load));
            table.row(
                format!("approximate index {name}: load"),
                format!(
                    "{:.1} ms (decrypted and fitted at the first semantic search)",
                    ms(load)
                ),
            );
            let used = memory.uses_approximate_index();
            println!("bench search/approximate/{name} measured_at_build={measured:.4} used={used}");
            table.row(
                format!("approximate index {name}"),
                format!(
                    "recall@10 measured when written {measured:.4}: {}",
                    if used {
                        "used"
                    } else {
                        "not used (below 0.95), exact scan"
                    }
                ),
            );
        }
        latency(&memory, &queries, &all, &name, &mut table);
        if memory.approximate_index_recall().is_some() {
            approximate(&mut memory, &queries, &name, &mut table);
        }
        if chunks == largest {
            concurrency(&memory, &queries, &name, &mut table);
        }
    }
    query_embedding(&mut table);
    table.print();
    println!(
        "\n(total bench time {:.0} s; 2-5 word queries over rank-20+ words, k=10, 100 candidates per signal)",
        started.elapsed().as_secs_f64()
    );
}
