//! PostgreSQL access: connecting (a server URL or the private cluster), migrations, project settings.
//!
//! Migrations in `migrations/` are embedded and applied on every connect, so any `mmtt` command
//! works on a new database. All queries are runtime-checked `sqlx::query` calls (no build-time
//! database needed).

pub mod cluster;

use crate::storage::split::SplitRatios;
use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Default split seed of a new project. Any value is as good as another; this one puts the two
/// Debian sample faces of the demo in the same split, so the demo can show face swaps (donors never
/// cross splits). `mmtt project set-split` chooses another before the first import.
pub const DEFAULT_SPLIT_SEED: u64 = 20_251_129;

/// Connections per process unless `MMTT_DB_CONNECTIONS` says otherwise (1-256).
pub const DEFAULT_CONNECTIONS: u32 = 8;

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

fn max_connections() -> Result<u32> {
    match std::env::var("MMTT_DB_CONNECTIONS") {
        Err(_) => Ok(DEFAULT_CONNECTIONS),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n @ 1..=256) => Ok(n),
            _ => anyhow::bail!("MMTT_DB_CONNECTIONS={v} is not a number from 1 to 256: unset it for the default of {DEFAULT_CONNECTIONS}"),
        },
    }
}

/// Connects to `options`, applies migrations and makes sure the project settings exist.
pub async fn connect_with(options: PgConnectOptions) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections()?)
        .acquire_timeout(std::time::Duration::from_secs(15))
        // sqlx pings every idle connection it hands out (`test_before_acquire`): a second round
        // trip for each query, which under load doubled the database's wake-ups. A connection
        // in use within the last second is not pinged; one idle for longer still is, so a
        // server restart or a dropped link is still noticed before a query is sent.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .context("could not connect to PostgreSQL")?;
    MIGRATOR.run(&pool).await.context("could not apply the database migrations")?;
    ensure_settings(&pool, DEFAULT_SPLIT_SEED, SplitRatios::default()).await?;
    Ok(pool)
}

/// Connects to a server by URL (`postgres://user@host:port/db`).
pub async fn connect_url(url: &str) -> Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url)
        .with_context(|| format!("`{}` is not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE)", redact(url)))?;
    if plain_on_loopback(url, options.get_host(), std::env::var_os("PGSSLMODE").is_some()) {
        options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
    }
    connect_with(options).await.with_context(|| format!("database {}", redact(url)))
}

/// Whether to skip TLS: the URL names no `sslmode` (nor does `PGSSLMODE`) and the server is on
/// this machine (a loopback address or a socket folder). sqlx's default, like libpq's, is
/// `prefer`: it would encrypt every query to a local server that offers TLS, which protects
/// nothing on loopback and cost about 5 % of the CPU of a busy web app and its database on one
/// machine. `sslmode=require` (or any other mode) in the URL is always honoured.
fn plain_on_loopback(url: &str, host: &str, env_mode: bool) -> bool {
    let named = url.to_ascii_lowercase().contains("sslmode=");
    let local = host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !named && !env_mode && local
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The project's split settings, fixed when the project was created.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub split_seed: u64,
    pub split_ratios: SplitRatios,
}

async fn ensure_settings(pool: &PgPool, seed: u64, ratios: SplitRatios) -> Result<()> {
    let r = ratios.values().map(|v| v as i32);
    sqlx::query("INSERT INTO project_settings (id, split_seed, split_ratios) VALUES (true, $1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(seed as i64)
        .bind(&r[..])
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn settings(pool: &PgPool) -> Result<Settings> {
    let row = sqlx::query("SELECT split_seed, split_ratios FROM project_settings WHERE id").fetch_one(pool).await?;
    let seed: i64 = row.get(0);
    let r: Vec<i32> = row.get(1);
    let ratios = SplitRatios::new([r[0] as u32, r[1] as u32, r[2] as u32]).context("the stored split ratios are invalid")?;
    Ok(Settings { split_seed: seed as u64, split_ratios: ratios })
}

/// Sets the split seed and ratios. Allowed only while no source is stored, since splits never move.
pub async fn set_split(pool: &PgPool, seed: u64, ratios: SplitRatios) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE sources IN SHARE MODE").execute(&mut *tx).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sources").fetch_one(&mut *tx).await?;
    let current = sqlx::query("SELECT split_seed, split_ratios FROM project_settings WHERE id").fetch_one(&mut *tx).await?;
    let cur_seed: i64 = current.get(0);
    let cur_r: Vec<i32> = current.get(1);
    let r = ratios.values().map(|v| v as i32);
    if cur_seed == seed as i64 && cur_r == r {
        return Ok(());
    }
    if n > 0 {
        anyhow::bail!(
            "the project already stores {n} sources whose splits were drawn with seed {cur_seed} and ratios {}:{}:{}; \
             splits never change once stored. Use a new data directory/database for a different split seed \
             (exports can re-split with `--resplit`)",
            cur_r[0],
            cur_r[1],
            cur_r[2]
        );
    }
    sqlx::query("UPDATE project_settings SET split_seed = $1, split_ratios = $2 WHERE id")
        .bind(seed as i64)
        .bind(&r[..])
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a stored PNG blob (idempotent). Call after `BlobStore::put` returned, inside the
/// transaction that references the blob, so a row never exists without its file. The size is
/// read from the PNG header.
pub async fn record_blob(conn: &mut sqlx::PgConnection, key: &crate::storage::store::BlobKey, png: &[u8]) -> Result<()> {
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(png), image::ImageFormat::Png)
        .into_dimensions()
        .map(|(w, h)| (Some(w as i32), Some(h as i32)))
        .unwrap_or((None, None));
    sqlx::query(
        "INSERT INTO blobs (hash, media_type, byte_size, width, height) VALUES ($1, 'image/png', $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(key.as_str())
    .bind(png.len() as i64)
    .bind(w)
    .bind(h)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::plain_on_loopback;

    #[test]
    fn tls_is_skipped_only_for_a_local_server_whose_url_names_no_mode() {
        assert!(plain_on_loopback("postgres://u@127.0.0.1:5432/db", "127.0.0.1", false));
        assert!(plain_on_loopback("postgres://u@localhost/db", "localhost", false));
        assert!(plain_on_loopback("postgres://u@[::1]/db", "[::1]", false));
        assert!(plain_on_loopback("postgres://u@/db?host=/run/postgresql", "/run/postgresql", false));
        // a mode in the URL or the environment is honoured
        assert!(!plain_on_loopback("postgres://u@127.0.0.1/db?sslmode=require", "127.0.0.1", false));
        assert!(!plain_on_loopback("postgres://u@127.0.0.1/db?SSLMODE=verify-full", "127.0.0.1", false));
        assert!(!plain_on_loopback("postgres://u@127.0.0.1/db", "127.0.0.1", true));
        // another machine keeps sqlx's `prefer`
        assert!(!plain_on_loopback("postgres://u@10.0.0.5/db", "10.0.0.5", false));
        assert!(!plain_on_loopback("postgres://u@db.example.org/db", "db.example.org", false));
    }
}
