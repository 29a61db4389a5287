//! `mmtt masks`: planning forgery masks for stored sources, their statistics, and previews.
//!
//! Plans follow `mmtt_generators::plan` (rule version stored with each plan). Every source gets,
//! per plan seed, one inpainting mask and one face-swap mask, rasterised from its stored part
//! masks and stored as 0/255 PNG blobs. `(source, purpose, seed, rule_version)` is unique, so
//! planning twice with the same seed adds nothing, and an interrupted run resumes.

use crate::app::App;
use crate::storage::store::{BlobKey, BlobStore};
use anyhow::{Context, Result, anyhow, bail};
use image::{GrayImage, Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use mmtt_generators::FACE_SIZE;
use mmtt_generators::geometry::{count_set, dilate, empty_mask, union_into};
use mmtt_generators::landmarks::Landmarks68;
use mmtt_generators::mask::{decode_mask_png, encode_mask_png, encode_rgb_png};
use mmtt_generators::parts::Part;
use mmtt_generators::plan::{self, MASK_RULES_VERSION, MaskKind, PartSource, PlanStats, PlannedMask, Purpose};
use rayon::prelude::*;
use serde::Serialize;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanSummary {
    /// Sources that got their masks planned by this run.
    pub planned: u64,
    /// Sources that already had plans for this seed and rule version.
    pub already_planned: u64,
    /// Sources without any facial part (nothing to plan), with the reason.
    pub unplannable: Vec<String>,
}

struct Todo {
    id: uuid::Uuid,
    key: String,
    part_source: PartSource,
    parts: Vec<(Part, BlobKey)>,
}

struct Planned {
    id: uuid::Uuid,
    masks: Vec<(Purpose, PlannedMask, u64, Vec<u8>, u64)>, // purpose, plan, item seed, png, pixels
}

fn parse_part_source(s: &str) -> Result<PartSource> {
    match s {
        "annotated" => Ok(PartSource::Annotated),
        "landmarks" => Ok(PartSource::Landmarks),
        other => bail!("unknown part source {other} in the database"),
    }
}

/// Merges the given parts' stored masks.
fn merge(store: &dyn BlobStore, parts: &[(Part, BlobKey)], want: &[Part]) -> Result<GrayImage> {
    let mut out = empty_mask(FACE_SIZE, FACE_SIZE);
    for (p, key) in parts {
        if want.contains(p) {
            let m = decode_mask_png(&store.get(key)?, FACE_SIZE).with_context(|| format!("part mask {p} ({key})"))?;
            union_into(&mut out, &m);
        }
    }
    Ok(out)
}

fn rasterise(store: &dyn BlobStore, t: &Todo, seed: u64) -> Result<Planned> {
    let available: Vec<Part> = t.parts.iter().map(|(p, _)| *p).collect();
    let mut masks = Vec::new();
    let s_in = plan::item_seed(seed, &t.key, Purpose::Inpaint);
    if let Some(m) = plan::plan_inpaint(t.part_source, &available, s_in) {
        let raster = merge(store, &t.parts, &m.parts)?;
        let n = count_set(&raster);
        masks.push((Purpose::Inpaint, m, s_in, encode_mask_png(&raster)?, n));
    }
    if let Some(m) = plan::plan_swap(&available) {
        let raster = dilate(&merge(store, &t.parts, &m.parts)?, plan::SWAP_DILATION_FRACTION * FACE_SIZE as f64);
        let n = count_set(&raster);
        masks.push((Purpose::Swap, m, plan::item_seed(seed, &t.key, Purpose::Swap), encode_mask_png(&raster)?, n));
    }
    Ok(Planned { id: t.id, masks })
}

/// Plans the masks of every source that has none for `seed` yet.
#[tracing::instrument(name = "masks_plan", skip(app, progress))]
pub async fn plan_all(app: &App, seed: u64, dataset: Option<&str>, progress: bool) -> Result<PlanSummary> {
    plan_all_with(app, seed, dataset, if progress { ProgressBar::new(0) } else { ProgressBar::hidden() }).await
}

/// [`plan_all`] reporting progress on `bar` (sources done of sources to plan). Dropping the future
/// stops it after the current chunk of 256 sources (each chunk's plans are stored whole).
pub async fn plan_all_with(app: &App, seed: u64, dataset: Option<&str>, bar: ProgressBar) -> Result<PlanSummary> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sources WHERE ($1::text IS NULL OR dataset = $1)")
        .bind(dataset)
        .fetch_one(&app.pool)
        .await?;
    let rows = sqlx::query(
        "SELECT s.id, s.split_key, s.part_source FROM sources s \
         WHERE ($3::text IS NULL OR s.dataset = $3) AND NOT EXISTS (SELECT 1 FROM mask_plans p WHERE p.source_id = s.id \
         AND p.seed = $1 AND p.rule_version = $2) ORDER BY s.created_at, s.id",
    )
    .bind(seed as i64)
    .bind(MASK_RULES_VERSION)
    .bind(dataset)
    .fetch_all(&app.pool)
    .await?;
    let mut summary = PlanSummary { already_planned: total as u64 - rows.len() as u64, ..Default::default() };
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let part_rows = sqlx::query("SELECT source_id, part, mask_hash FROM source_parts WHERE source_id = ANY($1)")
        .bind(&ids)
        .fetch_all(&app.pool)
        .await?;
    let mut parts: HashMap<uuid::Uuid, Vec<(Part, BlobKey)>> = HashMap::new();
    for r in part_rows {
        let part: String = r.get(1);
        let hash: String = r.get(2);
        parts.entry(r.get(0)).or_default().push((part.parse()?, hash.parse()?));
    }
    let mut todo = Vec::new();
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        let mut p = parts.remove(&id).unwrap_or_default();
        p.sort();
        todo.push(Todo { id, key: r.get(1), part_source: parse_part_source(r.get::<&str, _>(2))?, parts: p });
    }
    bar.set_length(todo.len() as u64);
    bar.set_style(ProgressStyle::with_template("plan masks [{bar:30}] {pos}/{len} eta {eta}").expect("static").progress_chars("=> "));
    for chunk in todo.chunks(256) {
        let store = app.store.clone();
        let planned: Vec<Result<Planned>> = {
            let chunk: Vec<&Todo> = chunk.iter().collect();
            tokio::task::block_in_place(|| chunk.par_iter().map(|t| rasterise(store.as_ref(), t, seed)).collect())
        };
        for p in planned {
            let p = p?;
            if p.masks.iter().all(|(purpose, ..)| *purpose != Purpose::Inpaint) {
                summary.unplannable.push(format!("source {}: no facial part present", p.id));
            }
            if p.masks.is_empty() {
                bar.inc(1);
                continue;
            }
            let mut tx = app.pool.begin().await?;
            for (purpose, m, item_seed, png, pixels) in &p.masks {
                let key = app.store.put(png)?;
                crate::storage::db::record_blob(&mut tx, &key, png.as_slice()).await?;
                let names: Vec<&str> = m.parts.iter().map(|p| p.name()).collect();
                sqlx::query(
                    "INSERT INTO mask_plans (id, source_id, purpose, kind, parts, k_drawn, seed, item_seed, rule_version, mask_hash, pixels) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (source_id, purpose, seed, rule_version) DO NOTHING",
                )
                .bind(uuid::Uuid::new_v4())
                .bind(p.id)
                .bind(purpose.name())
                .bind(m.kind.name())
                .bind(&names)
                .bind(m.k_drawn as i16)
                .bind(seed as i64)
                .bind(*item_seed as i64)
                .bind(MASK_RULES_VERSION)
                .bind(key.as_str())
                .bind(*pixels as i32)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            summary.planned += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Distribution of the stored inpainting plans, overall and per dataset.
#[derive(Debug, Clone, Serialize)]
pub struct StoredStats {
    #[serde(flatten)]
    pub all: PlanStats,
    pub by_dataset: BTreeMap<String, PlanStats>,
}

fn parse_kind(s: &str) -> Result<MaskKind> {
    Ok(match s {
        "parts" => MaskKind::Parts,
        "full_face" => MaskKind::FullFace,
        "swap" => MaskKind::Swap,
        other => bail!("unknown mask kind {other} in the database"),
    })
}

pub async fn stats(app: &App, seed: Option<u64>) -> Result<StoredStats> {
    let rows = sqlx::query(
        "SELECT s.dataset, p.kind, p.parts, p.k_drawn FROM mask_plans p JOIN sources s ON s.id = p.source_id \
         WHERE p.rule_version = $1 AND ($2::bigint IS NULL OR p.seed = $2)",
    )
    .bind(MASK_RULES_VERSION)
    .bind(seed.map(|s| s as i64))
    .fetch_all(&app.pool)
    .await?;
    let mut all = PlanStats::default();
    let mut by: BTreeMap<String, PlanStats> = BTreeMap::new();
    for r in rows {
        let parts: Vec<String> = r.get(2);
        let m = PlannedMask {
            kind: parse_kind(r.get::<&str, _>(1))?,
            parts: parts.iter().map(|p| p.parse()).collect::<Result<_, _>>()?,
            k_drawn: r.get::<i16, _>(3) as u8,
        };
        all.add(&m);
        by.entry(r.get(0)).or_default().add(&m);
    }
    Ok(StoredStats { all: all.finish(), by_dataset: by.into_iter().map(|(k, v)| (k, v.finish())).collect() })
}

/// Prints plan statistics for people.
pub fn print_stats(s: &PlanStats) {
    println!("inpainting masks: {} (full face {} = {:.1}%), swap masks: {}", s.n, s.full_face, 100.0 * s.full_face_share, s.swap);
    let parts_total: u64 = s.k_histogram.values().sum();
    for (k, v) in &s.k_histogram {
        let share = if parts_total > 0 { 100.0 * *v as f64 / parts_total as f64 } else { 0.0 };
        println!("  k={k:>2}: {v:>8} ({share:5.1}%)");
    }
    for (p, f) in &s.part_frequency {
        println!("  {p:<7} {:>8} ({:5.1}%)", s.part_counts[p], 100.0 * f);
    }
}

const PALETTE: [[u8; 3]; 18] = [
    [255, 204, 153],
    [255, 128, 0],
    [160, 160, 160],
    [0, 128, 255],
    [0, 200, 255],
    [128, 64, 0],
    [200, 100, 0],
    [255, 0, 255],
    [180, 0, 255],
    [255, 0, 0],
    [255, 80, 120],
    [200, 0, 80],
    [90, 60, 30],
    [0, 100, 0],
    [255, 255, 0],
    [0, 255, 128],
    [120, 200, 120],
    [60, 60, 200],
];

fn outline(mask: &GrayImage) -> Vec<(u32, u32)> {
    let (w, h) = mask.dimensions();
    let set = |x: i64, y: i64| x >= 0 && y >= 0 && x < w as i64 && y < h as i64 && mask.get_pixel(x as u32, y as u32).0[0] > 0;
    let mut out = Vec::new();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if set(x, y) && (!set(x - 1, y) || !set(x + 1, y) || !set(x, y - 1) || !set(x, y + 1)) {
                out.push((x as u32, y as u32));
            }
        }
    }
    out
}

/// Draws the source with its part regions and landmarks (left) and its planned masks (right).
pub async fn preview(app: &App, source: uuid::Uuid, seed: Option<u64>, out: &Path) -> Result<()> {
    let row = sqlx::query("SELECT image_hash, landmarks FROM sources WHERE id = $1")
        .bind(source)
        .fetch_optional(&app.pool)
        .await?
        .ok_or_else(|| anyhow!("no source with id {source}: `mmtt sources list` shows the ids"))?;
    let key: BlobKey = row.get::<String, _>(0).parse()?;
    let face = image::load_from_memory(&app.store.get(&key)?)?.into_rgb8();
    let landmarks: Option<Landmarks68> = row.get::<Option<serde_json::Value>, _>(1).map(serde_json::from_value).transpose()?;
    let parts = sqlx::query("SELECT part, mask_hash FROM source_parts WHERE source_id = $1 ORDER BY part")
        .bind(source)
        .fetch_all(&app.pool)
        .await?;
    let plans = sqlx::query(
        "SELECT purpose, mask_hash, kind, parts, seed FROM mask_plans WHERE source_id = $1 AND ($2::bigint IS NULL OR seed = $2) \
         ORDER BY created_at DESC",
    )
    .bind(source)
    .bind(seed.map(|s| s as i64))
    .fetch_all(&app.pool)
    .await?;
    let mut canvas = RgbImage::new(FACE_SIZE * 2, FACE_SIZE);
    image::imageops::replace(&mut canvas, &face, 0, 0);
    image::imageops::replace(&mut canvas, &face, FACE_SIZE as i64, 0);
    for r in &parts {
        let part: Part = r.get::<&str, _>(0).parse()?;
        let mk: BlobKey = r.get::<String, _>(1).parse()?;
        let m = decode_mask_png(&app.store.get(&mk)?, FACE_SIZE)?;
        let c = PALETTE[Part::ALL.iter().position(|p| *p == part).unwrap_or(0)];
        for (x, y) in outline(&m) {
            canvas.put_pixel(x, y, Rgb(c));
        }
    }
    if let Some(lm) = &landmarks {
        for p in lm.0.iter() {
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (x, y) = (p.x.round() as i64 + dx, p.y.round() as i64 + dy);
                    if x >= 0 && y >= 0 && x < FACE_SIZE as i64 && y < FACE_SIZE as i64 {
                        canvas.put_pixel(x as u32, y as u32, Rgb([0, 255, 0]));
                    }
                }
            }
        }
    }
    let newest_seed = plans.first().map(|r| r.get::<i64, _>(4));
    for r in plans.iter().filter(|r| Some(r.get::<i64, _>(4)) == newest_seed) {
        let purpose: &str = r.get(0);
        let mk: BlobKey = r.get::<String, _>(1).parse()?;
        let m = decode_mask_png(&app.store.get(&mk)?, FACE_SIZE)?;
        if purpose == "inpaint" {
            for (x, y, p) in m.enumerate_pixels() {
                if p.0[0] > 0 {
                    let px = canvas.get_pixel_mut(x + FACE_SIZE, y);
                    px.0 = [((px.0[0] as u16 + 255) / 2) as u8, px.0[1] / 2, px.0[2] / 2];
                }
            }
        } else {
            for (x, y) in outline(&m) {
                canvas.put_pixel(x + FACE_SIZE, y, Rgb([0, 255, 0]));
            }
        }
    }
    let png = encode_rgb_png(&canvas)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("png.tmp");
    std::fs::write(&tmp, &png).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}
