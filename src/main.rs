//! The `mmtt` command line. Parses arguments, opens the [`mmtt::app::App`], dispatches, and turns
//! errors into one clear message and a non-zero exit.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mmtt::app::App;
use mmtt::db::cluster;
use mmtt::import::{self, datasets::Dataset, decode::DecodeLimits, ImportOptions};
use mmtt::masks;
use mmtt::store::BlobStore;
use mmtt_generators::detect::FaceFinder;
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
        dataset: Dataset,
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
    /// Find faces and their 68 landmarks in images.
    Landmarks {
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
    },
    /// Build test inputs from face photos.
    Fixtures {
        #[command(subcommand)]
        action: FixturesAction,
    },
    /// Project settings.
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
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
        ratios: mmtt::split::SplitRatios,
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
            let opts = ImportOptions {
                dataset: *dataset,
                root: Some(root.clone()),
                files: vec![],
                limit: *limit,
                limits: DecodeLimits { max_side: *max_side, ..DecodeLimits::default() },
                progress: true,
            };
            let json = *json;
            with_app!(cli, |app| {
                    let s = import::run(app, opts.clone(), None).await?;
                    s.print_human(opts.dataset);
                    if json {
                        println!("{}", serde_json::to_string(&s)?);
                    }
                    Ok(())
                }
            )
        }
        Command::Landmarks { images, json } => {
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
                        all.push(serde_json::json!({"path": p.display().to_string(), "detector": finder.detector_kind().name(), "faces": faces}));
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
                            let s = masks::plan_all(app, *seed, dataset.map(|d| d.name()), true).await?;
                            println!("masks planned for {} sources, {} already planned, {} without facial parts", s.planned, s.already_planned, s.unplannable.len());
                            for u in &s.unplannable {
                                println!("  {u}");
                            }
                            if *json {
                                println!("{}", serde_json::to_string(&s)?);
                            }
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
                }
            )
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
                            println!("{}  {:<13} {:<20} face {} {:<10} {} parts  {}", v["id"].as_str().unwrap_or_default(), v["dataset"].as_str().unwrap_or_default(),
                                truncate(v["original_id"].as_str().unwrap_or_default(), 20), v["face_index"], v["split"].as_str().unwrap_or_default(),
                                v["parts"].as_array().map(|a| a.len()).unwrap_or(0), v["image"].as_str().unwrap_or_default());
                        }
                        out.push(v);
                    }
                    if *json {
                        println!("{}", serde_json::to_string(&out)?);
                    }
                    Ok(())
                }
            )
        }
        Command::Demo { faces, seed } => {
            let faces = faces.clone();
            let seed = *seed;
            with_app!(cli, |app| { mmtt::demo::run(app, faces.as_deref(), seed).await })
        }
        Command::Fixtures { action: FixturesAction::Celebamask { photos, out } } => {
            let m = mmtt::fixtures::celebamask(photos, out).context("building the CelebAMask-HQ fixture")?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Fixtures { action: FixturesAction::Ffhq { photos, out } } => {
            let written = mmtt::fixtures::ffhq(photos, out).context("building the FFHQ fixture")?;
            println!("{}", serde_json::to_string(&written)?);
            Ok(())
        }
        Command::Project { action } => {
            with_app!(cli, |app| {
                    if let ProjectAction::SetSplit { seed, ratios } = action {
                        mmtt::db::set_split(&app.pool, *seed, *ratios).await?;
                    }
                    let s = mmtt::db::settings(&app.pool).await?;
                    println!("split seed {}, ratios {} (train:validation:test)", s.split_seed, s.split_ratios);
                    Ok(())
                }
            )
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 1).chain(['…']).collect() } else { s.to_string() }
}

#[allow(dead_code)]
fn _assert_store_is_object_safe(_: Arc<dyn BlobStore>) {}
