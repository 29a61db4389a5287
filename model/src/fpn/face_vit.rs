//! The Face-ViT region classifier (the paper's Forgery Prompter Network) in burn: a ViT whose
//! module tree mirrors Hugging Face's `ViTForImageClassification` (`vit.embeddings`,
//! `vit.encoder.layer.N.{layernorm_before, attention.attention.{query,key,value},
//! attention.output.dense, layernorm_after, intermediate.dense, output.dense}`, `vit.layernorm`,
//! `classifier`), so that the checkpoint's tensor names are the module paths, plus the authors'
//! convolution branch (`conv_branch`), added to the patch tokens before blocks 0 and 1.
//!
//! Dropout masks come from a caller-seeded ChaCha stream ([`Noise`]), not from the device's
//! generator: a training step is a pure function of (weights, batch, seed, step), which is what
//! makes a resumed run equal an uninterrupted one bit for bit.

use super::FpnConfig;
use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, leaky_relu, relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Builds parameters from a seeded stream with deterministic [`ParamId`]s (in construction order),
/// so that an optimizer state saved by one process applies to the model another process builds.
pub struct Init {
    rng: ChaCha8Rng,
    next_id: u64,
    device: Device,
    /// Zeros instead of random values: the tensors are about to be loaded from a file.
    zeros: bool,
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Self {
        Init { rng: ChaCha8Rng::seed_from_u64(seed), next_id: 1, device: device.clone(), zeros: false }
    }
    /// For a model whose every tensor is then loaded: no random numbers are drawn.
    pub fn for_loading(device: &Device) -> Self {
        Init { zeros: true, ..Self::new(0, device) }
    }
    pub(crate) fn id(&mut self) -> ParamId {
        let id = ParamId::from(self.next_id);
        self.next_id += 1;
        id
    }
    pub(crate) fn tensor<const D: usize>(&mut self, shape: [usize; D], mut draw: impl FnMut(&mut ChaCha8Rng) -> f32) -> Param<Tensor<D>> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if self.zeros { vec![0.0; n] } else { (0..n).map(|_| draw(&mut self.rng)).collect() };
        let t = Tensor::<D>::from_data(TensorData::new(values, shape), &self.device);
        self.param(t)
    }
    /// A trainable parameter (gradients on when the device is an autodiff one) with the next id.
    pub(crate) fn param<const D: usize>(&mut self, t: Tensor<D>) -> Param<Tensor<D>> {
        let mut p = Param::from_tensor(t);
        p.id = self.id();
        p
    }
    /// Normal(0, std) truncated at two standard deviations (transformers' ViT init).
    pub(crate) fn trunc_normal<const D: usize>(&mut self, shape: [usize; D], std: f32) -> Param<Tensor<D>> {
        self.tensor(shape, |r| {
            loop {
                let u1: f32 = r.random::<f32>().max(f32::MIN_POSITIVE);
                let u2: f32 = r.random();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
                if z.abs() <= 2.0 {
                    break z * std;
                }
            }
        })
    }
    pub(crate) fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Param<Tensor<D>> {
        self.tensor(shape, |r| (r.random::<f32>() * 2.0 - 1.0) * bound)
    }
    pub(crate) fn constant<const D: usize>(&mut self, shape: [usize; D], v: f32) -> Param<Tensor<D>> {
        let n: usize = shape.iter().product();
        let t = Tensor::<D>::from_data(TensorData::new(vec![v; n], shape), &self.device);
        self.param(t)
    }
    /// Linear layer, weight [in, out] ~ truncated normal(0.02), zero bias.
    pub(crate) fn linear(&mut self, d_in: usize, d_out: usize) -> Linear {
        let mut l = LinearConfig::new(d_in, d_out).init(&self.device);
        l.weight = self.trunc_normal([d_in, d_out], 0.02);
        l.bias = Some(self.constant([d_out], 0.0));
        l
    }
    pub(crate) fn layer_norm(&mut self, d: usize, eps: f64) -> LayerNorm {
        let mut n = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        n.gamma = self.constant([d], 1.0);
        n.beta = Some(self.constant([d], 0.0));
        n
    }
    /// Conv2d with PyTorch's default init (uniform ±1/sqrt(fan_in) for weight and bias), or the
    /// ViT's truncated normal for the patch projection.
    pub(crate) fn conv2d(&mut self, c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize, vit_init: bool) -> Conv2d {
        let mut c = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(&self.device);
        let bound = 1.0 / ((c_in * k * k) as f32).sqrt();
        c.weight = if vit_init { self.trunc_normal([c_out, c_in, k, k], 0.02) } else { self.uniform([c_out, c_in, k, k], bound) };
        c.bias = Some(if vit_init { self.constant([c_out], 0.0) } else { self.uniform([c_out], bound) });
        c
    }
    /// Linear layer without bias (T5's).
    pub(crate) fn linear_no_bias(&mut self, d_in: usize, d_out: usize) -> Linear {
        let mut l = LinearConfig::new(d_in, d_out).with_bias(false).init(&self.device);
        l.weight = self.trunc_normal([d_in, d_out], 0.02);
        l
    }
    /// Embedding table [n, d] ~ truncated normal(0.02).
    pub(crate) fn embedding(&mut self, n: usize, d: usize) -> burn::nn::Embedding {
        let mut e = burn::nn::EmbeddingConfig::new(n, d).init(&self.device);
        e.weight = self.trunc_normal([n, d], 0.02);
        e
    }
    pub(crate) fn batch_norm(&mut self, c: usize) -> BatchNorm {
        let mut b = BatchNormConfig::new(c).with_epsilon(1e-5).with_momentum(0.1).init(&self.device);
        b.gamma = self.constant([c], 1.0);
        b.beta = self.constant([c], 0.0);
        b
    }
}

/// The dropout stream of one forward pass. `Noise::off()` at inference.
pub struct Noise {
    rng: Option<ChaCha8Rng>,
}

impl Noise {
    pub fn off() -> Self {
        Noise { rng: None }
    }
    /// The stream of training step `step` of a run seeded `seed`.
    pub fn for_step(seed: u64, step: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..24].copy_from_slice(b"dropout!");
        Noise { rng: Some(ChaCha8Rng::from_seed(key)) }
    }
    fn dropout<const D: usize>(&mut self, x: Tensor<D>, p: f64) -> Tensor<D> {
        let Some(rng) = self.rng.as_mut() else { return x };
        if p <= 0.0 {
            return x;
        }
        let shape = x.dims();
        let n: usize = shape.iter().product();
        let keep = 1.0 / (1.0 - p) as f32;
        let mask: Vec<f32> = (0..n).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep }).collect();
        let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask
    }
}

#[derive(Module, Debug)]
pub struct PatchEmbeddings {
    pub projection: Conv2d,
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub cls_token: Param<Tensor<3>>,
    pub position_embeddings: Param<Tensor<3>>,
    pub patch_embeddings: PatchEmbeddings,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct Dense {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Attention {
    pub attention: SelfAttention,
    pub output: Dense,
}

#[derive(Module, Debug)]
pub struct Layer {
    pub layernorm_before: LayerNorm,
    pub attention: Attention,
    pub layernorm_after: LayerNorm,
    pub intermediate: Dense,
    pub output: Dense,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layer: Vec<Layer>,
}

#[derive(Module, Debug)]
pub struct VitModel {
    pub embeddings: Embeddings,
    pub encoder: Encoder,
    pub layernorm: LayerNorm,
}

/// The authors' two convolution scales (`coord_conv_branch`, `conv_branch2`).
#[derive(Module, Debug)]
pub struct ConvBranch {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub pool: MaxPool2d,
}

#[derive(Module, Debug)]
pub struct FaceVit {
    pub vit: VitModel,
    pub classifier: Linear,
    pub conv_branch: Option<ConvBranch>,
}

/// PyTorch's `adaptive_avg_pool1d` as a matrix [n, l]: row i averages the inputs
/// floor(i*l/n) .. ceil((i+1)*l/n).
pub fn adaptive_pool_matrix(l: usize, n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * l];
    for i in 0..n {
        let start = (i * l) / n;
        let end = ((i + 1) * l).div_ceil(n);
        let w = 1.0 / (end - start) as f32;
        for j in start..end {
            m[i * l + j] = w;
        }
    }
    m
}

impl FaceVit {
    pub fn new(cfg: &FpnConfig, init: &mut Init) -> Self {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let embeddings = Embeddings {
            cls_token: init.trunc_normal([1, 1, h], 0.02),
            position_embeddings: init.trunc_normal([1, cfg.num_patches() + 1, h], 0.02),
            patch_embeddings: PatchEmbeddings { projection: init.conv2d(cfg.num_channels, h, cfg.patch_size, cfg.patch_size, 0, true) },
        };
        let layer = (0..cfg.num_hidden_layers)
            .map(|_| Layer {
                layernorm_before: init.layer_norm(h, eps),
                attention: Attention {
                    attention: SelfAttention { query: init.linear(h, h), key: init.linear(h, h), value: init.linear(h, h) },
                    output: Dense { dense: init.linear(h, h) },
                },
                layernorm_after: init.layer_norm(h, eps),
                intermediate: Dense { dense: init.linear(h, cfg.intermediate_size) },
                output: Dense { dense: init.linear(cfg.intermediate_size, h) },
            })
            .collect();
        let vit = VitModel { embeddings, encoder: Encoder { layer }, layernorm: init.layer_norm(h, eps) };
        let classifier = init.linear(h, cfg.num_labels);
        let conv_branch = cfg.conv_branch.then(|| ConvBranch {
            conv1: init.conv2d(7, h, 3, 2, 1, false),
            bn1: init.batch_norm(h),
            conv2: init.conv2d(h, h, 5, 2, 2, false),
            bn2: init.batch_norm(h),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        });
        FaceVit { vit, classifier, conv_branch }
    }

    /// Logits [B, 21] for normalised pixels [B, 3, S, S].
    pub fn forward(&self, cfg: &FpnConfig, pixels: Tensor<4>, noise: &mut Noise) -> Tensor<2> {
        let [b, _, _, _] = pixels.dims();
        let h = cfg.hidden_size;
        let n = cfg.num_patches();
        let conv_feats = self.conv_branch.as_ref().map(|cb| cb.forward(pixels.clone(), n));

        let emb = &self.vit.embeddings;
        let patches = emb.patch_embeddings.projection.forward(pixels).reshape([b, h, n]).swap_dims(1, 2);
        let cls = emb.cls_token.val().expand([b, 1, h]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + emb.position_embeddings.val();
        x = noise.dropout(x, cfg.hidden_dropout_prob);

        let add_to_patches = |x: Tensor<3>, f: Tensor<3>| {
            let cls = x.clone().slice([0..b, 0..1, 0..h]);
            let rest = x.slice([0..b, 1..n + 1, 0..h]) + f;
            Tensor::cat(vec![cls, rest], 1)
        };
        let (mut f1, mut f2) = match conv_feats {
            Some((f1, f2)) => (Some(f1), Some(f2)),
            None => (None, None),
        };
        for (i, layer) in self.vit.encoder.layer.iter().enumerate() {
            if i == 0
                && let Some(f) = f1.take()
            {
                x = add_to_patches(x, f);
            }
            if i == 1
                && let Some(f) = f2.take()
            {
                x = add_to_patches(x, f);
            }
            x = layer.forward(cfg, x, noise);
        }
        let x = self.vit.layernorm.forward(x);
        let cls = x.slice([0..b, 0..1, 0..h]).reshape([b, h]);
        self.classifier.forward(cls)
    }
}

impl Layer {
    fn forward(&self, cfg: &FpnConfig, x: Tensor<3>, noise: &mut Noise) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let heads = cfg.num_attention_heads;
        let hd = cfg.head_dim();
        let y = self.layernorm_before.forward(x.clone());
        let split = |l: &Linear| l.forward(y.clone()).reshape([b, t, heads, hd]).swap_dims(1, 2);
        let a = &self.attention.attention;
        let (q, k, v) = (split(&a.query), split(&a.key), split(&a.value));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt());
        let probs = noise.dropout(softmax(scores, 3), cfg.attention_probs_dropout_prob);
        let ctx = probs.matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        let attn = noise.dropout(self.attention.output.dense.forward(ctx), cfg.hidden_dropout_prob);
        let x = x + attn;
        let y = self.layernorm_after.forward(x.clone());
        let y = gelu(self.intermediate.dense.forward(y));
        let y = noise.dropout(self.output.dense.forward(y), cfg.hidden_dropout_prob);
        x + y
    }
}

impl ConvBranch {
    /// The two scales as token sequences [B, n, C], each resized from its raster-order length
    /// with PyTorch's 1-D adaptive average pooling.
    fn forward(&self, pixels: Tensor<4>, n: usize) -> (Tensor<3>, Tensor<3>) {
        let [b, _, sh, sw] = pixels.dims();
        let device = pixels.device();
        // [R, G, B, row, col, row, col]: AddCoords, then CoordConv adds the same two again.
        let row: Vec<f32> = (0..sh * sw).map(|p| (p / sw) as f32 / (sh.max(2) - 1) as f32 * 2.0 - 1.0).collect();
        let col: Vec<f32> = (0..sh * sw).map(|p| (p % sw) as f32 / (sw.max(2) - 1) as f32 * 2.0 - 1.0).collect();
        let row = Tensor::<4>::from_data(TensorData::new(row, [1, 1, sh, sw]), &device).expand([b, 1, sh, sw]);
        let col = Tensor::<4>::from_data(TensorData::new(col, [1, 1, sh, sw]), &device).expand([b, 1, sh, sw]);
        let x = Tensor::cat(vec![pixels, row.clone(), col.clone(), row, col], 1);
        let f1 = self.pool.forward(leaky_relu(self.bn1.forward(self.conv1.forward(x)), 0.01));
        let f2 = self.pool.forward(relu(self.bn2.forward(self.conv2.forward(f1.clone()))));
        (to_tokens(f1, n), to_tokens(f2, n))
    }
}

fn to_tokens(f: Tensor<4>, n: usize) -> Tensor<3> {
    let [b, c, fh, fw] = f.dims();
    let l = fh * fw;
    let m = Tensor::<2>::from_data(TensorData::new(adaptive_pool_matrix(l, n), [n, l]), &f.device());
    // [B, C, L] x [L, n] -> [B, C, n] -> [B, n, C]
    let seq = f.reshape([b, c, l]);
    seq.matmul(m.transpose().unsqueeze::<3>().expand([b, l, n])).swap_dims(1, 2)
}

#[cfg(test)]
mod tests {
    use super::adaptive_pool_matrix;

    #[test]
    fn pool_bins_match_pytorch_both_ways() {
        // down: l=5, n=3 -> bins [0,2), [1,4), [3,5)
        let m = adaptive_pool_matrix(5, 3);
        assert_eq!(&m[0..5], &[0.5, 0.5, 0.0, 0.0, 0.0]);
        let third = 1.0 / 3.0;
        assert_eq!(&m[5..10], &[0.0, third, third, third, 0.0]);
        assert_eq!(&m[10..15], &[0.0, 0.0, 0.0, 0.5, 0.5]);
        // up: l=2, n=4 -> bins [0,1), [0,1), [1,2), [1,2)
        let m = adaptive_pool_matrix(2, 4);
        assert_eq!(m, vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    }
}
