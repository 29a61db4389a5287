//! The release's mask branch (spec 1.6): the region words' T5 embeddings, `prompt_proj` to the
//! vision width, `cross_attention_layer` (PyTorch `nn.MultiheadAttention`, packed q|k|v
//! projection) over the patch tokens, the CLS token prepended, then the SAM-style two-way
//! transformer `mask_decoder` whose keys are their own positional encoding and whose single
//! query is the mask token; an upscaling MLP to `mask_size`^2 values per token and a
//! hypernetwork MLP to one weight per token give the mask logits, returned as sigmoid
//! probabilities. Module paths are the release's names.

use super::config::MaskBranchConfig;
use crate::fpn::face_vit::Init;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid, softmax};

/// `nn.MultiheadAttention` with its packed input projection, kept in PyTorch's [3D, D] layout.
#[derive(Module, Debug)]
pub struct PackedMultiheadAttention {
    pub in_proj_weight: Param<Tensor<2>>,
    pub in_proj_bias: Param<Tensor<1>>,
    pub out_proj: Linear,
}

/// SAM's `Attention` (optionally narrower inside: `downsample_rate`).
#[derive(Module, Debug)]
pub struct SamAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

#[derive(Module, Debug)]
pub struct SamMlp {
    pub lin1: Linear,
    pub lin2: Linear,
}

#[derive(Module, Debug)]
pub struct TwoWayBlock {
    pub self_attn: SamAttention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: SamAttention,
    pub norm2: LayerNorm,
    pub mlp: SamMlp,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: SamAttention,
}

#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    pub layers: Vec<TwoWayBlock>,
    pub final_attn_token_to_image: SamAttention,
    pub norm_final_attn: LayerNorm,
}

/// A stack of linear layers with ReLU between them (none after the last).
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub mask_tokens: Param<Tensor<3>>,
    pub transformer: TwoWayTransformer,
    pub output_upscaling_mlp: Mlp,
    pub output_hypernetworks_mlps: Mlp,
}

#[derive(Module, Debug)]
pub struct MaskBranch {
    pub prompt_proj: Linear,
    pub cross_attention_layer: PackedMultiheadAttention,
    pub mask_decoder: MaskDecoder,
}

fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, c] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * c])
}

fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, _, c] = q.dims();
    softmax(q.matmul(k.swap_dims(2, 3)).div_scalar((c as f64).sqrt()), 3).matmul(v)
}

impl SamAttention {
    fn new(d: usize, downsample: usize, init: &mut Init) -> Self {
        let inner = d / downsample;
        SamAttention {
            q_proj: init.linear(d, inner),
            k_proj: init.linear(d, inner),
            v_proj: init.linear(d, inner),
            out_proj: init.linear(inner, d),
        }
    }
    fn forward(&self, heads: usize, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = split_heads(self.q_proj.forward(q), heads);
        let k = split_heads(self.k_proj.forward(k), heads);
        let v = split_heads(self.v_proj.forward(v), heads);
        self.out_proj.forward(merge_heads(attention(q, k, v)))
    }
}

impl PackedMultiheadAttention {
    /// `query` [B, Lq, D] over `kv` [B, Lk, D] (batch first here; PyTorch's is sequence first).
    pub(crate) fn forward(&self, heads: usize, query: Tensor<3>, kv: Tensor<3>) -> Tensor<3> {
        let [_, _, d] = query.dims();
        let w = self.in_proj_weight.val();
        let bias = self.in_proj_bias.val();
        let proj = |x: Tensor<3>, i: usize| {
            let [b, l, _] = x.dims();
            let wi = w.clone().slice([i * d..(i + 1) * d, 0..d]).transpose();
            let bi = bias.clone().narrow(0, i * d, d).unsqueeze::<2>();
            (x.reshape([b * l, d]).matmul(wi) + bi).reshape([b, l, d])
        };
        let q = split_heads(proj(query, 0), heads);
        let k = split_heads(proj(kv.clone(), 1), heads);
        let v = split_heads(proj(kv, 2), heads);
        self.out_proj.forward(merge_heads(attention(q, k, v)))
    }
}

impl Mlp {
    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(x);
            if i + 1 < n {
                x = relu(x);
            }
        }
        x
    }
}

impl TwoWayBlock {
    fn forward(
        &self,
        heads: usize,
        skip_first_pe: bool,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if skip_first_pe {
            self.self_attn.forward(heads, queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(heads, q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);
        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = self.norm2.forward(queries + self.cross_attn_token_to_image.forward(heads, q, k, keys.clone()));
        let queries = self.norm3.forward(queries.clone() + self.mlp.lin2.forward(relu(self.mlp.lin1.forward(queries))));
        let q = queries.clone() + query_pe;
        let k = keys.clone() + key_pe;
        let keys = self.norm4.forward(keys + self.cross_attn_image_to_token.forward(heads, k, q, queries.clone()));
        (queries, keys)
    }
}

impl MaskBranch {
    /// `text_width`: T5's d_model; `d`: the vision width.
    pub fn new(cfg: &MaskBranchConfig, text_width: usize, d: usize, init: &mut Init) -> Self {
        let eps = 1e-5;
        let layers = (0..cfg.depth)
            .map(|_| TwoWayBlock {
                self_attn: SamAttention::new(d, 1, init),
                norm1: init.layer_norm(d, eps),
                cross_attn_token_to_image: SamAttention::new(d, cfg.downsample_rate, init),
                norm2: init.layer_norm(d, eps),
                mlp: SamMlp { lin1: init.linear(d, cfg.mlp_dim), lin2: init.linear(cfg.mlp_dim, d) },
                norm3: init.layer_norm(d, eps),
                norm4: init.layer_norm(d, eps),
                cross_attn_image_to_token: SamAttention::new(d, cfg.downsample_rate, init),
            })
            .collect();
        let tokens = cfg.label_tokens + 1;
        MaskBranch {
            prompt_proj: init.linear(text_width, d),
            cross_attention_layer: PackedMultiheadAttention {
                in_proj_weight: init.trunc_normal([3 * d, d], 0.02),
                in_proj_bias: init.constant([3 * d], 0.0),
                out_proj: init.linear(d, d),
            },
            mask_decoder: MaskDecoder {
                mask_tokens: init.trunc_normal([1, 1, d], 0.02),
                transformer: TwoWayTransformer {
                    layers,
                    final_attn_token_to_image: SamAttention::new(d, cfg.downsample_rate, init),
                    norm_final_attn: init.layer_norm(d, eps),
                },
                output_upscaling_mlp: Mlp {
                    layers: vec![init.linear(d, d), init.linear(d, d), init.linear(d, cfg.mask_size * cfg.mask_size)],
                },
                output_hypernetworks_mlps: Mlp { layers: vec![init.linear(d, d), init.linear(d, d), init.linear(d, tokens)] },
            },
        }
    }

    /// Mask probabilities [B, S, S] from the image embeddings [B, 1 + P, D] and the label tokens'
    /// T5 embeddings [B, label_tokens, d_text] (the sigmoid of [`Self::logits`], as the release
    /// returns them).
    pub fn forward(&self, cfg: &MaskBranchConfig, image: Tensor<3>, label_embeds: Tensor<3>) -> Tensor<3> {
        sigmoid(self.logits(cfg, image, label_embeds))
    }

    /// Mask logits [B, S, S] (what the training loss takes).
    pub fn logits(&self, cfg: &MaskBranchConfig, image: Tensor<3>, label_embeds: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = image.dims();
        let prompt = self.prompt_proj.forward(label_embeds);
        let patches = image.clone().slice([0..b, 1..n, 0..d]);
        let attended = self.cross_attention_layer.forward(cfg.cross_heads, prompt, patches);
        let x = Tensor::cat(vec![image.slice([0..b, 0..1, 0..d]), attended], 1);
        let md = &self.mask_decoder;
        let token = md.mask_tokens.val().expand([b, 1, d]);
        let t = &md.transformer;
        let (mut queries, mut keys) = (token.clone(), x.clone());
        for (i, layer) in t.layers.iter().enumerate() {
            (queries, keys) = layer.forward(cfg.heads, i == 0, queries, keys, token.clone(), x.clone());
        }
        let q = queries.clone() + token;
        let k = keys.clone() + x;
        let queries = t.norm_final_attn.forward(queries + t.final_attn_token_to_image.forward(cfg.heads, q, k, keys.clone()));
        let upscaled = md.output_upscaling_mlp.forward(keys); // [B, 22, S*S]
        let hyper = md.output_hypernetworks_mlps.forward(queries); // [B, 1, 22]
        let s = cfg.mask_size;
        hyper.matmul(upscaled).reshape([b, s, s])
    }
}
