//! `mmtt train fpn`, `mmtt fpn predict|init`, `mmtt ablation fpn`: ForgeryTalker's region
//! prompter (stage 1) trained as a job, used on images, and the paper's Table 4; `mmtt train
//! talker`: stage 2 (the explainer and the mask decoder) trained as a job. The work is in
//! `mmtt::jobs::train`, `mmtt::dataset::training`, `mmtt_model::fpn` and
//! `mmtt_model::talker::train`; this prints.

use super::Global;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mmtt::jobs::train::talker::{TalkerConfigFile, TalkerTrainSpec};
use mmtt::jobs::train::{ConfigFile, FpnTrainSpec, TrainModel, TrainSpec, parse_config};
use mmtt_model::fpn::{self, FpnConfig, LabelSource};
use mmtt_model::talker::train::RegionSource;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum TrainAction {
    /// Train the Forgery Prompter Network (queued as a job; --wait runs it here).
    Fpn(TrainFpnArgs),
    /// Train ForgeryTalker stage 2, the explainer and the mask decoder (queued as a job; --wait
    /// runs it here).
    Talker(TrainTalkerArgs),
}

#[derive(clap::Args)]
pub struct TrainTalkerArgs {
    /// The training config (TOML): the trainer's settings at the top level (`preset`, `init`,
    /// `fpn`, `regions`, `steps`, `batch_size`, `lr`, `devices`, ...), `[mask_loss]`, and `[data]`
    /// for where the samples come from (as `train fpn`'s). Unknown keys are refused.
    #[arg(long)]
    pub config: PathBuf,
    /// Where checkpoints go (default DATA_DIR/runs/talker-DATE-ID); a folder holding a run of the
    /// same config is resumed.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Start from this checkpoint folder, overriding the config's `init`.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The stage-1 FPN checkpoint folder (e.g. a finished `train fpn` run's best/), overriding
    /// the config's `fpn`.
    #[arg(long)]
    pub fpn: Option<PathBuf>,
    /// What fills the instruction in training (fpn: the FPN's regions, as the paper; gt: the
    /// caption's; none: the plain instruction), overriding the config's `regions`.
    #[arg(long, value_parser = parse_regions)]
    pub regions: Option<RegionSource>,
    /// Devices, comma-separated (cpu; cpu:0,cpu:1; cuda:0,cuda:1,...), overriding the config's `devices`.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Compute the frozen vision encoder's features once per image and reuse them (needs
    /// `augment = false`).
    #[arg(long)]
    pub cache_vision_features: bool,
    /// Run the job in this process with a progress bar until it ends (alias --local).
    #[arg(long, alias = "local")]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_regions(s: &str) -> Result<RegionSource, String> {
    s.parse::<RegionSource>().map_err(|e| e.to_string())
}

#[derive(clap::Args)]
pub struct TrainFpnArgs {
    /// The training config (TOML): the model's settings at the top level, `[loss]`, and
    /// `[data]` for where the samples come from. Unknown keys are refused.
    #[arg(long)]
    pub config: PathBuf,
    /// Where checkpoints go (default DATA_DIR/runs/fpn-DATE-ID); a folder holding a run of the
    /// same config is resumed.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Labels from the annotators' region chips (or `extractor`: from the captions), overriding
    /// the config's `labels`.
    #[arg(long, value_enum)]
    pub labels: Option<LabelsArg>,
    /// Start from these weights (a Hugging Face ViT directory, e.g. an ImageNet ViT, or the
    /// authors' .bin), overriding the config's `init`.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The plain ViT (the ablation's ViT rows), overriding the config's `conv_branch`.
    #[arg(long)]
    pub no_conv_branch: bool,
    /// Run the job in this process with a progress bar until it ends (alias --local).
    #[arg(long, alias = "local")]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelsArg {
    Extractor,
    Chips,
}

impl From<LabelsArg> for LabelSource {
    fn from(l: LabelsArg) -> Self {
        match l {
            LabelsArg::Extractor => LabelSource::Extractor,
            LabelsArg::Chips => LabelSource::Chips,
        }
    }
}

#[derive(Subcommand)]
pub enum FpnAction {
    /// The 21 region probabilities of images: one line per image (JSON with --json).
    Predict {
        /// A checkpoint folder (Hugging Face layout) or the authors' .bin.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Write a freshly initialised checkpoint (seeded) in the Hugging Face layout.
    Init {
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The plain ViT (no convolution branch).
        #[arg(long)]
        no_conv_branch: bool,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AblationAction {
    /// The paper's Table 4: four runs from one base config, scored on a split.
    Fpn {
        /// The base training config (see `mmtt train fpn --config`).
        #[arg(long)]
        config: PathBuf,
        /// The folder the four runs go under (default DATA_DIR/runs/ablation-fpn); re-running
        /// resumes unfinished runs.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// The split the rows are scored on.
        #[arg(long, default_value = "test", value_parser = parse_split)]
        split: mmtt::storage::split::Split,
        #[arg(long)]
        json: bool,
    },
}

pub fn parse_split(s: &str) -> Result<mmtt::storage::split::Split, String> {
    mmtt::dataset::training::parse_split(s)
}

/// Reads and checks a config file; an error names the file, the key and the fix.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the config {}", path.display()))?;
    let c = parse_config(&text).with_context(|| format!("{}", path.display()))?;
    mmtt::jobs::train::check_config(&c.config).with_context(|| format!("{}", path.display()))?;
    c.data.check().map_err(|m| anyhow::anyhow!("{}: [data]: {m}", path.display()))?;
    Ok(c)
}

pub async fn train(g: &Global, action: TrainAction) -> Result<()> {
    let a = match action {
        TrainAction::Fpn(a) => a,
        TrainAction::Talker(a) => return train_talker(g, a).await,
    };
    let mut c = read_config(&a.config)?;
    if let Some(l) = a.labels {
        c.config.labels = l.into();
    }
    if let Some(init) = a.init {
        c.config.init = Some(std::path::absolute(&init).with_context(|| format!("--init {}", init.display()))?);
    }
    if a.no_conv_branch {
        c.config.conv_branch = false;
    }
    mmtt::jobs::train::check_config(&c.config).with_context(|| format!("{}", a.config.display()))?;
    let run_dir = a.run_dir.clone().unwrap_or_else(|| mmtt::jobs::cli::default_run_dir(&g.data_dir));
    let spec = TrainSpec::Fpn(Box::new(FpnTrainSpec { config: c.config, run_dir, data: c.data }));
    g.with_app(async |app| mmtt::jobs::cli::train(app, spec, a.wait, a.json).await).await
}

/// Reads and checks a stage-2 config file; an error names the file, the key and the fix.
pub fn read_talker_config(path: &Path) -> Result<TalkerConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the config {}", path.display()))?;
    let c = mmtt::jobs::train::talker::parse_config(&text).with_context(|| format!("{}", path.display()))?;
    c.data.check().map_err(|m| anyhow::anyhow!("{}: [data]: {m}", path.display()))?;
    Ok(c)
}

async fn train_talker(g: &Global, a: TrainTalkerArgs) -> Result<()> {
    let mut c = read_talker_config(&a.config)?;
    let abs = |p: &Path, what: &str| std::path::absolute(p).with_context(|| format!("{what} {}", p.display()));
    if let Some(p) = a.init.or(c.config.init.take()) {
        c.config.init = Some(abs(&p, "init")?);
    }
    if let Some(p) = a.fpn.or(c.config.fpn.take()) {
        c.config.fpn = Some(abs(&p, "fpn")?);
    }
    if let Some(r) = a.regions {
        c.config.regions = r;
    }
    if !a.devices.is_empty() {
        c.config.devices = a.devices.iter().map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
    }
    if a.cache_vision_features {
        c.config.cache_vision_features = true;
    }
    mmtt::jobs::train::talker::check_config(&c.config).with_context(|| format!("{}", a.config.display()))?;
    let run_dir = match a.run_dir {
        Some(d) => abs(&d, "--run-dir")?,
        None => mmtt::jobs::cli::default_run_dir_of(&g.data_dir, TrainModel::Talker),
    };
    let spec = TrainSpec::Talker(Box::new(TalkerTrainSpec { config: c.config, run_dir, data: c.data }));
    g.with_app(async |app| mmtt::jobs::cli::train(app, spec, a.wait, a.json).await).await
}

pub fn fpn(action: FpnAction) -> Result<()> {
    match action {
        FpnAction::Predict { checkpoint, json, images } => {
            let p = fpn::Predictor::load(&checkpoint).with_context(|| format!("loading the checkpoint {}", checkpoint.display()))?;
            for chunk in images.chunks(16) {
                let probs = p.predict_paths(chunk)?;
                for (img, pr) in chunk.iter().zip(probs) {
                    let regions = fpn::regions(&pr);
                    if json {
                        println!("{}", serde_json::json!({ "image": img, "probs": pr.to_vec(), "regions": regions }));
                    } else {
                        let mut top: Vec<(usize, f32)> = pr.iter().copied().enumerate().collect();
                        top.sort_by(|a, b| b.1.total_cmp(&a.1));
                        let shown: Vec<String> = top.iter().take(5).map(|(i, p)| format!("{} {p:.2}", fpn::LABELS[*i])).collect();
                        println!("{}: regions [{}]; top {}", img.display(), regions.join(", "), shown.join(", "));
                    }
                }
            }
            Ok(())
        }
        FpnAction::Init { preset, seed, no_conv_branch, out } => {
            let mut cfg = FpnConfig::preset(&preset)?;
            cfg.conv_branch = !no_conv_branch;
            if out.is_file() {
                bail!("{} is a file: give a new folder", out.display());
            }
            fpn::init_checkpoint(&cfg, seed, &out)?;
            println!("wrote a {preset} checkpoint (seed {seed}, conv branch {}) to {}", cfg.conv_branch, out.display());
            Ok(())
        }
    }
}

pub async fn ablation(g: &Global, action: AblationAction) -> Result<()> {
    let AblationAction::Fpn { config, run_dir, split, json } = action;
    let c = read_config(&config)?;
    let root = run_dir.unwrap_or_else(|| g.data_dir.join("runs").join("ablation-fpn"));
    g.with_app(async |app| mmtt::jobs::cli::ablation(app, &c, &root, split, json).await.map(|_| ())).await
}
