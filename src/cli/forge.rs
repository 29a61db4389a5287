//! `mmtt forge`, `mmtt worker`, `mmtt forgeries list`: forgery jobs, the workers that run them,
//! and what they made.

use super::{DeviceArg, Global};
use anyhow::Result;
use clap::Subcommand;
use mmtt_generators::forge::runtime::Device;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ForgeArgs {
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
}

#[derive(clap::Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Exit when nothing is queued or running.
    #[arg(long)]
    until_empty: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

#[derive(clap::Args, Clone)]
pub struct WorkerArgs {
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

impl WorkerArgs {
    /// The worker `mmtt serve` embeds: default models folder and threads, a 60 s lease.
    pub(super) fn embedded() -> Self {
        WorkerArgs { models: None, threads: 0, lease_seconds: 60, name: None }
    }
}

#[derive(Subcommand)]
pub enum ForgeriesAction {
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn worker_options(
    g: &Global,
    w: &WorkerArgs,
    device: Device,
    until_empty: bool,
    job: Option<uuid::Uuid>,
) -> mmtt::jobs::forge::WorkerOptions {
    mmtt::jobs::forge::WorkerOptions {
        name: w.name.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        device,
        models_dir: w.models.clone().unwrap_or_else(|| mmtt::jobs::forge::default_models_dir(&g.data_dir)),
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

/// The SDXL options given on the command line, as the job's parameters.
fn sdxl_params(a: &ForgeArgs) -> serde_json::Value {
    let mut p = serde_json::Map::new();
    if let Some(v) = &a.prompt {
        p.insert("prompt".into(), v.clone().into());
    }
    if let Some(v) = &a.negative_prompt {
        p.insert("negative_prompt".into(), v.clone().into());
    }
    if let Some(v) = a.steps {
        p.insert("steps".into(), v.into());
    }
    if let Some(v) = a.guidance {
        p.insert("guidance".into(), (v as f64).into());
    }
    if let Some(v) = a.strength {
        p.insert("strength".into(), (v as f64).into());
    }
    if let Some(v) = &a.scheduler {
        p.insert("scheduler".into(), v.clone().into());
    }
    serde_json::Value::Object(p)
}

pub async fn forge(g: &Global, a: ForgeArgs) -> Result<()> {
    let mix_paper = match a.mix.as_deref() {
        None => false,
        Some("paper") => true,
        Some(other) => anyhow::bail!("unknown --mix `{other}`: the only mix is `paper`"),
    };
    let req = mmtt::jobs::forge::ForgeRequest {
        methods: a.method.clone(),
        count: a.count,
        seed: a.seed,
        plan_seed: a.plan_seed.unwrap_or(a.seed),
        mix_paper,
        device: a.device.into(),
        max_attempts: a.max_attempts.max(1),
        params: sdxl_params(&a),
    };
    g.with_app(async |app| {
        let e = mmtt::jobs::forge::enqueue(app, &req).await?;
        println!("job {}: {} items queued {:?}", e.job_id, e.queued, e.by_method);
        for u in &e.unavailable {
            println!("  {u}");
        }
        if a.wait {
            let o = worker_options(g, &a.worker, a.device.into(), true, Some(e.job_id));
            let s = mmtt::jobs::runner::run(app, o).await?;
            println!("forged {} ({} failed attempts)", s.done, s.failed_attempts);
        }
        if a.json {
            println!("{}", serde_json::to_string(&e)?);
        }
        Ok(())
    })
    .await
}

pub async fn worker(g: &Global, a: WorkerCommand) -> Result<()> {
    let o = worker_options(g, &a.worker, a.device.into(), a.until_empty, None);
    g.with_app(async |app| mmtt::jobs::cli::worker(app, o).await).await
}

pub async fn forgeries(g: &Global, action: ForgeriesAction) -> Result<()> {
    let ForgeriesAction::List { json } = action;
    g.with_app(async |app| {
        let list = mmtt::jobs::forge::list(app).await?;
        if json {
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
    })
    .await
}
