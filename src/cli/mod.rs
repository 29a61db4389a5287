//! The command line: one module per command group, each a thin layer that parses its arguments,
//! calls the library (`mmtt::...`) and prints. No SQL and no workflow lives here; what a command
//! prints is its only logic.
//!
//! - [`db`]: `db start|stop|status` (the private cluster).
//! - [`import`]: `import`, `landmarks`, `sources list`.
//! - [`masks`]: `masks plan|stats|simulate|preview`.
//! - [`forge`]: `forge`, `worker`, `forgeries list`.
//! - [`jobs`]: `jobs [show|cancel|pause|resume|retry]` (every kind of long work).
//! - [`generate`]: `generate` (one forgery from files).
//! - [`export`]: `export`, `stats`.
//! - [`eval`]: `eval captions|masks|report|labels|fpn|table3`, `regions`.
//! - [`train`]: `train fpn`, `fpn predict|init`, `ablation fpn` (ForgeryTalker's region prompter),
//!   `train talker` (stage 2).
//! - [`explain`]: `explain` (ForgeryTalker's explanations and masks of images).
//! - [`predict`]: `predict` (a trained stage-2 checkpoint over a split, for `eval report`).
//! - [`web`]: `serve`, `user add`.
//! - [`project`]: `project show|set-split`.
//! - [`devtools`]: `demo`, `fixtures`, `seed-synthetic`, `bench` (`bench fpn`: training throughput;
//!   `bench talker`: generation throughput; `bench talker-train`: stage-2 training throughput).

mod db;
mod devtools;
mod eval;
mod explain;
mod export;
mod forge;
mod generate;
mod import;
mod jobs;
mod masks;
mod predict;
mod project;
mod store;
mod train;
mod web;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mmtt::app::App;
use mmtt_generators::forge::runtime::Device;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mmtt", version, about = "MMTT: interpretable face-forgery dataset platform")]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes.
#[derive(clap::Args)]
pub struct Global {
    /// Where images, masks and the private PostgreSQL cluster live.
    #[arg(long, global = true, env = "MMTT_DATA_DIR", default_value = "./mmtt-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL server to use; without it mmtt runs a private cluster under the data directory.
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where images live: a folder, or S3-compatible object storage as s3://BUCKET/PREFIX (the
    /// endpoint, region and credentials from AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY; AWS_ALLOW_HTTP=true for http). Default: DATA_DIR/blobs.
    #[arg(long, global = true, env = "MMTT_STORE")]
    pub store: Option<String>,
    /// The object store's local read-through cache, in MB (under DATA_DIR/cache).
    #[arg(long, global = true, env = "MMTT_STORE_CACHE_MB", default_value_t = 2048)]
    pub store_cache_mb: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the private PostgreSQL cluster.
    Db {
        #[command(subcommand)]
        action: db::DbAction,
    },
    /// Move the blob store (a folder or S3-compatible object storage) and check it.
    Store {
        #[command(subcommand)]
        action: store::StoreAction,
    },
    /// Import source faces.
    Import(import::ImportArgs),
    /// Find faces and their 68 landmarks in images (`landmarks backfill`: store them for sources
    /// that have none).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Landmarks(import::LandmarksArgs),
    /// Plan forgery masks, show their statistics, preview them.
    Masks {
        #[command(subcommand)]
        action: masks::MasksAction,
    },
    /// List stored source faces.
    Sources {
        #[command(subcommand)]
        action: import::SourcesAction,
    },
    /// Import sample faces, plan masks and write previews.
    Demo(devtools::DemoArgs),
    /// Build test inputs from face photos.
    Fixtures {
        #[command(subcommand)]
        action: devtools::FixturesAction,
    },
    /// Enqueue a forgery job (and with --wait, work on it until it is done).
    Forge(forge::ForgeArgs),
    /// Process queued forgery items (any number of workers, on any machine).
    Worker(forge::WorkerCommand),
    /// Show jobs of every kind (import, masks, forge, export, eval, train, table3): progress, failures; control them.
    Jobs(jobs::JobsArgs),
    /// List forgeries.
    Forgeries {
        #[command(subcommand)]
        action: forge::ForgeriesAction,
    },
    /// Forge one image from files (like IOPaint's run), for people and scripts.
    Generate(generate::GenerateCommand),
    /// Print throughput figures.
    Bench {
        #[command(subcommand)]
        action: devtools::BenchAction,
    },
    /// Serve the annotation and QA web app.
    Serve(web::ServeArgs),
    /// Export accepted triplets as a dataset (hf, coco, webdataset, mmtt); resumes when re-run.
    Export(export::ExportArgs),
    /// Dataset statistics (spec section 6) and the Table 1 row.
    Stats(export::StatsArgs),
    /// ForgeryTalker metrics, as the reference tools compute them (JSON on stdout, a table on stderr).
    Eval {
        #[command(subcommand)]
        action: eval::EvalAction,
    },
    /// The 21 region labels a text mentions (the authors' extractor, spec section 7).
    Regions(eval::RegionsArgs),
    /// Train a model as a job (`train fpn|talker --config FILE.toml`).
    Train {
        #[command(subcommand)]
        action: train::TrainAction,
    },
    /// ForgeryTalker's region prompter: predict regions of images, write a fresh checkpoint.
    Fpn {
        #[command(subcommand)]
        action: train::FpnAction,
    },
    /// ForgeryTalker's explanation (text, regions, mask) of face images, from a checkpoint.
    Explain(explain::ExplainArgs),
    /// A trained ForgeryTalker (stage 2) checkpoint over a split: captions and masks in the
    /// format `mmtt eval report` reads (`--regions fpn|none|gt`: Table 3's variants).
    Predict(predict::PredictArgs),
    /// The paper's ablations (`ablation fpn`: Table 4).
    Ablation {
        #[command(subcommand)]
        action: train::AblationAction,
    },
    /// Fill a benchmark/test database with synthetic samples.
    SeedSynthetic(devtools::SeedSyntheticArgs),
    /// Manage users.
    User {
        #[command(subcommand)]
        action: web::UserAction,
    },
    /// Project settings.
    Project {
        #[command(subcommand)]
        action: project::ProjectAction,
    },
}

/// `--device`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DeviceArg {
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

impl Global {
    /// The blob store `--store` names.
    pub fn store_config(&self) -> Result<mmtt::storage::store::StoreConfig> {
        let url = self
            .store
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("--store: {e}"))?;
        Ok(mmtt::storage::store::StoreConfig { url, cache_bytes: self.store_cache_mb << 20 })
    }

    /// Opens the app, runs `body` with it, then closes it (stopping the private cluster when this
    /// was its last user), whatever the body returned.
    pub async fn with_app(&self, body: impl AsyncFnOnce(&App) -> Result<()>) -> Result<()> {
        let app = App::open_with(&self.data_dir, self.database_url.as_deref(), &self.store_config()?).await?;
        let r = body(&app).await;
        let closed = app.close().await;
        r?;
        closed
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Db { action } => db::run(g, action).await,
        Command::Store { action } => store::run(g, action).await,
        Command::Import(a) => import::import(g, a).await,
        Command::Landmarks(a) => import::landmarks(g, a).await,
        Command::Masks { action } => masks::run(g, action).await,
        Command::Sources { action } => import::sources(g, action).await,
        Command::Demo(a) => devtools::demo(g, a).await,
        Command::Fixtures { action } => devtools::fixtures(action),
        Command::Forge(a) => forge::forge(g, a).await,
        Command::Worker(a) => forge::worker(g, a).await,
        Command::Jobs(a) => jobs::run(g, a).await,
        Command::Forgeries { action } => forge::forgeries(g, action).await,
        Command::Generate(a) => generate::run(g, a),
        Command::Bench { action } => devtools::bench(g, action).await,
        Command::Serve(a) => web::serve(g, a).await,
        Command::Export(a) => export::export(g, a).await,
        Command::Stats(a) => export::stats(g, a).await,
        Command::Eval { action } => eval::eval(g, action).await,
        Command::Train { action } => train::train(g, action).await,
        Command::Fpn { action } => train::fpn(action),
        Command::Ablation { action } => train::ablation(g, action).await,
        Command::Explain(a) => explain::run(a),
        Command::Predict(a) => predict::run(g, a).await,
        Command::Regions(a) => eval::regions(a),
        Command::SeedSynthetic(a) => devtools::seed_synthetic(g, a).await,
        Command::User { action } => web::user(g, action).await,
        Command::Project { action } => project::run(g, action).await,
    }
}
