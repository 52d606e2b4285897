//! The approximate index over a large embedding table: an HNSW graph (`usearch`) proposes the
//! rows nearest a query, and the table scores those rows exactly.
//!
//! The exact scan reads every row: 100K chunks are a 38 MB pass, 2–4 ms on two cores, and 1M
//! chunks 26 ms. From [`APPROXIMATE_MIN_ROWS`] rows an unfiltered semantic search asks the graph
//! for its best [`CANDIDATES`] (at least `k`) and ranks them by the scan's own score, so every
//! score is the exact one; only which rows are looked at is approximate (recall@10 against the
//! exact scan is measured by the search bench). Searches with tag filters scan exactly: the
//! filter already confines the scan to the matching documents' rows, and a graph walked under
//! a selective filter loses recall without saying so.
//!
//! The graph holds the table's own `i8` rows under cosine, which ignores each row's scale.
//!
//! Stored as one vault object ([`crate::SPACE_APPROXIMATE`] / [`OBJECT`]), encrypted like every
//! other: a header, the documents whose rows it holds, each with a CRC-32 of its embedding
//! object (a re-embedded document is noticed and its old rows ignored), then usearch's own
//! serialisation. The embedding run writes it when it finishes ([`Approximate::plan`]); it is
//! loaded at a vault's first semantic search, not at open. Rows embedded since it was written
//! are added to it in memory then, up to [`MAX_UNSAVED`]; with more, or with none stored, the
//! table is scanned exactly until the next embedding run writes the index again.

use std::sync::{Condvar, Mutex, PoisonError};

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::vectors::VectorTable;
use crate::{MemoryError, Result};

/// From this many embedded chunks on, semantic search goes through the approximate index. Below
/// it the exact scan takes under about 1.5 ms and misses nothing.
pub const APPROXIMATE_MIN_ROWS: usize = 50_000;

/// A stored index is kept, and used, until the table shrinks below this: a table that hovers
/// around [`APPROXIMATE_MIN_ROWS`] does not have its index removed and rebuilt in turn.
pub(crate) const APPROXIMATE_KEEP_ROWS: usize = APPROXIMATE_MIN_ROWS / 10 * 9;

/// The index's object name in [`crate::SPACE_APPROXIMATE`].
pub(crate) const OBJECT: &str = "hnsw";

/// First bytes of the stored index.
const MAGIC: &[u8; 8] = b"P3AKann1";

/// Links per node (usearch's `M`) and the breadth of the walk when adding and searching. With
/// exact re-scoring of 100 candidates these reach recall@10 ≥ 0.99 on real MiniLM embeddings
/// (see docs/search.md); more buys little and costs memory and time.
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 128;
const EXPANSION_SEARCH: usize = 128;

/// Rows the graph proposes (at least `k`), re-scored exactly.
const CANDIDATES: usize = 100;

/// Rows missing from the stored index that loading it adds in memory (about a second's work on
/// two cores); with more missing, searches scan exactly until the index is written again.
const MAX_UNSAVED: usize = 8_192;

/// The embedding run writes the index again once this many of its rows are not in the stored
/// copy (fewer are cheaper to add at load than to rewrite, since the vault keeps every version).
const SAVE_AFTER: usize = 2_048;

/// An index whose recall@10 against the exact scan, measured when it is written, is below this
/// is stored (so it is not rebuilt on every run) but not used: searches scan exactly. Embeddings
/// of real text reach 0.99; vectors without structure (uniform random ones) reach 0.1–0.4.
const MIN_RECALL: f64 = 0.95;

/// Queries for that measurement: stored rows spread over the table, each asking for its
/// neighbours.
const RECALL_PROBES: usize = 100;

/// Searches that can walk the graph at once (usearch keeps one context each); more wait.
const SEARCH_SLOTS: usize = 64;

/// A key whose row is gone (its document was deleted or embedded again).
const NO_ROW: usize = usize::MAX;

/// One document's rows in the index: keys are numbered entry by entry, row by row.
#[derive(Clone, Copy)]
struct Entry {
    doc: u128,
    crc: u32,
    rows: u32,
}

const ENTRY_LEN: usize = 16 + 4 + 4;

/// An HNSW graph over some of a [`VectorTable`]'s rows.
pub(crate) struct Approximate {
    index: Index,
    entries: Vec<Entry>,
    /// The table row of each key, [`NO_ROW`] for rows that are gone.
    key_rows: Vec<usize>,
    /// Keys not in the stored copy.
    unsaved: usize,
    /// Keys whose rows are gone.
    stale: usize,
    /// Recall@10 against the exact scan, measured when the index was written (1 until then).
    recall: f64,
    slots: Slots,
}

/// What the embedding run should do with the stored index.
pub enum IndexPlan {
    /// Nothing: the stored index (or its absence) is right.
    Keep,
    /// Remove it: the table shrank below [`APPROXIMATE_MIN_ROWS`].
    Remove,
    /// Store these bytes, an index of this many rows.
    Write { bytes: Vec<u8>, rows: usize },
}

fn failed(what: &str, e: &impl std::fmt::Display) -> MemoryError {
    MemoryError::Index(format!("approximate index: {what}: {e}"))
}

fn new_index(dims: usize) -> Result<Index> {
    let options = IndexOptions {
        dimensions: dims,
        metric: MetricKind::Cos,
        quantization: ScalarKind::I8,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    };
    Index::new(&options).map_err(|e| failed("create", &e))
}

/// Contexts for adding: one per pool thread, plus the search slots.
fn contexts() -> usize {
    SEARCH_SLOTS + rayon::current_num_threads()
}

impl Approximate {
    /// A graph over every live row of `table` (in parallel on rayon's pool).
    pub(crate) fn build(table: &VectorTable) -> Result<Self> {
        let mut this = Self {
            index: new_index(table.dims)?,
            entries: Vec::new(),
            key_rows: Vec::new(),
            unsaved: 0,
            stale: 0,
            recall: 1.0,
            slots: Slots::new(SEARCH_SLOTS),
        };
        let runs: Vec<_> = table.live_runs().collect();
        this.add_runs(table, &runs)?;
        Ok(this)
    }

    /// Loads a stored index and fits it to `table`: rows of documents gone or embedded again are
    /// ignored, rows it lacks are added. `None` when it belongs to another model or lacks more
    /// than [`MAX_UNSAVED`] rows. An index that measured too low a recall loads but is not
    /// [`Approximate::usable`].
    pub(crate) fn load(bytes: &[u8], table: &VectorTable, model: &str) -> Result<Option<Self>> {
        let bad = |what: &str| MemoryError::Corrupt(format!("approximate index: {what}"));
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("bad magic"))?;
        let (dims, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (name_len, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (name, rest) = rest
            .split_at_checked(name_len as usize)
            .ok_or_else(|| bad("truncated"))?;
        let (recall, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let recall = f64::from(f32::from_bits(recall));
        let (count, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (list, graph) = rest
            .split_at_checked((count as usize).saturating_mul(ENTRY_LEN))
            .ok_or_else(|| bad("truncated"))?;
        if name != model.as_bytes() || dims as usize != table.dims {
            return Ok(None);
        }
        let entries: Vec<Entry> = list
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                let (doc, rest) = e.split_at(16);
                let (crc, rows) = rest.split_at(4);
                Entry {
                    doc: u128::from_le_bytes(doc.try_into().unwrap_or_default()),
                    crc: u32::from_le_bytes(crc.try_into().unwrap_or_default()),
                    rows: u32::from_le_bytes(rows.try_into().unwrap_or_default()),
                }
            })
            .collect();
        let index = new_index(table.dims)?;
        index
            .load_from_buffer(graph)
            .map_err(|e| bad(&format!("graph: {e}")))?;

        let mut live: std::collections::HashMap<u128, (usize, usize, u32)> = table
            .live_runs()
            .map(|(doc, first, rows, crc)| (doc, (first, rows, crc)))
            .collect();
        let mut key_rows = Vec::with_capacity(table.len());
        let mut stale = 0;
        for entry in &entries {
            let rows = entry.rows as usize;
            // The first entry that matches claims the document's rows (a document embedded
            // again has its old entry, stale, and a newer one).
            match live.get(&entry.doc) {
                Some(&(first, n, crc)) if n == rows && crc == entry.crc => {
                    live.remove(&entry.doc);
                    key_rows.extend(first..first + rows);
                }
                _ => {
                    key_rows.extend(std::iter::repeat_n(NO_ROW, rows));
                    stale += rows;
                }
            }
        }
        let mut missing: Vec<(u128, usize, usize, u32)> = live
            .into_iter()
            .map(|(doc, (first, rows, crc))| (doc, first, rows, crc))
            .collect();
        if missing.iter().map(|m| m.2).sum::<usize>() > MAX_UNSAVED {
            return Ok(None);
        }
        missing.sort_unstable_by_key(|m| m.1);
        let mut this = Self {
            index,
            entries,
            key_rows,
            unsaved: 0,
            stale,
            recall,
            slots: Slots::new(SEARCH_SLOTS),
        };
        this.add_runs(table, &missing)?;
        Ok(Some(this))
    }

    /// Adds documents' rows, keys numbered after the last.
    fn add_runs(&mut self, table: &VectorTable, runs: &[(u128, usize, usize, u32)]) -> Result<()> {
        let first_key = self.key_rows.len();
        for &(doc, first, rows, crc) in runs {
            self.entries.push(Entry {
                doc,
                crc,
                rows: u32::try_from(rows).map_err(|e| failed("rows", &e))?,
            });
            self.key_rows.extend(first..first + rows);
        }
        let added = self.key_rows.len() - first_key;
        self.index
            .reserve_capacity_and_threads(self.index.size() + added, contexts())
            .map_err(|e| failed("reserve", &e))?;
        let new_keys = self.key_rows.get(first_key..).unwrap_or_default();
        let index = &self.index;
        new_keys.par_iter().enumerate().try_for_each(|(i, &row)| {
            let Some(values) = table.row(row) else {
                return Ok(());
            };
            // A zero row (an empty text's) has no direction; the scan scores it 0 anyway.
            if values.iter().all(|&v| v == 0) {
                return Ok(());
            }
            index
                .add((first_key + i) as u64, values)
                .map_err(|e| failed("add", &e))
        })?;
        self.unsaved += added;
        Ok(())
    }

    /// The `k` best rows for a query (quantised like the table's rows), scored exactly, among
    /// the rows of documents not deleted; `None` if the graph could not be searched.
    pub(crate) fn nearest(
        &self,
        table: &VectorTable,
        query: &[i8],
        q_scale: f32,
        k: usize,
    ) -> Option<Vec<(usize, f32)>> {
        let _slot = self.slots.take();
        let count = k.max(CANDIDATES);
        let matches = if self.stale == 0 && !table.has_deleted() {
            self.index.search(query, count)
        } else {
            let key_rows = &self.key_rows;
            self.index.filtered_search(query, count, |key| {
                usize::try_from(key)
                    .ok()
                    .and_then(|key| key_rows.get(key))
                    .and_then(|&row| table.keys.get(row))
                    .is_some_and(|&(doc, _)| !table.is_deleted(doc))
            })
        }
        .ok()?;
        let rows = matches.keys.iter().filter_map(|&key| {
            let row = *self.key_rows.get(usize::try_from(key).ok()?)?;
            (row != NO_ROW).then_some(row)
        });
        Some(table.rescore(query, q_scale, rows, k))
    }

    /// Recall@10 against the exact scan measured when it was written.
    pub(crate) fn measured_recall(&self) -> f64 {
        self.recall
    }

    /// Whether searches should use it: its measured recall is high enough.
    pub(crate) fn usable(&self) -> bool {
        self.recall >= MIN_RECALL
    }

    /// Recall@10 against the exact scan over [`RECALL_PROBES`] stored rows spread over the
    /// table, each the query for its own neighbours (itself left out of both lists).
    fn measure_recall(&self, table: &VectorTable) -> f64 {
        let rows: Vec<usize> = self
            .key_rows
            .iter()
            .copied()
            .filter(|&r| r != NO_ROW)
            .collect();
        let step = (rows.len() / RECALL_PROBES).max(1);
        let (mut found, mut wanted) = (0usize, 0usize);
        for &probe in rows.iter().step_by(step).take(RECALL_PROBES) {
            let Some(values) = table.row(probe) else {
                continue;
            };
            let query: Vec<f32> = values.iter().map(|&x| f32::from(x)).collect();
            let others = |hits: Vec<(usize, f32)>| -> Vec<usize> {
                hits.into_iter()
                    .map(|(row, _)| row)
                    .filter(|&row| row != probe)
                    .take(10)
                    .collect()
            };
            let exact = others(table.nearest(&query, 11, None));
            let (q_scale, q) = crate::vectors::quantize(&query);
            let Some(approximate) = self.nearest(table, &q, q_scale, 11) else {
                return 0.0;
            };
            let approximate = others(approximate);
            wanted += exact.len();
            found += exact.iter().filter(|row| approximate.contains(row)).count();
        }
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        }
    }

    /// Whether the stored copy should be replaced, and by what.
    pub(crate) fn plan(
        loaded: Option<&Self>,
        table: &VectorTable,
        model: &str,
    ) -> Result<IndexPlan> {
        let keys = loaded.map_or(0, |a| a.key_rows.len());
        let fresh = match loaded {
            // A tenth of the keys gone: rebuilt, so the graph does not fill with dead ends.
            Some(a) if a.stale.saturating_mul(10) > keys => None,
            Some(a) if a.unsaved < SAVE_AFTER => return Ok(IndexPlan::Keep),
            Some(a) => Some(a),
            None => None,
        };
        let built;
        let index = match fresh {
            Some(a) => a,
            None => {
                built = Self::build(table)?;
                &built
            }
        };
        Ok(IndexPlan::Write {
            bytes: index.encode(table, model)?,
            rows: index.key_rows.len() - index.stale,
        })
    }

    /// The stored form, with its recall measured now.
    fn encode(&self, table: &VectorTable, model: &str) -> Result<Vec<u8>> {
        #[expect(clippy::cast_possible_truncation, reason = "a share, f32 is plenty")]
        let recall = self.measure_recall(table) as f32;
        let graph_len = self.index.serialized_length();
        let head_len = MAGIC.len() + 16 + model.len() + self.entries.len() * ENTRY_LEN;
        let mut out = Vec::with_capacity(head_len + graph_len);
        out.extend_from_slice(MAGIC);
        let dims = u32::try_from(self.index.dimensions()).map_err(|e| failed("dims", &e))?;
        let name_len = u32::try_from(model.len()).map_err(|e| failed("model", &e))?;
        let count = u32::try_from(self.entries.len()).map_err(|e| failed("documents", &e))?;
        out.extend_from_slice(&dims.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(model.as_bytes());
        out.extend_from_slice(&recall.to_bits().to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.doc.to_le_bytes());
            out.extend_from_slice(&entry.crc.to_le_bytes());
            out.extend_from_slice(&entry.rows.to_le_bytes());
        }
        let start = out.len();
        out.resize(start + graph_len, 0);
        let graph = out.get_mut(start..).unwrap_or_default();
        self.index
            .save_to_buffer(graph)
            .map_err(|e| failed("save", &e))?;
        Ok(out)
    }
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// A counting semaphore: usearch fails a search when all its contexts are taken, so searches
/// beyond [`SEARCH_SLOTS`] wait for one instead.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;
    use crate::vectors::{DocVectors, quantize};

    const DIMS: usize = 24;

    /// Embeddings are L2-normalised: cosine and the scan's dot product then rank alike.
    fn unit(v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    /// Documents `1..=docs`, document `d` with `(d - 1) % 5 + 1` random rows (no two alike:
    /// ties would make "the exact top ten" ambiguous).
    fn random_table(dims: usize, docs: usize, seed: u64) -> VectorTable {
        let mut next = crate::vectors::uniform_source(seed);
        let mut table = VectorTable::with_dims(dims);
        for doc in 1..=docs {
            let rows = (0..(doc - 1) % 5 + 1)
                .map(|_| quantize(&unit((0..dims).map(|_| next()).collect())))
                .collect();
            let vectors = DocVectors {
                model: "m".into(),
                dims,
                rows,
            };
            table.push(doc as u128, &vectors, doc as u32);
        }
        table
    }

    fn query(table: &VectorTable, row: usize) -> (f32, Vec<i8>) {
        let v = table
            .row(row)
            .unwrap()
            .iter()
            .map(|&x| f32::from(x) + 0.5)
            .collect();
        quantize(&unit(v))
    }

    fn exact(table: &VectorTable, q: &(f32, Vec<i8>), k: usize) -> Vec<(usize, f32)> {
        let all = (0..table.keys.len()).collect::<Vec<_>>();
        table.rescore(&q.1, q.0, all.into_iter(), k)
    }

    #[test]
    fn candidates_are_scored_exactly_and_find_the_exact_top_ten() {
        let table = random_table(DIMS, 1_500, 7);
        let index = Approximate::build(&table).unwrap();
        let (mut found, mut wanted) = (0, 0);
        for row in (0..table.keys.len()).step_by(97) {
            let q = query(&table, row);
            let truth = exact(&table, &q, 10);
            let got = index.nearest(&table, &q.1, q.0, 10).unwrap();
            assert_eq!(got.len(), 10);
            for (row, score) in &got {
                let alone = table.rescore(&q.1, q.0, std::iter::once(*row), 1);
                assert_eq!(
                    alone[0].1.to_bits(),
                    score.to_bits(),
                    "the scan's own score"
                );
            }
            wanted += truth.len();
            found += truth
                .iter()
                .filter(|t| got.iter().any(|g| g.0 == t.0))
                .count();
        }
        let recall = found as f64 / wanted as f64;
        assert!(recall >= 0.98, "recall@10 {recall}");
    }

    #[test]
    fn a_stored_index_skips_documents_deleted_or_embedded_again_and_adds_new_ones() {
        let mut table = random_table(DIMS, 400, 11);
        let bytes = Approximate::build(&table)
            .unwrap()
            .encode(&table, "m")
            .unwrap();

        // Document 5 deleted, document 9 embedded again (new rows, new CRC), document 9_999 new.
        let reloaded =
            |table: &VectorTable| Approximate::load(&bytes, table, "m").unwrap().unwrap();
        table.forget(5);
        let rows = (0..3)
            .map(|i| {
                quantize(&unit(
                    (0..DIMS).map(|d| ((d * 7 + i) % 5) as f32 - 2.0).collect(),
                ))
            })
            .collect::<Vec<_>>();
        table.forget(9);
        table.push(
            9,
            &DocVectors {
                model: "m".into(),
                dims: DIMS,
                rows: rows.clone(),
            },
            99,
        );
        table.push(
            9_999,
            &DocVectors {
                model: "m".into(),
                dims: DIMS,
                rows,
            },
            7,
        );
        let index = reloaded(&table);
        assert_eq!(index.stale, 5 + 4, "the old rows of 5 and 9");
        assert_eq!(index.unsaved, 6, "the new rows of 9 and 9999");

        let new_first = table.keys.iter().position(|k| k.0 == 9_999).unwrap();
        let q = query(&table, new_first);
        let got = index.nearest(&table, &q.1, q.0, 20).unwrap();
        assert_eq!(got, exact_live(&table, &q, 20));
        for (row, _) in &got {
            let doc = table.keys[*row].0;
            assert!(doc != 5, "a deleted document's row");
        }
        assert!(got.iter().any(|(row, _)| table.keys[*row].0 == 9_999));
        assert!(
            got.iter()
                .any(|(row, _)| table.keys[*row] == (9, 0) && *row >= table.keys.len() - 6)
        );
    }

    /// The exact top `k` among live documents' rows.
    fn exact_live(table: &VectorTable, q: &(f32, Vec<i8>), k: usize) -> Vec<(usize, f32)> {
        let live: Vec<usize> = table
            .live_runs()
            .flat_map(|(_, first, rows, _)| first..first + rows)
            .collect();
        table.rescore(&q.1, q.0, live.into_iter(), k)
    }

    #[test]
    fn an_index_of_another_model_or_too_far_behind_is_not_used() {
        let small = random_table(DIMS, 10, 3);
        let bytes = Approximate::build(&small)
            .unwrap()
            .encode(&small, "m")
            .unwrap();
        assert!(
            Approximate::load(&bytes, &small, "other")
                .unwrap()
                .is_none()
        );
        let other_dims = random_table(DIMS + 1, 10, 3);
        assert!(
            Approximate::load(&bytes, &other_dims, "m")
                .unwrap()
                .is_none()
        );
        // 3 rows per document on average: 9_000 documents lack far more than MAX_UNSAVED rows.
        let large = random_table(DIMS, 9_000, 3);
        assert!(Approximate::load(&bytes, &large, "m").unwrap().is_none());
    }

    #[test]
    fn an_index_that_measured_a_low_recall_is_kept_but_not_used() {
        let table = random_table(DIMS, 300, 4);
        let mut bytes = Approximate::build(&table)
            .unwrap()
            .encode(&table, "m")
            .unwrap();
        let loaded = Approximate::load(&bytes, &table, "m").unwrap().unwrap();
        assert!(loaded.usable(), "measured {}", loaded.recall);
        // The recall sits after the magic, the dimensions, the model name's length and the name.
        let at = MAGIC.len() + 8 + 1;
        bytes[at..at + 4].copy_from_slice(&0.5f32.to_bits().to_le_bytes());
        let loaded = Approximate::load(&bytes, &table, "m").unwrap().unwrap();
        assert!(!loaded.usable());
        assert!(matches!(
            Approximate::plan(Some(&loaded), &table, "m").unwrap(),
            IndexPlan::Keep
        ));
    }

    #[test]
    fn a_damaged_index_is_an_error_not_a_panic() {
        let table = random_table(DIMS, 50, 5);
        let bytes = Approximate::build(&table)
            .unwrap()
            .encode(&table, "m")
            .unwrap();
        for cut in [0, 4, 8, 13, 20, 40, bytes.len() / 2, bytes.len() - 1] {
            let result = Approximate::load(&bytes[..cut], &table, "m");
            assert!(result.is_err(), "cut at {cut} of {}", bytes.len());
        }
        let mut flipped = bytes.clone();
        flipped[0] ^= 1;
        assert!(Approximate::load(&flipped, &table, "m").is_err());
    }

    #[test]
    fn the_plan_keeps_a_current_index_and_rebuilds_one_a_tenth_gone() {
        let mut table = random_table(DIMS, 300, 2);
        let built = Approximate::build(&table).unwrap();
        assert!(matches!(
            Approximate::plan(None, &table, "m").unwrap(),
            IndexPlan::Write { .. }
        ));
        let bytes = built.encode(&table, "m").unwrap();
        let loaded = Approximate::load(&bytes, &table, "m").unwrap();
        assert!(matches!(
            Approximate::plan(loaded.as_ref(), &table, "m").unwrap(),
            IndexPlan::Keep
        ));
        for doc in 1..=40 {
            table.forget(doc);
        }
        let loaded = Approximate::load(&bytes, &table, "m").unwrap();
        match Approximate::plan(loaded.as_ref(), &table, "m").unwrap() {
            IndexPlan::Write { rows, .. } => {
                assert_eq!(rows, table.len(), "rebuilt from live rows")
            }
            _ => panic!("a tenth of the rows gone: rebuilt"),
        }
    }
}
