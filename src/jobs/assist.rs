//! `assist` jobs: a registered model's suggestions computed ahead of the annotators (never on the
//! request path). The model (stage 2 with its FPN) is loaded once; the forged images of forgeries
//! without a suggestion of that model are explained in batches with the FPN's regions, and each
//! forgery gets its caption, its regions (the FPN words with p > 0.5 that filled the
//! instruction) and its predicted mask (a binary PNG at the forgery's size, in the blob store),
//! the blobs and rows of a batch in one transaction.
//!
//! Which forgeries: those whose annotation task is not yet submitted or accepted (what annotators
//! will open), or every forgery with `include_annotated` (the review checks and the dashboard
//! compare annotations with the model's regions). In forgery-id order, so a resumed, retried or
//! taken-over job continues where it stopped: done forgeries have their row. Pause and cancel
//! stop between batches (the runner sets the [`super::train::Live`] stop flag).

use super::{JobError, SpecError};
use crate::app::App;
use crate::storage::store::BlobKey;
use crate::storage::tables::assist::{self, Suggestion};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use mmtt_model::talker::{ExplainOptions, Explainer, GenerationConfig, Prompting};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::path::PathBuf;
use uuid::Uuid;

fn default_device() -> String {
    "cpu".into()
}
fn default_batch() -> usize {
    4
}
fn default_beams() -> usize {
    GenerationConfig::release().num_beams
}
fn default_new_tokens() -> usize {
    GenerationConfig::release().max_new_tokens
}

/// An `assist` job's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistSpec {
    /// The registered model (`assist_models.id`).
    pub model: Uuid,
    /// Its checkpoint and FPN, as registered (checked before the job is queued).
    pub checkpoint: PathBuf,
    #[serde(default)]
    pub fpn: Option<PathBuf>,
    /// Also forgeries whose annotation is submitted or accepted.
    #[serde(default)]
    pub include_annotated: bool,
    /// At most this many forgeries (in id order).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_beams")]
    pub num_beams: usize,
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
}

impl AssistSpec {
    pub fn new(model: Uuid, checkpoint: PathBuf, fpn: Option<PathBuf>) -> Self {
        AssistSpec {
            model,
            checkpoint,
            fpn,
            include_annotated: false,
            limit: None,
            device: default_device(),
            batch_size: default_batch(),
            num_beams: default_beams(),
            max_new_tokens: default_new_tokens(),
        }
    }

    pub fn generation(&self) -> GenerationConfig {
        GenerationConfig { num_beams: self.num_beams, max_new_tokens: self.max_new_tokens, ..GenerationConfig::release() }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        use mmtt_model::talker::RegionSource;
        crate::predict::check_inputs(&self.checkpoint, self.fpn.as_deref(), &[RegionSource::Fpn]).map_err(|(field, m)| {
            SpecError::new(
                if field == "regions" { "fpn" } else { field },
                format!("{m} (suggestions name the regions the FPN finds, so the model needs its FPN)"),
            )
        })?;
        mmtt_model::fpn::parse_device(&self.device)
            .map_err(|e| SpecError::new("device", format!("{e} (cuda needs a build with the `cuda` feature)")))?;
        crate::explain::check_generation(&self.generation(), crate::explain::GenerationLimits::CLI, |f| f.to_string())
            .map_err(|(field, m)| SpecError::new(field, m))?;
        if self.batch_size == 0 {
            return Err(SpecError::new("batch_size", "must be at least 1 (images per forward pass)"));
        }
        if self.limit == Some(0) {
            return Err(SpecError::new("limit", "must be at least 1, or absent for every forgery"));
        }
        Ok(())
    }
}

/// What an `assist` job did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistSummary {
    pub model: Uuid,
    /// Suggestions stored by this run (earlier runs' are not counted).
    pub stored: usize,
    /// Forgeries that needed one when the run started.
    pub wanted: usize,
    pub seconds: f64,
}

/// Forgeries still without a suggestion of `model`, in id order: (id, forged image hash).
async fn todo(pool: &sqlx::PgPool, spec: &AssistSpec) -> Result<Vec<(Uuid, String)>, JobError> {
    let rows = sqlx::query(
        "SELECT f.id, f.image_hash FROM forgeries f JOIN annotation_tasks t ON t.forgery_id = f.id \
         WHERE ($2 OR t.status NOT IN ('submitted', 'accepted')) \
           AND NOT EXISTS (SELECT 1 FROM suggestions s WHERE s.forgery_id = f.id AND s.model_id = $1) \
         ORDER BY f.id LIMIT $3",
    )
    .bind(spec.model)
    .bind(spec.include_annotated)
    .bind(spec.limit.map_or(i64::MAX, |l| l as i64))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// See the module documentation.
pub async fn run(
    app: &App,
    job: Uuid,
    spec: &AssistSpec,
    bar: ProgressBar,
    live: &super::train::Live,
    worker: &str,
) -> Result<AssistSummary> {
    let t0 = std::time::Instant::now();
    let pool = app.pool.clone();
    let Some(model) = assist::model(&pool, spec.model).await? else {
        bail!("the model {} is no longer registered: register it again on the Assist page", spec.model);
    };
    let items = todo(&pool, spec).await?;
    let wanted = items.len();
    bar.set_length(wanted as u64);
    super::event(
        &pool,
        job,
        "info",
        Some(worker),
        &format!(
            "{wanted} forgeries need a suggestion of model `{}` ({}); {} beams, at most {} new tokens, on {}",
            model.name,
            spec.checkpoint.display(),
            spec.num_beams,
            spec.max_new_tokens,
            spec.device
        ),
    )
    .await?;
    if wanted == 0 {
        return Ok(AssistSummary { model: spec.model, stored: 0, wanted, seconds: t0.elapsed().as_secs_f64() });
    }
    let (spec2, store, live2, bar2, pool2) = (spec.clone(), app.store.clone(), live.clone(), bar.clone(), pool.clone());
    let handle = tokio::runtime::Handle::current();
    let stored = tokio::task::spawn_blocking(move || -> Result<Option<usize>> {
        let device = mmtt_model::fpn::parse_device(&spec2.device).map_err(|e| anyhow!("{e}"))?;
        let ex = Explainer::load(&spec2.checkpoint, spec2.fpn.as_deref(), &device)
            .with_context(|| format!("loading the model {}", spec2.checkpoint.display()))?;
        if !ex.has_fpn() {
            bail!("{} has no FPN: register the model with its FPN checkpoint", spec2.checkpoint.display());
        }
        let opts = ExplainOptions { prompting: Prompting::Fpn, generation: spec2.generation() };
        let mut stored = 0;
        for chunk in items.chunks(spec2.batch_size) {
            if live2.stopping() {
                return Ok(None);
            }
            let mut images = Vec::with_capacity(chunk.len());
            for (id, hash) in chunk {
                let key: BlobKey = hash.parse().map_err(|_| anyhow!("forgery {id}: bad blob key `{hash}` in the database"))?;
                let bytes = store.get(&key).with_context(|| format!("forgery {id}: reading its image"))?;
                images.push(image::load_from_memory(&bytes).with_context(|| format!("forgery {id}: decoding its image"))?.to_rgb8());
            }
            let out = ex.explain(&images, &opts)?;
            let mut rows = Vec::with_capacity(chunk.len());
            for ((id, _), (img, e)) in chunk.iter().zip(images.iter().zip(out)) {
                let mask = match &e.mask {
                    Some(m) => {
                        let plane = m.binary_resized(img.width(), img.height());
                        let mut png = Vec::new();
                        plane
                            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                            .map_err(|err| anyhow!("encoding the mask of {id}: {err}"))?;
                        let key = store.put(&png)?;
                        Some((key, png))
                    }
                    None => None,
                };
                rows.push((
                    *id,
                    Suggestion { text: e.text, regions: e.regions, mask_hash: mask.as_ref().map(|(k, _)| k.as_str().to_string()) },
                    mask,
                ));
            }
            let pool = pool2.clone();
            let model = spec2.model;
            let n = handle.block_on(async move {
                let mut tx = pool.begin().await?;
                let mut n = 0;
                for (id, s, mask) in &rows {
                    if let Some((key, png)) = mask {
                        crate::storage::db::record_blob(&mut tx, key, png).await?;
                    }
                    n += usize::from(assist::insert_suggestion(&mut tx, *id, model, s, Some(job)).await?);
                }
                tx.commit().await?;
                anyhow::Ok(n)
            })?;
            stored += n;
            bar2.inc(chunk.len() as u64);
        }
        Ok(Some(stored))
    })
    .await
    .map_err(|e| anyhow!("the suggestions stopped unexpectedly (panic): {e}"))??;
    let Some(stored) = stored else {
        bail!("stopped on request between batches: resuming the job continues with the forgeries still without a suggestion");
    };
    super::event(&pool, job, "info", Some(worker), &format!("stored {stored} suggestions of model `{}`", model.name)).await?;
    Ok(AssistSummary { model: spec.model, stored, wanted, seconds: t0.elapsed().as_secs_f64() })
}

/// Forgeries with and without a suggestion of `model` among the tasks annotators will open, and
/// how many of those are held out: (with, without, held out).
pub async fn coverage(pool: &sqlx::PgPool, model: Uuid, seed: i64, holdout: f64) -> Result<(i64, i64, i64), JobError> {
    let rows = sqlx::query(
        "SELECT t.forgery_id, EXISTS (SELECT 1 FROM suggestions s WHERE s.forgery_id = t.forgery_id AND s.model_id = $1) \
         FROM annotation_tasks t WHERE t.status NOT IN ('submitted', 'accepted')",
    )
    .bind(model)
    .fetch_all(pool)
    .await?;
    let (mut with, mut without, mut held) = (0, 0, 0);
    for r in &rows {
        let id: Uuid = r.get(0);
        if r.get::<bool, _>(1) {
            with += 1;
        } else {
            without += 1;
        }
        held += i64::from(crate::dataset::assist::in_holdout(id, seed, holdout));
    }
    Ok((with, without, held))
}
