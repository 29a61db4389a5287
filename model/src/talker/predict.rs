//! Predictions for a sample set in the format `mmtt eval report` reads (the paper's Table 2 and
//! Table 3 rows): `predictions.jsonl` (`{"image_id", "caption", "mask_path", "regions"}`, one
//! line per image), `masks/<id>.png` (the binary predicted mask at the size of the sample's
//! ground-truth mask, 512 px when it has none) and `gt.json` (the release-format ground truth:
//! `image_id`, `caption`, absolute `mask_path`). The instruction's regions come from the FPN, the
//! reference caption's labels (the paper's "w/ FPN-GT") or none ("w/o FPN").
//!
//! Resumable: a line is appended only after its mask file is in place, and ids already in
//! `predictions.jsonl` with their mask present are skipped.

use super::TalkerError;
use super::explain::{ExplainOptions, Explainer};
use super::generate::GenerationConfig;
use super::train::{RegionSource, TalkerSample, prompting_for};
use burn::tensor::Device;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub regions: RegionSource,
    pub generation: GenerationConfig,
    pub batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct PredictSummary {
    pub images: usize,
    pub predictions: PathBuf,
    pub gt: PathBuf,
}

/// A file-name-safe form of an id.
fn safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// See the module documentation.
pub fn predict(
    checkpoint: &Path,
    fpn: Option<&Path>,
    device: &Device,
    samples: &[TalkerSample],
    opts: &PredictOptions,
    out: &Path,
    tick: &mut dyn FnMut(usize, usize),
) -> Result<PredictSummary, TalkerError> {
    opts.generation.validate()?;
    if opts.batch_size == 0 {
        return Err(TalkerError::Input("the batch size must be at least 1".into()));
    }
    if samples.is_empty() {
        return Err(TalkerError::Data("no samples to predict: the split has no accepted annotations".into()));
    }
    let mut seen_ids = BTreeSet::new();
    for s in samples {
        if !seen_ids.insert(s.id.as_str()) {
            return Err(TalkerError::Data(format!("sample id `{}` appears twice", s.id)));
        }
    }
    let ex = Explainer::load(checkpoint, fpn, device)?;
    if opts.regions == RegionSource::Fpn && !ex.has_fpn() {
        return Err(TalkerError::Input(format!(
            "{} has no FPN: pass --fpn DIR (a stage-1 checkpoint), or use --regions gt or none",
            checkpoint.display()
        )));
    }
    let masks_dir = out.join("masks");
    std::fs::create_dir_all(&masks_dir).map_err(|e| TalkerError::io(&masks_dir, e))?;
    let pred_path = out.join("predictions.jsonl");
    // what a previous run finished (a line is written after its mask)
    let mut done = BTreeSet::new();
    if let Ok(text) = std::fs::read_to_string(&pred_path) {
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let (Some(id), Some(m)) = (v["image_id"].as_str(), v["mask_path"].as_str()) else { continue };
            if out.join(m).is_file() && done.insert(id.to_string()) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        // drop a torn last line or a line whose mask is gone
        let tmp = pred_path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept).map_err(|e| TalkerError::io(&tmp, e))?;
        std::fs::rename(&tmp, &pred_path).map_err(|e| TalkerError::io(&pred_path, e))?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&pred_path).map_err(|e| TalkerError::io(&pred_path, e))?;
    let todo: Vec<&TalkerSample> = samples.iter().filter(|s| !done.contains(&s.id)).collect();
    let total = samples.len();
    let mut finished = total - todo.len();
    tick(finished, total);
    for chunk in todo.chunks(opts.batch_size) {
        let owned: Vec<TalkerSample> = chunk.iter().map(|s| (*s).clone()).collect();
        let images = owned
            .iter()
            .map(|s| {
                image::open(&s.image)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| TalkerError::Input(format!("{}: cannot read the image: {e}", s.image.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let explanations =
            ex.explain(&images, &ExplainOptions { prompting: prompting_for(opts.regions, &owned), generation: opts.generation.clone() })?;
        for (s, e) in owned.iter().zip(explanations) {
            let (w, h) = match &s.mask {
                Some(m) => {
                    image::image_dimensions(m).map_err(|err| TalkerError::Input(format!("{}: cannot read the mask: {err}", m.display())))?
                }
                None => (512, 512),
            };
            let rel = format!("masks/{}.png", safe(&s.id));
            let mask = match &e.mask {
                Some(m) => m.binary_resized(w, h),
                None => image::GrayImage::new(w, h),
            };
            let target = out.join(&rel);
            let tmp = target.with_extension("png.tmp");
            mask.save_with_format(&tmp, image::ImageFormat::Png).map_err(|err| TalkerError::Input(format!("{}: {err}", tmp.display())))?;
            std::fs::rename(&tmp, &target).map_err(|err| TalkerError::io(&target, err))?;
            let line = serde_json::json!({"image_id": s.id, "caption": e.text, "mask_path": rel, "regions": e.regions});
            writeln!(file, "{line}").map_err(|err| TalkerError::io(&pred_path, err))?;
            finished += 1;
        }
        file.flush().map_err(|e| TalkerError::io(&pred_path, e))?;
        tick(finished, total);
    }
    // the ground truth in the release format, for `mmtt eval report`
    let gt: Vec<serde_json::Value> = samples
        .iter()
        .map(|s| {
            let mask = s.mask.as_ref().map(|m| std::path::absolute(m).unwrap_or_else(|_| m.clone()).display().to_string());
            serde_json::json!({"image_id": s.id, "caption": s.caption, "mask_path": mask})
        })
        .collect();
    let gt_path = out.join("gt.json");
    let tmp = gt_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&gt).unwrap_or_default()).map_err(|e| TalkerError::io(&tmp, e))?;
    std::fs::rename(&tmp, &gt_path).map_err(|e| TalkerError::io(&gt_path, e))?;
    Ok(PredictSummary { images: total, predictions: pred_path, gt: gt_path })
}
