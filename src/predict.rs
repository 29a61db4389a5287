//! Predicting a split with a trained stage-2 checkpoint, on the platform's side (the model is
//! `mmtt_model::talker::predict`): what `mmtt predict` and the Table 3 job (`jobs::table3`) share.
//! Owns the regions variants and their names in the paper's Table 3, the checks of a checkpoint
//! before the (slow) load, the output folder's record of what it holds (`mmtt_predict.json`: a
//! folder of one run's predictions is never resumed by another), and the stoppable prediction
//! loop.
//!
//! An output folder holds `predictions.jsonl`, `masks/<id>.png` and `gt.json`: `mmtt eval report
//! --gt OUT/gt.json --pred OUT/predictions.jsonl --gt-mask-base / --pred-mask-base OUT` scores it.

use mmtt_model::talker::predict::{PredictOptions, PredictSummary};
use mmtt_model::talker::train::{RegionSource, TalkerSample};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The regions variants in the order of the paper's Table 3 rows: (variant, the paper's name).
pub const VARIANTS: [(RegionSource, &str); 3] =
    [(RegionSource::Gt, "w/ FPN-GT"), (RegionSource::None, "w/o FPN"), (RegionSource::Fpn, "w/ FPN")];

/// The Table 3 name of a variant: `w/o FPN`, `w/ FPN`, `w/ FPN-GT`.
pub fn variant_label(r: RegionSource) -> &'static str {
    VARIANTS.iter().find(|(v, _)| *v == r).map(|(_, l)| *l).unwrap_or("?")
}

/// The variant's name as the command line and the forms take it: `fpn`, `none`, `gt`.
pub fn variant_name(r: RegionSource) -> &'static str {
    match r {
        RegionSource::Fpn => "fpn",
        RegionSource::None => "none",
        RegionSource::Gt => "gt",
    }
}

/// What each variant means, for messages.
pub const VARIANTS_HELP: &str = "fpn (the FPN's regions: the paper's model), none (the plain InstructBLIP instruction: \"w/o FPN\") \
                                 or gt (the regions the reference caption names: \"w/ FPN-GT\")";

/// `fpn`, `none` or `gt`; an error names the value and the three choices.
pub fn parse_variant(s: &str) -> Result<RegionSource, String> {
    match s.trim().to_lowercase().as_str() {
        "fpn" => Ok(RegionSource::Fpn),
        "none" => Ok(RegionSource::None),
        "gt" => Ok(RegionSource::Gt),
        other => Err(format!("`{other}` is not a regions variant: give {VARIANTS_HELP}")),
    }
}

/// Whether a checkpoint folder can choose regions itself: a Hugging Face-layout checkpoint whose
/// `mmtt_talker.json` names an FPN folder that exists. A release-layout folder (no config.json)
/// is left to the loader.
pub fn checkpoint_has_fpn(dir: &Path) -> bool {
    if !dir.join("config.json").is_file() {
        return true;
    }
    match mmtt_model::talker::config::TalkerExtras::read(dir) {
        Ok(Some(x)) => x.fpn.is_some_and(|rel| dir.join(rel).exists()),
        _ => false,
    }
}

/// A problem found before any work: the field (`checkpoint`, `fpn`, `regions`) and the message,
/// which names the fix.
pub type InputError = (&'static str, String);

/// Checks a checkpoint, an FPN override and the variants asked for, before anything loads.
pub fn check_inputs(checkpoint: &Path, fpn: Option<&Path>, variants: &[RegionSource]) -> Result<(), InputError> {
    if checkpoint.as_os_str().is_empty() {
        return Err(("checkpoint", "give the stage-2 checkpoint folder (a training run's best/ folder)".into()));
    }
    if !checkpoint.is_dir() {
        return Err((
            "checkpoint",
            format!(
                "{}: no such folder: give a stage-2 checkpoint folder, such as a training run's best/ (or checkpoints/step-N/) as `mmtt train talker` writes it",
                checkpoint.display()
            ),
        ));
    }
    if let Some(f) = fpn
        && !f.is_dir()
    {
        return Err(("fpn", format!("{}: no such folder: give an FPN checkpoint folder (as `mmtt train fpn` writes it)", f.display())));
    }
    if variants.is_empty() {
        return Err(("regions", format!("no regions variant: give {VARIANTS_HELP}")));
    }
    if variants.contains(&RegionSource::Fpn) && fpn.is_none() && !checkpoint_has_fpn(checkpoint) {
        return Err((
            "fpn",
            format!(
                "the checkpoint {} names no FPN to choose the regions: give an FPN checkpoint folder (--fpn DIR, from `mmtt train fpn`), or predict with the regions variant gt or none",
                checkpoint.display()
            ),
        ));
    }
    Ok(())
}

/// What an output folder holds, written beside the predictions as `mmtt_predict.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictRecord {
    pub checkpoint: PathBuf,
    pub fpn: Option<PathBuf>,
    pub regions: RegionSource,
    pub split: String,
    /// `database`, or the export folder.
    pub data: String,
    pub num_beams: usize,
    pub max_new_tokens: usize,
}

pub const RECORD_FILE: &str = "mmtt_predict.json";

/// Claims `out` for `record`: a new or empty folder, or one holding predictions of the same
/// record (then the prediction resumes: `true`). Another run's folder is refused with the fix.
pub fn claim_out(out: &Path, record: &PredictRecord) -> Result<bool, String> {
    if out.is_file() {
        return Err(format!("{} is a file: give a new or empty folder for the predictions", out.display()));
    }
    let file = out.join(RECORD_FILE);
    if file.is_file() {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let theirs: PredictRecord = serde_json::from_str(&text).map_err(|e| {
            format!("{}: unreadable ({e}): give a new output folder, or remove that file to start over in this one", file.display())
        })?;
        if theirs != *record {
            return Err(format!(
                "{} holds the predictions of another run ({} regions {} on {} {}): give a new output folder, or remove it to start over",
                out.display(),
                theirs.checkpoint.display(),
                variant_name(theirs.regions),
                theirs.data,
                theirs.split
            ));
        }
        return Ok(true);
    }
    if out.is_dir() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(format!(
            "{} is not empty and holds no predictions of mmtt (no {RECORD_FILE}): give a new or empty output folder",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let text = serde_json::to_string_pretty(record).map_err(|e| e.to_string())?;
    std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(false)
}

/// The samples with one per id (the first: an image's other accepted captions are left out, so
/// that each image is predicted once); the number left out.
pub fn one_per_id(samples: Vec<TalkerSample>) -> (Vec<TalkerSample>, usize) {
    let mut seen = std::collections::HashSet::new();
    let n = samples.len();
    let kept: Vec<TalkerSample> = samples.into_iter().filter(|s| seen.insert(s.id.clone())).collect();
    let dropped = n - kept.len();
    (kept, dropped)
}

/// Adds to the ground truth file `gt` (as the prediction wrote it for one sample per id) the
/// further captions of the same images in `all`: several references of one image, as the release
/// format has them. The number of records added.
pub fn add_references(gt: &Path, all: &[TalkerSample]) -> Result<usize, String> {
    let text = std::fs::read_to_string(gt).map_err(|e| format!("cannot read {}: {e}", gt.display()))?;
    let mut records: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a JSON list of records: {e}", gt.display()))?;
    let mut have: std::collections::HashMap<String, (Vec<String>, serde_json::Value)> = std::collections::HashMap::new();
    for r in &records {
        let (Some(id), Some(c)) = (r.get("image_id").and_then(|v| v.as_str()), r.get("caption").and_then(|v| v.as_str())) else {
            continue;
        };
        let e = have.entry(id.to_string()).or_insert_with(|| (Vec::new(), r.clone()));
        e.0.push(c.to_string());
    }
    let mut added = 0;
    for s in all {
        let Some((captions, first)) = have.get_mut(&s.id) else { continue };
        if captions.contains(&s.caption) {
            continue;
        }
        captions.push(s.caption.clone());
        let mut r = first.clone();
        r["caption"] = serde_json::Value::String(s.caption.clone());
        records.push(r);
        added += 1;
    }
    if added > 0 {
        let tmp = gt.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&records).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, gt)).map_err(|e| format!("cannot write {}: {e}", gt.display()))?;
    }
    Ok(added)
}

/// Predicts `samples` into `out` on `device` (`cpu`, `cuda:N`; see
/// `mmtt_model::talker::predict::predict`). With `stop`, the
/// work goes in slices (the model loaded again for each) and `stop` is asked between them: a
/// stopped run returns `Ok(None)` with what it wrote kept (predicting into the same folder again
/// resumes). `tick(done, total)` counts samples of the whole list.
#[allow(clippy::too_many_arguments)]
pub fn run(
    checkpoint: &Path,
    fpn: Option<&Path>,
    device: &str,
    samples: &[TalkerSample],
    opts: &PredictOptions,
    out: &Path,
    stop: Option<&dyn Fn() -> bool>,
    tick: &mut dyn FnMut(usize, usize),
) -> Result<Option<PredictSummary>, mmtt_model::talker::TalkerError> {
    let device = mmtt_model::fpn::parse_device(device)?;
    let device = &device;
    let total = samples.len();
    let Some(stop) = stop else {
        return mmtt_model::talker::predict::predict(checkpoint, fpn, device, samples, opts, out, tick).map(Some);
    };
    // slices of about a tenth (at least 32 samples): a stop waits for at most one slice
    let slice = (total / 10).max(32);
    let mut end = 0;
    loop {
        if stop() {
            return Ok(None);
        }
        end = (end + slice).min(total);
        // the whole prefix each time: the samples already predicted are skipped, and gt.json
        // always lists everything predicted so far
        let s =
            mmtt_model::talker::predict::predict(checkpoint, fpn, device, &samples[..end], opts, out, &mut |d, _| tick(d.min(end), total))?;
        if end == total {
            return Ok(Some(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_name_the_choices() {
        for (v, _) in VARIANTS {
            assert_eq!(parse_variant(variant_name(v)), Ok(v));
        }
        assert_eq!(parse_variant(" GT "), Ok(RegionSource::Gt));
        let e = parse_variant("oracle").unwrap_err();
        assert!(e.contains("`oracle`") && e.contains("fpn") && e.contains("none") && e.contains("gt"), "{e}");
        assert_eq!(variant_label(RegionSource::None), "w/o FPN");
    }

    #[test]
    fn checkpoints_are_checked_before_loading() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = check_inputs(&missing, None, &[RegionSource::Gt]).unwrap_err();
        assert_eq!(e.0, "checkpoint");
        assert!(e.1.contains("nope") && e.1.contains("best/"), "{e:?}");
        // an HF-layout checkpoint without an FPN: fpn is refused, gt and none are fine
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        check_inputs(d.path(), None, &[RegionSource::Gt, RegionSource::None]).unwrap();
        let e = check_inputs(d.path(), None, &[RegionSource::Fpn]).unwrap_err();
        assert_eq!(e.0, "fpn");
        assert!(e.1.contains("--fpn") && e.1.contains("gt or none"), "{e:?}");
        let e = check_inputs(d.path(), Some(&missing), &[RegionSource::Fpn]).unwrap_err();
        assert_eq!(e.0, "fpn");
        check_inputs(d.path(), Some(d.path()), &[RegionSource::Fpn]).unwrap();
        std::fs::write(d.path().join("mmtt_talker.json"), r#"{"fpn": "."}"#).unwrap();
        check_inputs(d.path(), None, &[RegionSource::Fpn]).unwrap();
    }

    #[test]
    fn an_output_folder_is_resumed_only_by_its_own_run() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let r = PredictRecord {
            checkpoint: "/runs/a/best".into(),
            fpn: None,
            regions: RegionSource::Gt,
            split: "test".into(),
            data: "database".into(),
            num_beams: 1,
            max_new_tokens: 20,
        };
        assert_eq!(claim_out(&out, &r), Ok(false));
        assert_eq!(claim_out(&out, &r), Ok(true));
        let other = PredictRecord { regions: RegionSource::None, ..r.clone() };
        let e = claim_out(&out, &other).unwrap_err();
        assert!(e.contains("another run") && e.contains("/runs/a/best") && e.contains("new output folder"), "{e}");
        std::fs::write(d.path().join("x"), "").unwrap();
        assert!(claim_out(d.path(), &r).unwrap_err().contains("not empty"));
        assert!(claim_out(&d.path().join("x"), &r).unwrap_err().contains("is a file"));
    }

    #[test]
    fn one_prediction_per_image() {
        let s =
            |id: &str, c: &str| TalkerSample { id: id.into(), image: "/i.png".into(), mask: None, caption: c.into(), labels: [false; 21] };
        let (kept, dropped) = one_per_id(vec![s("a", "1"), s("a", "2"), s("b", "3")]);
        assert_eq!(dropped, 1);
        assert_eq!(kept.iter().map(|x| x.caption.as_str()).collect::<Vec<_>>(), ["1", "3"]);
        // the left-out captions become further references of their image
        let d = tempfile::tempdir().unwrap();
        let gt = d.path().join("gt.json");
        std::fs::write(
            &gt,
            r#"[{"image_id": "a", "caption": "1", "mask_path": "/m/a.png"}, {"image_id": "b", "caption": "3", "mask_path": "/m/b.png"}]"#,
        )
        .unwrap();
        assert_eq!(add_references(&gt, &[s("a", "1"), s("a", "2"), s("b", "3"), s("c", "4")]), Ok(1));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gt).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[2], serde_json::json!({"image_id": "a", "caption": "2", "mask_path": "/m/a.png"}));
    }
}
