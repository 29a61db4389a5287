//! The job system: every long-running piece of work (import, mask planning, forgery generation,
//! export, evaluation, training) is a row of `jobs` in PostgreSQL, and the workers that run
//! them are rows of `workers`.
//!
//! Owns the tables `jobs`, `job_events`, `workers`, the forge queue (`forge_jobs`,
//! `forge_items`, see [`forge`]) and the training figures (`train_metrics`, see [`train`]). It
//! calls the library functions of [`crate::dataset`] and `mmtt_model` to do the work; it may not
//! reach into the web app or the CLI.
//!
//! - [`submit`] validates a typed [`JobSpec`] (nothing is stored when it is refused) and queues it.
//! - [`runner`] is the worker: it claims queued jobs under a lease with `FOR UPDATE SKIP LOCKED`,
//!   renews the lease with each heartbeat, reports progress, and stops at the next heartbeat or
//!   item boundary when the job is cancelled or paused. A job whose worker stopped heartbeating is
//!   taken over by another worker (it resumes: import skips what is stored, export checks what it
//!   wrote, mask planning skips planned sources) or, after `max_attempts`, marked failed with the
//!   reason. A forge job is prepared (masks planned, items queued) by one worker, then its
//!   `forge_items` are shared by every worker.
//! - [`list`], [`get`], [`control`], [`live_workers`] are what the CLI (`mmtt jobs`) and the admin
//!   console read and do.
//!
//! No job-queue crate is used. Checked in December 2026: sqlxmq (0.5/0.6) is on sqlx 0.7 and
//! apalis-postgres (1.0 release candidates) on sqlx 0.8, so either brings a second sqlx; the Rust
//! port of graphile-worker has a sqlx 0.9 driver, but it runs each job once as a task under a lock
//! (retries with backoff), with its own schema beside ours, and has none of what this model needs:
//! leases renewed by heartbeat and taken over, pause/resume, done/total progress, one job fanned
//! out into items shared by several workers, workers announcing what they can run. The forge item
//! queue (the throughput-critical part) would stay ours anyway, leaving two queues to operate.

pub mod assist;
pub mod cli;
pub mod forge;
pub mod runner;
pub mod table3;
pub mod train;
pub mod workers;

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::path::PathBuf;
use std::str::FromStr;
use uuid::Uuid;

pub use forge::ForgeRequest;

/// Events kept per job (older ones are deleted as new ones come).
pub const EVENTS_KEPT: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Import,
    Masks,
    Forge,
    Export,
    Eval,
    Train,
    /// A trained stage-2 model predicted and scored with each regions variant (the paper's Table 3).
    Table3,
    /// A registered model's suggestions for the annotators, computed ahead.
    Assist,
}

impl JobKind {
    pub const ALL: [JobKind; 8] =
        [JobKind::Import, JobKind::Masks, JobKind::Forge, JobKind::Export, JobKind::Eval, JobKind::Train, JobKind::Table3, JobKind::Assist];
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Import => "import",
            JobKind::Masks => "masks",
            JobKind::Forge => "forge",
            JobKind::Export => "export",
            JobKind::Eval => "eval",
            JobKind::Train => "train",
            JobKind::Table3 => "table3",
            JobKind::Assist => "assist",
        }
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind `{s}`: the kinds are import, masks, forge, export, eval, train, table3"))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Cancelling,
    Cancelled,
    Failed,
    Done,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Cancelling,
        JobState::Cancelled,
        JobState::Failed,
        JobState::Done,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Cancelling => "cancelling",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
            JobState::Done => "done",
        }
    }
    /// Cancelled, failed or done: nothing more happens unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Cancelled | JobState::Failed | JobState::Done)
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`: the states are queued, running, paused, cancelling, cancelled, failed, done"))
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What an admin can do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobAction {
    Cancel,
    Pause,
    Resume,
    /// Re-queue the failed items of a forge job, or a failed/cancelled job of another kind.
    RetryFailed,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Cancel => "cancel",
            JobAction::Pause => "pause",
            JobAction::Resume => "resume",
            JobAction::RetryFailed => "retry",
        }
    }
}

impl FromStr for JobAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cancel" => Ok(JobAction::Cancel),
            "pause" => Ok(JobAction::Pause),
            "resume" => Ok(JobAction::Resume),
            "retry" | "retry-failed" | "retry_failed" => Ok(JobAction::RetryFailed),
            _ => Err(format!("unknown job action `{s}`: the actions are cancel, pause, resume, retry")),
        }
    }
}

/// The dataset layout an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportLayout {
    #[serde(rename = "celebamask-hq")]
    CelebamaskHq,
    Ffhq,
    Photos,
    /// The authors' MMTT release: {train,val,test}.json with images and masks.
    MmttRelease,
}

impl ImportLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportLayout::CelebamaskHq => "celebamask-hq",
            ImportLayout::Ffhq => "ffhq",
            ImportLayout::Photos => "photos",
            ImportLayout::MmttRelease => "mmtt-release",
        }
    }
    /// The face dataset it stores (None for the release, which stores samples).
    pub fn dataset(self) -> Option<crate::dataset::import::datasets::Dataset> {
        use crate::dataset::import::datasets::Dataset;
        match self {
            ImportLayout::CelebamaskHq => Some(Dataset::CelebAMaskHq),
            ImportLayout::Ffhq => Some(Dataset::Ffhq),
            ImportLayout::Photos => Some(Dataset::Photos),
            ImportLayout::MmttRelease => None,
        }
    }
}

impl FromStr for ImportLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown dataset layout `{s}`: the layouts are celebamask-hq, ffhq, photos, mmtt-release"))
    }
}

fn default_max_side() -> u32 {
    12_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSpec {
    pub dataset: ImportLayout,
    /// A folder on the server (the worker's machine).
    pub root: PathBuf,
    /// At most this many inputs, in the dataset's order.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Largest accepted image side (decompression-bomb guard).
    #[serde(default = "default_max_side")]
    pub max_side: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasksSpec {
    pub seed: u64,
    /// Only this dataset's sources (`celebamask-hq`, `ffhq`, `photos`); all when absent.
    #[serde(default)]
    pub dataset: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_shard() -> u64 {
    1_000_000_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    pub format: crate::dataset::export::Format,
    /// A new or empty folder, or one holding an earlier export of the same options (resumed).
    pub out: PathBuf,
    #[serde(default)]
    pub include_unreviewed: bool,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub datasets: Vec<String>,
    /// New splits for this export: (seed, ratios).
    #[serde(default)]
    pub resplit: Option<(u64, crate::storage::split::SplitRatios)>,
    #[serde(default)]
    pub link: bool,
    #[serde(default = "default_true")]
    pub originals: bool,
    #[serde(default = "default_shard")]
    pub shard_bytes: u64,
}

impl ExportSpec {
    pub fn options(&self) -> crate::dataset::export::ExportOptions {
        let mut o = crate::dataset::export::ExportOptions::new(self.format, self.out.clone());
        o.include_unreviewed = self.include_unreviewed;
        o.methods = self.methods.clone();
        o.datasets = self.datasets.clone();
        o.resplit = self.resplit;
        o.link = self.link;
        o.originals = self.originals;
        o.shard_bytes = self.shard_bytes;
        o
    }
}

fn default_threshold() -> u8 {
    127
}

/// `mmtt eval report` as a job: the paper's Table 2 row of one prediction file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    /// The method name shown in the row (and on the leaderboard).
    pub name: String,
    /// Release-format ground truth (`test.json` of an `mmtt` export).
    pub gt: PathBuf,
    /// The JSONL prediction file.
    pub predictions: PathBuf,
    /// Folder the ground truth's mask paths are relative to (default: the ground truth's folder).
    #[serde(default)]
    pub gt_masks: Option<PathBuf>,
    /// Folder the predictions' mask paths are relative to (default: the prediction file's folder).
    #[serde(default)]
    pub masks: Option<PathBuf>,
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// pycocoevalcap's meteor/ folder (default: found on the machine).
    #[serde(default)]
    pub meteor_data: Option<PathBuf>,
    /// The trained model the predictions came from: with `regions`, the row is one of the
    /// model's Table 3 rows on the results page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The regions variant the predictions were made with (`fpn`, `none`, `gt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<mmtt_model::talker::train::RegionSource>,
}

impl EvalSpec {
    pub fn gt_base(&self) -> PathBuf {
        self.gt_masks.clone().unwrap_or_else(|| self.gt.parent().map(|p| p.to_path_buf()).unwrap_or_default())
    }
    pub fn pred_base(&self) -> PathBuf {
        self.masks.clone().unwrap_or_else(|| self.predictions.parent().map(|p| p.to_path_buf()).unwrap_or_default())
    }
}

/// A job's typed parameters, stored as `jobs.params`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobSpec {
    Import(ImportSpec),
    Masks(MasksSpec),
    Forge(ForgeRequest),
    Export(ExportSpec),
    Eval(EvalSpec),
    Train(train::TrainSpec),
    Table3(table3::Table3Spec),
    Assist(assist::AssistSpec),
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Import(_) => JobKind::Import,
            JobSpec::Masks(_) => JobKind::Masks,
            JobSpec::Forge(_) => JobKind::Forge,
            JobSpec::Export(_) => JobKind::Export,
            JobSpec::Eval(_) => JobKind::Eval,
            JobSpec::Train(_) => JobKind::Train,
            JobSpec::Table3(_) => JobKind::Table3,
            JobSpec::Assist(_) => JobKind::Assist,
        }
    }
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            JobSpec::Import(s) => s.validate(),
            JobSpec::Masks(s) => s.validate(),
            JobSpec::Forge(s) => forge::validate(s),
            JobSpec::Export(s) => s.validate(),
            JobSpec::Eval(s) => s.validate(),
            JobSpec::Train(s) => s.validate(),
            JobSpec::Table3(s) => s.validate(),
            JobSpec::Assist(s) => s.validate(),
        }
    }
    /// Attempts a worker gets at the job before it is failed (forge: per item).
    pub fn max_attempts(&self) -> i32 {
        match self {
            JobSpec::Forge(r) => r.max_attempts.max(1),
            _ => 3,
        }
    }
}

/// A refused job request: the field and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

impl SpecError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        SpecError { field, message: message.into() }
    }
}

fn existing_dir(field: &'static str, p: &std::path::Path) -> Result<(), SpecError> {
    if p.as_os_str().is_empty() {
        return Err(SpecError::new(field, "give a folder on the server"));
    }
    if !p.is_dir() {
        return Err(SpecError::new(field, format!("{} is not a directory on the server: give an existing folder", p.display())));
    }
    Ok(())
}

fn existing_file(field: &'static str, p: &std::path::Path) -> Result<(), SpecError> {
    if !p.is_file() {
        return Err(SpecError::new(field, format!("{} is not a file on the server: give an existing file", p.display())));
    }
    Ok(())
}

/// Refuses a path outside the allowed roots (the console's server-side folders).
pub fn check_under_roots(field: &'static str, p: &std::path::Path, roots: &[PathBuf]) -> Result<(), SpecError> {
    let canon = p.canonicalize().map_err(|e| SpecError::new(field, format!("{}: {e}: give an existing folder", p.display())))?;
    if roots.iter().filter_map(|r| r.canonicalize().ok()).any(|r| canon.starts_with(&r)) {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!(
                "{} is outside the allowed folders ({}): choose a folder under one of them",
                p.display(),
                roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

impl ImportSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        existing_dir("root", &self.root)?;
        if self.limit == Some(0) {
            return Err(SpecError::new("limit", "0 imports nothing: give a positive limit, or none for every input"));
        }
        if self.max_side < 64 {
            return Err(SpecError::new("max_side", "must be at least 64 pixels (default 12000)"));
        }
        Ok(())
    }
}

impl MasksSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(d) = &self.dataset
            && !crate::dataset::import::datasets::Dataset::ALL.iter().any(|x| x.name() == d)
        {
            return Err(SpecError::new("dataset", format!("unknown dataset `{d}`: give celebamask-hq, ffhq or photos, or none for all")));
        }
        Ok(())
    }
}

impl ExportSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.out.as_os_str().is_empty() {
            return Err(SpecError::new("out", "give the folder to export into"));
        }
        if self.out.is_file() {
            return Err(SpecError::new("out", format!("{} is a file: give a new or empty folder", self.out.display())));
        }
        if self.shard_bytes < 1024 {
            return Err(SpecError::new("shard_bytes", "must be at least 1024 bytes"));
        }
        // methods filter stored forgeries by name (synthetic and imported ones have their own names):
        // one that matches nothing gives "nothing to export"
        if let Some(m) = self.methods.iter().find(|m| m.trim().is_empty()) {
            return Err(SpecError::new("methods", format!("`{m}` is not a method name: give names like patch-inpaint")));
        }
        for d in &self.datasets {
            if !["celebamask-hq", "ffhq", "photos", "synthetic", "mmtt-release"].contains(&d.as_str()) {
                return Err(SpecError::new(
                    "datasets",
                    format!("unknown dataset `{d}`: give celebamask-hq, ffhq, photos, synthetic or mmtt-release"),
                ));
            }
        }
        Ok(())
    }
}

impl EvalSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            return Err(SpecError::new("name", "give the method's name (1 to 100 characters)"));
        }
        existing_file("gt", &self.gt)?;
        existing_file("predictions", &self.predictions)?;
        existing_dir("gt_masks", &self.gt_base())?;
        existing_dir("masks", &self.pred_base())?;
        if let Some(m) = &self.meteor_data {
            existing_dir("meteor_data", m)?;
        }
        match (&self.model, self.regions) {
            (Some(m), Some(_)) if m.trim().is_empty() || m.chars().count() > 100 => {
                Err(SpecError::new("model", "give the trained model's name (1 to 100 characters)"))
            }
            (Some(_), Some(_)) | (None, None) => Ok(()),
            (Some(_), None) => Err(SpecError::new(
                "regions",
                format!("a Table 3 row needs its regions variant as well as the model: give {}", crate::predict::VARIANTS_HELP),
            )),
            (None, Some(_)) => Err(SpecError::new("model", "a Table 3 row needs the trained model's name as well as its regions variant")),
        }
    }
}

pub(crate) fn method_names() -> String {
    mmtt_generators::registry::Method::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no job {0}")]
    NotFound(Uuid),
    #[error("cannot {action} job {id}: it is {state}{hint}")]
    Transition { id: Uuid, action: &'static str, state: JobState, hint: &'static str },
    #[error("job {0}: stored parameters cannot be read: {1}")]
    BadParams(Uuid, String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Which jobs [`list`] returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub kind: Option<JobKind>,
    pub state: Option<JobState>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub worker: Option<String>,
    pub message: String,
}

/// A job as the CLI and the console show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: Uuid,
    pub kind: JobKind,
    pub state: JobState,
    pub params: serde_json::Value,
    pub started_by: String,
    /// Units done (forge: items; import: inputs; masks: sources; export: samples).
    pub done: i64,
    pub total: i64,
    pub failed: i64,
    /// Forge: items waiting and items held by workers now.
    pub queued: i64,
    pub running: i64,
    pub rate_per_s: Option<f64>,
    pub eta_s: Option<f64>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Why no live worker can run it now (no worker, model missing, no CUDA), when so.
    pub blocked: Option<String>,
    /// The worker holding the job (forge: the workers holding its items).
    pub workers: Vec<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Forge: the failed items and their reasons (up to 50).
    pub failures: Vec<ItemFailure>,
    /// The most recent events, newest last (only from [`get`]; [`list`] leaves it empty).
    pub events: Vec<JobEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemFailure {
    pub item: Uuid,
    pub method: String,
    pub reason: Option<String>,
}

/// A live worker, as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub name: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub devices: Vec<String>,
    pub providers: Vec<String>,
    pub models: Vec<String>,
    /// Forgery methods it can run now (built-ins, and those whose model files it has).
    pub methods: Vec<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub current_job: Option<Uuid>,
    pub rate_per_s: Option<f64>,
    pub done: i64,
}

/// Validates and queues a job; a worker (`mmtt worker`, or the one `mmtt serve` runs) picks it up.
/// Nothing is stored when the spec is refused.
pub async fn submit(pool: &PgPool, spec: &JobSpec, started_by: &str) -> Result<Uuid, JobError> {
    spec.validate()?;
    if let JobSpec::Train(t) = spec {
        train::check_run_dir_free(pool, t, None).await?;
    }
    let id = Uuid::new_v4();
    insert(pool, id, spec, started_by, None).await?;
    Ok(id)
}

/// Inserts the job row: queued, or (with `holder`) already running under that worker's lease.
pub(crate) async fn insert(
    pool: &PgPool,
    id: Uuid,
    spec: &JobSpec,
    started_by: &str,
    holder: Option<(&str, std::time::Duration)>,
) -> Result<(), JobError> {
    let params = serde_json::to_value(spec).map_err(|e| JobError::BadParams(id, e.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO jobs (id, kind, params, started_by, state, max_attempts, worker, lease_until, heartbeat_at, attempts, started_at) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NULL THEN 'queued' ELSE 'running' END, $6, $5, \
                 CASE WHEN $5::text IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END, \
                 CASE WHEN $5::text IS NULL THEN NULL ELSE now() END, \
                 CASE WHEN $5::text IS NULL THEN 0 ELSE 1 END, CASE WHEN $5::text IS NULL THEN NULL ELSE now() END)",
    )
    .bind(id)
    .bind(spec.kind().as_str())
    .bind(&params)
    .bind(started_by)
    .bind(holder.map(|h| h.0))
    .bind(spec.max_attempts())
    .bind(holder.map(|h| h.1.as_secs_f64()).unwrap_or(0.0))
    .execute(&mut *tx)
    .await?;
    event_in(&mut tx, id, "info", holder.map(|h| h.0), &format!("submitted by {started_by}")).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends an event to a job's log, keeping the last [`EVENTS_KEPT`].
pub async fn event(pool: &PgPool, job: Uuid, level: &str, worker: Option<&str>, message: &str) -> Result<(), JobError> {
    let mut c = pool.acquire().await?;
    event_in(&mut c, job, level, worker, message).await
}

async fn event_in(c: &mut sqlx::PgConnection, job: Uuid, level: &str, worker: Option<&str>, message: &str) -> Result<(), JobError> {
    let message: String = message.chars().take(4000).collect();
    sqlx::query("INSERT INTO job_events (job_id, level, worker, message) VALUES ($1, $2, $3, $4)")
        .bind(job)
        .bind(level)
        .bind(worker)
        .bind(&message)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "DELETE FROM job_events WHERE job_id = $1 AND id < \
         (SELECT id FROM job_events WHERE job_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
    )
    .bind(job)
    .bind(EVENTS_KEPT - 1)
    .execute(&mut *c)
    .await?;
    Ok(())
}

const VIEW_SQL: &str = "SELECT j.id, j.kind, j.state, j.params, j.started_by, \
      CASE WHEN j.fanned_out THEN coalesce(f.done, 0) ELSE j.done END, \
      CASE WHEN j.fanned_out THEN coalesce(f.total, 0) ELSE j.total END, \
      CASE WHEN j.fanned_out THEN coalesce(f.failed, 0) ELSE j.failed END, \
      coalesce(f.queued, 0), coalesce(f.running, 0), \
      CASE WHEN j.fanned_out THEN f.rate ELSE j.rate_per_s END, \
      j.result, j.error, j.worker, f.workers, j.attempts, j.max_attempts, \
      j.created_at, j.started_at, j.finished_at, j.updated_at, j.heartbeat_at, j.fanned_out, j.lease_until < now() \
    FROM jobs j LEFT JOIN LATERAL ( \
      SELECT count(*) FILTER (WHERE i.status = 'done') AS done, count(*) AS total, \
             count(*) FILTER (WHERE i.status = 'failed') AS failed, count(*) FILTER (WHERE i.status = 'queued') AS queued, \
             count(*) FILTER (WHERE i.status = 'running') AS running, \
             array_agg(DISTINCT i.worker) FILTER (WHERE i.status = 'running' AND i.worker IS NOT NULL) AS workers, \
             CASE WHEN count(*) FILTER (WHERE i.status = 'done' AND i.updated_at > now() - interval '5 minutes') >= 2 THEN \
               (count(*) FILTER (WHERE i.status = 'done' AND i.updated_at > now() - interval '5 minutes') - 1)::float8 \
               / greatest(extract(epoch FROM max(i.updated_at) FILTER (WHERE i.status = 'done' AND i.updated_at > now() - interval '5 minutes') \
                                          - min(i.updated_at) FILTER (WHERE i.status = 'done' AND i.updated_at > now() - interval '5 minutes'))::float8, 0.001) \
             END AS rate \
      FROM forge_items i WHERE j.fanned_out AND i.job_id = j.id) f ON true";

fn view_of(r: &sqlx::postgres::PgRow) -> Result<(JobView, bool, Option<bool>), JobError> {
    let id: Uuid = r.get(0);
    let kind: String = r.get(1);
    let state: String = r.get(2);
    let kind = kind.parse::<JobKind>().map_err(|e| JobError::BadParams(id, e))?;
    let state = state.parse::<JobState>().map_err(|e| JobError::BadParams(id, e))?;
    let (done, total, failed): (i64, i64, i64) = (r.get(5), r.get(6), r.get(7));
    let rate: Option<f64> = r.get(10);
    let running: i64 = r.get(9);
    // a training job's rate is images/s and its progress steps: a step is a batch of images
    let per_unit = if kind == JobKind::Train {
        r.get::<serde_json::Value, _>(3).pointer("/config/batch_size").and_then(|b| b.as_f64()).filter(|b| *b >= 1.0).unwrap_or(1.0)
    } else {
        1.0
    };
    let eta_s = match rate {
        Some(x) if x > 0.0 && matches!(state, JobState::Running) && total > 0 => {
            Some(((total - done - failed).max(0)) as f64 * per_unit / x)
        }
        _ => None,
    };
    let holder: Option<String> = r.get(13);
    let item_workers: Option<Vec<String>> = r.get(14);
    let fanned_out: bool = r.get(22);
    let workers = if fanned_out { item_workers.unwrap_or_default() } else { holder.into_iter().collect() };
    Ok((
        JobView {
            id,
            kind,
            state,
            params: r.get(3),
            started_by: r.get(4),
            done,
            total,
            failed,
            queued: r.get(8),
            running,
            rate_per_s: rate.filter(|_| state == JobState::Running),
            eta_s,
            result: r.get(11),
            error: r.get(12),
            blocked: None,
            workers,
            attempts: r.get(15),
            max_attempts: r.get(16),
            created_at: r.get(17),
            started_at: r.get(18),
            finished_at: r.get(19),
            updated_at: r.get(20),
            heartbeat_at: r.get(21),
            failures: vec![],
            events: vec![],
        },
        fanned_out,
        r.get(23),
    ))
}

/// Jobs of every kind, newest first.
pub async fn list(pool: &PgPool, filter: &JobFilter) -> Result<Vec<JobView>, JobError> {
    runner::sweep(pool).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{VIEW_SQL} WHERE ($1::text IS NULL OR j.kind = $1) AND ($2::text IS NULL OR j.state = $2) \
         ORDER BY j.created_at DESC, j.id LIMIT $3"
    )))
    .bind(filter.kind.map(|k| k.as_str()))
    .bind(filter.state.map(|s| s.as_str()))
    .bind(filter.limit.unwrap_or(100).clamp(1, 10_000))
    .fetch_all(pool)
    .await?;
    let live = live_workers(pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let (mut v, fanned_out, lease_expired) = view_of(r)?;
        v.blocked = blocked(&v, fanned_out, lease_expired, &live);
        if v.kind == JobKind::Forge && v.failed > 0 {
            v.failures = failures(pool, v.id).await?;
        }
        out.push(v);
    }
    Ok(out)
}

/// One job with its recent events (newest last).
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<JobView>, JobError> {
    runner::sweep(pool).await?;
    let Some(r) = sqlx::query(sqlx::AssertSqlSafe(format!("{VIEW_SQL} WHERE j.id = $1"))).bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let (mut v, fanned_out, lease_expired) = view_of(&r)?;
    let live = live_workers(pool).await?;
    v.blocked = blocked(&v, fanned_out, lease_expired, &live);
    if v.kind == JobKind::Forge && v.failed > 0 {
        v.failures = failures(pool, v.id).await?;
    }
    let mut events: Vec<JobEvent> =
        sqlx::query("SELECT at, level, worker, message FROM job_events WHERE job_id = $1 ORDER BY id DESC LIMIT 50")
            .bind(id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| JobEvent { at: r.get(0), level: r.get(1), worker: r.get(2), message: r.get(3) })
            .collect();
    events.reverse();
    v.events = events;
    Ok(Some(v))
}

async fn failures(pool: &PgPool, job: Uuid) -> Result<Vec<ItemFailure>, JobError> {
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT id, method, last_error FROM forge_items WHERE job_id = $1 AND status = 'failed' ORDER BY updated_at LIMIT 50",
    )
    .bind(job)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(item, method, reason)| ItemFailure { item, method, reason }).collect())
}

/// Why no live worker can run the job now, when that is so.
fn blocked(v: &JobView, fanned_out: bool, lease_expired: Option<bool>, live: &[WorkerView]) -> Option<String> {
    if !matches!(v.state, JobState::Queued | JobState::Running) {
        return None;
    }
    // a job held by a live process (a CLI command runs its own) is not blocked
    if !fanned_out && v.state == JobState::Running && lease_expired == Some(false) {
        return None;
    }
    if fanned_out && v.queued == 0 {
        return None;
    }
    if live.is_empty() {
        let why = match (&v.workers.first(), v.heartbeat_at, lease_expired) {
            (Some(w), Some(at), Some(true)) if !fanned_out => {
                format!("worker {w} stopped heartbeating at {}; ", at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            _ => String::new(),
        };
        return Some(format!("{why}no live worker: start one with `mmtt worker` (or `mmtt serve`, which runs one)"));
    }
    if v.kind == JobKind::Forge {
        let spec: Option<ForgeRequest> = serde_json::from_value(v.params.clone()).ok();
        if let Some(spec) = spec {
            if spec.device == mmtt_generators::forge::onnx::Device::Cuda && !live.iter().any(|w| w.devices.iter().any(|d| d == "cuda")) {
                return Some(format!(
                    "CUDA requested and no live worker has CUDA (live: {}); start `mmtt worker --device cuda` on a GPU machine",
                    live.iter().map(|w| format!("{} [{}]", w.name, w.devices.join(","))).collect::<Vec<_>>().join(", ")
                ));
            }
            let missing: Vec<&String> = spec.methods.iter().filter(|m| !live.iter().any(|w| w.methods.contains(m))).collect();
            if !missing.is_empty() {
                return Some(format!(
                    "no live worker has the model of {}: put the model files into a worker's models folder (see generators/manifests/) and restart it",
                    missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    None
}

/// Cancels, pauses, resumes or retries a job; records who did it in the job's events.
pub async fn control(pool: &PgPool, id: Uuid, action: JobAction, by: &str) -> Result<JobView, JobError> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT state, fanned_out FROM jobs WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
    let Some((state, fanned_out)) = row else { return Err(JobError::NotFound(id)) };
    let state: JobState = state.parse().map_err(|e| JobError::BadParams(id, e))?;
    let refuse = |hint: &'static str| JobError::Transition { id, action: action.as_str(), state, hint };
    let running_items: i64 = if fanned_out {
        sqlx::query_scalar("SELECT count(*) FROM forge_items WHERE job_id = $1 AND status = 'running' AND lease_until > now()")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
    } else {
        0
    };
    let new_state = match action {
        JobAction::Cancel => match state {
            JobState::Queued | JobState::Paused if running_items == 0 => JobState::Cancelled,
            JobState::Queued | JobState::Paused | JobState::Running => JobState::Cancelling,
            _ => return Err(refuse("")),
        },
        JobAction::Pause => match state {
            JobState::Queued | JobState::Running => JobState::Paused,
            _ => return Err(refuse(": only a queued or running job can be paused")),
        },
        JobAction::Resume => match state {
            JobState::Paused if fanned_out => JobState::Running,
            JobState::Paused => JobState::Queued,
            _ => return Err(refuse(": only a paused job can be resumed")),
        },
        JobAction::RetryFailed => {
            if fanned_out {
                let n = sqlx::query(
                    "UPDATE forge_items SET status = 'queued', attempts = 0, lease_until = NULL, updated_at = now() \
                     WHERE job_id = $1 AND status = 'failed'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 && !matches!(state, JobState::Failed | JobState::Cancelled) {
                    return Err(refuse(" and has no failed items to retry"));
                }
                event_in(&mut tx, id, "info", None, &format!("{n} failed items re-queued by {by}")).await?;
                if matches!(state, JobState::Paused | JobState::Cancelling) { state } else { JobState::Running }
            } else {
                match state {
                    JobState::Failed | JobState::Cancelled => JobState::Queued,
                    _ => return Err(refuse(": only a failed or cancelled job can be retried")),
                }
            }
        }
    };
    sqlx::query(
        "UPDATE jobs SET state = $2, updated_at = now(), \
           finished_at = CASE WHEN $2 IN ('cancelled', 'failed', 'done') THEN now() ELSE NULL END, \
           error = CASE WHEN $3 THEN NULL WHEN $2 = 'cancelled' THEN coalesce(error, 'cancelled by ' || $4) ELSE error END, \
           attempts = CASE WHEN $3 AND NOT fanned_out THEN 0 ELSE attempts END, \
           worker = CASE WHEN $3 AND NOT fanned_out THEN NULL ELSE worker END, \
           lease_until = CASE WHEN $3 AND NOT fanned_out THEN NULL ELSE lease_until END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(new_state.as_str())
    .bind(action == JobAction::RetryFailed)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    event_in(&mut tx, id, "info", None, &format!("{} by {by}: {state} -> {new_state}", action.as_str())).await?;
    tx.commit().await?;
    get(pool, id).await?.ok_or(JobError::NotFound(id))
}

/// Workers that heartbeated within two of their leases and have not stopped.
pub async fn live_workers(pool: &PgPool) -> Result<Vec<WorkerView>, JobError> {
    let rows = sqlx::query(
        "SELECT name, host, pid, version, devices, providers, models, methods, started_at, heartbeat_at, current_job, rate_per_s, done \
         FROM workers WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => 2 * lease_seconds + 5) ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| WorkerView {
            name: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            version: r.get(3),
            devices: r.get(4),
            providers: r.get(5),
            models: r.get(6),
            methods: r.get(7),
            started_at: r.get(8),
            heartbeat_at: r.get(9),
            current_job: r.get(10),
            rate_per_s: r.get(11),
            done: r.get(12),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_states_actions_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert!(JobState::Done.is_terminal() && !JobState::Paused.is_terminal());
        assert_eq!("retry".parse::<JobAction>(), Ok(JobAction::RetryFailed));
        assert!("explode".parse::<JobAction>().unwrap_err().contains("cancel, pause, resume, retry"));
    }

    #[test]
    fn specs_serialize_with_their_kind_and_refuse_bad_fields() {
        let s = JobSpec::Masks(MasksSpec { seed: 3, dataset: None });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "masks");
        assert!(matches!(serde_json::from_value::<JobSpec>(v).unwrap(), JobSpec::Masks(MasksSpec { seed: 3, .. })));
        let bad = ImportSpec { dataset: ImportLayout::Photos, root: "/nonexistent/x".into(), limit: None, max_side: 12_000 };
        assert_eq!(bad.validate().unwrap_err().field, "root");
        let zero = ImportSpec { root: std::env::temp_dir(), limit: Some(0), ..bad };
        assert_eq!(zero.validate().unwrap_err().field, "limit");
        assert_eq!("mmtt-release".parse::<ImportLayout>(), Ok(ImportLayout::MmttRelease));
    }
}
