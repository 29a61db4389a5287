//! ForgeryTalker evaluation: the paper's metrics computed exactly as the reference tools compute
//! them, in Rust, without Java or Python at run time. (No model and no training code yet: the
//! crate holds what scores a model's predictions.)
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
