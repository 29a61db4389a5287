//! Stage-2 training jobs (`train` jobs with `model = "talker"`): ForgeryTalker's explainer and
//! mask decoder (`mmtt_model::talker::train`) trained on the accepted triplets: the forged image,
//! its forgery mask and the accepted explanation (the caption), the caption's regions from the
//! region extractor.
//!
//! - [`TalkerTrainSpec`]: a [`TalkerTrainConfig`] (the TOML of `mmtt train talker --config`, or
//!   the Train page's stage-2 form), the run folder and the `[data]` table; [`check_config`]
//!   refuses what cannot run, naming the key and the fix, before anything is stored.
//! - [`run`]: the samples (train split for training, validation for choosing the best checkpoint
//!   by CIDEr + BLEU-4), frozen in the run folder so a resumed run trains on the same ones, then
//!   the trainer on a blocking thread, followed by the FPN's [`super::drive`]: progress (done =
//!   step, total = steps, rate = images/s), every step's loss, text loss, mask loss and learning
//!   rate and every validation's CIDEr, BLEU-4 and score into `train_metrics`, events. Pause and
//!   cancel set the [`super::Live`] stop flag: the trainer checkpoints and returns; resume, retry
//!   and a takeover run the job again and the trainer resumes from the run folder.

use super::{
    Frozen, Live, Msg, Reporter, StepFigures, TrainModel, ValFigures, check_run_dir, drive, has_checkpoint, labels21, no_samples,
    split_data,
};
use crate::app::App;
use crate::dataset::talker_training;
use crate::dataset::training::TrainData;
use crate::jobs::SpecError;
use anyhow::{Result, anyhow};
use indicatif::ProgressBar;
use mmtt_model::fpn::Control;
use mmtt_model::talker::train::{
    self as trainer, RegionSource, TalkerProgress, TalkerSample, TalkerStepReport, TalkerTrainConfig, TalkerValReport,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use uuid::Uuid;

/// A stage-2 training job's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TalkerTrainSpec {
    pub config: TalkerTrainConfig,
    /// Where checkpoints, `run.toml` and `metrics.jsonl` go; a folder holding a run of the same
    /// config is resumed.
    pub run_dir: PathBuf,
    #[serde(default)]
    pub data: TrainData,
}

impl TalkerTrainSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_config(&self.config)?;
        self.data.check().map_err(|m| SpecError::new("data", m))?;
        check_run_dir(&self.run_dir)
    }
}

/// The config's keys, for naming the field of the trainer's own refusals.
const KEYS: [&str; 32] = [
    "preset",
    "init",
    "fpn",
    "regions",
    "trainable",
    "steps",
    "batch_size",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "adam_eps",
    "beta1",
    "beta2",
    "grad_clip",
    "seed",
    "max_target_tokens",
    "normalize_captions",
    "mask_loss",
    "mask_weight",
    "augment",
    "align_masks",
    "cache_vision_features",
    "checkpoint_every",
    "eval_every",
    "keep_checkpoints",
    "devices",
    "eval_beams",
    "eval_max_new_tokens",
    "eval_limit",
    "double_sigmoid",
    "gate",
];

/// The key a message names first (as a whole word), else `config`.
fn field_of(message: &str) -> &'static str {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut best: Option<(usize, &'static str)> = None;
    for k in KEYS {
        let mut from = 0;
        while let Some(i) = message[from..].find(k).map(|i| i + from) {
            let before = message[..i].chars().next_back().is_none_or(|c| !word(c));
            let after = message[i + k.len()..].chars().next().is_none_or(|c| !word(c));
            if before && after {
                if best.is_none_or(|(b, _)| i < b) {
                    best = Some((i, k));
                }
                break;
            }
            from = i + k.len();
        }
    }
    best.map(|(_, k)| k).unwrap_or("config")
}

/// The checks a stage-2 config gets before anything is stored; each names the key and the fix.
pub fn check_config(c: &TalkerTrainConfig) -> Result<(), SpecError> {
    match &c.init {
        None if !mmtt_model::talker::PRESETS.contains(&c.preset.as_str()) => {
            return Err(SpecError::new(
                "preset",
                format!(
                    "unknown preset `{}`: choose {}, or give init = a checkpoint folder to start from",
                    c.preset,
                    mmtt_model::talker::PRESETS.join(", ")
                ),
            ));
        }
        None => {}
        Some(p) if !p.is_dir() => {
            return Err(SpecError::new(
                "init",
                format!(
                    "{} is not a folder on the server: give a checkpoint folder (an InstructBLIP / ForgeryTalker directory with config.json, \
                     or the release's model_parameter/), or leave it empty to start from the preset",
                    p.display()
                ),
            ));
        }
        Some(_) => {}
    }
    if let Some(f) = &c.fpn
        && !f.is_dir()
    {
        return Err(SpecError::new(
            "fpn",
            format!("{} is not a folder on the server: give a stage-1 checkpoint folder (the best/ of a finished FPN run)", f.display()),
        ));
    }
    if c.regions == RegionSource::Fpn && c.fpn.is_none() && c.init.is_none() {
        return Err(SpecError::new(
            "fpn",
            "regions = fpn fills the instruction with a stage-1 FPN's regions: give the FPN checkpoint folder (the best/ of a finished \
             FPN run), or choose regions gt (the caption's regions) or none",
        ));
    }
    if c.steps == 0 {
        return Err(SpecError::new("steps", "0 steps trains nothing: give at least 1"));
    }
    if c.batch_size == 0 {
        return Err(SpecError::new("batch_size", "must be at least 1"));
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        return Err(SpecError::new("lr", "the learning rate must be a positive number, such as 1e-5"));
    }
    if !(c.min_lr.is_finite() && c.min_lr >= 0.0 && c.min_lr <= c.lr) {
        return Err(SpecError::new("min_lr", format!("the final learning rate must be between 0 and lr ({})", c.lr)));
    }
    if c.warmup_steps > c.steps {
        return Err(SpecError::new(
            "warmup_steps",
            format!("{} warm-up steps is more than the {} steps of the run", c.warmup_steps, c.steps),
        ));
    }
    if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
        return Err(SpecError::new("weight_decay", "must be 0 or a positive number (the paper: 0.05)"));
    }
    if !(c.adam_eps.is_finite() && c.adam_eps > 0.0) {
        return Err(SpecError::new("adam_eps", "must be a positive number, such as 1e-8"));
    }
    for (field, b) in [("beta1", c.beta1), ("beta2", c.beta2)] {
        if !(0.0..1.0).contains(&b) {
            return Err(SpecError::new(field, format!("{b} is not in [0, 1): AdamW's usual values are 0.9 and 0.999")));
        }
    }
    if c.grad_clip.is_some_and(|g| !(g.is_finite() && g > 0.0)) {
        return Err(SpecError::new("grad_clip", "must be a positive number, or 0 for no clipping"));
    }
    if !(c.mask_weight.is_finite() && c.mask_weight >= 0.0) {
        return Err(SpecError::new("mask_weight", "must be 0 (no mask loss) or a positive number (the paper: 1)"));
    }
    if c.max_target_tokens == 0 {
        return Err(SpecError::new("max_target_tokens", "must be at least 1 (the release: 60)"));
    }
    if c.checkpoint_every == 0 {
        return Err(SpecError::new("checkpoint_every", "must be at least 1 (steps between checkpoints)"));
    }
    if c.eval_every == 0 {
        return Err(SpecError::new("eval_every", "must be at least 1 (steps between validations)"));
    }
    if c.eval_beams == 0 {
        return Err(SpecError::new("eval_beams", "must be at least 1 (1: greedy decoding)"));
    }
    if c.eval_max_new_tokens == 0 {
        return Err(SpecError::new("eval_max_new_tokens", "must be at least 1"));
    }
    if c.cache_vision_features && c.augment {
        return Err(SpecError::new(
            "cache_vision_features",
            "cached vision features need the same image every epoch: switch augment off, or do not cache",
        ));
    }
    if c.devices.is_empty() {
        return Err(SpecError::new("devices", "give at least one device: cpu, or cuda:0,cuda:1,..."));
    }
    mmtt_model::parallel::parse_devices(&c.devices).map_err(|e| {
        SpecError::new(
            "devices",
            format!(
                "{e}: give cpu, cpu:0,cpu:1 (two CPU replicas) or cuda:0,cuda:1,... (cuda needs the `cuda` feature), separated by commas"
            ),
        )
    })?;
    // the trainer's own checks (the model shape, the parts, the mask loss)
    c.validate().map_err(|e| {
        let m = e.to_string();
        SpecError::new(field_of(&m), m)
    })
}

/// A stage-2 config file: the trainer's settings (top level, and `[mask_loss]`) and `[data]`.
#[derive(Debug, Clone)]
pub struct TalkerConfigFile {
    pub config: TalkerTrainConfig,
    pub data: TrainData,
}

/// Reads a stage-2 config file (TOML): every top-level key a [`TalkerTrainConfig`] field
/// (unknown keys refused), the optional `[data]` table a [`TrainData`] (the FPN's). Errors name
/// the key and, where the parser knows it, the line.
pub fn parse_config(text: &str) -> Result<TalkerConfigFile> {
    let (model_text, data) = split_data(text)?;
    let config = TalkerTrainConfig::from_toml(&model_text).map_err(|e| anyhow!("{e}"))?;
    Ok(TalkerConfigFile { config, data })
}

/// A config file as it would be written: the trainer's settings, then `[data]`.
pub fn config_text(c: &TalkerConfigFile) -> Result<String> {
    let mut s = c.config.to_toml();
    s.push_str("\n[data]\n");
    s.push_str(&toml::to_string(&c.data).map_err(|e| anyhow!("writing [data] as TOML: {e}"))?);
    Ok(s)
}

/// What a finished (or stopped) stage-2 training job produced.
#[derive(Debug, Clone, Serialize)]
pub struct TalkerSummary {
    pub model: TrainModel,
    pub run_dir: PathBuf,
    pub last_step: u64,
    pub total_steps: u64,
    pub stopped: bool,
    /// The best validation CIDEr + BLEU-4, its step and its checkpoint (loadable by
    /// `mmtt_model::talker::Explainer::load`).
    pub best_score: Option<f64>,
    pub best_step: Option<u64>,
    pub best_dir: PathBuf,
    pub last_dir: PathBuf,
    pub train_samples: usize,
    pub val_samples: usize,
    pub regions: RegionSource,
    pub fpn: Option<PathBuf>,
    /// The step this run started from (> 0: resumed from the run folder).
    pub resumed_from: u64,
    pub final_loss: Option<f64>,
    pub images_per_s: Option<f64>,
    pub seconds: f64,
}

impl TalkerSummary {
    /// The checkpoint to use: `best/` when validation chose one, else the last.
    pub fn checkpoint(&self) -> &Path {
        if self.best_score.is_some() && self.best_dir.is_dir() { &self.best_dir } else { &self.last_dir }
    }
}

impl TalkerProgress for Reporter {
    fn step(&mut self, r: &TalkerStepReport) -> Control {
        self.stepped(StepFigures {
            step: r.step,
            total: r.total_steps,
            loss: r.loss,
            lm_loss: Some(r.lm_loss),
            mask_loss: Some(r.mask_loss),
            lr: r.lr,
            rate: r.images_per_s,
        })
    }
    fn validated(&mut self, r: &TalkerValReport) {
        self.send(Msg::Val {
            step: r.step,
            figures: ValFigures::Captions { cider: r.cider, bleu4: r.bleu4, score: r.score },
            best: r.best,
        });
    }
    fn checkpoint(&mut self, step: u64, dir: &Path) {
        self.send(Msg::Checkpoint { step, dir: dir.to_path_buf() });
    }
    fn note(&mut self, msg: &str) {
        self.send(Msg::Note(msg.to_string()));
    }
}

/// A stage-2 sample as frozen in the run folder.
#[derive(Serialize, Deserialize)]
struct FrozenSample {
    id: String,
    image: PathBuf,
    mask: Option<PathBuf>,
    caption: String,
    labels: Vec<bool>,
}

impl FrozenSample {
    fn of(s: &TalkerSample) -> Self {
        FrozenSample {
            id: s.id.clone(),
            image: s.image.clone(),
            mask: s.mask.clone(),
            caption: s.caption.clone(),
            labels: s.labels.to_vec(),
        }
    }
    fn sample(self) -> Result<TalkerSample> {
        Ok(TalkerSample {
            labels: labels21(&self.id, self.labels)?,
            id: self.id,
            image: self.image,
            mask: self.mask,
            caption: self.caption,
        })
    }
}

/// The run's samples: those frozen in its folder when it has them, else built now from `data`
/// (and frozen). `true` when they were read back.
async fn run_samples(app: &App, spec: &TalkerTrainSpec) -> Result<(Vec<TalkerSample>, Vec<TalkerSample>, bool)> {
    if let Some(f) = Frozen::<FrozenSample>::read(&spec.run_dir).await? {
        let train = f.train.into_iter().map(FrozenSample::sample).collect::<Result<Vec<_>>>()?;
        let val = f.val.into_iter().map(FrozenSample::sample).collect::<Result<Vec<_>>>()?;
        return Ok((train, val, true));
    }
    let train = talker_training::samples(app, &spec.data, spec.data.train_split).await?;
    let val = match spec.data.val_split {
        Some(s) => talker_training::samples(app, &spec.data, s).await?,
        None => vec![],
    };
    if !train.is_empty() {
        let f = Frozen { train: train.iter().map(FrozenSample::of).collect(), val: val.iter().map(FrozenSample::of).collect() };
        f.write(&spec.run_dir).await?;
    }
    Ok((train, val, false))
}

/// Runs a stage-2 training job: samples, the trainer on a blocking thread, figures into the
/// database.
pub async fn run(app: &App, job: Uuid, spec: &TalkerTrainSpec, bar: ProgressBar, live: &Live, worker: &str) -> Result<TalkerSummary> {
    let t0 = Instant::now();
    let pool = &app.pool;
    let cfg = spec.config.clone();
    let (train, val, frozen) = run_samples(app, spec).await?;
    if train.is_empty() {
        return Err(no_samples(&spec.data));
    }
    let resuming = has_checkpoint(&spec.run_dir);
    let start = match &cfg.init {
        Some(p) => format!("from {}", p.display()),
        None => format!("preset {}", cfg.preset),
    };
    let fpn = cfg.fpn.as_ref().map(|p| format!(" (FPN {})", p.display())).unwrap_or_default();
    crate::jobs::event(
        pool,
        job,
        "info",
        Some(worker),
        &format!(
            "{}{} training samples ({}), {} validation samples ({}): the accepted captions and masks; {} {} ({start}), regions {}{fpn}, \
             {} steps of batch {} on {}{}",
            if frozen { "the run's own sample list: " } else { "" },
            train.len(),
            spec.data.train_split,
            val.len(),
            spec.data.val_split.map(|s| s.name()).unwrap_or("none"),
            if resuming { "resuming the run in" } else { "run folder" },
            spec.run_dir.display(),
            cfg.regions.name(),
            cfg.steps,
            cfg.batch_size,
            cfg.devices.join(","),
            if cfg.cache_vision_features { ", vision features cached" } else { "" }
        ),
    )
    .await?;
    let no_mask = train.iter().chain(&val).filter(|s| s.mask.is_none()).count();
    if no_mask > 0 {
        crate::jobs::event(pool, job, "warn", Some(worker), &format!("{no_mask} samples have no mask: no mask loss for them")).await?;
    }
    if val.is_empty() {
        crate::jobs::event(
            pool,
            job,
            "warn",
            Some(worker),
            "no validation samples: the best checkpoint cannot be chosen by CIDEr + BLEU-4",
        )
        .await?;
    }
    bar.set_length(cfg.steps);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut reporter = Reporter { tx, bar: bar.clone(), live: live.clone() };
    let (n_train, n_val) = (train.len(), val.len());
    let run_dir = spec.run_dir.clone();
    let handle = tokio::task::spawn_blocking(move || trainer::train(&cfg, &train, &val, &run_dir, &mut reporter));
    let d = drive(pool, job, worker, live, spec.config.steps, n_val, rx, handle).await?;
    let o = match d.out {
        Ok(o) => o,
        Err(e) => return Err(anyhow::Error::new(e).context("training failed")),
    };
    Ok(TalkerSummary {
        model: TrainModel::Talker,
        run_dir: spec.run_dir.clone(),
        last_step: o.last_step,
        total_steps: spec.config.steps,
        stopped: o.stopped,
        best_score: o.best_score,
        best_step: o.best_step,
        best_dir: o.best_dir,
        last_dir: o.last_dir,
        train_samples: n_train,
        val_samples: n_val,
        regions: spec.config.regions,
        fpn: spec.config.fpn.clone(),
        resumed_from: super::resumed_from(d.first, o.last_step),
        final_loss: d.last_loss,
        images_per_s: d.last_rate,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_key() {
        assert_eq!(field_of("steps: 0 steps trains nothing"), "steps");
        assert_eq!(field_of("min_lr must be below lr"), "min_lr", "a key inside another is not matched");
        assert_eq!(field_of("cache_vision_features needs augment = false"), "cache_vision_features");
        assert_eq!(field_of("something else"), "config");
        let ok = TalkerTrainConfig { regions: RegionSource::Gt, ..TalkerTrainConfig::tiny() };
        check_config(&ok).unwrap();
        for (c, field) in [
            (TalkerTrainConfig { steps: 0, ..ok.clone() }, "steps"),
            (TalkerTrainConfig { batch_size: 0, ..ok.clone() }, "batch_size"),
            (TalkerTrainConfig { lr: 0.0, ..ok.clone() }, "lr"),
            (TalkerTrainConfig { preset: "huge".into(), ..ok.clone() }, "preset"),
            (TalkerTrainConfig { devices: vec!["tpu:0".into()], ..ok.clone() }, "devices"),
            (TalkerTrainConfig { devices: vec![], ..ok.clone() }, "devices"),
            (TalkerTrainConfig { regions: RegionSource::Fpn, fpn: None, ..ok.clone() }, "fpn"),
            (TalkerTrainConfig { fpn: Some("/nonexistent/fpn".into()), ..ok.clone() }, "fpn"),
            (TalkerTrainConfig { init: Some("/nonexistent/init".into()), ..ok.clone() }, "init"),
            (TalkerTrainConfig { cache_vision_features: true, augment: true, ..ok.clone() }, "cache_vision_features"),
            (TalkerTrainConfig { warmup_steps: ok.steps + 1, ..ok.clone() }, "warmup_steps"),
        ] {
            assert_eq!(check_config(&c).unwrap_err().field, field, "{c:?}");
        }
    }

    #[test]
    fn config_files_with_data_and_old_fpn_params_read() {
        let c = parse_config("preset = \"tiny\"\nsteps = 7\nregions = \"gt\"\n[data]\nlimit = 4\n").unwrap();
        assert_eq!((c.config.preset.as_str(), c.config.steps, c.config.regions), ("tiny", 7, RegionSource::Gt));
        assert_eq!(c.data.limit, Some(4));
        let again = parse_config(&config_text(&c).unwrap()).unwrap();
        assert_eq!(again.config, c.config);
        assert_eq!(again.data, c.data);
        let e = parse_config("preset = \"tiny\"\nstepz = 3\n").unwrap_err().to_string();
        assert!(e.contains("stepz"), "{e}");
        // a train job's params: the stage-2 spec round-trips, and an FPN job stored before stage 2 still reads
        let spec = crate::jobs::JobSpec::Train(super::super::TrainSpec::Talker(Box::new(TalkerTrainSpec {
            config: c.config.clone(),
            run_dir: "/r".into(),
            data: c.data.clone(),
        })));
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!((v["kind"].as_str(), v["model"].as_str(), v["config"]["steps"].as_u64()), (Some("train"), Some("talker"), Some(7)));
        let back: crate::jobs::JobSpec = serde_json::from_value(v).unwrap();
        assert!(matches!(back, crate::jobs::JobSpec::Train(super::super::TrainSpec::Talker(ref t)) if t.config == c.config));
        let old = serde_json::json!({
            "kind": "train", "model": "fpn", "run_dir": "/runs/fpn-1",
            "config": serde_json::to_value(mmtt_model::fpn::TrainConfig::tiny()).unwrap(),
            "data": {"source": "db", "train_split": "train", "val_split": "validation", "include_unreviewed": false, "limit": 16},
        });
        let old: crate::jobs::JobSpec = serde_json::from_value(old).unwrap();
        let crate::jobs::JobSpec::Train(super::super::TrainSpec::Fpn(f)) = old else { panic!("an FPN job: {old:?}") };
        assert_eq!((f.config.preset.as_str(), f.data.limit), ("tiny", Some(16)));
        // and an FPN job without `data` (before [data] existed)
        let older = serde_json::json!({"kind": "train", "model": "fpn", "run_dir": "/r", "config": serde_json::to_value(mmtt_model::fpn::TrainConfig::tiny()).unwrap()});
        assert!(matches!(
            serde_json::from_value::<crate::jobs::JobSpec>(older).unwrap(),
            crate::jobs::JobSpec::Train(super::super::TrainSpec::Fpn(_))
        ));
    }
}
