//! The stage-2 trainer: the explainer (Q-Former, its queries, the projection, `ln_vision`) and the
//! mask branch trained on accepted triplets with `L = L_t + L_m` (T5 token cross-entropy on the
//! caption, BCE on the mask), EVA and T5 frozen, the gradient flowing through the frozen T5 into
//! the projection and the Q-Former; the FPN (stage 1) frozen and in eval mode, its regions filling
//! the instruction. Which parts train is configurable ([`Part`]).
//!
//! The release's choices are options ([`TalkerTrainConfig`]): the caption normaliser, 60 target
//! tokens, BCE with `pos_weight` 2, the auxiliary gate loss (`[gate]`: `L += 0.5 * gate_loss`, its
//! BERT, projection, cross-attention and head trained beside the rest, the gradient reaching
//! `ln_vision`; [`super::gate`]); its bugs are fixed by default and reproducible
//! (`mask_loss.double_sigmoid`, `gate.double_sigmoid`, `align_masks = false`).
//!
//! A run lives in one directory, like the FPN's: `run.toml`, `data.json`, `metrics.jsonl`,
//! `checkpoints/step-N/` (a ForgeryTalker directory `Explainer::load` reads, holding the trained
//! tensors only when the run started from a checkpoint (`base` in its `mmtt_talker.json`), plus
//! `optimizer_decay.bpk`, `optimizer_no_decay.bpk` and `trainer_state.json`),
//! `checkpoints/latest`, and `best/` (best validation CIDEr + BLEU-4, the release's
//! `agg_metrics`).
//!
//! Step `s` is a pure function of the weights, the optimizer state, the data and `(seed, s)`:
//! batch `s` covers positions `s*B .. (s+1)*B` of the stream of epochs (epoch `e` a ChaCha
//! permutation seeded by `(seed, e)`); crops and flips come from a stream keyed by `(seed, s,
//! position)`; cached vision features are computed per image, in index order, before step 0. So a
//! run resumed from its latest checkpoint ends bit for bit where an uninterrupted one does (CPU).
//!
//! With several `devices` a step runs data-parallel ([`crate::parallel`]): each device takes a
//! contiguous shard of the global batch; losses are sums divided by the global batch's counts, so
//! the summed gradient is the single-device one.

use super::TalkerError;
use super::config::{MaskBranchConfig, TalkerConfig};
use super::explain::{ExplainOptions, Explainer, Prompting, pixels};
use super::gate::{BertConfig, Gate, GateConfig, GateFile, load_gate, load_gate_pytorch, save_gate};
use super::generate::GenerationConfig;
use super::instructblip::{InstructBlip, Talker, ids_tensor};
use super::loss::{IGNORE, MaskLoss, gate_mean, lm_sum, mask_sum, normalize_caption};
use super::mask_branch::MaskBranch;
use super::tokenize::TextTokenizer;
use super::weights;
use crate::eval::captions::CaptionSet;
use crate::fpn::face_vit::Init;
use crate::fpn::preprocess::{Filter, pil_resize};
use crate::fpn::{Control, LABELS, Predictor};
use crate::parallel;
use crate::precision::WeightDtype;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One training or evaluation example.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkerSample {
    /// The release's `image_id` (or the forgery's id).
    pub id: String,
    /// The forged image.
    pub image: PathBuf,
    /// Its binary forgery mask (0/255); `None`: no mask loss for this sample.
    pub mask: Option<PathBuf>,
    /// The accepted explanation, raw (the trainer normalises it when configured to).
    pub caption: String,
    /// Region labels in [`LABELS`] order, from the reference caption.
    pub labels: [bool; 21],
}

/// What fills the instruction's region list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionSource {
    /// The FPN's regions (p > 0.5), as the paper trains and evaluates.
    #[default]
    Fpn,
    /// The regions named by the reference caption (the paper's "w/ FPN-GT").
    Gt,
    /// No regions: the template without a list (the paper's "w/o FPN").
    None,
}

impl RegionSource {
    pub const ALL: [RegionSource; 3] = [RegionSource::Fpn, RegionSource::None, RegionSource::Gt];
    pub fn name(self) -> &'static str {
        match self {
            RegionSource::Fpn => "fpn",
            RegionSource::Gt => "gt",
            RegionSource::None => "none",
        }
    }
}

impl std::str::FromStr for RegionSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fpn" => Ok(RegionSource::Fpn),
            "gt" => Ok(RegionSource::Gt),
            "none" => Ok(RegionSource::None),
            other => Err(format!("unknown regions `{other}`: use fpn (the FPN's regions), gt (the reference caption's) or none")),
        }
    }
}

/// A trainable part of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Qformer,
    QueryTokens,
    Projection,
    LnVision,
    MaskBranch,
    /// The EVA encoder (frozen in the paper).
    Vision,
    /// T5 (frozen in the paper).
    T5,
}

impl Part {
    /// The module paths (of [`InstructBlip`]) this part owns, as regular expressions.
    fn patterns(self) -> &'static [&'static str] {
        match self {
            Part::Qformer => &[r"^qformer\."],
            Part::QueryTokens => &[r"^query_tokens$"],
            Part::Projection => &[r"^language_projection\."],
            Part::LnVision => &[r"^vision_model\.post_layernorm\."],
            Part::MaskBranch => &[],
            Part::Vision => &[r"^vision_model\."],
            Part::T5 => &[r"^language_model\."],
        }
    }
}

/// A training run's settings (`mmtt train talker --config FILE.toml`); keys left out take
/// [`TalkerTrainConfig::paper`]'s values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TalkerTrainConfig {
    /// Model shape when `init` is absent (random weights): one of [`super::PRESETS`].
    pub preset: String,
    /// Start from this checkpoint: an InstructBLIP / ForgeryTalker directory or the release folder.
    pub init: Option<PathBuf>,
    /// The stage-1 FPN checkpoint directory (needed when `regions = "fpn"` and `init` has none).
    pub fpn: Option<PathBuf>,
    pub regions: RegionSource,
    pub trainable: Vec<Part>,
    pub steps: u64,
    /// The global batch (split across `devices`).
    pub batch_size: usize,
    pub lr: f64,
    /// The cosine's floor.
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_eps: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Global-norm clipping; `0` in TOML: none.
    #[serde(with = "crate::parallel::grad_clip_toml")]
    pub grad_clip: Option<f64>,
    pub seed: u64,
    /// Target tokens per caption, `</s>` included (right truncation): the release's 60.
    pub max_target_tokens: usize,
    /// The release's caption normaliser on targets.
    pub normalize_captions: bool,
    pub mask_loss: MaskLoss,
    /// `L = L_t + mask_weight * L_m`.
    pub mask_weight: f64,
    /// The release's train transform: RandomResizedCrop (scale 0.5-1, bicubic) and a flip.
    pub augment: bool,
    /// Crop and flip the mask with its image (`false` reproduces the release's misaligned masks).
    pub align_masks: bool,
    /// Compute the frozen EVA's features once per image (needs `augment = false`).
    pub cache_vision_features: bool,
    /// The dtype of the frozen EVA's and T5's weights: `auto` (bf16 when `devices` are GPUs, as
    /// LAVIS trains; f32 on the CPU), `f32`, or `bf16` (half their memory; activations stay
    /// float32, see [`crate::precision`]). Parts in `trainable` keep float32 weights.
    pub frozen_weights: WeightDtype,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    pub keep_checkpoints: usize,
    /// `cpu`, `cpu:N` (several: data-parallel CPU replicas), `cuda:N`.
    pub devices: Vec<String>,
    pub eval_beams: usize,
    pub eval_max_new_tokens: usize,
    /// Validate on at most this many validation samples (0: all).
    pub eval_limit: usize,
    /// The release's auxiliary gate loss (`[gate]`); absent: not trained (the paper's text
    /// names no gate; it changes no output, see [`super::gate`]).
    pub gate: Option<GateLoss>,
}

/// The release's gate loss as a training option: `L += weight * gate_loss`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateLoss {
    /// The release: 0.5.
    pub weight: f64,
    /// Apply BCE-with-logits to the gate probabilities, as the release does (a double sigmoid).
    pub double_sigmoid: bool,
    /// A Hugging Face BERT folder (`config.json`, `model.safetensors`: bert-base-uncased for the
    /// release) the gate's `bert_model` starts from; absent: seeded weights (a BERT shaped like
    /// the Q-Former's, or like the release folder's `bert-base-uncased/config.json`). An `init`
    /// that holds a gate (the release's checkpoint, or an mmtt stage-2 checkpoint) gives the
    /// whole gate instead; this folder then only gives its shape.
    pub bert: Option<PathBuf>,
}

impl Default for GateLoss {
    fn default() -> Self {
        GateLoss { weight: 0.5, double_sigmoid: false, bert: None }
    }
}

impl Default for TalkerTrainConfig {
    fn default() -> Self {
        Self::paper()
    }
}

/// The paper's trainable set (spec 1.9, finetune stage, without the unused heads).
pub const PAPER_PARTS: [Part; 5] = [Part::Qformer, Part::QueryTokens, Part::Projection, Part::LnVision, Part::MaskBranch];

impl TalkerTrainConfig {
    /// The release's finetune settings (spec 3, `distill_high_lr_stage2_finetune`'s schedule):
    /// lr 1e-5 to 1e-6 with 500 warm-up steps, weight decay 0.05, batch 48, 60 target tokens.
    pub fn paper() -> Self {
        TalkerTrainConfig {
            preset: "release-xl".into(),
            init: None,
            fpn: None,
            regions: RegionSource::Fpn,
            trainable: PAPER_PARTS.to_vec(),
            steps: 30_000,
            batch_size: 48,
            lr: 1e-5,
            min_lr: 1e-6,
            warmup_steps: 500,
            weight_decay: 0.05,
            adam_eps: 1e-8,
            beta1: 0.9,
            beta2: 0.999,
            grad_clip: Some(1.0),
            seed: 42,
            max_target_tokens: 60,
            normalize_captions: true,
            mask_loss: MaskLoss::default(),
            mask_weight: 1.0,
            augment: true,
            align_masks: true,
            cache_vision_features: false,
            frozen_weights: WeightDtype::Auto,
            checkpoint_every: 1000,
            eval_every: 1000,
            keep_checkpoints: 3,
            devices: vec!["cpu".into()],
            eval_beams: 5,
            eval_max_new_tokens: 100,
            eval_limit: 0,
            gate: None,
        }
    }

    /// A run that finishes on two CPU cores in minutes: the tiny preset, every part trained (no
    /// pretrained EVA or T5 exists at that shape), regions from the reference captions (no FPN
    /// needed), no augmentation, cached vision features, greedy validation.
    pub fn tiny() -> Self {
        TalkerTrainConfig {
            preset: "tiny".into(),
            regions: RegionSource::Gt,
            trainable: vec![Part::Qformer, Part::QueryTokens, Part::Projection, Part::LnVision, Part::MaskBranch, Part::T5],
            steps: 300,
            batch_size: 8,
            lr: 2e-3,
            min_lr: 1e-4,
            warmup_steps: 20,
            augment: false,
            cache_vision_features: true,
            checkpoint_every: 100,
            eval_every: 100,
            eval_beams: 1,
            eval_max_new_tokens: 30,
            eval_limit: 32,
            ..Self::paper()
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, TalkerError> {
        let cfg: TalkerTrainConfig = toml::from_str(text).map_err(|e| TalkerError::Config(format!("training config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Refuses settings the trainer cannot run, naming the key and the fix.
    pub fn validate(&self) -> Result<(), TalkerError> {
        let bad = |m: String| Err(TalkerError::Config(m));
        if self.init.is_none() {
            TalkerConfig::preset(&self.preset)?;
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr is {}; it must be a positive number", self.lr));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad(format!("min_lr is {}; it must be between 0 and lr ({})", self.min_lr, self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) || self.adam_eps <= 0.0 || self.weight_decay < 0.0 {
            return bad("beta1 and beta2 must be in [0, 1), adam_eps positive and weight_decay not negative".into());
        }
        if let Some(c) = self.grad_clip
            && c <= 0.0
        {
            return bad(format!("grad_clip is {c}; it must be positive (0: no clipping)"));
        }
        if self.max_target_tokens < 2 {
            return bad("max_target_tokens must be at least 2 (a word and </s>)".into());
        }
        if self.checkpoint_every == 0 || self.eval_every == 0 {
            return bad("checkpoint_every and eval_every must be at least 1".into());
        }
        if self.trainable.is_empty() {
            return bad(
                "trainable is empty: name the parts to train (qformer, query-tokens, projection, ln-vision, mask-branch, vision, t5)"
                    .into(),
            );
        }
        if self.frozen_weights == WeightDtype::Bf16 && self.trainable.contains(&Part::Vision) && self.trainable.contains(&Part::T5) {
            return bad(
                "frozen_weights = \"bf16\" holds the frozen EVA and T5 in bf16, but both are in trainable: take `vision` or `t5` out of trainable, or set frozen_weights = \"f32\""
                    .into(),
            );
        }
        if self.cache_vision_features && (self.augment || self.trainable.contains(&Part::Vision)) {
            return bad(
                "cache_vision_features needs fixed images and a frozen EVA: set augment = false and leave `vision` out of trainable, or turn the cache off"
                    .into(),
            );
        }
        if self.mask_loss.pos_weight.is_nan() || self.mask_loss.pos_weight <= 0.0 || self.mask_weight < 0.0 {
            return bad("mask_loss.pos_weight must be positive and mask_weight not negative".into());
        }
        if self.eval_beams == 0 || self.eval_max_new_tokens == 0 {
            return bad("eval_beams and eval_max_new_tokens must be at least 1".into());
        }
        if let Some(g) = &self.gate {
            if !(g.weight >= 0.0 && g.weight.is_finite()) {
                return bad(format!("gate.weight is {}; it must be a number >= 0 (the release: 0.5)", g.weight));
            }
            if self.regions != RegionSource::Fpn {
                return bad(format!(
                    "[gate] scores the FPN's predicted regions against the reference labels: it needs regions = \"fpn\" (now \"{}\"); remove [gate] or predict the regions with an FPN",
                    self.regions.name()
                ));
            }
            if let Some(b) = &g.bert
                && !b.join("config.json").is_file()
            {
                return bad(format!(
                    "gate.bert = {}: no config.json there: give a Hugging Face BERT folder (bert-base-uncased: config.json and model.safetensors)",
                    b.display()
                ));
            }
        }
        let devices = parallel::parse_devices(&self.devices).map_err(|e| TalkerError::Config(format!("devices: {e}")))?;
        if devices.len() > self.batch_size {
            return bad(format!(
                "{} devices for a global batch of {}: use batch_size >= the number of devices",
                devices.len(),
                self.batch_size
            ));
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine to `min_lr` at `steps`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps.min(self.steps)).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }

    fn generation(&self) -> GenerationConfig {
        GenerationConfig { num_beams: self.eval_beams, max_new_tokens: self.eval_max_new_tokens, ..GenerationConfig::release() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TalkerStepReport {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lm_loss: f64,
    pub mask_loss: f64,
    /// The gate loss (0 without `[gate]`).
    pub gate_loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TalkerValReport {
    pub step: u64,
    pub cider: f64,
    pub bleu4: f64,
    /// CIDEr + BLEU-4 (the release's `agg_metrics`), what selects `best/`.
    pub score: f64,
    pub best: bool,
}

/// Receives the run's progress; [`TalkerProgress::step`] can stop the run.
pub trait TalkerProgress {
    fn step(&mut self, r: &TalkerStepReport) -> Control;
    fn validated(&mut self, _r: &TalkerValReport) {}
    fn checkpoint(&mut self, _step: u64, _dir: &Path) {}
    fn note(&mut self, _msg: &str) {}
}

/// Progress that reports nothing and never stops.
pub struct Quiet;
impl TalkerProgress for Quiet {
    fn step(&mut self, _r: &TalkerStepReport) -> Control {
        Control::Continue
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TalkerOutcome {
    pub last_step: u64,
    pub stopped: bool,
    pub best_score: Option<f64>,
    pub best_step: Option<u64>,
    pub best_dir: PathBuf,
    pub last_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    best_score: Option<f64>,
    best_step: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DataFingerprint {
    train: usize,
    val: usize,
    hash: String,
}

fn fingerprint(train: &[TalkerSample], val: &[TalkerSample]) -> DataFingerprint {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for s in train {
        eat(s.id.as_bytes());
        eat(s.image.to_string_lossy().as_bytes());
        eat(s.mask.as_deref().map(|m| m.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        eat(s.caption.as_bytes());
        eat(&s.labels.map(|b| b as u8));
    }
    DataFingerprint { train: train.len(), val: val.len(), hash: format!("{h:016x}") }
}

/// What the optimizer updates: the InstructBLIP tree and the mask branch.
#[derive(Module, Debug)]
pub struct TrainModule {
    pub blip: InstructBlip,
    pub mask: Option<MaskBranch>,
    /// The release's gate, when `[gate]` trains it.
    pub gate: Option<Gate>,
}

/// The gate's tensors in a checkpoint (the release's names).
pub const GATE_FILE: &str = "gate.safetensors";

/// The built-in tokenizers of the tiny preset (trained by the fixture script on caption-like text).
const TINY_T5: &str = include_str!("../../assets/tiny-tokenizers/tokenizer.json");
const TINY_T5_CONFIG: &str = include_str!("../../assets/tiny-tokenizers/tokenizer_config.json");
const TINY_BERT: &str = include_str!("../../assets/tiny-tokenizers/qformer_tokenizer/tokenizer.json");
const TINY_BERT_CONFIG: &str = include_str!("../../assets/tiny-tokenizers/qformer_tokenizer/tokenizer_config.json");

fn write_file(path: &Path, text: &str) -> Result<(), TalkerError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| TalkerError::io(p, e))?;
    }
    std::fs::write(path, text).map_err(|e| TalkerError::io(path, e))
}

/// Writes the built-in tiny tokenizers into `dir` (`tokenizer.json`, `qformer_tokenizer/`).
pub fn write_tiny_tokenizers(dir: &Path) -> Result<(), TalkerError> {
    write_file(&dir.join("tokenizer.json"), TINY_T5)?;
    write_file(&dir.join("tokenizer_config.json"), TINY_T5_CONFIG)?;
    write_file(&dir.join("qformer_tokenizer/tokenizer.json"), TINY_BERT)?;
    write_file(&dir.join("qformer_tokenizer/tokenizer_config.json"), TINY_BERT_CONFIG)
}

/// Copies a tokenizer's `tokenizer.json` (and `tokenizer_config.json`) into `to`.
fn copy_tokenizer(tok: &TextTokenizer, to: &Path) -> Result<(), TalkerError> {
    std::fs::create_dir_all(to).map_err(|e| TalkerError::io(to, e))?;
    let from = tok.path.parent().unwrap_or(Path::new("."));
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).map_err(|e| TalkerError::io(&src, e))?;
        }
    }
    Ok(())
}

/// The model, tokenizers and FPN a run starts from.
struct Start {
    talker: Talker,
    t5_tok: TextTokenizer,
    bert_tok: TextTokenizer,
    fpn: Option<Predictor>,
    /// `base` for checkpoints (absolute), when starting from a checkpoint.
    base: Option<PathBuf>,
    /// The gate and its shape, when `[gate]` is set.
    gate: Option<(Gate, GateConfig)>,
    notes: Vec<String>,
}

fn start(cfg: &TalkerTrainConfig, run_dir: &Path, device: &Device) -> Result<Start, TalkerError> {
    let mut notes = Vec::new();
    let (mut talker, t5_tok, bert_tok, own_fpn, base) = match &cfg.init {
        Some(dir) => {
            let ex = Explainer::load(dir, None, device)?;
            let base = std::path::absolute(dir).map_err(|e| TalkerError::io(dir, e))?;
            let (talker, t5, bert, fpn) = ex.into_parts();
            (talker, t5, bert, fpn, Some(base))
        }
        None => {
            let tok_dir = run_dir.join("tokenizers");
            write_tiny_tokenizers(&tok_dir)?;
            let t5 = TextTokenizer::from_dir(&tok_dir, "T5")?;
            let bert = TextTokenizer::from_dir(&tok_dir.join("qformer_tokenizer"), "Q-Former (BERT)")?;
            let mcfg = TalkerConfig::preset(&cfg.preset)?;
            if t5.vocab_size() > mcfg.text.vocab_size || bert.vocab_size() > mcfg.qformer.vocab_size {
                return Err(TalkerError::Config(format!(
                    "the built-in tokenizers have {} / {} tokens but preset `{}` embeds {} / {}",
                    t5.vocab_size(),
                    bert.vocab_size(),
                    cfg.preset,
                    mcfg.text.vocab_size,
                    mcfg.qformer.vocab_size
                )));
            }
            if cfg.preset != "tiny" {
                notes.push(format!(
                    "preset `{}` from random weights with the built-in tiny tokenizers: a benchmark, not a model (give `init` for real training)",
                    cfg.preset
                ));
            }
            (Talker::random(mcfg, cfg.seed, device), t5, bert, None, None)
        }
    };
    if talker.mask.is_none() {
        // a plain InstructBLIP: the mask branch starts seeded, at the image size
        let m = MaskBranchConfig { mask_size: talker.config.vision.image_size, ..MaskBranchConfig::release() };
        let branch = MaskBranch::new(&m, talker.config.text.d_model, talker.config.vision.hidden_size, &mut Init::new(cfg.seed, device));
        talker.config.mask_branch = Some(m);
        talker.mask = Some(branch);
        notes.push("the initial checkpoint has no mask branch: it starts from seeded weights".into());
    }
    let fpn = match &cfg.fpn {
        Some(dir) => Some(Predictor::load_on(dir, None, device)?),
        None => own_fpn,
    };
    if cfg.regions == RegionSource::Fpn && fpn.is_none() {
        return Err(TalkerError::Config(
            "regions = \"fpn\" needs an FPN: set `fpn` to a stage-1 checkpoint directory (a finished FPN training's best/), or use regions = \"gt\""
                .into(),
        ));
    }
    if let Some(f) = &fpn
        && f.config().image_size != talker.config.vision.image_size
    {
        return Err(TalkerError::Config(format!(
            "the FPN takes {} px images but the vision encoder {} px: the release feeds both the same pixels; train the FPN at {} px",
            f.config().image_size,
            talker.config.vision.image_size,
            talker.config.vision.image_size
        )));
    }
    let gate = match &cfg.gate {
        Some(g) => Some(start_gate(g, cfg.init.as_deref(), &talker.config, &bert_tok, cfg.seed, device, &mut notes)?),
        None => None,
    };
    Ok(Start { talker, t5_tok, bert_tok, fpn, base, gate, notes })
}

/// Where a run's gate starts, in this order:
/// 1. the initial checkpoint's own gate, when it has one: the release's DFF checkpoint (its
///    fine-tuned `bert_model.*`, `trans_layer.*`, `gate_cross_attention_layer.*`, `fc_layer.*`)
///    or an mmtt stage-2 checkpoint's `gate.safetensors`; every gate tensor must be there;
/// 2. `gate.bert` (a Hugging Face BERT folder): its BERT, the heads seeded;
/// 3. seeded weights.
///
/// The gate's BERT shape is `gate.bert`'s `config.json`, else the release folder's
/// `bert-base-uncased/config.json` (the release builds `bert_model` from it), else the Q-Former's.
fn start_gate(
    g: &GateLoss,
    init: Option<&Path>,
    mcfg: &TalkerConfig,
    bert_tok: &TextTokenizer,
    seed: u64,
    device: &Device,
    notes: &mut Vec<String>,
) -> Result<(Gate, GateConfig), TalkerError> {
    // the initial checkpoint's gate, if any: (a release folder's files, or an mmtt gate file)
    let release = match init {
        Some(dir) if !dir.join("config.json").is_file() => Some(weights::ReleaseFiles::find(dir)?),
        _ => None,
    };
    let release_gate = match &release {
        Some(files) => weights::pytorch_shapes(&files.checkpoint, Some("model"))?
            .keys()
            .any(|k| k.starts_with("gate_cross_attention_layer.") || k.starts_with("bert_model.")),
        None => false,
    };
    let own_gate = init.map(|d| d.join(GATE_FILE)).filter(|f| f.is_file());
    let q = &mcfg.qformer;
    let bert = match (&g.bert, &release) {
        (Some(dir), _) => BertConfig::read(dir)?,
        (None, Some(files)) => BertConfig::read(&files.bert_dir)?,
        (None, None) => BertConfig {
            vocab_size: q.vocab_size,
            hidden_size: q.hidden_size,
            num_hidden_layers: q.num_hidden_layers,
            num_attention_heads: q.num_attention_heads,
            intermediate_size: q.intermediate_size,
            max_position_embeddings: q.max_position_embeddings,
            type_vocab_size: 2,
            layer_norm_eps: q.layer_norm_eps,
        },
    };
    if bert_tok.vocab_size() > bert.vocab_size {
        return Err(TalkerError::Config(format!(
            "the gate's BERT embeds {} tokens but the Q-Former tokenizer has {}: give gate.bert a BERT of that tokenizer (bert-base-uncased)",
            bert.vocab_size,
            bert_tok.vocab_size()
        )));
    }
    let heads = if bert.hidden_size.is_multiple_of(8) { 8 } else { bert.num_attention_heads };
    let gcfg = GateConfig { bert, vision_width: mcfg.vision.hidden_size, heads };
    gcfg.validate()?;
    // seeded apart from the model's own initialisation
    let gate = Gate::new(&gcfg, &mut Init::new(seed ^ 0x6a7e, device));
    let gate = if let (true, Some(files)) = (release_gate, &release) {
        notes.push(format!("the gate starts from the release checkpoint's gate ({})", files.checkpoint.display()));
        load_gate_pytorch(gate, &files.checkpoint, Some("model"))?
    } else if let Some(f) = &own_gate {
        notes.push(format!("the gate starts from the initial checkpoint's gate ({})", f.display()));
        load_gate(gate, f, GateFile::Whole)?
    } else if let Some(dir) = &g.bert {
        let mut gate = gate;
        for f in &weights::hf_weight_files(dir)? {
            gate = load_gate(gate, f, GateFile::Bert)?;
        }
        gate
    } else {
        notes.push(
            "the gate's BERT starts from seeded weights (set gate.bert to a bert-base-uncased folder for the release's start)".into(),
        );
        gate
    };
    Ok((gate, gcfg))
}

/// The module paths a checkpoint saves (its trained parts), as regular expressions.
fn trained_patterns(parts: &[Part]) -> Vec<String> {
    parts.iter().flat_map(|p| p.patterns().iter().map(|s| s.to_string())).collect()
}

/// Freezes every part not in `parts` (no gradient is computed or applied for it).
/// Whether any of `devices` is a GPU (`cuda:N`).
fn on_gpu(devices: &[String]) -> bool {
    devices.iter().any(|d| d.starts_with("cuda"))
}

fn freeze(mut m: TrainModule, parts: &[Part], frozen_weights: WeightDtype) -> TrainModule {
    let has = |p: Part| parts.contains(&p);
    if frozen_weights == WeightDtype::Bf16 {
        if !has(Part::Vision) {
            m.blip.vision_model = m.blip.vision_model.with_bf16_weights();
        }
        if !has(Part::T5) {
            m.blip.language_model = m.blip.language_model.with_bf16_weights();
        }
    }
    if !has(Part::Vision) {
        let ln = m.blip.vision_model.post_layernorm.clone();
        m.blip.vision_model = m.blip.vision_model.no_grad();
        m.blip.vision_model.post_layernorm = ln;
    }
    if !has(Part::LnVision) {
        m.blip.vision_model.post_layernorm = m.blip.vision_model.post_layernorm.no_grad();
    }
    if !has(Part::QueryTokens) {
        m.blip.query_tokens = m.blip.query_tokens.set_require_grad(false);
    }
    if !has(Part::Qformer) {
        m.blip.qformer = m.blip.qformer.no_grad();
    }
    if !has(Part::Projection) {
        m.blip.language_projection = m.blip.language_projection.no_grad();
    }
    if !has(Part::T5) {
        m.blip.language_model = m.blip.language_model.no_grad();
    }
    if !has(Part::MaskBranch) {
        m.mask = m.mask.map(|x| x.no_grad());
    }
    m
}

/// Gives every parameter the id of its position in the module tree, so that the optimizer state
/// saved by one process applies to the model the next one loads (models assembled from several
/// files would otherwise reuse ids), and puts it on the autodiff backend, tracked.
struct Renumber(u64);
impl burn::module::ModuleMapper for Renumber {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        // on the autodiff backend, tracked (the parts to freeze are frozen next)
        burn::module::Param::from_mapped_value(burn::module::ParamId::from(self.0), tensor.autodiff().require_grad(), mapper)
    }
}

/// One sample's inputs for a step.
#[derive(Clone)]
struct Prepared {
    /// Pixels [3, S, S] (CLIP-normalised).
    pixels: Arc<Vec<f32>>,
    /// Mask targets [M*M] (0/1), when the sample has a mask.
    mask: Option<Vec<f32>>,
    qformer_ids: Vec<u32>,
    t5_ids: Vec<u32>,
    label_ids: Vec<u32>,
    target: Vec<u32>,
    /// The FPN's region words as BERT ids (`[CLS] word [SEP]`) and their reference labels, for
    /// the gate (empty without `[gate]` or without predicted regions).
    gate_words: Vec<Vec<u32>>,
    gate_targets: Vec<f32>,
}

/// torchvision's `RandomResizedCrop` box (scale 0.5-1, ratio 3/4-4/3): `(x, y, w, h)`.
fn random_resized_crop(w: u32, h: u32, rng: &mut ChaCha8Rng) -> (u32, u32, u32, u32) {
    let area = (w * h) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.5..1.0);
        let ratio = rng.random_range(lo..hi).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            return (x, y, cw, ch);
        }
    }
    // torchvision's fallback: the whole image at the nearest allowed ratio (here 1:1 images)
    let s = w.min(h);
    ((w - s) / 2, (h - s) / 2, s, s)
}

/// Opens a mask as 0/1 at `size` x `size` (PIL NEAREST, as the release resizes it).
fn mask_plane(m: &GrayImage, size: usize) -> Vec<f32> {
    let (w, h) = m.dimensions();
    let bin: Vec<u8> = m.as_raw().iter().map(|v| u8::from(*v > 0)).collect();
    crate::eval::masks::nearest(&bin, w, h, size as u32, size as u32).into_iter().map(f32::from).collect()
}

fn open_rgb(path: &Path) -> Result<RgbImage, TalkerError> {
    image::open(path).map(|i| i.to_rgb8()).map_err(|e| TalkerError::Input(format!("{}: cannot read the image: {e}", path.display())))
}

fn open_mask(path: &Path) -> Result<GrayImage, TalkerError> {
    image::open(path).map(|i| i.to_luma8()).map_err(|e| TalkerError::Input(format!("{}: cannot read the mask: {e}", path.display())))
}

/// (Q-Former ids, T5 ids, mask label ids).
type PromptIds = (Vec<u32>, Vec<u32>, Vec<u32>);

/// Text-side inputs shared by training and prediction.
pub(crate) struct Texts<'a> {
    pub cfg: &'a TalkerConfig,
    pub t5: &'a TextTokenizer,
    pub bert: &'a TextTokenizer,
}

impl Texts<'_> {
    /// (Q-Former ids, T5 ids, mask label ids) of an instruction over `words`.
    fn prompt(&self, words: &[String]) -> Result<PromptIds, TalkerError> {
        let instruction = self.cfg.template.instruction(words);
        let q = self.bert.encode(&instruction, self.cfg.qformer_max_len())?;
        let t = self.t5.encode(&instruction, self.cfg.max_txt_len)?;
        let label_tokens = self.cfg.mask_branch.as_ref().map_or(21, |m| m.label_tokens);
        let l = self.t5.encode_padded(&words.join(" "), label_tokens, self.cfg.text.pad_token_id)?;
        Ok((q, t, l))
    }

    /// The target ids of a caption: right-truncated to `max` tokens, `</s>` kept last.
    fn target(&self, caption: &str, normalize: bool, max: usize) -> Result<Vec<u32>, TalkerError> {
        let text = if normalize { normalize_caption(caption, 256) } else { caption.to_string() };
        let mut ids = self.t5.encode(&text, 1 << 20)?;
        if ids.len() > max {
            ids.truncate(max - 1);
            ids.push(self.cfg.text.eos_token_id);
        }
        Ok(ids)
    }
}

fn words_of(labels: &[bool; 21]) -> Vec<String> {
    LABELS.iter().zip(labels).filter(|(_, on)| **on).map(|(l, _)| l.to_string()).collect()
}

fn fpn_words(fpn: &Predictor, px: Vec<f32>, n: usize) -> Result<Vec<Vec<String>>, TalkerError> {
    let z = fpn.logits(px, n)?;
    Ok(z.iter()
        .map(|z| {
            let p: [f32; 21] = std::array::from_fn(|i| 1.0 / (1.0 + (-z[i]).exp()));
            crate::fpn::regions(&p).into_iter().map(str::to_string).collect()
        })
        .collect())
}

/// The frozen vision encoder's per-image features, computed once (index order, batches of 8).
struct FeatureCache {
    map: HashMap<usize, Arc<Vec<f32>>>,
}

/// Everything a shard's forward needs, as plain data (sent to the replica's thread).
struct ShardInput {
    pixels: Vec<f32>,
    features: Option<Vec<f32>>,
    n: usize,
    qformer_ids: Vec<Vec<u32>>,
    t5_ids: Vec<Vec<u32>>,
    label_ids: Vec<Vec<u32>>,
    /// Decoder inputs [n][T] and targets [n][T] (IGNORE-padded).
    decoder_ids: Vec<Vec<u32>>,
    targets: Vec<Vec<i64>>,
    /// Rows with a mask and their targets [k * M * M].
    mask_rows: Vec<usize>,
    mask_targets: Vec<f32>,
    gate_words: Vec<Vec<Vec<u32>>>,
    gate_targets: Vec<Vec<f32>>,
    /// BERT's `[PAD]` id.
    gate_pad: u32,
}

/// The global batch's normalisers.
#[derive(Clone, Copy)]
struct Counts {
    tokens: usize,
    mask_pixels: usize,
    /// Samples in the global batch (the gate loss's divisor).
    batch: usize,
}

struct ShardOut {
    lm_sum: f64,
    mask_sum: f64,
    /// The sum over this shard's samples of their gate loss.
    gate_sum: f64,
}

fn shard_forward(
    m: &TrainModule,
    cfg: &TalkerConfig,
    tc: &TalkerTrainConfig,
    gcfg: Option<&GateConfig>,
    input: ShardInput,
    counts: Counts,
) -> Result<(GradientsParams, ShardOut), String> {
    let device = m.blip.query_tokens.val().device();
    let n = input.n;
    if n == 0 {
        return Ok((GradientsParams::new(), ShardOut { lm_sum: 0.0, mask_sum: 0.0, gate_sum: 0.0 }));
    }
    let s = cfg.vision.image_size;
    let features = match input.features {
        Some(f) => {
            let t = cfg.vision.num_patches() + 1;
            Tensor::<3>::from_data(TensorData::new(f, [n, t, cfg.vision.hidden_size]), &device)
        }
        None => {
            let px = Tensor::<4>::from_data(TensorData::new(input.pixels, [n, 3, s, s]), &device);
            m.blip.vision_model.features(&cfg.vision, px)
        }
    };
    let image = m.blip.vision_model.post_layernorm.forward(features);
    let q = m.blip.query_outputs(cfg, image.clone(), &input.qformer_ids);
    let (enc_in, enc_mask) = m.blip.encoder_input(cfg, q, &input.t5_ids);
    let encoded = m.blip.encode(cfg, enc_in, &enc_mask);
    let logits = m.blip.language_model.decode_train(&cfg.text, ids_tensor(&input.decoder_ids, &device), encoded, &enc_mask);
    let (lm, _) = lm_sum(logits, &input.targets);
    let mut loss = lm.clone().div_scalar(counts.tokens.max(1) as f64);
    let mut mask_value = 0.0;
    if let (Some(branch), Some(mcfg)) = (&m.mask, &cfg.mask_branch)
        && !input.mask_rows.is_empty()
        && tc.mask_weight > 0.0
    {
        let k = input.mask_rows.len();
        let rows =
            Tensor::<1, Int>::from_data(TensorData::new(input.mask_rows.iter().map(|r| *r as i64).collect::<Vec<_>>(), [k]), &device);
        let label_ids: Vec<Vec<u32>> = input.mask_rows.iter().map(|r| input.label_ids[*r].clone()).collect();
        let embeds = m.blip.language_model.embed(ids_tensor(&label_ids, &device));
        let logits = branch.logits(mcfg, image.clone().select(0, rows), embeds);
        let ms = mcfg.mask_size;
        let gt = Tensor::<3>::from_data(TensorData::new(input.mask_targets, [k, ms, ms]), &device);
        let sum = mask_sum(logits, gt, &tc.mask_loss);
        mask_value = sum.clone().into_scalar::<f64>();
        loss = loss + sum.mul_scalar(tc.mask_weight / counts.mask_pixels.max(1) as f64);
    }
    let mut gate_value = 0.0;
    if let (Some(gate), Some(gcfg), Some(g)) = (&m.gate, gcfg, &tc.gate) {
        let mut sum: Option<Tensor<1>> = None;
        let [_, tokens, width] = image.dims();
        for (r, words) in input.gate_words.iter().enumerate() {
            if words.is_empty() {
                continue;
            }
            let emb = image.clone().slice([r..r + 1, 0..tokens, 0..width]).reshape([tokens, width]);
            let p = gate.values(gcfg, emb, words, input.gate_pad);
            let k = input.gate_targets[r].len();
            let y = Tensor::<1>::from_data(TensorData::new(input.gate_targets[r].clone(), [k]), &device);
            let one = gate_mean(p, y, g.double_sigmoid);
            sum = Some(match sum {
                Some(s) => s + one,
                None => one,
            });
        }
        if let Some(sum) = sum {
            gate_value = sum.clone().into_scalar::<f64>();
            loss = loss + sum.mul_scalar(g.weight / counts.batch.max(1) as f64);
        }
    }
    let lm_value = lm.into_scalar::<f64>();
    let grads = GradientsParams::from_grads(loss.backward(), m);
    Ok((grads, ShardOut { lm_sum: lm_value, mask_sum: mask_value, gate_sum: gate_value }))
}

/// The sample indices of batch `step`.
fn batch_indices(seed: u64, n: usize, bs: usize, step: u64, perm_cache: &mut Option<(u64, Vec<usize>)>) -> Vec<usize> {
    (0..bs as u64)
        .map(|j| {
            let pos = step * bs as u64 + j;
            let epoch = pos / n as u64;
            if perm_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut perm: Vec<usize> = (0..n).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e3779b97f4a7c15) ^ 0x7a1c_e5ed);
                perm.shuffle(&mut rng);
                *perm_cache = Some((epoch, perm));
            }
            perm_cache.as_ref().map_or(0, |(_, p)| p[(pos % n as u64) as usize])
        })
        .collect()
}

fn optimizer(cfg: &TalkerTrainConfig, weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.adam_eps as f32)
        .with_weight_decay(weight_decay as f32)
        .init()
}

fn write_atomic(path: &Path, text: &str) -> Result<(), TalkerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| TalkerError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TalkerError::io(path, e))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), TalkerError> {
    fn copy_into(from: &Path, to: &Path) -> Result<(), TalkerError> {
        std::fs::create_dir_all(to).map_err(|e| TalkerError::io(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| TalkerError::io(from, e))? {
            let entry = entry.map_err(|e| TalkerError::io(from, e))?;
            let p = entry.path();
            if p.is_dir() {
                copy_into(&p, &to.join(entry.file_name()))?;
            } else {
                std::fs::copy(&p, to.join(entry.file_name())).map_err(|e| TalkerError::io(&p, e))?;
            }
        }
        Ok(())
    }
    let tmp = to.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    copy_into(from, &tmp)?;
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&tmp, to).map_err(|e| TalkerError::io(to, e))
}

fn truncate_metrics(path: &Path, step: u64) -> Result<(), TalkerError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(path, &out)
}

/// The run's fixed parts: configuration, tokenizers, FPN, what checkpoints record.
struct Run<'a> {
    cfg: &'a TalkerTrainConfig,
    mcfg: TalkerConfig,
    t5_tok: TextTokenizer,
    bert_tok: TextTokenizer,
    fpn: Option<Predictor>,
    extras: super::config::TalkerExtras,
    trained: Vec<String>,
    root: PathBuf,
    device: Device,
}

impl Run<'_> {
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    fn latest(&self) -> Result<Option<(u64, PathBuf)>, TalkerError> {
        let p = self.checkpoints().join("latest");
        match std::fs::read_to_string(&p) {
            Ok(name) => {
                let name = name.trim();
                let step = name
                    .strip_prefix("step-")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| TalkerError::Checkpoint(format!("{}: `{name}` is not a step-N name", p.display())))?;
                Ok(Some((step, self.checkpoints().join(name))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TalkerError::io(&p, e)),
        }
    }

    fn talker(&self, m: &TrainModule) -> Talker {
        Talker { config: self.mcfg.clone(), blip: m.blip.valid(), mask: m.mask.as_ref().map(|x| x.valid()) }
    }

    fn save(&self, m: &TrainModule, opts: &(ModuleOptimizer, ModuleOptimizer), state: &TrainerState) -> Result<PathBuf, TalkerError> {
        let name = format!("step-{}", state.step);
        let dir = self.checkpoints().join(&name);
        let tmp = self.checkpoints().join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        weights::save_dir(&self.talker(m), &self.extras, &self.trained, &tmp)?;
        if let Some(g) = &m.gate {
            save_gate(&g.valid(), &tmp.join(GATE_FILE))?;
        }
        copy_tokenizer(&self.t5_tok, &tmp)?;
        copy_tokenizer(&self.bert_tok, &tmp.join("qformer_tokenizer"))?;
        let save_opt = |o: &ModuleOptimizer, f: &str| {
            o.save(tmp.join(f)).map_err(|e| TalkerError::Checkpoint(format!("saving the optimizer state ({f}): {e:?}")))
        };
        save_opt(&opts.0, "optimizer_decay.bpk")?;
        save_opt(&opts.1, "optimizer_no_decay.bpk")?;
        write_atomic(&tmp.join("trainer_state.json"), &serde_json::to_string_pretty(state).unwrap_or_default())?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| TalkerError::io(&dir, e))?;
        write_atomic(&self.checkpoints().join("latest"), &name)?;
        let mut steps: Vec<u64> = std::fs::read_dir(self.checkpoints())
            .map_err(|e| TalkerError::io(&self.checkpoints(), e))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
            .collect();
        steps.sort_unstable();
        let keep = self.cfg.keep_checkpoints.max(1);
        if steps.len() > keep {
            for s in &steps[..steps.len() - keep] {
                let _ = std::fs::remove_dir_all(self.checkpoints().join(format!("step-{s}")));
            }
        }
        Ok(dir)
    }

    /// CIDEr and BLEU-4 of the model's captions on `val` (the first `eval_limit`).
    fn validate(&self, m: &TrainModule, val: &[TalkerSample]) -> Result<(f64, f64), TalkerError> {
        let val = if self.cfg.eval_limit > 0 && val.len() > self.cfg.eval_limit { &val[..self.cfg.eval_limit] } else { val };
        if val.is_empty() {
            return Ok((0.0, 0.0));
        }
        let ex = Explainer::from_parts(self.talker(m), self.t5_tok.clone(), self.bert_tok.clone(), self.fpn.clone(), &self.device);
        let mut items = BTreeMap::new();
        for chunk in val.chunks(8) {
            let images = chunk.iter().map(|s| open_rgb(&s.image)).collect::<Result<Vec<_>, _>>()?;
            let out = ex.explain(
                &images,
                &ExplainOptions { prompting: prompting_for(self.cfg.regions, chunk), generation: self.cfg.generation() },
            )?;
            for (s, e) in chunk.iter().zip(out) {
                items.insert(s.id.clone(), (e.text, vec![s.caption.clone()]));
            }
        }
        let scores = CaptionSet { items }.score(None).map_err(|e| TalkerError::Input(format!("scoring the validation captions: {e}")))?;
        Ok((scores.cider, scores.bleu4))
    }
}

/// The prompting of a batch for a region source.
pub(crate) fn prompting_for(regions: RegionSource, samples: &[TalkerSample]) -> Prompting {
    match regions {
        RegionSource::Fpn => Prompting::Fpn,
        RegionSource::Gt => Prompting::RegionsEach(samples.iter().map(|s| words_of(&s.labels)).collect()),
        RegionSource::None => Prompting::RegionsEach(vec![Vec::new(); samples.len()]),
    }
}

/// Trains (or resumes) the run in `run_dir`. See the module documentation.
pub fn train(
    cfg: &TalkerTrainConfig,
    train: &[TalkerSample],
    val: &[TalkerSample],
    run_dir: &Path,
    progress: &mut dyn TalkerProgress,
) -> Result<TalkerOutcome, TalkerError> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(TalkerError::Data(
            "no training samples: the train split has no accepted annotations (accept some in review, or check the split)".into(),
        ));
    }
    let devices = parallel::parse_devices(&cfg.devices).map_err(TalkerError::Config)?;
    let device = devices[0].clone();
    std::fs::create_dir_all(run_dir.join("checkpoints")).map_err(|e| TalkerError::io(run_dir, e))?;

    let st = start(cfg, run_dir, &device)?;
    // a directory holds one configuration and one data set
    let run_toml = run_dir.join("run.toml");
    let data_json = run_dir.join("data.json");
    let fp = fingerprint(train, val);
    match std::fs::read_to_string(&run_toml) {
        Ok(text) => {
            let old: TalkerTrainConfig =
                toml::from_str(&text).map_err(|e| TalkerError::Checkpoint(format!("{}: {e}", run_toml.display())))?;
            if old != *cfg {
                return Err(TalkerError::Checkpoint(format!(
                    "{} holds a run with another configuration; resume it with the same config or choose a new run directory",
                    run_dir.display()
                )));
            }
            let old_fp: DataFingerprint = std::fs::read_to_string(&data_json)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| TalkerError::Checkpoint(format!("{} is missing or unreadable", data_json.display())))?;
            if old_fp != fp {
                return Err(TalkerError::Checkpoint(format!(
                    "{} was trained on another data set ({} train / {} val samples, hash {}; now {} / {}, {}): resuming would change \
                     the data order; choose a new run directory",
                    run_dir.display(),
                    old_fp.train,
                    old_fp.val,
                    old_fp.hash,
                    fp.train,
                    fp.val,
                    fp.hash
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(&data_json, &serde_json::to_string_pretty(&fp).unwrap_or_default())?;
            write_atomic(&run_toml, &cfg.to_toml())?;
        }
        Err(e) => return Err(TalkerError::io(&run_toml, e)),
    }

    for n in &st.notes {
        progress.note(n);
    }
    let mut extras = st.talker.config.extras(None);
    extras.fpn = match (&cfg.fpn, &cfg.init) {
        (Some(f), _) => Some(std::path::absolute(f).map_err(|e| TalkerError::io(f, e))?.display().to_string()),
        // the initial checkpoint's own FPN, by absolute path
        (None, Some(init)) => super::config::TalkerExtras::read(init)?
            .and_then(|x| x.fpn)
            .map(|rel| std::path::absolute(init.join(rel)).map(|p| p.display().to_string()).unwrap_or_default()),
        (None, None) => None,
    };
    extras.base = st.base.as_ref().map(|b| b.display().to_string());
    let run = Run {
        cfg,
        mcfg: st.talker.config.clone(),
        t5_tok: st.t5_tok,
        bert_tok: st.bert_tok,
        fpn: st.fpn,
        extras,
        trained: trained_patterns(&cfg.trainable),
        root: run_dir.to_path_buf(),
        device: device.clone(),
    };
    let mcfg = run.mcfg.clone();

    let mut opts = (optimizer(cfg, cfg.weight_decay), optimizer(cfg, 0.0));
    let (mut gate, gate_cfg) = match st.gate {
        Some((g, c)) => (Some(g), Some(c)),
        None => (None, None),
    };
    let gate_pad = run.bert_tok.token_id("[PAD]").unwrap_or(0);
    let (talker, mut state) = match run.latest()? {
        Some((step, dir)) => {
            let ex = Explainer::load(&dir, None, &device)?;
            let (t, _, _, _) = ex.into_parts();
            if let Some(g) = gate.take() {
                let f = dir.join(GATE_FILE);
                if !f.is_file() {
                    return Err(TalkerError::Checkpoint(format!(
                        "{}: no {GATE_FILE}: this run's configuration trains the gate but the checkpoint has none; resume with the configuration it was made with",
                        dir.display()
                    )));
                }
                gate = Some(load_gate(g, &f, GateFile::Whole)?);
            }
            let load_opt = |o: ModuleOptimizer, f: &str| {
                let p = dir.join(f);
                o.load(&p).map_err(|e| TalkerError::Checkpoint(format!("{}: {e:?}", p.display())))
            };
            opts = (load_opt(opts.0, "optimizer_decay.bpk")?, load_opt(opts.1, "optimizer_no_decay.bpk")?);
            let s: TrainerState = std::fs::read_to_string(dir.join("trainer_state.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| TalkerError::Checkpoint(format!("{}: no readable trainer_state.json", dir.display())))?;
            if s.step != step {
                return Err(TalkerError::Checkpoint(format!("{}: trainer_state says step {}", dir.display(), s.step)));
            }
            progress.note(&format!("resuming from {} (step {step})", dir.display()));
            truncate_metrics(&run_dir.join("metrics.jsonl"), step)?;
            (t, s)
        }
        None => (st.talker, TrainerState { step: 0, best_score: None, best_step: None }),
    };
    let mut model = freeze(
        TrainModule { blip: talker.blip, mask: talker.mask, gate }.map(&mut Renumber(0)),
        &cfg.trainable,
        cfg.frozen_weights.resolve(on_gpu(&cfg.devices)),
    );

    let texts = Texts { cfg: &mcfg, t5: &run.t5_tok, bert: &run.bert_tok };
    let s = mcfg.vision.image_size;
    let msize = mcfg.mask_branch.as_ref().map_or(s, |m| m.mask_size);
    // decoded images and fixed inputs (no augmentation): built once per sample
    let mut fixed: HashMap<usize, Prepared> = HashMap::new();
    let mut images: HashMap<usize, Arc<(RgbImage, Option<GrayImage>)>> = HashMap::new();
    let mut cache = FeatureCache { map: HashMap::new() };
    if cfg.cache_vision_features {
        let frozen = model.blip.vision_model.valid();
        let t0 = Instant::now();
        for start_i in (0..train.len()).step_by(8) {
            let idx: Vec<usize> = (start_i..(start_i + 8).min(train.len())).collect();
            let mut px = Vec::with_capacity(idx.len() * 3 * s * s);
            for &i in &idx {
                px.extend(pixels(&open_rgb(&train[i].image)?, &mcfg.preprocess));
            }
            let x = Tensor::<4>::from_data(TensorData::new(px, [idx.len(), 3, s, s]), &device);
            let f: Vec<f32> = frozen
                .features(&mcfg.vision, x)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| TalkerError::Input(format!("reading features back: {e:?}")))?;
            let per = f.len() / idx.len();
            for (k, &i) in idx.iter().enumerate() {
                cache.map.insert(i, Arc::new(f[k * per..(k + 1) * per].to_vec()));
            }
        }
        progress.note(&format!("cached the vision features of {} images in {:.1} s", train.len(), t0.elapsed().as_secs_f64()));
    }

    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("metrics.jsonl"))
        .map_err(|e| TalkerError::io(&run_dir.join("metrics.jsonl"), e))?;
    let mut perm = None;
    let mut stopped = false;
    let mut last_ckpt = state.step;

    while state.step < cfg.steps {
        let step = state.step;
        let t0 = Instant::now();
        let idx = batch_indices(cfg.seed, train.len(), cfg.batch_size, step, &mut perm);
        // per-sample inputs
        let mut prepared = Vec::with_capacity(idx.len());
        let mut need_fpn = Vec::new();
        for (j, &i) in idx.iter().enumerate() {
            let smp = &train[i];
            if !cfg.augment
                && let Some(p) = fixed.get(&i)
            {
                prepared.push(p.clone());
                continue;
            }
            let pair = match images.get(&i) {
                Some(p) => p.clone(),
                None => {
                    let img = open_rgb(&smp.image)?;
                    let mask = smp.mask.as_deref().map(open_mask).transpose()?;
                    let p = Arc::new((img, mask));
                    // without augmentation `fixed` keeps the prepared inputs instead
                    if cfg.augment {
                        images.insert(i, p.clone());
                    }
                    p
                }
            };
            let (img, mask) = (&pair.0, pair.1.as_ref());
            let (px, mplane) = if cfg.augment {
                let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x2545f4914f6cdd1d) ^ step.wrapping_mul(0x9e37) ^ j as u64);
                let (x, y, w, h) = random_resized_crop(img.width(), img.height(), &mut rng);
                let flip = rng.random_bool(0.5);
                let mut crop = image::imageops::crop_imm(img, x, y, w, h).to_image();
                if flip {
                    crop = image::imageops::flip_horizontal(&crop);
                }
                let px = pixels(&pil_resize(&crop, s as u32, s as u32, Filter::Bicubic), &mcfg.preprocess);
                let mp = mask.map(|m| {
                    if cfg.align_masks {
                        // mask coordinates scaled to the mask's own size
                        let (sx, sy) = (m.width() as f64 / img.width() as f64, m.height() as f64 / img.height() as f64);
                        let (mx, my) = ((x as f64 * sx) as u32, (y as f64 * sy) as u32);
                        let (mw, mh) = (((w as f64 * sx).round() as u32).max(1), ((h as f64 * sy).round() as u32).max(1));
                        let mut c = image::imageops::crop_imm(m, mx, my, mw.min(m.width() - mx), mh.min(m.height() - my)).to_image();
                        if flip {
                            c = image::imageops::flip_horizontal(&c);
                        }
                        mask_plane(&c, msize)
                    } else {
                        mask_plane(m, msize)
                    }
                });
                (px, mp)
            } else {
                (pixels(img, &mcfg.preprocess), mask.map(|m| mask_plane(m, msize)))
            };
            let words = match cfg.regions {
                RegionSource::Gt => words_of(&smp.labels),
                RegionSource::None => Vec::new(),
                RegionSource::Fpn => {
                    need_fpn.push(prepared.len());
                    Vec::new()
                }
            };
            let (q, t, l) = texts.prompt(&words)?;
            let target = texts.target(&smp.caption, cfg.normalize_captions, cfg.max_target_tokens)?;
            let p = Prepared {
                pixels: Arc::new(px),
                mask: mplane,
                qformer_ids: q,
                t5_ids: t,
                label_ids: l,
                target,
                gate_words: Vec::new(),
                gate_targets: Vec::new(),
            };
            prepared.push(p);
        }
        if !need_fpn.is_empty()
            && let Some(fpn) = &run.fpn
        {
            let px: Vec<f32> = need_fpn.iter().flat_map(|k| prepared[*k].pixels.iter().copied()).collect();
            let words = fpn_words(fpn, px, need_fpn.len())?;
            for (k, w) in need_fpn.iter().zip(words) {
                let (q, t, l) = texts.prompt(&w)?;
                if cfg.gate.is_some() {
                    let labels = &train[idx[*k]].labels;
                    let mut ids = Vec::with_capacity(w.len());
                    let mut targets = Vec::with_capacity(w.len());
                    for word in &w {
                        ids.push(run.bert_tok.encode(word, 512)?);
                        let at = LABELS.iter().position(|l| l == word).unwrap_or(0);
                        targets.push(if labels[at] { 1.0 } else { 0.0 });
                    }
                    (prepared[*k].gate_words, prepared[*k].gate_targets) = (ids, targets);
                }
                let p = &mut prepared[*k];
                (p.qformer_ids, p.t5_ids, p.label_ids) = (q, t, l);
            }
        }
        if !cfg.augment {
            for (&i, p) in idx.iter().zip(&prepared) {
                fixed.entry(i).or_insert_with(|| p.clone());
            }
        }

        // the global batch's normalisers
        let t_max = prepared.iter().map(|p| p.target.len()).max().unwrap_or(1);
        let counts = Counts {
            tokens: prepared.iter().map(|p| p.target.len()).sum(),
            mask_pixels: prepared.iter().filter(|p| p.mask.is_some()).count() * msize * msize,
            batch: prepared.len(),
        };
        let shards: Vec<ShardInput> = parallel::shard_ranges(prepared.len(), devices.len())
            .into_iter()
            .map(|r| {
                let part = &prepared[r.clone()];
                let part_idx = &idx[r];
                let mut mask_rows = Vec::new();
                let mut mask_targets = Vec::new();
                for (k, p) in part.iter().enumerate() {
                    if let Some(m) = &p.mask {
                        mask_rows.push(k);
                        mask_targets.extend_from_slice(m);
                    }
                }
                let features = cfg.cache_vision_features.then(|| part_idx.iter().flat_map(|i| cache.map[i].iter().copied()).collect());
                ShardInput {
                    pixels: if cfg.cache_vision_features {
                        Vec::new()
                    } else {
                        part.iter().flat_map(|p| p.pixels.iter().copied()).collect()
                    },
                    features,
                    n: part.len(),
                    qformer_ids: part.iter().map(|p| p.qformer_ids.clone()).collect(),
                    t5_ids: part.iter().map(|p| p.t5_ids.clone()).collect(),
                    label_ids: part.iter().map(|p| p.label_ids.clone()).collect(),
                    decoder_ids: part
                        .iter()
                        .map(|p| {
                            let mut d = vec![mcfg.text.decoder_start_token_id];
                            d.extend_from_slice(&p.target[..p.target.len() - 1]);
                            d.resize(t_max, mcfg.text.pad_token_id);
                            d
                        })
                        .collect(),
                    targets: part
                        .iter()
                        .map(|p| {
                            let mut t: Vec<i64> = p.target.iter().map(|x| *x as i64).collect();
                            t.resize(t_max, IGNORE);
                            t
                        })
                        .collect(),
                    mask_rows,
                    mask_targets,
                    gate_words: part.iter().map(|p| p.gate_words.clone()).collect(),
                    gate_targets: part.iter().map(|p| p.gate_targets.clone()).collect(),
                    gate_pad,
                }
            })
            .collect();
        let (mut grads, outs) =
            parallel::data_parallel(&model, &devices, shards, |m, input, _| shard_forward(m, &mcfg, cfg, gate_cfg.as_ref(), input, counts))
                .map_err(TalkerError::Data)?;
        let lm_loss = outs.iter().map(|o| o.lm_sum).sum::<f64>() / counts.tokens.max(1) as f64;
        let mask_loss = outs.iter().map(|o| o.mask_sum).sum::<f64>() / counts.mask_pixels.max(1) as f64;
        let gate_loss = outs.iter().map(|o| o.gate_sum).sum::<f64>() / counts.batch.max(1) as f64;
        let loss = lm_loss + cfg.mask_weight * mask_loss + cfg.gate.as_ref().map_or(0.0, |g| g.weight * gate_loss);
        if !loss.is_finite() {
            return Err(TalkerError::Data(format!("the loss became {loss} at step {step}: lower lr (now {}) or enable grad_clip", cfg.lr)));
        }
        if let Some(max) = cfg.grad_clip {
            parallel::clip_global_norm(&model, &mut grads, max);
        }
        let (g_decay, g_rest) = parallel::split_decay(&model, grads);
        let lr = cfg.lr_at(step);
        model = opts.0.step(lr, model, g_decay);
        model = opts.1.step(lr, model, g_rest);
        state.step += 1;
        let r = TalkerStepReport {
            step: state.step,
            total_steps: cfg.steps,
            loss,
            lm_loss,
            mask_loss,
            gate_loss,
            lr,
            images_per_s: idx.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        let _ = writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": r.step, "loss": r.loss, "lm_loss": lm_loss, "mask_loss": mask_loss, "gate_loss": gate_loss, "lr": r.lr, "images_per_s": r.images_per_s})
        );
        let control = progress.step(&r);

        let done = state.step == cfg.steps;
        if state.step.is_multiple_of(cfg.eval_every) || done {
            let (cider, bleu4) = run.validate(&model, val)?;
            let score = cider + bleu4;
            let best = !val.is_empty() && state.best_score.is_none_or(|b| score > b);
            if best {
                state.best_score = Some(score);
                state.best_step = Some(state.step);
            }
            let _ = writeln!(
                metrics,
                "{}",
                serde_json::json!({"step": state.step, "cider": cider, "bleu4": bleu4, "score": score, "best": best})
            );
            progress.validated(&TalkerValReport { step: state.step, cider, bleu4, score, best });
            let dir = run.save(&model, &opts, &state)?;
            last_ckpt = state.step;
            progress.checkpoint(state.step, &dir);
            if best || (val.is_empty() && done) {
                copy_dir(&dir, &run_dir.join("best"))?;
            }
        } else if state.step.is_multiple_of(cfg.checkpoint_every) || control == Control::Stop {
            let dir = run.save(&model, &opts, &state)?;
            last_ckpt = state.step;
            progress.checkpoint(state.step, &dir);
        }
        if control == Control::Stop && !done {
            stopped = true;
            break;
        }
    }
    if last_ckpt != state.step {
        run.save(&model, &opts, &state)?;
    }
    let last_dir = run.latest()?.map(|(_, d)| d).unwrap_or_else(|| run.checkpoints());
    Ok(TalkerOutcome {
        last_step: state.step,
        stopped,
        best_score: state.best_score,
        best_step: state.best_step,
        best_dir: run_dir.join("best"),
        last_dir,
    })
}

/// `mmtt bench talker-train`'s figures for one case.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub images_per_s: f64,
    pub steps: u64,
    pub cached: bool,
    pub seconds: f64,
}

/// Trains `preset` (random weights) on 32 synthetic images for `steps` steps of `batch`, with or
/// without cached vision features, without validation; the caller measures peak memory.
pub fn bench_train(
    preset: &str,
    batch: usize,
    steps: u64,
    cache_vision_features: bool,
    devices: &[String],
) -> Result<TrainBench, TalkerError> {
    let mcfg = TalkerConfig::preset(preset)?;
    let root = std::env::temp_dir().join(format!("mmtt-bench-talker-train-{}-{}", std::process::id(), cache_vision_features));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| TalkerError::io(&root, e))?;
    let s = mcfg.vision.image_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let samples: Vec<TalkerSample> = (0..32)
        .map(|i| {
            let img = RgbImage::from_fn(s, s, |_, _| image::Rgb([rng.random(), rng.random(), rng.random()]));
            let mask = GrayImage::from_fn(s, s, |x, y| image::Luma([if (x + y + i) % 7 < 3 { 255 } else { 0 }]));
            let (ip, mp) = (root.join(format!("{i}.png")), root.join(format!("{i}-mask.png")));
            img.save(&ip).map_err(|e| TalkerError::Input(e.to_string()))?;
            mask.save(&mp).map_err(|e| TalkerError::Input(e.to_string()))?;
            Ok(TalkerSample {
                id: i.to_string(),
                image: ip,
                mask: Some(mp),
                caption: "the eye and the mouth look blurred and smeared".into(),
                labels: [false; 21],
            })
        })
        .collect::<Result<_, TalkerError>>()?;
    let cfg = TalkerTrainConfig {
        preset: preset.into(),
        steps,
        batch_size: batch,
        warmup_steps: 1,
        cache_vision_features,
        checkpoint_every: steps + 1,
        eval_every: steps + 1,
        devices: devices.to_vec(),
        ..TalkerTrainConfig::tiny()
    };
    struct Timer(Vec<f64>);
    impl TalkerProgress for Timer {
        fn step(&mut self, r: &TalkerStepReport) -> Control {
            self.0.push(r.images_per_s);
            Control::Continue
        }
    }
    let mut timer = Timer(Vec::new());
    let t0 = Instant::now();
    train(&cfg, &samples, &[], &root.join("run"), &mut timer)?;
    let seconds = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&root);
    // the first step builds caches; the rate is over the others
    let rest = if timer.0.len() > 1 { &timer.0[1..] } else { &timer.0[..] };
    let images_per_s = rest.len() as f64 / rest.iter().map(|r| 1.0 / r.max(1e-12)).sum::<f64>().max(1e-12);
    Ok(TrainBench { images_per_s, steps, cached: cache_vision_features, seconds })
}
