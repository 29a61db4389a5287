//! `forgeries`: every insert into the table. `item_id` is unique (one forgery per queue item),
//! and so is `release_image_id` (one sample per id of the authors' release).

use sqlx::PgConnection;

/// One forgery to store. Its image, mask and original must already be in the blob store and in
/// `blobs` (the caller's transaction).
#[derive(Debug, Clone)]
pub struct NewForgery<'a> {
    pub id: uuid::Uuid,
    pub item_id: uuid::Uuid,
    pub method: &'a str,
    pub target_id: uuid::Uuid,
    pub donor_id: Option<uuid::Uuid>,
    pub plan_id: uuid::Uuid,
    pub split: &'a str,
    pub image_hash: &'a str,
    pub mask_hash: &'a str,
    pub original_hash: &'a str,
    pub seed: i64,
    pub provenance: &'a serde_json::Value,
    pub timings: &'a serde_json::Value,
    /// The authors' ids of an imported release sample (`None` for the platform's own forgeries).
    pub release_image_id: Option<&'a str>,
    pub release_instance_id: Option<&'a serde_json::Value>,
}

/// Inserts `f`; `false` when its item already has a forgery.
pub async fn insert(conn: &mut PgConnection, f: &NewForgery<'_>) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO forgeries (id, item_id, method, target_id, donor_id, plan_id, split, image_hash, mask_hash, original_hash, seed, \
                                provenance, timings, release_image_id, release_instance_id) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) ON CONFLICT (item_id) DO NOTHING",
    )
    .bind(f.id)
    .bind(f.item_id)
    .bind(f.method)
    .bind(f.target_id)
    .bind(f.donor_id)
    .bind(f.plan_id)
    .bind(f.split)
    .bind(f.image_hash)
    .bind(f.mask_hash)
    .bind(f.original_hash)
    .bind(f.seed)
    .bind(f.provenance)
    .bind(f.timings)
    .bind(f.release_image_id)
    .bind(f.release_instance_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Synthetic forgeries in bulk (`mmtt seed-synthetic`): one per element of the columns, no donor,
/// provenance `{"generator": "synthetic"}`.
pub struct SyntheticBatch<'a> {
    pub seed: i64,
    pub ids: &'a [uuid::Uuid],
    pub item_ids: &'a [uuid::Uuid],
    pub target_ids: &'a [uuid::Uuid],
    pub plan_ids: &'a [uuid::Uuid],
    pub splits: &'a [String],
    pub image_hashes: &'a [String],
    pub mask_hashes: &'a [String],
    pub original_hashes: &'a [String],
    pub methods: &'a [String],
}

pub async fn insert_synthetic_bulk(conn: &mut PgConnection, b: &SyntheticBatch<'_>) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO forgeries (id, item_id, method, target_id, plan_id, split, image_hash, mask_hash, original_hash, seed, provenance, timings) \
         SELECT id, iid, me, sid, pid, sp, fh, mh, oh, $8, '{\"generator\": \"synthetic\"}', '{}' \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $9::text[], $10::text[]) AS t(id, iid, sid, pid, sp, fh, mh, oh, me)",
    )
    .bind(b.ids)
    .bind(b.item_ids)
    .bind(b.target_ids)
    .bind(b.plan_ids)
    .bind(b.splits)
    .bind(b.image_hashes)
    .bind(b.mask_hashes)
    .bind(b.seed)
    .bind(b.original_hashes)
    .bind(b.methods)
    .execute(conn)
    .await?
    .rows_affected())
}
