//! The record of admin actions (who, what, when): the one writer and reader of `admin_actions`.

use super::Admin;
use serde::Serialize;
use sqlx::Row;

/// Records one accepted action. `detail` says what it was about (a job id, a folder, a count).
pub async fn record(pool: &sqlx::PgPool, admin: &Admin, action: &str, detail: serde_json::Value) -> Result<(), sqlx::Error> {
    record_as(pool, &admin.user.name, admin.via.as_str(), action, detail).await
}

/// Records an action of `user` through `via` ("session", "token" or "cli").
pub async fn record_as(pool: &sqlx::PgPool, user: &str, via: &str, action: &str, detail: serde_json::Value) -> Result<(), sqlx::Error> {
    tracing::info!(user, via, action, %detail, "admin action");
    sqlx::query("INSERT INTO admin_actions (user_name, action, detail, via) VALUES ($1, $2, $3, $4)")
        .bind(user)
        .bind(action)
        .bind(detail)
        .bind(via)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub id: i64,
    pub user: String,
    pub action: String,
    pub detail: serde_json::Value,
    pub via: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl ActionRow {
    pub fn detail_text(&self) -> String {
        self.detail.to_string()
    }
    pub fn at_text(&self) -> String {
        self.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    }
}

/// The newest `limit` actions.
pub async fn list(pool: &sqlx::PgPool, limit: i64) -> Result<Vec<ActionRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, user_name, action, detail, via, at FROM admin_actions ORDER BY at DESC, id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| ActionRow { id: r.get(0), user: r.get(1), action: r.get(2), detail: r.get(3), via: r.get(4), at: r.get(5) })
        .collect())
}
