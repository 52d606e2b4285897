//! The encoder's transformer layers without tensors, for one input at a time (every text, by
//! default: queries and chunks).
//!
//! Candle runs each operation on its own: it allocates the output, asks the environment for the
//! thread count (without `RAYON_NUM_THREADS` set, by parsing `/proc/cpuinfo` — about 45 µs, on
//! every matrix product) and sends products of a few rows through a kernel laid out for large
//! ones. For a query of about ten tokens that overhead was most of its time (p50 ≈ 15 ms). Here
//! the same arithmetic (fp32, erf GELU, the fused query/key/value of [`crate::bert`]) runs as
//! plain loops: the products through a register-tiled kernel compiled for the best instruction
//! set there is (`pulp` picks AVX-512, AVX2+FMA or scalar at run time), split by columns over the
//! rayon pool so each core streams its share of the weights once; softmax and GELU through
//! polynomial exp and erf that vectorise (libm's scalar `expf` on every attention score was a
//! fifth of a chunk's time).

use pulp::WithSimd;
use rayon::prelude::*;

/// Output columns one tile computes without AVX-512: two AVX2 registers.
const TILE_COLS: usize = 16;
/// … and with AVX-512: two of its registers. Sixteen columns there would be one register per
/// row, six accumulators, too few to keep both FMA units busy (measured on a Xeon, the whole
/// encoder: 102–105 GFLOP/s with sixteen, 118–124 with thirty-two).
const WIDE_TILE_COLS: usize = 32;
/// Rows one tile computes (6 × 2 accumulators + 2 loads + 1 broadcast fit AVX2's 16 registers).
const TILE_ROWS: usize = 6;
/// Sequences at least this long run attention through the tiled products (measured: below, the
/// setup costs more than the products save).
const TILED_ATTENTION_TOKENS: usize = 32;
/// Products smaller than this (multiply-adds) run on one core: splitting costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// A dense layer, its weight packed by tiles: the `TILE_COLS` columns of each tile are stored
/// together for every input in turn, so a tile's product reads one contiguous block.
pub(crate) struct Affine {
    packed: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// Columns per tile: [`WIDE_TILE_COLS`] or [`TILE_COLS`].
    cols: usize,
}

/// Whether this CPU has AVX-512 (the wide tiles' instruction set), asked once.
fn wide_tiles() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            pulp::x86::V4::try_new().is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

impl Affine {
    /// From a weight stored (inputs, outputs) row-major, as `x · weight` wants it, in the
    /// widest tiles this CPU runs well that the outputs fill. `None` when the shapes disagree
    /// or the outputs are not whole tiles.
    pub(crate) fn new(weight: &[f32], bias: Vec<f32>, inputs: usize) -> Option<Affine> {
        let cols = if wide_tiles() && bias.len().is_multiple_of(WIDE_TILE_COLS) {
            WIDE_TILE_COLS
        } else {
            TILE_COLS
        };
        Self::with_tiles(weight, bias, inputs, cols)
    }

    fn with_tiles(weight: &[f32], bias: Vec<f32>, inputs: usize, cols: usize) -> Option<Affine> {
        let outputs = bias.len();
        if inputs == 0
            || outputs == 0
            || !outputs.is_multiple_of(cols)
            || weight.len() != inputs.checked_mul(outputs)?
        {
            return None;
        }
        let mut packed = Vec::with_capacity(weight.len());
        for col in (0..outputs).step_by(cols) {
            for row in weight.chunks_exact(outputs) {
                packed.extend_from_slice(row.get(col..col + cols)?);
            }
        }
        Some(Affine {
            packed,
            bias,
            inputs,
            outputs,
            cols,
        })
    }

    /// `x` is (rows, inputs); the result (rows, outputs).
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.inputs;
        // Each group's values side by side per input, so the kernel broadcasts from one place.
        let groups: Vec<Vec<[f32; TILE_ROWS]>> = x
            .chunks(self.inputs * TILE_ROWS)
            .map(|rows| {
                let mut across = vec![[0.0f32; TILE_ROWS]; self.inputs];
                for (r, row) in rows.chunks_exact(self.inputs).enumerate() {
                    for (slot, &value) in across.iter_mut().zip(row) {
                        if let Some(slot) = slot.get_mut(r) {
                            *slot = value;
                        }
                    }
                }
                across
            })
            .collect();
        // The result tile by tile, each tile's rows together: tiles are independent tasks
        // (many small ones, so a core that wakes late still takes its share).
        let cols = self.cols;
        let tile_len = rows * cols;
        let mut by_tile = vec![0.0f32; self.outputs * rows];
        let product = |(tile, out): (usize, &mut [f32])| {
            if cols == WIDE_TILE_COLS {
                pulp::Arch::new().dispatch(TileProduct::<WIDE_TILE_COLS> {
                    layer: self,
                    groups: &groups,
                    tile,
                    out,
                });
            } else {
                pulp::Arch::new().dispatch(TileProduct::<TILE_COLS> {
                    layer: self,
                    groups: &groups,
                    tile,
                    out,
                });
            }
        };
        if tile_len == 0 {
            return by_tile;
        }
        if rayon::current_num_threads() > 1
            && rows * self.inputs * self.outputs >= PARALLEL_MIN_WORK
        {
            by_tile
                .par_chunks_mut(tile_len)
                .enumerate()
                .for_each(product);
        } else {
            by_tile.chunks_mut(tile_len).enumerate().for_each(product);
        }
        let mut out = vec![0.0f32; rows * self.outputs];
        for (tile, block) in by_tile.chunks_exact(tile_len).enumerate() {
            for (out_row, values) in out
                .chunks_exact_mut(self.outputs)
                .zip(block.chunks_exact(cols))
            {
                if let Some(dst) = out_row.get_mut(tile * cols..(tile + 1) * cols) {
                    dst.copy_from_slice(values);
                }
            }
        }
        out
    }
}

/// One tile of `x · weight + bias` for every row, `C` columns wide, compiled once per
/// instruction set.
struct TileProduct<'a, const C: usize> {
    layer: &'a Affine,
    groups: &'a [Vec<[f32; TILE_ROWS]>],
    tile: usize,
    /// (rows, C).
    out: &'a mut [f32],
}

impl<const C: usize> WithSimd for TileProduct<'_, C> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let Self {
            layer,
            groups,
            tile,
            out,
        } = self;
        let block = layer.inputs * C;
        let col = tile * C;
        let packed = layer
            .packed
            .get(tile * block..(tile + 1) * block)
            .unwrap_or_default();
        let (weights, _) = packed.as_chunks::<C>();
        let bias = layer.bias.get(col..col + C).unwrap_or_default();
        for (across, out) in groups.iter().zip(out.chunks_mut(TILE_ROWS * C)) {
            // The last group may hold fewer rows: a kernel for each count (padding the group
            // instead computes rows that are thrown away).
            let rows = out.len() / C;
            if rows == TILE_ROWS {
                write_tile(&tile_product::<TILE_ROWS, C>(across, weights), bias, out);
                continue;
            }
            match rows {
                5 => write_tile(&tile_product::<5, C>(across, weights), bias, out),
                4 => write_tile(&tile_product::<4, C>(across, weights), bias, out),
                3 => write_tile(&tile_product::<3, C>(across, weights), bias, out),
                2 => write_tile(&tile_product::<2, C>(across, weights), bias, out),
                _ => write_tile(&tile_product::<1, C>(across, weights), bias, out),
            }
        }
    }
}

/// `acc` plus the bias into `out`, (rows, C).
#[inline(always)]
fn write_tile<const C: usize>(acc: &[[f32; C]], bias: &[f32], out: &mut [f32]) {
    for (dst, acc) in out.chunks_exact_mut(C).zip(acc) {
        for ((dst, &sum), &b) in dst.iter_mut().zip(acc).zip(bias) {
            *dst = sum + b;
        }
    }
}

/// The first `R` rows of a group times one tile's weights; inlined into [`TileProduct`] for its
/// instruction set.
#[inline(always)]
fn tile_product<const R: usize, const C: usize>(
    across: &[[f32; TILE_ROWS]],
    weights: &[[f32; C]],
) -> [[f32; C]; R] {
    let mut acc = [[0.0f32; C]; R];
    for (values, weights) in across.iter().zip(weights) {
        for (acc, &value) in acc.iter_mut().zip(values) {
            for (acc, &weight) in acc.iter_mut().zip(weights) {
                *acc = value.mul_add(weight, *acc);
            }
        }
    }
    acc
}

/// A layer norm over rows of `weight.len()` values (candle-nn's arithmetic: one pass for the
/// sum and the sum of squares).
pub(crate) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(crate) fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f32) -> Option<Norm> {
        (weight.len() == bias.len() && !weight.is_empty()).then_some(Norm { weight, bias, eps })
    }

    pub(crate) fn apply(&self, x: &mut [f32]) {
        pulp::Arch::new().dispatch(NormRows { norm: self, x });
    }
}

/// [`Norm::apply`] compiled for the instruction set, the sums in eight lanes.
struct NormRows<'a> {
    norm: &'a Norm,
    x: &'a mut [f32],
}

impl WithSimd for NormRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let Self { norm, x } = self;
        #[expect(clippy::cast_precision_loss, reason = "a hidden size of 384")]
        let size = norm.weight.len() as f32;
        for row in x.chunks_exact_mut(norm.weight.len()) {
            let (sum, squares) = (lanes_sum(row), dot(row, row));
            let mean = sum / size;
            let variance = squares / size - mean * mean;
            let inv_std = (variance + norm.eps).sqrt().recip();
            for ((v, &w), &b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
                *v = (*v - mean) * inv_std * w + b;
            }
        }
    }
}

/// One transformer layer.
pub(crate) struct Layer {
    pub(crate) qkv: Affine,
    pub(crate) attention_out: Affine,
    pub(crate) attention_norm: Norm,
    pub(crate) intermediate: Affine,
    pub(crate) output: Affine,
    pub(crate) output_norm: Norm,
}

/// The layers of the encoder, and how attention splits the hidden size.
pub(crate) struct Layers {
    pub(crate) layers: Vec<Layer>,
    pub(crate) heads: usize,
    pub(crate) head_size: usize,
}

impl Layers {
    /// Runs every layer over `x`, (tokens, hidden) of one sequence without padding, in place.
    pub(crate) fn forward(&self, x: &mut Vec<f32>) {
        let hidden = self.heads * self.head_size;
        let tokens = x.len() / hidden;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(x);
            let context = self.attention(&qkv, tokens);
            let mut attended = layer.attention_out.forward(&context);
            for (a, &v) in attended.iter_mut().zip(x.iter()) {
                *a += v;
            }
            layer.attention_norm.apply(&mut attended);
            *x = attended;

            let mut inner = layer.intermediate.forward(x);
            pulp::Arch::new().dispatch(Gelu(&mut inner));
            let mut out = layer.output.forward(&inner);
            for (o, &v) in out.iter_mut().zip(x.iter()) {
                *o += v;
            }
            layer.output_norm.apply(&mut out);
            *x = out;
        }
    }

    /// Multi-head self-attention of one sequence: `qkv` is (tokens, 3 × hidden) with each
    /// token's query, key and value side by side (the query already scaled by 1/√head size).
    fn attention(&self, qkv: &[f32], tokens: usize) -> Vec<f32> {
        let hidden = self.heads * self.head_size;
        let head = |head: usize| {
            let offset = head * self.head_size;
            if tokens < TILED_ATTENTION_TOKENS {
                pulp::Arch::new().dispatch(ShortHead {
                    qkv,
                    tokens,
                    hidden,
                    offset,
                    size: self.head_size,
                })
            } else {
                attention_head(qkv, tokens, hidden, offset, self.head_size)
            }
        };
        // Long sequences: a head per task (t² work each); short ones are not worth a task.
        let heads: Vec<Vec<f32>> = if tokens >= 32 && rayon::current_num_threads() > 1 {
            (0..self.heads).into_par_iter().map(head).collect()
        } else {
            (0..self.heads).map(head).collect()
        };
        let mut context = vec![0.0f32; tokens * hidden];
        for (h, values) in heads.iter().enumerate() {
            for (row, values) in context
                .chunks_exact_mut(hidden)
                .zip(values.chunks_exact(self.head_size))
            {
                if let Some(dst) = row.get_mut(h * self.head_size..(h + 1) * self.head_size) {
                    dst.copy_from_slice(values);
                }
            }
        }
        context
    }
}

/// One attention head over every token: its context vectors, (tokens, size). `offset` is
/// where the head's values start within each token's query, key and value. Both products run
/// through the tiled kernel: scores = queries · keysᵀ (keys padded to whole tiles with zeros,
/// whose scores are left out), context = softmax(scores) · values.
fn attention_head(
    qkv: &[f32],
    tokens: usize,
    hidden: usize,
    offset: usize,
    size: usize,
) -> Vec<f32> {
    let [queries, keys, values] = head_parts(qkv, hidden, offset, size);
    let padded = tokens.next_multiple_of(TILE_COLS);
    // Keys transposed, (size, padded): the "weight" of the score product.
    let mut keys_by_dim = vec![0.0f32; size * padded];
    for (j, key) in keys.chunks_exact(size).enumerate() {
        for (d, &k) in key.iter().enumerate() {
            if let Some(slot) = keys_by_dim.get_mut(d * padded + j) {
                *slot = k;
            }
        }
    }
    let (Some(score_product), Some(value_product)) = (
        Affine::new(&keys_by_dim, vec![0.0; padded], size),
        Affine::new(&values, vec![0.0; size], tokens),
    ) else {
        // Only a head size that is not whole tiles gets here; MiniLM's 32 is two.
        return vec![0.0; tokens * size];
    };
    let mut scores = score_product.forward(&queries);
    pulp::Arch::new().dispatch(SoftmaxRows {
        scores: &mut scores,
        stride: padded,
        len: tokens,
    });
    let mut probabilities = Vec::with_capacity(tokens * tokens);
    for row in scores.chunks_exact(padded) {
        probabilities.extend_from_slice(row.get(..tokens).unwrap_or_default());
    }
    value_product.forward(&probabilities)
}

/// [`softmax`] over the first `len` values of every `stride` values, compiled for the
/// instruction set.
struct SoftmaxRows<'a> {
    scores: &'a mut [f32],
    stride: usize,
    len: usize,
}

impl WithSimd for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        for row in self.scores.chunks_exact_mut(self.stride) {
            softmax(row.get_mut(..self.len).unwrap_or_default());
        }
    }
}

/// candle-nn's softmax (shift by the maximum, exponentiate, divide by the sum) in place, in
/// loops that vectorise: the exponential is [`exp`], the maximum and the sum in eight lanes.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = lanes_max(row);
    for value in row.iter_mut() {
        *value = exp(*value - max);
    }
    let scale = lanes_sum(row).recip();
    for value in row.iter_mut() {
        *value *= scale;
    }
}

/// The largest value (−∞ for none), in eight independent lanes.
#[inline(always)]
fn lanes_max(values: &[f32]) -> f32 {
    let (blocks, rest) = values.as_chunks::<8>();
    let mut lanes = [f32::NEG_INFINITY; 8];
    for block in blocks {
        for (lane, &value) in lanes.iter_mut().zip(block) {
            *lane = if value > *lane { value } else { *lane };
        }
    }
    lanes.iter().chain(rest).fold(
        f32::NEG_INFINITY,
        |max, &value| if value > max { value } else { max },
    )
}

/// The sum, in eight independent lanes.
#[inline(always)]
fn lanes_sum(values: &[f32]) -> f32 {
    let (blocks, rest) = values.as_chunks::<8>();
    let mut lanes = [0.0f32; 8];
    for block in blocks {
        for (lane, &value) in lanes.iter_mut().zip(block) {
            *lane += value;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// e^x for f32 in arithmetic that vectorises (Cephes' `expf`): x = n·ln 2 + r with |r| ≤ ½ ln 2,
/// e^r from a degree-6 polynomial, 2^n written into the exponent bits. Within a few units in the
/// last place of libm's (checked in the tests); below −87.3 it gives e^−87.3 (about 1e−38)
/// instead of a subnormal or 0, above 88.3 e^88.3.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    /// 1.5 · 2²³: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: u32 = 0x4B40_0000;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    // ln 2 in two parts, so r keeps its precision.
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p.mul_add(r, c);
    }
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // n + 127 (1 to 254 after the clamp) as the exponent of 2^n.
    let two_to_n = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND_BITS - 127) << 23);
    e_r * two_to_n
}

/// One head's queries, keys and values, each contiguous (tokens, size), out of `qkv`'s
/// (tokens, 3 × hidden) rows.
#[inline(always)]
fn head_parts(qkv: &[f32], hidden: usize, offset: usize, size: usize) -> [Vec<f32>; 3] {
    std::array::from_fn(|which| {
        let start = which * hidden + offset;
        let mut part = Vec::with_capacity(qkv.len() / 3 / hidden.max(1) * size);
        for token in qkv.chunks_exact(3 * hidden) {
            part.extend_from_slice(token.get(start..start + size).unwrap_or_default());
        }
        part
    })
}

/// One attention head of a short sequence (under [`TILED_ATTENTION_TOKENS`]): its context
/// vectors, (tokens, size), by dot products — for a few tokens, cheaper than setting up the
/// tiled products.
struct ShortHead<'a> {
    qkv: &'a [f32],
    tokens: usize,
    hidden: usize,
    /// Where the head's values start within each of query, key and value.
    offset: usize,
    size: usize,
}

impl WithSimd for ShortHead<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let Self {
            qkv,
            tokens,
            hidden,
            offset,
            size,
        } = self;
        // The head's queries, keys and values, each contiguous (tokens, size).
        let [queries, keys, values] = head_parts(qkv, hidden, offset, size);
        let mut context = vec![0.0f32; tokens * size];
        let mut scores = vec![0.0f32; tokens];
        for (query, out) in queries
            .chunks_exact(size)
            .zip(context.chunks_exact_mut(size))
        {
            for (score, key) in scores.iter_mut().zip(keys.chunks_exact(size)) {
                *score = dot(query, key);
            }
            softmax(&mut scores);
            for (&weight, value) in scores.iter().zip(values.chunks_exact(size)) {
                for (o, &v) in out.iter_mut().zip(value) {
                    *o = weight.mul_add(v, *o);
                }
            }
        }
        context
    }
}

/// A dot product in eight independent lanes (so it vectorises), inlined for the caller's
/// instruction set.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, a_rest) = a.as_chunks::<8>();
    let (b_blocks, b_rest) = b.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for ((acc, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *acc = x.mul_add(y, *acc);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// GELU with the exact (erf) form, in place, vectorised: erf from a rational approximation
/// accurate to a few units in the last place of f32 (checked against libm in the tests).
struct Gelu<'a>(&'a mut [f32]);

impl WithSimd for Gelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        for v in self.0 {
            *v = (erf(*v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * *v;
        }
    }
}

/// erf(x) for f32: x · P(x²) / Q(x²) on [-4, 4], ±1 beyond (where erf is 1 to f32 precision).
/// The coefficients are Eigen's (`generic_fast_erf_float`).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p.mul_add(x2, c);
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_2e-3,
        -1.426_474e-2,
    ] {
        q = q.mul_add(x2, c);
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_to_a_few_ulp() {
        let mut worst = 0.0f32;
        for i in -600_000..=600_000 {
            #[expect(clippy::cast_precision_loss, reason = "a test grid")]
            let x = i as f32 * 1e-5;
            let want = libm::erff(x);
            let got = erf(x);
            worst = worst.max((got - want).abs());
        }
        assert!(worst < 1e-6, "worst difference {worst}");
        for x in [10.0, 1e30, f32::INFINITY] {
            assert!((erf(x) - 1.0).abs() < 1e-6 && (erf(-x) + 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0.0f32;
        for i in -870_000..=880_000 {
            #[expect(clippy::cast_precision_loss, reason = "a test grid")]
            let x = i as f32 * 1e-4;
            let want = x.exp();
            let relative = ((exp(x) - want) / want).abs();
            worst = worst.max(relative);
        }
        assert!(worst < 3e-7, "worst relative difference {worst}");
        assert!(exp(-1000.0) < 2e-38 && exp(-1000.0) >= 0.0);
        assert!(exp(f32::NEG_INFINITY) < 2e-38);
        assert!(exp(0.0) == 1.0);
    }

    #[test]
    fn softmax_matches_the_plain_one() {
        for len in [1, 7, 8, 9, 31, 250] {
            #[expect(clippy::cast_precision_loss, reason = "test values")]
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 97) as f32 / 9.0 - 5.0)
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
            let mut got = scores.clone();
            softmax(&mut got);
            for (&s, &g) in scores.iter().zip(&got) {
                let want = (s - max).exp() / total;
                assert!((g - want).abs() < 1e-6, "len {len}: {g} vs {want}");
            }
        }
    }

    /// The tiled product equals a plain triple loop, for every row count up to past two groups
    /// and with an odd number of inputs.
    #[test]
    fn tiled_product_equals_the_plain_one() {
        for cols in [TILE_COLS, WIDE_TILE_COLS] {
            tiled_product_in_tiles_of(cols);
        }
    }

    fn tiled_product_in_tiles_of(cols: usize) {
        let (inputs, outputs) = (37, 2 * WIDE_TILE_COLS);
        #[expect(clippy::cast_precision_loss, reason = "test values")]
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        #[expect(clippy::cast_precision_loss, reason = "test values")]
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 * 0.01).collect();
        let layer = Affine::with_tiles(&weight, bias.clone(), inputs, cols).unwrap();
        assert_eq!(layer.cols, cols);
        for rows in 1..=2 * TILE_ROWS + 1 {
            #[expect(clippy::cast_precision_loss, reason = "test values")]
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
                .collect();
            let got = layer.forward(&x);
            assert_eq!(got.len(), rows * outputs);
            for r in 0..rows {
                for c in 0..outputs {
                    let want: f32 = (0..inputs)
                        .map(|k| x[r * inputs + k] * weight[k * outputs + c])
                        .sum::<f32>()
                        + bias[c];
                    let diff = (got[r * outputs + c] - want).abs();
                    assert!(
                        diff < 1e-5,
                        "{cols} wide, rows {rows}: [{r}][{c}] off by {diff}"
                    );
                }
            }
        }
        assert!(Affine::with_tiles(&weight, vec![0.0; outputs - 1], inputs, cols).is_none());
        assert!(Affine::with_tiles(&weight[1..], vec![0.0; outputs], inputs, cols).is_none());
        // Outputs that fill narrow tiles but not wide ones take narrow ones.
        let narrow = Affine::new(&weight[..inputs * 48], vec![0.0; 48], inputs).unwrap();
        assert_eq!(narrow.cols, TILE_COLS);
    }
}
