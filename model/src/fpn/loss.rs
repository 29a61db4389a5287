//! The FPN's training losses on logits `[B, 21]` and 0/1 targets `[B, 21]`.
//!
//! - [`LossConfig::Paper`]: the paper's `(L_BCE + L_Dice) / 2`, with
//!   `L_BCE = -(1/21) Σ_i [y_i log p_i + w (1 - y_i) log(1 - p_i)]` (the discount `w` on the
//!   negatives, default 0.2) and `L_Dice = 1 - 2 Σ y p / (Σ y + Σ p)`, both per sample and averaged
//!   over the batch. Either part can be switched off; the loss is the mean of the parts that are on.
//! - [`LossConfig::Release`]: the authors' released Face-ViT loss, the mean of four terms:
//!   BCE-with-logits weighted 1.0 on positives and 0.2 on negatives (mean over elements), focal
//!   loss on the unweighted BCE (α 1, γ 2, mean over elements), Dice per sample on the sigmoid
//!   (smooth 1, mean over the batch) and Jaccard over the whole batch (smooth 1e-6).
//!
//! `log p` and `log(1 - p)` are computed as `log_sigmoid(±z)`, which stays finite for large logits.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossConfig {
    Paper {
        /// `w`, the weight of the negative labels' BCE term.
        #[serde(default = "default_w")]
        negative_weight: f64,
        #[serde(default = "yes")]
        bce: bool,
        #[serde(default = "yes")]
        dice: bool,
    },
    Release,
}

fn default_w() -> f64 {
    0.2
}
fn yes() -> bool {
    true
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true }
    }
}

impl LossConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            LossConfig::Paper { bce: false, dice: false, .. } => {
                Err("the paper loss needs at least one of `bce` and `dice` switched on".into())
            }
            LossConfig::Paper { negative_weight, .. } if !(0.0..=1.0).contains(negative_weight) => {
                Err(format!("loss.negative_weight is {negative_weight}; it must be in [0, 1] (the paper uses 0.2)"))
            }
            _ => Ok(()),
        }
    }

    /// A one-line description for tables and logs.
    pub fn describe(&self) -> String {
        match self {
            LossConfig::Paper { negative_weight, bce, dice } => match (bce, dice) {
                (true, true) => format!("BCE(w={negative_weight})+Dice"),
                (true, false) => format!("BCE(w={negative_weight})"),
                _ => "Dice".into(),
            },
            LossConfig::Release => "release (weighted BCE, focal, Dice, Jaccard)".into(),
        }
    }

    /// The scalar loss `[1]`.
    pub fn loss(&self, logits: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
        match self {
            LossConfig::Paper { negative_weight, bce, dice } => {
                let mut parts = Vec::new();
                if *bce {
                    parts.push(paper_bce(logits.clone(), y.clone(), *negative_weight));
                }
                if *dice {
                    parts.push(dice_loss(sigmoid(logits), y, 0.0));
                }
                let n = parts.len() as f64;
                Tensor::cat(parts, 0).sum().div_scalar(n)
            }
            LossConfig::Release => {
                let p = sigmoid(logits.clone());
                let w = y.clone().mul_scalar(0.8).add_scalar(0.2);
                let bce_el = bce_elements(logits, y.clone());
                let weighted = (bce_el.clone() * w).mean();
                let focal = {
                    let pt = bce_el.clone().neg().exp();
                    (pt.neg().add_scalar(1.0).powf_scalar(2.0) * bce_el).mean()
                };
                let dice = dice_loss(p.clone(), y.clone(), 1.0);
                let jaccard = {
                    let inter = (p.clone() * y.clone()).sum();
                    let union = p.sum() + y.sum() - inter.clone();
                    (inter.add_scalar(1e-6) / union.add_scalar(1e-6)).neg().add_scalar(1.0)
                };
                Tensor::cat(vec![weighted, focal, dice, jaccard], 0).sum().div_scalar(4.0)
            }
        }
    }
}

/// Per element `-(y log p + (1 - y) log(1 - p))` from logits.
fn bce_elements(z: Tensor<2>, y: Tensor<2>) -> Tensor<2> {
    let ly = log_sigmoid(z.clone());
    let ln = log_sigmoid(z.neg());
    (y.clone() * ly + y.neg().add_scalar(1.0) * ln).neg()
}

/// The paper's BCE: `-(1/K) Σ [y log p + w (1-y) log(1-p)]` per sample, averaged over the batch.
fn paper_bce(z: Tensor<2>, y: Tensor<2>, w: f64) -> Tensor<1> {
    let ly = log_sigmoid(z.clone());
    let ln = log_sigmoid(z.neg());
    (y.clone() * ly + y.neg().add_scalar(1.0).mul_scalar(w) * ln).neg().mean()
}

/// `1 - (2 Σ y p + s) / (Σ y + Σ p + s)` per sample, averaged over the batch.
fn dice_loss(p: Tensor<2>, y: Tensor<2>, smooth: f64) -> Tensor<1> {
    let inter = (p.clone() * y.clone()).sum_dim(1);
    let denom = p.sum_dim(1) + y.sum_dim(1);
    let per = (inter.mul_scalar(2.0).add_scalar(smooth) / denom.add_scalar(smooth)).neg().add_scalar(1.0);
    per.mean()
}
