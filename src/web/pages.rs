//! Login, home, admin users, static assets, message pages.

use super::auth::{self, Role, User, UserName};
use super::{AppState, WebError, render};
use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sqlx::Row;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
}

pub fn login_page(error: Option<&str>) -> Result<String, askama::Error> {
    LoginPage { error }.render()
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

pub fn message_page(status: StatusCode, message: &str) -> Result<String, askama::Error> {
    MessagePage { title: status.canonical_reason().unwrap_or("Error"), message }.render()
}

pub async fn login_form() -> Result<Html<String>, WebError> {
    Ok(Html(login_page(None).map_err(|e| WebError::Internal(e.to_string()))?))
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
}

pub async fn login_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    // behind a trusted reverse proxy, the client it forwards for (not the proxy) is throttled
    let ip = state.config.edge.client_ip(peer, &headers).to_string();
    let page = |status: StatusCode, msg: &str| -> Result<Response, WebError> {
        Ok((status, Html(login_page(Some(msg)).map_err(|e| WebError::Internal(e.to_string()))?)).into_response())
    };
    match auth::login(&state, f.name.trim(), &f.password, &ip).await? {
        auth::Login::Ok { token } => {
            Ok(([(header::SET_COOKIE, auth::session_cookie(&token, state.config.edge.https()))], Redirect::to("/")).into_response())
        }
        auth::Login::Refused => page(StatusCode::UNAUTHORIZED, "Wrong name or password."),
        auth::Login::Throttled => page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed attempts: wait {} minutes, or ask an admin.", auth::THROTTLE_MINUTES),
        ),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    user: User,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(f.csrf.as_deref())?;
    let token = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split(';').map(str::trim).find_map(|kv| kv.strip_prefix("mmtt_session=")))
        .unwrap_or_default()
        .to_string();
    let hash = auth::token_hash(&token);
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(&hash).execute(&state.pool).await?;
    state.sessions.evict(&hash);
    Ok(([(header::SET_COOKIE, auth::clear_cookie(state.config.edge.https()))], Redirect::to("/login")).into_response())
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    name: String,
    role: String,
    csrf: String,
    is_annotator: bool,
    is_reviewer: bool,
    is_admin: bool,
    to_review: i64,
    open_tasks: i64,
    my_submitted: i64,
}

pub async fn home(State(state): State<AppState>, user: User) -> Result<Html<String>, WebError> {
    let open_tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM annotation_tasks WHERE status = 'open'").fetch_one(&state.pool).await?;
    let to_review: i64 = sqlx::query_scalar("SELECT count(*) FROM annotations WHERE status = 'submitted'").fetch_one(&state.pool).await?;
    let my_submitted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annotations WHERE annotator_id = $1").bind(user.id).fetch_one(&state.pool).await?;
    render(&HomePage {
        name: user.name.clone(),
        role: user.role.to_string(),
        csrf: user.csrf.clone(),
        is_annotator: matches!(user.role, Role::Annotator | Role::Admin),
        is_reviewer: matches!(user.role, Role::Reviewer | Role::Admin),
        is_admin: user.role == Role::Admin,
        to_review,
        open_tasks,
        my_submitted,
    })
}

pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css"), (header::CACHE_CONTROL, "public, max-age=3600")], include_str!("../../static/app.css"))
}

pub async fn annotate_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "public, max-age=3600")], include_str!("../../static/annotate.js"))
}

struct UserRow {
    name: String,
    role: String,
    created: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    csrf: String,
    users: Vec<UserRow>,
    message: Option<String>,
}

async fn users_page(state: &AppState, user: &User, message: Option<String>) -> Result<Html<String>, WebError> {
    let rows = sqlx::query("SELECT name, role, created_at::text FROM users ORDER BY name").fetch_all(&state.pool).await?;
    let users = rows.iter().map(|r| UserRow { name: r.get(0), role: r.get(1), created: r.get(2) }).collect();
    render(&UsersPage { csrf: user.csrf.clone(), users, message })
}

pub async fn users(State(state): State<AppState>, user: User) -> Result<Html<String>, WebError> {
    users_page(&state, &user, None).await
}

#[derive(Deserialize)]
pub struct AddUserForm {
    csrf: Option<String>,
    name: String,
    role: String,
    password: String,
}

pub async fn add_user(State(state): State<AppState>, user: User, Form(f): Form<AddUserForm>) -> Result<Response, WebError> {
    user.check_csrf(f.csrf.as_deref())?;
    let name = UserName::parse(f.name.trim()).map_err(WebError::Unprocessable)?;
    let role: Role = f.role.parse().map_err(WebError::Unprocessable)?;
    auth::add_user(&state.pool, &name, role, &f.password).await?;
    Ok(users_page(&state, &user, Some(format!("added {} ({role})", name.as_str()))).await?.into_response())
}
