//! `mmtt eval report --gt MMTT.json --pred PRED.jsonl --gt-mask-base DIR --pred-mask-base DIR`:
//! the paper's Table 2 row (CIDEr, BLEU-1..4, ROUGE-L, IoU, precision, recall, all x100) from one
//! ground-truth file in the release format (a JSON list of `{image_id, caption, mask_path, ...}`;
//! several records of one image are several references) and one prediction per line
//! (`{"image_id", "caption", "mask_path"}`; `pred_caption`/`prediction` and `pred_mask_path` are
//! accepted too). Mask paths are relative to their base folders.

use super::EvalError;
use super::captions::{CaptionScores, CaptionSet};
use super::masks::{MaskScores, evaluate_pairs};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub captions: CaptionScores,
    pub masks: MaskScores,
    /// The Table 2 columns, x100: CIDEr, B-1, B-2, B-3, B-4, ROUGE-L, IoU, Prec., Rec.
    pub table2_row: BTreeMap<&'static str, f64>,
    pub images: u64,
}

fn field<'a>(v: &'a serde_json::Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| v.get(*n).and_then(|x| x.as_str()))
}

pub fn evaluate(
    gt_json: &str,
    pred_jsonl: &str,
    gt_base: &Path,
    pred_base: &Path,
    threshold: u8,
    meteor: Option<&super::meteor::MeteorData>,
) -> Result<Report, EvalError> {
    let gt: Vec<serde_json::Value> =
        serde_json::from_str(gt_json).map_err(|e| EvalError::Input(format!("ground truth: not a JSON list of release records: {e}")))?;
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut gt_masks: BTreeMap<String, String> = BTreeMap::new();
    for (i, r) in gt.iter().enumerate() {
        let id = field(r, &["image_id"]).ok_or_else(|| EvalError::Input(format!("ground truth record {i}: no image_id")))?;
        let cap = field(r, &["caption"]).ok_or_else(|| EvalError::Input(format!("ground truth {id}: no caption")))?;
        let mask = field(r, &["mask_path"]).ok_or_else(|| EvalError::Input(format!("ground truth {id}: no mask_path")))?;
        refs.entry(id.to_string()).or_default().push(cap.to_string());
        gt_masks.entry(id.to_string()).or_insert_with(|| mask.to_string());
    }
    let mut preds: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (n, line) in pred_jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| EvalError::Input(format!("predictions line {}: not JSON: {e}", n + 1)))?;
        let id = field(&v, &["image_id"]).ok_or_else(|| EvalError::Input(format!("predictions line {}: no image_id", n + 1)))?;
        let cap = field(&v, &["caption", "pred_caption", "prediction"])
            .ok_or_else(|| EvalError::Input(format!("prediction {id}: no caption")))?;
        let mask = field(&v, &["mask_path", "pred_mask_path"]).ok_or_else(|| EvalError::Input(format!("prediction {id}: no mask_path")))?;
        if preds.insert(id.to_string(), (cap.to_string(), mask.to_string())).is_some() {
            return Err(EvalError::Input(format!("prediction {id} appears twice")));
        }
    }
    let refs_json = serde_json::to_string(&refs).map_err(|e| EvalError::Input(e.to_string()))?;
    let preds_json = serde_json::to_string(&preds.iter().map(|(k, (c, _))| (k, c)).collect::<BTreeMap<_, _>>())
        .map_err(|e| EvalError::Input(e.to_string()))?;
    // the same id check (and message) as `eval captions`
    let captions = CaptionSet::parse(&refs_json, &preds_json)?.score(meteor)?;
    let pairs: Vec<(PathBuf, PathBuf)> = gt_masks.iter().map(|(id, m)| (gt_base.join(m), pred_base.join(&preds[id].1))).collect();
    let masks = evaluate_pairs(&pairs, threshold)?;
    let row = BTreeMap::from([
        ("CIDEr", captions.cider * 100.0),
        ("B-1", captions.bleu1 * 100.0),
        ("B-2", captions.bleu2 * 100.0),
        ("B-3", captions.bleu3 * 100.0),
        ("B-4", captions.bleu4 * 100.0),
        ("ROUGE-L", captions.rouge_l * 100.0),
        ("IoU", masks.miou * 100.0),
        ("Prec.", masks.precision * 100.0),
        ("Rec.", masks.recall * 100.0),
    ]);
    Ok(Report { images: refs.len() as u64, captions, masks, table2_row: row })
}

/// The row as the paper prints it.
pub fn table_line(name: &str, r: &Report) -> String {
    let cols = ["CIDEr", "B-1", "B-2", "B-3", "B-4", "ROUGE-L", "IoU", "Prec.", "Rec."];
    format!(
        "| method | {} |\n| {name} | {} |",
        cols.join(" | "),
        cols.iter().map(|c| format!("{:.2}", r.table2_row[c])).collect::<Vec<_>>().join(" | ")
    )
}
