//! `mmtt import mmtt-release --root DIR`: the authors' published MMTT release (spec section 8),
//! so its samples can be reviewed, re-split, exported and evaluated on the platform.
//!
//! The release is `train.json`, `val.json` (or `validation.json`) and `test.json`, each a list of
//! `{image_id, instance_id, caption, img_path, mask_path, multilabel[21]}` with paths relative to
//! the root. The method comes from the image id's prefix (`sd` diffusion -> `sdxl`, `mat`
//! transformer, `e4s` swap, anything else attribute editing). The release carries no pristine
//! originals: the forged image stands in for the original (and source) of each sample, which
//! the review page then shows twice. Captions arrive accepted (by the account `mmtt-release`),
//! in the release's split. Re-importing skips what is already there.
//!
//! The authors' `image_id` and `instance_id` are kept (`forgeries.release_image_id`, unique, and
//! `release_instance_id`), and every export writes them back unchanged. An `image_id` must be
//! usable as a file name; one of the shape exports give the platform's own samples
//! (`{prefix}_{32 hex digits}`) that names a forgery of this database is that forgery, already
//! present, and is skipped.

use crate::app::App;
use crate::dataset::annotation::{REGION_LABELS, region_labels, word_count};
use crate::storage::split::Split;
use crate::storage::tables::annotations;
use crate::storage::tables::forgeries::{self, NewForgery};
use crate::storage::tables::mask_plans::{self, NewMaskPlan};
use anyhow::{Context, Result, anyhow, bail};
use mmtt_generators::mask::{encode_mask_png, encode_rgb_png};
use mmtt_generators::plan::{MaskKind, Purpose};
use mmtt_generators::registry::{Family, Method};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
pub struct ReleaseRecord {
    pub image_id: String,
    #[serde(default)]
    pub instance_id: serde_json::Value,
    pub caption: String,
    pub img_path: String,
    pub mask_path: String,
    pub multilabel: Vec<u8>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ReleaseSummary {
    pub imported: u64,
    pub already_present: u64,
    pub per_split: std::collections::BTreeMap<String, u64>,
}

/// The method and family an image id's prefix names.
/// (`attribute-edit`, the release's fourth kind, is no method mmtt runs: the name is stored as is.)
pub fn method_of(image_id: &str) -> (&'static str, Family) {
    match image_id.split(['_', '-']).next().unwrap_or_default() {
        "sd" => (Method::Sdxl.as_str(), Family::Diffusion),
        "mat" => (Method::Mat.as_str(), Family::Transformer),
        "e4s" => (Method::E4s.as_str(), Family::Swap),
        _ => ("attribute-edit", Family::Inpaint),
    }
}

/// Whether an authors' `image_id` can name the exported files (`images/{image_id}.png`): not
/// empty, at most 200 bytes, no path separator, control character or leading dot.
pub fn safe_image_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && !id.starts_with('.') && !id.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The platform's own forgery an id names, when it has the shape exports give the platform's
/// samples (`{prefix}_{forgery id as 32 hex digits}`).
pub fn platform_forgery_of(id: &str) -> Option<uuid::Uuid> {
    let (_, hex) = id.rsplit_once('_')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    uuid::Uuid::try_parse(hex).ok()
}

fn load_image(root: &Path, rel: &str, what: &str, id: &str) -> Result<image::DynamicImage> {
    let p = root.join(rel);
    if rel.contains("..") {
        bail!("record {id}: {what} path `{rel}` leaves the release folder");
    }
    image::open(&p).with_context(|| format!("record {id}: cannot read its {what} {} (is --root the release's folder?)", p.display()))
}

pub async fn import(app: &App, root: &Path) -> Result<ReleaseSummary> {
    let files: Vec<(&str, Split)> = vec![
        ("train.json", Split::Train),
        ("val.json", Split::Validation),
        ("validation.json", Split::Validation),
        ("test.json", Split::Test),
    ];
    let present: Vec<(std::path::PathBuf, Split)> = files.iter().map(|(f, s)| (root.join(f), *s)).filter(|(p, _)| p.is_file()).collect();
    if present.is_empty() {
        bail!(
            "{} holds none of train.json, val.json, validation.json, test.json: point --root at the MMTT release's folder",
            root.display()
        );
    }
    // the account the release's captions are credited to
    let user: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (id, name, role, password_hash, disabled) VALUES ($1, 'mmtt-release', 'annotator', '!imported', true) \
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(uuid::Uuid::new_v4())
    .fetch_one(&app.pool)
    .await?;
    let job = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO forge_jobs (id, requested, seed, plan_seed, methods, params) VALUES ($1, 0, 0, 0, '{mmtt-release}', $2)")
        .bind(job)
        .bind(serde_json::json!({"imported_from": root.display().to_string()}))
        .execute(&app.pool)
        .await?;
    let mut summary = ReleaseSummary::default();
    for (path, split) in present {
        let records: Vec<ReleaseRecord> = serde_json::from_slice(&std::fs::read(&path)?).with_context(|| {
            format!("{} is not a JSON list of {{image_id, instance_id, caption, img_path, mask_path, multilabel}} records", path.display())
        })?;
        eprintln!("import mmtt-release: {} records in {}", records.len(), path.display());
        for r in records {
            let id = r.image_id.trim();
            if id.is_empty() {
                bail!("{}: a record has an empty image_id", path.display());
            }
            if !safe_image_id(id) {
                bail!(
                    "{}: record `{}`: an image_id names the exported files, so it must be at most 200 bytes without `/`, `\\`, control characters or a leading dot; fix the record",
                    path.display(),
                    id.escape_debug()
                );
            }
            // an id of the shape exports give the platform's own samples, naming a forgery of
            // this database: the sample is already here (exported from it); importing it again
            // would duplicate it under the same image id
            if let Some(f) = platform_forgery_of(id) {
                let own: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM forgeries WHERE id = $1 AND release_image_id IS NULL)")
                    .bind(f)
                    .fetch_one(&app.pool)
                    .await?;
                if own {
                    eprintln!("import mmtt-release: {id} is this database's own forgery {f} (exported from here): skipped");
                    summary.already_present += 1;
                    continue;
                }
            }
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sources WHERE dataset = 'mmtt-release' AND original_id = $1)")
                    .bind(id)
                    .fetch_one(&app.pool)
                    .await?;
            if exists {
                summary.already_present += 1;
                continue;
            }
            if r.multilabel.len() != 21 || r.multilabel.iter().any(|v| *v > 1) {
                bail!("record {id}: multilabel must be 21 values of 0 or 1, found {:?}", r.multilabel);
            }
            let words = word_count(&r.caption);
            if words == 0 {
                bail!("record {id}: the caption is empty");
            }
            let img = load_image(root, &r.img_path, "image", id)?.to_rgb8();
            let img = if img.dimensions() != (512, 512) {
                image::imageops::resize(&img, 512, 512, image::imageops::FilterType::Lanczos3)
            } else {
                img
            };
            let mask = load_image(root, &r.mask_path, "mask", id)?.to_luma8();
            let mask = if mask.dimensions() != (512, 512) {
                image::imageops::resize(&mask, 512, 512, image::imageops::FilterType::Nearest)
            } else {
                mask
            };
            let mask = image::GrayImage::from_fn(512, 512, |x, y| image::Luma([if mask.get_pixel(x, y).0[0] > 127 { 255 } else { 0 }]));
            let pixels = mask.pixels().filter(|p| p.0[0] > 0).count() as i32;
            if pixels == 0 {
                bail!("record {id}: its mask {} has no pixel above 127", r.mask_path);
            }
            let (img_png, mask_png) = (encode_rgb_png(&img)?, encode_mask_png(&mask)?);
            let (img_key, mask_key) = (app.store.put(&img_png)?, app.store.put(&mask_png)?);
            let labels: Vec<&str> = REGION_LABELS.iter().zip(&r.multilabel).filter(|(_, v)| **v == 1).map(|((l, _), _)| *l).collect();
            let (method, family) = method_of(id);
            let mut tx = app.pool.begin().await?;
            crate::storage::db::record_blob(&mut tx, &img_key, &img_png).await?;
            crate::storage::db::record_blob(&mut tx, &mask_key, &mask_png).await?;
            let (source, plan, item, forgery, ann) =
                (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
            sqlx::query(
                "INSERT INTO sources (id, dataset, original_id, original_path, original_width, original_height, image_hash, width, height, part_source, parts, split, split_key) \
                 VALUES ($1, 'mmtt-release', $2, $3, 512, 512, $4, 512, 512, 'annotated', '{}', $5, $4)",
            )
            .bind(source).bind(id).bind(&r.img_path).bind(img_key.as_str()).bind(split.name())
            .execute(&mut *tx)
            .await?;
            let plan_parts: Vec<&str> = if labels.is_empty() { vec!["unknown"] } else { labels.clone() };
            let swap = family == Family::Swap;
            let new_plan = NewMaskPlan {
                id: plan,
                source_id: source,
                purpose: if swap { Purpose::Swap } else { Purpose::Inpaint },
                kind: if swap { MaskKind::Swap } else { MaskKind::Parts },
                parts: &plan_parts,
                k_drawn: plan_parts.len() as i16,
                seed: 0,
                item_seed: 0,
                rule_version: 0,
                mask_hash: mask_key.as_str(),
                pixels,
            };
            mask_plans::insert(&mut tx, &new_plan).await?;
            sqlx::query("INSERT INTO forge_items (id, job_id, method, family, target_id, plan_id, seed, status, attempts) VALUES ($1, $2, $3, $4, $5, $6, 0, 'done', 0)")
                .bind(item).bind(job).bind(method).bind(family.as_str()).bind(source).bind(plan)
                .execute(&mut *tx)
                .await?;
            let provenance =
                serde_json::json!({"generator": "mmtt-release", "image_id": id, "instance_id": r.instance_id, "no_original": true});
            let new_forgery = NewForgery {
                id: forgery,
                item_id: item,
                method,
                target_id: source,
                donor_id: None,
                plan_id: plan,
                split: split.name(),
                image_hash: img_key.as_str(),
                mask_hash: mask_key.as_str(),
                original_hash: img_key.as_str(),
                seed: 0,
                provenance: &provenance,
                timings: &serde_json::json!({}),
                release_image_id: Some(id),
                release_instance_id: if r.instance_id.is_null() { None } else { Some(&r.instance_id) },
            };
            forgeries::insert(&mut tx, &new_forgery).await?;
            let mentions = region_labels(&r.caption);
            let caption = annotations::Imported {
                id: ann,
                forgery_id: forgery,
                annotator_id: user,
                text: &r.caption,
                regions: &labels,
                word_count: words as i32,
                mentions: &mentions,
            };
            annotations::import_accepted(&mut tx, &caption).await?;
            tx.commit().await?;
            summary.imported += 1;
            *summary.per_split.entry(split.name().to_string()).or_default() += 1;
        }
    }
    if summary.imported + summary.already_present == 0 {
        return Err(anyhow!("the release's files hold no records"));
    }
    Ok(summary)
}
