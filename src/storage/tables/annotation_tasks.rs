//! `annotation_tasks` outside the web app. Rows are made by the trigger on `forgeries`
//! (`migrations/0003_users_annotation.sql`), one per forgery; the web app's claim, draft,
//! submit, skip and review statements move them through their states (and the web benchmark
//! reopens the tasks its clients claimed). What is written here: tasks whose accepted annotation
//! arrives with the sample (release import, synthetic data).

use sqlx::PgConnection;

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
