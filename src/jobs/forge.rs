//! Forgery jobs: `mmtt forge` enqueues items in PostgreSQL, `mmtt worker` processes claim them.
//!
//! The queue is the `forge_items` table. A worker claims one item at a time with
//! `FOR UPDATE SKIP LOCKED` and a lease (`lease_until`); an item whose lease ran out (its worker
//! died) is claimed again by any worker. A failing item goes back to the queue until
//! `max_attempts`, then is marked failed with its reason; the job goes on. The forgery row and the
//! item's `done` status are written in one transaction after the image file is stored, and
//! `forgeries.item_id` is unique: a worker killed at any moment loses nothing and duplicates
//! nothing.
//!
//! No job-queue crate is used (see [`super`] for why): the queue here is one table and two
//! statements.
//!
//! Each forge job is a row of `jobs` (kind `forge`, see [`super`]) with the same id as its
//! `forge_jobs` row. Items of a job that is not queued or running (paused, cancelling, cancelled)
//! are not claimed; a worker releases the items it holds of a cancelling job at its next heartbeat
//! (the result of the item in flight is discarded). The worker that stores or fails a job's last
//! open item marks the job done.
//!
//! A worker renews the leases of the items it holds every third of a lease, so a slow item is
//! never taken from a live worker, and a dead worker's items are free again within one lease.
//!
//! A worker overlaps its stages: one task claims and decodes the next items while a dedicated
//! thread runs the generator (sessions created once per worker and reused) and a third stage
//! encodes and stores the results.

use crate::app::App;
use crate::dataset::masks;
use crate::storage::store::BlobKey;
use crate::storage::tables::forgeries::NewForgery;
use anyhow::{Context, Result, anyhow, bail};
use image::RgbImage;
use mmtt_generators::FACE_SIZE;
use mmtt_generators::forge::runtime::Device;
use mmtt_generators::forge::{ForgeInput, Generator, PartMasks, composite};
use mmtt_generators::landmarks::Landmarks68;
use mmtt_generators::mask::{decode_mask_png, encode_rgb_png};
use mmtt_generators::registry::{DonorUse, Family, Method, PAPER_MIX};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The method named `method` (an error listing the known ones otherwise); the registry
/// (`mmtt_generators::registry`) knows what each needs.
pub fn method_of(method: &str) -> Result<Method> {
    Ok(method.parse()?)
}

/// Splits `n` by the paper's proportions (largest remainder).
pub fn paper_counts(n: u64) -> [u64; 3] {
    let total: u64 = PAPER_MIX.iter().map(|(_, c)| c).sum();
    let mut counts = [0u64; 3];
    let mut rem: Vec<(u64, usize)> = Vec::new();
    for (i, (_, c)) in PAPER_MIX.iter().enumerate() {
        counts[i] = n * c / total;
        rem.push(((n * c) % total, i));
    }
    rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = n - counts.iter().sum::<u64>();
    for (_, i) in rem {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForgeRequest {
    /// One method, or with `mix`, the methods for swap, transformer and diffusion in that order.
    pub methods: Vec<String>,
    pub count: u64,
    pub seed: u64,
    pub plan_seed: u64,
    pub mix_paper: bool,
    pub device: Device,
    pub max_attempts: i32,
    /// Generator settings for the whole job (SDXL: prompt, negative_prompt, steps, guidance,
    /// strength), stored in `forge_jobs.params` and handed to every item.
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// Checks a forge request before anything is stored: each message names the field and the fix.
pub fn validate(req: &ForgeRequest) -> std::result::Result<(), super::SpecError> {
    use super::SpecError;
    if req.count == 0 {
        return Err(SpecError::new("count", "0 forgeries is nothing to do: give a count of at least 1"));
    }
    if req.count > i32::MAX as u64 {
        return Err(SpecError::new("count", format!("at most {} forgeries per job", i32::MAX)));
    }
    for m in &req.methods {
        if m.parse::<Method>().is_err() {
            return Err(SpecError::new("methods", format!("unknown method `{m}`: known methods are {}", super::method_names())));
        }
    }
    if req.mix_paper {
        if req.methods.len() != 3 {
            return Err(SpecError::new(
                "methods",
                "the paper mix takes three methods in the paper's order (swap, transformer, diffusion), e.g. classic-swap,mat,patch-inpaint",
            ));
        }
        for (i, m) in req.methods.iter().enumerate() {
            let fam = PAPER_MIX[i].0;
            if !m.parse::<Method>().is_ok_and(|m| m.can_stand_for(fam)) {
                return Err(SpecError::new("methods", format!("paper mix: `{m}` cannot stand for the {fam} family")));
            }
        }
    } else if req.methods.len() != 1 {
        return Err(SpecError::new("methods", "give one method, or three with the paper mix"));
    }
    if req.max_attempts < 1 {
        return Err(SpecError::new("max_attempts", "must be at least 1"));
    }
    if !req.params.is_object() {
        return Err(SpecError::new("params", "generator settings must be a JSON object, e.g. {\"prompt\": \"...\"}"));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Enqueued {
    pub job_id: uuid::Uuid,
    pub queued: u64,
    pub by_method: HashMap<String, u64>,
    /// Targets that could not be given an item, with the reason.
    pub unavailable: Vec<String>,
}

fn rank(seed: u64, key: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"mmtt-forge-v1\0");
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    h.finalize()[..8].try_into().expect("8 bytes")
}

struct Candidate {
    id: uuid::Uuid,
    key: String,
    split: String,
    dataset: String,
    /// The source has its 68 landmarks (CelebAMask-HQ sources where dlib found no face do not).
    landmarks: bool,
}

/// Records a forgery job (a `jobs` row, held by this process while it prepares) and enqueues its
/// items. Masks are planned first for sources that have none for `plan_seed`.
pub async fn enqueue(app: &App, req: &ForgeRequest) -> Result<Enqueued> {
    validate(req)?;
    let job_id = uuid::Uuid::new_v4();
    let holder = super::runner::process_name();
    let lease = super::runner::inline_lease();
    super::insert(&app.pool, job_id, &super::JobSpec::Forge(req.clone()), "cli", Some((&holder, lease))).await?;
    let r = enqueue_as(app, req, job_id).await;
    super::runner::fanned_out(&app.pool, job_id, &holder, &r).await?;
    r
}

/// Enqueues the items of forge job `job_id` (whose `jobs` row exists). Running it again for the
/// same job (its preparer died midway) counts the items already queued and adds only the rest.
pub async fn enqueue_as(app: &App, req: &ForgeRequest, job_id: uuid::Uuid) -> Result<Enqueued> {
    let families: Vec<(Method, Family, u64)> = if req.mix_paper {
        if req.methods.len() != 3 {
            bail!(
                "--mix paper takes three methods in the paper's order (swap, transformer, diffusion), e.g. --method classic-swap,mat,patch-inpaint"
            );
        }
        let counts = paper_counts(req.count);
        let mut v = Vec::new();
        for (i, m) in req.methods.iter().enumerate() {
            let m = method_of(m)?;
            let fam = PAPER_MIX[i].0;
            if !m.can_stand_for(fam) {
                bail!("--mix paper: `{m}` cannot stand for the {fam} family");
            }
            v.push((m, fam, counts[i]));
        }
        v
    } else {
        if req.methods.len() != 1 {
            bail!("give one --method, or three with --mix paper");
        }
        let m = method_of(&req.methods[0])?;
        vec![(m, m.family(), req.count)]
    };
    masks::plan_all(app, req.plan_seed, None, false).await?;
    let names: Vec<&str> = families.iter().map(|(m, ..)| m.as_str()).collect();
    if !req.params.is_object() {
        bail!("job parameters must be a JSON object, e.g. {{\"prompt\": \"...\"}}");
    }
    sqlx::query(
        "INSERT INTO forge_jobs (id, requested, seed, plan_seed, mix, methods, device, params) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(job_id)
    .bind(req.count as i32)
    .bind(req.seed as i64)
    .bind(req.plan_seed as i64)
    .bind(req.mix_paper.then_some("paper"))
    .bind(&names)
    .bind(match req.device {
        Device::Cpu => "cpu",
        Device::Cuda => "cuda",
    })
    .bind(&req.params)
    .execute(&app.pool)
    .await?;
    let rows =
        sqlx::query("SELECT id, split_key, split, dataset, landmarks IS NOT NULL FROM sources ORDER BY id").fetch_all(&app.pool).await?;
    let all: Vec<Candidate> =
        rows.iter().map(|r| Candidate { id: r.get(0), key: r.get(1), split: r.get(2), dataset: r.get(3), landmarks: r.get(4) }).collect();
    let without_landmarks = all.iter().filter(|c| !c.landmarks).count();
    let mut out = Enqueued { job_id, queued: 0, by_method: HashMap::new(), unavailable: vec![] };
    let mut used_targets: std::collections::HashSet<uuid::Uuid> = Default::default();
    for (method, family, want) in families {
        let purpose = family.purpose().as_str();
        let mut order: Vec<&Candidate> = all.iter().collect();
        order.sort_by_key(|c| rank(req.seed ^ fnv(method.as_str()), &c.key));
        let mut queued = 0u64;
        for c in order {
            if queued >= want {
                break;
            }
            if used_targets.contains(&c.id) || (method.needs_landmarks() && !c.landmarks) {
                continue;
            }
            let plan: Option<uuid::Uuid> = sqlx::query_scalar(
                "SELECT id FROM mask_plans WHERE source_id = $1 AND purpose = $2 AND seed = $3 ORDER BY rule_version DESC LIMIT 1",
            )
            .bind(c.id)
            .bind(purpose)
            .bind(req.plan_seed as i64)
            .fetch_optional(&app.pool)
            .await?;
            let Some(plan) = plan else { continue };
            let donor = if family == Family::Swap || method.donor() != DonorUse::None {
                match pick_donor(&all, c, req.seed, method.donor_needs_landmarks()) {
                    Some(d) => Some(d),
                    // patch-inpaint copies from a donor only where a region has no counterpart left
                    None if method.donor() == DonorUse::Optional => None,
                    None => {
                        let with = if method.donor_needs_landmarks() { " with landmarks" } else { "" };
                        out.unavailable.push(format!("source {}: no donor face{with} in its {} split", c.id, c.split));
                        continue;
                    }
                }
            } else {
                None
            };
            let item_seed = u64::from_le_bytes(rank(req.seed, &format!("{}/{method}", c.key)));
            let done = sqlx::query(
                "INSERT INTO forge_items (id, job_id, method, family, target_id, donor_id, plan_id, seed, max_attempts) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
                 ON CONFLICT (method, target_id, plan_id) DO UPDATE SET job_id = forge_items.job_id WHERE forge_items.job_id = $2",
            )
            .bind(uuid::Uuid::new_v4())
            .bind(job_id)
            .bind(method.as_str())
            .bind(family.as_str())
            .bind(c.id)
            .bind(donor)
            .bind(plan)
            .bind(item_seed as i64)
            .bind(req.max_attempts)
            .execute(&app.pool)
            .await?
            .rows_affected();
            if done == 1 {
                queued += 1;
                used_targets.insert(c.id);
            }
        }
        if queued < want {
            out.unavailable.push(format!(
                "{method}: {queued} of {want} queued (no more sources without a {method} forgery for plan seed {})",
                req.plan_seed
            ));
            if method.needs_landmarks() && without_landmarks > 0 {
                out.unavailable.push(format!(
                    "{method}: {without_landmarks} sources have no landmarks and cannot be its targets; `mmtt landmarks backfill` searches those never searched"
                ));
            }
        }
        // a method may stand for two families of the paper's mix (e.g. patch-inpaint twice)
        *out.by_method.entry(method.as_str().to_string()).or_default() += queued;
        out.queued += queued;
    }
    Ok(out)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The donor of a swap: always from the target's split, and with landmarks when the method needs
/// them. CelebAMask-HQ targets draw from the whole split (the paper's random pairs); FFHQ and photo
/// targets draw from a separate donor pool (the sources whose rank puts them in the first tenth),
/// falling back to the whole split when the pool is empty there.
fn pick_donor(all: &[Candidate], target: &Candidate, seed: u64, with_landmarks: bool) -> Option<uuid::Uuid> {
    let same_split = |c: &&Candidate| c.split == target.split && c.id != target.id && (c.landmarks || !with_landmarks);
    let pick = |pool: Vec<&Candidate>| -> Option<uuid::Uuid> {
        pool.into_iter().min_by_key(|c| rank(seed, &format!("{}|{}", target.key, c.key))).map(|c| c.id)
    };
    if target.dataset == "celebamask-hq" {
        return pick(all.iter().filter(same_split).filter(|c| c.dataset == "celebamask-hq").collect())
            .or_else(|| pick(all.iter().filter(same_split).collect()));
    }
    let in_pool = |c: &&Candidate| rank(seed ^ 0xD0_u64, &c.key)[0] < 26; // about 1 in 10
    pick(all.iter().filter(same_split).filter(in_pool).collect()).or_else(|| pick(all.iter().filter(same_split).collect()))
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    pub device: Device,
    pub models_dir: PathBuf,
    pub threads: usize,
    pub lease: Duration,
    /// Exit when nothing is queued or running (instead of polling forever).
    pub until_empty: bool,
    /// Only this job's items.
    pub job: Option<uuid::Uuid>,
    pub progress: bool,
}

struct Claimed {
    item_id: uuid::Uuid,
    job_id: uuid::Uuid,
    method: String,
    seed: u64,
    target_id: uuid::Uuid,
    donor_id: Option<uuid::Uuid>,
    plan_id: uuid::Uuid,
    split: String,
    original_key: BlobKey,
    mask_key: BlobKey,
    target: RgbImage,
    mask: image::GrayImage,
    target_lm: Option<Landmarks68>,
    donor: Option<(RgbImage, Option<Landmarks68>)>,
    /// Part masks of the target and the donor, for the face-aware built-ins.
    parts: Option<(PartMasks, Option<PartMasks>)>,
    params: serde_json::Value,
    claimed_at: Instant,
    load_ms: f64,
}

struct Generated {
    claimed: Claimed,
    /// The generated image, the generator's own mask (E4S), provenance, milliseconds.
    result: std::result::Result<(RgbImage, Option<image::GrayImage>, serde_json::Value, f64), String>,
}

type ClaimRow = (uuid::Uuid, String, i64, uuid::Uuid, Option<uuid::Uuid>, uuid::Uuid, serde_json::Value, uuid::Uuid);

/// Items a worker may claim: those of jobs that are queued or running (not paused, cancelling,
/// cancelled); items of forge_jobs without a `jobs` row (synthetic data) too.
const CLAIMABLE_JOB: &str = "NOT EXISTS (SELECT 1 FROM jobs jj WHERE jj.id = forge_items.job_id AND jj.state NOT IN ('queued', 'running'))";

async fn claim(app: &App, o: &WorkerOptions) -> Result<Option<ClaimRow>> {
    // items whose lease ran out after their last attempt have failed for good
    sqlx::query(
        "UPDATE forge_items SET status = 'failed', updated_at = now(), \
         last_error = coalesce(last_error, 'worker lost ' || attempts || ' times (lease expired)') \
         WHERE status = 'running' AND lease_until < now() AND attempts >= max_attempts",
    )
    .execute(&app.pool)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE forge_items SET status = 'running', attempts = attempts + 1, worker = $1, \
         lease_until = now() + make_interval(secs => $2), updated_at = now() \
         WHERE id = (SELECT id FROM forge_items WHERE ($3::uuid IS NULL OR job_id = $3) \
           AND (status = 'queued' OR (status = 'running' AND lease_until < now())) AND attempts < max_attempts AND {CLAIMABLE_JOB} \
           ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING id, method, seed, target_id, donor_id, plan_id, (SELECT params FROM forge_jobs j WHERE j.id = forge_items.job_id), job_id"
    )))
    .bind(&o.name)
    .bind(o.lease.as_secs_f64())
    .bind(o.job)
    .fetch_optional(&app.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let job: uuid::Uuid = r.get(7);
    sqlx::query("UPDATE jobs SET state = 'running', started_at = coalesce(started_at, now()), updated_at = now() WHERE id = $1 AND state = 'queued'")
        .bind(job)
        .execute(&app.pool)
        .await?;
    Ok(Some((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), job)))
}

async fn load_source(app: &App, id: uuid::Uuid) -> Result<(BlobKey, RgbImage, Option<Landmarks68>, String)> {
    let r = sqlx::query("SELECT image_hash, landmarks, split FROM sources WHERE id = $1").bind(id).fetch_one(&app.pool).await?;
    let key: BlobKey = r.get::<String, _>(0).parse()?;
    let bytes = app.store.get(&key)?;
    let img = tokio::task::spawn_blocking(move || image::load_from_memory(&bytes).map(|i| i.into_rgb8())).await??;
    let lm = r.get::<Option<serde_json::Value>, _>(1).map(serde_json::from_value).transpose()?;
    Ok((key, img, lm, r.get(2)))
}

/// A source's stored part masks.
async fn load_parts(app: &App, id: uuid::Uuid) -> Result<PartMasks> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT part, mask_hash FROM source_parts WHERE source_id = $1").bind(id).fetch_all(&app.pool).await?;
    let mut out = PartMasks::new();
    for (part, hash) in rows {
        let key: BlobKey = hash.parse()?;
        out.insert(
            part.parse()?,
            decode_mask_png(&app.store.get(&key)?, FACE_SIZE).with_context(|| format!("part mask {part} of source {id}"))?,
        );
    }
    Ok(out)
}

async fn load_item(app: &App, c: ClaimRow) -> Result<Claimed> {
    let t0 = Instant::now();
    let (item_id, method, seed, target_id, donor_id, plan_id, params, job_id) = c;
    let (original_key, target, target_lm, split) = load_source(app, target_id).await?;
    let mask_key: BlobKey = sqlx::query_scalar::<_, String>("SELECT mask_hash FROM mask_plans WHERE id = $1")
        .bind(plan_id)
        .fetch_one(&app.pool)
        .await?
        .parse()?;
    let mask = decode_mask_png(&app.store.get(&mask_key)?, FACE_SIZE)?;
    let donor = match donor_id {
        Some(d) => {
            let (_, img, lm, _) = load_source(app, d).await?;
            Some((img, lm))
        }
        None => None,
    };
    let parts = if method.parse::<Method>().is_ok_and(Method::uses_parts) {
        let donor_parts = match donor_id {
            Some(d) => Some(load_parts(app, d).await?),
            None => None,
        };
        Some((load_parts(app, target_id).await?, donor_parts))
    } else {
        None
    };
    Ok(Claimed {
        item_id,
        job_id,
        method,
        seed: seed as u64,
        target_id,
        donor_id,
        plan_id,
        split,
        original_key,
        mask_key,
        target,
        mask,
        target_lm,
        donor,
        parts,
        params,
        claimed_at: t0,
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

fn make_generator(method: &str, o: &WorkerOptions) -> std::result::Result<Box<dyn Generator>, String> {
    let m: Method = method.parse().map_err(|_| format!("unknown method {method}"))?;
    m.load(&o.models_dir, o.device, o.threads).map_err(|e| e.to_string())
}

async fn fail_item(app: &App, item: uuid::Uuid, worker: &str, reason: &str) -> Result<()> {
    let job: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE forge_items SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
         last_error = $3, lease_until = NULL, updated_at = now() WHERE id = $1 AND worker = $2 AND status = 'running' RETURNING job_id",
    )
    .bind(item)
    .bind(worker)
    .bind(reason)
    .fetch_optional(&app.pool)
    .await?;
    if let Some(job) = job {
        let reason: String = reason.chars().take(500).collect();
        super::event(&app.pool, job, "warn", Some(worker), &format!("item {item} failed: {reason}")).await?;
        super::runner::finish_forge_job(&app.pool, job).await?;
    }
    Ok(())
}

/// What one worker run did.
#[derive(Debug, Default, Serialize)]
pub struct WorkerSummary {
    pub done: u64,
    pub failed_attempts: u64,
}

pub async fn run_worker(app: &App, o: WorkerOptions) -> Result<WorkerSummary> {
    let (claim_tx, mut claim_rx) = tokio::sync::mpsc::channel::<Claimed>(2);
    let (gen_tx, mut gen_rx) = tokio::sync::mpsc::channel::<Generated>(2);
    // the generator thread: sessions are created once per method and reused
    let gen_opts = o.clone();
    let gen_thread = std::thread::spawn(move || {
        let mut gens: HashMap<String, std::result::Result<Box<dyn Generator>, String>> = HashMap::new();
        while let Some(c) = claim_rx.blocking_recv() {
            let g = gens.entry(c.method.clone()).or_insert_with(|| make_generator(&c.method, &gen_opts));
            let result = match g {
                Err(e) => Err(e.clone()),
                Ok(g) => {
                    let t = Instant::now();
                    let (src_img, src_lm) = match &c.donor {
                        Some((i, l)) => (Some(i), l.as_ref()),
                        None => (None, None),
                    };
                    let input = ForgeInput {
                        target: &c.target,
                        mask: &c.mask,
                        target_landmarks: c.target_lm.as_ref(),
                        source: src_img,
                        source_landmarks: src_lm,
                        target_parts: c.parts.as_ref().map(|p| &p.0),
                        source_parts: c.parts.as_ref().and_then(|p| p.1.as_ref()),
                        seed: c.seed,
                        options: Some(&c.params),
                    };
                    g.generate_with_mask(&input)
                        .map(|(img, mask)| (img, mask, g.provenance(), t.elapsed().as_secs_f64() * 1e3))
                        .map_err(|e| e.to_string())
                }
            };
            if gen_tx.blocking_send(Generated { claimed: c, result }).is_err() {
                break;
            }
        }
    });
    let poll = Duration::from_millis(500);
    // tests of kill, cancel and pause slow each item down to catch a job midway
    let item_delay = std::env::var("MMTT_TEST_ITEM_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis);
    let claimer = async {
        loop {
            match claim(app, &o).await? {
                Some(c) => {
                    let id = c.0;
                    if let Some(d) = item_delay {
                        tokio::time::sleep(d).await;
                    }
                    match load_item(app, c).await {
                        Ok(loaded) => {
                            if claim_tx.send(loaded).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => fail_item(app, id, &o.name, &format!("cannot load the item's inputs: {e:#}")).await?,
                    }
                }
                None => {
                    if o.until_empty {
                        let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "SELECT count(*) FROM forge_items WHERE ($1::uuid IS NULL OR job_id = $1) AND status IN ('queued', 'running') \
                             AND (status = 'running' OR {CLAIMABLE_JOB})"
                        )))
                        .bind(o.job)
                        .fetch_one(&app.pool)
                        .await?;
                        // our own claimed items are still in the pipeline: wait for them too
                        if open == 0 {
                            break;
                        }
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        }
        drop(claim_tx);
        Ok::<(), anyhow::Error>(())
    };
    let mut summary = WorkerSummary::default();
    let storer = async {
        while let Some(g) = gen_rx.recv().await {
            let c = g.claimed;
            match g.result {
                Err(reason) => {
                    summary.failed_attempts += 1;
                    tracing::warn!(item = %c.item_id, %reason, "forgery failed");
                    fail_item(app, c.item_id, &o.name, &reason).await?;
                }
                Ok((generated, own_mask, provenance, gen_ms)) => {
                    let t = Instant::now();
                    // a generator that decides its region (E4S) replaces the planned mask
                    let own_png = match &own_mask {
                        Some(m) => Some(mmtt_generators::mask::encode_mask_png(m)?),
                        None => None,
                    };
                    let (orig, mask) = (c.target, own_mask.unwrap_or(c.mask));
                    let png = tokio::task::spawn_blocking(move || encode_rgb_png(&composite(&orig, &generated, &mask))).await??;
                    let key = app.store.put(&png)?;
                    let mask_key = match &own_png {
                        Some(p) => app.store.put(p)?,
                        None => c.mask_key.clone(),
                    };
                    let timings = serde_json::json!({
                        "load_ms": c.load_ms, "generate_ms": gen_ms, "encode_store_ms": t.elapsed().as_secs_f64() * 1e3,
                        "total_ms": c.claimed_at.elapsed().as_secs_f64() * 1e3,
                    });
                    let mut tx = app.pool.begin().await?;
                    let still_ours = sqlx::query(
                        "UPDATE forge_items SET status = 'done', lease_until = NULL, last_error = NULL, updated_at = now() \
                         WHERE id = $1 AND worker = $2 AND status = 'running'",
                    )
                    .bind(c.item_id)
                    .bind(&o.name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if still_ours == 0 {
                        // the lease ran out and another worker took the item over
                        tx.rollback().await?;
                        continue;
                    }
                    crate::storage::db::record_blob(&mut tx, &key, png.as_slice()).await?;
                    if let Some(p) = &own_png {
                        crate::storage::db::record_blob(&mut tx, &mask_key, p.as_slice()).await?;
                    }
                    let forgery = NewForgery {
                        id: uuid::Uuid::new_v4(),
                        item_id: c.item_id,
                        method: &c.method,
                        target_id: c.target_id,
                        donor_id: c.donor_id,
                        plan_id: c.plan_id,
                        split: &c.split,
                        image_hash: key.as_str(),
                        mask_hash: mask_key.as_str(),
                        original_hash: c.original_key.as_str(),
                        seed: c.seed as i64,
                        provenance: &provenance,
                        timings: &timings,
                        release_image_id: None,
                        release_instance_id: None,
                    };
                    crate::storage::tables::forgeries::insert(&mut tx, &forgery).await?;
                    tx.commit().await?;
                    summary.done += 1;
                    super::runner::finish_forge_job(&app.pool, c.job_id).await?;
                    if o.progress {
                        eprintln!("forged {} ({}) in {:.0} ms", c.item_id, c.method, c.claimed_at.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    // keep the leases of the items this worker holds (claimed, generating, storing) alive; a killed
    // worker stops renewing them and its items go back to the queue within one lease
    let heartbeat = async {
        loop {
            tokio::time::sleep(o.lease / 3).await;
            // a cancelled job's items go back at once: the result of the one in flight is dropped
            if let Err(e) = super::runner::release_cancelled_items(&app.pool, &o.name).await {
                tracing::warn!(error = %e, "releasing cancelled items failed");
            }
            let r = sqlx::query(
                "UPDATE forge_items SET lease_until = now() + make_interval(secs => $2) WHERE worker = $1 AND status = 'running'",
            )
            .bind(&o.name)
            .bind(o.lease.as_secs_f64())
            .execute(&app.pool)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
    };
    let (a, b) = tokio::select! {
        r = async { tokio::join!(claimer, storer) } => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };
    gen_thread.join().map_err(|_| anyhow!("the generator thread panicked"))?;
    a?;
    b?;
    Ok(summary)
}

/// Progress of every job: counts per status and the failures' reasons.
pub async fn jobs_report(pool: &sqlx::PgPool) -> Result<serde_json::Value> {
    let rows = sqlx::query(
        "SELECT j.id, j.methods, j.requested, j.created_at::text, \
           count(*) FILTER (WHERE i.status = 'queued'), count(*) FILTER (WHERE i.status = 'running'), \
           count(*) FILTER (WHERE i.status = 'done'), count(*) FILTER (WHERE i.status = 'failed') \
         FROM forge_jobs j LEFT JOIN forge_items i ON i.job_id = j.id GROUP BY j.id ORDER BY j.created_at",
    )
    .fetch_all(pool)
    .await?;
    let mut jobs = Vec::new();
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        let failures: Vec<(uuid::Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, method, last_error FROM forge_items WHERE job_id = $1 AND status = 'failed' ORDER BY updated_at")
                .bind(id)
                .fetch_all(pool)
                .await?;
        jobs.push(serde_json::json!({
            "id": id, "methods": r.get::<Vec<String>, _>(1), "requested": r.get::<i32, _>(2), "created_at": r.get::<String, _>(3),
            "queued": r.get::<i64, _>(4), "running": r.get::<i64, _>(5), "done": r.get::<i64, _>(6), "failed": r.get::<i64, _>(7),
            "failures": failures.iter().map(|(i, m, e)| serde_json::json!({"item": i, "method": m, "reason": e})).collect::<Vec<_>>(),
        }));
    }
    Ok(serde_json::Value::Array(jobs))
}

/// Every forgery with the store paths of its image, mask and original.
pub async fn list(app: &App) -> Result<Vec<serde_json::Value>> {
    let rows = sqlx::query(
        "SELECT f.id, f.method, f.split, f.target_id, f.donor_id, f.image_hash, f.mask_hash, f.original_hash, i.status, f.seed, f.provenance->>'generator' \
         FROM forgeries f JOIN forge_items i ON i.id = f.item_id ORDER BY f.created_at, f.id",
    )
    .fetch_all(&app.pool)
    .await?;
    let path = |h: String| -> Result<String> {
        let k: BlobKey = h.parse()?;
        Ok(app.store.local_path(&k).map(|p| p.display().to_string()).unwrap_or_default())
    };
    rows.into_iter()
        .map(|r| {
            Ok(serde_json::json!({
                "id": r.get::<uuid::Uuid, _>(0), "method": r.get::<String, _>(1), "split": r.get::<String, _>(2),
                "target_id": r.get::<uuid::Uuid, _>(3), "donor_id": r.get::<Option<uuid::Uuid>, _>(4),
                "image": path(r.get(5))?, "mask": path(r.get(6))?, "original": path(r.get(7))?,
                "status": r.get::<String, _>(8), "seed": r.get::<i64, _>(9), "generator": r.get::<Option<String>, _>(10),
            }))
        })
        .collect()
}

/// The default models directory: `DATA_DIR/models`.
pub fn default_models_dir(app_data: &std::path::Path) -> PathBuf {
    app_data.join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_mix_counts() {
        let c = paper_counts(128_303);
        assert_eq!(c, [44_343, 37_440, 46_520]);
        let c = paper_counts(100);
        assert_eq!(c.iter().sum::<u64>(), 100);
        assert_eq!(c, [35, 29, 36]);
    }
}
