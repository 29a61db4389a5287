//! T5 (flan-t5) as `transformers`' `T5ForConditionalGeneration` computes it: RMS layer norms,
//! relative position buckets (computed in the first block of each stack and shared), unscaled
//! attention, the (gated) feed-forward with a configurable activation, an optional LM-head scale.
//! Decoding runs one token at a time against a per-layer key/value cache ([`DecoderCache`]).
//!
//! Module paths are transformers' names with `SelfAttention`, `EncDecAttention` and
//! `DenseReluDense` spelled in snake case ([`super::weights`] maps them). `lm_head` is `None`
//! when a checkpoint ties it to `shared` (transformers 5 saves tied weights once).

use super::config::{Activation, T5Config};
use crate::fpn::face_vit::Init;
use crate::precision::{cast, embed, linear, matmul_weight};
use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

/// T5's layer norm: scale only, no mean subtraction, no bias.
#[derive(Module, Debug)]
pub struct T5LayerNorm {
    pub weight: Param<Tensor<1>>,
}

impl T5LayerNorm {
    fn new(d: usize, init: &mut Init) -> Self {
        T5LayerNorm { weight: init.constant([d], 1.0) }
    }
    /// In float32 whatever the weight's dtype (transformers computes the variance in float32).
    fn forward(&self, x: Tensor<3>, eps: f64) -> Tensor<3> {
        let var = x.clone().powf_scalar(2.0).mean_dim(2);
        x / var.add_scalar(eps).sqrt() * cast(self.weight.val(), DType::F32).unsqueeze::<3>()
    }
}

#[derive(Module, Debug)]
pub struct T5Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub relative_attention_bias: Option<Embedding>,
}

#[derive(Module, Debug)]
pub struct T5Ff {
    pub wi: Option<Linear>,
    pub wi_0: Option<Linear>,
    pub wi_1: Option<Linear>,
    pub wo: Linear,
}

/// One of a block's sub-layers (`layer.0`, `layer.1`, `layer.2`): exactly one of the three
/// modules is present, with its pre-norm.
#[derive(Module, Debug)]
pub struct T5SubLayer {
    pub self_attention: Option<T5Attention>,
    pub enc_dec_attention: Option<T5Attention>,
    pub dense_relu_dense: Option<T5Ff>,
    pub layer_norm: T5LayerNorm,
}

#[derive(Module, Debug)]
pub struct T5Block {
    pub layer: Vec<T5SubLayer>,
}

#[derive(Module, Debug)]
pub struct T5Stack {
    pub block: Vec<T5Block>,
    pub final_layer_norm: T5LayerNorm,
}

#[derive(Module, Debug)]
pub struct T5 {
    pub shared: Embedding,
    pub encoder: T5Stack,
    pub decoder: T5Stack,
    pub lm_head: Option<Linear>,
}

/// `T5Attention._relative_position_bucket`, in float32 as torch computes it.
pub fn relative_bucket(relative_position: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut buckets = num_buckets as i64;
    let mut ret = 0i64;
    let mut rp = relative_position;
    if bidirectional {
        buckets /= 2;
        if rp > 0 {
            ret += buckets;
        }
        rp = rp.abs();
    } else {
        rp = -rp.min(0);
    }
    let max_exact = buckets / 2;
    if rp < max_exact {
        return (ret + rp) as usize;
    }
    let scale = ((max_distance as f64 / max_exact as f64).ln()) as f32;
    let large = max_exact + (((rp as f32 / max_exact as f32).ln() / scale) * (buckets - max_exact) as f32) as i64;
    (ret + large.min(buckets - 1)) as usize
}

fn act(a: Activation, x: Tensor<3>) -> Tensor<3> {
    match a {
        Activation::Relu => relu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluNew => {
            let inner = (x.clone() + x.clone().powf_scalar(3.0).mul_scalar(0.044715)).mul_scalar((2.0 / std::f64::consts::PI).sqrt());
            x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
        }
    }
}

impl T5Ff {
    fn forward(&self, cfg: &T5Config, x: Tensor<3>) -> Tensor<3> {
        let h = match (&self.wi, &self.wi_0, &self.wi_1) {
            (_, Some(w0), Some(w1)) => act(cfg.dense_act_fn, linear(w0, x.clone())) * linear(w1, x),
            (Some(wi), _, _) => act(cfg.dense_act_fn, linear(wi, x)),
            // built by `T5::new` with one of the two shapes; unreachable for a built model
            _ => x,
        };
        linear(&self.wo, h)
    }
}

impl T5Attention {
    fn new(cfg: &T5Config, bias: bool, init: &mut Init) -> Self {
        let inner = cfg.num_heads * cfg.d_kv;
        T5Attention {
            q: init.linear_no_bias(cfg.d_model, inner),
            k: init.linear_no_bias(cfg.d_model, inner),
            v: init.linear_no_bias(cfg.d_model, inner),
            o: init.linear_no_bias(inner, cfg.d_model),
            relative_attention_bias: bias.then(|| init.embedding(cfg.relative_attention_num_buckets, cfg.num_heads)),
        }
    }

    fn heads(&self, cfg: &T5Config, l: &Linear, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        linear(l, x).reshape([b, t, cfg.num_heads, cfg.d_kv]).swap_dims(1, 2)
    }

    /// Attention of q [B,H,Tq,dk] over k, v [B,H,Tk,dk] with an additive bias broadcast to
    /// [B,H,Tq,Tk]; returns [B,Tq,d_model] after `o`.
    fn attend(&self, cfg: &T5Config, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<3> {
        let [b, _, tq, _] = q.dims();
        let scores = q.matmul(k.swap_dims(2, 3)) + bias;
        let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, tq, cfg.num_heads * cfg.d_kv]);
        linear(&self.o, ctx)
    }

    /// The position bias [1, H, Tq, Tk] for queries at `q_positions` and keys 0..tk.
    fn position_bias(
        &self,
        cfg: &T5Config,
        q_positions: std::ops::Range<usize>,
        tk: usize,
        bidirectional: bool,
        device: &Device,
    ) -> Tensor<4> {
        let tq = q_positions.len();
        let Some(table) = &self.relative_attention_bias else {
            return Tensor::zeros([1, cfg.num_heads, tq, tk], device);
        };
        let ids: Vec<i64> = q_positions
            .flat_map(|qp| {
                (0..tk).map(move |kp| {
                    relative_bucket(
                        kp as i64 - qp as i64,
                        bidirectional,
                        cfg.relative_attention_num_buckets,
                        cfg.relative_attention_max_distance,
                    ) as i64
                })
            })
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [tq, tk]), device);
        // [Tq, Tk, H] -> [1, H, Tq, Tk]
        embed(table, ids).permute([2, 0, 1]).unsqueeze::<4>()
    }
}

/// The decoder's per-layer keys and values so far, the encoder's projected keys and values, and
/// the encoder mask, for rows = batch x beams.
pub struct DecoderCache {
    self_k: Vec<Tensor<4>>,
    self_v: Vec<Tensor<4>>,
    cross_k: Vec<Tensor<4>>,
    cross_v: Vec<Tensor<4>>,
    enc_mask: Tensor<4>,
    /// Tokens decoded so far (the next one's position).
    pub len: usize,
}

impl DecoderCache {
    /// Keeps rows `rows` (a beam reorder): row i of the result is old row `rows[i]`.
    pub fn reorder(&mut self, rows: &[usize]) {
        let Some(first) = self.self_k.first() else { return };
        let device = first.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.iter().map(|r| *r as i64).collect::<Vec<_>>(), [rows.len()]), &device);
        for t in self.self_k.iter_mut().chain(self.self_v.iter_mut()).chain(self.cross_k.iter_mut()).chain(self.cross_v.iter_mut()) {
            *t = t.clone().select(0, idx.clone());
        }
        self.enc_mask = self.enc_mask.clone().select(0, idx);
    }
}

impl T5 {
    pub fn new(cfg: &T5Config, init: &mut Init) -> Self {
        let ff = |init: &mut Init| T5Ff {
            wi: (!cfg.is_gated_act).then(|| init.linear_no_bias(cfg.d_model, cfg.d_ff)),
            wi_0: cfg.is_gated_act.then(|| init.linear_no_bias(cfg.d_model, cfg.d_ff)),
            wi_1: cfg.is_gated_act.then(|| init.linear_no_bias(cfg.d_model, cfg.d_ff)),
            wo: init.linear_no_bias(cfg.d_ff, cfg.d_model),
        };
        let sub = |init: &mut Init, sa: Option<T5Attention>, ca: Option<T5Attention>, f: Option<T5Ff>| T5SubLayer {
            self_attention: sa,
            enc_dec_attention: ca,
            dense_relu_dense: f,
            layer_norm: T5LayerNorm::new(cfg.d_model, init),
        };
        let shared = init.embedding(cfg.vocab_size, cfg.d_model);
        let encoder_blocks = (0..cfg.num_layers)
            .map(|i| {
                let sa = T5Attention::new(cfg, i == 0, init);
                let l0 = sub(init, Some(sa), None, None);
                let f = ff(init);
                let l1 = sub(init, None, None, Some(f));
                T5Block { layer: vec![l0, l1] }
            })
            .collect();
        let encoder = T5Stack { block: encoder_blocks, final_layer_norm: T5LayerNorm::new(cfg.d_model, init) };
        let decoder_blocks = (0..cfg.num_decoder_layers)
            .map(|i| {
                let sa = T5Attention::new(cfg, i == 0, init);
                let l0 = sub(init, Some(sa), None, None);
                let ca = T5Attention::new(cfg, false, init);
                let l1 = sub(init, None, Some(ca), None);
                let f = ff(init);
                let l2 = sub(init, None, None, Some(f));
                T5Block { layer: vec![l0, l1, l2] }
            })
            .collect();
        let decoder = T5Stack { block: decoder_blocks, final_layer_norm: T5LayerNorm::new(cfg.d_model, init) };
        let lm_head = Some(init.linear_no_bias(cfg.d_model, cfg.vocab_size));
        T5 { shared, encoder, decoder, lm_head }
    }

    /// T5 with every weight in bf16, as LAVIS loads it (`torch_dtype=torch.bfloat16`); the layer
    /// norms still compute in float32 and activations stay float32 ([`crate::precision`]).
    pub fn with_bf16_weights(self) -> Self {
        self.map(&mut crate::precision::ToBf16)
    }

    /// Token embeddings [B, T, d] (float32) of ids [B, T].
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        embed(&self.shared, ids)
    }

    /// The encoder's last hidden state [B, T, d] for input embeddings and a 0/1 mask [B][T].
    pub fn encode(&self, cfg: &T5Config, embeds: Tensor<3>, mask: &[Vec<u8>]) -> Tensor<3> {
        let [_, t, _] = embeds.dims();
        let device = embeds.device();
        let eps = cfg.layer_norm_epsilon;
        let mut bias: Option<Tensor<4>> = None;
        let mask_add = super::qformer::additive_mask(mask, &device);
        let mut x = embeds;
        for block in &self.encoder.block {
            for sub in &block.layer {
                let y = sub.layer_norm.forward(x.clone(), eps);
                if let Some(sa) = &sub.self_attention {
                    let b = bias.get_or_insert_with(|| sa.position_bias(cfg, 0..t, t, true, &device) + mask_add.clone()).clone();
                    let (q, k, v) = (sa.heads(cfg, &sa.q, y.clone()), sa.heads(cfg, &sa.k, y.clone()), sa.heads(cfg, &sa.v, y));
                    x = x + sa.attend(cfg, q, k, v, b);
                } else if let Some(ff) = &sub.dense_relu_dense {
                    x = x + ff.forward(cfg, y);
                }
            }
        }
        self.encoder.final_layer_norm.forward(x, eps)
    }

    /// A cache for decoding against `encoded` [N, T, d] with its 0/1 mask.
    pub fn start_decoding(&self, cfg: &T5Config, encoded: Tensor<3>, mask: &[Vec<u8>]) -> DecoderCache {
        let device = encoded.device();
        let mut cross_k = Vec::new();
        let mut cross_v = Vec::new();
        for block in &self.decoder.block {
            for sub in &block.layer {
                if let Some(ca) = &sub.enc_dec_attention {
                    cross_k.push(ca.heads(cfg, &ca.k, encoded.clone()));
                    cross_v.push(ca.heads(cfg, &ca.v, encoded.clone()));
                }
            }
        }
        DecoderCache {
            self_k: Vec::new(),
            self_v: Vec::new(),
            cross_k,
            cross_v,
            enc_mask: super::qformer::additive_mask(mask, &device),
            len: 0,
        }
    }

    /// The decoder with teacher forcing (training): logits [B, T, V] for decoder inputs [B, T]
    /// (the targets shifted right behind the start token) against `encoded` [B, Te, d] and its
    /// 0/1 mask. Causal self-attention with the unidirectional position bias, as transformers'
    /// `T5ForConditionalGeneration` computes it when given `labels`; every position is computed
    /// (padding positions are ignored by the loss, not here).
    pub fn decode_train(&self, cfg: &T5Config, decoder_ids: Tensor<2, Int>, encoded: Tensor<3>, mask: &[Vec<u8>]) -> Tensor<3> {
        let [b, t] = decoder_ids.dims();
        let device = encoded.device();
        let eps = cfg.layer_norm_epsilon;
        let enc_mask = super::qformer::additive_mask(mask, &device);
        let causal: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
        let causal = Tensor::<2>::from_data(TensorData::new(causal, [t, t]), &device).unsqueeze::<4>();
        let mut x = embed(&self.shared, decoder_ids);
        let mut bias: Option<Tensor<4>> = None;
        for block in &self.decoder.block {
            for sub in &block.layer {
                let y = sub.layer_norm.forward(x.clone(), eps);
                if let Some(sa) = &sub.self_attention {
                    let bb = bias.get_or_insert_with(|| sa.position_bias(cfg, 0..t, t, false, &device) + causal.clone()).clone();
                    let (q, k, v) = (sa.heads(cfg, &sa.q, y.clone()), sa.heads(cfg, &sa.k, y.clone()), sa.heads(cfg, &sa.v, y));
                    x = x + sa.attend(cfg, q, k, v, bb);
                } else if let Some(ca) = &sub.enc_dec_attention {
                    let q = ca.heads(cfg, &ca.q, y);
                    let (k, v) = (ca.heads(cfg, &ca.k, encoded.clone()), ca.heads(cfg, &ca.v, encoded.clone()));
                    x = x + ca.attend(cfg, q, k, v, enc_mask.clone());
                } else if let Some(ff) = &sub.dense_relu_dense {
                    x = x + ff.forward(cfg, y);
                }
            }
        }
        let mut h = self.decoder.final_layer_norm.forward(x, eps);
        if cfg.scale_decoder_outputs {
            h = h.mul_scalar((cfg.d_model as f64).powf(-0.5));
        }
        match &self.lm_head {
            Some(head) => linear(head, h),
            None => {
                let [_, _, d] = h.dims();
                matmul_weight(h.reshape([b * t, d]), self.shared.weight.val()).reshape([b, t, cfg.vocab_size])
            }
        }
    }

    /// One decoding step: the next-token logits [N, V] after feeding `ids` (one per row).
    pub fn decode_step(&self, cfg: &T5Config, ids: &[u32], cache: &mut DecoderCache) -> Tensor<2> {
        let device = cache.enc_mask.device();
        let n = ids.len();
        let eps = cfg.layer_norm_epsilon;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|i| *i as i64).collect::<Vec<_>>(), [n, 1]), &device);
        let mut x = embed(&self.shared, ids);
        let pos = cache.len;
        let first_step = cache.self_k.is_empty();
        let mut bias: Option<Tensor<4>> = None;
        let (mut si, mut ci) = (0usize, 0usize);
        for block in &self.decoder.block {
            for sub in &block.layer {
                let y = sub.layer_norm.forward(x.clone(), eps);
                if let Some(sa) = &sub.self_attention {
                    let b = bias.get_or_insert_with(|| sa.position_bias(cfg, pos..pos + 1, pos + 1, false, &device)).clone();
                    let q = sa.heads(cfg, &sa.q, y.clone());
                    let k_new = sa.heads(cfg, &sa.k, y.clone());
                    let v_new = sa.heads(cfg, &sa.v, y);
                    let (k, v) = if first_step {
                        cache.self_k.push(k_new.clone());
                        cache.self_v.push(v_new.clone());
                        (k_new, v_new)
                    } else {
                        let k = Tensor::cat(vec![cache.self_k[si].clone(), k_new], 2);
                        let v = Tensor::cat(vec![cache.self_v[si].clone(), v_new], 2);
                        cache.self_k[si] = k.clone();
                        cache.self_v[si] = v.clone();
                        (k, v)
                    };
                    si += 1;
                    x = x + sa.attend(cfg, q, k, v, b);
                } else if let Some(ca) = &sub.enc_dec_attention {
                    let q = ca.heads(cfg, &ca.q, y);
                    x = x + ca.attend(cfg, q, cache.cross_k[ci].clone(), cache.cross_v[ci].clone(), cache.enc_mask.clone());
                    ci += 1;
                } else if let Some(ff) = &sub.dense_relu_dense {
                    x = x + ff.forward(cfg, y);
                }
            }
        }
        cache.len += 1;
        let mut h = self.decoder.final_layer_norm.forward(x, eps);
        if cfg.scale_decoder_outputs {
            h = h.mul_scalar((cfg.d_model as f64).powf(-0.5));
        }
        let h = h.reshape([n, cfg.d_model]);
        match &self.lm_head {
            Some(head) => linear(head, h),
            None => matmul_weight(h, self.shared.weight.val()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn buckets_match_transformers() {
        // values computed with transformers' T5Attention._relative_position_bucket (32 buckets, 128)
        let bi = |rp| relative_bucket(rp, true, 32, 128);
        assert_eq!([bi(0), bi(1), bi(-1), bi(7), bi(8), bi(-8), bi(20), bi(-200), bi(200)], [0, 17, 1, 23, 24, 8, 26, 15, 31]);
        let uni = |rp| relative_bucket(rp, false, 32, 128);
        assert_eq!([uni(0), uni(-1), uni(-15), uni(-16), uni(-40), uni(-1000), uni(5)], [0, 1, 15, 16, 23, 31, 0]);
    }
}
