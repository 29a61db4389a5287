//! ForgeryTalker: the paper's metrics computed exactly as the reference tools compute them, in
//! Rust, without Java or Python at run time; and the models with their trainers, in burn.
//!
//! - [`fpn`]: stage 1, the Forgery Prompter Network (Face-ViT region classifier): model, weights
//!   in the Hugging Face and release layouts, losses, trainer, predictor.
//! - [`parallel`]: data-parallel training steps across devices (both trainers).
//! - [`precision`]: bf16 weights for frozen parts, float32 activations between their layers.
//! - [`talker`]: stage 2, the InstructBLIP-style explainer (EVA ViT, Q-Former, T5) and the mask
//!   branch: weights in the Hugging Face and release layouts, generation as transformers does it,
//!   the [`talker::Explainer`] the CLI and the web app use.
//!
//! - [`eval::tokenize`]: the PTBTokenizer behaviour pycocoevalcap relies on, and its punctuation
//!   filter.
//! - [`eval::bleu`], [`eval::rouge`], [`eval::cider`]: pycocoevalcap 1.2's Bleu(4), Rouge
//!   (ROUGE-L) and Cider (CIDEr-D), quirks included.
//! - [`eval::captions`]: the `mmtt eval captions` entry point (ids checked, tokenization, scores).
//! - [`eval::masks`]: mIoU, cIoU, precision, recall with the reference's image rules.
//! - [`eval::labels`]: PLM and per-label / macro / micro precision, recall, F1.
//! - [`eval::report`]: the whole Table 2 row from the release-format ground truth and a prediction file.

pub mod eval;
pub mod fpn;
pub mod parallel;
pub mod precision;
pub mod talker;
