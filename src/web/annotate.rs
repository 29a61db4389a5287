//! The annotator's work: claim the next forged image under a lease, credit active time from
//! heartbeats, keep drafts, submit or skip. The server enforces every rule; the page mirrors them.
//!
//! - Claim: the annotator's own live task first (reopening restores it), else one a reviewer
//!   returned to them, else the first open task, else the longest-expired lease, locked with
//!   `FOR UPDATE SKIP LOCKED`: no two annotators hold one task. Each step reads one partial index
//!   (migrations/0011), so a claim costs the same at any number of tasks and annotations.
//! - Refusals (a rule, an unknown chip, an over-long text, a NUL byte) answer 422 with the page
//!   and the annotator's text; nothing is stored. Access (annotators and admins) is checked by the
//!   router; each POST checks its CSRF token here.
//! - Model assistance (issue 17; `storage::tables::assist`): with the project's mode `prefill`
//!   a task opened with no draft starts from the model's explanation; with `hint` the page offers
//!   the model's regions and mask once the saved draft has a word (`POST .../hint`). A forgery in
//!   the held-out arm, or without a suggestion of the current model, is served exactly as with
//!   assistance off. The submission records the mode, the arm, and the suggestion shown with the
//!   token-level edit distance to the submitted text; with assistance off nothing is recorded.
//! - Active time: each heartbeat credits the time since the previous one, at most one heartbeat
//!   interval; the page sends them only while visible and in use, so a background tab earns
//!   nothing. Elapsed time since the claim is recorded beside it.

use super::auth::{Role, User};
use super::{AppState, FormFields, WebError, render};
use crate::dataset::annotation::{
    Chip, MAX_WORDS, check_draft, check_text, chips, false_positive_labels, known_regions, manipulated_parts, parse_regions, region_labels,
    word_count,
};
use crate::dataset::assist::{EditMeasure, in_holdout};
use crate::storage::status::AssistMode;
use crate::storage::store::BlobKey;
use crate::storage::tables::{annotations, assist};
use askama::Template;
use axum::extract::{Path, RawForm, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use sqlx::Row;

pub use crate::dataset::annotation::MAX_DRAFT_BYTES;

pub async fn next(State(state): State<AppState>, user: User) -> Result<Response, WebError> {
    // one round trip: own live task, else returned to them, else open, else lease-expired
    // (migrations/0011: mmtt_next_task, claims with FOR UPDATE SKIP LOCKED, one partial index per step)
    let task: Option<uuid::Uuid> = sqlx::query_scalar("SELECT mmtt_next_task($1, $2)")
        .bind(user.id)
        .bind(state.config.lease.as_secs_f64())
        .fetch_one(&state.pool)
        .await?;
    match task {
        Some(t) => Ok(Redirect::to(&format!("/annotate/{t}")).into_response()),
        None => Ok(Html(
            super::pages::message_page(StatusCode::OK, "No task is waiting: every forged image has an annotator. Come back later.")
                .map_err(|e| WebError::Internal(e.to_string()))?,
        )
        .into_response()),
    }
}

/// Claims the task `pick` selects (a locking subquery) for `user`. A task that comes back to its
/// previous annotator keeps their active time and draft; anyone else starts afresh.
async fn claim(state: &AppState, user: &User, pick: &str) -> Result<Option<uuid::Uuid>, WebError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE annotation_tasks t SET status = 'claimed', lease_until = now() + make_interval(secs => $2), \
           claimed_at = now(), last_heartbeat = NULL, updated_at = now(), \
           active_seconds = CASE WHEN t.annotator_id = $1 THEN t.active_seconds ELSE 0 END, \
           draft = CASE WHEN t.annotator_id = $1 THEN t.draft ELSE NULL END, \
           draft_regions = CASE WHEN t.annotator_id = $1 THEN t.draft_regions ELSE NULL END, annotator_id = $1 \
         WHERE t.forgery_id = ({pick}) RETURNING t.forgery_id"
    )))
    .bind(user.id)
    .bind(state.config.lease.as_secs_f64())
    .fetch_optional(&state.pool)
    .await?)
}

/// Why `user` does not hold `task`: a replayed or stale form gets a 409 that says what happened;
/// a task that is not theirs is simply not found.
async fn not_held(state: &AppState, user: &User, task: uuid::Uuid) -> WebError {
    let row: Result<Option<(String, Option<uuid::Uuid>)>, _> =
        sqlx::query_as("SELECT status, annotator_id FROM annotation_tasks WHERE forgery_id = $1")
            .bind(task)
            .fetch_optional(&state.pool)
            .await;
    match row {
        Err(e) => e.into(),
        Ok(Some((status, Some(who)))) if who == user.id => match status.as_str() {
            "submitted" | "accepted" => {
                WebError::Conflict("this task was already submitted: the form was sent twice or is out of date; nothing was changed".into())
            }
            "skipped" => WebError::Conflict("this task was skipped; nothing was changed".into()),
            "returned" => WebError::Conflict("this task was returned to you for refinement: open it again from \"Next task\"".into()),
            _ => WebError::Conflict(
                "your hold on this task expired (no heartbeat for too long) and it went back to the queue; nothing was stored".into(),
            ),
        },
        Ok(_) => WebError::NotFound,
    }
}

/// The task if `user` holds it under a live lease: active seconds, elapsed seconds, draft, draft
/// chips, the reviewer's comment when it came back for refinement, whether (and which model's)
/// help was shown, and whether the project's assistance may be on (column 7: a mode other than
/// off with a model; the page asks [`assist_for`] only then, so that with assistance off a page
/// costs this one query).
async fn held(state: &AppState, user: &User, task: uuid::Uuid) -> Result<sqlx::postgres::PgRow, WebError> {
    sqlx::query(
        "SELECT t.active_seconds, extract(epoch FROM now() - t.claimed_at)::float8, t.draft, t.draft_regions, \
           (SELECT r.comment FROM annotation_revisions r \
             WHERE r.annotation_id = (SELECT a.id FROM annotations a WHERE a.forgery_id = t.forgery_id AND a.status = 'returned') \
               AND r.action = 'return' ORDER BY r.id DESC LIMIT 1), \
           t.assist_shown_at IS NOT NULL, t.assist_model, \
           coalesce((SELECT p.assist_mode <> 'off' AND p.assist_model IS NOT NULL FROM project_settings p WHERE p.id), false) \
         FROM annotation_tasks t WHERE t.forgery_id = $1 AND t.annotator_id = $2 AND t.status = 'claimed' AND t.lease_until > now()",
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
    chips: Vec<Chip>,
    /// The reviewer's comment when the task came back for refinement.
    comment: Option<String>,
    /// What the model offers on this task (none: the page of before).
    assist: Option<AssistView>,
}

/// Whether a submission records assistance.
enum AssistState {
    Off,
    On { mode: AssistMode, holdout: bool },
}

/// The model's help as the page shows it.
struct AssistView {
    /// `hint` or `prefill`.
    mode: &'static str,
    model: String,
    /// The hint was already shown (a reopened page shows it again).
    shown: bool,
    regions: String,
}

/// What assistance a task gets now.
enum Assist {
    /// Assistance off: nothing shown, nothing recorded.
    Off,
    /// Assistance on, but this forgery is in the held-out arm (or has no suggestion).
    Unassisted { mode: AssistMode, holdout: bool },
    /// A suggestion of the current model to offer.
    Offer { mode: AssistMode, model: crate::storage::tables::assist::AssistModel, suggestion: assist::Suggestion },
}

async fn assist_for(state: &AppState, task: uuid::Uuid) -> Result<Assist, WebError> {
    let s = assist::settings(&state.pool).await?;
    let Some(model) = s.active_model().cloned() else { return Ok(Assist::Off) };
    if in_holdout(task, s.seed, s.holdout) {
        return Ok(Assist::Unassisted { mode: s.mode, holdout: true });
    }
    Ok(match assist::suggestion(&state.pool, task, model.id).await? {
        Some(suggestion) => Assist::Offer { mode: s.mode, model, suggestion },
        None => Assist::Unassisted { mode: s.mode, holdout: false },
    })
}

/// The paper's guidance (section 3.2), shown on every task.
pub const RULES: [&str; 4] = [
    "Carefully examine the pair and describe any irregularities or artificial appearance in the manipulated regions.",
    "Annotate only unnatural or poorly integrated facial features; ignore areas that look authentic.",
    "Do not use language that needs the original image: it is not available in practice.",
    "At most 120 words, and at least one minute on each image.",
];

#[allow(clippy::too_many_arguments)]
async fn page_for(
    state: &AppState,
    user: &User,
    task: uuid::Uuid,
    text: String,
    regions: Option<Vec<&'static str>>,
    active: f64,
    comment: Option<String>,
    error: Option<String>,
) -> Result<Html<String>, WebError> {
    page_with(state, user, task, text, regions, active, comment, error, None).await
}

#[allow(clippy::too_many_arguments)]
async fn page_with(
    state: &AppState,
    user: &User,
    task: uuid::Uuid,
    text: String,
    regions: Option<Vec<&'static str>>,
    active: f64,
    comment: Option<String>,
    error: Option<String>,
    assist: Option<AssistView>,
) -> Result<Html<String>, WebError> {
    let chosen = regions.unwrap_or_else(|| region_labels(&text));
    render(&AnnotatePage {
        assist,
        chips: chips(&text, &chosen),
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
    let row = held(&state, &user, task).await?;
    let regions = row.get::<Option<Vec<String>>, _>(3).map(|r| known_regions(r.iter().map(String::as_str)));
    let mut text = row.get::<Option<String>, _>(2).unwrap_or_default();
    let shown: bool = row.get(5);
    let may_assist: bool = row.get(7);
    let assist = if may_assist { assist_for(&state, task).await? } else { Assist::Off };
    let view = match assist {
        Assist::Offer { mode, model, suggestion } => {
            if mode == AssistMode::Prefill && !shown && text.trim().is_empty() {
                // the model's explanation becomes the draft, once
                let n = sqlx::query(
                    "UPDATE annotation_tasks SET draft = $3, draft_regions = NULL, assist_mode = 'prefill', assist_model = $4, \
                       assist_shown_at = now(), updated_at = now() \
                     WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now() AND assist_shown_at IS NULL",
                )
                .bind(task)
                .bind(user.id)
                .bind(&suggestion.text)
                .bind(model.id)
                .execute(&state.pool)
                .await?
                .rows_affected();
                if n == 1 {
                    text = suggestion.text.clone();
                }
            }
            Some(AssistView {
                mode: mode.as_str(),
                model: model.name,
                shown: shown || mode == AssistMode::Prefill,
                regions: suggestion.regions.join(", "),
            })
        }
        _ => None,
    };
    let regions = if view.as_ref().is_some_and(|v| v.mode == "prefill") && regions.is_none() { None } else { regions };
    page_with(&state, &user, task, text, regions, row.get(0), row.get(4), None, view).await
}

/// The model's hint for a task in `hint` mode: its regions and predicted mask, once the saved
/// draft has a word (so the annotator's first look is their own). Recorded as shown.
pub async fn hint(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    Path(task): Path<uuid::Uuid>,
) -> Result<Json<serde_json::Value>, WebError> {
    user.check_csrf(csrf_header(&headers))?;
    let Ok(row) = held(&state, &user, task).await else { return Err(not_held(&state, &user, task).await) };
    let Assist::Offer { mode: AssistMode::Hint, model, suggestion } = assist_for(&state, task).await? else {
        return Err(WebError::NotFound);
    };
    let draft: Option<String> = row.get(2);
    if word_count(draft.as_deref().unwrap_or_default()) == 0 {
        return Err(WebError::Conflict(
            "write a first draft of your own (at least one word, saved) before asking for the model's hint".into(),
        ));
    }
    sqlx::query(
        "UPDATE annotation_tasks SET assist_mode = 'hint', assist_model = $3, assist_shown_at = coalesce(assist_shown_at, now()) \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now()",
    )
    .bind(task)
    .bind(user.id)
    .bind(model.id)
    .execute(&state.pool)
    .await?;
    Ok(Json(serde_json::json!({
        "model": model.name,
        "regions": suggestion.regions,
        "mask_url": suggestion.mask_hash.as_ref().map(|_| format!("/images/{task}/suggested-mask")),
    })))
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// Credits active time: the time since the last heartbeat, at most one interval; extends the lease.
pub async fn heartbeat(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    Path(task): Path<uuid::Uuid>,
) -> Result<Json<serde_json::Value>, WebError> {
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
    .await?;
    let Some(row) = row else { return Err(not_held(&state, &user, task).await) };
    let active: f64 = row.get(0);
    Ok(Json(serde_json::json!({"active_seconds": active, "min_seconds": state.config.min_seconds})))
}

#[derive(Deserialize)]
pub struct DraftBody {
    text: String,
    /// The chips as the annotator left them; absent follows the text's suggestions.
    regions: Option<Vec<String>>,
}

/// Saves the draft; answers with the text's suggested regions and word count (one extractor and
/// one word count, the server's, for the page and the rules).
pub async fn draft(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    Path(task): Path<uuid::Uuid>,
    Json(b): Json<DraftBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    user.check_csrf(csrf_header(&headers))?;
    // refused drafts change nothing; the text stays in the annotator's page
    check_draft(&b.text).map_err(|e| WebError::Unprocessable(e.to_string()))?;
    let regions = b
        .regions
        .as_ref()
        .map(|r| parse_regions(r.iter().map(String::as_str)))
        .transpose()
        .map_err(|e| WebError::Unprocessable(e.to_string()))?;
    let n = sqlx::query(
        "UPDATE annotation_tasks SET draft = $3, draft_regions = $4, updated_at = now() \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now()",
    )
    .bind(task)
    .bind(user.id)
    .bind(&b.text)
    .bind(&regions)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(not_held(&state, &user, task).await);
    }
    Ok(Json(serde_json::json!({"suggested": region_labels(&b.text), "words": word_count(&b.text), "max_words": MAX_WORDS})))
}

/// Submits the explanation. Fields: `csrf`, `text`, and the chosen chips as repeated `region`
/// fields with `chips=1` (a form without `chips` takes the text's suggestions).
pub async fn submit(
    State(state): State<AppState>,
    user: User,
    Path(task): Path<uuid::Uuid>,
    RawForm(body): RawForm,
) -> Result<Response, WebError> {
    let f = FormFields::parse(&body);
    user.check_csrf(f.get("csrf"))?;
    let text = f.get("text").unwrap_or_default().to_string();
    // an unknown chip is refused like every other rule: the page again, with the text
    let (chosen, bad_region) = match f.get("chips").map(|_| parse_regions(f.all("region"))) {
        None => (None, None),
        Some(Ok(r)) => (Some(r), None),
        Some(Err(e)) => (Some(known_regions(f.all("region"))), Some(e.to_string())),
    };
    // Checks and reads first, outside any transaction: a transaction never waits for a second
    // pool connection (under load that would starve the pool).
    let Ok(row) = held(&state, &user, task).await else { return Err(not_held(&state, &user, task).await) };
    let active: f64 = row.get(0);
    let refuse = async |msg: String| -> Result<Response, WebError> {
        Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            page_for(&state, &user, task, text.clone(), chosen.clone(), active, row.get(4), Some(msg)).await?,
        )
            .into_response())
    };
    if let Some(msg) = bad_region {
        return refuse(format!("{msg}. Your text is kept.")).await;
    }
    let words = match check_text(&text) {
        Ok(n) => n,
        Err(e) => return refuse(e.to_string()).await,
    };
    if active < state.config.min_seconds {
        let left = (state.config.min_seconds - active).ceil();
        return refuse(format!(
            "Not yet: look at the pair a little longer. {left:.0} more seconds of active time are needed (you have {active:.0} of {:.0}). Your text is kept.",
            state.config.min_seconds
        ))
        .await;
    }
    let regions: Vec<&str> = chosen.clone().unwrap_or_else(|| region_labels(&text));
    let manipulated = manipulated_parts(&state.pool, state.store.as_ref(), task).await?;
    // what assistance this annotation was written under (read before the transaction)
    let assist_record = match assist_for(&state, task).await? {
        Assist::Off => AssistState::Off,
        Assist::Unassisted { mode, holdout } => AssistState::On { mode: if holdout { AssistMode::Off } else { mode }, holdout },
        // offered but not shown (a hint never opened): the mode, no suggestion
        Assist::Offer { mode, .. } => AssistState::On { mode, holdout: false },
    };
    let fp = false_positive_labels(&text, &regions, &manipulated);
    // then the writes, with the hold checked again under the row lock
    let mut tx = state.pool.begin().await?;
    let row = sqlx::query(
        "SELECT active_seconds, extract(epoch FROM now() - claimed_at)::float8 FROM annotation_tasks \
         WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' AND lease_until > now() FOR UPDATE",
    )
    .bind(task)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Err(not_held(&state, &user, task).await);
    };
    let (active, elapsed): (f64, f64) = (row.get(0), row.get(1));
    // a refinement of a returned annotation updates it; every version stays in the revisions
    let mentions = region_labels(&text);
    // what this task's page showed decides the record: a suggestion shown (prefilled, or the
    // hint opened) is recorded with the mode it was shown in, even if the project's mode changed
    // since; otherwise the project's assistance now
    let shown: Option<(Option<String>, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT assist_mode, assist_model FROM annotation_tasks WHERE forgery_id = $1 AND assist_shown_at IS NOT NULL")
            .bind(task)
            .fetch_optional(&mut *tx)
            .await?;
    let shown = match shown {
        Some((Some(mode), Some(model))) => {
            let mode: AssistMode = mode.parse().map_err(WebError::Internal)?;
            assist::suggestion(&mut *tx, task, model).await?.map(|s| (mode, model, s))
        }
        _ => None,
    };
    let record = match (shown, assist_record) {
        (Some((mode, model, s)), _) => {
            let measure = EditMeasure::of(&s.text, &text);
            Some((mode, false, Some((model, s)), Some(measure)))
        }
        (None, AssistState::Off) => None,
        (None, AssistState::On { mode, holdout }) => Some((mode, holdout, None, None)),
    };
    let shown_suggestion = record.as_ref().and_then(|(_, _, sug, m)| {
        let (model, s) = sug.as_ref()?;
        let m = m.as_ref()?;
        Some(annotations::ShownSuggestion {
            model: *model,
            text: &s.text,
            regions: &s.regions,
            suggestion_tokens: m.suggestion_tokens as i32,
            text_tokens: m.text_tokens as i32,
            edit_distance: m.edit_distance as i32,
        })
    });
    let assist_rec = record.as_ref().map(|(mode, holdout, _, _)| annotations::AssistRecord {
        mode: *mode,
        holdout: *holdout,
        suggestion: shown_suggestion.clone(),
    });
    let submission = annotations::Submission {
        forgery_id: task,
        annotator_id: user.id,
        text: &text,
        regions: &regions,
        word_count: words as i32,
        mentions: &mentions,
        fp_labels: &fp,
        active_seconds: active,
        elapsed_seconds: elapsed,
        assist: assist_rec,
    };
    annotations::submit(&mut tx, &submission).await?;
    tx.commit().await?;
    Ok(Redirect::to("/annotate/next").into_response())
}

/// Claims the annotator's next task ahead of time (at most one ahead), so the page can prefetch
/// its images while the current one is being written. `next` hands it out after this one.
pub async fn prefetch(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    Path(task): Path<uuid::Uuid>,
) -> Result<Json<serde_json::Value>, WebError> {
    user.check_csrf(csrf_header(&headers))?;
    held(&state, &user, task).await?;
    let ahead: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT forgery_id FROM annotation_tasks WHERE annotator_id = $1 AND status = 'claimed' AND lease_until > now() AND forgery_id <> $2 \
         ORDER BY claimed_at LIMIT 1",
    )
    .bind(user.id)
    .bind(task)
    .fetch_optional(&state.pool)
    .await?;
    let next = match ahead {
        Some(t) => Some(t),
        None => {
            claim(
                &state,
                &user,
                "SELECT forgery_id FROM annotation_tasks WHERE status = 'open' ORDER BY forgery_id FOR UPDATE SKIP LOCKED LIMIT 1",
            )
            .await?
        }
    };
    Ok(Json(serde_json::json!({
        "next": next,
        "images": next.map(|t| ["original", "forged", "mask"].map(|k| format!("/images/{t}/{k}"))),
    })))
}

#[derive(Deserialize)]
pub struct SkipForm {
    csrf: Option<String>,
    reason: String,
}

pub async fn skip(
    State(state): State<AppState>,
    user: User,
    Path(task): Path<uuid::Uuid>,
    Form(f): Form<SkipForm>,
) -> Result<Response, WebError> {
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
        return Err(not_held(&state, &user, task).await);
    }
    Ok(Redirect::to("/annotate/next").into_response())
}

/// The original, forged image or mask of a task: to the annotator holding it (or who wrote its
/// annotation), and to reviewers and admins. Content-addressed, so cacheable.
pub async fn image(
    State(state): State<AppState>,
    user: User,
    Path((task, kind)): Path<(uuid::Uuid, String)>,
) -> Result<Response, WebError> {
    let col = match kind.as_str() {
        "original" => "original_hash",
        "forged" => "image_hash",
        "mask" => "mask_hash",
        "suggested-mask" => return suggested_mask(&state, &user, task).await,
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
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (header::CACHE_CONTROL, "private, max-age=31536000, immutable".to_string()),
            (header::ETAG, format!("\"{hash}\"")),
        ],
        bytes,
    )
        .into_response())
}

/// The model's predicted mask of a task: to the annotator holding it once the hint was shown, and
/// to reviewers and admins.
async fn suggested_mask(state: &AppState, user: &User, task: uuid::Uuid) -> Result<Response, WebError> {
    let model: Option<uuid::Uuid> = if user.role == Role::Annotator {
        sqlx::query_scalar(
            "SELECT assist_model FROM annotation_tasks WHERE forgery_id = $1 AND annotator_id = $2 AND status = 'claimed' \
               AND assist_shown_at IS NOT NULL",
        )
        .bind(task)
        .bind(user.id)
        .fetch_optional(&state.pool)
        .await?
        .flatten()
    } else {
        assist::settings(&state.pool).await?.model.map(|m| m.id)
    };
    let Some(model) = model else { return Err(WebError::NotFound) };
    let hash = assist::suggestion(&state.pool, task, model).await?.and_then(|s| s.mask_hash).ok_or(WebError::NotFound)?;
    let key: BlobKey = hash.parse().map_err(|_| WebError::Internal("bad blob key".into()))?;
    let bytes = state.store.get(&key).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/png".to_string()), (header::CACHE_CONTROL, "private, max-age=3600".to_string())], bytes)
        .into_response())
}
