//! `cargo bench -p p3ak-memory --bench retrieval`: retrieval quality on every judged collection,
//! every mode side by side with reciprocal-rank fusion and with a peer, SQLite FTS5's BM25
//! (porter stemmer), on the same documents in the same run.
//!
//! Collections: every directory of `data/ir/` that holds a `docs.jsonl`, and
//! `../shared/data/ir/python-faq` beside the workspace when it exists; `P3AK_IR_COLLECTIONS`
//! (directories, comma-separated, relative to the workspace) replaces that list. The real embedding model is needed
//! (`P3AK_TEST_MODEL_DIR`, else the per-user cache). Each collection is ingested into a real
//! encrypted vault and embedded once; every query's ranking by each signal is fetched once, and
//! every fusion below is computed from those rankings, so trying a configuration costs no
//! search and no embedding.
//!
//! Chunk embeddings are cached by text (`P3AK_IR_CACHE`, default
//! `$CARGO_TARGET_DIR/p3ak-ir-cache/`): a second run embeds only what changed.
//! `P3AK_IR_DUMP=DIR` also writes each collection's signal rankings as JSON.
//! `P3AK_IR_LIVE=1` also runs every mode's live search (timed) and checks the offline hybrid
//! against it; slow in a debug build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::indexing_slicing,
    reason = "benchmark program"
)]

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use p3ak_memory::eval::{Collection, EvalReport, Scores, SignalRun, evaluate, evaluate_signals};
use p3ak_memory::fusion::{FusionConfig, Level, Normalisation, Weights};
use p3ak_memory::{Fusion, MiniLm, Mode, Signal, TextEmbedder};

/// The embedder, with every vector it computed kept on disk by the hash of its text.
struct Cached {
    inner: MiniLm,
    vectors: Mutex<HashMap<u64, Vec<f32>>>,
    file: Mutex<std::fs::File>,
    misses: Mutex<usize>,
}

impl Cached {
    fn open(inner: MiniLm, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{}.vectors", inner.model()));
        let mut vectors = HashMap::new();
        if let Ok(bytes) = std::fs::read(&path) {
            let mut at = 0;
            // Each entry: hash (u64), dimensions (u32), floats; a torn tail is ignored.
            while at + 12 <= bytes.len() {
                let key = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                let dims = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
                let end = at + 12 + dims * 4;
                if end > bytes.len() {
                    break;
                }
                let v = bytes[at + 12..end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                vectors.insert(key, v);
                at = end;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        Self {
            inner,
            vectors: Mutex::new(vectors),
            file: Mutex::new(file),
            misses: Mutex::new(0),
        }
    }

    fn key(text: &str) -> u64 {
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    }
}

impl TextEmbedder for Cached {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let keys: Vec<u64> = texts.iter().map(|t| Self::key(t)).collect();
        let missing: Vec<&str> = {
            let vectors = self.vectors.lock().unwrap();
            texts
                .iter()
                .zip(&keys)
                .filter(|(_, k)| !vectors.contains_key(k))
                .map(|(t, _)| *t)
                .collect()
        };
        if !missing.is_empty() {
            let computed = self.inner.embed(&missing)?;
            *self.misses.lock().unwrap() += missing.len();
            let mut vectors = self.vectors.lock().unwrap();
            let mut file = self.file.lock().unwrap();
            for (text, v) in missing.iter().zip(computed) {
                let key = Self::key(text);
                let mut entry = Vec::with_capacity(12 + v.len() * 4);
                entry.extend_from_slice(&key.to_le_bytes());
                entry.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in &v {
                    entry.extend_from_slice(&x.to_le_bytes());
                }
                file.write_all(&entry).unwrap();
                vectors.insert(key, v);
            }
        }
        let vectors = self.vectors.lock().unwrap();
        Ok(keys.iter().map(|k| vectors[k].clone()).collect())
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn collections() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("P3AK_IR_COLLECTIONS") {
        return list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            // Relative to the workspace, not to cargo bench's working directory (this crate's).
            .map(|s| workspace().join(s.trim()))
            .collect();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("data/ir"))
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.join("docs.jsonl").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let faq = workspace().join("../shared/data/ir/python-faq");
    if faq.join("docs.jsonl").is_file() {
        dirs.insert(0, faq);
    }
    dirs
}

/// SQLite FTS5 over the same documents (title and text columns, porter stemmer over unicode61):
/// its BM25 ranking of each query's words, OR-ed. Returns the scores, the mean query time in
/// milliseconds and the seconds to build the index.
fn fts5(collection: &Collection, run: &SignalRun) -> (Scores, f64, f64) {
    let started = Instant::now();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, text, \
         tokenize = 'porter unicode61 remove_diacritics 2');",
    )
    .unwrap();
    db.execute_batch("BEGIN").unwrap();
    {
        let mut insert = db
            .prepare("INSERT INTO docs (id, title, text) VALUES (?1, ?2, ?3)")
            .unwrap();
        for d in &collection.docs {
            insert.execute((&d.id, &d.title, &d.text)).unwrap();
        }
    }
    db.execute_batch("COMMIT").unwrap();
    let build = started.elapsed().as_secs_f64();
    let texts: HashMap<&str, &str> = collection
        .queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();
    let index: HashMap<&str, usize> = run
        .doc_ids
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut select = db
        .prepare("SELECT id FROM docs WHERE docs MATCH ?1 ORDER BY bm25(docs) LIMIT 100")
        .unwrap();
    let mut elapsed = 0.0;
    let scores = run.scores(collection, |q| {
        let words: Vec<String> = texts[q.query.as_str()]
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| format!("\"{}\"", w.to_lowercase()))
            .collect();
        if words.is_empty() {
            return Vec::new();
        }
        let t = Instant::now();
        let ids: Vec<String> = select
            .query_map([words.join(" OR ")], |row| row.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        elapsed += t.elapsed().as_secs_f64() * 1000.0;
        ids.iter()
            .filter_map(|id| index.get(id.as_str()).copied())
            .collect()
    });
    #[allow(clippy::cast_precision_loss)]
    let mean = elapsed / run.queries.len().max(1) as f64;
    (scores, mean, build)
}

/// A candidate fusion, named for the tables.
struct Candidate {
    name: &'static str,
    config: FusionConfig,
}

fn candidates() -> Vec<Candidate> {
    let default = FusionConfig::default();
    vec![
        Candidate {
            name: "default",
            config: default,
        },
        Candidate {
            name: "rrf60-bm25+sem",
            config: rrf_bm25_semantic(),
        },
        Candidate {
            name: "rrf60-bm25+sem, per document",
            config: FusionConfig {
                level: Level::Document,
                ..rrf_bm25_semantic()
            },
        },
        Candidate {
            name: "default, per document",
            config: FusionConfig {
                level: Level::Document,
                ..default
            },
        },
        Candidate {
            name: "convex 0.5/0.5 bm25+sem",
            config: FusionConfig {
                weights: Weights {
                    bm25: 0.5,
                    semantic: 0.5,
                    structure: 0.0,
                },
                ..default
            },
        },
        Candidate {
            name: "convex 0.5/0.5 bm25+sem, min-max",
            config: FusionConfig {
                weights: Weights {
                    bm25: 0.5,
                    semantic: 0.5,
                    structure: 0.0,
                },
                normalisation: Normalisation::MinMax,
                ..default
            },
        },
    ]
}

/// Plain reciprocal-rank fusion of BM25 and the embedding (equal weights, k = 60): the usual
/// baseline a hybrid must beat.
fn rrf_bm25_semantic() -> FusionConfig {
    FusionConfig {
        method: Fusion::Rrf { k: 60.0 },
        weights: Weights {
            bm25: 1.0,
            semantic: 1.0,
            structure: 0.0,
        },
        ..FusionConfig::default()
    }
}

struct Row {
    name: String,
    scores: Scores,
    ms: Option<f64>,
}

fn mode_ms(report: &EvalReport, mode: Mode) -> Option<f64> {
    report
        .modes
        .iter()
        .find(|m| m.mode == mode)
        .map(|m| m.mean_search_ms)
}

fn main() {
    let Some(model_dir) = p3ak_embed::test_support::model_dir() else {
        eprintln!("bench retrieval: the embedding model is not available; skipped");
        return;
    };
    let cache_dir = std::env::var_os("P3AK_IR_CACHE").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace().join("target"), PathBuf::from)
                .join("p3ak-ir-cache")
        },
        PathBuf::from,
    );
    let embedder = Cached::open(
        MiniLm::new(p3ak_embed::Embedder::load(&model_dir).unwrap()),
        &cache_dir,
    );
    let dump = std::env::var_os("P3AK_IR_DUMP").map(PathBuf::from);
    // The searches per mode (timed, and checked against the offline fusion) cost more than
    // the rest in a debug build; on request only.
    let live = std::env::var_os("P3AK_IR_LIVE").is_some();
    let mut tried: Vec<(String, Vec<f64>)> = candidates()
        .iter()
        .map(|c| (c.name.to_owned(), Vec::new()))
        .collect();
    let mut names = Vec::new();
    for dir in collections() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let collection = Collection::load(&dir).unwrap();
        let work = tempfile::tempdir().unwrap();
        let misses_before = *embedder.misses.lock().unwrap();
        let report = if live {
            evaluate(
                &collection,
                work.path(),
                Some(&embedder),
                Fusion::Convex,
                &mut |_| {},
            )
        } else {
            evaluate_signals(&collection, work.path(), Some(&embedder), &mut |_| {})
        }
        .unwrap();
        let embedded = *embedder.misses.lock().unwrap() - misses_before;
        let run = &report.signals;
        if let Some(dump) = &dump {
            std::fs::create_dir_all(dump).unwrap();
            std::fs::write(
                dump.join(format!("{name}.json")),
                serde_json::to_vec(run).unwrap(),
            )
            .unwrap();
        }
        let single = |signal| run.scores(&collection, |q| SignalRun::single(q, signal));
        let fused =
            |config: &FusionConfig| run.scores(&collection, |q| SignalRun::fused(q, config));
        let (fts, fts_ms, fts_build) = fts5(&collection, run);
        let hybrid = fused(&FusionConfig::default());
        let live_hybrid = report
            .modes
            .iter()
            .find(|m| m.mode == Mode::Hybrid)
            .map(|m| m.scores.ndcg_at_10);
        // The fusion computed offline must be the one `search` computes.
        if let Some(live) = live_hybrid {
            assert!(
                (live - hybrid.ndcg_at_10).abs() < 1e-9,
                "{name}: offline hybrid {} != live {live}",
                hybrid.ndcg_at_10
            );
        }
        let rows = [
            Row {
                name: "bm25".into(),
                scores: single(Signal::Bm25),
                ms: mode_ms(&report, Mode::Bm25),
            },
            Row {
                name: "semantic".into(),
                scores: single(Signal::Semantic),
                ms: mode_ms(&report, Mode::Semantic),
            },
            Row {
                name: "structure".into(),
                scores: single(Signal::Structure),
                ms: None,
            },
            Row {
                name: "hybrid (default)".into(),
                scores: hybrid,
                ms: mode_ms(&report, Mode::Hybrid),
            },
            Row {
                name: "rrf k=60, bm25+semantic".into(),
                scores: fused(&rrf_bm25_semantic()),
                ms: None,
            },
            Row {
                name: "sqlite fts5 bm25 (porter)".into(),
                scores: fts,
                ms: Some(fts_ms),
            },
        ];
        println!(
            "\n### {name}: {} documents, {} chunks, {} queries (embedded {embedded} chunks in {:.0} s; fts5 index {:.2} s)\n",
            report.documents, report.chunks, report.queries, report.embed_seconds, fts_build
        );
        println!("| mode | nDCG@10 | MRR@10 | Recall@100 | ms/query |");
        println!("|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.3} | {:.3} | {:.3} | {} |",
                r.name,
                r.scores.ndcg_at_10,
                r.scores.mrr_at_10,
                r.scores.recall_at_100,
                r.ms.map_or("—".to_owned(), |m| format!("{m:.2}"))
            );
            println!(
                "bench retrieval/{name}/{}/ndcg10 {:.4}",
                r.name.replace(' ', "_"),
                r.scores.ndcg_at_10
            );
        }
        let best_single = rows[..3]
            .iter()
            .map(|r| r.scores.ndcg_at_10)
            .fold(0.0, f64::max);
        let rrf = rows[4].scores.ndcg_at_10;
        println!(
            "\nhybrid − best single mode: {:+.3}; hybrid − rrf: {:+.3}",
            hybrid.ndcg_at_10 - best_single,
            hybrid.ndcg_at_10 - rrf
        );
        for (c, (_, scores)) in candidates().iter().zip(&mut tried) {
            scores.push(fused(&c.config).ndcg_at_10);
        }
        names.push(name);
    }
    println!("\n### nDCG@10 of each configuration tried\n");
    println!("| configuration | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (name, scores) in &tried {
        let cells: Vec<String> = scores.iter().map(|s| format!("{s:.3}")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}
