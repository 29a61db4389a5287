//! The EVA-CLIP ViT vision encoder (the release's ViT-g: 39 of its 40 blocks, then `ln_vision`).
//! Module paths are transformers' `InstructBlipVisionModel` names (`embeddings.{class_embedding,
//! patch_embedding,position_embedding}`, `encoder.layers.N.{layer_norm1, self_attn.{qkv, q_bias,
//! v_bias, projection}, layer_norm2, mlp.{fc1,fc2}}`, `post_layernorm`), so HF checkpoints load
//! by name; [`super::weights`] maps the release's EVA names onto them.

use super::config::VisionConfig;
use crate::fpn::face_vit::Init;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, softmax};

#[derive(Module, Debug)]
pub struct VisionEmbeddings {
    pub class_embedding: Param<Tensor<3>>,
    pub patch_embedding: Conv2d,
    pub position_embedding: Param<Tensor<3>>,
}

/// Packed q|k|v projection, its bias either packed in `qkv` (transformers 5) or as the separate
/// q and v biases (EVA, transformers 4; k's is zero).
#[derive(Module, Debug)]
pub struct EvaAttention {
    pub qkv: Linear,
    pub q_bias: Option<Param<Tensor<1>>>,
    pub v_bias: Option<Param<Tensor<1>>>,
    pub projection: Linear,
}

#[derive(Module, Debug)]
pub struct EvaMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct EvaLayer {
    pub self_attn: EvaAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: EvaMlp,
    pub layer_norm2: LayerNorm,
}

#[derive(Module, Debug)]
pub struct VisionEncoder {
    pub layers: Vec<EvaLayer>,
}

#[derive(Module, Debug)]
pub struct VisionModel {
    pub embeddings: VisionEmbeddings,
    pub encoder: VisionEncoder,
    pub post_layernorm: LayerNorm,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, init: &mut Init) -> Self {
        let d = cfg.hidden_size;
        let embeddings = VisionEmbeddings {
            class_embedding: init.trunc_normal([1, 1, d], 0.02),
            patch_embedding: init.conv2d(3, d, cfg.patch_size, cfg.patch_size, 0, true),
            position_embedding: init.trunc_normal([1, cfg.num_patches() + 1, d], 0.02),
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| EvaLayer {
                self_attn: EvaAttention {
                    qkv: if cfg.qkv_bias && cfg.packed_qkv_bias { init.linear(d, 3 * d) } else { init.linear_no_bias(d, 3 * d) },
                    q_bias: (cfg.qkv_bias && !cfg.packed_qkv_bias).then(|| init.constant([d], 0.0)),
                    v_bias: (cfg.qkv_bias && !cfg.packed_qkv_bias).then(|| init.constant([d], 0.0)),
                    projection: init.linear(d, d),
                },
                layer_norm1: init.layer_norm(d, cfg.layer_norm_eps),
                mlp: EvaMlp { fc1: init.linear(d, cfg.intermediate_size), fc2: init.linear(cfg.intermediate_size, d) },
                layer_norm2: init.layer_norm(d, cfg.layer_norm_eps),
            })
            .collect();
        VisionModel { embeddings, encoder: VisionEncoder { layers }, post_layernorm: init.layer_norm(d, cfg.post_layernorm_eps) }
    }

    /// The encoder with bf16 weights as LAVIS's `convert_weights_to_fp16` makes EVA: the patch
    /// convolution, the attention (`qkv`, `q_bias`, `v_bias`, `projection`) and the MLP; the
    /// class and position embeddings and the layer norms (which LAVIS computes in float32) and
    /// `post_layernorm` (`ln_vision`, trained in stage 2) stay float32.
    pub fn with_bf16_weights(self) -> Self {
        let mut to = crate::precision::ToBf16;
        let VisionModel { mut embeddings, encoder, post_layernorm } = self;
        embeddings.patch_embedding = embeddings.patch_embedding.map(&mut to);
        let layers =
            encoder.layers.into_iter().map(|l| EvaLayer { self_attn: l.self_attn.map(&mut to), mlp: l.mlp.map(&mut to), ..l }).collect();
        VisionModel { embeddings, encoder: VisionEncoder { layers }, post_layernorm }
    }

    /// Image embeddings [B, 1 + patches, D] (after `post_layernorm`) for pixels [B, 3, S, S].
    pub fn forward(&self, cfg: &VisionConfig, pixels: Tensor<4>) -> Tensor<3> {
        self.post_layernorm.forward(self.features(cfg, pixels))
    }

    /// The encoder's output before `post_layernorm` (the release's `ln_vision`, which stage 2
    /// trains): what the trainer computes once per image and caches when EVA is frozen.
    pub fn features(&self, cfg: &VisionConfig, pixels: Tensor<4>) -> Tensor<3> {
        let [b, _, _, _] = pixels.dims();
        let d = cfg.hidden_size;
        let n = cfg.num_patches();
        let e = &self.embeddings;
        let patches = crate::precision::conv2d(&e.patch_embedding, pixels).reshape([b, d, n]).swap_dims(1, 2);
        let cls = e.class_embedding.val().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + e.position_embedding.val();
        for layer in &self.encoder.layers {
            x = layer.forward(cfg, x);
        }
        x
    }
}

impl EvaLayer {
    fn forward(&self, cfg: &VisionConfig, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let heads = cfg.num_attention_heads;
        let hd = cfg.head_dim();
        let y = self.layer_norm1.forward(x.clone());
        let a = &self.self_attn;
        let mut qkv = crate::precision::linear(&a.qkv, y);
        if let (Some(qb), Some(vb)) = (&a.q_bias, &a.v_bias) {
            let bias = Tensor::cat(vec![qb.val(), qb.val().zeros_like(), vb.val()], 0);
            qkv = qkv + crate::precision::cast(bias, burn::tensor::DType::F32).unsqueeze::<3>();
        }
        // [B, T, 3, H, hd] -> three [B, H, T, hd]
        let qkv = qkv.reshape([b, t, 3, heads, hd]);
        let part = |i: usize| qkv.clone().slice([0..b, 0..t, i..i + 1, 0..heads, 0..hd]).reshape([b, t, heads, hd]).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar((hd as f64).powf(-0.5));
        let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        let x = x + crate::precision::linear(&a.projection, ctx);
        let y = self.layer_norm2.forward(x.clone());
        x + crate::precision::linear(&self.mlp.fc2, gelu(crate::precision::linear(&self.mlp.fc1, y)))
    }
}
