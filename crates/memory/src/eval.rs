//! Retrieval evaluation over a judged collection: `docs.jsonl` (`id`, `title`, `text`),
//! `queries.jsonl` (`id`, `text`) and `qrels.tsv` (`query_id`, `doc_id`, `relevance`, after a
//! header line). A temporary encrypted vault is built from the documents; every query is run
//! in each mode; nDCG@10, MRR@10 and Recall@100 are computed on document ids (a document's rank
//! is that of its best chunk).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use p3ak_vault::{KdfParams, Passphrase, Protection, Vault};
use serde::{Deserialize, Serialize};

use crate::fusion::{self, Fusion, FusionConfig, Ranked, Signal};
use crate::ingest::{IngestItem, IngestOptions};
use crate::memory::{EmbeddingBatch, Memory, TextEmbedder, store_embeddings};
use crate::search::{Mode, SearchRequest};
use crate::{MemoryError, Result};

/// A judged collection.
pub struct Collection {
    pub docs: Vec<EvalDoc>,
    pub queries: Vec<EvalQuery>,
    /// query id → (doc id → relevance)
    pub qrels: HashMap<String, HashMap<String, u32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EvalDoc {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EvalQuery {
    pub id: String,
    pub text: String,
}

fn collection_err(path: &Path, reason: impl Into<String>) -> MemoryError {
    MemoryError::Collection {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| collection_err(path, e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(line)
            .map_err(|e| collection_err(path, format!("line {}: {e}", n + 1)))?;
        out.push(item);
    }
    Ok(out)
}

impl Collection {
    /// Reads a collection directory; every malformed line is an error naming file and line.
    pub fn load(dir: &Path) -> Result<Self> {
        let docs: Vec<EvalDoc> = read_jsonl(&dir.join("docs.jsonl"))?;
        let queries: Vec<EvalQuery> = read_jsonl(&dir.join("queries.jsonl"))?;
        let qrels_path = dir.join("qrels.tsv");
        let text = std::fs::read_to_string(&qrels_path)
            .map_err(|e| collection_err(&qrels_path, e.to_string()))?;
        let mut qrels: HashMap<String, HashMap<String, u32>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if n == 0
                && fields
                    .first()
                    .is_some_and(|f| f.eq_ignore_ascii_case("query_id"))
            {
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let [q, d, r] = fields.as_slice() else {
                return Err(collection_err(
                    &qrels_path,
                    format!("line {}: expected query_id, doc_id and relevance", n + 1),
                ));
            };
            let relevance: u32 = r.parse().map_err(|_| {
                collection_err(
                    &qrels_path,
                    format!("line {}: relevance `{r}` is not a number", n + 1),
                )
            })?;
            qrels
                .entry((*q).to_owned())
                .or_default()
                .insert((*d).to_owned(), relevance);
        }
        if docs.is_empty() || queries.is_empty() {
            return Err(collection_err(
                dir,
                "the collection has no documents or no queries",
            ));
        }
        let ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        if ids.len() != docs.len() {
            return Err(collection_err(
                &dir.join("docs.jsonl"),
                "document ids repeat",
            ));
        }
        Ok(Self {
            docs,
            queries,
            qrels,
        })
    }
}

/// The three measures for one mode.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Scores {
    pub ndcg_at_10: f64,
    pub mrr_at_10: f64,
    pub recall_at_100: f64,
}

/// Scores of a ranking (doc ids, best first) for one query.
pub fn score_query(ranking: &[String], judged: &HashMap<String, u32>) -> Scores {
    let gain = |id: &String| f64::from(judged.get(id).copied().unwrap_or(0));
    #[expect(clippy::cast_precision_loss, reason = "ranks are small")]
    let discount = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, id)| gain(id) * discount(i))
        .sum();
    let mut ideal: Vec<f64> = judged
        .values()
        .map(|&r| f64::from(r))
        .filter(|&g| g > 0.0)
        .collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| g * discount(i))
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "ranks are small")]
    let mrr = ranking
        .iter()
        .take(10)
        .position(|id| gain(id) > 0.0)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64);
    let relevant = judged.values().filter(|&&r| r > 0).count();
    let found = ranking.iter().take(100).filter(|id| gain(id) > 0.0).count();
    #[expect(clippy::cast_precision_loss, reason = "counts are small")]
    let recall = if relevant == 0 {
        0.0
    } else {
        found as f64 / relevant as f64
    };
    Scores {
        ndcg_at_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        mrr_at_10: mrr,
        recall_at_100: recall,
    }
}

/// One mode's result.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: Mode,
    #[serde(flatten)]
    pub scores: Scores,
    /// Mean search time per query, query embedding excluded.
    pub mean_search_ms: f64,
}

/// What `eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub documents: usize,
    pub chunks: usize,
    /// Queries with at least one relevant document (the others are not scored).
    pub queries: usize,
    pub modes: Vec<ModeReport>,
    /// Set when no model was given: semantic and hybrid-with-semantic were not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub ingest_seconds: f64,
    pub embed_seconds: f64,
    /// Mean time to embed one query.
    pub mean_query_embedding_ms: f64,
    /// Every signal's ranking of every scored query, to fuse offline in other ways.
    #[serde(skip)]
    pub signals: SignalRun,
}

/// A chunk one signal ranked: its document (an index into [`SignalRun::doc_ids`]), its
/// position in the document, and the signal's raw score.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChunkHit {
    pub doc: usize,
    pub chunk: u32,
    pub score: f32,
}

/// One signal's ranked chunks for one query, best first.
#[derive(Debug, Clone, Serialize)]
pub struct SignalRanking {
    pub signal: Signal,
    pub hits: Vec<ChunkHit>,
}

/// A scored query with each signal's ranking.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySignals {
    pub query: String,
    pub lists: Vec<SignalRanking>,
}

/// Each signal's ranking of every scored query, fetched once: any fusion is computed from it
/// without searching (or embedding) again.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignalRun {
    /// Collection document ids, by index.
    pub doc_ids: Vec<String>,
    pub queries: Vec<QuerySignals>,
}

impl SignalRun {
    /// Mean scores of a ranking function (document indices, best first) over the queries.
    pub fn scores(
        &self,
        collection: &Collection,
        mut rank: impl FnMut(&QuerySignals) -> Vec<usize>,
    ) -> Scores {
        let empty = HashMap::new();
        let mut sum = Scores::default();
        for q in &self.queries {
            let ranking: Vec<String> = rank(q)
                .into_iter()
                .filter_map(|d| self.doc_ids.get(d).cloned())
                .collect();
            let s = score_query(&ranking, collection.qrels.get(&q.query).unwrap_or(&empty));
            sum.ndcg_at_10 += s.ndcg_at_10;
            sum.mrr_at_10 += s.mrr_at_10;
            sum.recall_at_100 += s.recall_at_100;
        }
        #[expect(clippy::cast_precision_loss, reason = "query counts are small")]
        let n = self.queries.len().max(1) as f64;
        Scores {
            ndcg_at_10: sum.ndcg_at_10 / n,
            mrr_at_10: sum.mrr_at_10 / n,
            recall_at_100: sum.recall_at_100 / n,
        }
    }

    /// The documents of `query` as `config` fuses its signals, best first.
    pub fn fused(query: &QuerySignals, config: &FusionConfig) -> Vec<usize> {
        let lists: Vec<Ranked<(usize, u32)>> = query
            .lists
            .iter()
            .map(|l| Ranked {
                signal: l.signal,
                weight: config.weights.of(l.signal),
                hits: l.hits.iter().map(|h| ((h.doc, h.chunk), h.score)).collect(),
            })
            .collect();
        documents(
            fusion::fuse_with(&lists, config, |k| k.0)
                .into_iter()
                .map(|f| f.key.0),
        )
    }

    /// The documents of one signal alone, best first.
    pub fn single(query: &QuerySignals, signal: Signal) -> Vec<usize> {
        query
            .lists
            .iter()
            .find(|l| l.signal == signal)
            .map(|l| documents(l.hits.iter().map(|h| h.doc)))
            .unwrap_or_default()
    }
}

/// Chunk-ordered documents to a document ranking: each at the place of its best chunk.
fn documents(chunks: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut seen = HashSet::new();
    chunks.filter(|d| seen.insert(*d)).collect()
}

/// Progress of an evaluation.
pub enum EvalEvent {
    Ingested {
        documents: usize,
        chunks: usize,
    },
    Embedded {
        done: usize,
        total: usize,
    },
    Searched {
        mode: Mode,
        done: usize,
        total: usize,
    },
}

/// Chunks each signal contributes to [`SignalRun`]: as deep as the searches `evaluate` runs.
const SIGNAL_DEPTH: usize = 300;

/// Runs the evaluation in a temporary vault under `work_dir`.
pub fn evaluate(
    collection: &Collection,
    work_dir: &Path,
    embedder: Option<&dyn TextEmbedder>,
    fusion: Fusion,
    progress: &mut dyn FnMut(EvalEvent),
) -> Result<EvalReport> {
    run(collection, work_dir, embedder, Some(fusion), progress)
}

/// Like [`evaluate`] but only fetches each signal's rankings ([`EvalReport::signals`]), without
/// the searches per mode (`modes` is empty): what trying fusions offline needs, at a fraction
/// of the time.
pub fn evaluate_signals(
    collection: &Collection,
    work_dir: &Path,
    embedder: Option<&dyn TextEmbedder>,
    progress: &mut dyn FnMut(EvalEvent),
) -> Result<EvalReport> {
    run(collection, work_dir, embedder, None, progress)
}

/// The evaluation; the searches per mode run when `fusion` is given.
fn run(
    collection: &Collection,
    work_dir: &Path,
    embedder: Option<&dyn TextEmbedder>,
    fusion: Option<Fusion>,
    progress: &mut dyn FnMut(EvalEvent),
) -> Result<EvalReport> {
    let path = work_dir.join("eval.vault");
    let passphrase = Passphrase::new(hex::encode(
        p3ak_crypto::random_array::<32>().map_err(p3ak_vault::VaultError::from)?,
    ));
    let kdf = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        iterations: 1,
        parallelism: 1,
    };
    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &passphrase,
            kdf,
        },
    )?;
    let started = Instant::now();
    let mut memory = Memory::open(&vault)?;
    let items = collection
        .docs
        .iter()
        .map(|d| IngestItem::Bytes {
            name: format!("{}.txt", d.id),
            title: Some(d.title.clone()).filter(|t| !t.is_empty()),
            bytes: d.text.clone().into_bytes(),
        })
        .collect();
    // One writer thread: documents land in the index in collection order, so ties between
    // equal scores break the same way on every run.
    let options = IngestOptions {
        writer_threads: 1,
        ..IngestOptions::default()
    };
    let report = memory.ingest(items, &options, &mut |_| {})?;
    if report.failed > 0 {
        let first = report.files.iter().find(|f| f.reason.is_some());
        return Err(MemoryError::Invalid(format!(
            "{} documents could not be ingested{}",
            report.failed,
            first.map_or(String::new(), |f| format!(
                ", the first `{}`: {}",
                f.item,
                f.reason.clone().unwrap_or_default()
            ))
        )));
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    progress(EvalEvent::Ingested {
        documents: report.ingested,
        chunks: report.chunks,
    });
    let started = Instant::now();
    if let Some(embedder) = embedder {
        let total = memory.status().chunks;
        let mut done = 0;
        loop {
            let pending = memory.pending_embeddings(64)?;
            if pending.is_empty() {
                break;
            }
            let mut batch = EmbeddingBatch::default();
            for doc in &pending {
                let texts: Vec<&str> = doc.texts.iter().map(String::as_str).collect();
                let vectors = embedder.embed(&texts).map_err(MemoryError::Embedding)?;
                batch.push(doc.id, embedder.model(), &vectors);
            }
            done += store_embeddings(&vault, &batch)?;
            progress(EvalEvent::Embedded { done, total });
            memory = Memory::open(&vault)?;
        }
    }
    let embed_seconds = started.elapsed().as_secs_f64();

    let doc_of: HashMap<String, String> = vault
        .list()
        .into_iter()
        .filter_map(|d| {
            let source = d.source?;
            let id = source.strip_suffix(".txt").unwrap_or(&source).to_owned();
            Some((d.id.to_hex(), id))
        })
        .collect();
    let judged: Vec<&crate::eval::EvalQuery> = collection
        .queries
        .iter()
        .filter(|q| {
            collection
                .qrels
                .get(&q.id)
                .is_some_and(|j| j.values().any(|&r| r > 0))
        })
        .collect();
    let mut vectors: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    let mut embed_ms = 0.0;
    if let Some(embedder) = embedder {
        for q in &judged {
            let t = Instant::now();
            let v = embedder
                .embed(&[q.text.as_str()])
                .map_err(MemoryError::Embedding)?;
            embed_ms += t.elapsed().as_secs_f64() * 1000.0;
            if let Some(v) = v.into_iter().next() {
                vectors.insert(q.id.as_str(), v);
            }
        }
    }
    let index_of: HashMap<&str, usize> = collection
        .docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let doc_index: HashMap<u128, usize> = vault
        .list()
        .into_iter()
        .filter_map(|d| {
            let id = doc_of.get(&d.id.to_hex())?;
            Some((
                u128::from_str_radix(&d.id.to_hex(), 16).ok()?,
                *index_of.get(id.as_str())?,
            ))
        })
        .collect();
    let mut signals = SignalRun {
        doc_ids: collection.docs.iter().map(|d| d.id.clone()).collect(),
        queries: Vec::with_capacity(judged.len()),
    };
    for q in &judged {
        let mut request = SearchRequest::new(&q.text);
        request.mode = Mode::Hybrid;
        request.k = SIGNAL_DEPTH;
        request.candidates = SIGNAL_DEPTH;
        let lists = memory.signal_lists(&request, vectors.get(q.id.as_str()).map(Vec::as_slice))?;
        signals.queries.push(QuerySignals {
            query: q.id.clone(),
            lists: lists
                .into_iter()
                .map(|l| SignalRanking {
                    signal: l.signal,
                    hits: l
                        .hits
                        .into_iter()
                        .filter_map(|((doc, chunk), score)| {
                            Some(ChunkHit {
                                doc: *doc_index.get(&doc)?,
                                chunk,
                                score,
                            })
                        })
                        .collect(),
                })
                .collect(),
        });
    }
    let modes: &[Mode] = if fusion.is_none() {
        &[]
    } else if embedder.is_some() {
        &[Mode::Bm25, Mode::Semantic, Mode::Hybrid]
    } else {
        &[Mode::Bm25, Mode::Hybrid]
    };
    let fusion = fusion.unwrap_or(Fusion::Convex);
    let mut reports = Vec::new();
    for &mode in modes {
        let mut sum = Scores::default();
        let mut elapsed = 0.0;
        for (done, q) in judged.iter().enumerate() {
            let mut request = SearchRequest::new(&q.text);
            request.mode = mode;
            request.k = SIGNAL_DEPTH;
            request.candidates = SIGNAL_DEPTH;
            request.fusion = fusion;
            let t = Instant::now();
            let results = memory.search(&request, vectors.get(q.id.as_str()).map(Vec::as_slice))?;
            elapsed += t.elapsed().as_secs_f64() * 1000.0;
            let mut ranking: Vec<String> = Vec::new();
            for hit in results.hits {
                if let Some(id) = doc_of.get(&hit.id.to_hex())
                    && !ranking.contains(id)
                {
                    ranking.push(id.clone());
                }
            }
            let empty = HashMap::new();
            let s = score_query(&ranking, collection.qrels.get(&q.id).unwrap_or(&empty));
            sum.ndcg_at_10 += s.ndcg_at_10;
            sum.mrr_at_10 += s.mrr_at_10;
            sum.recall_at_100 += s.recall_at_100;
            progress(EvalEvent::Searched {
                mode,
                done: done + 1,
                total: judged.len(),
            });
        }
        #[expect(clippy::cast_precision_loss, reason = "query counts are small")]
        let n = judged.len().max(1) as f64;
        reports.push(ModeReport {
            mode,
            scores: Scores {
                ndcg_at_10: sum.ndcg_at_10 / n,
                mrr_at_10: sum.mrr_at_10 / n,
                recall_at_100: sum.recall_at_100 / n,
            },
            mean_search_ms: elapsed / n,
        });
    }
    #[expect(clippy::cast_precision_loss, reason = "query counts are small")]
    let n = judged.len().max(1) as f64;
    Ok(EvalReport {
        documents: report.ingested,
        chunks: report.chunks,
        queries: judged.len(),
        modes: reports,
        note: embedder.is_none().then(|| {
            "no embedding model installed: semantic ranking was not evaluated (`p3ak models install`)"
                .to_owned()
        }),
        ingest_seconds,
        embed_seconds,
        mean_query_embedding_ms: embed_ms / n,
        signals,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, r)| ((*d).to_owned(), *r)).collect()
    }

    fn ranking(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let j = judged(&[("a", 1)]);
        let s = score_query(&ranking(&["a", "b"]), &j);
        assert!((s.ndcg_at_10 - 1.0).abs() < 1e-12);
        assert!((s.mrr_at_10 - 1.0).abs() < 1e-12);
        let s = score_query(&ranking(&["x", "y", "a"]), &j);
        assert!((s.ndcg_at_10 - 0.5).abs() < 1e-12, "1/log2(4)");
        assert!((s.mrr_at_10 - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.recall_at_100 - 1.0).abs() < 1e-12);
        let s = score_query(&ranking(&["x"]), &j);
        assert_eq!(
            (s.ndcg_at_10, s.mrr_at_10, s.recall_at_100),
            (0.0, 0.0, 0.0)
        );
        // Graded: ideal order is 2 then 1.
        let j = judged(&[("a", 2), ("b", 1)]);
        let s = score_query(&ranking(&["b", "a"]), &j);
        let ideal = 2.0 + 1.0 / 3f64.log2();
        let got = 1.0 + 2.0 / 3f64.log2();
        assert!((s.ndcg_at_10 - got / ideal).abs() < 1e-12);
    }

    #[test]
    fn malformed_collections_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("docs.jsonl"),
            "{\"id\":\"a\",\"text\":\"x\"}\nnot json\n",
        )
        .ok();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"id\":\"q\",\"text\":\"x\"}\n",
        )
        .ok();
        std::fs::write(
            dir.path().join("qrels.tsv"),
            "query_id\tdoc_id\trelevance\nq\ta\t1\n",
        )
        .ok();
        let err = Collection::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("docs.jsonl") && err.contains("line 2"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("docs.jsonl"),
            "{\"id\":\"a\",\"text\":\"x\"}\n",
        )
        .ok();
        std::fs::write(
            dir.path().join("qrels.tsv"),
            "query_id\tdoc_id\trelevance\nq\ta\tmany\n",
        )
        .ok();
        let err = Collection::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("qrels.tsv") && err.contains("line 2"), "{err}");
    }
}
