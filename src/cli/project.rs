//! `mmtt project show|set-split`: the project's settings.

use super::Global;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ProjectAction {
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

pub async fn run(g: &Global, action: ProjectAction) -> Result<()> {
    g.with_app(async |app| {
        if let ProjectAction::SetSplit { seed, ratios } = action {
            mmtt::storage::db::set_split(&app.pool, seed, ratios).await?;
        }
        let s = mmtt::storage::db::settings(&app.pool).await?;
        println!("split seed {}, ratios {} (train:validation:test)", s.split_seed, s.split_ratios);
        Ok(())
    })
    .await
}
