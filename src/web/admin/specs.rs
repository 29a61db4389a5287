//! From validated form values to the job system's typed specs, and the submission of a job with
//! its admin action recorded. The one place in the console that knows the specs' fields.

use super::{Admin, Refusal, actions};
use crate::jobs::{self, JobSpec};
use crate::web::AppState;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use std::path::Path;

/// A spec from its JSON form, checked by the job system's own validation; its message becomes
/// the refusal of `field`.
fn spec(v: serde_json::Value, field: &str) -> Result<JobSpec, Refusal> {
    let s: JobSpec = serde_json::from_value(v).map_err(|e| Refusal::new(field, format!("not a valid job: {e}")))?;
    s.validate().map_err(|e| Refusal::new(field, e.to_string()))?;
    Ok(s)
}

pub fn import(layout: &str, root: &Path, limit: Option<u64>) -> Result<JobSpec, Refusal> {
    spec(json!({ "kind": "import", "dataset": layout, "root": root, "limit": limit }), "folder")
}

pub fn masks(seed: u64, dataset: Option<&str>) -> Result<JobSpec, Refusal> {
    spec(json!({ "kind": "masks", "seed": seed, "dataset": dataset }), "seed")
}

/// A generation job: `methods` (one, or with `mix_paper` one per family), count, seeds, device,
/// generator settings (the SDXL options).
pub struct Forge<'a> {
    pub methods: Vec<&'a str>,
    pub mix_paper: bool,
    pub count: u64,
    pub seed: u64,
    pub plan_seed: u64,
    pub device: &'a str,
    pub params: serde_json::Value,
}

pub fn forge(f: &Forge<'_>) -> Result<JobSpec, Refusal> {
    spec(
        json!({ "kind": "forge", "methods": f.methods, "count": f.count, "seed": f.seed, "plan_seed": f.plan_seed,
                "mix_paper": f.mix_paper, "device": f.device, "max_attempts": 3, "params": f.params }),
        "method",
    )
}

pub fn export(o: &crate::dataset::export::ExportOptions, out: &Path) -> Result<JobSpec, Refusal> {
    let mut v = serde_json::to_value(o).map_err(|e| Refusal::new("format", e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("kind".into(), json!("export"));
        m.insert("out".into(), json!(out));
        m.insert("link".into(), json!(false));
    }
    spec(v, "format")
}

/// An evaluation: ground truth (release-format JSON and its mask folder), the uploaded
/// predictions and their masks, the row's name.
pub fn eval(gt: &Path, gt_mask_base: &Path, pred: &Path, pred_mask_base: &Path, name: &str) -> Result<JobSpec, Refusal> {
    spec(
        json!({ "kind": "eval", "gt": gt, "gt_mask_base": gt_mask_base, "pred": pred, "pred_mask_base": pred_mask_base,
                "threshold": 127, "name": name }),
        "predictions",
    )
}

/// Submits `spec` as `admin`, records the action, answers 303 to the job's page (or 201 with
/// `{"job": id}` for scripts).
pub async fn submit_and_answer(state: &AppState, admin: &Admin, spec: &JobSpec, action: &str, mut detail: serde_json::Value) -> Response {
    let id = match jobs::submit(&state.pool, spec, &admin.user.name).await {
        Ok(id) => id,
        Err(e) => return super::internal(admin.json, format!("cannot submit the job: {e}")),
    };
    if let Some(m) = detail.as_object_mut() {
        m.insert("job".into(), json!(id));
    }
    if let Err(e) = actions::record(&state.pool, admin, action, detail).await {
        return super::internal(admin.json, e);
    }
    super::done(admin.json, StatusCode::CREATED, &json!({ "job": id, "url": format!("/admin/jobs/{id}") }), &format!("/admin/jobs/{id}"))
}
