//! The BERT encoder of all-MiniLM-L6-v2, written for inference on the CPU.
//!
//! Same arithmetic as `candle_transformers::models::bert::BertModel` (fp32, erf GELU, the
//! attention mask added before the softmax), arranged for fewer passes over memory:
//!
//! - query, key and value are one product with a 384 × 1152 matrix, the 1/√(head size) of the
//!   attention scores folded into the query's weights and bias when the model loads;
//! - every weight matrix is stored transposed and contiguous once, so no product copies it;
//! - the softmax and the layer norms are candle-nn's fused (and row-parallel) kernels;
//! - a batch whose rows have the same length skips the mask entirely.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::direct;

/// A dense layer with its weight stored as (in, out), ready for `x.matmul(&w)`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> Result<Dense> {
        let weight = vb.get((outputs, inputs), "weight")?;
        let bias = vb.get(outputs, "bias")?;
        Dense::new(&weight, bias)
    }

    /// From a weight as PyTorch stores it, (out, in).
    fn new(weight: &Tensor, bias: Tensor) -> Result<Dense> {
        Ok(Dense {
            weight: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// `x` is (rows, in); the result (rows, out).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)?.broadcast_add(&self.bias)
    }

    fn direct(&self) -> Result<Option<direct::Affine>> {
        let (inputs, _) = self.weight.dims2()?;
        Ok(direct::Affine::new(
            &self.weight.flatten_all()?.to_vec1::<f32>()?,
            self.bias.to_vec1()?,
            inputs,
        ))
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            // The config's 1e-12 is far below f32 resolution of any variance, as in candle.
            #[expect(clippy::cast_possible_truncation, reason = "an epsilon")]
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    fn direct(&self) -> Result<Option<direct::Norm>> {
        Ok(direct::Norm::new(
            self.weight.to_vec1()?,
            self.bias.to_vec1()?,
            self.eps,
        ))
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// The encoder: embeddings, then the transformer layers.
pub(crate) struct Bert {
    word_embeddings: Tensor,
    /// Position embeddings plus the (only used) token type 0 embedding.
    position_embeddings: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
    hidden: usize,
    activation: HiddenAct,
    /// The same weights for [`Bert::forward_direct`]; `None` when their shapes do not suit it.
    direct: Option<Direct>,
}

/// What [`Bert::forward_direct`] needs besides the word embeddings.
struct Direct {
    /// (positions, hidden), the token type 0 embedding added.
    position_embeddings: Vec<f32>,
    embedding_norm: direct::Norm,
    layers: direct::Layers,
}

impl Bert {
    pub(crate) fn load(vb: &VarBuilder, config: &Config) -> Result<Bert> {
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_size = hidden / heads;
        let eps = config.layer_norm_eps;
        let embeddings = vb.pp("embeddings");
        let word_embeddings =
            embeddings.get((config.vocab_size, hidden), "word_embeddings.weight")?;
        let positions = embeddings.get(
            (config.max_position_embeddings, hidden),
            "position_embeddings.weight",
        )?;
        let types = embeddings.get(
            (config.type_vocab_size, hidden),
            "token_type_embeddings.weight",
        )?;
        let position_embeddings = positions.broadcast_add(&types.narrow(0, 0, 1)?)?;
        let embedding_norm = LayerNorm::load(&embeddings.pp("LayerNorm"), hidden, eps)?;

        #[expect(clippy::cast_precision_loss, reason = "a head size of 32")]
        let scale = 1.0 / (head_size as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let vb = vb.pp(format!("encoder.layer.{index}"));
            let attention = vb.pp("attention");
            let this = attention.pp("self");
            let get = |name: &str| -> Result<(Tensor, Tensor)> {
                let part = this.pp(name);
                Ok((
                    part.get((hidden, hidden), "weight")?,
                    part.get(hidden, "bias")?,
                ))
            };
            let (query_weight, query_bias) = get("query")?;
            let (key_weight, key_bias) = get("key")?;
            let (value_weight, value_bias) = get("value")?;
            let weight = Tensor::cat(&[(query_weight * scale)?, key_weight, value_weight], 0)?;
            let bias = Tensor::cat(&[(query_bias * scale)?, key_bias, value_bias], 0)?;
            layers.push(Layer {
                qkv: Dense::new(&weight, bias)?,
                attention_out: Dense::load(&attention.pp("output.dense"), hidden, hidden)?,
                attention_norm: LayerNorm::load(&attention.pp("output.LayerNorm"), hidden, eps)?,
                intermediate: Dense::load(
                    &vb.pp("intermediate.dense"),
                    hidden,
                    config.intermediate_size,
                )?,
                output: Dense::load(&vb.pp("output.dense"), config.intermediate_size, hidden)?,
                output_norm: LayerNorm::load(&vb.pp("output.LayerNorm"), hidden, eps)?,
            });
        }
        let mut bert = Bert {
            word_embeddings,
            position_embeddings,
            embedding_norm,
            layers,
            heads,
            head_size,
            hidden,
            activation: config.hidden_act,
            direct: None,
        };
        bert.direct = bert.direct_weights()?;
        Ok(bert)
    }

    /// Copies of the weights as [`direct`] wants them; `None` for an activation or shape it
    /// does not implement.
    fn direct_weights(&self) -> Result<Option<Direct>> {
        if !matches!(self.activation, HiddenAct::Gelu) {
            return Ok(None);
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (
                Some(qkv),
                Some(attention_out),
                Some(attention_norm),
                Some(intermediate),
                Some(output),
                Some(output_norm),
            ) = (
                layer.qkv.direct()?,
                layer.attention_out.direct()?,
                layer.attention_norm.direct()?,
                layer.intermediate.direct()?,
                layer.output.direct()?,
                layer.output_norm.direct()?,
            )
            else {
                return Ok(None);
            };
            layers.push(direct::Layer {
                qkv,
                attention_out,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        let Some(embedding_norm) = self.embedding_norm.direct()? else {
            return Ok(None);
        };
        Ok(Some(Direct {
            position_embeddings: self.position_embeddings.flatten_all()?.to_vec1()?,
            embedding_norm,
            layers: direct::Layers {
                layers,
                heads: self.heads,
                head_size: self.head_size,
            },
        }))
    }

    /// Whether [`Bert::forward_direct`] can run this model.
    pub(crate) fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The last hidden states, (tokens, hidden) row-major, of one unpadded sequence, computed
    /// by [`direct`] instead of tensors; `None` when the model does not suit it.
    pub(crate) fn forward_direct(&self, ids: &[u32]) -> Result<Option<Vec<f32>>> {
        let Some(direct) = &self.direct else {
            return Ok(None);
        };
        let positions = direct
            .position_embeddings
            .get(..ids.len() * self.hidden)
            .ok_or_else(|| candle_core::Error::Msg("sequence longer than the positions".into()))?;
        let ids = Tensor::from_slice(ids, ids.len(), self.word_embeddings.device())?;
        let mut x = self
            .word_embeddings
            .index_select(&ids, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (v, &p) in x.iter_mut().zip(positions) {
            *v += p;
        }
        direct.embedding_norm.apply(&mut x);
        direct.layers.forward(&mut x);
        Ok(Some(x))
    }

    /// The last hidden states, (rows, width, hidden), of `ids` (rows, width) as u32. `mask`
    /// (rows, width) as f32 holds 1 for real tokens and 0 for padding; `None` when no row is
    /// padded.
    pub(crate) fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (rows, width) = ids.dims2()?;
        let tokens = rows * width;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?;
        let positions = self.position_embeddings.narrow(0, 0, width)?;
        let x = words
            .reshape((rows, width, self.hidden))?
            .broadcast_add(&positions)?
            .reshape((tokens, self.hidden))?;
        let mut x = self.embedding_norm.forward(&x)?;

        // 0 where attended, a large negative number where padded: (rows, 1, 1, width).
        let bias = match mask {
            Some(mask) => Some(
                ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?
                    .reshape((rows, 1, 1, width))?,
            ),
            None => None,
        };

        for layer in &self.layers {
            // (rows, width, 3, heads, head) -> (3, rows, heads, width, head)
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((rows, width, 3, self.heads, self.head_size))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let query = qkv.get(0)?;
            let key = qkv.get(1)?;
            let value = qkv.get(2)?;
            let mut scores = query.matmul(&key.t()?)?;
            if let Some(bias) = &bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs
                .matmul(&value)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((tokens, self.hidden))?;
            let attended = layer.attention_out.forward(&context)?;
            x = layer.attention_norm.forward(&(attended + &x)?)?;

            let inner = layer.intermediate.forward(&x)?;
            let inner = match self.activation {
                HiddenAct::Gelu => inner.gelu_erf()?,
                HiddenAct::GeluApproximate => inner.gelu()?,
                HiddenAct::Relu => inner.relu()?,
            };
            let out = layer.output.forward(&inner)?;
            x = layer.output_norm.forward(&(out + &x)?)?;
        }
        x.reshape((rows, width, self.hidden))
    }
}
