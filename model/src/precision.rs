//! Frozen parts with bfloat16 weights ("bf16 frozen parts", issue 16), as LAVIS runs EVA and T5
//! under autocast: the weights of linear layers, embeddings and convolutions are held in bf16
//! (half the memory of the frozen 1B + 3B parameters at full size) and their products computed
//! in bf16; everything between them (the residual stream, norms, softmax, position biases, the
//! gradient that flows through a frozen T5) stays float32, so modules in either dtype take and
//! give float32 activations.
//!
//! [`linear`], [`embed`], [`conv2d`] and [`matmul_weight`] are the layer calls the EVA and T5
//! code use: with float32 weights they are the plain calls; with bf16 weights they cast the input
//! to bf16 and the output back. [`ToBf16`] converts a module's float parameters.

use burn::module::{ModuleMapper, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, Int, Tensor};
use serde::{Deserialize, Serialize};

/// The dtype the frozen parts' weights are held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// bf16 when training on GPUs, float32 on the CPU (the default).
    #[default]
    Auto,
    /// float32 everywhere (the CPU tests' reference).
    F32,
    /// bfloat16 weights, float32 activations between the layers.
    Bf16,
}

impl WeightDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightDtype::Auto => "auto",
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
        }
    }

    /// `Auto` made definite: bf16 when any device is a GPU (`on_gpu`).
    pub fn resolve(self, on_gpu: bool) -> WeightDtype {
        match self {
            WeightDtype::Auto if on_gpu => WeightDtype::Bf16,
            WeightDtype::Auto => WeightDtype::F32,
            d => d,
        }
    }
}

/// `t` in `dtype` (no copy when it already is).
pub fn cast<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `l(x)` computed in the weight's dtype, returned in `x`'s.
pub fn linear<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    let (w, dt) = (l.weight.val().dtype(), x.dtype());
    if w == dt { l.forward(x) } else { l.forward(x.cast(w)).cast(dt) }
}

/// Embedding rows of `ids`, in float32.
pub fn embed(e: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    cast(e.forward(ids), DType::F32)
}

/// `c(x)` computed in the weight's dtype, returned in `x`'s.
pub fn conv2d(c: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (w, dt) = (c.weight.val().dtype(), x.dtype());
    if w == dt { c.forward(x) } else { c.forward(x.cast(w)).cast(dt) }
}

/// `x @ wᵀ` (a tied output projection) in `w`'s dtype, returned in `x`'s.
pub fn matmul_weight(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let dt = x.dtype();
    let wd = w.dtype();
    cast(cast(x, wd).matmul(w.transpose()), dt)
}

/// Casts every float parameter of a module to bf16 (frozen modules only: an optimizer keeps
/// float32 master weights of what it trains).
pub struct ToBf16;

impl ModuleMapper for ToBf16 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| cast(t, DType::BF16))
    }
}
