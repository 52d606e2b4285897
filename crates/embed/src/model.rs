//! all-MiniLM-L6-v2 on the CPU: tokenizer, BERT forward, mean pooling, L2 normalisation.
//!
//! The recipe is the one sentence-transformers applies (and the golden test checks): the shipped
//! `tokenizer.json` with its padding switched off and truncation at [`MAX_TOKENS`] (the file
//! itself pads to a fixed 128 and truncates at 128), an fp32 BERT forward, the mean of the last
//! hidden states over the real tokens only (attention mask), then L2 normalisation.
//!
//! # Threads and speed
//!
//! By default every text runs through `src/direct.rs` (plain loops over packed weights, each
//! text alone, texts and a product's tiles as tasks on the rayon pool); what follows about
//! candle applies to the tensor path (`EmbedOptions::direct_tokens` below a text's length, or
//! [`Encoder::Candle`]).
//!
//! Candle's CPU backend runs matrix products through the `gemm` crate on rayon (split into
//! `RAYON_NUM_THREADS` tasks, read on every product; default: physical cores) and element-wise
//! kernels on its own persistent, briefly spinning thread pool (`CANDLE_NUM_THREADS`, read once
//! when the pool starts; default: `RAYON_NUM_THREADS`). A caller that must leave cores free sets
//! those variables before the first embedding: `RAYON_NUM_THREADS=1` makes inference
//! single-threaded. Both pools are process-wide; concurrent `embed` calls share them.
//!
//! Each candle op allocates its output, so glibc's habit of giving large blocks back to the
//! kernel costs page faults on every op: on the reference 2-core machine a 256-token chunk takes
//! about 160 ms as is and 100 ms with
//! `GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=1073741824`
//! (or a global allocator that keeps memory, chosen by the binary).

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert::Bert;

/// The model this crate computes, as sentence-transformers names it.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Length of every embedding.
pub const DIMENSIONS: usize = 384;
/// Tokens per input, `[CLS]` and `[SEP]` included; longer input is truncated (as
/// sentence-transformers' `max_seq_length` does).
pub const MAX_TOKENS: usize = 256;

/// Sequences per forward pass. Inputs are sorted by length first, so a batch pads little.
/// Throughput on 32 chunks of 256 tokens is flat from 4 to 32 here; 8 keeps the attention
/// scores of a batch of full chunks at 25 MB.
const BATCH_SIZE: usize = 8;

/// The default [`EmbedOptions::direct_tokens`]: every input. On the reference machine
/// (`cargo bench -p p3ak-embed --bench embed`) a text alone through the plain loops beats
/// candle's tensors at every length, and texts side by side beat padded batches.
const DIRECT_TOKENS: usize = MAX_TOKENS;

const WEIGHTS_FILE: &str = "model.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";
const CONFIG_FILE: &str = "config.json";

/// What can go wrong loading the model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is not there.
    #[error("missing model directory `{}`", path.display())]
    MissingDir {
        /// The directory looked for.
        path: PathBuf,
    },
    /// A file the model needs is not there.
    #[error("missing model file `{}`", path.display())]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
    },
    /// A model file exists but cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer.json` is not a tokenizer this crate can use.
    #[error("invalid tokenizer `{}`: {reason}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `config.json` is not JSON, not a BERT config, or not a MiniLM-L6 shape.
    #[error("invalid model config `{}`: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `model.safetensors` is not safetensors, or lacks a tensor of the right shape.
    #[error("invalid model weights `{}`: {source}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: candle_core::Error,
    },
    /// The tokenizer failed on an input.
    #[error("cannot tokenize input: {0}")]
    Tokenize(String),
    /// The forward pass failed (a bug, or weights that do not fit the tokenizer).
    #[error("inference failed: {0}")]
    Inference(#[source] candle_core::Error),
}

/// Which implementation of the BERT encoder computes the vectors (both fp32, same result within
/// 1e-5; the golden test checks both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoder {
    /// This crate's encoder (`src/bert.rs`): fused query/key/value, pre-transposed weights,
    /// fused softmax and layer norms, no mask when a batch has no padding.
    #[default]
    Fused,
    /// `candle_transformers::models::bert::BertModel`, as before: kept to measure against.
    Candle,
}

/// How an [`Embedder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// The encoder implementation.
    pub encoder: Encoder,
    /// Batches run at once, each on its own rayon task (matrix products inside a batch still
    /// split across the pool). 0: the rayon pool's thread count (`RAYON_NUM_THREADS`, else the
    /// cores); 1: one batch after the other, as before.
    pub workers: usize,
    /// A text of at most this many tokens embedded alone (a search query) skips the tensors:
    /// the fused encoder's layers run as plain loops over the same weights (`src/direct.rs`;
    /// same vectors within 1e-5). 0 turns that off.
    pub direct_tokens: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            encoder: Encoder::Fused,
            workers: 0,
            direct_tokens: DIRECT_TOKENS,
        }
    }
}

enum Model {
    Fused(Bert),
    Candle(BertModel),
}

/// all-MiniLM-L6-v2, loaded once; embedding takes `&self`, so one instance serves every thread.
pub struct Embedder {
    model: Model,
    tokenizer: Tokenizer,
    device: Device,
    workers: usize,
    direct_tokens: usize,
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &MODEL_NAME)
            .field("dimensions", &DIMENSIONS)
            .field("max_tokens", &MAX_TOKENS)
            .finish_non_exhaustive()
    }
}

// `Embedder` is shared across threads (an `Arc<Embedder>` in the server).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
};

impl Embedder {
    /// Loads the model from `model_dir`, which holds `model.safetensors` and `tokenizer.json`
    /// (and optionally `config.json`; without it the known MiniLM-L6 shape is used).
    ///
    /// This reads and checks all weights (about 90 MB) and is the expensive part; keep the
    /// result.
    pub fn load(model_dir: &Path) -> Result<Embedder, EmbedError> {
        Embedder::load_with(model_dir, EmbedOptions::default())
    }

    /// [`Embedder::load`] with explicit [`EmbedOptions`].
    pub fn load_with(model_dir: &Path, options: EmbedOptions) -> Result<Embedder, EmbedError> {
        if !model_dir.is_dir() {
            return Err(EmbedError::MissingDir {
                path: model_dir.to_path_buf(),
            });
        }
        let device = Device::Cpu;
        let tokenizer = load_tokenizer(&model_dir.join(TOKENIZER_FILE))?;
        let config = load_config(&model_dir.join(CONFIG_FILE))?;

        let tokenizer_path = model_dir.join(TOKENIZER_FILE);
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(EmbedError::Tokenizer {
                path: tokenizer_path,
                reason: format!(
                    "vocabulary of {vocab} tokens exceeds the model's {}",
                    config.vocab_size
                ),
            });
        }

        let weights_path = model_dir.join(WEIGHTS_FILE);
        let bytes = read_file(&weights_path)?;
        let weights_error = |source| EmbedError::Weights {
            path: weights_path.clone(),
            source,
        };
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &device).map_err(weights_error)?;
        drop(bytes);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = match options.encoder {
            Encoder::Fused => Model::Fused(Bert::load(&vb, &config).map_err(weights_error)?),
            Encoder::Candle => Model::Candle(BertModel::load(vb, &config).map_err(weights_error)?),
        };

        let embedder = Embedder {
            model,
            tokenizer,
            device,
            workers: match options.workers {
                0 => rayon::current_num_threads().max(1),
                n => n,
            },
            direct_tokens: options.direct_tokens,
        };
        if embedder.encode("")?.is_empty() {
            return Err(EmbedError::Tokenizer {
                path: tokenizer_path,
                reason: "it adds no [CLS]/[SEP] tokens".to_owned(),
            });
        }
        Ok(embedder)
    }

    /// One L2-normalised [`DIMENSIONS`]-long vector per text, in the order given.
    ///
    /// Texts longer than [`MAX_TOKENS`] tokens are truncated. A text of up to
    /// [`EmbedOptions::direct_tokens`] tokens runs alone through the direct path (plain loops,
    /// no padding); the others are sorted by length and run in batches of up to 8 (smaller when
    /// that gives every worker one), padded within the batch and masked. Both kinds run on
    /// [`EmbedOptions::workers`] rayon tasks at once; each vector equals the one embedding that
    /// text alone gives, within 1e-5 (the golden test checks).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut encoded = texts
            .iter()
            .enumerate()
            .map(|(index, text)| Ok((index, self.encode(text)?)))
            .collect::<Result<Vec<(usize, Vec<u32>)>, EmbedError>>()?;
        encoded.sort_by_key(|(_, ids)| ids.len());

        // Sorted by length, the texts the direct path takes come first: each is its own batch.
        let direct = match &self.model {
            Model::Fused(bert) if bert.has_direct() => encoded
                .iter()
                .take_while(|(_, ids)| ids.len() <= self.direct_tokens)
                .count(),
            _ => 0,
        };
        let (alone, batched) = encoded.split_at(direct);
        let batch_size = batched.len().div_ceil(self.workers).clamp(1, BATCH_SIZE);
        let batches: Vec<&[(usize, Vec<u32>)]> =
            alone.chunks(1).chain(batched.chunks(batch_size)).collect();
        let results: Vec<candle_core::Result<Vec<Vec<f32>>>> = if self.workers > 1 {
            batches
                .par_iter()
                .with_max_len(1)
                .map(|batch| self.forward_batch(batch))
                .collect()
        } else {
            batches
                .iter()
                .map(|batch| self.forward_batch(batch))
                .collect()
        };
        let mut vectors = Vec::with_capacity(texts.len());
        for (batch, result) in batches.iter().zip(results) {
            let batch_vectors = result.map_err(EmbedError::Inference)?;
            vectors.extend(batch.iter().map(|(index, _)| *index).zip(batch_vectors));
        }
        if vectors.len() != texts.len() {
            return Err(EmbedError::Inference(candle_core::Error::Msg(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            ))));
        }
        vectors.sort_unstable_by_key(|(index, _)| *index);
        Ok(vectors.into_iter().map(|(_, vector)| vector).collect())
    }

    /// The vector of one text; see [`Embedder::embed`].
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Inference(candle_core::Error::Msg("no output".to_owned())))
    }

    /// How many tokens the model sees for `text`: `[CLS]` and `[SEP]` included, after
    /// truncation to [`MAX_TOKENS`].
    pub fn token_count(&self, text: &str) -> Result<usize, EmbedError> {
        Ok(self.encode(text)?.len())
    }

    /// The token ids the model sees for `text` (what [`Embedder::token_count`] counts).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.encode(text)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|err| EmbedError::Tokenize(err.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds sequences of token ids: pads them to the longest, masks the padding in the
    /// attention and in the pooling.
    fn forward_batch(&self, batch: &[(usize, Vec<u32>)]) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let width = batch.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0);
        if rows == 0 || width == 0 {
            // Only a tokenizer without [CLS]/[SEP] gives an empty sequence; `load` refuses one.
            candle_core::bail!("empty token sequence");
        }
        if let ([(_, ids)], Model::Fused(bert)) = (batch, &self.model)
            && ids.len() <= self.direct_tokens
            && let Some(hidden) = bert.forward_direct(ids)?
        {
            return Ok(vec![mean_normalized(&hidden, DIMENSIONS)]);
        }
        let padded = batch.iter().any(|(_, ids)| ids.len() != width);
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for (_, seq) in batch {
            let pad = width.saturating_sub(seq.len());
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let input_ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let attention_mask = Tensor::from_vec(mask, (rows, width), &self.device)?;

        // (rows, width, DIMENSIONS)
        let hidden = match &self.model {
            Model::Fused(bert) => bert.forward(&input_ids, padded.then_some(&attention_mask))?,
            Model::Candle(bert) => {
                let token_type_ids = input_ids.zeros_like()?;
                bert.forward(&input_ids, &token_type_ids, Some(&attention_mask))?
            }
        };

        // Mean over the real tokens (sentence-transformers clamps the count at 1e-9).
        let mean = if padded {
            let weights = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
            let counts = weights.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            summed.broadcast_div(&counts)?
        } else {
            hidden.mean(1)?
        };

        // L2 normalisation (torch's F.normalize: divide by max(norm, 1e-12)).
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// The mean of `hidden`'s rows of `size` values, L2-normalised (as [`Embedder::embed`] pools
/// an unpadded sequence).
fn mean_normalized(hidden: &[f32], size: usize) -> Vec<f32> {
    let mut mean = vec![0.0f32; size];
    let rows = hidden.chunks_exact(size);
    #[expect(clippy::cast_precision_loss, reason = "at most MAX_TOKENS rows")]
    let count = rows.len().max(1) as f32;
    for row in rows {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= count;
    }
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    for m in &mut mean {
        *m /= norm;
    }
    mean
}

fn read_file(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => EmbedError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => EmbedError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, EmbedError> {
    let bytes = read_file(path)?;
    let invalid = |reason: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|err| invalid(err.to_string()))?;
    // The shipped file pads every input to 128 tokens; pooling over those pads would inflate
    // every cosine. A batch pads on its own, and masks what it pads.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: MAX_TOKENS,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|err| invalid(err.to_string()))?;
    Ok(tokenizer)
}

/// `config.json` if present, else the known all-MiniLM-L6-v2 shape.
fn load_config(path: &Path) -> Result<Config, EmbedError> {
    let invalid = |reason: String| EmbedError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let config = match read_file(path) {
        Ok(bytes) => {
            serde_json::from_slice::<Config>(&bytes).map_err(|err| invalid(err.to_string()))?
        }
        Err(EmbedError::MissingFile { .. }) => minilm_l6_config(),
        Err(err) => return Err(err),
    };
    // Candle divides by the head count and indexes positions up to the sequence length.
    if config.hidden_size != DIMENSIONS {
        return Err(invalid(format!(
            "hidden size {} is not {DIMENSIONS}",
            config.hidden_size
        )));
    }
    if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
        return Err(invalid(format!(
            "{} attention heads do not divide hidden size {}",
            config.num_attention_heads, config.hidden_size
        )));
    }
    if config.max_position_embeddings < MAX_TOKENS {
        return Err(invalid(format!(
            "{} positions are fewer than {MAX_TOKENS}",
            config.max_position_embeddings
        )));
    }
    if config.type_vocab_size == 0 {
        return Err(invalid("no token types".to_owned()));
    }
    Ok(config)
}

/// sentence-transformers/all-MiniLM-L6-v2's `config.json`.
fn minilm_l6_config() -> Config {
    Config {
        vocab_size: 30522,
        hidden_size: DIMENSIONS,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: true,
        classifier_dropout: None,
        model_type: Some("bert".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// A tiny valid BERT WordPiece tokenizer.json.
    const TINY_TOKENIZER: &str = r###"{
      "version": "1.0",
      "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0},
      "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                  "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                     "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
          "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
          "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
      "decoder": null,
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4}}
    }"###;

    #[test]
    fn missing_dir_and_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embedder::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, EmbedError::MissingDir { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("missing model directory `"),
            "{err}"
        );
        assert!(err.to_string().ends_with("nope`"), "{err}");

        let err = Embedder::load(dir.path()).unwrap_err();
        assert!(matches!(err, EmbedError::MissingFile { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("missing model file `"), "{message}");
        assert!(message.ends_with("tokenizer.json`"), "{message}");
    }

    #[test]
    fn tokenizer_that_is_not_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TOKENIZER_FILE, b"not json at all");
        let err = Embedder::load(dir.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Tokenizer { .. }), "{err:?}");
        assert!(err.to_string().starts_with("invalid tokenizer `"), "{err}");
    }

    #[test]
    fn tiny_tokenizer_loads_unpadded_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TOKENIZER_FILE, TINY_TOKENIZER.as_bytes());
        let tokenizer = load_tokenizer(&dir.path().join(TOKENIZER_FILE)).unwrap();
        let ids = tokenizer.encode_fast("Hello", true).unwrap();
        assert_eq!(ids.get_ids(), &[2, 4, 3]);
        let empty = tokenizer.encode_fast("  \t\n ", true).unwrap();
        assert_eq!(empty.get_ids(), &[2, 3]);
        let long = "hello ".repeat(10_000);
        let ids = tokenizer.encode_fast(long.as_str(), true).unwrap();
        assert_eq!(ids.get_ids().len(), MAX_TOKENS);
        assert_eq!(ids.get_ids().last(), Some(&3));
    }

    #[test]
    fn missing_weights_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TOKENIZER_FILE, TINY_TOKENIZER.as_bytes());
        let err = Embedder::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, EmbedError::MissingFile { ref path } if path.ends_with(WEIGHTS_FILE))
        );
    }

    #[test]
    fn corrupt_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TOKENIZER_FILE, TINY_TOKENIZER.as_bytes());
        for bytes in [
            &b""[..],
            &b"garbage"[..],
            &[0xff; 64][..],
            // A header length far past the end of the file.
            &[8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}'][..],
            // A valid header naming a tensor whose bytes are not there.
            &b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}  "[..],
        ] {
            write(dir.path(), WEIGHTS_FILE, bytes);
            let err = Embedder::load(dir.path()).unwrap_err();
            assert!(matches!(err, EmbedError::Weights { .. }), "{err:?}");
            assert!(err.to_string().starts_with("invalid model weights `"), "{err}");
        }
    }

    #[test]
    fn valid_safetensors_without_bert_tensors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TOKENIZER_FILE, TINY_TOKENIZER.as_bytes());
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let path = dir.path().join(WEIGHTS_FILE);
        t.save_safetensors("t", &path).unwrap();
        let err = Embedder::load(dir.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Weights { .. }), "{err:?}");
    }

    #[test]
    fn config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert_eq!(load_config(&path).unwrap(), minilm_l6_config());

        write(dir.path(), CONFIG_FILE, b"{");
        assert!(matches!(load_config(&path), Err(EmbedError::Config { .. })));

        let mut json = serde_json::json!({
            "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "use_cache": true, "model_type": "bert"
        });
        write(dir.path(), CONFIG_FILE, json.to_string().as_bytes());
        assert_eq!(load_config(&path).unwrap(), minilm_l6_config());

        for (key, value) in [
            ("hidden_size", 768),
            ("num_attention_heads", 0),
            ("num_attention_heads", 7),
            ("max_position_embeddings", 128),
            ("type_vocab_size", 0),
        ] {
            let mut bad = json.clone();
            bad[key] = value.into();
            write(dir.path(), CONFIG_FILE, bad.to_string().as_bytes());
            let err = load_config(&path).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid model config `"),
                "{err}"
            );
        }
        json["hidden_act"] = "swish".into();
        write(dir.path(), CONFIG_FILE, json.to_string().as_bytes());
        assert!(matches!(load_config(&path), Err(EmbedError::Config { .. })));
    }

    #[test]
    fn error_messages_are_lowercase_without_period() {
        let err = EmbedError::Tokenize("x".to_owned());
        let message = err.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()));
        assert!(!message.ends_with('.'));
    }
}
