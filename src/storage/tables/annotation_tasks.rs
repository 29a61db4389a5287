//! `annotation_tasks`: the task states that go with an annotation's writes. Rows are made by the
//! trigger on `forgeries` (`migrations/0003_users_annotation.sql`), one per forgery; the web
//! app's claim, heartbeat, draft and skip statements move a task while it is being worked on (and
//! the web benchmark reopens the tasks its clients claimed). What is written here, called by
//! [`super::annotations`] in the same transaction as the annotation: submitted, accepted after
//! review, returned, and accepted on arrival (release import, synthetic data).

use sqlx::PgConnection;

/// The task of `forgery_id` is submitted by `annotator_id`: no lease, no draft.
pub async fn mark_submitted(conn: &mut PgConnection, forgery_id: uuid::Uuid, annotator_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE annotation_tasks SET status = 'submitted', annotator_id = $2, lease_until = NULL, draft = NULL, draft_regions = NULL, \
         updated_at = now() WHERE forgery_id = $1",
    )
    .bind(forgery_id)
    .bind(annotator_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The task of `forgery_id` is accepted (its annotation was accepted by a reviewer).
pub async fn mark_reviewed_accepted(conn: &mut PgConnection, forgery_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE annotation_tasks SET status = 'accepted', updated_at = now() WHERE forgery_id = $1")
        .bind(forgery_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The task of `forgery_id` goes back to the annotator of `annotation_id`, with the annotation's
/// text and chips as the draft.
pub async fn mark_returned(conn: &mut PgConnection, forgery_id: uuid::Uuid, annotation_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE annotation_tasks t SET status = 'returned', draft = a.text, draft_regions = a.regions, skip_reason = NULL, updated_at = now(), \
         annotator_id = a.annotator_id FROM annotations a WHERE a.id = $2 AND t.forgery_id = $1",
    )
    .bind(forgery_id)
    .bind(annotation_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The task of `forgery_id` is accepted, annotated by `annotator_id` (an imported sample).
pub async fn mark_accepted(conn: &mut PgConnection, forgery_id: uuid::Uuid, annotator_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE annotation_tasks SET status = 'accepted', annotator_id = $2 WHERE forgery_id = $1")
        .bind(forgery_id)
        .bind(annotator_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tasks of these annotations are accepted, each with its annotation's annotator (synthetic
/// data).
pub async fn mark_accepted_for_annotations(conn: &mut PgConnection, annotation_ids: &[uuid::Uuid]) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE annotation_tasks SET status = 'accepted', annotator_id = a.annotator_id FROM annotations a \
         WHERE a.forgery_id = annotation_tasks.forgery_id AND a.id = ANY($1)",
    )
    .bind(annotation_ids)
    .execute(conn)
    .await?
    .rows_affected())
}
