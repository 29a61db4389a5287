//! Stage 2's training losses and the release's caption normaliser.
//!
//! - [`lm_sum`]: T5's token cross-entropy, summed over the target tokens that are not ignored
//!   (`-100`, transformers' `ignore_index`). The trainer divides by the number of counted tokens
//!   of the *global* batch, which is transformers' mean on one device and stays exactly that mean
//!   when the batch is split across devices.
//! - [`mask_sum`]: binary cross-entropy with logits and a positive-class weight (the release's
//!   `BCEWithLogitsLoss(pos_weight=2)`), summed over pixels. With `double_sigmoid` the logits go
//!   through a sigmoid first, reproducing the release's bug (spec 1.8: it applies the loss to
//!   already-sigmoided outputs).
//! - [`gate_mean`]: the release's auxiliary gate loss: BCE (no positive weight) of per-region
//!   gate probabilities, per sample the mean over its predicted regions; the release's
//!   BCE-with-logits on those probabilities (a double sigmoid) as an option.
//! - [`normalize_caption`]: `BlipCaptionProcessor` (spec 4.3).
//!
//! PyTorch's BCE-with-logits is `(1 - y) x + (1 + (w - 1) y) softplus(-x)`, with `softplus(-x)`
//! as `-log_sigmoid(x)` so that it stays finite for large logits; `model/tests/talker_losses.rs`
//! checks values and gradients against PyTorch (`tests/fixtures/talker/make_loss_fixtures.py`).

use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The gate BCE's probability clamp.
const PROB_EPS: f64 = 1e-7;

/// transformers' `ignore_index` for target positions that carry no token.
pub const IGNORE: i64 = -100;

/// How the mask branch is penalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskLoss {
    /// `pos_weight` of the BCE (the release: 2).
    pub pos_weight: f64,
    /// Apply the BCE-with-logits to sigmoid probabilities, as the release does (a double sigmoid).
    pub double_sigmoid: bool,
}

impl Default for MaskLoss {
    fn default() -> Self {
        MaskLoss { pos_weight: 2.0, double_sigmoid: false }
    }
}

/// `softplus(-x) = -log_sigmoid(x)`: burn's `log_sigmoid` is computed stably and has its own
/// backward rule (spelling it `log1p(exp(-|x|)) + max(-x, 0)` would give the wrong gradient at
/// exactly 0, where `abs` and `clamp` have no derivative).
fn softplus_neg<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    log_sigmoid(x).neg()
}

/// Summed BCE-with-logits with a positive weight over all elements of `x` against 0/1 `y`.
pub fn bce_with_logits_sum<const D: usize>(x: Tensor<D>, y: Tensor<D>, pos_weight: f64) -> Tensor<1> {
    let log_weight = y.clone().mul_scalar(pos_weight - 1.0).add_scalar(1.0);
    let one_minus_y = y.neg().add_scalar(1.0);
    (one_minus_y * x.clone() + log_weight * softplus_neg(x)).sum()
}

/// The mask loss summed over `[B, S, S]` pixels (divide by the global pixel count for the mean).
pub fn mask_sum(logits: Tensor<3>, gt: Tensor<3>, cfg: &MaskLoss) -> Tensor<1> {
    let x = if cfg.double_sigmoid { sigmoid(logits) } else { logits };
    bce_with_logits_sum(x, gt, cfg.pos_weight)
}

/// The token cross-entropy summed over targets `[B][T]` (`IGNORE` positions count nothing)
/// against logits `[B, T, V]`; also returns the number of counted tokens.
pub fn lm_sum(logits: Tensor<3>, targets: &[Vec<i64>]) -> (Tensor<1>, usize) {
    let [b, t, _] = logits.dims();
    let device = logits.device();
    let mut ids = Vec::with_capacity(b * t);
    let mut keep = Vec::with_capacity(b * t);
    let mut count = 0;
    for row in targets {
        for j in 0..t {
            let v = row.get(j).copied().unwrap_or(IGNORE);
            let counted = v != IGNORE;
            count += counted as usize;
            ids.push(if counted { v } else { 0 });
            keep.push(if counted { 1f32 } else { 0.0 });
        }
    }
    let ids = Tensor::<3, Int>::from_data(TensorData::new(ids, [b, t, 1]), &device);
    let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, t]), &device);
    let logp = log_softmax(logits, 2).gather(2, ids).reshape([b, t]);
    ((logp * keep).sum().neg(), count)
}

/// The gate loss of one sample: its gate values `p` [n] (probabilities in (0, 1): each the mean
/// of sigmoids over a region word's tokens, [`super::gate::Gate::values`]) against the 0/1 labels
/// of its n predicted regions, mean over the regions. The release applies BCE-with-logits to
/// these probabilities (`double_sigmoid`: a second sigmoid, spec 1.8); otherwise it is BCE on
/// probabilities (PyTorch's `BCELoss`; probabilities clamped to [1e-7, 1 - 1e-7], where PyTorch
/// clamps the logs at -100: the two agree inside that range). The batch loss is the sum over
/// samples with regions divided by the batch size.
pub fn gate_mean(p: Tensor<1>, gt: Tensor<1>, double_sigmoid: bool) -> Tensor<1> {
    let [n] = p.dims();
    let sum = if double_sigmoid {
        bce_with_logits_sum(p, gt, 1.0)
    } else {
        // kept inside (0, 1) so that a saturated f32 probability gives a finite loss and gradient
        let p = p.clamp(PROB_EPS, 1.0 - PROB_EPS);
        let one_minus_y = gt.clone().neg().add_scalar(1.0);
        let log_p = p.clone().log();
        let log_q = p.neg().add_scalar(1.0).log();
        (gt * log_p + one_minus_y * log_q).sum().neg()
    };
    sum.div_scalar(n.max(1) as f64)
}

/// The release's caption processor (`BlipCaptionProcessor.pre_caption`): lowercase, each of
/// `. ! " ( ) * # : ; ~` becomes a space, runs of two or more whitespace characters become one
/// space, trailing newlines and surrounding spaces are stripped, and at most `max_words` words
/// (split on single spaces) are kept.
pub fn normalize_caption(caption: &str, max_words: usize) -> String {
    let lowered: String = caption
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, '.' | '!' | '"' | '(' | ')' | '*' | '#' | ':' | ';' | '~') { ' ' } else { c })
        .collect();
    // Python's `\s` (str patterns): Unicode whitespace plus the separators U+001C..U+001F
    let is_py_space = |c: char| c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}');
    // re.sub(r"\s{2,}", " ", s): a run of >= 2 whitespace characters becomes one space
    let mut out = String::with_capacity(lowered.len());
    let chars: Vec<char> = lowered.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_py_space(chars[i]) {
            let mut j = i;
            while j < chars.len() && is_py_space(chars[j]) {
                j += 1;
            }
            if j - i >= 2 {
                out.push(' ');
            } else {
                out.push(chars[i]);
            }
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    let s = out.trim_end_matches('\n').trim_matches(' ');
    let words: Vec<&str> = s.split(' ').collect();
    if words.len() > max_words { words[..max_words].join(" ") } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::normalize_caption;

    #[test]
    fn normaliser_follows_blip_caption_processor() {
        assert_eq!(normalize_caption("The Eye (left) is Blurred!  Very; odd.", 256), "the eye left is blurred very odd");
        assert_eq!(normalize_caption("It's a \"fake\"~mouth: teeth*fused#", 256), "it's a fake mouth teeth fused");
        // a single tab survives (only runs of two or more whitespace characters collapse)
        assert_eq!(normalize_caption("a\tb  c", 256), "a\tb c");
        assert_eq!(normalize_caption("one two three four", 2), "one two");
        assert_eq!(normalize_caption("...", 256), "");
    }
}
