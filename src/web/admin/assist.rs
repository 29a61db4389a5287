//! Assist page: the project's model assistance (issue 17). Register a trained model (a finished
//! stage-2 run, or folders, with the FPN that chooses its regions), choose the mode (off, hint
//! after a first draft, prefill) with the model and the held-out fraction, and start `assist`
//! jobs that compute the model's suggestions ahead; coverage of the tasks annotators will open.
//! It writes through `storage::tables::assist` and submits jobs through `jobs`.

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, specs};
use crate::jobs::assist::{AssistSpec, coverage};
use crate::storage::status::AssistMode;
use crate::storage::tables::assist::{self, AssistModel, AssistSettings};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use std::path::PathBuf;

#[derive(Template)]
#[template(path = "admin_assist.html")]
struct AssistPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    settings: AssistSettings,
    models: Vec<AssistModel>,
    runs: Vec<crate::jobs::table3::TalkerRun>,
    /// (with a suggestion, without, held out) among open tasks, for the current model.
    coverage: Option<(i64, i64, i64)>,
    jobs: Vec<JobRow>,
}

impl AssistPage<'_> {
    fn mode_is(&self, m: &str) -> bool {
        self.settings.mode.as_str() == m
    }
    fn current(&self, id: &uuid::Uuid) -> bool {
        self.settings.model.as_ref().is_some_and(|m| m.id == *id)
    }
}

async fn page(
    state: &AppState,
    admin: &Admin,
    error: Option<&Refusal>,
    values: &Fields,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let settings = assist::settings(&state.pool).await?;
    let models = assist::models(&state.pool).await?;
    let runs = crate::jobs::table3::finished_talker_runs(&state.pool).await.map_err(|e| WebError::Internal(e.to_string()))?;
    let coverage = match &settings.model {
        Some(m) => Some(coverage(&state.pool, m.id, settings.seed, settings.holdout).await.map_err(|e| WebError::Internal(e.to_string()))?),
        None => None,
    };
    let jobs = recent(&state.pool, Some("assist")).await?;
    let data = serde_json::json!({
        "settings": settings, "models": models, "jobs": jobs,
        "coverage": coverage.map(|(w, wo, h)| serde_json::json!({"with": w, "without": wo, "held_out": h})),
    });
    let html = render(&AssistPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        settings,
        models,
        runs,
        coverage,
        jobs,
    })?;
    Ok((html, data))
}

/// GET /admin/assist
pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    match page(&state, &admin, None, &Fields::default()).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

async fn refuse(state: &AppState, admin: &Admin, r: &Refusal, f: &Fields) -> Response {
    let html = page(state, admin, Some(r), f).await.map(|(h, _)| h);
    refused(admin.json, r, |_| html)
}

fn uuid_field(f: &Fields, name: &str, what: &str) -> Result<Option<uuid::Uuid>, Refusal> {
    f.opt(name).map(|v| v.parse().map_err(|_| Refusal::new(name, format!("`{}` is not an id: choose {what}", super::short(v))))).transpose()
}

/// POST /admin/assist/models: register a model (name; a finished stage-2 run or a checkpoint
/// folder; the FPN folder, by default the run's own).
pub async fn register(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let name = f.val("name");
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Refusal::new("name", "give the model a name (1 to 200 characters), as annotators and the dashboard will see it"));
        }
        let run = match uuid_field(&f, "talker_job", "a finished stage-2 run")? {
            Some(id) => {
                let runs =
                    crate::jobs::table3::finished_talker_runs(&state.pool).await.map_err(|e| Refusal::new("talker_job", e.to_string()))?;
                Some(runs.into_iter().find(|r| r.job == id).ok_or_else(|| {
                    Refusal::new("talker_job", "that job is not a finished stage-2 run with a checkpoint: choose one from the list")
                })?)
            }
            None => None,
        };
        let checkpoint = match (f.opt("checkpoint"), &run) {
            (Some(c), _) => PathBuf::from(c),
            (None, Some(r)) => r.checkpoint.clone(),
            (None, None) => return Err(Refusal::new("talker_job", "choose a finished stage-2 run, or give its checkpoint folder")),
        };
        let fpn = f.opt("fpn").map(PathBuf::from).or_else(|| run.as_ref().and_then(|r| r.fpn.clone()));
        crate::predict::check_inputs(&checkpoint, fpn.as_deref(), &[mmtt_model::talker::RegionSource::Fpn]).map_err(|(field, m)| {
            Refusal::new(
                if field == "checkpoint" && run.is_some() && f.opt("checkpoint").is_none() {
                    "talker_job"
                } else if field == "regions" {
                    "fpn"
                } else {
                    field
                },
                format!("{m} (assistance names the regions the FPN finds, so the model needs its FPN)"),
            )
        })?;
        Ok((name.to_string(), checkpoint, fpn, run.map(|r| r.job)))
    }
    .await;
    let (name, checkpoint, fpn, job) = match checked {
        Ok(x) => x,
        Err(r) => return refuse(&state, &admin, &r, &f).await,
    };
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string();
    let id = match assist::register_model(
        &state.pool,
        &name,
        &abs(&checkpoint),
        fpn.as_ref().map(abs).as_deref(),
        job,
        None,
        Some(admin.user.id),
    )
    .await
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            return refuse(
                &state,
                &admin,
                &Refusal::new("name", format!("a model named `{name}` is registered already: choose another name")),
                &f,
            )
            .await;
        }
        Err(e) => return super::internal(admin.json, e),
    };
    if let Err(e) = super::actions::record(
        &state.pool,
        &admin,
        "assist register",
        serde_json::json!({"model": id, "name": name, "checkpoint": checkpoint, "fpn": fpn}),
    )
    .await
    {
        return super::internal(admin.json, e);
    }
    super::done(admin.json, StatusCode::CREATED, &serde_json::json!({ "model": id }), "/admin/assist")
}

/// POST /admin/assist/settings: mode, model, held-out fraction.
pub async fn settings(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let mode: AssistMode =
            f.val("mode").parse().map_err(|e: String| Refusal::new("mode", format!("{e}: choose off, hint or prefill")))?;
        let model = uuid_field(&f, "model", "a registered model")?;
        if let Some(id) = model
            && assist::model(&state.pool, id).await.map_err(|e| Refusal::new("model", e.to_string()))?.is_none()
        {
            return Err(Refusal::new("model", "no such registered model: register it first"));
        }
        if mode != AssistMode::Off && model.is_none() {
            return Err(Refusal::new("model", "choose the model whose suggestions annotators see (or set the mode to off)"));
        }
        let holdout = match f.opt("holdout") {
            None => 0.2,
            Some(v) => v.parse::<f64>().ok().filter(|h| (0.0..=1.0).contains(h)).ok_or_else(|| {
                Refusal::new(
                    "holdout",
                    format!("`{}` is not a fraction: give the share of forgeries kept unassisted, 0 to 1 (such as 0.2)", super::short(v)),
                )
            })?,
        };
        Ok((mode, model, holdout))
    }
    .await;
    let (mode, model, holdout) = match checked {
        Ok(x) => x,
        Err(r) => return refuse(&state, &admin, &r, &f).await,
    };
    if let Err(e) = assist::set_settings(&state.pool, mode, model, holdout).await {
        return super::internal(admin.json, e);
    }
    if let Err(e) = super::actions::record(
        &state.pool,
        &admin,
        "assist settings",
        serde_json::json!({"mode": mode, "model": model, "holdout": holdout}),
    )
    .await
    {
        return super::internal(admin.json, e);
    }
    super::done(admin.json, StatusCode::OK, &serde_json::json!({ "mode": mode, "model": model, "holdout": holdout }), "/admin/assist")
}

/// POST /admin/assist/suggest: an `assist` job for a registered model.
pub async fn suggest(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let id = uuid_field(&f, "model", "a registered model")?.ok_or_else(|| Refusal::new("model", "choose a registered model"))?;
        let m = assist::model(&state.pool, id)
            .await
            .map_err(|e| Refusal::new("model", e.to_string()))?
            .ok_or_else(|| Refusal::new("model", "no such registered model: register it first"))?;
        let mut spec = AssistSpec::new(id, PathBuf::from(&m.checkpoint), m.fpn.as_ref().map(PathBuf::from));
        spec.include_annotated = f.flag("include_annotated");
        spec.limit = f.opt("limit").map(|_| f.u64_or("limit", None, "at most how many forgeries").map(|l| l as usize)).transpose()?;
        if let Some(d) = f.opt("device") {
            spec.device = d.to_string();
        }
        spec.num_beams = f.u64_or("num_beams", Some(spec.num_beams as u64), "the beams, such as 5")? as usize;
        spec.max_new_tokens =
            f.u64_or("max_new_tokens", Some(spec.max_new_tokens as u64), "at most how many new tokens, such as 100")? as usize;
        spec.batch_size = f.u64_or("batch_size", Some(spec.batch_size as u64), "images per forward pass, such as 4")? as usize;
        spec.validate().map_err(|e| Refusal::new(e.field, e.message))?;
        Ok((spec, m.name))
    }
    .await;
    match checked {
        Err(r) => refuse(&state, &admin, &r, &f).await,
        Ok((spec, name)) => {
            let detail =
                serde_json::json!({"model": spec.model, "name": name, "include_annotated": spec.include_annotated, "limit": spec.limit});
            specs::submit_and_answer(&state, &admin, &crate::jobs::JobSpec::Assist(spec), "assist suggest", detail).await
        }
    }
}
