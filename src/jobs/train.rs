//! Training jobs (kind `train`): ForgeryTalker's region prompter (stage 1, `mmtt_model::fpn`) and
//! its explainer and mask decoder (stage 2, `mmtt_model::talker::train`, see [`talker`]) trained on
//! the project's accepted triplets, as a job of the job system.
//!
//! - [`TrainSpec`]: which model ([`TrainModel`], the `model` key of the job's params: `fpn` or
//!   `talker`), its config (the TOML of `mmtt train fpn|talker --config`, or the admin's Train
//!   forms), the run folder, and where the samples come from ([`TrainData`], the config file's
//!   `[data]` table). [`parse_config`] reads an FPN config file, [`talker::parse_config`] a
//!   stage-2 one.
//! - [`run`]: builds the samples (train split for training, validation for choosing the best
//!   checkpoint, labels from the region extractor or the chips), then runs `fpn::train` on a
//!   blocking thread with a [`fpn::Progress`] that moves the job's progress (done = step, total =
//!   steps, rate = images/s), writes every step's loss and learning rate and every validation PLM
//!   into `train_metrics` ([`drive`], shared with [`talker::run`]), and logs events. When the job is paused or cancelled, the runner sets
//!   the [`Live`] stop flag: the trainer checkpoints and returns, and only then is the job marked
//!   (so a resumed job never meets a trainer still writing its folder). Resume, retry and a
//!   takeover after a crash all run the job again: the trainer resumes from the run folder's
//!   last checkpoint with the same data order.
//! - [`series`]: the figures the console's chart and metrics show.
//! - [`ablation`]: the paper's Table 4 (four runs from one base config, each scored on a split).
//!
//! Owns the table `train_metrics`.

pub mod talker;

use super::{JobError, SpecError};
use crate::app::App;
use crate::dataset::training::{self, DataSource, TrainData};
use crate::storage::split::Split;
use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use mmtt_model::fpn::{self, Control, FpnConfig, LabelSource, LossConfig, TrainConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The model a training job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainModel {
    /// ForgeryTalker stage 1: the Forgery Prompter Network (Face-ViT region classifier).
    Fpn,
    /// ForgeryTalker stage 2: the explainer (Q-Former, projection) and the mask decoder.
    Talker,
}

impl TrainModel {
    pub fn name(self) -> &'static str {
        match self {
            TrainModel::Fpn => "fpn",
            TrainModel::Talker => "talker",
        }
    }
}

/// A training job's parameters, by model: stored as `{"model": "fpn"|"talker", "config": ...,
/// "run_dir": ..., "data": ...}` (the FPN jobs' params from before stage 2 read unchanged).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum TrainSpec {
    /// (Both boxed: the configs are large.)
    Fpn(Box<FpnTrainSpec>),
    Talker(Box<talker::TalkerTrainSpec>),
}

impl TrainSpec {
    pub fn model(&self) -> TrainModel {
        match self {
            TrainSpec::Fpn(_) => TrainModel::Fpn,
            TrainSpec::Talker(_) => TrainModel::Talker,
        }
    }
    pub fn run_dir(&self) -> &Path {
        match self {
            TrainSpec::Fpn(s) => &s.run_dir,
            TrainSpec::Talker(s) => &s.run_dir,
        }
    }
    pub fn data(&self) -> &TrainData {
        match self {
            TrainSpec::Fpn(s) => &s.data,
            TrainSpec::Talker(s) => &s.data,
        }
    }
    /// Steps of batch `batch_size` the run trains for.
    pub fn steps(&self) -> u64 {
        match self {
            TrainSpec::Fpn(s) => s.config.steps,
            TrainSpec::Talker(s) => s.config.steps,
        }
    }
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            TrainSpec::Fpn(s) => s.validate(),
            TrainSpec::Talker(s) => s.validate(),
        }
    }
}

/// A stage-1 (FPN) training job's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FpnTrainSpec {
    pub config: TrainConfig,
    /// Where checkpoints, `run.toml` and `metrics.jsonl` go; a folder holding a run of the same
    /// config is resumed.
    pub run_dir: PathBuf,
    #[serde(default)]
    pub data: TrainData,
}

impl FpnTrainSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_config(&self.config)?;
        self.data.check().map_err(|m| SpecError::new("data", m))?;
        check_run_dir(&self.run_dir)
    }
}

/// The run folder: given, and not a file.
pub fn check_run_dir(run_dir: &Path) -> Result<(), SpecError> {
    if run_dir.as_os_str().is_empty() {
        return Err(SpecError::new("run_dir", "give the folder the run writes its checkpoints into"));
    }
    if run_dir.is_file() {
        return Err(SpecError::new(
            "run_dir",
            format!("{} is a file: give a new folder, or the folder of the run to resume", run_dir.display()),
        ));
    }
    Ok(())
}

/// The checks a config gets before anything is stored; each names the field and the fix.
pub fn check_config(c: &TrainConfig) -> Result<(), SpecError> {
    FpnConfig::preset(&c.preset)
        .map_err(|_| SpecError::new("preset", format!("unknown preset `{}`: choose {}", c.preset, FpnConfig::PRESETS.join(", "))))?;
    if c.steps == 0 {
        return Err(SpecError::new("steps", "0 steps trains nothing: give at least 1"));
    }
    if c.batch_size == 0 {
        return Err(SpecError::new("batch_size", "must be at least 1"));
    }
    if let Some(init) = &c.init
        && !init.exists()
    {
        return Err(SpecError::new(
            "init",
            format!("{} does not exist: give a Hugging Face ViT directory or the authors' .bin", init.display()),
        ));
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        return Err(SpecError::new("lr", "the learning rate must be a positive number, such as 7.5e-3"));
    }
    if c.warmup_steps > c.steps {
        return Err(SpecError::new(
            "warmup_steps",
            format!("{} warm-up steps is more than the {} steps of the run", c.warmup_steps, c.steps),
        ));
    }
    if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
        return Err(SpecError::new("weight_decay", "must be 0 or a positive number"));
    }
    if !(c.adam_eps.is_finite() && c.adam_eps > 0.0) {
        return Err(SpecError::new("adam_eps", "must be a positive number, such as 1e-8"));
    }
    for (field, b) in [("beta1", c.beta1), ("beta2", c.beta2)] {
        if !(0.0..1.0).contains(&b) {
            return Err(SpecError::new(field, format!("{b} is not in [0, 1): the paper's AdamW uses 0.9 and 0.999")));
        }
    }
    if c.checkpoint_every == 0 {
        return Err(SpecError::new("checkpoint_every", "must be at least 1 (steps between checkpoints)"));
    }
    if c.eval_every == 0 {
        return Err(SpecError::new("eval_every", "must be at least 1 (steps between validations)"));
    }
    if c.grad_clip.is_some_and(|g| !(g.is_finite() && g > 0.0)) {
        return Err(SpecError::new("grad_clip", "must be a positive number, or 0 for no clipping"));
    }
    if let LossConfig::Paper { negative_weight, bce, dice } = &c.loss {
        if !(0.0..=1.0).contains(negative_weight) {
            return Err(SpecError::new(
                "negative_weight",
                format!("the discount w is {negative_weight}; it must be in [0, 1] (the paper: 0.2)"),
            ));
        }
        if !bce && !dice {
            return Err(SpecError::new("loss", "the paper loss needs BCE, Dice or both switched on"));
        }
    }
    if !(c.device == "cpu" || c.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok())) {
        return Err(SpecError::new(
            "device",
            format!("`{}` is not a device: give cpu or cuda:N (cuda needs the `cuda` feature)", c.device),
        ));
    }
    if let Some(p) = &c.init
        && !p.exists()
    {
        return Err(SpecError::new("init", format!("{} does not exist: give a Hugging Face ViT folder or a .bin of weights", p.display())));
    }
    // the trainer's own checks (the model shape of an image_size override, the device's build)
    c.validate().map_err(|e| SpecError::new(if matches!(e, fpn::FpnError::Device(_)) { "device" } else { "config" }, e.to_string()))
}

/// A training config file: the model's settings (top level) and the `[data]` table.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub config: TrainConfig,
    pub data: TrainData,
}

/// Reads a training config file (TOML): every top-level key is a [`TrainConfig`] field (unknown
/// keys refused, missing ones from the `paper` config), the optional `[data]` table a
/// [`TrainData`]. Errors name the key and, where the parser knows it, the line.
pub fn parse_config(text: &str) -> Result<ConfigFile> {
    let (model_text, data) = split_data(text)?;
    let config = TrainConfig::from_toml(&model_text).map_err(|e| anyhow!("{e}"))?;
    Ok(ConfigFile { config, data })
}

/// A config file's `[data]` table (default when absent) and the rest of the file for the model's
/// own parser: the same text with the table blanked (line numbers kept) when that removes exactly
/// the table, else the rest re-written without it.
pub fn split_data(text: &str) -> Result<(String, TrainData)> {
    let table: toml::Table = text.parse().map_err(|e| anyhow!("not TOML: {e}"))?;
    let Some(data) = table.get("data") else {
        return Ok((text.to_string(), TrainData::default()));
    };
    let data: TrainData = data.clone().try_into().map_err(|e| anyhow!("[data]: {e}"))?;
    let blanked = blank_table(text, "data");
    let mut rest = table.clone();
    rest.remove("data");
    let same = blanked.parse::<toml::Table>().is_ok_and(|t| t == rest);
    let model_text = if same { blanked } else { toml::to_string(&rest).context("re-writing the config without [data]")? };
    Ok((model_text, data))
}

/// `text` with the lines of the `[name]` table (its header to the next header) made empty.
fn blank_table(text: &str, name: &str) -> String {
    let mut inside = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let header = t.starts_with('[') && !t.starts_with("[[") && t.contains(']');
        if header || t.starts_with("[[") {
            let key = t.trim_start_matches('[').split(']').next().unwrap_or_default().trim();
            inside = key == name || key.starts_with(&format!("{name}."));
        }
        if inside {
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A config file as it would be written: the model's settings, then `[data]`.
pub fn config_text(c: &ConfigFile) -> Result<String> {
    let mut s = toml::to_string(&c.config).context("writing the model settings as TOML")?;
    s.push_str("\n[data]\n");
    s.push_str(&toml::to_string(&c.data).context("writing [data] as TOML")?);
    Ok(s)
}

/// Shared between the runner and the trainer's thread: the stop request and the latest rate.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<LiveInner>);

#[derive(Debug, Default)]
struct LiveInner {
    stop: AtomicBool,
    /// images/s as f64 bits; 0 = none yet
    rate: AtomicU64,
}

impl Live {
    /// Asks the trainer to checkpoint and return at its next step.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
    pub fn stopping(&self) -> bool {
        self.0.stop.load(Ordering::SeqCst)
    }
    fn set_rate(&self, r: f64) {
        if r.is_finite() && r > 0.0 {
            self.0.rate.store(r.to_bits(), Ordering::Relaxed);
        }
    }
    /// The trainer's latest images/s, if it reported one.
    pub fn rate(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.rate.load(Ordering::Relaxed))).filter(|r| *r > 0.0)
    }
}

/// What a finished (or stopped) training job produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub model: TrainModel,
    pub run_dir: PathBuf,
    pub last_step: u64,
    pub total_steps: u64,
    pub stopped: bool,
    /// The best validation PLM (0..1) and its checkpoint.
    pub best_plm: Option<f64>,
    pub best_dir: PathBuf,
    pub last_dir: PathBuf,
    pub train_samples: usize,
    pub val_samples: usize,
    pub labels: LabelSource,
    /// The step this run started from (> 0: resumed from the run folder).
    pub resumed_from: u64,
    pub final_loss: Option<f64>,
    pub images_per_s: Option<f64>,
    pub seconds: f64,
}

/// What a trainer's thread reports to the async side (see [`drive`]).
pub(crate) enum Msg {
    Note(String),
    Step(StepFigures),
    Val { step: u64, figures: ValFigures, best: bool },
    Checkpoint { step: u64, dir: PathBuf },
}

/// One step's figures: the loss (stage 2: its token and mask parts too), the learning rate, the
/// throughput.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFigures {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    pub lm_loss: Option<f64>,
    pub mask_loss: Option<f64>,
    pub lr: f64,
    pub rate: f64,
}

/// A validation's figures: stage 1's PLM (0..1), stage 2's CIDEr, BLEU-4 and their sum (the
/// model-selection score).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValFigures {
    Plm(f64),
    Captions { cider: f64, bleu4: f64, score: f64 },
}

impl ValFigures {
    fn text(&self) -> String {
        match self {
            ValFigures::Plm(p) => format!("PLM {:.2}", 100.0 * p),
            ValFigures::Captions { cider, bleu4, score } => format!("CIDEr {cider:.4}, BLEU-4 {bleu4:.4} (score {score:.4})"),
        }
    }
}

/// The trainer's [`fpn::Progress`]: moves the bar (the runner writes it into the job's row at
/// each heartbeat), hands the figures to the async side, and answers `Stop` once asked.
struct Reporter {
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    bar: ProgressBar,
    live: Live,
}

impl Reporter {
    /// A step's figures out; `Stop` once the job is paused or cancelled.
    pub(crate) fn stepped(&mut self, f: StepFigures) -> Control {
        self.bar.set_length(f.total);
        self.bar.set_position(f.step);
        self.live.set_rate(f.rate);
        let _ = self.tx.send(Msg::Step(f));
        if self.live.stopping() { Control::Stop } else { Control::Continue }
    }
    pub(crate) fn send(&mut self, m: Msg) {
        let _ = self.tx.send(m);
    }
}

impl fpn::Progress for Reporter {
    fn step(&mut self, r: &fpn::StepReport) -> Control {
        self.stepped(StepFigures {
            step: r.step,
            total: r.total_steps,
            loss: r.loss,
            lm_loss: None,
            mask_loss: None,
            lr: r.lr,
            rate: r.images_per_s,
        })
    }
    fn validated(&mut self, r: &fpn::ValReport) {
        self.send(Msg::Val { step: r.step, figures: ValFigures::Plm(r.plm), best: r.best });
    }
    fn checkpoint(&mut self, step: u64, dir: &Path) {
        self.send(Msg::Checkpoint { step, dir: dir.to_path_buf() });
    }
    fn note(&mut self, msg: &str) {
        self.send(Msg::Note(msg.to_string()));
    }
}

/// One step's figures (or a validation) for `train_metrics`.
#[derive(Debug, Clone, Default)]
struct Point {
    step: i64,
    loss: Option<f64>,
    lm_loss: Option<f64>,
    mask_loss: Option<f64>,
    lr: Option<f64>,
    rate: Option<f64>,
    plm: Option<f64>,
    cider: Option<f64>,
    bleu4: Option<f64>,
    score: Option<f64>,
}

impl Point {
    fn of_val(step: u64, v: ValFigures) -> Point {
        let mut p = Point { step: step as i64, ..Default::default() };
        match v {
            ValFigures::Plm(x) => p.plm = Some(x),
            ValFigures::Captions { cider, bleu4, score } => {
                (p.cider, p.bleu4, p.score) = (Some(cider), Some(bleu4), Some(score));
            }
        }
        p
    }
}

async fn flush(pool: &PgPool, job: Uuid, buf: &mut Vec<Point>) -> Result<(), JobError> {
    if buf.is_empty() {
        return Ok(());
    }
    // one row per step (a step's figures and its validation arrive apart)
    buf.sort_by_key(|p| p.step);
    buf.dedup_by(|later, kept| {
        if later.step != kept.step {
            return false;
        }
        kept.loss = later.loss.or(kept.loss);
        kept.lm_loss = later.lm_loss.or(kept.lm_loss);
        kept.mask_loss = later.mask_loss.or(kept.mask_loss);
        kept.lr = later.lr.or(kept.lr);
        kept.rate = later.rate.or(kept.rate);
        kept.plm = later.plm.or(kept.plm);
        kept.cider = later.cider.or(kept.cider);
        kept.bleu4 = later.bleu4.or(kept.bleu4);
        kept.score = later.score.or(kept.score);
        true
    });
    let col = |f: fn(&Point) -> Option<f64>| buf.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO train_metrics (job_id, step, loss, lr, images_per_s, val_plm, lm_loss, mask_loss, val_cider, val_bleu4, val_score) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], \
           $9::float8[], $10::float8[], $11::float8[]) \
         ON CONFLICT (job_id, step) DO UPDATE SET loss = coalesce(EXCLUDED.loss, train_metrics.loss), \
           lr = coalesce(EXCLUDED.lr, train_metrics.lr), images_per_s = coalesce(EXCLUDED.images_per_s, train_metrics.images_per_s), \
           val_plm = coalesce(EXCLUDED.val_plm, train_metrics.val_plm), \
           lm_loss = coalesce(EXCLUDED.lm_loss, train_metrics.lm_loss), mask_loss = coalesce(EXCLUDED.mask_loss, train_metrics.mask_loss), \
           val_cider = coalesce(EXCLUDED.val_cider, train_metrics.val_cider), val_bleu4 = coalesce(EXCLUDED.val_bleu4, train_metrics.val_bleu4), \
           val_score = coalesce(EXCLUDED.val_score, train_metrics.val_score), at = now()",
    )
    .bind(job)
    .bind(buf.iter().map(|p| p.step).collect::<Vec<_>>())
    .bind(col(|p| p.loss))
    .bind(col(|p| p.lr))
    .bind(col(|p| p.rate))
    .bind(col(|p| p.plm))
    .bind(col(|p| p.lm_loss))
    .bind(col(|p| p.mask_loss))
    .bind(col(|p| p.cider))
    .bind(col(|p| p.bleu4))
    .bind(col(|p| p.score))
    .execute(pool)
    .await?;
    buf.clear();
    Ok(())
}

/// The run folder already holds a checkpoint (the trainer resumes from it).
pub fn has_checkpoint(run_dir: &Path) -> bool {
    run_dir.join("checkpoints").join("latest").is_file()
}

/// The samples a run was started with, kept in its folder: a resumed run (pause, cancel and
/// retry, a takeover after a crash) trains on exactly these, whatever was accepted since.
pub const FROZEN_SAMPLES: &str = "mmtt-samples.json";

/// A run's frozen sample lists (`S`: the model's sample, as stored).
#[derive(Serialize, Deserialize)]
pub(crate) struct Frozen<S> {
    pub train: Vec<S>,
    pub val: Vec<S>,
}

impl<S: Serialize + serde::de::DeserializeOwned> Frozen<S> {
    /// The lists frozen in `run_dir`, if it has them.
    pub async fn read(run_dir: &Path) -> Result<Option<Frozen<S>>> {
        let file = run_dir.join(FROZEN_SAMPLES);
        if !file.is_file() {
            return Ok(None);
        }
        let text = tokio::fs::read_to_string(&file).await.with_context(|| format!("cannot read {}", file.display()))?;
        let f = serde_json::from_str(&text).with_context(|| {
            format!("{}: not the run's sample list (remove it to rebuild it from the data, which restarts the run's data)", file.display())
        })?;
        Ok(Some(f))
    }
    /// Freezes the lists into `run_dir` (created).
    pub async fn write(&self, run_dir: &Path) -> Result<()> {
        tokio::fs::create_dir_all(run_dir).await.with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;
        let file = run_dir.join(FROZEN_SAMPLES);
        let tmp = file.with_extension("json.tmp");
        tokio::fs::write(&tmp, serde_json::to_vec(self)?).await.with_context(|| format!("cannot write {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &file).await.with_context(|| format!("cannot write {}", file.display()))?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct FrozenSample {
    id: String,
    image: PathBuf,
    labels: Vec<bool>,
}

impl FrozenSample {
    fn of(s: &fpn::Sample) -> Self {
        FrozenSample { id: s.id.clone(), image: s.image.clone(), labels: s.labels.to_vec() }
    }
    fn sample(self) -> Result<fpn::Sample> {
        Ok(fpn::Sample { labels: labels21(&self.id, self.labels)?, id: self.id, image: self.image })
    }
}

/// 21 stored labels as the model's array.
pub(crate) fn labels21(id: &str, labels: Vec<bool>) -> Result<[bool; 21]> {
    labels.try_into().map_err(|v: Vec<bool>| anyhow!("sample {id}: {} labels instead of 21", v.len()))
}

/// The run's samples: those frozen in its folder when it has them, else built now from `data`
/// (and frozen). `true` when they were read back.
async fn run_samples(app: &App, spec: &FpnTrainSpec) -> Result<(Vec<fpn::Sample>, Vec<fpn::Sample>, bool)> {
    if let Some(f) = Frozen::<FrozenSample>::read(&spec.run_dir).await? {
        let train = f.train.into_iter().map(FrozenSample::sample).collect::<Result<Vec<_>>>()?;
        let val = f.val.into_iter().map(FrozenSample::sample).collect::<Result<Vec<_>>>()?;
        return Ok((train, val, true));
    }
    let labels = spec.config.labels;
    let train = training::samples(app, &spec.data, spec.data.train_split, labels).await?;
    let val = match spec.data.val_split {
        Some(s) => training::samples(app, &spec.data, s, labels).await?,
        None => vec![],
    };
    if !train.is_empty() {
        let f = Frozen { train: train.iter().map(FrozenSample::of).collect(), val: val.iter().map(FrozenSample::of).collect() };
        f.write(&spec.run_dir).await?;
    }
    Ok((train, val, false))
}

/// The refusal of a run without training samples.
pub(crate) fn no_samples(data: &TrainData) -> anyhow::Error {
    anyhow!(
        "no samples in the {} split{}: accept annotated triplets of that split first (or check [data])",
        data.train_split,
        match data.source {
            DataSource::Db => " of the database",
            DataSource::Export => " of the export folder",
        }
    )
}

/// Runs a training job: samples, the trainer on a blocking thread, figures into the database.
pub async fn run(app: &App, job: Uuid, spec: &FpnTrainSpec, bar: ProgressBar, live: &Live, worker: &str) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let pool = &app.pool;
    let cfg = spec.config.clone();
    let labels = cfg.labels;
    let (train, val, frozen) = run_samples(app, spec).await?;
    if train.is_empty() {
        return Err(no_samples(&spec.data));
    }
    let resuming = has_checkpoint(&spec.run_dir);
    let labels_text = match labels {
        LabelSource::Extractor => "the region extractor over the captions",
        LabelSource::Chips => "the annotators' region chips",
    };
    super::event(
        pool,
        job,
        "info",
        Some(worker),
        &format!(
            "{}{} training samples ({}), {} validation samples ({}); labels from {labels_text}; {} {} (preset {}, conv branch {}), {} steps of batch {} on {}",
            if frozen { "the run's own sample list: " } else { "" },
            train.len(),
            spec.data.train_split,
            val.len(),
            spec.data.val_split.map(|s| s.name()).unwrap_or("none"),
            if resuming { "resuming the run in" } else { "run folder" },
            spec.run_dir.display(),
            cfg.preset,
            if cfg.conv_branch { "on" } else { "off" },
            cfg.steps,
            cfg.batch_size,
            cfg.device
        ),
    )
    .await?;
    if val.is_empty() {
        super::event(pool, job, "warn", Some(worker), "no validation samples: the best checkpoint cannot be chosen by PLM").await?;
    }
    bar.set_length(cfg.steps);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut reporter = Reporter { tx, bar: bar.clone(), live: live.clone() };
    let (n_train, n_val) = (train.len(), val.len());
    let run_dir = spec.run_dir.clone();
    let handle = tokio::task::spawn_blocking(move || fpn::train(&cfg, &train, &val, &run_dir, &mut reporter));
    let d = drive(pool, job, worker, live, spec.config.steps, n_val, rx, handle).await?;
    let o = match d.out {
        Ok(o) => o,
        Err(e) => return Err(anyhow::Error::new(e).context("training failed")),
    };
    Ok(TrainSummary {
        model: TrainModel::Fpn,
        run_dir: spec.run_dir.clone(),
        last_step: o.last_step,
        total_steps: spec.config.steps,
        stopped: o.stopped,
        best_plm: o.best_plm,
        best_dir: o.best_dir,
        last_dir: o.last_dir,
        train_samples: n_train,
        val_samples: n_val,
        labels,
        resumed_from: resumed_from(d.first, o.last_step),
        final_loss: d.last_loss,
        images_per_s: d.last_rate,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What [`drive`] saw of a run: the trainer's own result and the figures of its last step.
pub(crate) struct Driven<T> {
    pub out: T,
    /// The first step this run reported (> 1: it resumed from the run folder).
    pub first: Option<u64>,
    pub last_loss: Option<f64>,
    pub last_rate: Option<f64>,
}

/// The step a run started from: the one before its first reported step, else `last_step`
/// (nothing ran).
pub(crate) fn resumed_from(first: Option<u64>, last_step: u64) -> u64 {
    first.map(|f| f.saturating_sub(1)).unwrap_or(last_step)
}

/// Follows a trainer running on a blocking thread until it returns: every step's and
/// validation's figures into `train_metrics` (batched, at least every second), events for every
/// twentieth step, each validation, a resumption and the notable checkpoints. A database error
/// stops the trainer (it checkpoints) and fails the job once it has returned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive<T: Send + 'static>(
    pool: &PgPool,
    job: Uuid,
    worker: &str,
    live: &Live,
    steps: u64,
    n_val: usize,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
    handle: tokio::task::JoinHandle<T>,
) -> Result<Driven<T>> {
    let mut handle = std::pin::pin!(handle);
    let every = (steps / 20).max(1);
    let mut buf: Vec<Point> = Vec::new();
    let mut last_flush = Instant::now();
    let mut first: Option<u64> = None;
    let mut last_loss = None;
    let mut last_rate = None;
    let mut last_ckpt_event: Option<Instant> = None;
    let mut handle_msg = async |m: Msg, buf: &mut Vec<Point>| -> Result<(), JobError> {
        match m {
            Msg::Note(text) => super::event(pool, job, "info", Some(worker), &format!("trainer: {text}")).await?,
            Msg::Step(f) => {
                let StepFigures { step, total, loss, lm_loss, mask_loss, lr, rate } = f;
                if first.is_none() {
                    first = Some(step);
                    if step > 1 {
                        super::event(
                            pool,
                            job,
                            "info",
                            Some(worker),
                            &format!("resumed at step {step} of {total} from the run folder's checkpoint"),
                        )
                        .await?;
                    }
                }
                last_loss = Some(loss);
                last_rate = Some(rate).filter(|r| r.is_finite() && *r > 0.0);
                buf.push(Point {
                    step: step as i64,
                    loss: Some(loss),
                    lm_loss,
                    mask_loss,
                    lr: Some(lr),
                    rate: last_rate,
                    ..Default::default()
                });
                if step.is_multiple_of(every) || step == total {
                    let parts = match (lm_loss, mask_loss) {
                        (Some(t), Some(m)) => format!(" (text {t:.4}, mask {m:.4})"),
                        _ => String::new(),
                    };
                    super::event(
                        pool,
                        job,
                        "info",
                        Some(worker),
                        &format!("step {step}/{total}: loss {loss:.4}{parts}, lr {lr:.3e}, {rate:.1} images/s"),
                    )
                    .await?;
                }
            }
            Msg::Val { .. } if n_val == 0 => {}
            Msg::Val { step, figures, best } => {
                buf.push(Point::of_val(step, figures));
                flush(pool, job, buf).await?;
                super::event(
                    pool,
                    job,
                    "info",
                    Some(worker),
                    &format!("validation at step {step}: {}{}", figures.text(), if best { " (best so far: checkpoint best/)" } else { "" }),
                )
                .await?;
            }
            Msg::Checkpoint { step, dir } => {
                flush(pool, job, buf).await?;
                // the log keeps the last checkpoints of a stop and the end, and one every half minute
                if live.stopping() || step == steps || last_ckpt_event.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(30)) {
                    last_ckpt_event = Some(Instant::now());
                    super::event(pool, job, "info", Some(worker), &format!("checkpoint of step {step} written to {}", dir.display()))
                        .await?;
                }
            }
        }
        Ok(())
    };
    // a database error stops the trainer (it checkpoints) and fails the job once it has returned
    let mut db_err: Option<JobError> = None;
    let failed = |e: JobError, db_err: &mut Option<JobError>| {
        if db_err.is_none() {
            live.stop();
            *db_err = Some(e);
        }
    };
    let outcome = loop {
        tokio::select! {
            r = &mut handle => {
                while let Ok(m) = rx.try_recv() {
                    if let Err(e) = handle_msg(m, &mut buf).await {
                        failed(e, &mut db_err);
                    }
                }
                break r;
            }
            Some(m) = rx.recv() => {
                let mut r = handle_msg(m, &mut buf).await;
                if r.is_ok() && (buf.len() >= 500 || last_flush.elapsed() > Duration::from_secs(1)) {
                    r = flush(pool, job, &mut buf).await;
                    last_flush = Instant::now();
                }
                if let Err(e) = r {
                    failed(e, &mut db_err);
                }
            }
        }
    };
    if let Some(e) = db_err {
        return Err(anyhow::Error::new(e).context("recording the training figures"));
    }
    flush(pool, job, &mut buf).await?;
    let out = outcome.map_err(|e| anyhow!("the trainer stopped unexpectedly (panic): {e}"))?;
    Ok(Driven { out, first, last_loss, last_rate })
}

/// Refuses a run folder that an open training job (not `except`) already writes into.
pub async fn check_run_dir_free(pool: &PgPool, spec: &TrainSpec, except: Option<Uuid>) -> Result<(), JobError> {
    let open: Vec<(Uuid, String, serde_json::Value)> = sqlx::query_as(
        "SELECT id, state, params FROM jobs WHERE kind = 'train' AND state IN ('queued', 'running', 'paused', 'cancelling') \
         AND ($1::uuid IS NULL OR id <> $1)",
    )
    .bind(except)
    .fetch_all(pool)
    .await?;
    let run_dir = spec.run_dir();
    let mine = run_dir.canonicalize().unwrap_or_else(|_| run_dir.to_path_buf());
    for (id, state, params) in open {
        let Some(dir) = params.get("run_dir").and_then(|d| d.as_str()) else { continue };
        let dir = Path::new(dir);
        if dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()) == mine {
            return Err(SpecError::new(
                "run_dir",
                format!("{} is the run folder of job {id} ({state}): choose another folder, or resume that job", run_dir.display()),
            )
            .into());
        }
    }
    Ok(())
}

/// A stage-2 validation's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CaptionScores {
    pub step: u64,
    pub cider: f64,
    pub bleu4: f64,
    /// CIDEr + BLEU-4: what chooses the best checkpoint.
    pub score: f64,
}

/// The figures of a training job for the chart and the metrics panel.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub model: TrainModel,
    /// (step, loss, lr, images/s): at most about `max_points` evenly spaced steps.
    pub steps: Vec<u64>,
    pub loss: Vec<f64>,
    pub lr: Vec<f64>,
    pub images_per_s: Vec<Option<f64>>,
    /// Stage 2: the loss's token cross-entropy and mask parts at the same steps.
    pub lm_loss: Vec<Option<f64>>,
    pub mask_loss: Vec<Option<f64>>,
    /// (step, PLM 0..1) of every stage-1 validation.
    pub val: Vec<(u64, f64)>,
    /// Every stage-2 validation.
    pub scores: Vec<CaptionScores>,
    /// The last step's figures.
    pub last_step: Option<u64>,
    pub last_loss: Option<f64>,
    pub last_lm_loss: Option<f64>,
    pub last_mask_loss: Option<f64>,
    pub last_lr: Option<f64>,
    pub last_images_per_s: Option<f64>,
    pub best_plm: Option<f64>,
    pub last_plm: Option<f64>,
    pub best_score: Option<f64>,
    pub last_score: Option<CaptionScores>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            model: TrainModel::Fpn,
            steps: vec![],
            loss: vec![],
            lr: vec![],
            images_per_s: vec![],
            lm_loss: vec![],
            mask_loss: vec![],
            val: vec![],
            scores: vec![],
            last_step: None,
            last_loss: None,
            last_lm_loss: None,
            last_mask_loss: None,
            last_lr: None,
            last_images_per_s: None,
            best_plm: None,
            last_plm: None,
            best_score: None,
            last_score: None,
        }
    }
}

/// (step, loss, lr, images/s, validation PLM, text loss, mask loss, CIDEr, BLEU-4, score) of `train_metrics`.
type MetricRow = (i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

pub async fn series(pool: &PgPool, job: Uuid, max_points: i64) -> Result<Series, JobError> {
    let model: Option<String> =
        sqlx::query_scalar("SELECT params->>'model' FROM jobs WHERE id = $1").bind(job).fetch_optional(pool).await?.flatten();
    let max_step: Option<i64> =
        sqlx::query_scalar("SELECT max(step) FROM train_metrics WHERE job_id = $1 AND loss IS NOT NULL").bind(job).fetch_one(pool).await?;
    let mut s =
        Series { model: if model.as_deref() == Some("talker") { TrainModel::Talker } else { TrainModel::Fpn }, ..Default::default() };
    let stride = max_step.map(|m| (m / max_points.max(1)).max(1)).unwrap_or(1);
    let rows: Vec<MetricRow> = sqlx::query_as(
        "SELECT step, loss, lr, images_per_s, val_plm, lm_loss, mask_loss, val_cider, val_bleu4, val_score FROM train_metrics \
         WHERE job_id = $1 AND (val_plm IS NOT NULL OR val_score IS NOT NULL OR step % $2 = 0 OR step = $3) ORDER BY step",
    )
    .bind(job)
    .bind(stride)
    .bind(max_step.unwrap_or(-1))
    .fetch_all(pool)
    .await?;
    for (step, loss, lr, rate, plm, lm, mask, cider, bleu4, score) in rows {
        if let Some(p) = plm {
            s.val.push((step as u64, p));
        }
        if let Some(score) = score {
            s.scores.push(CaptionScores { step: step as u64, cider: cider.unwrap_or(f64::NAN), bleu4: bleu4.unwrap_or(f64::NAN), score });
        }
        if let (Some(l), true) = (loss, step % stride == 0 || Some(step) == max_step) {
            s.steps.push(step as u64);
            s.loss.push(l);
            s.lr.push(lr.unwrap_or(f64::NAN));
            s.images_per_s.push(rate);
            s.lm_loss.push(lm);
            s.mask_loss.push(mask);
        }
    }
    s.last_step = s.steps.last().copied();
    s.last_loss = s.loss.last().copied();
    s.last_lm_loss = s.lm_loss.last().copied().flatten();
    s.last_mask_loss = s.mask_loss.last().copied().flatten();
    s.last_lr = s.lr.last().copied().filter(|x| x.is_finite());
    s.last_images_per_s = s.images_per_s.last().copied().flatten();
    s.best_plm = s.val.iter().map(|v| v.1).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    s.last_plm = s.val.last().map(|v| v.1);
    s.best_score = s.scores.iter().map(|v| v.score).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    s.last_score = s.scores.last().copied();
    Ok(s)
}

/// The paper's Table 4 rows: (name, conv branch, w, BCE, Dice, the paper's PLM).
pub const TABLE4: [(&str, bool, f64, bool, bool, f64); 4] = [
    ("ViT, w=1, BCE", false, 1.0, true, false, 34.23),
    ("ViT, w=0.2, BCE", false, 0.2, true, false, 38.92),
    ("FPN, w=0.2, BCE", true, 0.2, true, false, 39.16),
    ("FPN, w=0.2, BCE+Dice", true, 0.2, true, true, 41.05),
];

/// The config of one Table 4 row from the base config.
pub fn ablation_config(base: &TrainConfig, row: usize) -> TrainConfig {
    let (_, conv, w, bce, dice, _) = TABLE4[row];
    let mut c = base.clone();
    c.conv_branch = conv;
    c.loss = LossConfig::Paper { negative_weight: w, bce, dice };
    c
}

/// The run folder of one Table 4 row under the ablation's folder.
pub fn ablation_dir(root: &Path, row: usize) -> PathBuf {
    let (_, conv, w, _, dice, _) = TABLE4[row];
    root.join(format!("{}-w{w}-bce{}", if conv { "fpn" } else { "vit" }, if dice { "-dice" } else { "" }))
}

/// One scored Table 4 row.
#[derive(Debug, Clone, Serialize)]
pub struct AblationRow {
    pub name: String,
    pub paper_plm: f64,
    /// Ours, in percent.
    pub plm: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub job: Uuid,
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
}

/// The checkpoint a finished run is scored with: `best/` when validation chose one, else `last/`.
pub fn scoring_checkpoint(s: &TrainSummary) -> PathBuf {
    if s.best_plm.is_some() && s.best_dir.is_dir() { s.best_dir.clone() } else { s.last_dir.clone() }
}

/// Scores the checkpoint on `split` of `data` (blocking work on a blocking thread).
pub async fn evaluate(
    app: &App,
    checkpoint: &Path,
    data: &TrainData,
    split: Split,
    labels: LabelSource,
    bar: ProgressBar,
) -> Result<training::CheckpointEval> {
    let samples = training::samples(app, data, split, labels).await?;
    if samples.is_empty() {
        bail!("the {split} split has no samples: accept annotated triplets of that split first (or check [data])");
    }
    bar.set_length(samples.len() as u64);
    let ck = checkpoint.to_path_buf();
    let batch = 16;
    tokio::task::spawn_blocking(move || training::evaluate_checkpoint(&ck, &samples, batch, |n| bar.inc(n as u64)))
        .await
        .map_err(|e| anyhow!("the evaluation stopped unexpectedly (panic): {e}"))?
}

/// The checkpoint a training job is scored with: its best (else last) checkpoint; the job must
/// be a finished training job.
pub async fn job_checkpoint(pool: &PgPool, job: Uuid) -> Result<PathBuf> {
    let row: Option<(String, String, Option<serde_json::Value>, Option<String>)> =
        sqlx::query_as("SELECT kind, state, result, params->>'model' FROM jobs WHERE id = $1").bind(job).fetch_optional(pool).await?;
    let Some((kind, state, result, model)) = row else { bail!("no job {job} (`mmtt jobs --kind train` lists the training jobs)") };
    if kind != "train" {
        bail!("job {job} is a {kind} job, not a training job");
    }
    if let Some(m) = model.filter(|m| m != "fpn") {
        bail!("job {job} trained the {m} model, not the FPN: give an FPN training job");
    }
    let Some(result) = result.filter(|_| state == "done") else {
        bail!("job {job} is {state}: score a finished training job, or give its run folder's checkpoint with --checkpoint");
    };
    let path = |k: &str| result.get(k).and_then(|v| v.as_str()).map(PathBuf::from);
    let best = path("best_dir").filter(|d| d.is_dir() && result.get("best_plm").is_some_and(|p| !p.is_null()));
    best.or_else(|| path("last_dir")).ok_or_else(|| anyhow!("job {job}'s result names no checkpoint"))
}

/// Adds the figures of a scored checkpoint to a finished training job's result.
pub async fn record_evaluation(pool: &PgPool, job: Uuid, split: Split, e: &training::CheckpointEval) -> Result<(), JobError> {
    let v = serde_json::json!({ "split": split.name(), "PLM": e.scores.plm, "macro_avg": e.scores.macro_avg, "micro_avg": e.scores.micro_avg, "n": e.scores.n });
    sqlx::query("UPDATE jobs SET result = jsonb_set(coalesce(result, '{}'), '{evaluation}', $2) WHERE id = $1 AND kind = 'train'")
        .bind(job)
        .bind(v)
        .execute(pool)
        .await?;
    super::event(pool, job, "info", None, &format!("evaluated on {split}: PLM {:.2} over {} samples", 100.0 * e.scores.plm, e.scores.n))
        .await
}

/// Why a run of the ablation did not finish.
pub fn unfinished(s: &TrainSummary) -> Option<String> {
    if s.stopped || s.last_step < s.total_steps { Some(format!("stopped at step {} of {}", s.last_step, s.total_steps)) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_with_and_without_data() {
        let c = parse_config("preset = \"tiny\"\nsteps = 7\n").unwrap();
        assert_eq!((c.config.preset.as_str(), c.config.steps), ("tiny", 7));
        assert_eq!(c.data, TrainData::default());
        let text = "preset = \"tiny\"\n\n[data]\nlimit = 5\nval_split = \"none\"\n\n[loss]\nkind = \"paper\"\nnegative_weight = 1.0\nbce = true\ndice = false\n";
        let c = parse_config(text).unwrap();
        assert_eq!(c.data.limit, Some(5));
        assert_eq!(c.data.val_split, None);
        assert!(matches!(c.config.loss, LossConfig::Paper { negative_weight: 1.0, bce: true, dice: false }));
        // an unknown key in a table after [data]: the error names it and its table's line in the file
        let e = parse_config(
            "preset = \"tiny\"\n[data]\nlimit = 5\n[loss]\nkind = \"paper\"\nnegative_weight = 1.0\nbce = true\ndice = false\nwat = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wat") && e.contains("line 4"), "{e}");
        let e = parse_config("preset = \"tiny\"\n[data]\nlimit = 5\n\n[x]\n").unwrap_err().to_string();
        assert!(e.contains("`x`") && e.contains("line 5"), "{e}");
        let e = parse_config("stepz = 3\n").unwrap_err().to_string();
        assert!(e.contains("stepz"), "{e}");
        let e = parse_config("[data]\nsauce = 1\n").unwrap_err().to_string();
        assert!(e.contains("[data]") && e.contains("sauce"), "{e}");
        // written back, read again
        let c = parse_config(text).unwrap();
        let again = parse_config(&config_text(&c).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&again.config).unwrap(), serde_json::to_value(&c.config).unwrap());
        assert_eq!(again.data, c.data);
    }

    #[test]
    fn blanking_keeps_lines() {
        let t = "a = 1\n[data]\nx = 2\n[b]\nc = 3\n";
        assert_eq!(blank_table(t, "data"), "a = 1\n\n\n[b]\nc = 3\n");
    }

    #[test]
    fn configs_are_checked_field_by_field() {
        let ok = TrainConfig::tiny();
        check_config(&ok).unwrap();
        for (c, field) in [
            (TrainConfig { preset: "vit-z".into(), ..ok.clone() }, "preset"),
            (TrainConfig { steps: 0, ..ok.clone() }, "steps"),
            (TrainConfig { batch_size: 0, ..ok.clone() }, "batch_size"),
            (TrainConfig { lr: -1.0, ..ok.clone() }, "lr"),
            (TrainConfig { warmup_steps: ok.steps + 1, ..ok.clone() }, "warmup_steps"),
            (TrainConfig { device: "tpu".into(), ..ok.clone() }, "device"),
            (TrainConfig { loss: LossConfig::Paper { negative_weight: 0.2, bce: false, dice: false }, ..ok.clone() }, "loss"),
        ] {
            assert_eq!(check_config(&c).unwrap_err().field, field);
        }
    }

    #[test]
    fn table4_rows_from_one_base() {
        let base = TrainConfig::tiny();
        let c0 = ablation_config(&base, 0);
        assert!(!c0.conv_branch);
        assert!(matches!(c0.loss, LossConfig::Paper { negative_weight: 1.0, bce: true, dice: false }));
        let c3 = ablation_config(&base, 3);
        assert!(c3.conv_branch);
        assert!(matches!(c3.loss, LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true }));
        assert_eq!((c3.steps, c3.seed), (base.steps, base.seed));
        let dirs: std::collections::BTreeSet<_> = (0..4).map(|i| ablation_dir(Path::new("/r"), i)).collect();
        assert_eq!(dirs.len(), 4);
    }
}
