//! The samples ForgeryTalker's region prompter (stage 1, `mmtt_model::fpn`) trains and is
//! evaluated on, straight from the platform: the accepted triplets of one split of the project
//! (the forged image from the blob store and its 21 region labels), or the same from an `hf` or
//! `mmtt` export folder ([`super::export`] writes both layouts).
//!
//! Labels come from the reference region extractor over the accepted caption
//! ([`super::annotation::multilabel`], the authors' way) or from the annotators' region chips
//! ([`LabelSource::Chips`]). The extractor's label order is the model's ([`mmtt_model::fpn::LABELS`]).
//!
//! Stage 2's samples ([`talker_samples`]) add the forgery mask and the accepted caption (labels
//! from the extractor over the caption).
//!
//! Also here: scoring a checkpoint on samples ([`evaluate_checkpoint`]) with the evaluator's
//! label metrics (`mmtt_model::eval::labels`), and the predicted regions per sample that stage 2
//! reads.

use super::annotation::{REGION_LABELS, multilabel};
use super::export::{ExportOptions, Format, formats::release_split_name, select};
use crate::app::App;
use crate::storage::split::Split;
use anyhow::{Context, Result, anyhow, bail};
use mmtt_model::fpn::{self, LabelSource, Sample};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// The project's database: accepted triplets (with `include_unreviewed`, submitted ones too).
    #[default]
    Db,
    /// An export folder (`dir`) in the `hf` (`SPLIT/metadata.jsonl`) or `mmtt` (`train.json`,
    /// `val.json`, `test.json`) layout.
    Export,
}

fn default_train_split() -> Split {
    Split::Train
}
fn default_val_split() -> Option<Split> {
    Some(Split::Validation)
}

/// The `[data]` table of a training config: which samples, from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainData {
    #[serde(default)]
    pub source: DataSource,
    /// The export folder (`source = "export"` only).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The split trained on (default `train`).
    #[serde(default = "default_train_split", with = "split_name")]
    pub train_split: Split,
    /// The split the best checkpoint is chosen on (default `validation`; none: no validation).
    #[serde(default = "default_val_split", with = "opt_split")]
    pub val_split: Option<Split>,
    /// Submitted, not yet reviewed triplets too (database only).
    #[serde(default)]
    pub include_unreviewed: bool,
    /// At most this many samples per split (the first by id): quick runs.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl Default for TrainData {
    fn default() -> Self {
        TrainData {
            source: DataSource::Db,
            dir: None,
            train_split: Split::Train,
            val_split: Some(Split::Validation),
            include_unreviewed: false,
            limit: None,
        }
    }
}

impl TrainData {
    /// The export folder of `source = "export"`.
    pub fn export_dir(&self) -> Result<&Path> {
        match (&self.source, &self.dir) {
            (DataSource::Export, Some(d)) => Ok(d.as_path()),
            (DataSource::Export, None) => {
                bail!("[data] source = \"export\" needs dir = \"/path/to/the/export\" (an hf or mmtt export folder)")
            }
            (DataSource::Db, _) => bail!("[data] source is the database, not an export folder"),
        }
    }

    /// Refuses what cannot work: a missing export folder, `dir` without `source = "export"`, a
    /// limit of 0, the same split for training and validation.
    pub fn check(&self) -> std::result::Result<(), String> {
        match (&self.source, &self.dir) {
            (DataSource::Export, Some(d)) => {
                export_layout(d).map_err(|e| e.to_string())?;
            }
            (DataSource::Export, None) => return Err("source = \"export\" needs dir = \"/path/to/the/export\"".into()),
            (DataSource::Db, Some(_)) => return Err("dir is only read with source = \"export\": add it, or remove dir".into()),
            (DataSource::Db, None) => {}
        }
        if self.include_unreviewed && self.source == DataSource::Export {
            return Err("include_unreviewed applies to the database only (an export holds what it exported)".into());
        }
        if self.limit == Some(0) {
            return Err("limit = 0 leaves no samples: give a positive limit, or none for every sample".into());
        }
        if self.val_split == Some(self.train_split) {
            return Err(format!("val_split is the training split ({}): choose another split, or \"none\"", self.train_split));
        }
        Ok(())
    }
}

/// A split by name (`val` for `validation` too).
mod split_name {
    use super::Split;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Split, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Split, D::Error> {
        super::parse_split(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `val_split = "none"` for no validation.
mod opt_split {
    use super::Split;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Split>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map(|x| x.name()).unwrap_or("none"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Split>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(None);
        }
        super::parse_split(&s).map(Some).map_err(serde::de::Error::custom)
    }
}

/// A split name: `train`, `validation` (or `val`), `test`.
pub fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "validation" | "val" => Ok(Split::Validation),
        "test" => Ok(Split::Test),
        _ => Err(format!("unknown split `{s}`: give train, validation (or val) or test")),
    }
}

/// The label names in the model's order (the extractor's order, checked equal).
pub fn label_names() -> Vec<&'static str> {
    REGION_LABELS.iter().map(|(l, _)| *l).collect()
}

/// The extractor's labels and the model's are the same 21 in the same order.
pub fn check_label_order() -> Result<()> {
    let ours = label_names();
    if ours != fpn::LABELS {
        bail!("the region extractor's labels {ours:?} differ from the model's {:?}: keep both in the authors' order", fpn::LABELS);
    }
    Ok(())
}

/// The 21 labels of a triplet: the extractor over its caption, or its region chips.
pub fn labels_of(text: &str, chips: &[String], source: LabelSource) -> Result<[bool; 21]> {
    let mut out = [false; 21];
    match source {
        LabelSource::Extractor => {
            for (o, v) in out.iter_mut().zip(multilabel(text)) {
                *o = v == 1;
            }
        }
        LabelSource::Chips => {
            for c in chips {
                let i = REGION_LABELS
                    .iter()
                    .position(|(l, _)| *l == c.trim().to_lowercase())
                    .ok_or_else(|| anyhow!("unknown region chip `{c}`: the labels are {}", label_names().join(", ")))?;
                out[i] = true;
            }
        }
    }
    Ok(out)
}

/// One split's samples from `data`, in id order (at most `data.limit`).
pub async fn samples(app: &App, data: &TrainData, split: Split, labels: LabelSource) -> Result<Vec<Sample>> {
    let mut out = match data.source {
        DataSource::Db => from_db(app, split, labels, data.include_unreviewed).await?,
        DataSource::Export => {
            let dir = data.export_dir()?.to_path_buf();
            tokio::task::spawn_blocking(move || from_export(&dir, split, labels))
                .await
                .map_err(|e| anyhow!("reading the export: {e}"))??
        }
    };
    if let Some(n) = data.limit {
        out.truncate(n);
    }
    Ok(out)
}

/// The accepted (with `include_unreviewed`, also submitted) triplets of `split` in the database:
/// the forged image's blob path, the release `image_id` as the sample id.
pub async fn from_db(app: &App, split: Split, labels: LabelSource, include_unreviewed: bool) -> Result<Vec<Sample>> {
    check_label_order()?;
    let mut o = ExportOptions::new(Format::Mmtt, PathBuf::new());
    o.include_unreviewed = include_unreviewed;
    let (rows, ..) = select(app, &o).await?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for s in rows.into_iter().filter(|s| s.split == split) {
        let image = match app.store.local_file(&s.image) {
            Ok(p) => p,
            Err(e) => {
                missing.push(format!("{} ({e})", s.image_id));
                continue;
            }
        };
        let l = labels_of(&s.text, &s.regions, labels).with_context(|| format!("sample {}", s.image_id))?;
        out.push(Sample { id: s.image_id, image, labels: l });
    }
    if !missing.is_empty() {
        bail!(
            "{} images of the {split} split cannot be read from the blob store {}: {}{} (restore the missing blobs, or check the store's URL and credentials)",
            missing.len(),
            app.store.location(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        );
    }
    Ok(out)
}

/// The layout of an export folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLayout {
    Hf,
    Mmtt,
}

pub fn export_layout(dir: &Path) -> Result<ExportLayout> {
    if ["train", "val", "test"].iter().any(|s| dir.join(format!("{s}.json")).is_file()) {
        return Ok(ExportLayout::Mmtt);
    }
    if Split::ALL.iter().any(|s| dir.join(s.name()).join("metadata.jsonl").is_file()) {
        return Ok(ExportLayout::Hf);
    }
    bail!(
        "{} is neither an mmtt export (train.json, val.json, test.json) nor an hf export (SPLIT/metadata.jsonl): export with `mmtt export --format mmtt` or `--format hf`",
        dir.display()
    )
}

/// One split of an `hf` or `mmtt` export folder. The mmtt layout has no chips: `Chips` is refused.
pub fn from_export(dir: &Path, split: Split, labels: LabelSource) -> Result<Vec<Sample>> {
    check_label_order()?;
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    let mut out = Vec::new();
    match export_layout(dir)? {
        ExportLayout::Mmtt => {
            if labels == LabelSource::Chips {
                bail!("the mmtt layout has no region chips: use labels = \"extractor\", or an hf export (it keeps the chips)");
            }
            let file = dir.join(format!("{}.json", release_split_name(split)));
            if !file.is_file() {
                return Ok(out);
            }
            let records: Vec<serde_json::Value> =
                serde_json::from_str(&read(&file)?).with_context(|| format!("{}: not a JSON list of samples", file.display()))?;
            for (i, r) in records.iter().enumerate() {
                let field = |k: &str| r.get(k).and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{} record {i}: no `{k}`", file.display()));
                let id = match r.get("image_id") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => bail!("{} record {i}: no `image_id`", file.display()),
                };
                let l = labels_of(field("caption")?, &[], labels)?;
                out.push(Sample { id, image: dir.join(field("img_path")?), labels: l });
            }
        }
        ExportLayout::Hf => {
            let file = dir.join(split.name()).join("metadata.jsonl");
            if !file.is_file() {
                return Ok(out);
            }
            for (n, line) in read(&file)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let r: serde_json::Value =
                    serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", file.display(), n + 1))?;
                let field =
                    |k: &str| r.get(k).and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{} line {}: no `{k}`", file.display(), n + 1));
                let chips: Vec<String> = r
                    .get("regions")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let id = field("image_id").or_else(|_| field("id"))?.to_string();
                let l = labels_of(field("text")?, &chips, labels)?;
                out.push(Sample { id, image: dir.join(split.name()).join(field("file_name")?), labels: l });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(s) = out.iter().find(|s| !s.image.is_file()) {
        bail!(
            "{}: the image of sample {} is missing: re-run the export into that folder (it resumes and repairs)",
            s.image.display(),
            s.id
        );
    }
    Ok(out)
}

/// A checkpoint scored on samples.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointEval {
    pub scores: mmtt_model::eval::labels::LabelScores,
    /// Per sample id: the predicted regions (p > 0.5, label order) and the 21 probabilities.
    pub predictions: BTreeMap<String, Prediction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub regions: Vec<&'static str>,
    pub probs: Vec<f32>,
}

impl CheckpointEval {
    /// `{id: [regions]}`: the predicted regions of every sample, as `mmtt eval labels --pred`
    /// and stage 2 read them.
    pub fn regions_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.predictions.iter().map(|(id, p)| (id.clone(), serde_json::json!(p.regions))).collect())
    }
}

/// Predicts every sample with the checkpoint at `checkpoint` (in batches of `batch`) and scores
/// the predicted sets against the samples' labels (PLM, per-label, macro and micro figures).
/// Blocking (run it on a blocking thread).
pub fn evaluate_checkpoint(checkpoint: &Path, samples: &[Sample], batch: usize, mut tick: impl FnMut(usize)) -> Result<CheckpointEval> {
    if samples.is_empty() {
        bail!("no samples to evaluate: the split is empty (accept triplets of that split first, or choose another split)");
    }
    let p = fpn::Predictor::load(checkpoint).with_context(|| format!("loading the checkpoint {}", checkpoint.display()))?;
    let mut predictions = BTreeMap::new();
    let (mut gt, mut pred) = (serde_json::Map::new(), serde_json::Map::new());
    let names = label_names();
    for chunk in samples.chunks(batch.max(1)) {
        let paths: Vec<PathBuf> = chunk.iter().map(|s| s.image.clone()).collect();
        let probs = p.predict_paths(&paths)?;
        for (s, pr) in chunk.iter().zip(probs) {
            let regions = fpn::regions(&pr);
            let truth: Vec<&str> = names.iter().zip(s.labels).filter(|(_, y)| *y).map(|(l, _)| *l).collect();
            gt.insert(s.id.clone(), serde_json::json!(truth));
            pred.insert(s.id.clone(), serde_json::json!(regions));
            predictions.insert(s.id.clone(), Prediction { image: s.image.clone(), regions, probs: pr.to_vec() });
        }
        tick(chunk.len());
    }
    if predictions.len() != samples.len() {
        bail!("{} samples share an id with another: give each sample its own id", samples.len() - predictions.len());
    }
    let scores = mmtt_model::eval::labels::evaluate(
        &serde_json::Value::Object(gt).to_string(),
        &serde_json::Value::Object(pred).to_string(),
        &names,
    )?;
    Ok(CheckpointEval { scores, predictions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractor_and_model_label_orders_agree() {
        check_label_order().unwrap();
    }

    #[test]
    fn labels_from_the_caption_or_the_chips() {
        let t = "The left eye is blurred and the nose has a seam.";
        let e = labels_of(t, &[], LabelSource::Extractor).unwrap();
        let on: Vec<&str> = label_names().into_iter().zip(e).filter(|(_, y)| *y).map(|(l, _)| l).collect();
        assert_eq!(on, ["eye", "nose"]);
        let c = labels_of(t, &["cheek".to_string()], LabelSource::Chips).unwrap();
        assert_eq!(c.iter().filter(|x| **x).count(), 1);
        assert!(c[6]);
        let err = labels_of(t, &["elbow".to_string()], LabelSource::Chips).unwrap_err().to_string();
        assert!(err.contains("elbow") && err.contains("dimple"), "{err}");
    }

    #[test]
    fn data_table_defaults_and_refusals() {
        let d: TrainData = toml::from_str("").unwrap();
        assert_eq!(d, TrainData::default());
        let d: TrainData = toml::from_str("source = \"export\"\ndir = \"/x\"\nval_split = \"none\"\ntrain_split = \"val\"").unwrap();
        assert_eq!((d.source, d.dir.as_deref()), (DataSource::Export, Some(Path::new("/x"))));
        assert!(d.check().unwrap_err().contains("/x"), "a missing export folder is refused");
        assert_eq!((d.train_split, d.val_split), (Split::Validation, None));
        let e = toml::from_str::<TrainData>("train_split = \"dev\"").unwrap_err().to_string();
        assert!(e.contains("unknown split `dev`"), "{e}");
        let e = toml::from_str::<TrainData>("sauce = \"db\"").unwrap_err().to_string();
        assert!(e.contains("sauce"), "{e}");
    }
}
