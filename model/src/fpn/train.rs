//! The FPN trainer: AdamW (epsilon and weight decay set explicitly, since burn's defaults are not
//! PyTorch's), linear warm-up then cosine decay, clipping of the global gradient norm, seeded
//! initialisation, data order, augmentation and dropout.
//!
//! A run lives in one directory:
//! - `run.toml`: the [`TrainConfig`]; `data.json`: the fingerprint of the training set;
//! - `metrics.jsonl`: one line per step (`step, loss, lr, images_per_s`) and per validation (`plm`);
//! - `checkpoints/step-N/`: the weights in the Hugging Face layout (loadable by transformers and by
//!   [`Predictor`](super::Predictor)), `optimizer.bpk` (burnpack) and `trainer_state.json`;
//!   `checkpoints/latest` names the newest complete one (written last, so a crash mid-write leaves
//!   the previous one in force);
//! - `best/`: the checkpoint with the best validation PLM.
//!
//! Step `s` is a pure function of the weights, the optimizer state, the data and `(seed, s)`:
//! batch `s` covers positions `s*B .. (s+1)*B` of the stream of epochs, epoch `e` being a
//! ChaCha permutation seeded by `(seed, e)`; flips and dropout masks are drawn from streams keyed
//! by `(seed, s)`. So a run started again in the same directory resumes from its latest
//! checkpoint and reaches the same weights, bit for bit on the CPU, as an uninterrupted run.

use super::config::{FpnConfig, Preprocess};
use super::face_vit::{FaceVit, Init, Noise};
use super::loss::LossConfig;
use super::predict::{Predictor, parse_device};
use super::weights::{self, Layout, write_json};
use super::{FpnError, LABELS};
use crate::eval::labels::score_sets;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where a sample's 21 labels come from (the platform resolves it when it builds [`Sample`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelSource {
    /// The reference region extractor over the accepted caption (the authors' way).
    #[default]
    Extractor,
    /// The annotators' region chips.
    Chips,
}

/// A training run's settings, read from TOML (`mmtt train fpn --config FILE.toml`). Keys left out
/// take the `paper` config's values ([`TrainConfig::paper`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Model shape: one of [`FpnConfig::PRESETS`].
    pub preset: String,
    /// The convolution branch (`false` gives the plain-ViT rows of Table 4).
    pub conv_branch: bool,
    /// Start from these weights (a HF ViT directory or a release `.bin`); tensors whose shape
    /// differs (another head) or that the file lacks (the convolution branch) keep their seeded
    /// initialisation and are listed in the run's log.
    pub init: Option<PathBuf>,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_eps: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Clip the global gradient norm to this value; `0` in TOML: no clipping.
    #[serde(with = "crate::parallel::grad_clip_toml")]
    pub grad_clip: Option<f64>,
    pub seed: u64,
    pub loss: LossConfig,
    /// Augmentation: random horizontal flips (probability 0.5).
    pub hflip: bool,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    /// Keep this many step checkpoints (the newest), besides `best/`.
    pub keep_checkpoints: usize,
    pub labels: LabelSource,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Data-parallel devices (`cpu:0`, `cpu:1`, `cuda:0`, ...); empty: `device` alone. The
    /// global batch is split across them ([`crate::parallel`]).
    pub devices: Vec<String>,
    /// Override the preset's image size (for quick runs on small images).
    pub image_size: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl TrainConfig {
    /// The paper's settings: ViT-H/14 with the convolution branch, 125,000 steps of batch 16,
    /// lr 7.5e-3 with 125 warm-up steps, the paper loss with w = 0.2.
    pub fn paper() -> Self {
        TrainConfig {
            preset: "vit-h14".into(),
            conv_branch: true,
            init: None,
            steps: 125_000,
            batch_size: 16,
            lr: 7.5e-3,
            warmup_steps: 125,
            weight_decay: 0.01,
            adam_eps: 1e-8,
            beta1: 0.9,
            beta2: 0.999,
            grad_clip: Some(1.0),
            seed: 42,
            loss: LossConfig::default(),
            hflip: false,
            checkpoint_every: 1000,
            eval_every: 1000,
            keep_checkpoints: 3,
            labels: LabelSource::Extractor,
            device: "cpu".into(),
            devices: Vec::new(),
            image_size: None,
        }
    }

    /// A run that finishes on two CPU cores in minutes (the demo's and the tests' settings).
    pub fn tiny() -> Self {
        TrainConfig {
            preset: "tiny".into(),
            steps: 300,
            batch_size: 16,
            lr: 1e-3,
            warmup_steps: 20,
            checkpoint_every: 100,
            eval_every: 100,
            ..Self::paper()
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, FpnError> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| FpnError::Config(format!("training config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The model shape this run trains.
    pub fn model_config(&self) -> Result<FpnConfig, FpnError> {
        let mut m = FpnConfig::preset(&self.preset)?;
        m.conv_branch = self.conv_branch;
        if let Some(s) = self.image_size {
            m.image_size = s;
        }
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), FpnError> {
        let bad = |m: String| Err(FpnError::Config(m));
        self.model_config()?;
        self.loss.validate().map_err(FpnError::Config)?;
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr is {}; it must be a positive number", self.lr));
        }
        if self.checkpoint_every == 0 || self.eval_every == 0 {
            return bad("checkpoint_every and eval_every must be at least 1".into());
        }
        if let Some(c) = self.grad_clip
            && c <= 0.0
        {
            return bad(format!("grad_clip is {c}; it must be positive (0: no clipping)"));
        }
        parse_device(&self.device)?;
        let devices = self.device_list().map_err(FpnError::Config)?;
        if devices.len() > self.batch_size {
            return bad(format!(
                "{} devices for a global batch of {}: use batch_size >= the number of devices",
                devices.len(),
                self.batch_size
            ));
        }
        Ok(())
    }

    /// The devices a step runs on: `devices`, or `device` alone.
    pub fn device_list(&self) -> Result<Vec<Device>, String> {
        if self.devices.is_empty() {
            crate::parallel::parse_devices(std::slice::from_ref(&self.device)).map_err(|e| format!("device: {e}"))
        } else {
            crate::parallel::parse_devices(&self.devices).map_err(|e| format!("devices: {e}"))
        }
    }

    /// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine decay to 0 at `steps`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps.min(self.steps)).max(1) as f64;
        let t = (step - self.warmup_steps) as f64 / span;
        0.5 * self.lr * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

/// One training or evaluation example.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub image: PathBuf,
    pub labels: [bool; 21],
}

/// What the caller wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Checkpoint now and return (cancel or pause); the run resumes from here when started again.
    Stop,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValReport {
    pub step: u64,
    pub plm: f64,
    pub best: bool,
}

/// Receives the run's progress; [`Progress::step`] can stop the run.
pub trait Progress {
    fn step(&mut self, r: &StepReport) -> Control;
    fn validated(&mut self, _r: &ValReport) {}
    fn checkpoint(&mut self, _step: u64, _dir: &Path) {}
    fn note(&mut self, _msg: &str) {}
}

/// Progress that only prints nothing and never stops (tests, benchmarks).
pub struct Quiet;
impl Progress for Quiet {
    fn step(&mut self, _r: &StepReport) -> Control {
        Control::Continue
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Steps done (the next step to run).
    pub last_step: u64,
    pub stopped: bool,
    pub best_plm: Option<f64>,
    pub best_step: Option<u64>,
    pub best_dir: PathBuf,
    pub last_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    /// Steps done.
    step: u64,
    best_plm: Option<f64>,
    best_step: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DataFingerprint {
    train: usize,
    val: usize,
    /// FNV-1a over the training ids, images and labels, in order.
    hash: String,
}

fn fingerprint(train: &[Sample], val: &[Sample]) -> DataFingerprint {
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
        eat(&s.labels.map(|b| b as u8));
    }
    DataFingerprint { train: train.len(), val: val.len(), hash: format!("{h:016x}") }
}

/// Preprocessed images, kept in memory up to a budget so that epochs after the first decode nothing.
struct PixelCache {
    pre: Preprocess,
    map: HashMap<usize, Arc<Vec<f32>>>,
    bytes: usize,
    budget: usize,
}

impl PixelCache {
    fn get(&mut self, i: usize, s: &Sample) -> Result<Arc<Vec<f32>>, FpnError> {
        if let Some(p) = self.map.get(&i) {
            return Ok(p.clone());
        }
        let img = Preprocess::open(&s.image)?;
        let px = Arc::new(self.pre.pixels(&img, false));
        if self.bytes + px.len() * 4 <= self.budget {
            self.bytes += px.len() * 4;
            self.map.insert(i, px.clone());
        }
        Ok(px)
    }
}

/// Mirrors `[3, H, W]` values left to right.
fn flip(px: &[f32], h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; px.len()];
    for c in 0..3 {
        for y in 0..h {
            let row = c * h * w + y * w;
            for x in 0..w {
                out[row + x] = px[row + w - 1 - x];
            }
        }
    }
    out
}

/// The sample indices of batch `step`.
fn batch_indices(seed: u64, n: usize, bs: usize, step: u64, perm_cache: &mut Option<(u64, Vec<usize>)>) -> Vec<usize> {
    (0..bs as u64)
        .map(|j| {
            let pos = step * bs as u64 + j;
            let epoch = pos / n as u64;
            if perm_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut perm: Vec<usize> = (0..n).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e3779b97f4a7c15) ^ 0x5eed_0de7);
                perm.shuffle(&mut rng);
                *perm_cache = Some((epoch, perm));
            }
            perm_cache.as_ref().map_or(0, |(_, p)| p[(pos % n as u64) as usize])
        })
        .collect()
}

fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.adam_eps as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init()
}

/// The run directory's files.
struct RunDir {
    root: PathBuf,
}

impl RunDir {
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    fn latest(&self) -> Result<Option<(u64, PathBuf)>, FpnError> {
        let p = self.checkpoints().join("latest");
        match std::fs::read_to_string(&p) {
            Ok(name) => {
                let name = name.trim();
                let step = name
                    .strip_prefix("step-")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| FpnError::Checkpoint(format!("{}: `{name}` is not a step-N name", p.display())))?;
                Ok(Some((step, self.checkpoints().join(name))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FpnError::io(&p, e)),
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), FpnError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| FpnError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FpnError::io(path, e))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), FpnError> {
    let tmp = to.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| FpnError::io(&tmp, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| FpnError::io(from, e))? {
        let entry = entry.map_err(|e| FpnError::io(from, e))?;
        std::fs::copy(entry.path(), tmp.join(entry.file_name())).map_err(|e| FpnError::io(&entry.path(), e))?;
    }
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&tmp, to).map_err(|e| FpnError::io(to, e))
}

/// Validation PLM of the model on `val` (probabilities > 0.5 against the labels).
pub fn validate_plm(model: &FaceVit, cfg: &FpnConfig, pre: &Preprocess, device: &Device, val: &[Sample]) -> Result<f64, FpnError> {
    if val.is_empty() {
        return Ok(0.0);
    }
    let predictor = Predictor::from_model(model, cfg, pre, device);
    let paths: Vec<PathBuf> = val.iter().map(|s| s.image.clone()).collect();
    let probs = predictor.predict_paths(&paths)?;
    let sets: Vec<(Vec<bool>, Vec<bool>)> =
        val.iter().zip(&probs).map(|(s, p)| (s.labels.to_vec(), p.iter().map(|x| *x > 0.5).collect())).collect();
    Ok(score_sets(&sets, &LABELS).plm)
}

/// Trains (or resumes) the run in `run_dir`. See the module documentation.
pub fn train(
    cfg: &TrainConfig,
    train: &[Sample],
    val: &[Sample],
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Outcome, FpnError> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(FpnError::Data(
            "no training samples: the train split has no accepted annotations (accept some in review, or check the split)".into(),
        ));
    }
    let mcfg = cfg.model_config()?;
    let pre = Preprocess::for_config(&mcfg);
    let devices = cfg.device_list().map_err(FpnError::Config)?;
    let device = devices[0].clone();
    let ad = device.clone().autodiff();
    let run = RunDir { root: run_dir.to_path_buf() };
    std::fs::create_dir_all(run.checkpoints()).map_err(|e| FpnError::io(&run.checkpoints(), e))?;

    // The run's identity: a directory holds one configuration and one training set.
    let run_toml = run_dir.join("run.toml");
    let data_json = run_dir.join("data.json");
    let fp = fingerprint(train, val);
    match std::fs::read_to_string(&run_toml) {
        Ok(text) => {
            let old: TrainConfig = toml::from_str(&text).map_err(|e| FpnError::Checkpoint(format!("{}: {e}", run_toml.display())))?;
            if old != *cfg {
                return Err(FpnError::Checkpoint(format!(
                    "{} holds a run with another configuration; resume it with the same config or choose a new run directory",
                    run_dir.display()
                )));
            }
            let old_fp: DataFingerprint = std::fs::read_to_string(&data_json)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| FpnError::Checkpoint(format!("{} is missing or unreadable", data_json.display())))?;
            if old_fp != fp {
                return Err(FpnError::Checkpoint(format!(
                    "{} was trained on another data set ({} train / {} val samples, hash {}; now {} / {}, {}): \
                     resuming would change the data order; choose a new run directory",
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
        Err(e) => return Err(FpnError::io(&run_toml, e)),
    }

    // Model and optimizer: from the latest checkpoint, else seeded (and `init` weights).
    let mut optim = optimizer(cfg);
    let (mut model, mut state) = match run.latest()? {
        Some((step, dir)) => {
            let mut model = FaceVit::new(&mcfg, &mut Init::for_loading(&ad));
            weights::load_into(&mut model, Layout::HuggingFace, &dir.join("model.safetensors"), &|_| false)?;
            let opt_path = dir.join("optimizer.bpk");
            optim = optim.load(&opt_path).map_err(|e| FpnError::Checkpoint(format!("{}: {e:?}", opt_path.display())))?;
            let st: TrainerState = std::fs::read_to_string(dir.join("trainer_state.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| FpnError::Checkpoint(format!("{}: no readable trainer_state.json", dir.display())))?;
            if st.step != step {
                return Err(FpnError::Checkpoint(format!("{}: trainer_state says step {}", dir.display(), st.step)));
            }
            progress.note(&format!("resuming from {} (step {step})", dir.display()));
            truncate_metrics(&run_dir.join("metrics.jsonl"), step)?;
            (model, st)
        }
        None => {
            let mut model = FaceVit::new(&mcfg, &mut Init::new(cfg.seed, &ad));
            if let Some(init) = &cfg.init {
                let layout = if init.is_dir() { Layout::HuggingFace } else { Layout::Release };
                let file = if init.is_dir() { init.join("model.safetensors") } else { init.clone() };
                // Another head (ImageNet's 1000 classes) or no convolution branch: keep those seeded.
                let lenient = |p: &str| p.starts_with("classifier.") || p.starts_with("conv_branch.");
                let kept = weights::load_into(&mut model, layout, &file, &lenient)?;
                if !kept.is_empty() {
                    progress.note(&format!("init from {}: kept the seeded values of {}", init.display(), kept.join(", ")));
                }
            }
            (model, TrainerState { step: 0, best_plm: None, best_step: None })
        }
    };

    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("metrics.jsonl"))
        .map_err(|e| FpnError::io(&run_dir.join("metrics.jsonl"), e))?;
    let mut cache = PixelCache { pre: pre.clone(), map: HashMap::new(), bytes: 0, budget: 2 << 30 };
    let mut perm = None;
    let s = mcfg.image_size;
    let mut stopped = false;
    let mut last_ckpt = state.step;

    while state.step < cfg.steps {
        let step = state.step;
        let t0 = Instant::now();
        let idx = batch_indices(cfg.seed, train.len(), cfg.batch_size, step, &mut perm);
        let mut flips = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(31).wrapping_add(step) ^ 0xf11b);
        let mut px = Vec::with_capacity(idx.len() * 3 * s * s);
        let mut ys = Vec::with_capacity(idx.len() * 21);
        for &i in &idx {
            let p = cache.get(i, &train[i])?;
            if cfg.hflip && flips.random::<bool>() {
                px.extend(flip(&p, s, s));
            } else {
                px.extend_from_slice(&p);
            }
            ys.extend(train[i].labels.map(|b| if b { 1f32 } else { 0.0 }));
        }
        // data-parallel: contiguous shards, each loss scaled by its share of the global batch
        // (the losses are per-sample means, so shard_mean * b_k / B sums to the global mean)
        let b = idx.len();
        let shards: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = crate::parallel::shard_ranges(b, devices.len())
            .into_iter()
            .enumerate()
            .map(|(k, r)| (px[r.start * 3 * s * s..r.end * 3 * s * s].to_vec(), ys[r.start * 21..r.end * 21].to_vec(), r.len(), k))
            .collect();
        let (mut grads, losses) = crate::parallel::data_parallel(&model, &devices, shards, |m, (px, ys, n, k), _| {
            if n == 0 {
                return Ok((GradientsParams::new(), 0.0));
            }
            let dev = devices[k].clone().autodiff();
            let x = Tensor::<4>::from_data(TensorData::new(px, [n, 3, s, s]), &dev);
            let y = Tensor::<2>::from_data(TensorData::new(ys, [n, 21]), &dev);
            // one device: the step's dropout stream; several: one stream per shard
            let mut noise =
                if devices.len() == 1 { Noise::for_step(cfg.seed, step) } else { Noise::for_step(cfg.seed ^ ((k as u64 + 1) << 48), step) };
            let logits = m.forward(&mcfg, x, &mut noise);
            let loss = cfg.loss.loss(logits, y).mul_scalar(n as f64 / b as f64);
            let v: f64 = loss.clone().into_scalar::<f64>();
            Ok((GradientsParams::from_grads(loss.backward(), m), v))
        })
        .map_err(FpnError::Data)?;
        let loss_v: f64 = losses.iter().sum();
        if !loss_v.is_finite() {
            return Err(FpnError::Data(format!("the loss became {loss_v} at step {step}: lower lr (now {}) or enable grad_clip", cfg.lr)));
        }
        if let Some(max) = cfg.grad_clip {
            crate::parallel::clip_global_norm(&model, &mut grads, max);
        }
        let lr = cfg.lr_at(step);
        model = optim.step(lr, model, grads);
        state.step += 1;
        let r = StepReport {
            step: state.step,
            total_steps: cfg.steps,
            loss: loss_v,
            lr,
            images_per_s: idx.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        let _ = writeln!(metrics, "{}", serde_json::json!({"step": r.step, "loss": r.loss, "lr": r.lr, "images_per_s": r.images_per_s}));
        let control = progress.step(&r);

        let done = state.step == cfg.steps;
        if state.step % cfg.eval_every == 0 || done {
            let plm = validate_plm(&model, &mcfg, &pre, &device, val)?;
            let best = !val.is_empty() && state.best_plm.is_none_or(|b| plm > b);
            if best {
                state.best_plm = Some(plm);
                state.best_step = Some(state.step);
            }
            let _ = writeln!(metrics, "{}", serde_json::json!({"step": state.step, "plm": plm, "best": best}));
            progress.validated(&ValReport { step: state.step, plm, best });
            let dir = checkpoint(&run, cfg, &mcfg, &pre, &model, &optim, &state)?;
            last_ckpt = state.step;
            progress.checkpoint(state.step, &dir);
            if best || (val.is_empty() && done) {
                copy_dir(&dir, &run_dir.join("best"))?;
            }
        } else if state.step % cfg.checkpoint_every == 0 || control == Control::Stop {
            let dir = checkpoint(&run, cfg, &mcfg, &pre, &model, &optim, &state)?;
            last_ckpt = state.step;
            progress.checkpoint(state.step, &dir);
        }
        if control == Control::Stop && !done {
            stopped = true;
            break;
        }
    }
    if last_ckpt != state.step {
        checkpoint(&run, cfg, &mcfg, &pre, &model, &optim, &state)?;
    }
    let last_dir = run.latest()?.map(|(_, d)| d).unwrap_or_else(|| run.checkpoints());
    Ok(Outcome {
        last_step: state.step,
        stopped,
        best_plm: state.best_plm,
        best_step: state.best_step,
        best_dir: run_dir.join("best"),
        last_dir,
    })
}

/// Drops metric lines past `step` (they came from steps the resumed run will redo).
fn truncate_metrics(path: &Path, step: u64) -> Result<(), FpnError> {
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

fn checkpoint(
    run: &RunDir,
    cfg: &TrainConfig,
    mcfg: &FpnConfig,
    pre: &Preprocess,
    model: &FaceVit,
    optim: &ModuleOptimizer,
    state: &TrainerState,
) -> Result<PathBuf, FpnError> {
    let name = format!("step-{}", state.step);
    let dir = run.checkpoints().join(&name);
    let tmp = run.checkpoints().join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    weights::save_dir(model, mcfg, pre, &tmp)?;
    optim.save(tmp.join("optimizer.bpk")).map_err(|e| FpnError::Checkpoint(format!("saving the optimizer state: {e:?}")))?;
    write_json(&tmp.join("trainer_state.json"), &serde_json::to_value(state).unwrap_or_default())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| FpnError::io(&dir, e))?;
    write_atomic(&run.checkpoints().join("latest"), &name)?;
    // Keep the newest `keep_checkpoints` step directories.
    let mut steps: Vec<u64> = std::fs::read_dir(run.checkpoints())
        .map_err(|e| FpnError::io(&run.checkpoints(), e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    let keep = cfg.keep_checkpoints.max(1);
    if steps.len() > keep {
        for s in &steps[..steps.len() - keep] {
            let _ = std::fs::remove_dir_all(run.checkpoints().join(format!("step-{s}")));
        }
    }
    Ok(dir)
}
