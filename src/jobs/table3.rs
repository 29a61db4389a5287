//! Table 3 jobs (kind `table3`): a trained stage-2 model (ForgeryTalker's explainer and mask
//! branch) predicted on a split with each regions variant of the paper's ablation (w/o FPN: the
//! plain instruction; w/ FPN: the FPN's regions; w/ FPN-GT: the regions the reference caption
//! names), each prediction scored as `mmtt eval report` scores it, as one job.
//!
//! - [`Table3Spec`]: the model's name on the results page, its checkpoint (and the training job it
//!   came from), an FPN override, the samples ([`TrainData`]: the database or an export folder),
//!   the split, the variants, the output folder (one sub-folder per variant, as `mmtt predict`
//!   writes it) and the generation settings.
//! - [`run`]: the samples, then per variant the prediction (progress: images, over all variants)
//!   and the report (`report.json` in the variant's folder). Pause and cancel stop the prediction
//!   between slices of samples (the runner sets the [`super::train::Live`] stop flag and waits);
//!   resume, retry and a takeover run the job again: a scored variant is read back from its
//!   `report.json`, a half-done prediction resumes where it was.
//! - [`finished_talker_runs`]: the finished stage-2 training jobs the admin page offers.
//!
//! The result ([`Table3Summary`]) holds the three rows; the console's results page shows them
//! beside the paper's Table 3.

use super::{JobError, JobFilter, JobKind, JobState, SpecError};
use crate::app::App;
use crate::dataset::training::{DataSource, TrainData};
use crate::predict::{self, PredictRecord};
use crate::storage::split::Split;
use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use mmtt_model::talker::GenerationConfig;
use mmtt_model::talker::predict::PredictOptions;
use mmtt_model::talker::train::RegionSource;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use uuid::Uuid;

fn default_split() -> Split {
    Split::Test
}
fn default_variants() -> Vec<RegionSource> {
    predict::VARIANTS.iter().map(|v| v.0).collect()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_beams() -> usize {
    GenerationConfig::release().num_beams
}
fn default_new_tokens() -> usize {
    GenerationConfig::release().max_new_tokens
}
fn default_batch() -> usize {
    8
}
fn default_threshold() -> u8 {
    127
}

/// A Table 3 job's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table3Spec {
    /// The model's name on the results page (its three rows are grouped under it).
    pub model: String,
    /// The stage-2 checkpoint folder (a training run's best/).
    pub checkpoint: PathBuf,
    /// The training job the checkpoint came from.
    #[serde(default)]
    pub train_job: Option<Uuid>,
    /// An FPN checkpoint folder choosing the regions of the `fpn` variant, instead of the
    /// checkpoint's own.
    #[serde(default)]
    pub fpn: Option<PathBuf>,
    /// Where the samples come from (the database, or an export folder; `limit` and
    /// `include_unreviewed` apply; the splits of training are not read).
    #[serde(default)]
    pub data: TrainData,
    #[serde(default = "default_split")]
    pub split: Split,
    #[serde(default = "default_variants")]
    pub variants: Vec<RegionSource>,
    /// The output folder: one sub-folder per variant (`none/`, `fpn/`, `gt/`).
    pub out: PathBuf,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_beams")]
    pub num_beams: usize,
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_threshold")]
    pub threshold: u8,
}

impl Table3Spec {
    /// The spec with the defaults for what is not given.
    pub fn new(model: &str, checkpoint: &Path, out: &Path) -> Self {
        Table3Spec {
            model: model.to_string(),
            checkpoint: checkpoint.to_path_buf(),
            train_job: None,
            fpn: None,
            data: TrainData::default(),
            split: default_split(),
            variants: default_variants(),
            out: out.to_path_buf(),
            device: default_device(),
            num_beams: default_beams(),
            max_new_tokens: default_new_tokens(),
            batch_size: default_batch(),
            threshold: default_threshold(),
        }
    }

    pub fn generation(&self) -> GenerationConfig {
        GenerationConfig { num_beams: self.num_beams, max_new_tokens: self.max_new_tokens, ..GenerationConfig::release() }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.model.trim().is_empty() || self.model.chars().count() > 100 {
            return Err(SpecError::new("model", "give the model's name for the results page (1 to 100 characters)"));
        }
        let mut seen = Vec::new();
        for v in &self.variants {
            if seen.contains(v) {
                return Err(SpecError::new(
                    "variants",
                    format!("the variant {} is listed twice: list each of fpn, none, gt at most once", predict::variant_name(*v)),
                ));
            }
            seen.push(*v);
        }
        predict::check_inputs(&self.checkpoint, self.fpn.as_deref(), &self.variants)
            .map_err(|(field, m)| SpecError::new(if field == "regions" { "variants" } else { field }, m))?;
        self.data.check().map_err(|m| SpecError::new("data", m))?;
        if self.out.as_os_str().is_empty() {
            return Err(SpecError::new("out", "give the folder the predictions go into"));
        }
        if self.out.is_file() {
            return Err(SpecError::new("out", format!("{} is a file: give a new folder", self.out.display())));
        }
        mmtt_model::fpn::parse_device(&self.device)
            .map_err(|e| SpecError::new("device", format!("{e} (cuda needs a build with the `cuda` feature)")))?;
        crate::explain::check_generation(&self.generation(), crate::explain::GenerationLimits::CLI, |f| f.to_string())
            .map_err(|(field, m)| SpecError::new(field, m))?;
        if self.batch_size == 0 {
            return Err(SpecError::new("batch_size", "must be at least 1 (images per forward pass)"));
        }
        Ok(())
    }
}

/// One scored variant: a Table 3 row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table3Row {
    pub regions: RegionSource,
    /// `w/o FPN`, `w/ FPN`, `w/ FPN-GT`.
    pub label: String,
    /// The Table 2 columns, x100 (CIDEr, B-1..B-4, ROUGE-L, IoU, Prec., Rec.).
    pub table2_row: BTreeMap<String, f64>,
    /// The whole report (`mmtt eval report`'s JSON).
    pub report: serde_json::Value,
    /// The variant's prediction folder.
    pub out: PathBuf,
    pub images: u64,
}

/// What a Table 3 job produced.
#[derive(Debug, Clone, Serialize)]
pub struct Table3Summary {
    pub model: String,
    pub checkpoint: PathBuf,
    pub train_job: Option<Uuid>,
    pub split: Split,
    /// Images predicted per variant, and the references (accepted captions) they are scored on.
    pub images: usize,
    pub references: usize,
    pub rows: Vec<Table3Row>,
    /// METEOR was computed (its data was found on the worker).
    pub meteor: bool,
    pub seconds: f64,
}

/// The report a variant's folder holds.
pub const REPORT_FILE: &str = "report.json";

/// Runs a Table 3 job: samples, then per variant the prediction and its report.
pub async fn run(
    app: &App,
    job: Uuid,
    spec: &Table3Spec,
    bar: ProgressBar,
    live: &super::train::Live,
    worker: &str,
) -> Result<Table3Summary> {
    let t0 = Instant::now();
    let pool = &app.pool;
    let all = crate::dataset::talker_training::samples(app, &spec.data, spec.split).await?;
    let (samples, dropped) = predict::one_per_id(all.clone());
    if samples.is_empty() {
        bail!(
            "the {} split has no samples{}: accept annotated triplets of that split first (or choose another split)",
            spec.split,
            match spec.data.source {
                DataSource::Db => " in the database",
                DataSource::Export => " in the export folder",
            }
        );
    }
    let n = samples.len();
    bar.set_length((n * spec.variants.len()) as u64);
    let meteor = tokio::task::spawn_blocking(mmtt_model::eval::meteor::MeteorData::locate)
        .await
        .map_err(|e| anyhow!("looking for METEOR's data: {e}"))?
        .ok()
        .flatten();
    let source = match &spec.data.dir {
        Some(d) if spec.data.source == DataSource::Export => format!("export {}", d.display()),
        _ => "the database".to_string(),
    };
    super::event(
        pool,
        job,
        "info",
        Some(worker),
        &format!(
            "{n} images ({} references) of the {} split from {source}; model {}, checkpoint {}; variants {}; {} beams, at most {} new tokens, on {}{}",
            all.len(),
            spec.split,
            spec.model,
            spec.checkpoint.display(),
            spec.variants.iter().map(|v| predict::variant_label(*v)).collect::<Vec<_>>().join(", "),
            spec.num_beams,
            spec.max_new_tokens,
            spec.device,
            if meteor.is_none() { "; METEOR's data not found on this worker: METEOR is left out (Table 3 does not show it)" } else { "" }
        ),
    )
    .await?;
    let generation = spec.generation();
    let data_name = match &spec.data.dir {
        Some(d) if spec.data.source == DataSource::Export => d.display().to_string(),
        _ => "database".to_string(),
    };
    let mut rows = Vec::new();
    for (i, &v) in spec.variants.iter().enumerate() {
        let (name, label) = (predict::variant_name(v), predict::variant_label(v));
        let out = spec.out.join(name);
        let report_file = out.join(REPORT_FILE);
        if report_file.is_file() {
            let text = tokio::fs::read_to_string(&report_file).await.with_context(|| format!("cannot read {}", report_file.display()))?;
            let row: Table3Row = serde_json::from_str(&text)
                .with_context(|| format!("{}: unreadable (remove it to score the variant again)", report_file.display()))?;
            bar.set_position(((i + 1) * n) as u64);
            super::event(pool, job, "info", Some(worker), &format!("{label}: already scored ({})", report_file.display())).await?;
            rows.push(row);
            continue;
        }
        let record = PredictRecord {
            checkpoint: spec.checkpoint.clone(),
            fpn: spec.fpn.clone(),
            regions: v,
            split: spec.split.name().to_string(),
            data: data_name.clone(),
            num_beams: generation.num_beams,
            max_new_tokens: generation.max_new_tokens,
        };
        let o2 = out.clone();
        let resuming = tokio::task::spawn_blocking(move || predict::claim_out(&o2, &record))
            .await
            .map_err(|e| anyhow!("{e}"))?
            .map_err(|m| anyhow!(m))?;
        super::event(
            pool,
            job,
            "info",
            Some(worker),
            &format!("{}predicting {label} (regions {name}) into {}", if resuming { "resumed: " } else { "" }, out.display()),
        )
        .await?;
        let opts = PredictOptions { regions: v, generation: generation.clone(), batch_size: spec.batch_size };
        let (s2, ck, fpn, device, o2, b, l2) =
            (samples.clone(), spec.checkpoint.clone(), spec.fpn.clone(), spec.device.clone(), out.clone(), bar.clone(), live.clone());
        let base = i * n;
        let summary = tokio::task::spawn_blocking(move || {
            let stop = || l2.stopping();
            predict::run(&ck, fpn.as_deref(), &device, &s2, &opts, &o2, Some(&stop), &mut |d, _| b.set_position((base + d) as u64))
        })
        .await
        .map_err(|e| anyhow!("the prediction stopped unexpectedly (panic): {e}"))?
        .with_context(|| format!("predicting {label} into {}", out.display()))?;
        let Some(summary) = summary else {
            bail!("stopped on request while predicting {label}: resuming the job continues where it was");
        };
        if dropped > 0 {
            predict::add_references(&summary.gt, &all).map_err(|m| anyhow!(m))?;
        }
        let (gt, pred, o2, threshold, m2) = (summary.gt.clone(), summary.predictions.clone(), out.clone(), spec.threshold, meteor.clone());
        let report = tokio::task::spawn_blocking(move || -> Result<mmtt_model::eval::report::Report> {
            let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
            Ok(mmtt_model::eval::report::evaluate(&read(&gt)?, &read(&pred)?, Path::new("/"), &o2, threshold, m2.as_ref())?)
        })
        .await
        .map_err(|e| anyhow!("the evaluation stopped unexpectedly (panic): {e}"))?
        .with_context(|| format!("scoring {label} ({})", out.display()))?;
        let row = Table3Row {
            regions: v,
            label: label.to_string(),
            table2_row: report.table2_row.iter().map(|(k, x)| (k.to_string(), *x)).collect(),
            report: serde_json::to_value(&report)?,
            out: out.clone(),
            images: report.images,
        };
        let tmp = report_file.with_extension("json.tmp");
        tokio::fs::write(&tmp, serde_json::to_vec_pretty(&row)?).await.with_context(|| format!("cannot write {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &report_file).await.with_context(|| format!("cannot write {}", report_file.display()))?;
        bar.set_position(((i + 1) * n) as u64);
        let c = |k: &str| row.table2_row.get(k).copied().unwrap_or(f64::NAN);
        super::event(
            pool,
            job,
            "info",
            Some(worker),
            &format!(
                "scored {label}: CIDEr {:.2}, B-4 {:.2}, ROUGE-L {:.2}, IoU {:.2} over {} images",
                c("CIDEr"),
                c("B-4"),
                c("ROUGE-L"),
                c("IoU"),
                row.images
            ),
        )
        .await?;
        rows.push(row);
    }
    Ok(Table3Summary {
        model: spec.model.clone(),
        checkpoint: spec.checkpoint.clone(),
        train_job: spec.train_job,
        split: spec.split,
        images: n,
        references: all.len(),
        rows,
        meteor: meteor.is_some(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A finished stage-2 training run, as the admin page offers it.
#[derive(Debug, Clone, Serialize)]
pub struct TalkerRun {
    pub job: Uuid,
    pub run_dir: PathBuf,
    /// Its best checkpoint (validation chose one), else its last.
    pub checkpoint: PathBuf,
    /// The run folder's name: the default model name.
    pub name: String,
    /// Where it trained from (the Table 3 job predicts the same source).
    pub data: TrainData,
    /// The FPN it trained with, if any.
    pub fpn: Option<PathBuf>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The finished stage-2 training jobs (kind `train`, model `talker`) with a checkpoint on disk,
/// newest first.
pub async fn finished_talker_runs(pool: &PgPool) -> Result<Vec<TalkerRun>, JobError> {
    let filter = JobFilter { kind: Some(JobKind::Train), state: Some(JobState::Done), limit: Some(200) };
    let mut out = Vec::new();
    for j in super::list(pool, &filter).await? {
        if j.params.get("model").and_then(|m| m.as_str()) != Some("talker") {
            continue;
        }
        let Some(checkpoint) = run_checkpoint(j.result.as_ref()) else { continue };
        let run_dir = j.params.get("run_dir").and_then(|d| d.as_str()).map(PathBuf::from).unwrap_or_default();
        let name = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("talker-{}", &j.id.simple().to_string()[..8]));
        let data = j.params.get("data").cloned().and_then(|d| serde_json::from_value(d).ok()).unwrap_or_default();
        let fpn = j.params.pointer("/config/fpn").and_then(|f| f.as_str()).map(PathBuf::from);
        out.push(TalkerRun { job: j.id, run_dir, checkpoint, name, data, fpn, finished_at: j.finished_at });
    }
    Ok(out)
}

/// A finished run's checkpoint from its result: `best_dir` when it holds a model, else `last_dir`.
pub fn run_checkpoint(result: Option<&serde_json::Value>) -> Option<PathBuf> {
    let r = result?;
    let dir = |k: &str| r.get(k).and_then(|v| v.as_str()).map(PathBuf::from).filter(|d| d.join("config.json").is_file());
    dir("best_dir").or_else(|| dir("last_dir"))
}

/// A new output folder for a Table 3 job under the data directory.
pub fn default_out(data_dir: &Path) -> PathBuf {
    data_dir.join("evals").join(format!(
        "table3-{}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        &Uuid::new_v4().simple().to_string()[..6]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_field_by_field() {
        let d = tempfile::tempdir().unwrap();
        let ck = d.path().join("best");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join("config.json"), "{}").unwrap();
        let ok = Table3Spec { variants: vec![RegionSource::Gt, RegionSource::None], ..Table3Spec::new("mine", &ck, &d.path().join("out")) };
        ok.validate().unwrap();
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["variants"], serde_json::json!(["gt", "none"]));
        assert_eq!(serde_json::from_value::<Table3Spec>(v).unwrap(), ok);
        let field = |s: Table3Spec| s.validate().unwrap_err().field;
        assert_eq!(field(Table3Spec { model: " ".into(), ..ok.clone() }), "model");
        assert_eq!(field(Table3Spec { checkpoint: d.path().join("nope"), ..ok.clone() }), "checkpoint");
        assert_eq!(field(Table3Spec { variants: vec![], ..ok.clone() }), "variants");
        assert_eq!(field(Table3Spec { variants: vec![RegionSource::Gt, RegionSource::Gt], ..ok.clone() }), "variants");
        // the fpn variant needs an FPN: the checkpoint names none
        assert_eq!(field(Table3Spec { variants: default_variants(), ..ok.clone() }), "fpn");
        assert_eq!(field(Table3Spec { device: "tpu".into(), ..ok.clone() }), "device");
        assert_eq!(field(Table3Spec { num_beams: 0, ..ok.clone() }), "num_beams");
        assert_eq!(field(Table3Spec { max_new_tokens: 0, ..ok.clone() }), "max_new_tokens");
        assert_eq!(field(Table3Spec { batch_size: 0, ..ok.clone() }), "batch_size");
        assert_eq!(field(Table3Spec { data: TrainData { limit: Some(0), ..Default::default() }, ..ok.clone() }), "data");
        std::fs::write(d.path().join("f"), "").unwrap();
        assert_eq!(field(Table3Spec { out: d.path().join("f"), ..ok.clone() }), "out");
    }

    #[test]
    fn the_checkpoint_of_a_finished_run() {
        let d = tempfile::tempdir().unwrap();
        let (best, last) = (d.path().join("best"), d.path().join("last"));
        std::fs::create_dir_all(&best).unwrap();
        std::fs::create_dir_all(&last).unwrap();
        std::fs::write(last.join("config.json"), "{}").unwrap();
        let r = serde_json::json!({ "best_dir": best, "last_dir": last });
        assert_eq!(run_checkpoint(Some(&r)), Some(last.clone()), "an empty best/ is passed over");
        std::fs::write(best.join("config.json"), "{}").unwrap();
        assert_eq!(run_checkpoint(Some(&r)), Some(best));
        assert_eq!(run_checkpoint(None), None);
    }
}
