//! Fusing ranked lists from several signals into one ranking.
//!
//! Two methods:
//! - **Convex** (the default): each signal's scores are normalised to 0..1 — BM25 by its best
//!   score (its theoretical minimum is 0), cosine by the best and worst candidate — and summed
//!   with weights; a candidate a signal did not return gets 0 from it. Unlike rank fusion it
//!   keeps *how much* better one candidate is than the next, so a confident signal is not
//!   outvoted by a weak one that merely ranks differently (Bruch, Gai and Ingber, "An Analysis
//!   of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023).
//! - **Reciprocal rank fusion** (`Σ w / (k + rank)`, Cormack et al. 2009), kept for
//!   comparison (`--fusion rrf`).

use serde::Serialize;

/// One ranking signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// BM25 over the chunk text.
    Bm25,
    /// Cosine similarity of embeddings.
    Semantic,
    /// BM25 over the title and heading path.
    Structure,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bm25 => "bm25",
            Self::Semantic => "semantic",
            Self::Structure => "structure",
        }
    }
}

/// How signals are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    Convex,
    Rrf { k: f32 },
}

impl Fusion {
    pub fn name(self) -> &'static str {
        match self {
            Self::Convex => "convex",
            Self::Rrf { .. } => "rrf",
        }
    }
}

/// The weight of each signal in a fusion. Signals that are not available (no embeddings yet)
/// drop out and the others keep their relative weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    pub bm25: f32,
    pub semantic: f32,
    pub structure: f32,
}

impl Weights {
    pub fn of(&self, signal: Signal) -> f32 {
        match signal {
            Signal::Bm25 => self.bm25,
            Signal::Semantic => self.semantic,
            Signal::Structure => self.structure,
        }
    }
}

/// How a signal's scores are mapped to 0..1 before a convex fusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalisation {
    /// BM25 by its best score (its floor is 0), cosine from the list's floor to its best.
    MaxBm25MinMaxCosine,
    /// Every signal from its floor (the score at depth 100) to its best.
    MinMax,
}

/// What the signals' scores are fused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Each chunk on its own; a document ranks where its best chunk does.
    Chunk,
    /// Each document, from its best chunk in each signal (which may be different chunks); its
    /// chunks follow one another, best (chunk-level) first.
    Document,
}

/// A complete fusion: method, weights, normalisation, level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FusionConfig {
    #[serde(skip)]
    pub method: Fusion,
    pub weights: Weights,
    pub normalisation: Normalisation,
    pub level: Level,
}

impl FusionConfig {
    /// What a search with `method` uses.
    pub fn for_method(method: Fusion) -> Self {
        match method {
            Fusion::Convex => Self::default(),
            Fusion::Rrf { .. } => Self {
                method,
                ..Self::default()
            },
        }
    }
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            method: Fusion::Convex,
            weights: Weights {
                semantic: 0.6,
                bm25: 0.3,
                structure: 0.1,
            },
            normalisation: Normalisation::MaxBm25MinMaxCosine,
            level: Level::Chunk,
        }
    }
}

/// The weight of each signal in a default hybrid search.
pub(crate) fn weight(signal: Signal) -> f32 {
    FusionConfig::default().weights.of(signal)
}

/// Depth of a list at which the semantic signal's floor (0 after normalising) is read.
const NORMALISE_DEPTH: usize = 100;

/// A signal's ranked candidates, best first: `(key, raw score)`.
pub(crate) struct Ranked<K> {
    pub(crate) signal: Signal,
    pub(crate) weight: f32,
    pub(crate) hits: Vec<(K, f32)>,
}

/// A candidate's place in one signal.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Part {
    pub signal: Signal,
    /// 1-based rank within the signal.
    pub rank: usize,
    /// The signal's own score (BM25 score, cosine).
    pub score: f32,
    /// What it added to the fused score.
    pub contribution: f32,
}

pub(crate) struct Fused<K> {
    pub(crate) key: K,
    pub(crate) score: f32,
    pub(crate) parts: Vec<Part>,
}

/// Fuses the lists with the default configuration for `method`; the result is sorted best
/// first, ties broken by first appearance.
pub(crate) fn fuse<K: Copy + Eq + std::hash::Hash, D: Copy + Eq + std::hash::Hash>(
    lists: &[Ranked<K>],
    method: Fusion,
    doc: impl Fn(&K) -> D,
) -> Vec<Fused<K>> {
    fuse_with(lists, &FusionConfig::for_method(method), doc)
}

/// Fuses the lists as `config` says (the lists carry their own weights); `doc` names the
/// document a key belongs to.
pub(crate) fn fuse_with<K: Copy + Eq + std::hash::Hash, D: Copy + Eq + std::hash::Hash>(
    lists: &[Ranked<K>],
    config: &FusionConfig,
    doc: impl Fn(&K) -> D,
) -> Vec<Fused<K>> {
    let chunks = fuse_chunks(lists, config);
    if config.level == Level::Chunk {
        return chunks;
    }
    // Each list reduced to its documents (the first chunk of each is its best), fused the
    // same way; chunks then take their document's score, in their chunk-level order.
    let docs: Vec<Ranked<D>> = lists
        .iter()
        .map(|l| {
            let mut seen = std::collections::HashSet::new();
            Ranked {
                signal: l.signal,
                weight: l.weight,
                hits: l
                    .hits
                    .iter()
                    .filter(|(k, _)| seen.insert(doc(k)))
                    .map(|(k, s)| (doc(k), *s))
                    .collect(),
            }
        })
        .collect();
    let by_doc: std::collections::HashMap<D, f32> = fuse_chunks(&docs, config)
        .into_iter()
        .map(|f| (f.key, f.score))
        .collect();
    let mut out: Vec<Fused<K>> = chunks
        .into_iter()
        .map(|mut f| {
            f.score = by_doc.get(&doc(&f.key)).copied().unwrap_or(0.0);
            f
        })
        .collect();
    // Stable: a document's chunks keep their chunk-level order.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

fn fuse_chunks<K: Copy + Eq + std::hash::Hash>(
    lists: &[Ranked<K>],
    config: &FusionConfig,
) -> Vec<Fused<K>> {
    let method = config.method;
    let total_weight: f32 = lists
        .iter()
        .filter(|l| !l.hits.is_empty())
        .map(|l| l.weight)
        .sum();
    let mut order: Vec<K> = Vec::new();
    let mut fused: std::collections::HashMap<K, Fused<K>> = std::collections::HashMap::new();
    for list in lists {
        if list.hits.is_empty() || total_weight <= 0.0 {
            continue;
        }
        let weight = list.weight / total_weight;
        let best = list.hits.first().map_or(0.0, |h| h.1);
        // The floor is taken at a fixed depth, so asking for more candidates does not move it.
        let worst = list
            .hits
            .get(NORMALISE_DEPTH.min(list.hits.len()).saturating_sub(1))
            .map_or(0.0, |h| h.1);
        for (i, &(key, score)) in list.hits.iter().enumerate() {
            let rank = i + 1;
            #[expect(clippy::cast_precision_loss, reason = "ranks are small")]
            let contribution = match method {
                Fusion::Rrf { k } => weight / (k + rank as f32),
                Fusion::Convex => {
                    weight * normalise(config.normalisation, list.signal, score, best, worst)
                }
            };
            let entry = fused.entry(key).or_insert_with(|| {
                order.push(key);
                Fused {
                    key,
                    score: 0.0,
                    parts: Vec::new(),
                }
            });
            entry.score += contribution;
            entry.parts.push(Part {
                signal: list.signal,
                rank,
                score,
                contribution,
            });
        }
    }
    let mut out: Vec<Fused<K>> = order.into_iter().filter_map(|k| fused.remove(&k)).collect();
    // Stable: equal scores keep the order of first appearance.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// A score mapped to 0..1 within its list.
fn normalise(how: Normalisation, signal: Signal, score: f32, best: f32, worst: f32) -> f32 {
    let signal = match how {
        Normalisation::MaxBm25MinMaxCosine => signal,
        Normalisation::MinMax => Signal::Semantic,
    };
    match signal {
        // BM25 scores start at 0 for a chunk without the terms.
        Signal::Bm25 | Signal::Structure => {
            if best > 0.0 {
                (score / best).clamp(0.0, 1.0)
            } else {
                0.0
            }
        }
        Signal::Semantic => {
            let span = best - worst;
            if span > f32::EPSILON {
                ((score - worst) / span).clamp(0.0, 1.0)
            } else {
                1.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn list(signal: Signal, weight: f32, hits: &[(u32, f32)]) -> Ranked<u32> {
        Ranked {
            signal,
            weight,
            hits: hits.to_vec(),
        }
    }

    #[test]
    fn agreement_wins_and_missing_signals_drop_out() {
        let lists = [
            list(Signal::Bm25, 0.3, &[(1, 10.0), (2, 9.0), (3, 1.0)]),
            list(Signal::Semantic, 0.6, &[(2, 0.8), (4, 0.7), (1, 0.2)]),
            list(Signal::Structure, 0.1, &[]),
        ];
        for method in [Fusion::Convex, Fusion::Rrf { k: 60.0 }] {
            let fused = fuse(&lists, method, |k| *k);
            assert_eq!(fused[0].key, 2, "{method:?}: in both lists near the top");
            assert_eq!(fused.len(), 4);
            let sum: f32 = fused[0].parts.iter().map(|p| p.contribution).sum();
            assert!((sum - fused[0].score).abs() < 1e-6);
        }
        let convex = fuse(&lists, Fusion::Convex, |k| *k);
        // Weights renormalise over the two signals present: 1/3 and 2/3.
        let top = &convex[0];
        assert!((top.score - (1.0 / 3.0 * 0.9 + 2.0 / 3.0 * 1.0)).abs() < 1e-5);
    }

    #[test]
    fn convex_keeps_margins_that_ranks_lose() {
        // Semantic is sure of 7; BM25 barely prefers 8 over 7.
        let lists = [
            list(Signal::Bm25, 0.3, &[(8, 10.0), (7, 9.9)]),
            list(Signal::Semantic, 0.6, &[(7, 0.9), (8, 0.1), (9, 0.05)]),
        ];
        assert_eq!(fuse(&lists, Fusion::Convex, |k| *k)[0].key, 7);
    }

    #[test]
    fn empty_input_fuses_to_nothing() {
        assert!(fuse::<u32, u32>(&[], Fusion::Convex, |k| *k).is_empty());
        let lists = [list(Signal::Bm25, 0.0, &[(1, 1.0)])];
        assert!(fuse(&lists, Fusion::Convex, |k| *k).is_empty());
    }
}
