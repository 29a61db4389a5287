//! TEMPORARY STUB (branch i14-platform only): the contract of /work/notes/fpn-api.md with fake
//! bodies, so the platform compiles and its job flow can be exercised before the lead's real
//! model lands. DROP THIS FILE when merging main (the real `model/src/fpn/` replaces it).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const LABELS: [&str; 21] = [
    "eye", "pupil", "lip", "mouth", "nose", "ear", "cheek", "forehead", "chin", "jaw", "eyebrow", "tooth", "tongue", "beard", "mustache",
    "skin", "hair", "wrinkle", "freckle", "scar", "dimple",
];

#[derive(thiserror::Error, Debug)]
pub enum FpnError {
    #[error("config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("data: {0}")]
    Data(String),
    #[error("cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpnConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub layer_norm_eps: f64,
    pub conv_branch: bool,
    pub num_labels: usize,
}

impl FpnConfig {
    pub const PRESETS: &[&str] = &["tiny", "vit-b16", "vit-l16", "vit-h14"];
    pub fn preset(name: &str) -> Result<Self, FpnError> {
        let (image_size, patch_size, hidden_size, layers, heads, mlp) = match name {
            "tiny" => (32, 8, 32, 2, 2, 64),
            "vit-b16" => (224, 16, 768, 12, 12, 3072),
            "vit-l16" => (224, 16, 1024, 24, 16, 4096),
            "vit-h14" => (224, 14, 1280, 32, 16, 5120),
            _ => return Err(FpnError::Config(format!("unknown preset `{name}`: tiny, vit-b16, vit-l16, vit-h14"))),
        };
        Ok(FpnConfig {
            image_size,
            patch_size,
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: mlp,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            layer_norm_eps: 1e-12,
            conv_branch: true,
            num_labels: 21,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossConfig {
    Paper { negative_weight: f64, bce: bool, dice: bool },
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelSource {
    #[default]
    Extractor,
    Chips,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub preset: String,
    pub conv_branch: bool,
    pub init: Option<PathBuf>,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_eps: f64,
    pub betas: (f64, f64),
    pub grad_clip: Option<f64>,
    pub seed: u64,
    pub loss: LossConfig,
    pub hflip: bool,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    pub labels: LabelSource,
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl TrainConfig {
    pub fn paper() -> Self {
        TrainConfig {
            preset: "vit-h14".into(),
            conv_branch: true,
            init: None,
            steps: 125_000,
            batch_size: 16,
            lr: 7.5e-3,
            warmup_steps: 125,
            weight_decay: 0.0,
            adam_eps: 1e-8,
            betas: (0.9, 0.999),
            grad_clip: Some(1.0),
            seed: 42,
            loss: LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true },
            hflip: false,
            checkpoint_every: 1000,
            eval_every: 1000,
            labels: LabelSource::Extractor,
            device: "cpu".into(),
        }
    }
    pub fn tiny() -> Self {
        TrainConfig { preset: "tiny".into(), steps: 200, batch_size: 8, lr: 1e-3, warmup_steps: 10, checkpoint_every: 50, eval_every: 50, ..Self::paper() }
    }
    pub fn from_toml(text: &str) -> Result<Self, FpnError> {
        toml::from_str(text).map_err(|e| FpnError::Config(e.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub image: PathBuf,
    pub labels: [bool; 21],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct ValReport {
    pub step: u64,
    pub plm: f64,
    pub best: bool,
}

pub trait Progress {
    fn step(&mut self, r: &StepReport) -> Control;
    fn validated(&mut self, r: &ValReport);
    fn checkpoint(&mut self, step: u64, dir: &Path);
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub last_step: u64,
    pub stopped: bool,
    pub best_plm: Option<f64>,
    pub best_dir: PathBuf,
    pub last_dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FpnError + '_ {
    move |source| FpnError::Io { path: path.to_path_buf(), source }
}

fn write_ckpt(dir: &Path, cfg: &TrainConfig, step: u64) -> Result<(), FpnError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut m = FpnConfig::preset(&cfg.preset)?;
    m.conv_branch = cfg.conv_branch;
    std::fs::write(dir.join("config.json"), serde_json::to_string(&m).unwrap_or_default()).map_err(io(dir))?;
    std::fs::write(dir.join("step.txt"), step.to_string()).map_err(io(dir))?;
    Ok(())
}

/// STUB: a fake loop (sleeps), checkpoints and resumes from `run_dir/last/step.txt`.
pub fn train(cfg: &TrainConfig, train: &[Sample], val: &[Sample], run_dir: &Path, progress: &mut dyn Progress) -> Result<Outcome, FpnError> {
    if train.is_empty() {
        return Err(FpnError::Data("no training samples".into()));
    }
    for s in train.iter().take(4) {
        image::open(&s.image).map_err(|e| FpnError::Image { path: s.image.clone(), msg: e.to_string() })?;
    }
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    std::fs::write(run_dir.join("run.toml"), toml::to_string(cfg).unwrap_or_default()).map_err(io(run_dir))?;
    let last = run_dir.join("last");
    let best = run_dir.join("best");
    let start = std::fs::read_to_string(last.join("step.txt")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    let mut best_plm: Option<f64> = None;
    let t0 = std::time::Instant::now();
    for step in start + 1..=cfg.steps {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let loss = 1.0 / (1.0 + step as f64 * 0.05);
        let r = StepReport {
            step,
            total_steps: cfg.steps,
            loss,
            lr: cfg.lr,
            images_per_s: (step - start) as f64 * cfg.batch_size as f64 / t0.elapsed().as_secs_f64().max(1e-3),
        };
        let c = progress.step(&r);
        if cfg.eval_every > 0 && step % cfg.eval_every == 0 && !val.is_empty() {
            let plm = 1.0 - loss;
            let is_best = best_plm.is_none_or(|b| plm > b);
            if is_best {
                best_plm = Some(plm);
                write_ckpt(&best, cfg, step)?;
            }
            progress.validated(&ValReport { step, plm, best: is_best });
        }
        if c == Control::Stop || (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) || step == cfg.steps {
            let d = run_dir.join("checkpoints").join(format!("step-{step}"));
            write_ckpt(&d, cfg, step)?;
            write_ckpt(&last, cfg, step)?;
            progress.checkpoint(step, &d);
        }
        if c == Control::Stop {
            return Ok(Outcome { last_step: step, stopped: true, best_plm, best_dir: best, last_dir: last });
        }
    }
    Ok(Outcome { last_step: cfg.steps, stopped: false, best_plm, best_dir: best, last_dir: last })
}

pub struct Predictor {
    config: FpnConfig,
}

impl Predictor {
    pub fn load(path: &Path) -> Result<Self, FpnError> {
        let p = path.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        let config = serde_json::from_str(&text).map_err(|e| FpnError::Weights(format!("{}: {e}", p.display())))?;
        Ok(Predictor { config })
    }
    pub fn config(&self) -> &FpnConfig {
        &self.config
    }
    pub fn predict_paths(&self, images: &[PathBuf]) -> Result<Vec<[f32; 21]>, FpnError> {
        let imgs = images
            .iter()
            .map(|p| image::open(p).map(|i| i.into_rgb8()).map_err(|e| FpnError::Image { path: p.clone(), msg: e.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        self.predict_images(&imgs)
    }
    pub fn predict_images(&self, images: &[image::RgbImage]) -> Result<Vec<[f32; 21]>, FpnError> {
        Ok(images
            .iter()
            .map(|im| {
                let mean = im.pixels().map(|p| p.0[0] as f64).sum::<f64>() / (im.width() * im.height()).max(1) as f64 / 255.0;
                let mut out = [0f32; 21];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = ((mean * (i + 1) as f64 * 7.0).sin() * 0.5 + 0.5) as f32;
                }
                out
            })
            .collect())
    }
}

pub fn regions(probs: &[f32; 21]) -> Vec<&'static str> {
    LABELS.iter().zip(probs).filter(|(_, p)| **p > 0.5).map(|(l, _)| *l).collect()
}

/// STUB of the lead's `init_checkpoint`.
pub fn init_checkpoint(cfg: &FpnConfig, seed: u64, dir: &Path) -> Result<(), FpnError> {
    let _ = seed;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::write(dir.join("config.json"), serde_json::to_string(cfg).unwrap_or_default()).map_err(io(dir))?;
    Ok(())
}
