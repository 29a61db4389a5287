//! The annotator's work: claim the next forged image under a lease, credit active time from
//! heartbeats, keep drafts, submit or skip. The server enforces every rule; the page mirrors them.
//!
//! - Claim: the annotator's own live task first (reopening restores it), else the oldest open or
//!   lease-expired task, locked with `FOR UPDATE SKIP LOCKED`: no two annotators hold one task.
//! - Active time: each heartbeat credits the time since the previous one, at most one heartbeat
//!   interval; the page sends them only while visible and in use, so a background tab earns
//!   nothing. Elapsed time since the claim is recorded beside it.

use super::auth::{Role, User};
use super::{render, AppState, WebError};
use crate::annotation::{check_text, region_labels, TextError, MAX_WORDS};
use crate::store::{BlobKey, BlobStore};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use sqlx::Row;

/// Drafts longer than this are refused (far beyond 120 words).
pub const MAX_DRAFT_BYTES: usize = 20_000;

pub async fn next(State(state): State<AppState>, user: User) -> Result<Response, WebError> {
    user.require(Role::Annotator)?;
    let lease = state.config.lease.as_secs_f64();
    let mine: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT forgery_id FROM annotation_tasks WHERE annotator_id = $1 AND status = 'claimed' AND lease_until > now() \
         ORDER BY claimed_at LIMIT 1",
    )
    .bind(user.id)
    .fetch_optional(&state.pool)
    .await?;
    if let Some(t) = mine {
        return Ok(Redirect::to(&format!("/annotate/{t}")).into_response());
    }
    // tasks a reviewer returned to this annotator come first
    let returned: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE annotation_tasks SET status = 'claimed', lease_until = now() + make_interval(secs => $2), claimed_at = now(),            last_heartbeat = NULL, updated_at = now()          WHERE forgery_id = (SELECT forgery_id FROM annotation_tasks WHERE annotator_id = $1 AND status = 'returned'            ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING forgery_id",
    )
    .bind(user.id)
    .bind(lease)
    .fetch_optional(&state.pool)
    .await?;
    if let Some(t) = returned {
        return Ok(Redirect::to(&format!("/annotate/{t}")).into_response());
    }
    let claimed: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE annotation_tasks t SET status = 'claimed', lease_until = now() + make_interval(secs => $2), \
           claimed_at = now(), last_heartbeat = NULL, updated_at = now(), \
           active_seconds = CASE WHEN t.annotator_id = $1 THEN t.active_seconds ELSE 0 END, \
           draft = CASE WHEN t.annotator_id = $1 THEN t.draft ELSE NULL END, annotator_id = $1 \
         WHERE t.forgery_id = (SELECT forgery_id FROM annotation_tasks \
           WHERE status = 'open' OR (status = 'claimed' AND lease_until < now()) \
           ORDER BY (status = 'open') DESC, forgery_id FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING t.forgery_id",
    )
    .bind(user.id)
    .bind(lease)
    .fetch_optional(&state.pool)
    .await?;
    match claimed {
        Some(t) => Ok(Redirect::to(&format!("/annotate/{t}")).into_response()),
        None => Ok(Html(super::pages::message_page(StatusCode::OK, "No task is waiting: every forged image has an annotator. Come back later.")
            .map_err(|e| WebError::Internal(e.to_string()))?)
        .into_response()),
    }
}

/// The task if `user` holds it under a live lease.
async fn held(state: &AppState, user: &User, task: uuid::Uuid) -> Result<sqlx::postgres::PgRow, WebError> {
    sqlx::query(
        "SELECT active_seconds, extract(epoch FROM now() - claimed_at)::float8, draft FROM annotation_tasks \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now()",
    )
    .bind(task)
    .bind(user.id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(WebError::NotFound)
}

#[derive(Template)]
#[template(path = "annotate.html")]
struct AnnotatePage {
    task: uuid::Uuid,
    csrf: String,
    text: String,
    error: Option<String>,
    active: f64,
    min_seconds: f64,
    heartbeat_seconds: f64,
    max_words: usize,
    rules: [&'static str; 4],
    /// The reviewer's comment when the task came back for refinement.
    comment: Option<String>,
}

/// The paper's guidance (section 3.2), shown on every task.
pub const RULES: [&str; 4] = [
    "Carefully examine the pair and describe any irregularities or artificial appearance in the manipulated regions.",
    "Annotate only unnatural or poorly integrated facial features; ignore areas that look authentic.",
    "Do not use language that needs the original image: it is not available in practice.",
    "At most 120 words, and at least one minute on each image.",
];

async fn return_comment(state: &AppState, task: uuid::Uuid) -> Result<Option<String>, WebError> {
    Ok(sqlx::query_scalar(
        "SELECT r.comment FROM annotation_revisions r JOIN annotations a ON a.id = r.annotation_id          WHERE a.forgery_id = $1 AND a.status = 'returned' AND r.action = 'return' ORDER BY r.id DESC LIMIT 1",
    )
    .bind(task)
    .fetch_optional(&state.pool)
    .await?
    .flatten())
}

async fn page_for(state: &AppState, user: &User, task: uuid::Uuid, text: String, active: f64, error: Option<String>) -> Result<Html<String>, WebError> {
    let comment = return_comment(state, task).await?;
    render(&AnnotatePage {
        comment,
        task,
        csrf: user.csrf.clone(),
        text,
        error,
        active,
        min_seconds: state.config.min_seconds,
        heartbeat_seconds: state.config.heartbeat_seconds,
        max_words: MAX_WORDS,
        rules: RULES,
    })
}

pub async fn page(State(state): State<AppState>, user: User, Path(task): Path<uuid::Uuid>) -> Result<Html<String>, WebError> {
    user.require(Role::Annotator)?;
    let row = held(&state, &user, task).await?;
    page_for(&state, &user, task, row.get::<Option<String>, _>(2).unwrap_or_default(), row.get(0), None).await
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// Credits active time: the time since the last heartbeat, at most one interval; extends the lease.
pub async fn heartbeat(State(state): State<AppState>, user: User, headers: HeaderMap, Path(task): Path<uuid::Uuid>) -> Result<Json<serde_json::Value>, WebError> {
    user.require(Role::Annotator)?;
    user.check_csrf(csrf_header(&headers))?;
    let row = sqlx::query(
        "UPDATE annotation_tasks SET active_seconds = active_seconds + CASE WHEN last_heartbeat IS NULL THEN 0 \
           ELSE least(extract(epoch FROM now() - last_heartbeat)::float8, $3) END, \
           last_heartbeat = now(), lease_until = now() + make_interval(secs => $4), updated_at = now() \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now() RETURNING active_seconds",
    )
    .bind(task)
    .bind(user.id)
    .bind(state.config.heartbeat_seconds)
    .bind(state.config.lease.as_secs_f64())
    .fetch_optional(&state.pool)
    .await?
    .ok_or(WebError::NotFound)?;
    let active: f64 = row.get(0);
    Ok(Json(serde_json::json!({"active_seconds": active, "min_seconds": state.config.min_seconds})))
}

#[derive(Deserialize)]
pub struct DraftBody {
    text: String,
}

pub async fn draft(State(state): State<AppState>, user: User, headers: HeaderMap, Path(task): Path<uuid::Uuid>, Json(b): Json<DraftBody>) -> Result<StatusCode, WebError> {
    user.require(Role::Annotator)?;
    user.check_csrf(csrf_header(&headers))?;
    if b.text.len() > MAX_DRAFT_BYTES {
        return Err(WebError::Unprocessable(format!("the draft is over {MAX_DRAFT_BYTES} bytes")));
    }
    let n = sqlx::query("UPDATE annotation_tasks SET draft = $3, updated_at = now() WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now()")
        .bind(task)
        .bind(user.id)
        .bind(&b.text)
        .execute(&state.pool)
        .await?
        .rows_affected();
    if n == 0 { Err(WebError::NotFound) } else { Ok(StatusCode::NO_CONTENT) }
}

#[derive(Deserialize)]
pub struct SubmitForm {
    csrf: Option<String>,
    text: String,
}

pub async fn submit(State(state): State<AppState>, user: User, Path(task): Path<uuid::Uuid>, Form(f): Form<SubmitForm>) -> Result<Response, WebError> {
    user.require(Role::Annotator)?;
    user.check_csrf(f.csrf.as_deref())?;
    let mut tx = state.pool.begin().await?;
    let row = sqlx::query(
        "SELECT active_seconds, extract(epoch FROM now() - claimed_at)::float8 FROM annotation_tasks \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now() FOR UPDATE",
    )
    .bind(task)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(WebError::NotFound)?;
    let (active, elapsed): (f64, f64) = (row.get(0), row.get(1));
    let refuse = async |msg: String| -> Result<Response, WebError> {
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page_for(&state, &user, task, f.text.clone(), active, Some(msg)).await?).into_response())
    };
    let words = match check_text(&f.text) {
        Ok(n) => n,
        Err(e @ (TextError::Empty | TextError::TooLong(_))) => return refuse(e.to_string()).await,
    };
    if active < state.config.min_seconds {
        let left = (state.config.min_seconds - active).ceil();
        return refuse(format!(
            "Not yet: look at the pair a little longer. {left:.0} more seconds of active time are needed (you have {active:.0} of {:.0}). Your text is kept.",
            state.config.min_seconds
        ))
        .await;
    }
    let regions: Vec<&str> = region_labels(&f.text);
    // a refinement of a returned annotation updates it; every version stays in the revisions
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'submitted') \
         ON CONFLICT (forgery_id) DO UPDATE SET text = EXCLUDED.text, regions = EXCLUDED.regions, word_count = EXCLUDED.word_count, \
           active_seconds = EXCLUDED.active_seconds, elapsed_seconds = EXCLUDED.elapsed_seconds, status = 'submitted', updated_at = now() \
         WHERE annotations.annotator_id = EXCLUDED.annotator_id RETURNING id",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(task)
    .bind(user.id)
    .bind(&f.text)
    .bind(&regions)
    .bind(words as i32)
    .bind(active)
    .bind(elapsed)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action) VALUES ($1, $2, $3, $4, 'submit')")
        .bind(id)
        .bind(&f.text)
        .bind(&regions)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE annotation_tasks SET status = 'submitted', lease_until = NULL, draft = NULL, updated_at = now() WHERE forgery_id = $1")
        .bind(task)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Redirect::to("/annotate/next").into_response())
}

#[derive(Deserialize)]
pub struct SkipForm {
    csrf: Option<String>,
    reason: String,
}

pub async fn skip(State(state): State<AppState>, user: User, Path(task): Path<uuid::Uuid>, Form(f): Form<SkipForm>) -> Result<Response, WebError> {
    user.require(Role::Annotator)?;
    user.check_csrf(f.csrf.as_deref())?;
    if !["broken_image", "no_visible_forgery"].contains(&f.reason.as_str()) {
        return Err(WebError::Unprocessable("skip reasons are broken_image and no_visible_forgery".into()));
    }
    let n = sqlx::query(
        "UPDATE annotation_tasks SET status = 'skipped', skip_reason = $3, lease_until = NULL, updated_at = now() \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now()",
    )
    .bind(task)
    .bind(user.id)
    .bind(&f.reason)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(WebError::NotFound);
    }
    Ok(Redirect::to("/annotate/next").into_response())
}

/// The original, forged image or mask of a task: to the annotator holding it (or who wrote its
/// annotation), and to reviewers and admins. Content-addressed, so cacheable.
pub async fn image(State(state): State<AppState>, user: User, Path((task, kind)): Path<(uuid::Uuid, String)>) -> Result<Response, WebError> {
    let col = match kind.as_str() {
        "original" => "original_hash",
        "forged" => "image_hash",
        "mask" => "mask_hash",
        _ => return Err(WebError::NotFound),
    };
    if user.role == Role::Annotator {
        let allowed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM annotation_tasks WHERE forgery_id = $1 AND annotator_id = $2 AND status IN ('claimed', 'returned')) \
             OR EXISTS (SELECT 1 FROM annotations WHERE forgery_id = $1 AND annotator_id = $2)",
        )
        .bind(task)
        .bind(user.id)
        .fetch_one(&state.pool)
        .await?;
        if !allowed {
            return Err(WebError::NotFound);
        }
    }
    let hash: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {col} FROM forgeries WHERE id = $1")))
        .bind(task)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(WebError::NotFound)?;
    let key: BlobKey = hash.parse().map_err(|_| WebError::Internal("bad blob key".into()))?;
    let bytes = state.store.get(&key).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, "image/png".to_string()), (header::CACHE_CONTROL, "private, max-age=31536000, immutable".to_string()), (header::ETAG, format!("\"{hash}\""))],
        bytes,
    )
        .into_response())
}
