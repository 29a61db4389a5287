//! `mmtt generate`: one forgery from files, without the database.

use super::{DeviceArg, Global};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GenerateCommand {
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
}

pub fn run(g: &Global, a: GenerateCommand) -> Result<()> {
    let models = a.models.unwrap_or_else(|| mmtt::jobs::forge::default_models_dir(&g.data_dir));
    let options = match a.options {
        Some(t) => {
            Some(serde_json::from_str::<serde_json::Value>(&t).map_err(|e| anyhow::anyhow!("--options must be a JSON object: {e}"))?)
        }
        None => None,
    };
    mmtt::generate::run(&mmtt::generate::GenerateArgs {
        method: a.method,
        image: a.image,
        mask: a.mask,
        source: a.source,
        seed: a.seed,
        out: a.out,
        raw: a.raw,
        models,
        device: a.device.into(),
        threads: a.threads,
        options,
        mask_out: a.mask_out,
    })
}
