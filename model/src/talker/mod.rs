//! ForgeryTalker stage 2, the model: an InstructBLIP-style explainer (EVA ViT vision encoder,
//! Q-Former, T5) and the authors' mask branch, in burn, with the FPN (stage 1, [`crate::fpn`])
//! turning regions into the instruction. [`train`] trains it.
//!
//! One file per model, each with its `Config` in [`config`]:
//! - [`eva_vit`]: the EVA-CLIP ViT (HF `InstructBlipVisionModel` names), `post_layernorm` = the
//!   release's `ln_vision`.
//! - [`qformer`]: the BERT-style Q-Former with learned queries, instruction text and
//!   cross-attention every `cross_attention_frequency` layers (HF `InstructBlipQFormerModel`).
//! - [`t5`]: T5 encoder-decoder with relative position buckets, gated FFN, a KV cache for decoding.
//! - [`mask_branch`]: `prompt_proj`, the packed-projection multi-head cross attention and the
//!   SAM-style two-way transformer mask decoder (the release's names).
//! - [`instructblip`]: the whole model: image -> image embeddings -> queries -> T5 encoder input.
//! - [`generate`]: greedy and beam search as `transformers`' `generate` computes them.
//! - [`tokenize`]: the T5 and BERT tokenizers from `tokenizer.json` (the `tokenizers` crate).
//! - [`weights`]: loading by tensor name from the HF layout (sharded safetensors) and the authors'
//!   release layout (PyTorch pickles), with every missing, unexpected or mis-shaped tensor reported.
//! - [`explain`]: [`Explainer`], the entry point the CLI and the web app use.
//! - [`bench`]: generation throughput on random weights.
//! - [`gate`]: the release's region gate (a separate BERT over the FPN's region words,
//!   cross-attention to the projected patches, one value per region): training-only, its loss an
//!   option of [`train`]; no output depends on it.
//! - [`loss`]: the training losses (token cross-entropy, the mask's BCE, the release's gate
//!   loss) and the release's caption normaliser.
//! - [`train`]: the stage-2 trainer ([`TalkerTrainConfig`], TOML; frozen EVA/T5/FPN, trained
//!   Q-Former, queries, projection, `ln_vision`, mask branch; checkpoints, resume, validation by
//!   CIDEr + BLEU-4, cached vision features, data-parallel devices).
//! - [`predict`]: captions (JSONL) and masks (PNG) for a sample set, in the format `mmtt eval
//!   report` reads, with the instruction's regions from the FPN, the reference, or none.

pub mod bench;
pub mod config;
pub mod eva_vit;
pub mod explain;
pub mod gate;
pub mod generate;
pub mod instructblip;
pub mod loss;
pub mod mask_branch;
pub mod predict;
pub mod qformer;
pub mod t5;
pub mod tokenize;
pub mod train;
pub mod weights;

pub use bench::{BenchFigures, bench};
pub use config::{PRESETS, TalkerConfig, Template};
pub use explain::{ExplainOptions, Explainer, Explanation, Mask, Prompting};
pub use generate::GenerationConfig;
pub use train::{Part, RegionSource, TalkerOutcome, TalkerProgress, TalkerSample, TalkerStepReport, TalkerTrainConfig, TalkerValReport};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TalkerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("input: {0}")]
    Input(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("FPN: {0}")]
    Fpn(#[from] crate::fpn::FpnError),
}

impl TalkerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TalkerError::Io { path: path.to_path_buf(), source }
    }
}
