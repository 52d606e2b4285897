//! Synthetic English-like text for benchmarks: a deterministic generator and a Zipf-distributed
//! made-up vocabulary, so that two runs (and two benchmarks) see the same corpus.

/// SplitMix64: small, fast, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A made-up vocabulary, shorter words more frequent, drawn with a Zipf (s = 1) distribution.
pub struct Words {
    pub vocab: Vec<String>,
    cdf: Vec<f64>,
}

impl Words {
    /// `size` made-up words, shortest first.
    pub fn new(rng: &mut Rng, size: usize) -> Self {
        const ONSETS: &[&str] = &[
            "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st",
            "tr", "pl", "gr",
        ];
        const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
        const CODAS: &[&str] = &["", "", "", "n", "r", "s", "l", "m", "t"];
        let mut seen = std::collections::HashSet::new();
        let mut vocab = Vec::with_capacity(size);
        while vocab.len() < size {
            let syllables = rng.range(2, 4);
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSETS[rng.below(ONSETS.len())]);
                w.push_str(VOWELS[rng.below(VOWELS.len())]);
            }
            w.push_str(CODAS[rng.below(CODAS.len())]);
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        vocab.sort_by_key(String::len);
        let mut total = 0.0;
        let cdf = (1..=size)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c / total)
            .collect();
        Self { vocab, cdf }
    }

    pub fn zipf(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.vocab.len() - 1);
        &self.vocab[i]
    }
}
