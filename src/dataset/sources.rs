//! The stored source faces, as `mmtt sources list` shows them.

use crate::app::App;
use crate::dataset::import::datasets::Dataset;
use anyhow::Result;
use serde::Serialize;

/// One stored source. Fields in alphabetical order: the JSON output's keys keep the order they
/// had when this was a `serde_json` map.
#[derive(Debug, Clone, Serialize)]
pub struct SourceListing {
    pub dataset: String,
    pub face_index: i32,
    pub id: uuid::Uuid,
    /// The image's path in the blob store (`None` for a store without local files).
    pub image: Option<String>,
    pub original_id: String,
    pub original_path: String,
    pub parts: Vec<String>,
    pub split: String,
}

/// Every source (of `dataset` when given), oldest first.
pub async fn list(app: &App, dataset: Option<Dataset>) -> Result<Vec<SourceListing>> {
    type Row = (uuid::Uuid, String, String, i32, String, Vec<String>, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, dataset, original_id, face_index, split, parts, image_hash, original_path FROM sources \
         WHERE ($1::text IS NULL OR dataset = $1) ORDER BY created_at, id",
    )
    .bind(dataset.map(|d| d.name()))
    .fetch_all(&app.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, dataset, original_id, face_index, split, parts, hash, original_path) in rows {
        let image = app.store.local_path(&hash.parse()?).map(|p| p.display().to_string());
        out.push(SourceListing { dataset, face_index, id, image, original_id, original_path, parts, split });
    }
    Ok(out)
}
