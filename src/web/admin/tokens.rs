//! API tokens for scripts (`mmtt user token NAME`): a random token printed once, stored as its
//! SHA-256 in `api_tokens` (the one writer of that table). A request with
//! `Authorization: Bearer TOKEN` acts as the token's user; it needs no CSRF token.

use super::super::WebError;
use super::super::auth::{Role, User, UserName, random_token, token_hash};
use axum::http::{HeaderMap, header};
use sqlx::Row;

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))?.trim();
    Some(t)
}

/// Errors of token creation.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no user named `{0}`: add one with `mmtt user add NAME --role admin`")]
    NoUser(String),
    #[error("`{0}` is a {1}: tokens are for admins (the JSON routes are the admin console's)")]
    NotAdmin(String, Role),
    #[error("label too long: use at most 200 characters")]
    Label,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates a token for the admin `name`; returns the token (only its hash is stored).
pub async fn create(pool: &sqlx::PgPool, name: &UserName, label: &str) -> Result<String, TokenError> {
    if label.chars().count() > 200 {
        return Err(TokenError::Label);
    }
    let row = sqlx::query("SELECT id, role FROM users WHERE name = $1 AND NOT disabled")
        .bind(name.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| TokenError::NoUser(name.as_str().to_string()))?;
    let role: Role = row.get::<&str, _>(1).parse().map_err(|e: String| TokenError::Db(sqlx::Error::Protocol(e)))?;
    if role != Role::Admin {
        return Err(TokenError::NotAdmin(name.as_str().to_string(), role));
    }
    let token = format!("mmtt_{}", random_token());
    sqlx::query("INSERT INTO api_tokens (token_hash, user_id, label) VALUES ($1, $2, $3)")
        .bind(token_hash(&token))
        .bind(row.get::<uuid::Uuid, _>(0))
        .bind(label)
        .execute(pool)
        .await?;
    Ok(token)
}

/// The user a bearer token acts as: `None` without an `Authorization` header, an error for a
/// token that is unknown, revoked, or whose user is disabled.
pub async fn bearer_user(headers: &HeaderMap, pool: &sqlx::PgPool) -> Result<Option<User>, WebError> {
    let Some(token) = bearer(headers) else { return Ok(None) };
    if token.is_empty() || token.len() > 200 {
        return Err(WebError::Unauthenticated);
    }
    let row = sqlx::query(
        "UPDATE api_tokens t SET last_used_at = now() FROM users u \
         WHERE t.token_hash = $1 AND NOT t.revoked AND u.id = t.user_id AND NOT u.disabled \
         RETURNING u.id, u.name, u.role",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?
    .ok_or(WebError::Unauthenticated)?;
    Ok(Some(User {
        id: row.get(0),
        name: row.get(1),
        role: row.get::<&str, _>(2).parse().map_err(|_| WebError::Internal("bad role in the database".into()))?,
        // never compared: bearer requests skip the CSRF check; random so no form can match it
        csrf: random_token(),
    }))
}
