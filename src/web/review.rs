//! The reviewer's (QA) work: a queue of submitted annotations, automatic false-positive flags,
//! accept, edit and accept, or return to the annotator with a comment (the paper's second phase).
//!
//! Beside them, the automatic checks of [`crate::dataset::checks`] (references to the original
//! image, near-duplicates of the same annotator's other annotations, disagreement with the
//! model's regions when the project has an assistance model), each with its trigger words; the
//! queue can be ordered by their risk score (`/review?order=risk`) instead of age.
//!
//! The flags follow the annotation rules of [`crate::dataset::annotation`]
//! ([`false_positive_labels`], [`manipulated_parts`]): a label none of whose parts is
//! manipulated is flagged, and its words are highlighted in the text.

use super::auth::User;
use super::{AppState, FormFields, WebError, render};
use crate::dataset::annotation::{
    Chip, MAX_COMMENT_CHARS, check_stored, check_text, chips, excerpt, false_positive_labels, highlight, known_regions, manipulated_parts,
    parse_regions, region_labels,
};
use crate::dataset::checks::{Disagreement, Duplicate, Finding, RiskInputs, disagreement, near_duplicates, original_references, risk};
use crate::storage::status::RevisionAction;
use crate::storage::tables::annotations;
use crate::storage::tables::assist;
use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use sqlx::Row;

struct QueueRow {
    id: uuid::Uuid,
    method: String,
    annotator: String,
    words: i32,
    text: String,
    /// With `order=risk`: the score and its reasons.
    risk: Option<(f64, String)>,
}

#[derive(Template)]
#[template(path = "review_queue.html")]
struct QueuePage {
    rows: Vec<QueueRow>,
    by_risk: bool,
}

#[derive(serde::Deserialize)]
pub struct QueueQuery {
    order: Option<String>,
}

/// The checks of one annotation.
struct Checks {
    original: Vec<Finding>,
    duplicates: Vec<Duplicate>,
    disagreement: Option<Disagreement>,
}

/// The checks of the annotations `ids` (their texts, chips and annotators read here): one query
/// for the rows with the current model's regions, one for the annotators' other texts.
async fn checks_of(
    state: &AppState,
    ids: &[uuid::Uuid],
) -> Result<std::collections::HashMap<uuid::Uuid, (Checks, sqlx::postgres::PgRow)>, WebError> {
    let model = assist::settings(&state.pool).await?.model.map(|m| m.id);
    let rows = sqlx::query(
        "SELECT a.id, a.text, a.regions, a.annotator_id, a.fp_labels, a.active_seconds, s.regions \
         FROM annotations a LEFT JOIN suggestions s ON s.forgery_id = a.forgery_id AND s.model_id = $2 WHERE a.id = ANY($1)",
    )
    .bind(ids)
    .bind(model)
    .fetch_all(&state.pool)
    .await?;
    let annotators: Vec<uuid::Uuid> = rows.iter().map(|r| r.get(3)).collect();
    let others = sqlx::query("SELECT id, annotator_id, text FROM annotations WHERE annotator_id = ANY($1)")
        .bind(&annotators)
        .fetch_all(&state.pool)
        .await?;
    let mut by_annotator: std::collections::HashMap<uuid::Uuid, Vec<(uuid::Uuid, String)>> = std::collections::HashMap::new();
    for o in &others {
        by_annotator.entry(o.get(1)).or_default().push((o.get(0), o.get(2)));
    }
    let mut out = std::collections::HashMap::new();
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        let text: String = r.get(1);
        let regions: Vec<String> = r.get(2);
        let mine: Vec<(uuid::Uuid, String)> =
            by_annotator.get(&r.get::<uuid::Uuid, _>(3)).map(|v| v.iter().filter(|(o, _)| *o != id).cloned().collect()).unwrap_or_default();
        let predicted: Option<Vec<String>> = r.get(6);
        let c = Checks {
            original: original_references(&text),
            duplicates: near_duplicates(&text, &mine),
            disagreement: predicted.map(|p| disagreement(&regions, &p)),
        };
        out.insert(id, (c, r));
    }
    Ok(out)
}

pub async fn queue(State(state): State<AppState>, Query(q): Query<QueueQuery>) -> Result<Html<String>, WebError> {
    let by_risk = q.order.as_deref() == Some("risk");
    // by age: the oldest 200; by risk: every waiting annotation is scored, the riskiest 200 shown
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT a.id, f.method, u.name, a.word_count, left(a.text, 400), a.updated_at FROM annotations a JOIN forgeries f ON f.id = a.forgery_id \
         JOIN users u ON u.id = a.annotator_id WHERE a.status = 'submitted' ORDER BY a.updated_at, a.id {}",
        if by_risk { "" } else { "LIMIT 200" }
    )))
    .fetch_all(&state.pool)
    .await?;
    let mut rows: Vec<QueueRow> = rows
        .iter()
        .map(|r| QueueRow { id: r.get(0), method: r.get(1), annotator: r.get(2), words: r.get(3), text: r.get(4), risk: None })
        .collect();
    if by_risk {
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let checks = checks_of(&state, &ids).await?;
        for row in &mut rows {
            if let Some((c, r)) = checks.get(&row.id) {
                let fp: Vec<String> = r.get(4);
                let (score, why) = risk(&RiskInputs {
                    fp_flags: fp.len(),
                    original_refs: c.original.len(),
                    duplicates: c.duplicates.len(),
                    disagreement: c.disagreement.as_ref().map_or(0, Disagreement::size),
                    active_seconds: r.get(5),
                    min_seconds: state.config.min_seconds,
                });
                row.risk = Some((score, why.join("; ")));
            }
        }
        // stable: equal scores keep the age order (and then the id order) of the query
        rows.sort_by(|a, b| b.risk.as_ref().map_or(0.0, |r| r.0).total_cmp(&a.risk.as_ref().map_or(0.0, |r| r.0)));
        rows.truncate(200);
    }
    render(&QueuePage { rows, by_risk })
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    id: uuid::Uuid,
    version: i32,
    chips: Vec<Chip>,
    forgery: uuid::Uuid,
    csrf: String,
    text: String,
    segments: Vec<(String, bool)>,
    flagged: Vec<&'static str>,
    manipulated: Vec<String>,
    error: Option<String>,
    /// A refused return's comment, shown again.
    comment: String,
    original: Vec<Finding>,
    duplicates: Vec<Duplicate>,
    disagreement: Option<Disagreement>,
}

/// An annotation as the reviewer sees it.
struct Loaded {
    forgery: uuid::Uuid,
    text: String,
    status: String,
    regions: Vec<String>,
    version: i32,
}

async fn load(state: &AppState, id: uuid::Uuid) -> Result<Loaded, WebError> {
    let r = sqlx::query("SELECT forgery_id, text, status, regions, version FROM annotations WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(Loaded { forgery: r.get(0), text: r.get(1), status: r.get(2), regions: r.get(3), version: r.get(4) })
}

/// The review page, showing `text` and `chips` (the stored ones, or a refused edit's) and a
/// refused return's comment.
async fn page_for(
    state: &AppState,
    user: &User,
    id: uuid::Uuid,
    edit: Option<(String, Vec<&'static str>)>,
    comment: Option<String>,
    error: Option<String>,
) -> Result<Html<String>, WebError> {
    let a = load(state, id).await?;
    let (text, chosen) = match edit {
        Some(e) => e,
        None => (a.text.clone(), known_regions(a.regions.iter().map(String::as_str))),
    };
    let manipulated = manipulated_parts(&state.pool, state.store.as_ref(), a.forgery).await?;
    let flagged = false_positive_labels(&text, &chosen, &manipulated);
    let (checks, _) = checks_of(state, &[id]).await?.remove(&id).ok_or(WebError::NotFound)?;
    // the checks of the text and chips shown (a refused edit's, or the stored ones)
    let original = original_references(&text);
    let disagreement = assist_regions(state, a.forgery).await?.map(|p| disagreement(&chosen, &p));
    render(&ReviewPage {
        original,
        duplicates: checks.duplicates,
        disagreement,
        id,
        version: a.version,
        chips: chips(&text, &chosen),
        comment: comment.unwrap_or_default(),
        forgery: a.forgery,
        csrf: user.csrf.clone(),
        segments: highlight(&text, &flagged),
        text,
        flagged,
        manipulated,
        error,
    })
}

/// Two reviewers decided at once: the later one changes nothing.
fn decided_first() -> WebError {
    WebError::Conflict("another reviewer decided on this annotation first; nothing was changed".into())
}

/// Refuses a decision made on an out-of-date page or on an annotation that is no longer waiting.
fn check_fresh(a: &Loaded, f: &FormFields) -> Result<(), WebError> {
    if a.status != "submitted" {
        return Err(WebError::Conflict(format!(
            "this annotation is {}, not waiting for review: the form is out of date; nothing was changed",
            a.status
        )));
    }
    match f.get("version").map(str::parse::<i32>) {
        Some(Ok(v)) if v == a.version => Ok(()),
        Some(Ok(_)) => Err(WebError::Conflict(
            "the annotation changed since this page was loaded: reload it to see the new version; nothing was changed".into(),
        )),
        _ => Err(WebError::Unprocessable("the form has no valid `version` field: reload the page".into())),
    }
}

pub async fn page(State(state): State<AppState>, user: User, Path(id): Path<uuid::Uuid>) -> Result<Html<String>, WebError> {
    page_for(&state, &user, id, None, None, None).await
}

/// The review page again with the refused edit or comment and the reason, as a 422.
async fn refuse(
    state: &AppState,
    user: &User,
    id: uuid::Uuid,
    edit: Option<(String, Vec<&'static str>)>,
    comment: Option<String>,
    msg: String,
) -> Result<Response, WebError> {
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page_for(state, user, id, edit, comment, Some(msg)).await?).into_response())
}

/// Accept, with the text and chips as edited. Fields: `csrf`, `version` (of the annotation the page
/// showed), `text` (absent keeps the annotator's), the chips as repeated `region` with `chips=1`
/// (absent keeps the annotator's), `comment` (optional).
pub async fn accept(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<uuid::Uuid>,
    RawForm(body): RawForm,
) -> Result<Response, WebError> {
    let f = FormFields::parse(&body);
    user.check_csrf(f.get("csrf"))?;
    let a = load(&state, id).await?;
    check_fresh(&a, &f)?;
    let text = f.get("text").map(str::to_string).unwrap_or(a.text.clone());
    let comment = f.get("comment").map(str::trim).filter(|c| !c.is_empty());
    let (regions, bad_region) = if f.get("chips").is_some() {
        match parse_regions(f.all("region")) {
            Ok(r) => (r, None),
            Err(e) => (known_regions(f.all("region")), Some(e.to_string())),
        }
    } else {
        (known_regions(a.regions.iter().map(String::as_str)), None)
    };
    if let Some(msg) = bad_region {
        return refuse(&state, &user, id, Some((text, regions)), None, msg).await;
    }
    if let Some(Err(e)) = comment.map(|c| check_stored("comment", c, MAX_COMMENT_CHARS)) {
        return refuse(&state, &user, id, Some((text, regions)), None, e.to_string()).await;
    }
    let words = match check_text(&text) {
        Ok(n) => n,
        Err(e) => return refuse(&state, &user, id, Some((text, regions)), None, e.to_string()).await,
    };
    let action = if text == a.text && regions.iter().copied().eq(a.regions.iter().map(String::as_str)) {
        RevisionAction::Accept
    } else {
        RevisionAction::EditAccept
    };
    let mentions = region_labels(&text);
    let acceptance = annotations::Acceptance {
        annotation_id: id,
        forgery_id: a.forgery,
        version: a.version,
        reviewer_id: user.id,
        text: &text,
        regions: &regions,
        word_count: words as i32,
        mentions: &mentions,
        action,
        comment,
    };
    let mut tx = state.pool.begin().await?;
    if !annotations::accept(&mut tx, &acceptance).await? {
        return Err(decided_first());
    }
    tx.commit().await?;
    Ok(Redirect::to("/review").into_response())
}

/// Return to the same annotator with a comment and the previous text. Fields: `csrf`, `version`,
/// `comment` (required).
pub async fn send_back(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<uuid::Uuid>,
    RawForm(body): RawForm,
) -> Result<Response, WebError> {
    let f = FormFields::parse(&body);
    user.check_csrf(f.get("csrf"))?;
    let a = load(&state, id).await?;
    check_fresh(&a, &f)?;
    let comment = f.get("comment").map(str::trim).unwrap_or_default();
    if comment.is_empty() {
        return refuse(&state, &user, id, None, None, "say what to improve: the comment is empty".into()).await;
    }
    if let Err(e) = check_stored("comment", comment, MAX_COMMENT_CHARS) {
        // a comment too long to show again whole is cut (its start is kept)
        let kept = excerpt(&comment.replace('\0', ""), MAX_COMMENT_CHARS);
        return refuse(&state, &user, id, None, Some(kept), e.to_string()).await;
    }
    let mut tx = state.pool.begin().await?;
    // back to the same annotator, with the previous text and chips as the draft and the comment shown
    if !annotations::send_back(&mut tx, id, a.forgery, a.version, user.id, comment).await? {
        return Err(decided_first());
    }
    tx.commit().await?;
    Ok(Redirect::to("/review").into_response())
}

/// The current assistance model's regions for a forgery, if it has a suggestion.
async fn assist_regions(state: &AppState, forgery: uuid::Uuid) -> Result<Option<Vec<String>>, WebError> {
    let Some(m) = assist::settings(&state.pool).await?.model else { return Ok(None) };
    Ok(assist::suggestion(&state.pool, forgery, m.id).await?.map(|s| s.regions))
}
