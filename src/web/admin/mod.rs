//! The admin console: the pages (and their JSON variants for scripts) that drive import, mask
//! planning, generation, export, evaluation and training through the job system, the jobs page with live
//! progress, the leaderboard of evaluated models, and the record of admin actions.
//!
//! One file per page group: [`import`], [`masks`], [`generate`], [`export`], [`eval`], [`train`], [`jobs`],
//! [`audit`] (the actions page); [`tokens`] owns `api_tokens` (bearer tokens for scripts) and
//! [`actions`] is the one writer of `admin_actions`. [`specs`] turns validated form values into
//! the job system's typed specs.
//!
//! Every route is `Access::Admin` in [`super::route_table`]. A request is answered in JSON when it
//! asks for it (`Accept: application/json`) or comes with a bearer token; forms are read from
//! `application/x-www-form-urlencoded`, `multipart/form-data` or a JSON object alike. A refused
//! form answers 422 with a message naming the field and the fix, re-shows the admin's values and
//! starts or stores nothing. This module submits and controls jobs through [`crate::jobs`]; it
//! never writes the job tables itself, nor the dataset tables (the jobs do the work).

pub mod actions;
pub mod assist;
pub mod audit;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod jobs;
pub mod masks;
pub mod specs;
pub mod tokens;
pub mod train;

use super::auth::{Role, User};
use super::{AppState, WebError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Settings of the console (`mmtt serve --import-root DIR ...`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The data directory (uploads, exports and their tars live under it).
    pub data_dir: PathBuf,
    /// Server folders an import may read (canonical paths); the data dir's `incoming/` when none given.
    pub import_roots: Vec<PathBuf>,
    /// Photos per upload.
    pub max_upload_files: usize,
    /// Bytes per uploaded file.
    pub max_upload_file_bytes: u64,
    /// Where the generators' model files are.
    pub models_dir: PathBuf,
}

impl AdminConfig {
    pub const DEFAULT_MAX_FILES: usize = 200;
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;

    pub fn new(data_dir: &Path, import_roots: Vec<PathBuf>) -> Self {
        AdminConfig {
            data_dir: data_dir.to_path_buf(),
            import_roots,
            max_upload_files: Self::DEFAULT_MAX_FILES,
            max_upload_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            models_dir: crate::jobs::forge::default_models_dir(data_dir),
        }
    }

    /// The allowed import roots: the configured ones, else `DATA_DIR/incoming` (created).
    pub fn roots(&self) -> Vec<PathBuf> {
        if !self.import_roots.is_empty() {
            return self.import_roots.clone();
        }
        let d = self.data_dir.join("incoming");
        let _ = std::fs::create_dir_all(&d);
        vec![d.canonicalize().unwrap_or(d)]
    }

    /// A whole upload's byte limit (the request body limit of the upload routes).
    pub fn max_upload_bytes(&self) -> usize {
        (self.max_upload_file_bytes as usize).saturating_mul(self.max_upload_files).saturating_add(1 << 20)
    }
}

/// How the admin reached the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Session,
    Token,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Session => "session",
            Via::Token => "token",
        }
    }
}

/// A signed-in admin (a session cookie, or a bearer token of an admin user).
#[derive(Debug, Clone)]
pub struct Admin {
    pub user: User,
    pub via: Via,
    /// The answer is JSON (asked for, or a script with a token).
    pub json: bool,
}

impl Admin {
    /// Session requests carry the CSRF token; bearer requests need none (no browser sends them
    /// on its own).
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), WebError> {
        match self.via {
            Via::Token => Ok(()),
            Via::Session => self.user.check_csrf(token),
        }
    }
}

pub fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"))
        || tokens::bearer(headers).is_some()
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = wants_json(&parts.headers);
        let via = if tokens::bearer(&parts.headers).is_some() { Via::Token } else { Via::Session };
        let user = User::from_request_parts(parts, state).await.map_err(|e| error_response(e, json))?;
        if user.role != Role::Admin {
            return Err(error_response(WebError::Forbidden, json));
        }
        Ok(Admin { user, via, json })
    }
}

/// `WebError` as JSON (`{"error": ...}`) for scripts, as the usual page for people.
pub fn error_response(e: WebError, json: bool) -> Response {
    if !json {
        return e.into_response();
    }
    let status = match &e {
        WebError::Unauthenticated => StatusCode::UNAUTHORIZED,
        WebError::Forbidden | WebError::Csrf => StatusCode::FORBIDDEN,
        WebError::NotFound => StatusCode::NOT_FOUND,
        WebError::Conflict(_) => StatusCode::CONFLICT,
        WebError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WebError::Internal(m) => {
            tracing::error!(error = %m, "request failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(serde_json::json!({"error": "internal error"}))).into_response();
        }
    };
    (status, axum::Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// A form refused: the field and a message saying what is wrong and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

impl Refusal {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Refusal { field: field.to_string(), message: message.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The answer to a refused form: 422 with the re-shown form (or `{"error", "field"}`).
pub fn refused(json: bool, r: &Refusal, page: impl FnOnce(&Refusal) -> Result<Html<String>, WebError>) -> Response {
    if json {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(serde_json::json!({ "error": r.to_string(), "field": r.field })))
            .into_response();
    }
    match page(r) {
        Ok(html) => (StatusCode::UNPROCESSABLE_ENTITY, html).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A page, or its data as JSON.
pub fn page_or_json<T: Serialize>(json: bool, data: &T, page: impl FnOnce() -> Result<Html<String>, WebError>) -> Response {
    if json {
        return axum::Json(data).into_response();
    }
    match page() {
        Ok(h) => h.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Form values from a urlencoded body or a JSON object (arrays are repeated fields; numbers and
/// booleans become their text), kept in order to re-show the form.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// Parses by content type; a JSON body that is not an object is refused.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Fields, Refusal> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if ct.starts_with("application/json") {
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| Refusal::new("body", format!("not JSON ({e}): send one JSON object of the form's fields")))?;
            let obj = v.as_object().ok_or_else(|| Refusal::new("body", "send one JSON object of the form's fields"))?;
            let mut out = Vec::new();
            for (k, v) in obj {
                let mut push = |x: &serde_json::Value| match x {
                    serde_json::Value::String(s) => out.push((k.clone(), s.clone())),
                    serde_json::Value::Null => {}
                    serde_json::Value::Bool(b) => {
                        if *b {
                            out.push((k.clone(), "on".into()))
                        }
                    }
                    other => out.push((k.clone(), other.to_string())),
                };
                match v {
                    serde_json::Value::Array(a) => a.iter().for_each(&mut push),
                    other => push(other),
                }
            }
            Ok(Fields(out))
        } else {
            Ok(Fields(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()))
        }
    }
    /// The first value of `name`, trimmed ("" when absent).
    pub fn val(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).unwrap_or("")
    }
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.val(name)).filter(|v| !v.is_empty())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty()).collect()
    }
    /// A checkbox: present with any value but "false"/"off"/"0".
    pub fn flag(&self, name: &str) -> bool {
        self.opt(name).is_some_and(|v| !matches!(v, "false" | "off" | "0"))
    }
    /// Whether `name` has `value` among its values (re-checking checkboxes and options).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.all(name).contains(&value)
    }
    pub fn csrf(&self) -> Option<&str> {
        self.opt("csrf")
    }
    /// An unsigned integer field; `default` when empty.
    pub fn u64_or(&self, name: &str, default: Option<u64>, what: &str) -> Result<u64, Refusal> {
        match self.opt(name) {
            None => default.ok_or_else(|| Refusal::new(name, format!("missing: give {what}"))),
            Some(v) => v.parse().map_err(|_| Refusal::new(name, format!("`{}` is not a whole number: give {what}", short(v)))),
        }
    }
    pub fn f64_opt(&self, name: &str, what: &str) -> Result<Option<f64>, Refusal> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| Refusal::new(name, format!("`{}` is not a number: give {what}", short(v)))),
        }
    }
}

/// At most 60 characters of `s` for a message.
pub fn short(s: &str) -> String {
    if s.chars().count() > 60 { s.chars().take(59).chain(['…']).collect() } else { s.to_string() }
}

/// The body of a form request, or the refusal of an unreadable one.
/// (The refusal is boxed: a `Response` is large, and this is the cold path.)
pub fn fields(admin: &Admin, headers: &HeaderMap, body: &[u8]) -> Result<Fields, Box<Response>> {
    let f = Fields::parse(headers, body).map_err(|r| {
        Box::new(
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(serde_json::json!({"error": r.to_string(), "field": r.field}))).into_response(),
        )
    })?;
    admin.check_csrf(f.csrf()).map_err(|e| Box::new(error_response(e, admin.json)))?;
    Ok(f)
}

/// The navigation of every console page.
pub const NAV: [(&str, &str); 13] = [
    ("/admin", "Dashboard"),
    ("/admin/jobs", "Jobs"),
    ("/admin/import", "Import"),
    ("/admin/masks", "Masks"),
    ("/admin/generate", "Generate"),
    ("/admin/export", "Export"),
    ("/admin/eval", "Evaluate"),
    ("/admin/train", "Train"),
    ("/admin/leaderboard", "Leaderboard"),
    ("/admin/assist", "Assist"),
    ("/explain", "Explain"),
    ("/admin/actions", "Actions"),
    ("/admin/users", "Users"),
];

pub async fn admin_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "no-cache")], include_str!("../../../static/admin.js"))
}

/// A redirect after a successful page form (303 to `to`), or the JSON answer.
pub fn done<T: Serialize>(json: bool, status: StatusCode, data: &T, to: &str) -> Response {
    if json {
        return (status, axum::Json(data)).into_response();
    }
    axum::response::Redirect::to(to).into_response()
}

/// `e` as a 500 (logged) for pages and scripts.
pub fn internal(json: bool, e: impl std::fmt::Display) -> Response {
    error_response(WebError::Internal(e.to_string()), json)
}
