//! Chunk embeddings: stored per document as one vault object, searched by brute force.
//!
//! Each vector is L2-normalised, then quantised to `i8` with its own scale (`max |x| / 127`):
//! a quarter of the memory of `f32`, and a cosine error around 1e-3, far below the gaps that
//! decide a ranking. A scan of 100K chunks reads 38 MB and fits a query in a few milliseconds
//! on one core; no approximate index is needed at this size, so results are exact.

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
}

impl VectorTable {
    pub(crate) fn with_dims(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Adds a document's rows; rows of another dimension are refused.
    pub(crate) fn push(&mut self, doc: u128, vectors: &DocVectors) -> bool {
        if vectors.dims != self.dims {
            return false;
        }
        for (ord, (scale, values)) in vectors.rows.iter().enumerate() {
            self.keys
                .push((doc, u32::try_from(ord).unwrap_or(u32::MAX)));
            self.scales.push(*scale);
            self.values.extend_from_slice(values);
        }
        true
    }

    /// The `k` rows nearest `query` by cosine, best first, among rows `keep` accepts.
    pub(crate) fn nearest(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u128) -> bool,
    ) -> Vec<(usize, f32)> {
        if query.len() != self.dims || k == 0 || self.dims == 0 {
            return Vec::new();
        }
        let (q_scale, q) = quantize(query);
        let mut scored: Vec<(usize, f32)> = self
            .values
            .chunks_exact(self.dims)
            .zip(&self.scales)
            .zip(&self.keys)
            .enumerate()
            .filter(|(_, (_, (doc, _)))| keep(*doc))
            .map(|(row, ((values, scale), _))| {
                #[expect(clippy::cast_precision_loss, reason = "a dot product of i8s fits f32")]
                let dot = dot_i8(&q, values) as f32;
                (row, dot * q_scale * scale)
            })
            .collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
        scored.sort_unstable_by(by_score);
        scored
    }
}

/// Integer dot product; the compiler vectorises it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(i16::from(x) * i16::from(y)))
        .sum()
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
        );
        let got = table.nearest(&a, 1, &|_| true)[0].1;
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
        );
        let hits = table.nearest(&[1.0, 0.0], 2, &|_| true);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2]);
        assert!(table.nearest(&[1.0, 0.0], 2, &|doc| doc != 7).is_empty());
        assert!(
            table.nearest(&[1.0], 2, &|_| true).is_empty(),
            "wrong dimension"
        );
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
