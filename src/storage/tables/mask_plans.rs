//! `mask_plans`: every insert into the table. A plan is unique by
//! `(source_id, purpose, seed, rule_version)`; inserting it again changes nothing.

use mmtt_generators::plan::{MaskKind, Purpose};
use sqlx::PgConnection;

/// One planned mask to store.
#[derive(Debug, Clone)]
pub struct NewMaskPlan<'a> {
    pub id: uuid::Uuid,
    pub source_id: uuid::Uuid,
    pub purpose: Purpose,
    pub kind: MaskKind,
    /// The merged parts' names (the release's imports: its region labels, or `unknown`).
    pub parts: &'a [&'a str],
    pub k_drawn: i16,
    pub seed: i64,
    pub item_seed: i64,
    pub rule_version: i32,
    pub mask_hash: &'a str,
    pub pixels: i32,
}

/// Inserts `p`; `false` when the source already has a plan for that purpose, seed and rule version.
pub async fn insert(conn: &mut PgConnection, p: &NewMaskPlan<'_>) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO mask_plans (id, source_id, purpose, kind, parts, k_drawn, seed, item_seed, rule_version, mask_hash, pixels) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (source_id, purpose, seed, rule_version) DO NOTHING",
    )
    .bind(p.id)
    .bind(p.source_id)
    .bind(p.purpose.as_str())
    .bind(p.kind.name())
    .bind(p.parts)
    .bind(p.k_drawn)
    .bind(p.seed)
    .bind(p.item_seed)
    .bind(p.rule_version)
    .bind(p.mask_hash)
    .bind(p.pixels)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Inpainting part plans in bulk (synthetic data): one per element of the columns, parts
/// comma-separated, rule version 1, item seed 0.
pub async fn insert_part_plans_bulk(
    conn: &mut PgConnection,
    seed: i64,
    ids: &[uuid::Uuid],
    source_ids: &[uuid::Uuid],
    mask_hashes: &[String],
    pixels: &[i32],
    parts_csv: &[String],
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO mask_plans (id, source_id, purpose, kind, parts, k_drawn, seed, item_seed, rule_version, mask_hash, pixels) \
         SELECT id, sid, 'inpaint', 'parts', string_to_array(pa, ','), cardinality(string_to_array(pa, ',')), $4, 0, 1, mh, px \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $5::int[], $6::text[]) AS t(id, sid, mh, px, pa)",
    )
    .bind(ids)
    .bind(source_ids)
    .bind(mask_hashes)
    .bind(seed)
    .bind(pixels)
    .bind(parts_csv)
    .execute(conn)
    .await?
    .rows_affected())
}
