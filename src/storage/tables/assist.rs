//! Model-assisted annotation's tables: `assist_models` (trained models an admin registered),
//! `suggestions` (one prediction per forgery and model, written by `assist` jobs) and the
//! project's assistance settings (`project_settings.assist_*`). The one writer of each; reads
//! that several parts share are here too.

use crate::storage::status::AssistMode;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// A registered model: a stage-2 checkpoint and the FPN that chooses its regions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AssistModel {
    pub id: Uuid,
    pub name: String,
    pub checkpoint: String,
    pub fpn: Option<String>,
    pub talker_job: Option<Uuid>,
    pub fpn_job: Option<Uuid>,
}

/// The project's assistance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AssistSettings {
    pub mode: AssistMode,
    pub model: Option<AssistModel>,
    /// The held-out (unassisted) fraction of forgeries while assistance is on.
    pub holdout: f64,
    pub seed: i64,
}

impl AssistSettings {
    /// The model suggestions come from when assistance is on.
    pub fn active_model(&self) -> Option<&AssistModel> {
        if self.mode == AssistMode::Off { None } else { self.model.as_ref() }
    }
}

/// A stored suggestion.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestion {
    pub text: String,
    pub regions: Vec<String>,
    pub mask_hash: Option<String>,
}

fn model_of(r: &sqlx::postgres::PgRow) -> AssistModel {
    AssistModel {
        id: r.get("id"),
        name: r.get("name"),
        checkpoint: r.get("checkpoint"),
        fpn: r.get("fpn"),
        talker_job: r.get("talker_job"),
        fpn_job: r.get("fpn_job"),
    }
}

const MODEL_COLS: &str = "id, name, checkpoint, fpn, talker_job, fpn_job";

pub async fn models(pool: &PgPool) -> sqlx::Result<Vec<AssistModel>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {MODEL_COLS} FROM assist_models ORDER BY created_at, name")))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(model_of).collect())
}

pub async fn model(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<AssistModel>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {MODEL_COLS} FROM assist_models WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(model_of))
}

/// Registers a model; `Ok(None)` when the name is taken (nothing written).
pub async fn register_model(
    pool: &PgPool,
    name: &str,
    checkpoint: &str,
    fpn: Option<&str>,
    talker_job: Option<Uuid>,
    fpn_job: Option<Uuid>,
    created_by: Option<Uuid>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO assist_models (id, name, checkpoint, fpn, talker_job, fpn_job, created_by) VALUES ($1,$2,$3,$4,$5,$6,$7) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(checkpoint)
    .bind(fpn)
    .bind(talker_job)
    .bind(fpn_job)
    .bind(created_by)
    .fetch_optional(pool)
    .await
}

pub async fn settings(pool: &PgPool) -> sqlx::Result<AssistSettings> {
    let r = sqlx::query("SELECT assist_mode, assist_model, assist_holdout, assist_seed FROM project_settings WHERE id")
        .fetch_optional(pool)
        .await?;
    let Some(r) = r else { return Ok(AssistSettings { mode: AssistMode::Off, model: None, holdout: 0.2, seed: 17 }) };
    let mode: String = r.get(0);
    let id: Option<Uuid> = r.get(1);
    let model = match id {
        Some(id) => model(pool, id).await?,
        None => None,
    };
    Ok(AssistSettings { mode: mode.parse().unwrap_or(AssistMode::Off), model, holdout: r.get(2), seed: r.get(3) })
}

/// Sets the project's mode, model and held-out fraction (`project_settings` exists once the
/// database is initialised).
pub async fn set_settings(pool: &PgPool, mode: AssistMode, model: Option<Uuid>, holdout: f64) -> sqlx::Result<u64> {
    Ok(sqlx::query("UPDATE project_settings SET assist_mode = $1, assist_model = $2, assist_holdout = $3 WHERE id")
        .bind(mode.as_str())
        .bind(model)
        .bind(holdout)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Stores one prediction (the mask blob already recorded in the same transaction); an existing
/// one for the forgery and model is kept.
pub async fn insert_suggestion(
    conn: &mut PgConnection,
    forgery: Uuid,
    model: Uuid,
    s: &Suggestion,
    job: Option<Uuid>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO suggestions (forgery_id, model_id, text, regions, mask_hash, job_id) VALUES ($1,$2,$3,$4,$5,$6) \
         ON CONFLICT (forgery_id, model_id) DO NOTHING",
    )
    .bind(forgery)
    .bind(model)
    .bind(&s.text)
    .bind(&s.regions)
    .bind(&s.mask_hash)
    .bind(job)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn suggestion<'e>(ex: impl sqlx::PgExecutor<'e>, forgery: Uuid, model: Uuid) -> sqlx::Result<Option<Suggestion>> {
    let r = sqlx::query("SELECT text, regions, mask_hash FROM suggestions WHERE forgery_id = $1 AND model_id = $2")
        .bind(forgery)
        .bind(model)
        .fetch_optional(ex)
        .await?;
    Ok(r.map(|r| Suggestion { text: r.get(0), regions: r.get(1), mask_hash: r.get(2) }))
}
