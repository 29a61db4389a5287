//! The reviewer's (QA) work: a queue of submitted annotations, automatic false-positive flags,
//! accept, edit and accept, or return to the annotator with a comment (the paper's second phase).
//!
//! False-positive flags: each region label the text mentions is mapped to facial parts
//! ([`label_parts`]); a part counts as manipulated when at least [`MANIPULATED_SHARE`] of its
//! pixels lie inside the forgery's mask. A label none of whose parts is manipulated is flagged, and
//! its words are highlighted in the text.

use super::auth::{Role, User};
use super::{AppState, FormFields, WebError, render};
use crate::dataset::annotation::{REGION_LABELS, check_text, region_labels};
use crate::storage::store::{BlobKey, BlobStore};
use askama::Template;
use axum::extract::{Path, RawForm, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use mmtt_generators::mask::decode_mask_png;
use sqlx::Row;

/// Share of a part's pixels inside the mask above which the part counts as manipulated.
pub const MANIPULATED_SHARE: f64 = 0.05;

/// The facial parts a region label refers to.
pub fn label_parts(label: &str) -> &'static [&'static str] {
    match label {
        "eye" | "pupil" => &["l_eye", "r_eye"],
        "lip" => &["u_lip", "l_lip"],
        "mouth" | "tooth" | "tongue" => &["mouth", "u_lip", "l_lip"],
        "nose" => &["nose"],
        "ear" => &["l_ear", "r_ear"],
        "eyebrow" => &["l_brow", "r_brow"],
        "hair" => &["hair"],
        // cheek, forehead, chin, jaw, beard, mustache, skin, wrinkle, freckle, scar, dimple
        _ => &["skin"],
    }
}

/// Labels the text mentions or the chips carry whose parts were not manipulated, in the release's
/// order.
pub fn false_positive_labels(text: &str, chips: &[&str], manipulated: &[String]) -> Vec<&'static str> {
    let mentioned = region_labels(text);
    REGION_LABELS
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| mentioned.contains(l) || chips.contains(l))
        .filter(|l| !label_parts(l).iter().any(|p| manipulated.iter().any(|m| m == p)))
        .collect()
}

/// The parts of the forgery's source with at least [`MANIPULATED_SHARE`] of their pixels masked.
pub async fn manipulated_parts(state: &AppState, forgery: uuid::Uuid) -> Result<Vec<String>, WebError> {
    let rows = sqlx::query(
        "SELECT sp.part, sp.mask_hash, f.mask_hash FROM forgeries f JOIN source_parts sp ON sp.source_id = f.target_id WHERE f.id = $1",
    )
    .bind(forgery)
    .fetch_all(&state.pool)
    .await?;
    let Some(first) = rows.first() else { return Ok(vec![]) };
    let get = |h: String| -> Result<image::GrayImage, WebError> {
        let k: BlobKey = h.parse().map_err(|_| WebError::Internal("bad key".into()))?;
        let bytes = state.store.get(&k).map_err(|e| WebError::Internal(e.to_string()))?;
        decode_mask_png(&bytes, mmtt_generators::FACE_SIZE).map_err(|e| WebError::Internal(e.to_string()))
    };
    let mask = get(first.get(2))?;
    let mut out = Vec::new();
    for r in &rows {
        let part = get(r.get(1))?;
        let (mut n, mut inside) = (0u64, 0u64);
        for (p, m) in part.pixels().zip(mask.pixels()) {
            if p.0[0] > 0 {
                n += 1;
                inside += (m.0[0] > 0) as u64;
            }
        }
        if n > 0 && inside as f64 / n as f64 >= MANIPULATED_SHARE {
            out.push(r.get::<String, _>(0));
        }
    }
    out.sort();
    Ok(out)
}

/// Splits `text` into (segment, flagged) runs, flagging the words of the given labels.
pub fn highlight(text: &str, flagged: &[&str]) -> Vec<(String, bool)> {
    let words: Vec<String> =
        REGION_LABELS.iter().filter(|(l, _)| flagged.contains(l)).flat_map(|(_, syn)| syn.iter().map(|s| s.to_string())).collect();
    let mut out: Vec<(String, bool)> = Vec::new();
    for token in text.split_inclusive(char::is_whitespace) {
        let core: String = token.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        let hit = !core.is_empty() && words.iter().any(|w| *w == core);
        match out.last_mut() {
            Some((s, f)) if *f == hit => s.push_str(token),
            _ => out.push((token.to_string(), hit)),
        }
    }
    out
}

struct QueueRow {
    id: uuid::Uuid,
    method: String,
    annotator: String,
    words: i32,
    text: String,
}

#[derive(Template)]
#[template(path = "review_queue.html")]
struct QueuePage {
    rows: Vec<QueueRow>,
}

pub async fn queue(State(state): State<AppState>, user: User) -> Result<Html<String>, WebError> {
    user.require(Role::Reviewer)?;
    let rows = sqlx::query(
        "SELECT a.id, f.method, u.name, a.word_count, a.text FROM annotations a JOIN forgeries f ON f.id = a.forgery_id \
         JOIN users u ON u.id = a.annotator_id WHERE a.status = 'submitted' ORDER BY a.updated_at LIMIT 200",
    )
    .fetch_all(&state.pool)
    .await?;
    let rows =
        rows.iter().map(|r| QueueRow { id: r.get(0), method: r.get(1), annotator: r.get(2), words: r.get(3), text: r.get(4) }).collect();
    render(&QueuePage { rows })
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    id: uuid::Uuid,
    version: i32,
    chips: Vec<super::annotate::Chip>,
    forgery: uuid::Uuid,
    csrf: String,
    text: String,
    segments: Vec<(String, bool)>,
    flagged: Vec<&'static str>,
    manipulated: Vec<String>,
    error: Option<String>,
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

/// The review page, showing `text` and `chips` (the stored ones, or a refused edit's).
async fn page_for(
    state: &AppState,
    user: &User,
    id: uuid::Uuid,
    edit: Option<(String, Vec<&'static str>)>,
    error: Option<String>,
) -> Result<Html<String>, WebError> {
    let a = load(state, id).await?;
    let (text, chosen) = match edit {
        Some(e) => e,
        None => (a.text.clone(), super::annotate::parse_regions(a.regions.iter().map(String::as_str))?),
    };
    let manipulated = manipulated_parts(state, a.forgery).await?;
    let flagged = false_positive_labels(&text, &chosen, &manipulated);
    render(&ReviewPage {
        id,
        version: a.version,
        chips: super::annotate::chips(&text, &chosen),
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
    user.require(Role::Reviewer)?;
    page_for(&state, &user, id, None, None).await
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
    user.require(Role::Reviewer)?;
    let f = FormFields::parse(&body);
    user.check_csrf(f.get("csrf"))?;
    let a = load(&state, id).await?;
    check_fresh(&a, &f)?;
    let text = f.get("text").map(str::to_string).unwrap_or(a.text.clone());
    let regions = if f.get("chips").is_some() {
        super::annotate::parse_regions(f.all("region"))?
    } else {
        super::annotate::parse_regions(a.regions.iter().map(String::as_str))?
    };
    let words = match check_text(&text) {
        Ok(n) => n,
        Err(e) => {
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page_for(&state, &user, id, Some((text, regions)), Some(e.to_string())).await?)
                .into_response());
        }
    };
    let action = if text == a.text && regions.iter().copied().eq(a.regions.iter().map(String::as_str)) { "accept" } else { "edit_accept" };
    let mut tx = state.pool.begin().await?;
    let n = sqlx::query(
        "UPDATE annotations SET status = 'accepted', text = $2, regions = $3, word_count = $4, mentions = $6, version = version + 1, updated_at = now() \
         WHERE id = $1 AND status = 'submitted' AND version = $5",
    )
    .bind(id)
    .bind(&text)
    .bind(&regions)
    .bind(words as i32)
    .bind(a.version)
    .bind(region_labels(&text))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(decided_first());
    }
    sqlx::query("INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action, comment) VALUES ($1,$2,$3,$4,$5,$6)")
        .bind(id)
        .bind(&text)
        .bind(&regions)
        .bind(user.id)
        .bind(action)
        .bind(f.get("comment").map(str::trim).filter(|c| !c.is_empty()))
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE annotation_tasks SET status = 'accepted', updated_at = now() WHERE forgery_id = $1")
        .bind(a.forgery)
        .execute(&mut *tx)
        .await?;
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
    user.require(Role::Reviewer)?;
    let f = FormFields::parse(&body);
    user.check_csrf(f.get("csrf"))?;
    let a = load(&state, id).await?;
    check_fresh(&a, &f)?;
    let comment = f
        .get("comment")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| WebError::Unprocessable("say what to improve: the comment is empty".into()))?;
    let mut tx = state.pool.begin().await?;
    let n = sqlx::query("UPDATE annotations SET status = 'returned', version = version + 1, updated_at = now() WHERE id = $1 AND status = 'submitted' AND version = $2")
        .bind(id)
        .bind(a.version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(decided_first());
    }
    sqlx::query("INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action, comment) SELECT $1, text, regions, $2, 'return', $3 FROM annotations WHERE id = $1")
        .bind(id)
        .bind(user.id)
        .bind(comment)
        .execute(&mut *tx)
        .await?;
    // back to the same annotator, with the previous text and chips as the draft and the comment shown
    sqlx::query(
        "UPDATE annotation_tasks t SET status = 'returned', draft = a.text, draft_regions = a.regions, skip_reason = NULL, updated_at = now(), \
         annotator_id = a.annotator_id FROM annotations a WHERE a.id = $2 AND t.forgery_id = $1",
    )
    .bind(a.forgery)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Redirect::to("/review").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_regions_outside_the_manipulated_parts() {
        let manipulated = vec!["l_eye".to_string(), "nose".to_string()];
        let text = "The left eye is blurry and the hair has a seam; the nostrils are fine.";
        assert_eq!(false_positive_labels(text, &[], &manipulated), vec!["hair"]);
        // a chip counts like a mention; chips on manipulated parts are not flagged
        assert_eq!(false_positive_labels(text, &["ear", "eye"], &manipulated), vec!["ear", "hair"]);
        let h = highlight(text, &["hair"]);
        assert!(h.iter().any(|(s, f)| *f && s.trim() == "hair"));
        assert_eq!(h.iter().map(|(s, _)| s.as_str()).collect::<String>(), text);
    }
}
