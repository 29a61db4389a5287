//! `mmtt import`: turns a folder of faces into stored sources with their part masks.
//!
//! Flow: [`datasets::discover`] lists the inputs in a stable order; inputs already stored (by
//! `(dataset, original_id)`) are counted as present and not read again, which is also how an
//! interrupted import resumes; the rest are decoded, aligned and cut into part masks on all cores
//! (rayon), and a single writer stores each input's blobs, then its rows in one transaction, so a
//! crash leaves every input either fully stored or absent. Bad inputs are reported by path with a
//! reason and skipped. [`landmarks`] gives sources stored without landmarks (CelebAMask-HQ
//! imported before landmarks were detected) theirs, resumably.

pub mod datasets;
pub mod decode;
pub mod landmarks;
pub mod release;

use crate::app::App;
use crate::storage::split;
use anyhow::{Context, Result};
use datasets::{Candidate, Dataset, FaceRecord, Outcome};
use decode::DecodeLimits;
use indicatif::{ProgressBar, ProgressStyle};
use mmtt_generators::detect::FaceFinder;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

/// What one import did; printed as the last line with `--json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Input files stored by this run.
    pub imported: u64,
    /// Faces (sources) stored by this run.
    pub faces: u64,
    /// Input files that were already stored.
    pub already_present: u64,
    /// Faces stored by this run without landmarks (CelebAMask-HQ images where dlib found no face:
    /// imported with their annotated part masks, but no face swap can use them).
    pub without_landmarks: u64,
    pub skipped: Vec<Skip>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skip {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dataset: Dataset,
    /// The folder to read, or explicit files (photos only; the demo uses this).
    pub root: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    pub limit: Option<usize>,
    pub limits: DecodeLimits,
    pub progress: bool,
}

pub async fn run(app: &App, opts: ImportOptions, finder: Option<Arc<FaceFinder>>) -> Result<Summary> {
    let bar = if opts.progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    run_with(app, opts, finder, bar, None).await
}

/// [`run`] reporting progress on `bar` (inputs done of inputs to read: its position and length
/// are what the job system reads), with the run recorded under `run_id` (the job's id) when given.
/// Dropping the future stops the decoding workers at their next input.
#[tracing::instrument(name = "import", skip_all, fields(dataset = opts.dataset.name(), root = ?opts.root))]
pub async fn run_with(
    app: &App,
    opts: ImportOptions,
    finder: Option<Arc<FaceFinder>>,
    bar: ProgressBar,
    run_id: Option<uuid::Uuid>,
) -> Result<Summary> {
    let dataset = opts.dataset;
    let mut summary = Summary::default();
    let (mut cands, others) = match &opts.root {
        Some(root) => datasets::discover(dataset, root)?,
        None => (opts.files.iter().map(|p| Candidate { original_id: String::new(), path: p.clone() }).collect(), vec![]),
    };
    for (p, reason) in others {
        summary.skipped.push(Skip { path: p.display().to_string(), reason });
    }
    if let Some(n) = opts.limit {
        cands.truncate(n);
    }
    if dataset == Dataset::Photos {
        // the id of a photo is its content hash: read each file once to get it
        let hashed: Vec<std::result::Result<Candidate, Skip>> = cands
            .into_par_iter()
            .map(|mut c| match std::fs::read(&c.path) {
                Ok(b) => {
                    c.original_id = datasets::photo_id(&b);
                    Ok(c)
                }
                Err(e) => Err(Skip { path: c.path.display().to_string(), reason: format!("cannot read the file: {e}") }),
            })
            .collect();
        cands = Vec::new();
        let mut seen = HashSet::new();
        for h in hashed {
            match h {
                Ok(c) if seen.insert(c.original_id.clone()) => cands.push(c),
                Ok(c) => summary.skipped.push(Skip {
                    path: c.path.display().to_string(),
                    reason: "duplicate: the same photo appears earlier in this import".into(),
                }),
                Err(s) => summary.skipped.push(s),
            }
        }
    }

    let run_id = run_id.unwrap_or_else(uuid::Uuid::new_v4);
    let root_text = opts.root.as_ref().map(|r| r.display().to_string()).unwrap_or_else(|| "(files)".into());
    sqlx::query(
        "INSERT INTO import_runs (id, dataset, root, status) VALUES ($1, $2, $3, 'running') \
         ON CONFLICT (id) DO UPDATE SET status = 'running', finished_at = NULL",
    )
    .bind(run_id)
    .bind(dataset.name())
    .bind(&root_text)
    .execute(&app.pool)
    .await?;

    let present: HashSet<String> = sqlx::query_scalar("SELECT DISTINCT original_id FROM sources WHERE dataset = $1")
        .bind(dataset.name())
        .fetch_all(&app.pool)
        .await?
        .into_iter()
        .collect();
    let before = cands.len();
    cands.retain(|c| !present.contains(&c.original_id));
    summary.already_present = (before - cands.len()) as u64;

    // every dataset needs dlib (CelebAMask-HQ for the landmarks of face swaps); not loaded when
    // everything is already stored
    let finder = match finder {
        Some(f) => Some(f),
        None if cands.is_empty() => None,
        None => Some(Arc::new(FaceFinder::load()?)),
    };
    bar.set_length(cands.len() as u64 + summary.already_present);
    bar.set_position(summary.already_present);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("import {}", dataset.name()));

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Outcome>(16);
    let limits = opts.limits;
    let worker = tokio::task::spawn_blocking(move || {
        cands.into_par_iter().for_each_with(tx, |tx, c| {
            // the import was stopped (cancelled, paused): leave the rest
            if tx.is_closed() {
                return;
            }
            let out = datasets::process(dataset, c, finder.as_deref(), limits);
            let _ = tx.blocking_send(out);
        });
    });
    let settings = crate::storage::db::settings(&app.pool).await?;
    let result: Result<()> = async {
        while let Some(out) = rx.recv().await {
            match out {
                Outcome::Skipped { path, reason } => {
                    bar.println(format!("skipped {}: {reason}", path.display()));
                    summary.skipped.push(Skip { path: path.display().to_string(), reason });
                }
                Outcome::Faces { cand, original_size, faces } => {
                    let stored = store_item(app, dataset, &cand, original_size, &faces, run_id, settings).await?;
                    if stored {
                        summary.imported += 1;
                        summary.faces += faces.len() as u64;
                        if faces.iter().any(|f| f.landmarks.is_none()) {
                            // CelebAMask-HQ only: the other datasets skip a face without landmarks
                            bar.println(format!(
                                "no face found in {}: imported without landmarks (its part masks are the annotated ones; it takes no part in face swaps)",
                                cand.path.display()
                            ));
                            summary.without_landmarks += faces.iter().filter(|f| f.landmarks.is_none()).count() as u64;
                        }
                    } else {
                        summary.already_present += 1;
                    }
                }
            }
            bar.inc(1);
        }
        Ok(())
    }
    .await;
    drop(rx);
    worker.await.context("import worker panicked")?;
    bar.finish_and_clear();
    let status = if result.is_ok() { "finished" } else { "failed" };
    sqlx::query(
        "UPDATE import_runs SET status = $2, imported = $3, faces = $4, already_present = $5, skipped = $6, finished_at = now() WHERE id = $1",
    )
    .bind(run_id)
    .bind(status)
    .bind(summary.imported as i32)
    .bind(summary.faces as i32)
    .bind(summary.already_present as i32)
    .bind(serde_json::to_value(&summary.skipped)?)
    .execute(&app.pool)
    .await?;
    result?;
    tracing::info!(
        imported = summary.imported,
        faces = summary.faces,
        already_present = summary.already_present,
        skipped = summary.skipped.len(),
        "import finished"
    );
    Ok(summary)
}

/// Stores one input's faces: files first, then all rows in one transaction. Returns false when
/// another import stored it meanwhile.
async fn store_item(
    app: &App,
    dataset: Dataset,
    cand: &Candidate,
    original_size: (u32, u32),
    faces: &[FaceRecord],
    run_id: uuid::Uuid,
    settings: crate::storage::db::Settings,
) -> Result<bool> {
    let store = app.store.clone();
    let mut keys = Vec::new();
    for f in faces {
        let img = store.put(&f.image_png)?;
        let parts: Vec<_> = f.parts.iter().map(|(_, png, _, _)| store.put(png)).collect::<Result<_, _>>()?;
        keys.push((img, parts));
    }
    let mut tx = app.pool.begin().await?;
    for (f, (img_key, part_keys)) in faces.iter().zip(&keys) {
        crate::storage::db::record_blob(&mut tx, img_key, &f.image_png).await?;
        let split_key = img_key.as_str().to_string();
        let split = split::assign(settings.split_seed, settings.split_ratios, &split_key);
        let parts: Vec<String> = f.parts.iter().map(|(p, ..)| p.name().to_string()).collect();
        let id = uuid::Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO sources (id, dataset, original_id, face_index, original_path, original_width, original_height, \
             image_hash, width, height, landmarks, face_box, detector, part_source, parts, split, split_key, import_run_id) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18) \
             ON CONFLICT (dataset, original_id, face_index) DO NOTHING",
        )
        .bind(id)
        .bind(dataset.name())
        .bind(&cand.original_id)
        .bind(f.face_index)
        .bind(cand.path.display().to_string())
        .bind(original_size.0 as i32)
        .bind(original_size.1 as i32)
        .bind(img_key.as_str())
        .bind(mmtt_generators::FACE_SIZE as i32)
        .bind(mmtt_generators::FACE_SIZE as i32)
        .bind(f.landmarks.as_ref().map(serde_json::to_value).transpose()?)
        .bind(f.face_box.as_ref().map(serde_json::to_value).transpose()?)
        .bind(f.detector)
        .bind(match dataset.part_source() {
            mmtt_generators::plan::PartSource::Annotated => "annotated",
            mmtt_generators::plan::PartSource::Landmarks => "landmarks",
        })
        .bind(&parts)
        .bind(split.name())
        .bind(&split_key)
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for ((part, png, pixels, origin), key) in f.parts.iter().zip(part_keys) {
            crate::storage::db::record_blob(&mut tx, key, png).await?;
            sqlx::query("INSERT INTO source_parts (source_id, part, mask_hash, pixels, origin) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(part.name())
                .bind(key.as_str())
                .bind(*pixels as i32)
                .bind(origin)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

impl Summary {
    /// The human summary (the JSON line is printed separately).
    pub fn print_human(&self, dataset: Dataset) {
        println!(
            "import {}: {} imported ({} faces), {} already present, {} skipped",
            dataset.name(),
            self.imported,
            self.faces,
            self.already_present,
            self.skipped.len()
        );
        if self.without_landmarks > 0 {
            println!(
                "  {} face(s) imported without landmarks (no face found by dlib): usable for inpainting, not for face swaps",
                self.without_landmarks
            );
        }
        for s in &self.skipped {
            println!("  skipped {}: {}", s.path, s.reason);
        }
    }
}
