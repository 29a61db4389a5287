//! From validated form values to the job system's typed specs (checked again by their own
//! `validate`, whose field names are mapped to the form's), and the submission of a job with its
//! admin action recorded.

use super::{Admin, Refusal, actions};
use crate::dataset::export::ExportOptions;
use crate::jobs::forge::ForgeRequest;
use crate::jobs::{self, EvalSpec, ExportSpec, ImportSpec, JobSpec, MasksSpec, SpecError};
use crate::web::AppState;
use axum::http::StatusCode;
use axum::response::Response;
use mmtt_generators::forge::onnx::Device;
use serde_json::json;
use std::path::Path;

/// `spec` after the job system's own validation; `field` maps its field names to the form's.
fn checked(spec: JobSpec, field: impl Fn(&'static str) -> &'static str) -> Result<JobSpec, Refusal> {
    spec.validate().map_err(|SpecError { field: f, message }| Refusal::new(field(f), message))?;
    Ok(spec)
}

pub fn import(layout: &str, root: &Path, limit: Option<u64>) -> Result<JobSpec, Refusal> {
    let dataset = layout.parse().map_err(|e: String| Refusal::new("dataset", e))?;
    let spec = JobSpec::Import(ImportSpec { dataset, root: root.to_path_buf(), limit: limit.map(|l| l as usize), max_side: 12_000 });
    checked(spec, |f| if f == "root" { "folder" } else { f })
}

pub fn masks(seed: u64, dataset: Option<&str>) -> Result<JobSpec, Refusal> {
    checked(JobSpec::Masks(MasksSpec { seed, dataset: dataset.map(str::to_string) }), |f| f)
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
    let req = ForgeRequest {
        methods: f.methods.iter().map(|m| m.to_string()).collect(),
        count: f.count,
        seed: f.seed,
        plan_seed: f.plan_seed,
        mix_paper: f.mix_paper,
        device: if f.device == "cuda" { Device::Cuda } else { Device::Cpu },
        max_attempts: 3,
        params: f.params.clone(),
    };
    checked(JobSpec::Forge(req), |f| match f {
        "methods" => "method",
        "params" => "prompt",
        other => other,
    })
}

pub fn export(o: &ExportOptions, out: &Path) -> Result<JobSpec, Refusal> {
    let spec = JobSpec::Export(ExportSpec {
        format: o.format,
        out: out.to_path_buf(),
        include_unreviewed: o.include_unreviewed,
        methods: o.methods.clone(),
        datasets: o.datasets.clone(),
        resplit: o.resplit,
        link: false,
        originals: o.originals,
        shard_bytes: o.shard_bytes,
    });
    checked(spec, |f| match f {
        "methods" => "method",
        "datasets" => "dataset",
        "shard_bytes" => "shard_mb",
        "out" => "format",
        other => other,
    })
}

/// An evaluation: ground truth (release-format JSON and its mask folder), the uploaded
/// predictions and their masks, the row's name.
pub fn eval(gt: &Path, gt_mask_base: &Path, pred: &Path, pred_mask_base: &Path, name: &str) -> Result<JobSpec, Refusal> {
    let spec = JobSpec::Eval(EvalSpec {
        name: name.to_string(),
        gt: gt.to_path_buf(),
        predictions: pred.to_path_buf(),
        gt_masks: Some(gt_mask_base.to_path_buf()),
        masks: Some(pred_mask_base.to_path_buf()),
        threshold: 127,
        meteor_data: None,
        model: None,
        regions: None,
    });
    checked(spec, |f| match f {
        "gt" | "gt_masks" => "truth",
        other => other,
    })
}

/// A Table 3 job (a finished stage-2 training run predicted and scored with each regions variant).
pub fn table3(spec: crate::jobs::table3::Table3Spec) -> Result<crate::jobs::table3::Table3Spec, Refusal> {
    spec.validate().map_err(|SpecError { field, message }| {
        let field = match field {
            "checkpoint" | "out" => "train_job",
            "data" => "limit",
            other => other,
        };
        Refusal::new(field, message)
    })?;
    Ok(spec)
}

/// Submits `spec` as `admin`, records the action, answers 303 to the job's page (or 201 with
/// `{"job": id}` for scripts).
pub async fn submit_and_answer(state: &AppState, admin: &Admin, spec: &JobSpec, action: &str, mut detail: serde_json::Value) -> Response {
    let id = match jobs::submit(&state.pool, spec, &admin.user.name).await {
        Ok(id) => id,
        Err(jobs::JobError::Spec(SpecError { field, message })) => {
            return super::refused(admin.json, &Refusal::new(field, message), |r| {
                Ok(axum::response::Html(
                    crate::web::pages::message_page(StatusCode::UNPROCESSABLE_ENTITY, &r.to_string()).unwrap_or_default(),
                ))
            });
        }
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

/// A training run (its config from the Train form).
pub fn train(spec: crate::jobs::train::TrainSpec) -> Result<crate::jobs::train::TrainSpec, Refusal> {
    spec.validate().map_err(|SpecError { field, message }| {
        let field = match field {
            "negative_weight" => "w",
            "data" => "limit",
            "run_dir" | "init" | "beta1" | "beta2" | "adam_eps" | "weight_decay" | "grad_clip" | "config" => "preset",
            other => other,
        };
        Refusal::new(field, message)
    })?;
    Ok(spec)
}

/// A stage-2 training run (its config from the Train page's stage-2 form): the job system's
/// field names mapped to the form's (keys the form does not show name the preset they came from).
pub fn train_talker(spec: crate::jobs::train::talker::TalkerTrainSpec) -> Result<crate::jobs::train::talker::TalkerTrainSpec, Refusal> {
    const ON_THE_FORM: [&str; 19] = [
        "preset",
        "init",
        "fpn",
        "regions",
        "steps",
        "batch_size",
        "lr",
        "warmup_steps",
        "seed",
        "checkpoint_every",
        "eval_every",
        "eval_limit",
        "devices",
        "cache_vision_features",
        "augment",
        "double_sigmoid",
        "align_masks",
        "normalize_captions",
        "gate",
    ];
    spec.validate().map_err(|SpecError { field, message }| {
        let field = match field {
            "data" => "limit",
            "mask_loss" => "double_sigmoid",
            f if ON_THE_FORM.contains(&f) => f,
            _ => "preset",
        };
        Refusal::new(field, message)
    })?;
    Ok(spec)
}
