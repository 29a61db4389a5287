//! `mmtt bench store --s3 s3://BUCKET/PREFIX`: the local blob store against S3-compatible object
//! storage on the command's database (import faces first; run it on a scratch project: it
//! forges). Per store (the object store gets the local store's blobs first, by `store migrate`'s
//! copy):
//! - forging throughput: a forge job of `count` built-in forgeries worked by `workers` separate
//!   `mmtt worker --until-empty` processes (items/s, wall clock from enqueue to the last exit);
//! - the annotation page's image read (the image handler's `BlobStore::get`): p50/p99 over
//!   `reads` stored images, with a cold cache (a fresh cache folder) and then warm.

use crate::app::App;
use crate::storage::migrate;
use crate::storage::s3::StoreUrl;
use crate::storage::store::{self, BlobKey, SharedStore, StoreConfig};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Instant;

pub struct StoreBenchArgs {
    pub s3: String,
    pub count: usize,
    pub workers: usize,
    pub reads: usize,
    pub method: String,
    /// How the worker processes reach this project (the command's own global options).
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct StoreFigures {
    pub store: String,
    pub forged: usize,
    pub forge_seconds: f64,
    pub forgeries_per_s: f64,
    pub read_cold_p50_ms: f64,
    pub read_cold_p99_ms: f64,
    pub read_warm_p50_ms: f64,
    pub read_warm_p99_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct StoreBenchReport {
    pub workers: usize,
    pub method: String,
    pub copied_blobs: u64,
    pub stores: Vec<StoreFigures>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn mmtt(a: &StoreBenchArgs, store: &str) -> Result<std::process::Command> {
    let mut c = std::process::Command::new(std::env::current_exe().context("the mmtt binary")?);
    c.arg("--data-dir").arg(&a.data_dir).arg("--store").arg(store);
    if let Some(u) = &a.database_url {
        c.arg("--database-url").arg(u);
    }
    Ok(c)
}

/// Times `keys` read through `s`: milliseconds, sorted.
fn reads(s: &SharedStore, keys: &[BlobKey]) -> Result<Vec<f64>> {
    let mut t = Vec::with_capacity(keys.len());
    for k in keys {
        let t0 = Instant::now();
        s.get(k)?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t)
}

pub async fn run(app: &App, a: &StoreBenchArgs) -> Result<StoreBenchReport> {
    let url: StoreUrl = a.s3.parse().map_err(|e: String| anyhow::anyhow!("--s3: {e}"))?;
    if !matches!(url, StoreUrl::S3 { .. }) {
        bail!("--s3 {}: give the object store to compare with, as s3://BUCKET/PREFIX", a.s3);
    }
    if app.store.local_path(&BlobKey::of(b"")).is_none() {
        bail!("run the benchmark on the local store (without --store): it compares it with --s3");
    }
    let sources: i64 = sqlx::query_scalar("SELECT count(*) FROM sources").fetch_one(&app.pool).await?;
    if sources == 0 {
        bail!("no source faces: import some first (mmtt import photos --root DIR)");
    }
    let local_loc = app.store.location();
    let (dir, cfg) = (app.data_dir.clone(), StoreConfig { url: Some(url.clone()), ..StoreConfig::default() });
    let s3 = tokio::task::spawn_blocking(move || store::open(&dir, &cfg)).await??;
    let mut copied = 0;
    let mut out = Vec::new();
    for (i, store) in [local_loc.clone(), a.s3.clone()].into_iter().enumerate() {
        if i == 1 {
            // the object store gets every blob so far (the sources, the plans the first run made)
            let rows = migrate::rows(&app.pool).await?;
            let (from, to) = (app.store.clone(), s3.clone());
            copied = tokio::task::spawn_blocking(move || migrate::migrate(&rows, from.as_ref(), to.as_ref(), 8, &|| {})).await??.copied;
        }
        // forging with `workers` processes
        let t0 = Instant::now();
        let enq = mmtt(a, &store)?
            .args(["forge", "--method", &a.method, "--count", &a.count.to_string(), "--seed", &format!("{}", 9000 + i)])
            .output()?;
        if !enq.status.success() {
            bail!("enqueueing the forge job: {}", String::from_utf8_lossy(&enq.stderr));
        }
        let mut children = Vec::new();
        for w in 0..a.workers {
            children.push(
                mmtt(a, &store)?
                    .args(["worker", "--until-empty", "--name", &format!("bench-store-{i}-{w}")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        for mut c in children {
            let st = c.wait()?;
            if !st.success() {
                bail!("a worker failed ({st}) on {store}");
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        // reads: the latest forged images, cold (fresh cache) then warm
        let hashes: Vec<String> = sqlx::query_scalar("SELECT image_hash FROM forgeries ORDER BY created_at DESC LIMIT $1")
            .bind(a.reads as i64)
            .fetch_all(&app.pool)
            .await?;
        let keys: Vec<BlobKey> = hashes.iter().map(|h| h.parse()).collect::<Result<_, _>>()?;
        let cache = app.data_dir.join(format!(".bench-store-cache-{}", uuid::Uuid::new_v4().simple()));
        let cfg = StoreConfig {
            url: Some(if i == 0 { StoreUrl::Local(PathBuf::from(&local_loc)) } else { url.clone() }),
            ..StoreConfig::default()
        };
        let dir = cache.clone();
        let timed = tokio::task::spawn_blocking(move || -> Result<_> {
            let s = store::open(&dir, &cfg)?;
            Ok((reads(&s, &keys)?, reads(&s, &keys)?))
        })
        .await?;
        let _ = std::fs::remove_dir_all(&cache);
        let (cold, warm) = timed?;
        out.push(StoreFigures {
            store,
            forged: a.count,
            forge_seconds: secs,
            forgeries_per_s: a.count as f64 / secs,
            read_cold_p50_ms: pct(&cold, 50.0),
            read_cold_p99_ms: pct(&cold, 99.0),
            read_warm_p50_ms: pct(&warm, 50.0),
            read_warm_p99_ms: pct(&warm, 99.0),
        });
    }
    Ok(StoreBenchReport { workers: a.workers, method: a.method.clone(), copied_blobs: copied, stores: out })
}
