//! `mmtt eval labels --gt G --pred P`: 21-label sets per id (JSON objects of id -> list of label
//! names, or id -> 21 values of 0/1). PLM (spec section 8): per sample `|pred ∩ gt| / |pred ∪
//! gt|` over positive labels (1 when both are empty), averaged; plus per-label precision,
//! recall and F1 (0 where undefined), their macro average over the 21 labels, and the micro
//! average over all decisions.

use super::EvalError;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScores {
    #[serde(rename = "PLM")]
    pub plm: f64,
    pub per_label: BTreeMap<String, Prf>,
    pub macro_avg: Prf,
    pub micro_avg: Prf,
    pub n: u64,
}

fn prf(tp: u64, fp: u64, fn_: u64) -> Prf {
    let p = if tp + fp > 0 { tp as f64 / (tp + fp) as f64 } else { 0.0 };
    let r = if tp + fn_ > 0 { tp as f64 / (tp + fn_) as f64 } else { 0.0 };
    let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
    Prf { precision: p, recall: r, f1: f, support: tp + fn_ }
}

/// The 21-bit set of one entry.
fn parse_set(id: &str, v: &serde_json::Value, labels: &[&str]) -> Result<Vec<bool>, EvalError> {
    let arr = v.as_array().ok_or_else(|| EvalError::Input(format!("id `{id}`: expected a list of label names or 21 values of 0/1")))?;
    if arr.len() == labels.len() && arr.iter().all(|x| x.as_u64().is_some_and(|n| n <= 1)) {
        return Ok(arr.iter().map(|x| x.as_u64() == Some(1)).collect());
    }
    let mut set = vec![false; labels.len()];
    for x in arr {
        let name = x.as_str().ok_or_else(|| EvalError::Input(format!("id `{id}`: {x} is not a label name")))?;
        let i = labels
            .iter()
            .position(|l| *l == name.trim().to_lowercase())
            .ok_or_else(|| EvalError::Input(format!("id `{id}`: unknown label `{name}`; the labels are {}", labels.join(", "))))?;
        set[i] = true;
    }
    Ok(set)
}

pub fn evaluate(gt: &str, pred: &str, labels: &[&str]) -> Result<LabelScores, EvalError> {
    let g: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(gt).map_err(|e| EvalError::Input(format!("ground truth: not a JSON object: {e}")))?;
    let p: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(pred).map_err(|e| EvalError::Input(format!("predictions: not a JSON object: {e}")))?;
    let only_g: Vec<&String> = g.keys().filter(|k| !p.contains_key(*k)).collect();
    let only_p: Vec<&String> = p.keys().filter(|k| !g.contains_key(*k)).collect();
    if !only_g.is_empty() || !only_p.is_empty() || g.is_empty() {
        return Err(EvalError::Input(format!(
            "the files must name the same (non-empty) ids: only in the ground truth {:?}, only in the predictions {:?}",
            only_g.iter().take(20).collect::<Vec<_>>(),
            only_p.iter().take(20).collect::<Vec<_>>()
        )));
    }
    let mut sets = Vec::with_capacity(g.len());
    for (id, gv) in &g {
        sets.push((parse_set(id, gv, labels)?, parse_set(id, &p[id], labels)?));
    }
    Ok(score_sets(&sets, labels))
}

/// Scores (ground truth, prediction) label sets, each `labels.len()` long: PLM, per-label,
/// macro and micro figures. Callers that hold sets already (the FPN trainer's validation,
/// `mmtt eval fpn`) use this directly; `sets` must not be empty.
pub fn score_sets(sets: &[(Vec<bool>, Vec<bool>)], labels: &[&str]) -> LabelScores {
    let k = labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
    let mut plm = 0.0;
    for (gs, ps) in sets {
        let (mut inter, mut union) = (0u64, 0u64);
        for i in 0..k {
            inter += (gs[i] && ps[i]) as u64;
            union += (gs[i] || ps[i]) as u64;
            tp[i] += (gs[i] && ps[i]) as u64;
            fp[i] += (!gs[i] && ps[i]) as u64;
            fn_[i] += (gs[i] && !ps[i]) as u64;
        }
        plm += if union == 0 { 1.0 } else { inter as f64 / union as f64 };
    }
    let n = sets.len() as u64;
    let per: Vec<Prf> = (0..k).map(|i| prf(tp[i], fp[i], fn_[i])).collect();
    let macro_avg = Prf {
        precision: per.iter().map(|x| x.precision).sum::<f64>() / k as f64,
        recall: per.iter().map(|x| x.recall).sum::<f64>() / k as f64,
        f1: per.iter().map(|x| x.f1).sum::<f64>() / k as f64,
        support: per.iter().map(|x| x.support).sum(),
    };
    let micro_avg = prf(tp.iter().sum(), fp.iter().sum(), fn_.iter().sum());
    LabelScores {
        plm: if n == 0 { 0.0 } else { plm / n as f64 },
        per_label: labels.iter().zip(per).map(|(l, x)| (l.to_string(), x)).collect(),
        macro_avg,
        micro_avg,
        n,
    }
}
