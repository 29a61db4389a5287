//! `annotations` and `annotation_revisions`: every write to the two tables, with the task state
//! that goes with it. One annotation per forgery (`forgery_id` is unique); every version of it is
//! a revision, with its author and the action that made it.
//!
//! The lifecycle: [`submit`] (an annotator's explanation: new, or a returned one refined by the
//! same annotator), then [`accept`] or [`send_back`] by a reviewer. The web app's annotation and
//! review pages and the demo's generated captions (`mmtt demo`) go through these same functions.
//! Captions that arrive accepted with their sample go through [`import_accepted`] (the release
//! importer) and [`insert_accepted_bulk`] (synthetic data).
//!
//! The callers check the text rules (`dataset::annotation`) and compute what derives from the
//! text: the word count and `mentions` (the reference extractor's labels of the text).

use super::annotation_tasks;
use crate::storage::status::RevisionAction;
use sqlx::PgConnection;

/// An explanation as its annotator submits it.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub forgery_id: uuid::Uuid,
    pub annotator_id: uuid::Uuid,
    pub text: &'a str,
    /// The chosen region chips.
    pub regions: &'a [&'a str],
    pub word_count: i32,
    /// The reference extractor's labels of `text`.
    pub mentions: &'a [&'a str],
    /// Chips and mentions none of whose parts was manipulated.
    pub fp_labels: &'a [&'a str],
    pub active_seconds: f64,
    pub elapsed_seconds: f64,
    /// What the annotator was shown (issue 17); `None`: assistance off (the stored row is then
    /// exactly what it was before assistance existed: the columns keep their defaults).
    pub assist: Option<AssistRecord<'a>>,
}

/// The assistance an annotation was written with: the mode in effect, whether the forgery was in
/// the held-out arm, and the suggestion shown (none in the held-out arm or without a prediction)
/// with the token-level edit distance from it to the submitted text.
#[derive(Debug, Clone)]
pub struct AssistRecord<'a> {
    pub mode: crate::storage::status::AssistMode,
    pub holdout: bool,
    pub suggestion: Option<ShownSuggestion<'a>>,
}

#[derive(Debug, Clone)]
pub struct ShownSuggestion<'a> {
    pub model: uuid::Uuid,
    pub text: &'a str,
    pub regions: &'a [String],
    pub suggestion_tokens: i32,
    pub text_tokens: i32,
    pub edit_distance: i32,
}

/// A stored submission: the annotation's id and its version now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub id: uuid::Uuid,
    pub version: i32,
}

/// Stores a submission: the annotation (new, or the refinement of a returned one by the same
/// annotator, its version one higher), its `submit` revision, and the task submitted by the
/// annotator (lease and draft cleared). The caller holds the task (the web app: claimed under a
/// live lease, checked under the row lock in the same transaction). An annotation of the forgery
/// by another annotator is left alone: [`sqlx::Error::RowNotFound`].
pub async fn submit(conn: &mut PgConnection, s: &Submission<'_>) -> sqlx::Result<Submitted> {
    let (id, version): (uuid::Uuid, i32) = sqlx::query_as(
        "INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status, fp_labels, mentions) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'submitted',$9,$10) \
         ON CONFLICT (forgery_id) DO UPDATE SET text = EXCLUDED.text, regions = EXCLUDED.regions, word_count = EXCLUDED.word_count, mentions = EXCLUDED.mentions, \
           active_seconds = EXCLUDED.active_seconds, elapsed_seconds = EXCLUDED.elapsed_seconds, status = 'submitted', \
           fp_labels = EXCLUDED.fp_labels, version = annotations.version + 1, updated_at = now() \
         WHERE annotations.annotator_id = EXCLUDED.annotator_id RETURNING id, version",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(s.forgery_id)
    .bind(s.annotator_id)
    .bind(s.text)
    .bind(s.regions)
    .bind(s.word_count)
    .bind(s.active_seconds)
    .bind(s.elapsed_seconds)
    .bind(s.fp_labels)
    .bind(s.mentions)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(a) = &s.assist {
        // a refinement keeps the first submission's suggestion unless it was shown one itself;
        // the distance is always from the recorded suggestion to the text submitted now
        let sug = a.suggestion.as_ref();
        sqlx::query(
            "UPDATE annotations SET assist_mode = $2, assist_holdout = $3, \
               suggestion_model = COALESCE($4, suggestion_model), suggestion_text = COALESCE($5, suggestion_text), \
               suggestion_regions = COALESCE($6, suggestion_regions), suggestion_tokens = COALESCE($7, suggestion_tokens), \
               text_tokens = COALESCE($8, text_tokens), suggestion_edit_distance = COALESCE($9, suggestion_edit_distance) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(a.mode.as_str())
        .bind(a.holdout)
        .bind(sug.map(|x| x.model))
        .bind(sug.map(|x| x.text))
        .bind(sug.map(|x| x.regions))
        .bind(sug.map(|x| x.suggestion_tokens))
        .bind(sug.map(|x| x.text_tokens))
        .bind(sug.map(|x| x.edit_distance))
        .execute(&mut *conn)
        .await?;
    }
    revision(conn, id, s.text, s.regions, s.annotator_id, RevisionAction::Submit, None).await?;
    annotation_tasks::mark_submitted(conn, s.forgery_id, s.annotator_id).await?;
    Ok(Submitted { id, version })
}

/// A reviewer's acceptance, with the text and chips as the reviewer left them.
#[derive(Debug, Clone)]
pub struct Acceptance<'a> {
    pub annotation_id: uuid::Uuid,
    pub forgery_id: uuid::Uuid,
    /// The version the reviewer saw: a later one is not accepted.
    pub version: i32,
    pub reviewer_id: uuid::Uuid,
    pub text: &'a str,
    pub regions: &'a [&'a str],
    pub word_count: i32,
    /// The reference extractor's labels of `text`.
    pub mentions: &'a [&'a str],
    /// [`RevisionAction::Accept`] when text and chips are the annotator's, else
    /// [`RevisionAction::EditAccept`].
    pub action: RevisionAction,
    pub comment: Option<&'a str>,
}

/// Accepts a submitted annotation at the version the reviewer saw: the annotation (version one
/// higher), its revision, and the task accepted. `false` (nothing written) when it is no longer
/// submitted at that version (another reviewer decided first, or the annotator refined it).
pub async fn accept(conn: &mut PgConnection, a: &Acceptance<'_>) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE annotations SET status = 'accepted', text = $2, regions = $3, word_count = $4, mentions = $6, version = version + 1, updated_at = now() \
         WHERE id = $1 AND status = 'submitted' AND version = $5",
    )
    .bind(a.annotation_id)
    .bind(a.text)
    .bind(a.regions)
    .bind(a.word_count)
    .bind(a.version)
    .bind(a.mentions)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    revision(conn, a.annotation_id, a.text, a.regions, a.reviewer_id, a.action, a.comment).await?;
    annotation_tasks::mark_reviewed_accepted(conn, a.forgery_id).await?;
    Ok(true)
}

/// Returns a submitted annotation (at the version the reviewer saw) to its annotator with a
/// comment: the annotation returned, a `return` revision with the current text, and the task back
/// to the annotator with the text and chips as the draft. `false` (nothing written) when it is no
/// longer submitted at that version.
pub async fn send_back(
    conn: &mut PgConnection,
    annotation_id: uuid::Uuid,
    forgery_id: uuid::Uuid,
    version: i32,
    reviewer_id: uuid::Uuid,
    comment: &str,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE annotations SET status = 'returned', version = version + 1, updated_at = now() WHERE id = $1 AND status = 'submitted' AND version = $2",
    )
    .bind(annotation_id)
    .bind(version)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action, comment) \
         SELECT $1, text, regions, $2, $3, $4 FROM annotations WHERE id = $1",
    )
    .bind(annotation_id)
    .bind(reviewer_id)
    .bind(RevisionAction::Return.as_str())
    .bind(comment)
    .execute(&mut *conn)
    .await?;
    annotation_tasks::mark_returned(conn, forgery_id, annotation_id).await?;
    Ok(true)
}

/// A caption that arrives accepted with its sample (the authors' release).
#[derive(Debug, Clone)]
pub struct Imported<'a> {
    pub id: uuid::Uuid,
    pub forgery_id: uuid::Uuid,
    pub annotator_id: uuid::Uuid,
    pub text: &'a str,
    pub regions: &'a [&'a str],
    pub word_count: i32,
    pub mentions: &'a [&'a str],
}

/// Stores an imported caption: the annotation accepted (no active time), its `import` revision,
/// and the task accepted by its annotator.
pub async fn import_accepted(conn: &mut PgConnection, c: &Imported<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status, mentions) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 'accepted', $7)",
    )
    .bind(c.id)
    .bind(c.forgery_id)
    .bind(c.annotator_id)
    .bind(c.text)
    .bind(c.regions)
    .bind(c.word_count)
    .bind(c.mentions)
    .execute(&mut *conn)
    .await?;
    revision(conn, c.id, c.text, c.regions, c.annotator_id, RevisionAction::Import, None).await?;
    annotation_tasks::mark_accepted(conn, c.forgery_id, c.annotator_id).await
}

/// Accepted synthetic annotations in bulk (`mmtt seed-synthetic --state accepted`): one per
/// element of the columns; regions and flags comma-separated; mentions are the regions.
pub struct AcceptedBatch<'a> {
    pub ids: &'a [uuid::Uuid],
    pub forgery_ids: &'a [uuid::Uuid],
    pub annotator_ids: &'a [uuid::Uuid],
    pub texts: &'a [String],
    pub word_counts: &'a [i32],
    pub active_seconds: &'a [f64],
    pub regions_csv: &'a [String],
    pub fp_csv: &'a [String],
}

/// Stores an [`AcceptedBatch`]: the annotations (elapsed time 1.3 times the active time), their
/// `submit` revisions by their annotators, and their tasks accepted.
pub async fn insert_accepted_bulk(conn: &mut PgConnection, b: &AcceptedBatch<'_>) -> sqlx::Result<u64> {
    let n = sqlx::query(
        "INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status, fp_labels, mentions) \
         SELECT id, fid, uid, tx, coalesce(string_to_array(nullif(rg, ''), ','), '{}'), wc, act, act * 1.3, 'accepted', \
                coalesce(string_to_array(nullif(fp, ''), ','), '{}'), coalesce(string_to_array(nullif(rg, ''), ','), '{}') \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[], $6::float8[], $7::text[], $8::text[]) AS t(id, fid, uid, tx, wc, act, rg, fp)",
    )
    .bind(b.ids)
    .bind(b.forgery_ids)
    .bind(b.annotator_ids)
    .bind(b.texts)
    .bind(b.word_counts)
    .bind(b.active_seconds)
    .bind(b.regions_csv)
    .bind(b.fp_csv)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action) \
         SELECT id, text, regions, annotator_id, $2 FROM annotations WHERE id = ANY($1)",
    )
    .bind(b.ids)
    .bind(RevisionAction::Submit.as_str())
    .execute(&mut *conn)
    .await?;
    annotation_tasks::mark_accepted_for_annotations(conn, b.ids).await?;
    Ok(n)
}

/// One revision: `text` and `regions` as `author_id` left them by `action`.
async fn revision(
    conn: &mut PgConnection,
    annotation_id: uuid::Uuid,
    text: &str,
    regions: &[&str],
    author_id: uuid::Uuid,
    action: RevisionAction,
    comment: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO annotation_revisions (annotation_id, text, regions, author_id, action, comment) VALUES ($1,$2,$3,$4,$5,$6)")
        .bind(annotation_id)
        .bind(text)
        .bind(regions)
        .bind(author_id)
        .bind(action.as_str())
        .bind(comment)
        .execute(conn)
        .await?;
    Ok(())
}
