//! Chunk embeddings: stored per document as one vault object, searched by brute force.
//!
//! Each vector is L2-normalised, then quantised to `i8` with its own scale (`max |x| / 127`):
//! a quarter of the memory of `f32`, and a cosine error around 1e-3, far below the gaps that
//! decide a ranking. The scan is compiled for AVX-512, AVX2 and plain x86-64 and picks the
//! best at run time (`pulp`); it asks the filter once per document, skips deleted documents
//! without asking anything, and keeps a bounded top-k. A large table is scanned in parts on
//! every core: the scan is bound by memory bandwidth (100K × 384 is 38 MB per query), which one
//! core does not saturate. Results are exact: every row is scored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::MemoryError;

/// First bytes of an embedding object.
const MAGIC: &[u8; 8] = b"P3AKvec1";

/// The embeddings of one document's chunks, in chunk order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocVectors {
    pub(crate) model: String,
    pub(crate) dims: usize,
    /// One `(scale, values)` per chunk.
    pub(crate) rows: Vec<(f32, Vec<i8>)>,
}

/// Quantises one vector (any length) to `(scale, values)`.
pub(crate) fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    let values = v
        .iter()
        .map(|x| {
            // Rounded and clamped to -127..=127, so the cast cannot overflow.
            let q = (x / scale).round().clamp(-127.0, 127.0);
            #[expect(clippy::cast_possible_truncation, reason = "clamped to the i8 range")]
            let q = q as i8;
            q
        })
        .collect();
    (scale, values)
}

impl DocVectors {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.model.len() + self.rows.len() * (4 + self.dims));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dims as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.model.len() as u32).to_le_bytes());
        out.extend_from_slice(self.model.as_bytes());
        for (scale, values) in &self.rows {
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(values.iter().map(|v| v.to_le_bytes()[0]));
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MemoryError> {
        let bad = |what: &str| MemoryError::Corrupt(format!("embedding table: {what}"));
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("bad magic"))?;
        let (dims, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (count, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (name_len, rest) = take_u32(rest).ok_or_else(|| bad("truncated"))?;
        let (dims, count, name_len) = (dims as usize, count as usize, name_len as usize);
        if dims == 0 || dims > 8192 || name_len > 256 {
            return Err(bad("implausible header"));
        }
        let name = rest.get(..name_len).ok_or_else(|| bad("truncated"))?;
        let model = std::str::from_utf8(name)
            .map_err(|_| bad("model name is not UTF-8"))?
            .to_owned();
        let body = rest.get(name_len..).ok_or_else(|| bad("truncated"))?;
        let row_len = 4 + dims;
        if body.len() != count.saturating_mul(row_len) {
            return Err(bad("size does not match its header"));
        }
        let rows = body
            .chunks_exact(row_len)
            .map(|row| {
                let (scale, values) = row.split_at(4);
                let scale = f32::from_le_bytes(scale.try_into().unwrap_or_default());
                (
                    scale,
                    values.iter().map(|&b| i8::from_le_bytes([b])).collect(),
                )
            })
            .collect();
        Ok(Self { model, dims, rows })
    }
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// Every chunk vector of a vault, in one flat table.
#[derive(Default)]
pub(crate) struct VectorTable {
    pub(crate) dims: usize,
    /// `(document, chunk ordinal)` of each row.
    pub(crate) keys: Vec<(u128, u32)>,
    scales: Vec<f32>,
    values: Vec<i8>,
    /// The rows of each document: a document's rows are pushed together, so a filter is asked
    /// once per document, not once per row, and a deleted document is skipped as a whole.
    runs: Vec<Run>,
    /// Rows of documents not deleted since the table was loaded.
    live_rows: usize,
    /// Documents deleted since the table was loaded (their runs are not live).
    deleted: HashSet<u128>,
}

/// One document's rows in a [`VectorTable`].
#[derive(Clone, Copy)]
struct Run {
    doc: u128,
    first: usize,
    rows: usize,
    /// CRC-32 of the document's stored embedding object: tells the approximate index whether
    /// the rows it holds for the document are still these.
    crc: u32,
    /// False once the document is deleted: its rows stay (the table is rebuilt at the next
    /// open) but are never scored.
    live: bool,
}

/// A table at least this large is scanned in parts on every core: below it, handing the parts
/// to the thread pool costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 16_384;

impl VectorTable {
    pub(crate) fn with_dims(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    /// Rows that searches score (deleted documents' rows excluded).
    pub(crate) fn len(&self) -> usize {
        self.live_rows
    }

    /// Adds a document's rows (`crc`: of its stored object); rows of another dimension are
    /// refused.
    pub(crate) fn push(&mut self, doc: u128, vectors: &DocVectors, crc: u32) -> bool {
        if vectors.dims != self.dims {
            return false;
        }
        let first = self.keys.len();
        for (ord, (scale, values)) in vectors.rows.iter().enumerate() {
            self.keys
                .push((doc, u32::try_from(ord).unwrap_or(u32::MAX)));
            self.scales.push(*scale);
            self.values.extend_from_slice(values);
        }
        self.deleted.remove(&doc);
        if !vectors.rows.is_empty() {
            self.runs.push(Run {
                doc,
                first,
                rows: vectors.rows.len(),
                crc,
                live: true,
            });
            self.live_rows += vectors.rows.len();
        }
        true
    }

    /// Stops scoring a deleted document's rows.
    pub(crate) fn forget(&mut self, doc: u128) {
        for run in self.runs.iter_mut().filter(|r| r.doc == doc && r.live) {
            run.live = false;
            self.live_rows = self.live_rows.saturating_sub(run.rows);
        }
        self.deleted.insert(doc);
    }

    /// Whether a document was deleted since the table was loaded.
    pub(crate) fn is_deleted(&self, doc: u128) -> bool {
        self.deleted.contains(&doc)
    }

    /// Whether any document was deleted since the table was loaded.
    pub(crate) fn has_deleted(&self) -> bool {
        !self.deleted.is_empty()
    }

    /// `(document, first row, rows, crc)` of every live document.
    pub(crate) fn live_runs(&self) -> impl Iterator<Item = (u128, usize, usize, u32)> + '_ {
        self.runs
            .iter()
            .filter(|r| r.live)
            .map(|r| (r.doc, r.first, r.rows, r.crc))
    }

    /// The quantised values of row `row`.
    pub(crate) fn row(&self, row: usize) -> Option<&[i8]> {
        self.values
            .get(row.checked_mul(self.dims)?..row.checked_add(1)?.checked_mul(self.dims)?)
    }

    /// The `k` best of some rows by the exact score the scan gives them, best first.
    pub(crate) fn rescore(
        &self,
        query: &[i8],
        q_scale: f32,
        rows: impl Iterator<Item = usize>,
        k: usize,
    ) -> Vec<(usize, f32)> {
        let mut top = TopK::new(k);
        for row in rows {
            if let (Some(values), Some(scale)) = (self.row(row), self.scales.get(row)) {
                top.offer(row, score(dot_i8(query, values), q_scale, *scale));
            }
        }
        top.into_sorted()
    }

    /// The `k` rows nearest `query` by cosine, best first, among the rows of live documents
    /// that `keep` accepts (all of them without `keep`): an exact scan of every row, in parts
    /// on every core when the table is large.
    pub(crate) fn nearest(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u128) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        if query.len() != self.dims || k == 0 || self.dims == 0 {
            return Vec::new();
        }
        let (q_scale, q) = quantize(query);
        let scan = |runs: &[Run]| {
            let mut top = TopK::new(k);
            pulp::Arch::new().dispatch(Scan {
                table: self,
                runs,
                query: &q,
                q_scale,
                keep,
                top: &mut top,
            });
            top
        };
        let parts = rayon::current_num_threads();
        let top = if self.keys.len() < PARALLEL_MIN_ROWS || parts < 2 {
            scan(&self.runs)
        } else {
            use rayon::prelude::*;
            split_by_rows(&self.runs, self.keys.len(), parts)
                .into_par_iter()
                .map(scan)
                .reduce(|| TopK::new(k), TopK::merge)
        };
        top.into_sorted()
    }
}

/// `runs` cut into at most `parts` consecutive slices of about equal row counts.
fn split_by_rows(runs: &[Run], total_rows: usize, parts: usize) -> Vec<&[Run]> {
    let target = total_rows.div_ceil(parts.max(1)).max(1);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let mut rows = 0;
    for (i, run) in runs.iter().enumerate() {
        rows += run.rows;
        if rows >= target {
            out.push(runs.get(start..=i).unwrap_or_default());
            start = i + 1;
            rows = 0;
        }
    }
    if start < runs.len() {
        out.push(runs.get(start..).unwrap_or_default());
    }
    out
}

/// The scan of some runs, compiled once per instruction set (`pulp` picks AVX-512, AVX2 or
/// scalar at run time) so that the dot product is vectorised with the widest registers there are.
struct Scan<'a> {
    table: &'a VectorTable,
    runs: &'a [Run],
    query: &'a [i8],
    q_scale: f32,
    keep: Option<&'a (dyn Fn(u128) -> bool + Sync)>,
    top: &'a mut TopK,
}

impl pulp::WithSimd for Scan<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let Self {
            table,
            runs,
            query,
            q_scale,
            keep,
            top,
        } = self;
        let dims = table.dims;
        for run in runs {
            if !run.live || keep.is_some_and(|keep| !keep(run.doc)) {
                continue;
            }
            let values = run
                .first
                .checked_mul(dims)
                .and_then(|start| table.values.get(start..start + run.rows * dims));
            let scales = table.scales.get(run.first..run.first + run.rows);
            let (Some(values), Some(scales)) = (values, scales) else {
                continue;
            };
            for (i, (row, scale)) in values.chunks_exact(dims).zip(scales).enumerate() {
                top.offer(run.first + i, score(dot_i8(query, row), q_scale, *scale));
            }
        }
    }
}

/// A row's cosine from its integer dot product with the query and the two scales.
#[inline(always)]
fn score(dot: i32, q_scale: f32, scale: f32) -> f32 {
    #[expect(clippy::cast_precision_loss, reason = "a dot product of i8s fits f32")]
    let dot = dot as f32;
    dot * q_scale * scale
}

/// Integer dot product, written so the compiler vectorises it (16-bit products summed in
/// 32-bit lanes); inlined into [`Scan`] to get its instruction set.
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 32;
    let mut acc = [0i32; LANES];
    let (a_blocks, a_rest) = a.as_chunks::<LANES>();
    let (b_blocks, b_rest) = b.as_chunks::<LANES>();
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for ((acc, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *acc += i32::from(i16::from(x) * i16::from(y));
        }
    }
    let tail: i32 = a_rest
        .iter()
        .zip(b_rest)
        .map(|(&x, &y)| i32::from(i16::from(x) * i16::from(y)))
        .sum();
    acc.iter().sum::<i32>() + tail
}

/// One scored row; greater is better: a higher score, then a lower row.
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The `k` best rows seen, in a heap whose top is the worst of them.
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    #[inline(always)]
    fn offer(&mut self, row: usize, score: f32) {
        let new = Scored(score, row);
        if self.heap.len() < self.k {
            self.heap.push(Reverse(new));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && new > worst.0
        {
            *worst = Reverse(new);
        }
    }

    /// The `k` best of both.
    fn merge(mut self, other: Self) -> Self {
        for Reverse(Scored(score, row)) in other.heap {
            self.offer(row, score);
        }
        self
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(usize, f32)> {
        // Ascending `Reverse` order is descending `Scored` order: best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Scored(score, row))| (row, score))
            .collect()
    }
}

/// Values uniform in [-1, 1) from a fixed seed (a 64-bit LCG): test tables alike on every run.
#[cfg(test)]
pub(crate) fn uniform_source(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn normalised(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn quantised_cosine_is_close_to_exact() {
        let a = normalised(
            &(0..384)
                .map(|i| ((i * 7919) % 113) as f32 - 56.0)
                .collect::<Vec<_>>(),
        );
        let b = normalised(
            &(0..384)
                .map(|i| ((i * 104_729) % 97) as f32 - 48.0)
                .collect::<Vec<_>>(),
        );
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let mut table = VectorTable::with_dims(384);
        let (s, v) = quantize(&b);
        table.push(
            1,
            &DocVectors {
                model: "m".into(),
                dims: 384,
                rows: vec![(s, v)],
            },
            0,
        );
        let got = table.nearest(&a, 1, None)[0].1;
        assert!((got - exact).abs() < 5e-3, "{got} vs {exact}");
    }

    #[test]
    fn nearest_ranks_and_filters() {
        let mut table = VectorTable::with_dims(2);
        let rows = [
            [1.0, 0.0],
            [0.0, 1.0],
            [
                std::f32::consts::FRAC_1_SQRT_2,
                std::f32::consts::FRAC_1_SQRT_2,
            ],
        ]
        .iter()
        .map(|v| quantize(v))
        .collect();
        table.push(
            7,
            &DocVectors {
                model: "m".into(),
                dims: 2,
                rows,
            },
            0,
        );
        let hits = table.nearest(&[1.0, 0.0], 2, None);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2]);
        assert!(
            table
                .nearest(&[1.0, 0.0], 2, Some(&|doc| doc != 7))
                .is_empty()
        );
        table.forget(7);
        assert!(table.nearest(&[1.0, 0.0], 2, None).is_empty(), "deleted");
        assert_eq!(table.len(), 0);
        assert!(table.nearest(&[1.0], 2, None).is_empty(), "wrong dimension");
    }

    /// The scan as it was before SIMD: every row scored, filtered per row, fully sorted.
    fn reference(
        table: &VectorTable,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u128) -> bool,
    ) -> Vec<(usize, f32)> {
        let (q_scale, q) = quantize(query);
        let mut scored: Vec<(usize, f32)> = table
            .values
            .chunks_exact(table.dims)
            .zip(&table.scales)
            .zip(&table.keys)
            .enumerate()
            .filter(|(_, (_, (doc, _)))| keep(*doc))
            .map(|(row, ((values, scale), _))| {
                let dot: i32 = q
                    .iter()
                    .zip(values)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                (row, dot as f32 * q_scale * scale)
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }

    fn random_table(dims: usize, docs: usize, seed: u64) -> VectorTable {
        let mut next = uniform_source(seed);
        let mut table = VectorTable::with_dims(dims);
        for doc in 0..docs {
            let rows = (doc % 5) + 1;
            let rows = (0..rows)
                .map(|r| {
                    if r == 2 {
                        // Duplicates tie exactly: the lower row must come first.
                        return quantize(&vec![0.5; dims]);
                    }
                    quantize(&(0..dims).map(|_| next()).collect::<Vec<_>>())
                })
                .collect();
            table.push(
                doc as u128 + 1,
                &DocVectors {
                    model: "m".into(),
                    dims,
                    rows,
                },
                0,
            );
        }
        table
    }

    #[test]
    fn simd_scan_matches_the_scalar_scan_exactly() {
        for dims in [1, 3, 17, 31, 32, 33, 100, 383, 384, 385] {
            let table = random_table(dims, 300, dims as u64);
            let queries = random_table(dims, 2, 1000 + dims as u64);
            for row in 0..queries.len() {
                let query: Vec<f32> = queries
                    .row(row)
                    .unwrap()
                    .iter()
                    .map(|&v| f32::from(v) / 127.0)
                    .collect();
                for k in [1, 10, 5000] {
                    let all = |_: u128| true;
                    assert_eq!(
                        table.nearest(&query, k, None),
                        reference(&table, &query, k, &all),
                        "dims {dims}, k {k}"
                    );
                    let some = |doc: u128| !doc.is_multiple_of(3);
                    let got = table.nearest(&query, k, Some(&some));
                    assert_eq!(
                        got,
                        reference(&table, &query, k, &some),
                        "dims {dims}, k {k}"
                    );
                    assert!(
                        got.iter()
                            .all(|(row, _)| !table.keys[*row].0.is_multiple_of(3))
                    );
                }
            }
        }
    }

    #[test]
    fn a_large_table_scanned_in_parts_ranks_as_one_scan_and_skips_deleted_documents() {
        let mut table = random_table(24, 8_000, 7);
        assert!(
            table.keys.len() >= PARALLEL_MIN_ROWS,
            "the parallel path runs"
        );
        let deleted = |doc: u128| doc.is_multiple_of(7);
        for doc in (1..=8_000u128).filter(|d| deleted(*d)) {
            table.forget(doc);
        }
        let live_rows = table.keys.iter().filter(|(doc, _)| !deleted(*doc)).count();
        assert_eq!(table.len(), live_rows);
        let queries = random_table(24, 3, 99);
        for row in 0..queries.len() {
            let query: Vec<f32> = queries
                .row(row)
                .unwrap()
                .iter()
                .map(|&v| f32::from(v) / 127.0)
                .collect();
            for k in [1, 100, 50_000] {
                let live = |doc: u128| !deleted(doc);
                assert_eq!(
                    table.nearest(&query, k, None),
                    reference(&table, &query, k, &live),
                    "k {k}"
                );
                let tagged = |doc: u128| doc % 5 == 1;
                assert_eq!(
                    table.nearest(&query, k, Some(&tagged)),
                    reference(&table, &query, k, &|doc| live(doc) && tagged(doc)),
                    "k {k}"
                );
            }
        }
    }

    #[test]
    fn runs_are_split_into_parts_of_about_equal_rows() {
        let runs: Vec<Run> = (0..10)
            .map(|i| Run {
                doc: i,
                first: 0,
                rows: if i == 0 { 50 } else { 10 },
                crc: 0,
                live: true,
            })
            .collect();
        let parts = split_by_rows(&runs, 140, 2);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![3, 7]
        );
        assert_eq!(split_by_rows(&runs, 140, 1).len(), 1);
        assert_eq!(
            split_by_rows(&runs, 140, 64)
                .iter()
                .map(|p| p.len())
                .sum::<usize>(),
            10
        );
        assert!(split_by_rows(&[], 0, 2).is_empty());
    }

    #[test]
    fn tables_round_trip_and_reject_damage() {
        let v = DocVectors {
            model: "all-MiniLM-L6-v2".into(),
            dims: 3,
            rows: vec![quantize(&[0.1, -0.5, 0.2]), quantize(&[0.0, 0.0, 0.0])],
        };
        let bytes = v.encode();
        assert_eq!(DocVectors::decode(&bytes).unwrap(), v);
        for cut in 0..bytes.len() {
            assert!(DocVectors::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(DocVectors::decode(&huge).is_err());
    }
}
