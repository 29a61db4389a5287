//! `mmtt demo`, `mmtt fixtures`, `mmtt seed-synthetic`, `mmtt bench`: the developer tools
//! (`mmtt::devtools`, plus the export benchmark).

use super::Global;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// More face photos to import.
    #[arg(long)]
    faces: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after the forgeries and their demo captions instead of serving the web app.
    #[arg(long)]
    no_serve: bool,
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
}

#[derive(Subcommand)]
pub enum FixturesAction {
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

#[derive(clap::Args)]
pub struct SeedSyntheticArgs {
    #[arg(long)]
    samples: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "forged")]
    state: mmtt::devtools::synthetic::SyntheticState,
    /// Add synthetic rows to a database that holds real data.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum BenchAction {
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
    /// ForgeryTalker's region prompter: training images/s and peak memory of the presets on CPU
    /// (each preset in its own process, a few steps on synthetic images).
    Fpn {
        /// The presets, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "tiny,vit-b16")]
        presets: Vec<String>,
        /// Steps per preset (default: 40 for tiny, 3 for the others; the first are warm-up).
        #[arg(long)]
        steps: Option<u64>,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long)]
        json: bool,
        /// (internal) train this one preset in this process and print its JSON line.
        #[arg(long, hide = true)]
        only: Option<String>,
    },
    /// ForgeryTalker's generation: forward and generation seconds, tokens/s and images/s of a
    /// preset with random weights (tiny, release-xl).
    Talker {
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Images per batch.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Timed rounds (one forward pass and one generation of a batch each).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Beams [default: the release's, 5].
        #[arg(long)]
        num_beams: Option<usize>,
        /// Most new tokens [default: the release's, 100].
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// cpu, or cuda:N (a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// ForgeryTalker stage-2 training: images/s and peak memory of a preset with random weights on
    /// synthetic images, with and without cached vision features (each case in its own process).
    TalkerTrain {
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Steps per case [default: 20 for tiny, 2 for the others].
        #[arg(long)]
        steps: Option<u64>,
        /// cpu; cpu:0,cpu:1 (two CPU replicas); cuda:0,cuda:1,... (a build with `--features cuda`).
        #[arg(long, value_delimiter = ',', default_value = "cpu")]
        devices: Vec<String>,
        #[arg(long)]
        json: bool,
        /// (internal) run one case in this process (`cached` or `uncached`) and print its JSON line.
        #[arg(long, hide = true)]
        only: Option<String>,
    },
    /// "Next task" + annotation page latency at many concurrent clients (fill the database first
    /// with `mmtt seed-synthetic`).
    /// The local blob store against S3-compatible object storage (the credentials from AWS_*):
    /// forging throughput with N worker processes, and image reads with a cold and a warm
    /// cache. It forges on the command's database: run it on a scratch project with faces imported.
    Store {
        /// The object store to compare with.
        #[arg(long)]
        s3: String,
        #[arg(long, default_value_t = 16)]
        count: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Stored images read (cold, then warm).
        #[arg(long, default_value_t = 50)]
        reads: usize,
        #[arg(long, default_value = "patch-inpaint")]
        method: String,
        #[arg(long)]
        json: bool,
    },
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

pub async fn demo(g: &Global, a: DemoArgs) -> Result<()> {
    g.with_app(async |app| {
        mmtt::devtools::demo::run(app, a.faces.as_deref(), a.seed).await?;
        let accounts = mmtt::devtools::demo::demo_accounts(app).await?;
        println!("\naccounts (passwords are new on every run):");
        for (name, role, password) in &accounts {
            println!("  {role:<10} {name:<16} password {password}");
        }
        if a.no_serve {
            return Ok(());
        }
        let state = mmtt::web::AppState::new(app.pool.clone(), app.store.clone(), &app.data_dir, mmtt::web::WebConfig::default())
            .with_admin(mmtt::web::admin::AdminConfig::new(&app.data_dir, vec![]));
        println!("open http://{}/ and sign in (Ctrl-C stops the server)", a.bind);
        let mut worker = super::forge::worker_options(
            g,
            &super::forge::WorkerArgs::embedded(),
            mmtt_generators::forge::runtime::Device::Cpu,
            false,
            None,
        );
        worker.progress = false;
        mmtt::jobs::cli::serve_with_worker(app, mmtt::web::serve(state, &a.bind, None), Some(worker)).await
    })
    .await
}

pub fn fixtures(action: FixturesAction) -> Result<()> {
    match action {
        FixturesAction::Celebamask { photos, out } => {
            let m = mmtt::devtools::fixtures::celebamask(&photos, &out).context("building the CelebAMask-HQ fixture")?;
            println!("{}", serde_json::to_string(&m)?);
        }
        FixturesAction::Ffhq { photos, out } => {
            let written = mmtt::devtools::fixtures::ffhq(&photos, &out).context("building the FFHQ fixture")?;
            println!("{}", serde_json::to_string(&written)?);
        }
    }
    Ok(())
}

pub async fn seed_synthetic(g: &Global, a: SeedSyntheticArgs) -> Result<()> {
    g.with_app(async |app| {
        let n = mmtt::devtools::synthetic::seed(app, a.samples, a.seed, a.state, a.force).await?;
        println!("seeded {n} synthetic samples ({:?})", a.state);
        Ok(())
    })
    .await
}

pub async fn bench(g: &Global, action: BenchAction) -> Result<()> {
    match action {
        BenchAction::Forge { models, n, threads } => mmtt::devtools::bench::forge(models, n, threads),
        BenchAction::Masks { n } => mmtt::devtools::bench::masks(n),
        BenchAction::Fpn { presets, steps, batch, json, only } => match only {
            Some(p) => mmtt::devtools::bench::fpn_child(&p, steps, batch),
            None => mmtt::devtools::bench::fpn(&presets, steps, batch, json).map(|_| ()),
        },
        BenchAction::Talker { preset, batch, rounds, num_beams, max_new_tokens, device, json } => {
            let args = mmtt::devtools::bench::TalkerBenchArgs { preset, batch, rounds, num_beams, max_new_tokens, device };
            mmtt::devtools::bench::talker(&args, json).map(|_| ())
        }
        BenchAction::TalkerTrain { preset, batch, steps, devices, json, only } => {
            let args = mmtt::devtools::bench::TalkerTrainArgs { preset, batch, steps, devices };
            match only {
                Some(case) => mmtt::devtools::bench::talker_train_child(&args, &case),
                None => mmtt::devtools::bench::talker_train(&args, json).map(|_| ()),
            }
        }
        BenchAction::Captions { n, refs, preds, meteor_runs } => mmtt::devtools::bench::captions(n, refs, preds, meteor_runs),
        BenchAction::Export { out } => {
            g.with_app(async |app| {
                let r = mmtt::dataset::export::bench(app, &out).await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                Ok(())
            })
            .await
        }
        BenchAction::Store { s3, count, workers, reads, method, json } => {
            let args = mmtt::devtools::bench_store::StoreBenchArgs {
                s3,
                count,
                workers,
                reads,
                method,
                data_dir: g.data_dir.clone(),
                database_url: g.database_url.clone(),
            };
            g.with_app(async |app| {
                let r = mmtt::devtools::bench_store::run(app, &args).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("{} worker processes, {}; {} blobs copied to the object store first", r.workers, r.method, r.copied_blobs);
                    for s in &r.stores {
                        println!(
                            "{:<40} forging {:6.2} forgeries/s ({} in {:.1} s)   image read cold p50 {:6.2} ms p99 {:6.2} ms   warm p50 {:6.2} ms p99 {:6.2} ms",
                            s.store, s.forgeries_per_s, s.forged, s.forge_seconds, s.read_cold_p50_ms, s.read_cold_p99_ms, s.read_warm_p50_ms, s.read_warm_p99_ms
                        );
                    }
                }
                Ok(())
            })
            .await
        }
        BenchAction::Web { clients, rounds, json } => {
            g.with_app(async |app| {
                let r = mmtt::devtools::bench_web::run(app, &mmtt::devtools::bench_web::WebBenchArgs { clients, rounds }).await?;
                if json {
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
            })
            .await
        }
    }
}
