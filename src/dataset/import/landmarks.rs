//! `mmtt landmarks backfill`: gives stored sources that have no landmarks yet (CelebAMask-HQ
//! imported before landmarks were detected at import) their 68 points, so face swaps can use them.
//!
//! - The points are found exactly as the import finds them
//!   ([`aligned_face`](super::datasets::aligned_face) on the stored 512x512 image, which is the
//!   import's aligned image, stored losslessly), so a backfilled source has the landmarks it would
//!   have got at import.
//! - Only `sources.landmarks`, `face_box` and `detector` are written: part masks, splits and mask
//!   plans never depend on them for CelebAMask-HQ (its part masks are the annotated ones), so
//!   every existing plan stays what it was.
//! - Resumable: sources are taken in batches in id order; each source's outcome is one `UPDATE`
//!   (its own transaction) guarded by `landmarks IS NULL`, so a killed run keeps what it wrote and
//!   the next run goes on with the sources not searched yet; two concurrent runs write each
//!   source once.
//! - A face dlib cannot find is recorded too (`detector` set, `landmarks` NULL, as at import:
//!   [`LandmarkSearch`]), so running again does nothing; `--retry-no-face` searches those
//!   again (say, once the MMOD detector is installed).

use super::datasets::{Dataset, LandmarkSearch};
use crate::app::App;
use crate::storage::store::{BlobKey, BlobStore};
use anyhow::{Context, Result};
use mmtt_generators::FACE_SIZE;
use mmtt_generators::detect::FaceFinder;
use rayon::prelude::*;
use serde::Serialize;
use sqlx::Row;
use std::sync::Arc;

/// What `mmtt landmarks backfill` works on.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The datasets whose sources are searched (empty: all of [`Dataset::ALL`]).
    pub datasets: Vec<Dataset>,
    /// Search at most this many sources in this run.
    pub limit: Option<u64>,
    /// Sources read, searched and written per batch.
    pub batch: usize,
    /// Also search the sources where an earlier search found no face.
    pub retry_no_face: bool,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions { datasets: vec![], limit: None, batch: 256, retry_no_face: false, progress: true }
    }
}

/// What one backfill run did; printed as the last line with `--json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Sources searched by this run.
    pub searched: u64,
    /// Sources that got their landmarks in this run.
    pub found: u64,
    /// Sources searched by this run where no face was found (recorded, not searched again).
    pub no_face: u64,
    /// Sources whose image could not be read, with the reason (searched again next run).
    pub failed: Vec<String>,
    /// Sources never searched that are left after this run (beyond `--limit`).
    pub remaining: u64,
    /// Sources of these datasets that have landmarks after this run.
    pub with_landmarks: u64,
    /// Sources of these datasets without landmarks after this run (no face found, or not searched).
    pub without_landmarks: u64,
}

impl BackfillSummary {
    pub fn print_human(&self) {
        println!(
            "landmarks backfill: {} searched, {} found, {} without a face, {} failed, {} left to search; {} sources with landmarks, {} without",
            self.searched,
            self.found,
            self.no_face,
            self.failed.len(),
            self.remaining,
            self.with_landmarks,
            self.without_landmarks
        );
        for f in &self.failed {
            println!("  failed: {f}");
        }
    }
}

/// The outcome of one source's search, before it is written.
enum Searched {
    Done(uuid::Uuid, Box<LandmarkSearch>),
    Failed(String),
}

fn search_one(store: &dyn BlobStore, finder: &FaceFinder, id: uuid::Uuid, hash: &str) -> Searched {
    let read = || -> Result<image::RgbImage> {
        let key: BlobKey = hash.parse()?;
        let bytes = store.get(&key)?;
        let img = image::load_from_memory(&bytes).with_context(|| format!("image {hash} does not decode"))?.into_rgb8();
        if img.dimensions() != (FACE_SIZE, FACE_SIZE) {
            anyhow::bail!("image {hash} is {}x{}, expected {FACE_SIZE}x{FACE_SIZE}", img.width(), img.height());
        }
        Ok(img)
    };
    match read() {
        Ok(img) => Searched::Done(id, Box::new(LandmarkSearch::run(finder, &img))),
        Err(e) => Searched::Failed(format!("source {id}: {e:#}")),
    }
}

/// Searches the landmarks of every source of `opts.datasets` that has none and was not searched.
#[tracing::instrument(name = "landmarks_backfill", skip_all)]
pub async fn backfill(app: &App, opts: &BackfillOptions, finder: Option<Arc<FaceFinder>>) -> Result<BackfillSummary> {
    if opts.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let datasets: Vec<&str> =
        (if opts.datasets.is_empty() { Dataset::ALL.to_vec() } else { opts.datasets.clone() }).into_iter().map(Dataset::name).collect();
    let todo_total: i64 = sqlx::query_scalar(
        // the sources still to search: no landmarks, and never searched (or, retrying, no face found)
        "SELECT count(*) FROM sources WHERE landmarks IS NULL AND (detector IS NULL OR $2) AND dataset = ANY($1)",
    )
    .bind(&datasets)
    .bind(opts.retry_no_face)
    .fetch_one(&app.pool)
    .await?;
    let todo_total = opts.limit.map_or(todo_total as u64, |l| l.min(todo_total as u64));
    let mut summary = BackfillSummary::default();
    let finder = match finder {
        Some(f) => Some(f),
        None if todo_total == 0 => None,
        None => Some(Arc::new(FaceFinder::load()?)),
    };
    // keyset pagination: a source searched in this run (found or not) is never taken twice, even
    // when retrying those without a face
    let mut after = uuid::Uuid::nil();
    while let Some(finder) = &finder {
        let left = opts.limit.map_or(u64::MAX, |l| l.saturating_sub(summary.searched + summary.failed.len() as u64));
        if left == 0 {
            break;
        }
        let rows = sqlx::query(
            "SELECT id, image_hash FROM sources WHERE landmarks IS NULL AND (detector IS NULL OR $2) AND dataset = ANY($1) \
             AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(&datasets)
        .bind(opts.retry_no_face)
        .bind(after)
        .bind(left.min(opts.batch as u64) as i64)
        .fetch_all(&app.pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let batch: Vec<(uuid::Uuid, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let (store, finder) = (app.store.clone(), finder.clone());
        let results: Vec<Searched> = tokio::task::spawn_blocking(move || {
            batch.par_iter().map(|(id, hash)| search_one(store.as_ref(), &finder, *id, hash)).collect()
        })
        .await
        .context("the landmark search panicked")?;
        for r in results {
            match r {
                Searched::Failed(reason) => {
                    eprintln!("landmarks backfill: {reason}");
                    summary.failed.push(reason);
                }
                Searched::Done(id, search) => {
                    let found = search.found.as_ref();
                    let written =
                        sqlx::query("UPDATE sources SET landmarks = $2, face_box = $3, detector = $4 WHERE id = $1 AND landmarks IS NULL")
                            .bind(id)
                            .bind(found.map(|f| serde_json::to_value(&f.landmarks)).transpose()?)
                            .bind(found.map(|f| serde_json::to_value(f.face_box)).transpose()?)
                            .bind(search.detector())
                            .execute(&app.pool)
                            .await?
                            .rows_affected();
                    summary.searched += 1;
                    match (written, found) {
                        (0, _) => {} // another run wrote it meanwhile
                        (_, Some(_)) => summary.found += 1,
                        (_, None) => summary.no_face += 1,
                    }
                }
            }
        }
        if opts.progress {
            eprintln!(
                "landmarks backfill: {}/{todo_total} searched ({} found, {} without a face, {} failed)",
                summary.searched,
                summary.found,
                summary.no_face,
                summary.failed.len()
            );
        }
    }
    let counts = sqlx::query(
        "SELECT count(*) FILTER (WHERE landmarks IS NULL AND detector IS NULL), count(*) FILTER (WHERE landmarks IS NOT NULL), \
         count(*) FILTER (WHERE landmarks IS NULL) FROM sources WHERE dataset = ANY($1)",
    )
    .bind(&datasets)
    .fetch_one(&app.pool)
    .await?;
    summary.remaining = counts.get::<i64, _>(0) as u64;
    summary.with_landmarks = counts.get::<i64, _>(1) as u64;
    summary.without_landmarks = counts.get::<i64, _>(2) as u64;
    tracing::info!(
        searched = summary.searched,
        found = summary.found,
        no_face = summary.no_face,
        remaining = summary.remaining,
        "landmarks backfill finished"
    );
    Ok(summary)
}
