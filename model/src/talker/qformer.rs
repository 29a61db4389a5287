//! The Q-Former: a BERT encoder over [learned queries ; instruction tokens] with bidirectional
//! self-attention, cross-attention from the query positions to the image embeddings every
//! `cross_attention_frequency` layers, and separate feed-forward weights for query and text
//! positions. Module paths are transformers' `InstructBlipQFormerModel` names with BERT's
//! `LayerNorm` spelled `layer_norm` ([`super::weights`] maps the two); only the query outputs
//! go on to T5.

use super::config::QFormerConfig;
use crate::fpn::face_vit::Init;
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Int, Tensor, TensorData};

#[derive(Module, Debug)]
pub struct QEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub layernorm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct QMultiHead {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct QAddNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct QAttention {
    pub attention: QMultiHead,
    pub output: QAddNorm,
}

#[derive(Module, Debug)]
pub struct QDense {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct QLayer {
    pub attention: QAttention,
    pub crossattention: Option<QAttention>,
    pub intermediate: QDense,
    pub output: QAddNorm,
    pub intermediate_query: QDense,
    pub output_query: QAddNorm,
}

#[derive(Module, Debug)]
pub struct QEncoder {
    pub layer: Vec<QLayer>,
}

#[derive(Module, Debug)]
pub struct QFormer {
    pub embeddings: QEmbeddings,
    pub encoder: QEncoder,
}

/// The value added to the attention scores of masked keys (`torch.finfo(float32).min`).
pub const MASKED: f32 = f32::MIN;

/// An additive key mask [B, 1, 1, L] from a 0/1 mask [B][L].
pub fn additive_mask(mask: &[Vec<u8>], device: &burn::tensor::Device) -> Tensor<4> {
    let b = mask.len();
    let l = mask.first().map_or(0, Vec::len);
    let v: Vec<f32> = mask.iter().flat_map(|r| r.iter().map(|m| if *m == 0 { MASKED } else { 0.0 })).collect();
    Tensor::from_data(TensorData::new(v, [b, 1, 1, l]), device)
}

impl QAttention {
    fn new(cfg: &QFormerConfig, kv_width: usize, init: &mut Init) -> Self {
        Self::with_widths(cfg.hidden_size, kv_width, cfg.layer_norm_eps, init)
    }

    /// A BERT attention block of width `h` over keys of width `kv_width` (seeded).
    pub(crate) fn with_widths(h: usize, kv_width: usize, eps: f64, init: &mut Init) -> Self {
        QAttention {
            attention: QMultiHead { query: init.linear(h, h), key: init.linear(kv_width, h), value: init.linear(kv_width, h) },
            output: QAddNorm { dense: init.linear(h, h), layer_norm: init.layer_norm(h, eps) },
        }
    }

    fn forward(&self, cfg: &QFormerConfig, x: Tensor<3>, kv: Tensor<3>, mask: Option<Tensor<4>>) -> Tensor<3> {
        self.attend(cfg.num_attention_heads, x, kv, mask)
    }

    /// Attention of `x` over `kv` (itself for self-attention) with `heads` heads, with the
    /// output's residual + norm.
    pub(crate) fn attend(&self, heads: usize, x: Tensor<3>, kv: Tensor<3>, mask: Option<Tensor<4>>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let [_, l, _] = kv.dims();
        let hd = h / heads;
        let a = &self.attention;
        let q = a.query.forward(x.clone()).reshape([b, t, heads, hd]).swap_dims(1, 2);
        let k = a.key.forward(kv.clone()).reshape([b, l, heads, hd]).swap_dims(1, 2);
        let v = a.value.forward(kv).reshape([b, l, heads, hd]).swap_dims(1, 2);
        let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar((hd as f64).powf(-0.5));
        if let Some(m) = mask {
            scores = scores + m;
        }
        let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        self.output.layer_norm.forward(self.output.dense.forward(ctx) + x)
    }
}

impl QAddNorm {
    /// BERT's feed-forward: `intermediate` with GELU, then this dense layer, residual and norm.
    pub(crate) fn ff(&self, inter: &QDense, x: Tensor<3>) -> Tensor<3> {
        let y = gelu(inter.dense.forward(x.clone()));
        self.layer_norm.forward(self.dense.forward(y) + x)
    }
}

impl QFormer {
    pub fn new(cfg: &QFormerConfig, init: &mut Init) -> Self {
        let h = cfg.hidden_size;
        let embeddings = QEmbeddings {
            word_embeddings: init.embedding(cfg.vocab_size, h),
            position_embeddings: init.embedding(cfg.max_position_embeddings, h),
            layernorm: init.layer_norm(h, cfg.layer_norm_eps),
        };
        let layer = (0..cfg.num_hidden_layers)
            .map(|i| QLayer {
                attention: QAttention::new(cfg, h, init),
                crossattention: cfg.has_cross_attention(i).then(|| QAttention::new(cfg, cfg.encoder_hidden_size, init)),
                intermediate: QDense { dense: init.linear(h, cfg.intermediate_size) },
                output: QAddNorm { dense: init.linear(cfg.intermediate_size, h), layer_norm: init.layer_norm(h, cfg.layer_norm_eps) },
                intermediate_query: QDense { dense: init.linear(h, cfg.intermediate_size) },
                output_query: QAddNorm { dense: init.linear(cfg.intermediate_size, h), layer_norm: init.layer_norm(h, cfg.layer_norm_eps) },
            })
            .collect();
        QFormer { embeddings, encoder: QEncoder { layer } }
    }

    /// The query outputs [B, Q, H]: `queries` [B, Q, H], instruction `ids` [B, L] with its 0/1
    /// `mask`, image embeddings [B, N, D_vision] (all attended).
    pub fn forward(&self, cfg: &QFormerConfig, queries: Tensor<3>, ids: Tensor<2, Int>, mask: &[Vec<u8>], image: Tensor<3>) -> Tensor<3> {
        let [b, nq, h] = queries.dims();
        let [_, l] = ids.dims();
        let device = queries.device();
        let e = &self.embeddings;
        let pos = Tensor::<1, Int>::arange(0..l as i64, &device).unsqueeze::<2>().expand([b, l]);
        let text = e.word_embeddings.forward(ids) + e.position_embeddings.forward(pos);
        let mut x = e.layernorm.forward(Tensor::cat(vec![queries, text], 1));
        let full: Vec<Vec<u8>> = mask.iter().map(|r| std::iter::repeat_n(1u8, nq).chain(r.iter().copied()).collect()).collect();
        let self_mask = additive_mask(&full, &device);
        for layer in &self.encoder.layer {
            let att = layer.attention.forward(cfg, x.clone(), x, Some(self_mask.clone()));
            let mut q = att.clone().slice([0..b, 0..nq, 0..h]);
            if let Some(cross) = &layer.crossattention {
                q = cross.forward(cfg, q, image.clone(), None);
            }
            let q = layer.output_query.ff(&layer.intermediate_query, q);
            x = if l > 0 {
                let t = layer.output.ff(&layer.intermediate, att.slice([0..b, nq..nq + l, 0..h]));
                Tensor::cat(vec![q, t], 1)
            } else {
                q
            };
        }
        x.slice([0..b, 0..nq, 0..h])
    }
}
