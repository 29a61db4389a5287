//! The jobs pages: every job with a live progress bar (static/admin.js polls the JSON variant of
//! the same routes; no reload needed), a job's log, result and failure reason, the cancel /
//! pause / resume / retry buttons, and the live workers with what each does and its rate.

use super::{Admin, NAV, actions, fields, page_or_json};
use crate::jobs::{self, JobAction, JobFilter};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// A job as the pages show it (read from the job system's JSON view, so the page and the JSON
/// variant show the same figures).
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub started_by: String,
    pub done: i64,
    pub total: i64,
    pub failed: i64,
    pub percent: f64,
    pub rate: String,
    pub eta: String,
    pub error: String,
    pub blocked: String,
    pub created: String,
    pub terminal: bool,
    #[serde(skip)]
    pub view: Value,
}

fn num(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64))).unwrap_or(0)
}

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl JobRow {
    pub fn from_view(v: Value) -> JobRow {
        let (done, total, failed) = (num(&v, "done"), num(&v, "total"), num(&v, "failed"));
        let state = text(&v, "state");
        let percent = if total > 0 {
            100.0 * (done + failed) as f64 / total as f64
        } else if state == "done" {
            100.0
        } else {
            0.0
        };
        let rate = v.get("rate_per_s").and_then(|x| x.as_f64()).map(|r| format!("{r:.2}/s")).unwrap_or_default();
        let eta = v.get("eta_s").and_then(|x| x.as_f64()).map(|s| format!("{s:.0} s")).unwrap_or_default();
        let created = text(&v, "created_at").chars().take(19).collect::<String>().replace('T', " ");
        JobRow {
            id: text(&v, "id"),
            kind: text(&v, "kind"),
            terminal: matches!(state.as_str(), "done" | "failed" | "cancelled"),
            state,
            started_by: text(&v, "started_by"),
            done,
            total,
            failed,
            percent: percent.min(100.0),
            rate,
            eta,
            error: text(&v, "error"),
            blocked: text(&v, "blocked"),
            created,
            view: v,
        }
    }
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(8)]
    }
    /// Whether the state allows `action` (the buttons shown; the job system has the last word).
    pub fn can(&self, action: &str) -> bool {
        match action {
            "cancel" => matches!(self.state.as_str(), "queued" | "running" | "paused"),
            "pause" => matches!(self.state.as_str(), "queued" | "running"),
            "resume" => self.state == "paused",
            "retry" => self.state == "failed" || (self.terminal && self.failed > 0),
            _ => false,
        }
    }
    pub fn percent_text(&self) -> String {
        format!("{:.0}", self.percent)
    }
    /// The job's result as indented JSON ("" when none yet).
    pub fn result_text(&self) -> String {
        match self.view.get("result") {
            None | Some(Value::Null) => String::new(),
            Some(r) => serde_json::to_string_pretty(r).unwrap_or_default(),
        }
    }
    pub fn params_text(&self) -> String {
        self.view.get("params").map(|p| serde_json::to_string_pretty(p).unwrap_or_default()).unwrap_or_default()
    }
    /// The log, oldest first: (time, level, message).
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.view
            .get("events")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .map(|e| (text(e, "at").chars().take(19).collect::<String>().replace('T', " "), text(e, "level"), text(e, "message")))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The newest jobs, of one kind or all.
pub async fn recent(pool: &sqlx::PgPool, kind: Option<&str>) -> Result<Vec<JobRow>, WebError> {
    let filter = JobFilter { kind: kind.and_then(|k| k.parse().ok()), limit: Some(50), ..Default::default() };
    let list = jobs::list(pool, &filter).await.map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(list.into_iter().map(|j| JobRow::from_view(serde_json::to_value(&j).unwrap_or(Value::Null))).collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub name: String,
    pub host: String,
    pub devices: String,
    pub doing: String,
    pub rate: String,
    pub done: i64,
    pub heartbeat: String,
}

fn list_text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect::<Vec<_>>().join(", ")
        }
        _ => text(v, k),
    }
}

pub async fn workers(pool: &sqlx::PgPool) -> Result<(Vec<WorkerRow>, Vec<Value>), WebError> {
    let ws = jobs::live_workers(pool).await.map_err(|e| WebError::Internal(e.to_string()))?;
    let vals: Vec<Value> = ws.iter().map(|w| serde_json::to_value(w).unwrap_or(Value::Null)).collect();
    let rows = vals
        .iter()
        .map(|v| WorkerRow {
            name: text(v, "name"),
            host: text(v, "host"),
            devices: list_text(v, "devices"),
            doing: match text(v, "current_job") {
                s if s.is_empty() => "idle".into(),
                s => format!("job {s}"),
            },
            rate: v.get("rate_per_s").and_then(|x| x.as_f64()).map(|r| format!("{r:.2}/s")).unwrap_or_default(),
            done: num(v, "done"),
            heartbeat: text(v, "heartbeat_at").chars().take(19).collect::<String>().replace('T', " "),
        })
        .collect();
    Ok((rows, vals))
}

#[derive(Template)]
#[template(path = "admin_jobs.html")]
struct JobsPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    jobs: Vec<JobRow>,
    workers: Vec<WorkerRow>,
}

/// GET /admin/jobs: every job and the live workers (JSON: `{"jobs": [...], "workers": [...]}`).
pub async fn list(State(state): State<AppState>, admin: Admin) -> Response {
    let got = async {
        let jobs = recent(&state.pool, None).await?;
        let (workers, wv) = workers(&state.pool).await?;
        Ok::<_, WebError>((jobs, workers, wv))
    }
    .await;
    let (jobs, workers, wv) = match got {
        Ok(x) => x,
        Err(e) => return super::error_response(e, admin.json),
    };
    let data = serde_json::json!({ "jobs": jobs.iter().map(|j| &j.view).collect::<Vec<_>>(), "workers": wv });
    page_or_json(admin.json, &data, || render(&JobsPage { nav: &NAV, name: &admin.user.name, jobs, workers }))
}

#[derive(Template)]
#[template(path = "admin_job.html")]
struct JobPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    job: JobRow,
    message: Option<String>,
    /// A training job's figures (its chart is /admin/train/{id}/chart).
    train: Option<super::train::TrainPanel>,
}

fn parse_id(id: &str, json: bool) -> Result<uuid::Uuid, Box<Response>> {
    id.parse().map_err(|_| Box::new(super::error_response(WebError::NotFound, json)))
}

async fn job_page(state: &AppState, admin: &Admin, id: uuid::Uuid, message: Option<String>) -> Result<Html<String>, WebError> {
    let job = jobs::get(&state.pool, id).await.map_err(|e| WebError::Internal(e.to_string()))?.ok_or(WebError::NotFound)?;
    let train = if job.kind == jobs::JobKind::Train { Some(super::train::panel(&state.pool, id).await?) } else { None };
    let job = JobRow::from_view(serde_json::to_value(&job).unwrap_or(Value::Null));
    render(&JobPage { nav: &NAV, name: &admin.user.name, csrf: &admin.user.csrf, job, message, train })
}

/// GET /admin/jobs/{id}: one job with its log (JSON: the job's view).
pub async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, admin.json) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if admin.json {
        return match jobs::get(&state.pool, id).await {
            Ok(Some(j)) => axum::Json(j).into_response(),
            Ok(None) => super::error_response(WebError::NotFound, true),
            Err(e) => super::internal(true, e),
        };
    }
    match job_page(&state, &admin, id, None).await {
        Ok(h) => h.into_response(),
        Err(e) => e.into_response(),
    }
}

/// POST /admin/jobs/{id}/{action}: cancel, pause, resume, retry (the failed items).
pub async fn control(
    State(state): State<AppState>,
    admin: Admin,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id, admin.json) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if let Err(r) = fields(&admin, &headers, &body) {
        return *r;
    }
    let act = match action.as_str() {
        "cancel" => JobAction::Cancel,
        "pause" => JobAction::Pause,
        "resume" => JobAction::Resume,
        "retry" => JobAction::RetryFailed,
        _ => return super::error_response(WebError::NotFound, admin.json),
    };
    match jobs::get(&state.pool, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return super::error_response(WebError::NotFound, admin.json),
        Err(e) => return super::internal(admin.json, e),
    }
    match jobs::control(&state.pool, id, act, &admin.user.name).await {
        Ok(view) => {
            if let Err(e) = actions::record(&state.pool, &admin, &format!("job {action}"), serde_json::json!({ "job": id })).await {
                return super::internal(admin.json, e);
            }
            if admin.json {
                return axum::Json(view).into_response();
            }
            axum::response::Redirect::to(&format!("/admin/jobs/{id}")).into_response()
        }
        Err(e) => {
            // the job's state does not allow it (a finished job cannot be paused, ...): say why
            let msg = e.to_string();
            if admin.json {
                return (StatusCode::CONFLICT, axum::Json(serde_json::json!({ "error": msg }))).into_response();
            }
            match job_page(&state, &admin, id, Some(msg)).await {
                Ok(h) => (StatusCode::CONFLICT, h).into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}
