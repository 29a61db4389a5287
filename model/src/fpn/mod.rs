//! ForgeryTalker stage 1, the Forgery Prompter Network (FPN): the authors' Face-ViT region
//! classifier in burn, its weights in the Hugging Face and release layouts, its losses, its
//! trainer and its predictor. Runs on burn's `flex` backend (CPU) and, with the `cuda` feature,
//! on CUDA devices.
//!
//! - [`config`]: [`FpnConfig`] (presets `tiny` .. `vit-h14`) and the `config.json` /
//!   `preprocessor_config.json` files.
//! - [`face_vit`]: the model (one file), with seeded initialisation and dropout.
//! - [`weights`]: loading and saving by tensor name; every missing, unexpected or mis-shaped
//!   tensor is reported.
//! - [`preprocess`]: images to pixel values as `ViTImageProcessor` makes them.
//! - [`loss`]: the paper's loss and the authors' release loss.
//! - [`train`]: [`TrainConfig`] (TOML), the training loop, checkpoints and resume.
//! - [`predict`]: [`Predictor`], probabilities and region words for images.

pub mod config;
pub mod face_vit;
pub mod loss;
pub mod predict;
pub mod preprocess;
pub mod train;
pub mod weights;

pub use config::{FpnConfig, Preprocess};
pub use loss::LossConfig;
pub use predict::{Predictor, init_checkpoint, parse_device};
pub use train::{Control, LabelSource, Outcome, Progress, Sample, StepReport, TrainConfig, ValReport, train};

use std::path::{Path, PathBuf};

/// The 21 region labels in the authors' order (`blip2_t5_instruct.py:173`).
pub const LABELS: [&str; 21] = [
    "eye", "pupil", "lip", "mouth", "nose", "ear", "cheek", "forehead", "chin", "jaw", "eyebrow", "tooth", "tongue", "beard", "mustache",
    "skin", "hair", "wrinkle", "freckle", "scar", "dimple",
];

/// The region words of a prediction: labels with probability strictly above 0.5, in label order.
pub fn regions(probs: &[f32; 21]) -> Vec<&'static str> {
    LABELS.iter().zip(probs).filter(|(_, p)| **p > 0.5).map(|(l, _)| *l).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum FpnError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("data: {0}")]
    Data(String),
    #[error("device: {0}")]
    Device(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

impl FpnError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        FpnError::Io { path: path.to_path_buf(), source }
    }
}
