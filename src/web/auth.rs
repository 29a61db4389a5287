//! Accounts and sessions: argon2id password hashes, random session tokens stored hashed,
//! HttpOnly SameSite=Strict cookies, a CSRF token per session, login throttling.
//!
//! [`authenticate`] is the one place a request is signed in (the router's guard calls it for every
//! non-public route); another credential (a bearer token for scripts) plugs in there.

use super::{AppState, WebError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::fmt;
use std::str::FromStr;

pub const COOKIE: &str = "mmtt_session";
/// Sessions last this long.
pub const SESSION_HOURS: i64 = 12;
/// Failed logins allowed per name (and per address) in [`THROTTLE_MINUTES`].
pub const MAX_FAILURES: i64 = 5;
pub const THROTTLE_MINUTES: i64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Annotator,
    Reviewer,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Annotator => "annotator",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "annotator" => Ok(Role::Annotator),
            "reviewer" => Ok(Role::Reviewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{}`: use annotator, reviewer or admin",
                crate::dataset::annotation::excerpt(other, 20).escape_debug()
            )),
        }
    }
}

/// A user name: 1-64 of letters, digits, `_`, `.`, `-`. Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub const MAX_LEN: usize = 64;
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty() && s.len() <= Self::MAX_LEN && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if ok {
            Ok(UserName(s.to_string()))
        } else {
            Err(format!(
                "`{}` is not a user name: use 1-64 letters, digits, `_`, `.` or `-`",
                crate::dataset::annotation::excerpt(s, Self::MAX_LEN).escape_debug()
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A random token: 256 bits from the OS, hex.
pub fn random_token() -> String {
    let a = uuid::Uuid::new_v4().as_u128().to_le_bytes();
    let b = uuid::Uuid::new_v4().as_u128().to_le_bytes();
    let c = uuid::Uuid::new_v4().as_u128().to_le_bytes();
    hex::encode(Sha256::digest([a, b, c].concat()))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Passwords have at most this many bytes (a login with a longer one is refused unhashed).
pub const MAX_PASSWORD_BYTES: usize = 1_024;

/// Why a user was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error("the password is too short: use at least 8 characters")]
    PasswordTooShort,
    #[error("the password is too long or holds a NUL character: use at most {MAX_PASSWORD_BYTES} bytes of text")]
    PasswordUnusable,
    #[error("a user named `{0}` already exists")]
    Taken(String),
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AddUserError> for WebError {
    fn from(e: AddUserError) -> Self {
        match e {
            AddUserError::Hash(_) | AddUserError::Database(_) => WebError::Internal(e.to_string()),
            other => WebError::Unprocessable(other.to_string()),
        }
    }
}

/// Creates a user; returns its id. Refuses a taken name.
pub async fn add_user(pool: &sqlx::PgPool, name: &UserName, role: Role, password: &str) -> Result<uuid::Uuid, AddUserError> {
    if password.chars().count() < 8 {
        return Err(AddUserError::PasswordTooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES || password.contains('\0') {
        return Err(AddUserError::PasswordUnusable);
    }
    let id = uuid::Uuid::new_v4();
    let hash = hash_password(password).map_err(|e| AddUserError::Hash(e.to_string()))?;
    let r = sqlx::query("INSERT INTO users (id, name, role, password_hash) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(id)
        .bind(name.as_str())
        .bind(role.name())
        .bind(hash)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AddUserError::Taken(name.as_str().to_string()));
    }
    Ok(id)
}

/// Why a system account cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SystemAccountError {
    #[error(
        "a user named `{0}` exists that people sign in with (or with another role): it is reserved for the platform's own writes; rename that user (UPDATE users SET name = ... WHERE name = '{0}') and run again"
    )]
    Taken(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The id of the account `name` that no one signs in with (the author of imported, synthetic or
/// generated annotations), created disabled with the password hash `!marker` when missing: no
/// argon2 hash starts with `!`, so every password fails, and a disabled account gets neither a
/// session nor an API token. An existing user of that name must be such an account with `role`.
pub async fn system_account(pool: &sqlx::PgPool, name: &UserName, role: Role, marker: &str) -> Result<uuid::Uuid, SystemAccountError> {
    sqlx::query("INSERT INTO users (id, name, role, password_hash, disabled) VALUES ($1, $2, $3, $4, true) ON CONFLICT (name) DO NOTHING")
        .bind(uuid::Uuid::new_v4())
        .bind(name.as_str())
        .bind(role.name())
        .bind(format!("!{marker}"))
        .execute(pool)
        .await?;
    let (id, r, hash): (uuid::Uuid, String, String) =
        sqlx::query_as("SELECT id, role, password_hash FROM users WHERE name = $1").bind(name.as_str()).fetch_one(pool).await?;
    if r != role.name() || !hash.starts_with('!') {
        return Err(SystemAccountError::Taken(name.as_str().to_string()));
    }
    Ok(id)
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct User {
    pub id: uuid::Uuid,
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

impl User {
    /// Whether the user has `role` (admins have every role). Routes need not call it: the route
    /// table's access column is enforced by the router ([`super::guard`]).
    pub fn require(&self, role: Role) -> Result<(), WebError> {
        if self.role == Role::Admin || self.role == role { Ok(()) } else { Err(WebError::Forbidden) }
    }
    /// Checks the form's or header's CSRF token against the session's.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), WebError> {
        match token {
            Some(t) if constant_eq(t.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(WebError::Csrf),
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn cookie_token(parts: &Parts) -> Option<String> {
    let header = parts.headers.get(axum::http::header::COOKIE)?.to_str().ok()?;
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(COOKIE).and_then(|r| r.strip_prefix('='))).map(str::to_string)
}

/// Signed-in users by session-token hash, each kept for [`SessionCache::TTL`]: a page and its
/// scripts' calls cost no session query. Signing out in this process evicts at once; a session
/// deleted elsewhere (another server process, a disabled account) ends within the TTL.
#[derive(Debug, Default)]
pub struct SessionCache {
    map: std::sync::Mutex<std::collections::HashMap<String, (User, std::time::Instant)>>,
}

impl SessionCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);
    const MAX: usize = 50_000;

    fn get(&self, hash: &str) -> Option<User> {
        let map = self.map.lock().ok()?;
        map.get(hash).filter(|(_, at)| at.elapsed() < Self::TTL).map(|(u, _)| u.clone())
    }
    fn put(&self, hash: String, user: User) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= Self::MAX {
                map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            }
            map.insert(hash, (user, std::time::Instant::now()));
        }
    }
    pub fn evict(&self, hash: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(hash);
        }
    }
}

/// Signs a request in: the user of its session cookie, `None` without a valid one. The router's
/// guard calls this for every non-public route; it is the hook for other credentials (a bearer
/// token for scripts: look it up here, before or after the cookie, and return its user).
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Option<User>, WebError> {
    // scripts: `Authorization: Bearer TOKEN` (the admin console's API tokens)
    if let Some(u) = super::admin::tokens::bearer_user(&parts.headers, &state.pool).await? {
        return Ok(Some(u));
    }
    let Some(token) = cookie_token(parts) else { return Ok(None) };
    let hash = token_hash(&token);
    if let Some(u) = state.sessions.get(&hash) {
        return Ok(Some(u));
    }
    let Some(row) = sqlx::query(
        "SELECT u.id, u.name, u.role, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > now() AND NOT u.disabled",
    )
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?
    else {
        return Ok(None);
    };
    let user = User {
        id: row.get(0),
        name: row.get(1),
        role: row.get::<&str, _>(2).parse().map_err(|_| WebError::Internal("bad role in the database".into()))?,
        csrf: row.get(3),
    };
    state.sessions.put(hash, user.clone());
    Ok(Some(user))
}

/// The signed-in user, as the router's guard found it (or, on a route without one, signed in now).
impl FromRequestParts<AppState> for User {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(u) = parts.extensions.get::<User>() {
            return Ok(u.clone());
        }
        authenticate(state, parts).await?.ok_or(WebError::Unauthenticated)
    }
}

/// Outcome of a login attempt.
pub enum Login {
    Ok { token: String },
    Refused,
    Throttled,
}

/// Checks a name and password. Every failure is counted in `login_failures` (by name and by
/// address) and throttles; a name that cannot be a user name, or an over-long password, fails
/// before any lookup or hash (it is recorded cut to [`UserName::MAX_LEN`] characters).
pub async fn login(state: &AppState, name: &str, password: &str, ip: &str) -> Result<Login, WebError> {
    let valid = UserName::parse(name).is_ok() && password.len() <= MAX_PASSWORD_BYTES && !password.contains('\0');
    let name = crate::dataset::annotation::excerpt(name, UserName::MAX_LEN).replace('\0', "\u{fffd}");
    let name = name.as_str();
    let recent: i64 = sqlx::query_scalar(
        "SELECT greatest((SELECT count(*) FROM login_failures WHERE name = $1 AND at > now() - make_interval(mins => $3)), \
                         (SELECT count(*) FROM login_failures WHERE ip = $2 AND at > now() - make_interval(mins => $3)))",
    )
    .bind(name)
    .bind(ip)
    .bind(THROTTLE_MINUTES as i32)
    .fetch_one(&state.pool)
    .await?;
    if recent >= MAX_FAILURES {
        return Ok(Login::Throttled);
    }
    if !valid {
        sqlx::query("INSERT INTO login_failures (name, ip) VALUES ($1, $2)").bind(name).bind(ip).execute(&state.pool).await?;
        return Ok(Login::Refused);
    }
    let row =
        sqlx::query("SELECT id, password_hash FROM users WHERE name = $1 AND NOT disabled").bind(name).fetch_optional(&state.pool).await?;
    let hash_ok = match &row {
        Some(r) => {
            let h: String = r.get(1);
            let pw = password.to_string();
            tokio::task::spawn_blocking(move || verify_password(&pw, &h)).await.unwrap_or(false)
        }
        None => {
            // spend the same time as a real check, so names cannot be probed by timing
            let pw = password.to_string();
            let _ = tokio::task::spawn_blocking(move || hash_password(&pw)).await;
            false
        }
    };
    if !hash_ok {
        sqlx::query("INSERT INTO login_failures (name, ip) VALUES ($1, $2)").bind(name).bind(ip).execute(&state.pool).await?;
        return Ok(Login::Refused);
    }
    let user_id: uuid::Uuid = row.expect("checked").get(0);
    let token = random_token();
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, now() + make_interval(hours => $4))",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(random_token())
    .bind(SESSION_HOURS as i32)
    .execute(&state.pool)
    .await?;
    Ok(Login::Ok { token })
}

/// The session cookie; `Secure` when the server's public URL is https.
pub fn session_cookie(token: &str, secure: bool) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}", SESSION_HOURS * 3600, if secure { "; Secure" } else { "" })
}

pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}
