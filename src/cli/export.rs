//! `mmtt export` (in the foreground or as a background process) and `mmtt stats`.

use super::Global;
use anyhow::Result;
use mmtt::storage::status::exported_statuses;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
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
}

#[derive(clap::Args)]
pub struct StatsArgs {
    #[arg(long)]
    json: bool,
    /// Count submitted captions too (default: accepted ones).
    #[arg(long)]
    include_unreviewed: bool,
    /// Write the charts (SVG) into this folder.
    #[arg(long)]
    charts: Option<PathBuf>,
}

/// `--background`: the same command line without it, in a child process logging under
/// `DATA_DIR/logs`.
fn spawn_background(g: &Global) -> Result<()> {
    let logs = g.data_dir.join("logs");
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
    println!("export running in the background (pid {}); log {}; progress: `mmtt jobs` or the admin dashboard", child.id(), log.display());
    Ok(())
}

pub async fn export(g: &Global, a: ExportArgs) -> Result<()> {
    if a.background {
        return spawn_background(g);
    }
    let mut o = mmtt::jobs::ExportSpec {
        format: a.format,
        out: a.out,
        include_unreviewed: a.include_unreviewed,
        methods: a.methods,
        datasets: a.datasets,
        resplit: None,
        link: a.link,
        originals: !a.no_originals,
        shard_bytes: a.shard_size,
    };
    if a.resplit {
        let r: mmtt::storage::split::SplitRatios = a.ratios.parse()?;
        o.resplit = Some((a.seed.ok_or_else(|| anyhow::anyhow!("--resplit needs --seed"))?, r));
    } else if a.seed.is_some() {
        anyhow::bail!("--seed only applies with --resplit");
    }
    g.with_app(async |app| mmtt::jobs::cli::export(app, o, a.json).await).await
}

pub async fn stats(g: &Global, a: StatsArgs) -> Result<()> {
    g.with_app(async |app| {
        let t = std::time::Instant::now();
        let scope = mmtt::dataset::stats::Scope {
            statuses: if a.include_unreviewed { exported_statuses(true) } else { vec![] },
            ..Default::default()
        };
        let (samples, faces) = mmtt::dataset::stats::load(&app.pool, &scope).await?;
        let st = mmtt::dataset::stats::Stats::compute(&samples, faces);
        if let Some(dir) = &a.charts {
            std::fs::create_dir_all(dir)?;
            for (name, svg) in st.charts()? {
                std::fs::write(dir.join(name), svg)?;
            }
        }
        if a.json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            print!("{}", st.to_text());
        }
        eprintln!("stats: {} samples in {:.0} ms", st.samples, t.elapsed().as_secs_f64() * 1e3);
        Ok(())
    })
    .await
}
