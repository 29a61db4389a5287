//! `mmtt seed-synthetic`: fills a database with synthetic sources, masks, forgeries and (for
//! `--state accepted`) annotations and reviews, for benchmarks and tests at dataset scale.
//!
//! Images are real PNGs (generated gradients with a bright blob; a few dozen distinct ones,
//! shared through the content-addressed store), rows are written in bulk with `UNNEST`. A
//! database holding real (non-synthetic) sources is refused unless `--force`.

use crate::app::App;
use crate::storage::split;
use crate::storage::tables::{annotations, forgeries, mask_plans};
use anyhow::{Result, bail};
use image::{GrayImage, RgbImage};
use mmtt_generators::forge::SplitMix64;
use mmtt_generators::mask::{encode_mask_png, encode_rgb_png};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntheticState {
    Forged,
    Accepted,
}

/// Distinct images and masks to draw from.
const VARIANTS: usize = 32;

const PHRASES: [&str; 8] = [
    "The left eye is blurred and its lashes melt into the skin.",
    "The nose has a soft, smeared outline and an unnatural shadow.",
    "The upper lip is too smooth and its edge is jagged.",
    "The skin on the cheek looks waxy with repeated texture.",
    "The right eyebrow is patchy and does not match the other one.",
    "The mouth corners are asymmetric and the teeth are fused.",
    "A hard seam runs along the jaw where the face was blended.",
    "The forehead has a colour shift and the wrinkles are painted on.",
];

/// Parts a synthetic plan draws from (CelebAMask-HQ names).
const PARTS: [&str; 9] = ["nose", "l_eye", "r_eye", "mouth", "u_lip", "l_lip", "l_brow", "r_brow", "skin"];

fn variant_image(i: usize) -> RgbImage {
    let (a, b) = ((i * 37 % 200) as f32, (i * 91 % 200) as f32);
    RgbImage::from_fn(512, 512, |x, y| {
        let d = ((x as f32 - 256.0).powi(2) + (y as f32 - 240.0).powi(2)).sqrt();
        let blob = if d < 150.0 { 60.0 } else { 0.0 };
        image::Rgb([(a + x as f32 / 8.0 + blob) as u8, (b + y as f32 / 8.0) as u8, (120.0 + blob) as u8])
    })
}

fn variant_mask(i: usize) -> GrayImage {
    let (cx, cy, r) = (180.0 + (i * 13 % 150) as f32, 180.0 + (i * 29 % 150) as f32, 30.0 + (i * 7 % 60) as f32);
    GrayImage::from_fn(512, 512, |x, y| image::Luma([if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r { 255 } else { 0 }]))
}

pub async fn seed(app: &App, samples: u64, seed: u64, state: SyntheticState, force: bool) -> Result<u64> {
    let real: i64 = sqlx::query_scalar("SELECT count(*) FROM sources WHERE dataset <> 'synthetic'").fetch_one(&app.pool).await?;
    if real > 0 && !force {
        bail!(
            "this database holds {real} real sources: seed-synthetic is for benchmark and test databases (pass --force to add synthetic rows anyway)"
        );
    }
    let settings = crate::storage::db::settings(&app.pool).await?;
    let mut originals = Vec::new();
    let mut forged = Vec::new();
    let mut masks = Vec::new();
    for i in 0..VARIANTS {
        let img = variant_image(i);
        let mask = variant_mask(i);
        let mut f = img.clone();
        for (x, y, m) in mask.enumerate_pixels() {
            if m.0[0] > 0 {
                f.put_pixel(x, y, image::Rgb([255 - img.get_pixel(x, y).0[0], 40, 200]));
            }
        }
        let (o, fo, m) = (encode_rgb_png(&img)?, encode_rgb_png(&f)?, encode_mask_png(&mask)?);
        let n = mask.pixels().filter(|p| p.0[0] > 0).count() as i32;
        let mut tx = app.pool.begin().await?;
        for png in [&o, &fo, &m] {
            let key = app.store.put(png)?;
            crate::storage::db::record_blob(&mut tx, &key, png).await?;
        }
        tx.commit().await?;
        originals.push(crate::storage::store::BlobKey::of(&o).to_string());
        forged.push(crate::storage::store::BlobKey::of(&fo).to_string());
        masks.push((crate::storage::store::BlobKey::of(&m).to_string(), n));
    }
    let job = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO forge_jobs (id, requested, seed, plan_seed, methods, params) VALUES ($1, $2, $3, $3, '{synthetic-swap,synthetic-transformer,synthetic-diffusion}', '{\"synthetic\": true}')")
        .bind(job)
        .bind(samples as i32)
        .bind(seed as i64)
        .execute(&app.pool)
        .await?;
    let mut annotators = Vec::new();
    if state == SyntheticState::Accepted {
        for k in 0..5 {
            let id = uuid::Uuid::new_v4();
            sqlx::query("INSERT INTO users (id, name, role, password_hash) VALUES ($1, $2, 'annotator', '!synthetic') ON CONFLICT (name) DO NOTHING")
                .bind(id)
                .bind(format!("synthetic-annotator-{seed}-{k}"))
                .execute(&app.pool)
                .await?;
            annotators.push(
                sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM users WHERE name = $1")
                    .bind(format!("synthetic-annotator-{seed}-{k}"))
                    .fetch_one(&app.pool)
                    .await?,
            );
        }
    }
    let mut rng = SplitMix64(seed);
    let chunk = 5_000u64;
    let mut done = 0u64;
    while done < samples {
        let n = chunk.min(samples - done);
        let mut c = Cols::default();
        for j in 0..n {
            let i = done + j;
            let v = (rng.next_u64() % VARIANTS as u64) as usize;
            let key = format!("synthetic:{seed}:{i}");
            c.source.push(uuid::Uuid::new_v4());
            c.plan.push(uuid::Uuid::new_v4());
            c.item.push(uuid::Uuid::new_v4());
            c.forgery.push(uuid::Uuid::new_v4());
            c.original_id.push(format!("syn-{seed}-{i}"));
            // the paper's method mix: swap 44,343 : transformer 37,440 : diffusion 46,520
            let r = rng.next_u64() % 128_303;
            let (method, family) = if r < 44_343 {
                ("synthetic-swap", "swap")
            } else if r < 44_343 + 37_440 {
                ("synthetic-transformer", "transformer")
            } else {
                ("synthetic-diffusion", "diffusion")
            };
            c.method.push(method.to_string());
            c.family.push(family.to_string());
            c.split.push(split::assign(settings.split_seed, settings.split_ratios, &key).name().to_string());
            c.key.push(key);
            c.original.push(originals[v].clone());
            c.forged.push(forged[v].clone());
            c.mask.push(masks[v].0.clone());
            c.pixels.push(masks[v].1);
            let t = PHRASES[(rng.next_u64() % PHRASES.len() as u64) as usize];
            c.text.push(t.to_string());
            // 1-5 planned parts; regions the text names outside them are false positives
            let k = 1 + (rng.next_u64() % 5) as usize;
            let start = (rng.next_u64() % PARTS.len() as u64) as usize;
            let parts: Vec<String> = (0..k).map(|j| PARTS[(start + j * 2) % PARTS.len()].to_string()).collect();
            c.regions.push(crate::dataset::annotation::region_labels(t).join(","));
            c.fp.push(crate::dataset::annotation::false_positive_labels(t, &[], &parts).join(","));
            c.parts.push(parts.join(","));
            c.words.push(crate::dataset::annotation::word_count(t) as i32);
            c.active.push(60.0 + (rng.next_u64() % 240) as f64);
            c.annotator.push(annotators.get((i % 5) as usize).copied().unwrap_or_default());
        }
        let mut tx = app.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sources (id, dataset, original_id, original_path, original_width, original_height, image_hash, width, height, \
             part_source, parts, split, split_key) \
             SELECT id, 'synthetic', oid, '(synthetic)', 512, 512, h, 512, 512, 'landmarks', '{}', sp, k \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) AS t(id, oid, h, sp, k)",
        )
        .bind(&c.source)
        .bind(&c.original_id)
        .bind(&c.original)
        .bind(&c.split)
        .bind(&c.key)
        .execute(&mut *tx)
        .await?;
        mask_plans::insert_part_plans_bulk(&mut tx, seed as i64, &c.plan, &c.source, &c.mask, &c.pixels, &c.parts).await?;
        sqlx::query(
            "INSERT INTO forge_items (id, job_id, method, family, target_id, plan_id, seed, status, attempts) \
             SELECT id, $1, me, fa, sid, pid, $4, 'done', 1 FROM UNNEST($2::uuid[], $3::uuid[], $5::uuid[], $6::text[], $7::text[]) AS t(id, sid, pid, me, fa)",
        )
        .bind(job).bind(&c.item).bind(&c.source).bind(seed as i64).bind(&c.plan).bind(&c.method).bind(&c.family)
        .execute(&mut *tx)
        .await?;
        let batch = forgeries::SyntheticBatch {
            seed: seed as i64,
            ids: &c.forgery,
            item_ids: &c.item,
            target_ids: &c.source,
            plan_ids: &c.plan,
            splits: &c.split,
            image_hashes: &c.forged,
            mask_hashes: &c.mask,
            original_hashes: &c.original,
            methods: &c.method,
        };
        forgeries::insert_synthetic_bulk(&mut tx, &batch).await?;
        if state == SyntheticState::Accepted {
            let ann: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
            let batch = annotations::AcceptedBatch {
                ids: &ann,
                forgery_ids: &c.forgery,
                annotator_ids: &c.annotator,
                texts: &c.text,
                word_counts: &c.words,
                active_seconds: &c.active,
                regions_csv: &c.regions,
                fp_csv: &c.fp,
            };
            annotations::insert_accepted_bulk(&mut tx, &batch).await?;
        }
        tx.commit().await?;
        done += n;
        eprintln!("seed-synthetic: {done}/{samples}");
    }
    Ok(done)
}

#[derive(Default)]
struct Cols {
    source: Vec<uuid::Uuid>,
    plan: Vec<uuid::Uuid>,
    item: Vec<uuid::Uuid>,
    forgery: Vec<uuid::Uuid>,
    original_id: Vec<String>,
    key: Vec<String>,
    split: Vec<String>,
    original: Vec<String>,
    forged: Vec<String>,
    mask: Vec<String>,
    pixels: Vec<i32>,
    text: Vec<String>,
    regions: Vec<String>,
    fp: Vec<String>,
    parts: Vec<String>,
    method: Vec<String>,
    family: Vec<String>,
    words: Vec<i32>,
    active: Vec<f64>,
    annotator: Vec<uuid::Uuid>,
}
