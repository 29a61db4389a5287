//! The browser side: server-rendered pages (askama) and small JSON endpoints (axum), on the
//! PostgreSQL store. Every route is declared once in [`route_table`] with the roles it admits;
//! the router enforces that column itself ([`guard`], a middleware per route, which signs the
//! request in through [`auth::authenticate`] and puts the [`auth::User`] in the request's
//! extensions), so handlers hold no role checks, and the route-by-role test covers every route.
//! Handlers still check the CSRF token of every POST.
//!
//! Errors: a [`WebError`] is a status and a message for people; an internal error (a database or
//! store failure) is logged with an id and shown only as that id, never as its text.
//!
//! - [`auth`]: accounts, sessions, CSRF, login throttling.
//! - [`annotate`]: the annotator's tasks: claim with a lease, heartbeats, drafts, submit, skip.
//! - [`review`]: the reviewer's queue, false-positive flags, accept / edit / return.
//! - [`dashboard`]: the admin's counts, per-annotator figures and jobs.
//! - [`pages`]: login, home, admin users.
//! - [`edge`]: the public URL (secure cookies, HSTS), trusted proxies and the client address.
//! - [`explain`]: the explain page (reviewers and admins): ForgeryTalker's explanation and mask of
//!   an uploaded face or a stored forgery, from the model `mmtt serve --talker DIR` configures.
//! - [`admin`]: the admin console (import, masks, generate, export, evaluate, train, jobs, actions) and its JSON variants.

pub mod admin;
pub mod annotate;
pub mod auth;
pub mod dashboard;
pub mod edge;
pub mod explain;
pub mod pages;
pub mod review;

use crate::storage::store::SharedStore;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::MethodRouter;
use std::sync::Arc;
use std::time::Duration;

/// Server rules and settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Active time needed before a submission is accepted.
    pub min_seconds: f64,
    /// The page sends a heartbeat this often while visible and in use; each credits at most this.
    pub heartbeat_seconds: f64,
    /// A claimed task stays with its annotator this long without a heartbeat.
    pub lease: Duration,
    /// How the server meets the internet (public URL, trusted proxies).
    pub edge: edge::Edge,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { min_seconds: 60.0, heartbeat_seconds: 5.0, lease: Duration::from_secs(30 * 60), edge: edge::Edge::default() }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    pub store: SharedStore,
    pub config: Arc<WebConfig>,
    pub sessions: Arc<auth::SessionCache>,
    /// The admin console's settings (import roots, upload limits, data directory).
    pub admin: Arc<admin::AdminConfig>,
    /// The explain page's model (`mmtt serve --talker DIR`), loaded on first use.
    pub talker: Arc<crate::explain::TalkerService>,
}

impl AppState {
    /// The state of a server on `data_dir` (its admin console's defaults: uploads, import root).
    pub fn new(pool: sqlx::PgPool, store: SharedStore, data_dir: &std::path::Path, config: WebConfig) -> Self {
        let admin = Arc::new(admin::AdminConfig::new(data_dir, vec![]));
        AppState {
            pool,
            store,
            config: Arc::new(config),
            sessions: Arc::default(),
            admin,
            talker: Arc::new(crate::explain::TalkerService::unconfigured()),
        }
    }

    /// With the admin console's settings (`mmtt serve --import-root DIR`).
    pub fn with_admin(mut self, admin: admin::AdminConfig) -> Self {
        self.admin = Arc::new(admin);
        self
    }

    /// With the explain page's model (`mmtt serve --talker DIR [--talker-fpn DIR]`).
    pub fn with_talker(mut self, talker: crate::explain::TalkerConfig) -> Self {
        self.talker = Arc::new(crate::explain::TalkerService::new(talker));
        self
    }
}

/// Errors of a request, each with its status and a message for people.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("sign in first")]
    Unauthenticated,
    #[error("your role does not allow this")]
    Forbidden,
    #[error("the form's security token is missing or stale: reload the page and try again")]
    Csrf,
    #[error("not found")]
    NotFound,
    /// The request was valid once but the state moved on (a replayed or stale form).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A failure of the server itself: logged with an id; people see only the id.
    #[error("something went wrong on the server; nothing was changed by this request")]
    Internal(String),
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> Self {
        WebError::Internal(format!("{e:#}"))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::Unauthenticated => StatusCode::UNAUTHORIZED,
            WebError::Forbidden | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            WebError::Internal(m) => {
                // the details (a database error, a path) stay in the log, under an id people can quote
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
                tracing::error!(error_id = %id, error = %m, "request failed");
                format!(
                    "Something went wrong on the server (error {id}); nothing was changed by this request. Try again, or give the error id to an admin."
                )
            }
            other => other.to_string(),
        };
        if matches!(self, WebError::Unauthenticated) {
            // pages send people to the login form; scripts see the 401
            return (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(pages::login_page(None).unwrap_or_default()))
                .into_response();
        }
        let body = pages::message_page(status, &message).unwrap_or(message);
        (status, Html(body)).into_response()
    }
}

/// Renders an askama template, turning render errors into a 500.
pub fn render<T: askama::Template>(t: &T) -> Result<Html<String>, WebError> {
    t.render().map(Html).map_err(|e| WebError::Internal(format!("template: {e}")))
}

/// A parsed `application/x-www-form-urlencoded` body that keeps repeated fields (checkbox
/// groups such as the region chips), which `axum::Form` cannot.
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &[u8]) -> Self {
        FormFields(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any signed-in user.
    SignedIn,
    Annotator,
    Reviewer,
    Admin,
}

impl Access {
    /// Whether a signed-in user of `role` may use a route with this access (admins may use every
    /// route).
    pub fn admits(self, role: auth::Role) -> bool {
        use auth::Role;
        match self {
            Access::Public | Access::SignedIn => true,
            Access::Annotator => matches!(role, Role::Annotator | Role::Admin),
            Access::Reviewer => matches!(role, Role::Reviewer | Role::Admin),
            Access::Admin => role == Role::Admin,
        }
    }
}

/// The route table's access column, enforced before the handler runs: a public route passes;
/// any other signs the request in ([`auth::authenticate`]: 401 without a valid session), checks
/// the role (403) and hands the [`auth::User`] to the handler in the request's extensions.
pub async fn guard(state: AppState, access: Access, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if access == Access::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    match auth::authenticate(&state, &parts).await {
        Ok(Some(user)) if access.admits(user.role) => {
            parts.extensions.insert(user);
            next.run(axum::extract::Request::from_parts(parts, body)).await
        }
        Ok(Some(_)) => WebError::Forbidden.into_response(),
        Ok(None) => WebError::Unauthenticated.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every route: method, path, access, handler.
pub fn route_table() -> Vec<(Method, &'static str, Access, MethodRouter<AppState>)> {
    use axum::routing::{get, post};
    vec![
        (Method::GET, "/login", Access::Public, get(pages::login_form)),
        (Method::POST, "/login", Access::Public, post(pages::login_submit)),
        (Method::POST, "/logout", Access::SignedIn, post(pages::logout)),
        (Method::GET, "/", Access::SignedIn, get(pages::home)),
        (Method::GET, "/static/app.css", Access::Public, get(pages::css)),
        (Method::GET, "/static/annotate.js", Access::Public, get(pages::annotate_js)),
        (Method::GET, "/annotate/next", Access::Annotator, get(annotate::next)),
        (Method::GET, "/annotate/{task}", Access::Annotator, get(annotate::page)),
        (Method::POST, "/annotate/{task}/heartbeat", Access::Annotator, post(annotate::heartbeat)),
        (Method::POST, "/annotate/{task}/draft", Access::Annotator, post(annotate::draft)),
        (Method::POST, "/annotate/{task}/submit", Access::Annotator, post(annotate::submit)),
        (Method::POST, "/annotate/{task}/skip", Access::Annotator, post(annotate::skip)),
        (Method::POST, "/annotate/{task}/prefetch", Access::Annotator, post(annotate::prefetch)),
        (Method::POST, "/annotate/{task}/hint", Access::Annotator, post(annotate::hint)),
        (Method::GET, "/images/{task}/{kind}", Access::SignedIn, get(annotate::image)),
        (Method::GET, "/review", Access::Reviewer, get(review::queue)),
        (Method::GET, "/review/{annotation}", Access::Reviewer, get(review::page)),
        (Method::POST, "/review/{annotation}/accept", Access::Reviewer, post(review::accept)),
        (Method::POST, "/review/{annotation}/return", Access::Reviewer, post(review::send_back)),
        (Method::GET, "/explain", Access::Reviewer, get(explain::form)),
        (
            Method::POST,
            "/explain",
            Access::Reviewer,
            post(explain::submit).layer(axum::extract::DefaultBodyLimit::max(explain::MAX_BODY_BYTES)),
        ),
        (Method::GET, "/admin", Access::Admin, get(dashboard::dashboard)),
        (Method::GET, "/admin/stats", Access::Admin, get(dashboard::stats)),
        (Method::GET, "/admin/dashboard/assist.json", Access::Admin, get(dashboard::assist_json)),
        (Method::GET, "/admin/users", Access::Admin, get(pages::users)),
        (Method::POST, "/admin/users", Access::Admin, post(pages::add_user)),
        (Method::GET, "/static/admin.js", Access::Public, get(admin::admin_js)),
        (Method::GET, "/admin/jobs", Access::Admin, get(admin::jobs::list)),
        (Method::GET, "/admin/jobs/{id}", Access::Admin, get(admin::jobs::show)),
        (Method::POST, "/admin/jobs/{id}/{action}", Access::Admin, post(admin::jobs::control)),
        (Method::GET, "/admin/import", Access::Admin, get(admin::import::form)),
        (Method::POST, "/admin/import", Access::Admin, post(admin::import::submit_folder)),
        (
            Method::POST,
            "/admin/import/upload",
            Access::Admin,
            post(admin::import::submit_upload).layer(axum::extract::DefaultBodyLimit::disable()),
        ),
        (Method::GET, "/admin/masks", Access::Admin, get(admin::masks::form)),
        (Method::POST, "/admin/masks", Access::Admin, post(admin::masks::submit)),
        (Method::GET, "/admin/masks/preview/{source}", Access::Admin, get(admin::masks::preview)),
        (Method::GET, "/admin/generate", Access::Admin, get(admin::generate::form)),
        (Method::POST, "/admin/generate", Access::Admin, post(admin::generate::submit)),
        (Method::GET, "/admin/export", Access::Admin, get(admin::export::form)),
        (Method::POST, "/admin/export", Access::Admin, post(admin::export::submit)),
        (Method::GET, "/admin/export/{id}", Access::Admin, get(admin::export::show)),
        (Method::GET, "/admin/export/{id}/download", Access::Admin, get(admin::export::download)),
        (Method::GET, "/admin/eval", Access::Admin, get(admin::eval::form)),
        (Method::POST, "/admin/eval", Access::Admin, post(admin::eval::submit).layer(axum::extract::DefaultBodyLimit::disable())),
        (Method::POST, "/admin/eval/table3", Access::Admin, post(admin::eval::submit_table3)),
        (Method::GET, "/admin/leaderboard", Access::Admin, get(admin::eval::leaderboard)),
        (Method::GET, "/admin/assist", Access::Admin, get(admin::assist::form)),
        (Method::POST, "/admin/assist/models", Access::Admin, post(admin::assist::register)),
        (Method::POST, "/admin/assist/settings", Access::Admin, post(admin::assist::settings)),
        (Method::POST, "/admin/assist/suggest", Access::Admin, post(admin::assist::suggest)),
        (Method::GET, "/admin/train", Access::Admin, get(admin::train::form)),
        (Method::POST, "/admin/train", Access::Admin, post(admin::train::submit)),
        (Method::POST, "/admin/train/talker", Access::Admin, post(admin::train::submit_talker)),
        (Method::GET, "/admin/train/{id}/chart", Access::Admin, get(admin::train::chart)),
        (Method::GET, "/admin/actions", Access::Admin, get(admin::audit::list)),
    ]
}

/// The router: every route of [`route_table`] behind its [`guard`].
pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (_, path, access, mr) in route_table() {
        let mr = mr.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            move |State(s): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next| guard(s, access, req, next),
        ));
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(mr);
                *existing = merged;
            }
            None => by_path.push((path, mr)),
        }
    }
    let mut r = Router::new();
    for (path, mr) in by_path {
        r = r.route(path, mr);
    }
    if state.config.edge.https() {
        r = r.layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    r.layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            header::HeaderValue::from_static("nosniff"),
        ))
        .layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
        ))
        .with_state(state)
}

/// Serves until Ctrl-C: plain HTTP, or HTTPS with `tls`.
pub async fn serve(state: AppState, bind: &str, tls: Option<&edge::TlsFiles>) -> anyhow::Result<()> {
    let config = tls.map(edge::TlsFiles::server_config).transpose().map_err(|e| anyhow::anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match config {
        Some(c) => {
            println!("serving on https://{}", listener.local_addr()?);
            edge::serve_tls(listener, router(state), c, shutdown).await?;
        }
        None => {
            println!("serving on http://{}", listener.local_addr()?);
            axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_show_an_id_never_their_text() {
        let r =
            WebError::Internal("error returned from database: invalid byte sequence for encoding \"UTF8\": 0x00".into()).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8(axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
        assert!(!body.contains("database") && !body.contains("0x00"), "{body}");
        assert!(body.contains("Something went wrong on the server (error "), "{body}");
    }

    #[test]
    fn access_admits_roles() {
        use auth::Role::*;
        assert!(Access::Annotator.admits(Admin) && Access::Annotator.admits(Annotator) && !Access::Annotator.admits(Reviewer));
        assert!(Access::Reviewer.admits(Admin) && !Access::Reviewer.admits(Annotator));
        assert!(!Access::Admin.admits(Reviewer) && Access::SignedIn.admits(Annotator));
    }
}
