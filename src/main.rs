//! The `mmtt` command line. Parses arguments, opens the [`mmtt::app::App`], dispatches, and turns
//! errors into one clear message and a non-zero exit.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mmtt::app::App;
use mmtt::dataset::import::{self, datasets::Dataset, decode::DecodeLimits};
use mmtt::dataset::masks;
use mmtt::storage::db::cluster;
use mmtt::storage::store::BlobStore;
use mmtt_generators::detect::FaceFinder;
use mmtt_generators::forge::onnx::Device;
use mmtt_generators::plan::{self, PartSource};
use sqlx::Row;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "mmtt", version, about = "MMTT: interpretable face-forgery dataset platform")]
struct Cli {
    /// Where images, masks and the private PostgreSQL cluster live.
    #[arg(long, global = true, env = "MMTT_DATA_DIR", default_value = "./mmtt-data")]
    data_dir: PathBuf,
    /// PostgreSQL server to use; without it mmtt runs a private cluster under the data directory.
    #[arg(long, global = true, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the private PostgreSQL cluster.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Import source faces.
    Import {
        #[arg(value_enum)]
        dataset: ImportKind,
        /// The dataset's folder.
        #[arg(long)]
        root: PathBuf,
        /// Import at most this many inputs (in the dataset's order).
        #[arg(long)]
        limit: Option<usize>,
        /// Largest accepted image width or height (decompression-bomb guard).
        #[arg(long, default_value_t = 12_000)]
        max_side: u32,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Find faces and their 68 landmarks in images (`landmarks backfill`: store them for sources
    /// that have none).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Landmarks {
        #[command(subcommand)]
        action: Option<LandmarksAction>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Plan forgery masks, show their statistics, preview them.
    Masks {
        #[command(subcommand)]
        action: MasksAction,
    },
    /// List stored source faces.
    Sources {
        #[command(subcommand)]
        action: SourcesAction,
    },
    /// Import sample faces, plan masks and write previews.
    Demo {
        /// More face photos to import.
        #[arg(long)]
        faces: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after the forgeries instead of serving the web app.
        #[arg(long)]
        no_serve: bool,
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
    },
    /// Build test inputs from face photos.
    Fixtures {
        #[command(subcommand)]
        action: FixturesAction,
    },
    /// Enqueue a forgery job (and with --wait, work on it until it is done).
    Forge {
        /// The method (classic-swap, e4s, patch-inpaint, part-swap, mat, lama, sdxl); with --mix paper, three of them
        /// for swap, transformer and diffusion, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        method: Vec<String>,
        /// Number of forgeries to make.
        #[arg(long)]
        count: u64,
        #[arg(long)]
        seed: u64,
        /// Which mask plans to use (planned now where missing); default: the forge seed.
        #[arg(long)]
        plan_seed: Option<u64>,
        /// `paper`: the paper's method proportions (44,343 : 37,440 : 46,520).
        #[arg(long)]
        mix: Option<String>,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        #[arg(long, default_value_t = 3)]
        max_attempts: i32,
        /// Run a worker in this process until the job is done.
        #[arg(long)]
        wait: bool,
        /// SDXL: the prompt (default: generators/manifests/sdxl.json's face-retouching prompt).
        #[arg(long)]
        prompt: Option<String>,
        /// SDXL: the negative prompt (default: the manifest's).
        #[arg(long)]
        negative_prompt: Option<String>,
        /// SDXL: denoising steps (default 30).
        #[arg(long)]
        steps: Option<u32>,
        /// SDXL: classifier-free guidance scale (default 7.5).
        #[arg(long)]
        guidance: Option<f32>,
        /// SDXL: strength in (0, 1] (default 0.99).
        #[arg(long)]
        strength: Option<f32>,
        /// SDXL: euler (default) or dpm++2m.
        #[arg(long)]
        scheduler: Option<String>,
        #[command(flatten)]
        worker: WorkerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Process queued forgery items (any number of workers, on any machine).
    Worker {
        #[command(flatten)]
        worker: WorkerArgs,
        /// Exit when nothing is queued or running.
        #[arg(long)]
        until_empty: bool,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Show jobs of every kind (import, masks, forge, export, eval): progress, failures; control them.
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        #[arg(long)]
        json: bool,
        /// Only this kind (import, masks, forge, export, eval, train).
        #[arg(long)]
        kind: Option<String>,
        /// Only this state (queued, running, paused, cancelling, cancelled, failed, done).
        #[arg(long)]
        state: Option<String>,
    },
    /// List forgeries.
    Forgeries {
        #[command(subcommand)]
        action: ForgeriesAction,
    },
    /// Forge one image from files (like IOPaint's run), for people and scripts.
    Generate {
        #[arg(long)]
        method: String,
        #[arg(long)]
        image: PathBuf,
        /// White (non-zero) = regenerate.
        #[arg(long)]
        mask: PathBuf,
        /// The donor face, for classic-swap, e4s and part-swap (patch-inpaint copies from it the regions
        /// the mask leaves no counterpart of).
        #[arg(long)]
        source: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Also write the generated pixels as float32 HWC 0..255 (before rounding and compositing).
        #[arg(long)]
        raw: Option<PathBuf>,
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Generator settings as JSON (SDXL: {"prompt", "negative_prompt", "steps", "guidance", "strength"}).
        #[arg(long)]
        options: Option<String>,
        /// E4S: write the swapped face region's mask here (it replaces --mask in the composite).
        #[arg(long)]
        mask_out: Option<PathBuf>,
    },
    /// Print throughput figures.
    Bench {
        #[command(subcommand)]
        action: BenchAction,
    },
    /// Serve the annotation and QA web app (with a worker for the jobs it starts).
    Serve {
        /// Run no worker in this process (run `mmtt worker` elsewhere).
        #[arg(long)]
        no_worker: bool,
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Active seconds needed on a task before its annotation can be submitted.
        #[arg(long, default_value_t = 60.0)]
        min_seconds: f64,
        /// Heartbeat interval of the annotation page; each heartbeat credits at most this.
        #[arg(long, default_value_t = 5.0)]
        heartbeat_seconds: f64,
        /// Minutes a claimed task stays with its annotator without a heartbeat.
        #[arg(long, default_value_t = 30)]
        lease_minutes: u64,
        /// A server folder the admin console may import from (repeatable; default DATA_DIR/incoming).
        #[arg(long = "import-root", env = "MMTT_IMPORT_ROOTS", value_delimiter = ':')]
        import_roots: Vec<PathBuf>,
    },
    /// Export accepted triplets as a dataset (hf, coco, webdataset, mmtt); resumes when re-run.
    Export {
        #[arg(long, value_enum)]
        format: mmtt::dataset::export::Format,
        #[arg(long)]
        out: PathBuf,
        /// Submitted, not yet reviewed annotations too.
        #[arg(long)]
        include_unreviewed: bool,
        /// Only these methods (repeatable).
        #[arg(long = "method")]
        methods: Vec<String>,
        /// Only these source datasets (repeatable).
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        /// Draw new splits for this export (refused when a swap pair would cross them).
        #[arg(long, requires = "seed")]
        resplit: bool,
        /// With --resplit: the seed.
        #[arg(long)]
        seed: Option<u64>,
        /// With --resplit: train:validation:test.
        #[arg(long, default_value = "8:1:1")]
        ratios: String,
        /// Hard-link images from the data directory instead of copying.
        #[arg(long)]
        link: bool,
        /// hf: leave out the originals.
        #[arg(long)]
        no_originals: bool,
        /// webdataset: bytes per shard.
        #[arg(long, default_value_t = 1_000_000_000)]
        shard_size: u64,
        /// Run in a background process (log under DATA_DIR/logs); follow it with `mmtt jobs`
        /// or the admin dashboard.
        #[arg(long)]
        background: bool,
        #[arg(long)]
        json: bool,
    },
    /// Dataset statistics (spec section 6) and the Table 1 row.
    Stats {
        #[arg(long)]
        json: bool,
        /// Count submitted captions too (default: accepted ones).
        #[arg(long)]
        include_unreviewed: bool,
        /// Write the charts (SVG) into this folder.
        #[arg(long)]
        charts: Option<PathBuf>,
    },
    /// ForgeryTalker metrics, as the reference tools compute them (JSON on stdout, a table on stderr).
    Eval {
        #[command(subcommand)]
        action: EvalAction,
    },
    /// The 21 region labels a text mentions (the authors' extractor, spec section 7).
    Regions {
        text: String,
        /// Print the 21-value vector too.
        #[arg(long)]
        vector: bool,
    },
    /// Fill a benchmark/test database with synthetic samples.
    SeedSynthetic {
        #[arg(long)]
        samples: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "forged")]
        state: mmtt::devtools::synthetic::SyntheticState,
        /// Add synthetic rows to a database that holds real data.
        #[arg(long)]
        force: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Project settings.
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
}

#[derive(clap::Args, Clone)]
struct WorkerArgs {
    /// Where the ONNX models live (default DATA_DIR/models).
    #[arg(long)]
    models: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Seconds a claimed item stays reserved to this worker.
    #[arg(long, default_value_t = 600)]
    lease_seconds: u64,
    /// This worker's name (default host-pid).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
        }
    }
}

#[derive(Subcommand)]
enum JobsAction {
    /// One job with its events.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: its workers stop within one lease.
    Cancel { id: uuid::Uuid },
    /// Pause a job: its items are not claimed until resumed.
    Pause { id: uuid::Uuid },
    /// Resume a paused job where it was.
    Resume { id: uuid::Uuid },
    /// Re-queue a forge job's failed items, or a failed or cancelled job.
    Retry { id: uuid::Uuid },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; prints a generated password unless --password is given.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, env = "MMTT_NEW_PASSWORD")]
        password: Option<String>,
    },
    /// Print a new API token for the admin NAME (scripts send `Authorization: Bearer TOKEN`).
    Token {
        name: String,
        /// What the token is for (shown nowhere but the database).
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Subcommand)]
enum ForgeriesAction {
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MetricSet {
    All,
    Ngram,
    Meteor,
}

/// Meteor's data from `--meteor-data`, else found on the machine; an error saying where mmtt
/// looked and how to install it when there is none (`--metrics ngram` skips METEOR).
fn meteor_data(explicit: Option<&std::path::Path>) -> Result<mmtt_model::eval::meteor::MeteorData> {
    Ok(match explicit {
        Some(p) => mmtt_model::eval::meteor::MeteorData::at(p)?,
        None => mmtt_model::eval::meteor::MeteorData::require()?,
    })
}

#[derive(Subcommand)]
enum EvalAction {
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr: refs `{"id": ["ref", ...]}`, preds `{"id": "hyp"}`.
    Captions {
        #[arg(long)]
        refs: PathBuf,
        #[arg(long)]
        preds: PathBuf,
        /// pycocoevalcap's meteor/ folder (meteor-1.5.jar, data/paraphrase-en.gz); found in
        /// MMTT_METEOR_DATA or the Python site-packages when not given.
        #[arg(long)]
        meteor_data: Option<PathBuf>,
        /// all: every metric (an error without Meteor's data); ngram: BLEU, ROUGE-L, CIDEr
        /// (METEOR null, its data not needed); meteor: METEOR only.
        #[arg(long, value_enum, default_value = "all")]
        metrics: MetricSet,
    },
    /// mIoU, cIoU, precision, recall over same-named PNG masks.
    Masks {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        /// A pixel is forged where its 8-bit luma is above this.
        #[arg(long, default_value_t = 127)]
        threshold: u8,
    },
    /// The paper's Table 2 row from release-format ground truth and a JSONL prediction file.
    Report {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        gt_mask_base: PathBuf,
        #[arg(long)]
        pred_mask_base: PathBuf,
        #[arg(long, default_value_t = 127)]
        threshold: u8,
        /// The method name in the printed row.
        #[arg(long, default_value = "mmtt")]
        name: String,
        /// pycocoevalcap's meteor/ folder (see `eval captions`).
        #[arg(long)]
        meteor_data: Option<PathBuf>,
    },
    /// PLM and per-label / macro / micro precision, recall, F1 of 21-label sets per id.
    Labels {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
    },
}

fn read_text(p: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
}

/// Prints `v` as JSON on stdout and its top-level numbers as a table on stderr.
fn print_scores(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            match x {
                serde_json::Value::Number(n) => eprintln!("{k:<12} {:>10.6}", n.as_f64().unwrap_or(0.0)),
                serde_json::Value::Null => eprintln!("{k:<12} {:>10}", "unavailable"),
                _ => {}
            }
        }
    }
    Ok(())
}

/// What `mmtt import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ImportKind {
    /// CelebA-HQ-img/{k}.jpg with CelebAMask-HQ-mask-anno/{k/2000}/{k:05}_{part}.png
    #[value(name = "celebamask-hq")]
    CelebamaskHq,
    /// FFHQ aligned faces (any folder of images, searched recursively)
    Ffhq,
    /// Any photos: faces detected, aligned FFHQ-style
    Photos,
    /// The authors' MMTT release: {train,val,test}.json with images and masks
    #[value(name = "mmtt-release")]
    MmttRelease,
}

#[derive(Subcommand)]
enum BenchAction {
    /// Images/s of the ONNX generators (mmtt vs Python onnxruntime) and the built-in ones.
    Forge {
        /// Folder with mat.onnx and lama.onnx (default: tiny models made by scripts/make_tiny_models.py).
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        n: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// `mmtt stats` time and an hf export against `cp -r` of the same files (and `--link`); fill
    /// the database first with `mmtt seed-synthetic --state accepted`.
    Export {
        /// An empty or new folder for the exports.
        #[arg(long)]
        out: PathBuf,
    },
    /// `mmtt eval masks` over N generated 512x512 mask pairs: time, pairs/s, peak memory.
    Masks {
        #[arg(long, default_value_t = 20_000)]
        n: usize,
    },
    /// `mmtt eval captions` against pycocoevalcap (fresh processes, same files): generated
    /// captions unless --refs/--preds are given.
    Captions {
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        #[arg(long)]
        refs: Option<PathBuf>,
        #[arg(long)]
        preds: Option<PathBuf>,
        /// Runs of the (slow) all-metrics reference, with Java METEOR, and of ours; the best of
        /// each is compared.
        #[arg(long, default_value_t = 2)]
        meteor_runs: usize,
    },
    /// "Next task" + annotation page latency at many concurrent clients (fill the database first
    /// with `mmtt seed-synthetic`).
    Web {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Rounds (next + page + skip) per client.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn worker_options(
    cli: &Cli,
    w: &WorkerArgs,
    device: Device,
    until_empty: bool,
    job: Option<uuid::Uuid>,
) -> mmtt::jobs::forge::WorkerOptions {
    mmtt::jobs::forge::WorkerOptions {
        name: w.name.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        device,
        models_dir: w.models.clone().unwrap_or_else(|| mmtt::jobs::forge::default_models_dir(&cli.data_dir)),
        threads: w.threads,
        lease: std::time::Duration::from_secs(w.lease_seconds.max(1)),
        until_empty,
        job,
        progress: true,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

#[derive(Subcommand)]
enum DbAction {
    /// Start the private cluster and keep it running.
    Start,
    /// Stop the private cluster.
    Stop,
    /// Say whether the private cluster is running.
    Status,
}

#[derive(Subcommand)]
enum MasksAction {
    /// Plan the masks of every source without a plan for this seed.
    Plan {
        #[arg(long)]
        seed: u64,
        #[arg(long, value_enum)]
        dataset: Option<Dataset>,
        #[arg(long)]
        json: bool,
    },
    /// Distribution of the stored plans.
    Stats {
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Run the sampling rules without images.
    Simulate {
        #[arg(long, value_enum)]
        dataset: SimDataset,
        #[arg(long)]
        n: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Draw a source with its regions and masks.
    Preview {
        #[arg(long)]
        source: uuid::Uuid,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SimDataset {
    #[value(name = "celebamask-hq")]
    CelebAMaskHq,
    Ffhq,
}

#[derive(Subcommand)]
enum LandmarksAction {
    /// Detect and store the 68 landmarks of stored sources that have none (CelebAMask-HQ imported
    /// before landmarks were detected at import). Resumable; running again does nothing.
    Backfill {
        /// Only this dataset's sources (default: all).
        #[arg(long, value_enum)]
        dataset: Option<Dataset>,
        /// Search at most this many sources in this run.
        #[arg(long)]
        limit: Option<u64>,
        /// Sources per batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Also search again the sources where no face was found before.
        #[arg(long)]
        retry_no_face: bool,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SourcesAction {
    List {
        #[arg(long, value_enum)]
        dataset: Option<Dataset>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FixturesAction {
    /// Write a CelebAMask-HQ-layout folder built from face photos.
    Celebamask {
        #[arg(long, required = true, num_args = 1..)]
        photos: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write FFHQ-style aligned 1024x1024 PNGs from face photos.
    Ffhq {
        #[arg(long, required = true, num_args = 1..)]
        photos: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProjectAction {
    /// Show the split seed and ratios.
    Show,
    /// Set the split seed and ratios (only before any source is stored).
    SetSplit {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "8:1:1")]
        ratios: mmtt::storage::split::SplitRatios,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MMTT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens the app, runs the body with `$app: &App`, then closes it (stopping the private cluster
/// when this was its last user), whatever the body returned.
macro_rules! with_app {
    ($cli:expr, |$app:ident| $body:block) => {{
        let opened = App::open(&$cli.data_dir, $cli.database_url.as_deref()).await?;
        let r: Result<()> = async {
            let $app = &opened;
            $body
        }
        .await;
        let closed = opened.close().await;
        r?;
        closed
    }};
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Db { action } => {
            let c = cluster::Cluster::new(&cli.data_dir)?;
            match action {
                DbAction::Start => {
                    let started = tokio::task::spawn_blocking({
                        let c = c.clone();
                        move || c.start()
                    })
                    .await??;
                    c.pin()?;
                    c.ensure_database().await?;
                    println!(
                        "private PostgreSQL {} (socket in {}, database {})",
                        if started { "started" } else { "already running" },
                        c.socket_dir().display(),
                        cluster::DATABASE
                    );
                }
                DbAction::Stop => {
                    let stopped = c.stop()?;
                    println!("private PostgreSQL {}", if stopped { "stopped" } else { "was not running" });
                }
                DbAction::Status => match c.status()? {
                    cluster::Status::NotInitialized => println!("not initialized ({} does not exist yet)", c.pgdata().display()),
                    cluster::Status::Stopped => println!("stopped ({})", c.pgdata().display()),
                    cluster::Status::Running => println!(
                        "running (socket in {}{})",
                        c.socket_dir().display(),
                        if c.is_pinned() { ", kept running by `mmtt db start`" } else { "" }
                    ),
                },
            }
            Ok(())
        }
        Command::Import { dataset, root, limit, max_side, json } => {
            let dataset = match dataset {
                ImportKind::CelebamaskHq => mmtt::jobs::ImportLayout::CelebamaskHq,
                ImportKind::Ffhq => mmtt::jobs::ImportLayout::Ffhq,
                ImportKind::Photos => mmtt::jobs::ImportLayout::Photos,
                ImportKind::MmttRelease => mmtt::jobs::ImportLayout::MmttRelease,
            };
            let spec = mmtt::jobs::ImportSpec { dataset, root: root.clone(), limit: *limit, max_side: *max_side };
            with_app!(cli, |app| { mmtt::jobs::cli::import(app, spec, *json).await })
        }
        Command::Landmarks { action: Some(LandmarksAction::Backfill { dataset, limit, batch, retry_no_face, json }), .. } => {
            let opts = import::landmarks::BackfillOptions {
                datasets: dataset.iter().copied().collect(),
                limit: *limit,
                batch: *batch,
                retry_no_face: *retry_no_face,
                progress: true,
            };
            with_app!(cli, |app| {
                let s = import::landmarks::backfill(app, &opts, None).await?;
                s.print_human();
                if *json {
                    println!("{}", serde_json::to_string(&s)?);
                }
                Ok(())
            })
        }
        Command::Landmarks { action: None, images, json } => {
            let finder = FaceFinder::load()?;
            let mut all = Vec::new();
            for p in images {
                let res = import::decode::read_image(p, DecodeLimits::default())
                    .map(|d| finder.faces(&d.rgb))
                    .map_err(|reason| anyhow::anyhow!("{}: {reason}", p.display()));
                match res {
                    Ok(faces) => {
                        if !json {
                            println!("{}: {} face(s)", p.display(), faces.len());
                            for (i, f) in faces.iter().enumerate() {
                                let b = f.face_box;
                                println!("  face {i}: box ({}, {})-({}, {})", b.left, b.top, b.right, b.bottom);
                                let pts: Vec<String> = f.landmarks.0.iter().map(|q| format!("{:.0},{:.0}", q.x, q.y)).collect();
                                println!("    {}", pts.join(" "));
                            }
                        }
                        all.push(
                            serde_json::json!({"path": p.display().to_string(), "detector": finder.detector_kind().name(), "faces": faces}),
                        );
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        all.push(serde_json::json!({"path": p.display().to_string(), "error": format!("{e:#}")}));
                    }
                }
            }
            if *json {
                println!("{}", serde_json::to_string(&all)?);
            }
            Ok(())
        }
        Command::Masks { action: MasksAction::Simulate { dataset, n, seed, json } } => {
            let src = match dataset {
                SimDataset::CelebAMaskHq => PartSource::Annotated,
                SimDataset::Ffhq => PartSource::Landmarks,
            };
            let st = plan::simulate(src, *n, *seed);
            if *json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                masks::print_stats(&st);
            }
            Ok(())
        }
        Command::Masks { action } => {
            with_app!(cli, |app| {
                match action {
                    MasksAction::Plan { seed, dataset, json } => {
                        let spec = mmtt::jobs::MasksSpec { seed: *seed, dataset: dataset.map(|d| d.name().to_string()) };
                        mmtt::jobs::cli::masks_plan(app, spec, *json).await?;
                    }
                    MasksAction::Stats { seed, json } => {
                        let s = masks::stats(app, *seed).await?;
                        if *json {
                            println!("{}", serde_json::to_string(&s)?);
                        } else {
                            masks::print_stats(&s.all);
                        }
                    }
                    MasksAction::Preview { source, out, seed } => {
                        masks::preview(app, *source, *seed, out).await?;
                        println!("wrote {}", out.display());
                    }
                    MasksAction::Simulate { .. } => unreachable!("handled without a database"),
                }
                Ok(())
            })
        }
        Command::Sources { action: SourcesAction::List { dataset, json } } => {
            with_app!(cli, |app| {
                let rows = sqlx::query(
                    "SELECT id, dataset, original_id, face_index, split, parts, image_hash, original_path FROM sources \
                         WHERE ($1::text IS NULL OR dataset = $1) ORDER BY created_at, id",
                )
                .bind(dataset.map(|d| d.name()))
                .fetch_all(&app.pool)
                .await?;
                let mut out = Vec::new();
                for r in rows {
                    let hash: String = r.get(6);
                    let path = app.store.local_path(&hash.parse()?).map(|p| p.display().to_string());
                    let v = serde_json::json!({
                        "id": r.get::<uuid::Uuid, _>(0), "dataset": r.get::<String, _>(1),
                        "original_id": r.get::<String, _>(2), "face_index": r.get::<i32, _>(3),
                        "split": r.get::<String, _>(4), "parts": r.get::<Vec<String>, _>(5),
                        "image": path, "original_path": r.get::<String, _>(7),
                    });
                    if !*json {
                        println!(
                            "{}  {:<13} {:<20} face {} {:<10} {} parts  {}",
                            v["id"].as_str().unwrap_or_default(),
                            v["dataset"].as_str().unwrap_or_default(),
                            truncate(v["original_id"].as_str().unwrap_or_default(), 20),
                            v["face_index"],
                            v["split"].as_str().unwrap_or_default(),
                            v["parts"].as_array().map(|a| a.len()).unwrap_or(0),
                            v["image"].as_str().unwrap_or_default()
                        );
                    }
                    out.push(v);
                }
                if *json {
                    println!("{}", serde_json::to_string(&out)?);
                }
                Ok(())
            })
        }
        Command::Demo { faces, seed, no_serve, bind } => {
            let faces = faces.clone();
            let seed = *seed;
            with_app!(cli, |app| {
                mmtt::devtools::demo::run(app, faces.as_deref(), seed).await?;
                let accounts = mmtt::devtools::demo::demo_accounts(app).await?;
                println!("\naccounts (passwords are new on every run):");
                for (name, role, password) in &accounts {
                    println!("  {role:<10} {name:<16} password {password}");
                }
                if *no_serve {
                    return Ok(());
                }
                let state = mmtt::web::AppState::new(app.pool.clone(), app.store.clone(), mmtt::web::WebConfig::default());
                println!("open http://{bind}/ and sign in (Ctrl-C stops the server)");
                mmtt::web::serve(state, bind).await
            })
        }
        Command::Fixtures { action: FixturesAction::Celebamask { photos, out } } => {
            let m = mmtt::devtools::fixtures::celebamask(photos, out).context("building the CelebAMask-HQ fixture")?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Fixtures { action: FixturesAction::Ffhq { photos, out } } => {
            let written = mmtt::devtools::fixtures::ffhq(photos, out).context("building the FFHQ fixture")?;
            println!("{}", serde_json::to_string(&written)?);
            Ok(())
        }
        Command::Forge {
            method,
            count,
            seed,
            plan_seed,
            mix,
            device,
            max_attempts,
            wait,
            worker,
            json,
            prompt,
            negative_prompt,
            steps,
            guidance,
            strength,
            scheduler,
        } => {
            let mix_paper = match mix.as_deref() {
                None => false,
                Some("paper") => true,
                Some(other) => anyhow::bail!("unknown --mix `{other}`: the only mix is `paper`"),
            };
            let req = mmtt::jobs::forge::ForgeRequest {
                methods: method.clone(),
                count: *count,
                seed: *seed,
                plan_seed: plan_seed.unwrap_or(*seed),
                mix_paper,
                device: (*device).into(),
                max_attempts: (*max_attempts).max(1),
                params: {
                    let mut p = serde_json::Map::new();
                    if let Some(v) = prompt {
                        p.insert("prompt".into(), v.clone().into());
                    }
                    if let Some(v) = negative_prompt {
                        p.insert("negative_prompt".into(), v.clone().into());
                    }
                    if let Some(v) = steps {
                        p.insert("steps".into(), (*v).into());
                    }
                    if let Some(v) = guidance {
                        p.insert("guidance".into(), (*v as f64).into());
                    }
                    if let Some(v) = strength {
                        p.insert("strength".into(), (*v as f64).into());
                    }
                    if let Some(v) = scheduler {
                        p.insert("scheduler".into(), v.clone().into());
                    }
                    serde_json::Value::Object(p)
                },
            };
            with_app!(cli, |app| {
                let e = mmtt::jobs::forge::enqueue(app, &req).await?;
                println!("job {}: {} items queued {:?}", e.job_id, e.queued, e.by_method);
                for u in &e.unavailable {
                    println!("  {u}");
                }
                if *wait {
                    let o = worker_options(&cli, worker, (*device).into(), true, Some(e.job_id));
                    let s = mmtt::jobs::runner::run(app, o).await?;
                    println!("forged {} ({} failed attempts)", s.done, s.failed_attempts);
                }
                if *json {
                    println!("{}", serde_json::to_string(&e)?);
                }
                Ok(())
            })
        }
        Command::Worker { worker, until_empty, device } => {
            let o = worker_options(&cli, worker, (*device).into(), *until_empty, None);
            with_app!(cli, |app| { mmtt::jobs::cli::worker(app, o).await })
        }
        Command::Jobs { action, json, kind, state } => with_app!(cli, |app| {
            match action {
                None => mmtt::jobs::cli::list(app, kind.as_deref(), state.as_deref(), *json).await,
                Some(JobsAction::Show { id, json }) => mmtt::jobs::cli::show(app, *id, *json).await,
                Some(JobsAction::Cancel { id }) => mmtt::jobs::cli::control(app, *id, mmtt::jobs::JobAction::Cancel).await,
                Some(JobsAction::Pause { id }) => mmtt::jobs::cli::control(app, *id, mmtt::jobs::JobAction::Pause).await,
                Some(JobsAction::Resume { id }) => mmtt::jobs::cli::control(app, *id, mmtt::jobs::JobAction::Resume).await,
                Some(JobsAction::Retry { id }) => mmtt::jobs::cli::control(app, *id, mmtt::jobs::JobAction::RetryFailed).await,
            }
        }),
        Command::Forgeries { action: ForgeriesAction::List { json } } => with_app!(cli, |app| {
            let list = mmtt::jobs::forge::list(app).await?;
            if *json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for f in &list {
                    println!(
                        "{}  {:<13} {:<10} {}  image {}  mask {}  original {}",
                        f["id"].as_str().unwrap_or_default(),
                        f["method"].as_str().unwrap_or_default(),
                        f["split"].as_str().unwrap_or_default(),
                        f["status"].as_str().unwrap_or_default(),
                        f["image"].as_str().unwrap_or_default(),
                        f["mask"].as_str().unwrap_or_default(),
                        f["original"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }),
        Command::Generate { method, image, mask, source, seed, out, raw, models, device, threads, options, mask_out } => {
            let models = models.clone().unwrap_or_else(|| mmtt::jobs::forge::default_models_dir(&cli.data_dir));
            let options = match options {
                Some(t) => Some(
                    serde_json::from_str::<serde_json::Value>(t).map_err(|e| anyhow::anyhow!("--options must be a JSON object: {e}"))?,
                ),
                None => None,
            };
            mmtt::generate::run(&mmtt::generate::GenerateArgs {
                method: method.clone(),
                image: image.clone(),
                mask: mask.clone(),
                source: source.clone(),
                seed: *seed,
                out: out.clone(),
                raw: raw.clone(),
                models,
                device: (*device).into(),
                threads: *threads,
                options,
                mask_out: mask_out.clone(),
            })
        }
        Command::Bench { action: BenchAction::Forge { models, n, threads } } => mmtt::devtools::bench::forge(models.clone(), *n, *threads),
        Command::Bench { action: BenchAction::Masks { n } } => mmtt::devtools::bench::masks(*n),
        Command::Bench { action: BenchAction::Captions { n, refs, preds, meteor_runs } } => {
            mmtt::devtools::bench::captions(*n, refs.clone(), preds.clone(), *meteor_runs)
        }
        Command::Bench { action: BenchAction::Export { out } } => with_app!(cli, |app| {
            let r = mmtt::dataset::export::bench(app, out).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }),
        Command::Bench { action: BenchAction::Web { clients, rounds, json } } => with_app!(cli, |app| {
            let r = mmtt::devtools::bench_web::run(app, &mmtt::devtools::bench_web::WebBenchArgs { clients: *clients, rounds: *rounds })
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("forged samples        {}", r.forged_samples);
                println!("clients x rounds      {} x {}", r.clients, r.rounds);
                println!("next + page  p50 {:7.2} ms   p99 {:7.2} ms", r.next_and_page_p50_ms, r.next_and_page_p99_ms);
                println!("next         p50 {:7.2} ms   p99 {:7.2} ms", r.next_p50_ms, r.next_p99_ms);
                println!("page         p50 {:7.2} ms   p99 {:7.2} ms", r.page_p50_ms, r.page_p99_ms);
                println!("throughput   {:.0} requests/s ({:.0} next+page rounds/s)", r.requests_per_s, r.rounds_per_s);
                println!("page weight  {} bytes (HTML + CSS + JS, images excluded)", r.page_weight_bytes);
            }
            Ok(())
        }),
        Command::Serve { bind, min_seconds, heartbeat_seconds, lease_minutes, no_worker, import_roots } => {
            if *min_seconds < 0.0 || *heartbeat_seconds <= 0.0 {
                anyhow::bail!("--min-seconds must be >= 0 and --heartbeat-seconds > 0");
            }
            let config = mmtt::web::WebConfig {
                min_seconds: *min_seconds,
                heartbeat_seconds: *heartbeat_seconds,
                lease: std::time::Duration::from_secs(lease_minutes * 60),
            };
            with_app!(cli, |app| {
                let roots = import_roots
                    .iter()
                    .map(|r| {
                        r.canonicalize().with_context(|| format!("--import-root {} does not exist: create it or fix the path", r.display()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let state = mmtt::web::AppState::new(app.pool.clone(), app.store.clone(), config.clone())
                    .with_admin(mmtt::web::admin::AdminConfig::new(&app.data_dir, roots));
                let worker = (!*no_worker).then(|| {
                    let args = WorkerArgs { models: None, threads: 0, lease_seconds: 60, name: None };
                    let mut o = worker_options(&cli, &args, Device::Cpu, false, None);
                    o.progress = false;
                    o
                });
                mmtt::jobs::cli::serve_with_worker(app, mmtt::web::serve(state, bind), worker).await
            })
        }
        Command::Export { background: true, .. } => {
            let logs = cli.data_dir.join("logs");
            std::fs::create_dir_all(&logs).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", logs.display()))?;
            let log = logs.join(format!("export-{}.log", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
            let file = std::fs::File::create(&log)?;
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).filter(|a| a != "--background").collect();
            let child = std::process::Command::new(std::env::current_exe()?)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start the background export: {e}"))?;
            println!(
                "export running in the background (pid {}); log {}; progress: `mmtt jobs` or the admin dashboard",
                child.id(),
                log.display()
            );
            Ok(())
        }
        Command::Export {
            format,
            out,
            include_unreviewed,
            methods,
            datasets,
            resplit,
            seed,
            ratios,
            link,
            no_originals,
            shard_size,
            json,
            ..
        } => {
            let mut o = mmtt::jobs::ExportSpec {
                format: *format,
                out: out.clone(),
                include_unreviewed: *include_unreviewed,
                methods: methods.clone(),
                datasets: datasets.clone(),
                resplit: None,
                link: *link,
                originals: !*no_originals,
                shard_bytes: *shard_size,
            };
            if *resplit {
                let r: mmtt::storage::split::SplitRatios = ratios.parse()?;
                o.resplit = Some((seed.ok_or_else(|| anyhow::anyhow!("--resplit needs --seed"))?, r));
            } else if seed.is_some() {
                anyhow::bail!("--seed only applies with --resplit");
            }
            with_app!(cli, |app| { mmtt::jobs::cli::export(app, o, *json).await })
        }
        Command::Stats { json, include_unreviewed, charts } => with_app!(cli, |app| {
            let t = std::time::Instant::now();
            let scope = mmtt::dataset::stats::Scope {
                statuses: if *include_unreviewed { vec!["accepted".into(), "submitted".into()] } else { vec![] },
                ..Default::default()
            };
            let (samples, faces) = mmtt::dataset::stats::load(&app.pool, &scope).await?;
            let st = mmtt::dataset::stats::Stats::compute(&samples, faces);
            if let Some(dir) = charts {
                std::fs::create_dir_all(dir)?;
                for (name, svg) in st.charts()? {
                    std::fs::write(dir.join(name), svg)?;
                }
            }
            if *json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                print!("{}", st.to_text());
            }
            eprintln!("stats: {} samples in {:.0} ms", st.samples, t.elapsed().as_secs_f64() * 1e3);
            Ok(())
        }),
        Command::Eval { action } => {
            let v = match action {
                EvalAction::Captions { refs, preds, meteor_data: meteor_data_dir, metrics } => {
                    let t = std::time::Instant::now();
                    let set = mmtt_model::eval::captions::CaptionSet::parse(&read_text(refs)?, &read_text(preds)?)?;
                    let mut phases = vec![("read and parse the JSON files".to_string(), t.elapsed().as_secs_f64())];
                    let v = match metrics {
                        MetricSet::Ngram => serde_json::to_value(set.score_timed(None, &mut phases)?)?,
                        MetricSet::Meteor => serde_json::json!({ "METEOR": set.meteor(&meteor_data(meteor_data_dir.as_deref())?)? }),
                        MetricSet::All => {
                            serde_json::to_value(set.score_timed(Some(&meteor_data(meteor_data_dir.as_deref())?), &mut phases)?)?
                        }
                    };
                    // `mmtt bench captions` asks where the time went
                    if std::env::var_os("MMTT_TIMING").is_some() {
                        eprintln!("MMTT_TIMING {}", serde_json::json!({ "phases": phases, "total": t.elapsed().as_secs_f64() }));
                    }
                    v
                }
                EvalAction::Masks { gt, pred, threshold } => {
                    serde_json::to_value(mmtt_model::eval::masks::evaluate(gt, pred, *threshold)?)?
                }
                EvalAction::Report { gt, pred, gt_mask_base, pred_mask_base, threshold, name, meteor_data: meteor_data_dir } => {
                    let data = meteor_data(meteor_data_dir.as_deref())?;
                    let r = mmtt_model::eval::report::evaluate(
                        &read_text(gt)?,
                        &read_text(pred)?,
                        gt_mask_base,
                        pred_mask_base,
                        *threshold,
                        Some(&data),
                    )?;
                    eprintln!("{}", mmtt_model::eval::report::table_line(name, &r));
                    println!("{}", serde_json::to_string(&r)?);
                    return Ok(());
                }
                EvalAction::Labels { gt, pred } => {
                    let labels: Vec<&str> = mmtt::dataset::annotation::REGION_LABELS.iter().map(|(l, _)| *l).collect();
                    serde_json::to_value(mmtt_model::eval::labels::evaluate(&read_text(gt)?, &read_text(pred)?, &labels)?)?
                }
            };
            print_scores(&v)
        }
        Command::Regions { text, vector } => {
            let labels = mmtt::dataset::annotation::region_labels(text);
            if *vector {
                println!("{}", serde_json::json!({"regions": labels, "multilabel": mmtt::dataset::annotation::multilabel(text)}));
            } else {
                println!("{}", serde_json::to_string(&labels)?);
            }
            Ok(())
        }
        Command::SeedSynthetic { samples, seed, state, force } => with_app!(cli, |app| {
            let n = mmtt::devtools::synthetic::seed(app, *samples, *seed, *state, *force).await?;
            println!("seeded {n} synthetic samples ({state:?})");
            Ok(())
        }),
        Command::User { action: UserAction::Add { name, role, password } } => {
            let name = mmtt::web::auth::UserName::parse(name).map_err(anyhow::Error::msg)?;
            let role: mmtt::web::auth::Role = role.parse().map_err(anyhow::Error::msg)?;
            let (password, generated) = match password {
                Some(p) => (p.clone(), false),
                None => (mmtt::web::auth::random_token()[..16].to_string(), true),
            };
            with_app!(cli, |app| {
                mmtt::web::auth::add_user(&app.pool, &name, role, &password).await?;
                if generated {
                    println!("added {} ({role}) with password {password}", name.as_str());
                } else {
                    println!("added {} ({role})", name.as_str());
                }
                Ok(())
            })
        }
        Command::User { action: UserAction::Token { name, label } } => {
            let name = mmtt::web::auth::UserName::parse(name).map_err(anyhow::Error::msg)?;
            with_app!(cli, |app| {
                let token = mmtt::web::admin::tokens::create(&app.pool, &name, label).await?;
                println!("{token}");
                Ok(())
            })
        }
        Command::Project { action } => {
            with_app!(cli, |app| {
                if let ProjectAction::SetSplit { seed, ratios } = action {
                    mmtt::storage::db::set_split(&app.pool, *seed, *ratios).await?;
                }
                let s = mmtt::storage::db::settings(&app.pool).await?;
                println!("split seed {}, ratios {} (train:validation:test)", s.split_seed, s.split_ratios);
                Ok(())
            })
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 1).chain(['…']).collect() } else { s.to_string() }
}

#[allow(dead_code)]
fn _assert_store_is_object_safe(_: Arc<dyn BlobStore>) {}
