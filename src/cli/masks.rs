//! `mmtt masks plan|stats|simulate|preview`.

use super::Global;
use anyhow::Result;
use clap::Subcommand;
use mmtt::dataset::import::datasets::Dataset;
use mmtt::dataset::masks;
use mmtt_generators::plan::{self, PartSource};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum MasksAction {
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
pub enum SimDataset {
    #[value(name = "celebamask-hq")]
    CelebAMaskHq,
    Ffhq,
}

pub async fn run(g: &Global, action: MasksAction) -> Result<()> {
    if let MasksAction::Simulate { dataset, n, seed, json } = action {
        let src = match dataset {
            SimDataset::CelebAMaskHq => PartSource::Annotated,
            SimDataset::Ffhq => PartSource::Landmarks,
        };
        let st = plan::simulate(src, n, seed);
        if json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            masks::print_stats(&st);
        }
        return Ok(());
    }
    g.with_app(async |app| {
        match action {
            MasksAction::Plan { seed, dataset, json } => {
                let spec = mmtt::jobs::MasksSpec { seed, dataset: dataset.map(|d| d.name().to_string()) };
                mmtt::jobs::cli::masks_plan(app, spec, json).await?;
            }
            MasksAction::Stats { seed, json } => {
                let s = masks::stats(app, seed).await?;
                if json {
                    println!("{}", serde_json::to_string(&s)?);
                } else {
                    masks::print_stats(&s.all);
                }
            }
            MasksAction::Preview { source, out, seed } => {
                masks::preview(app, source, seed, &out).await?;
                println!("wrote {}", out.display());
            }
            MasksAction::Simulate { .. } => unreachable!("handled without a database"),
        }
        Ok(())
    })
    .await
}
