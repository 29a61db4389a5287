//! `mmtt store migrate --to URL` and `mmtt store check`: moving the blob store between a local
//! folder and S3-compatible object storage, and checking a store against the `blobs` rows.

use super::Global;
use anyhow::{Result, bail};
use clap::Subcommand;
use mmtt::storage::migrate;
use mmtt::storage::store::{self, StoreConfig};

#[derive(Subcommand)]
pub enum StoreAction {
    /// Copy every blob of the store in use (`--store`, default DATA_DIR/blobs) to URL (a folder
    /// or s3://BUCKET/PREFIX), verified both ways; resumable; ends with the check of URL.
    Migrate {
        /// The destination: a folder, or s3://BUCKET/PREFIX.
        #[arg(long)]
        to: String,
        /// Parallel copies.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Read every `blobs` row's blob back from the store in use and hash it.
    Check {
        #[arg(long, default_value_t = 8)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

fn bar(n: usize, json: bool, what: &'static str) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} blobs, {per_sec}, eta {eta}") {
        b.set_style(style);
    }
    b.set_message(what);
    b
}

fn report(c: &migrate::Checked, location: &str) {
    println!("check of {location}: {} of {} blobs present and intact", c.ok, c.rows);
    for (what, list) in [("missing", &c.missing), ("corrupt", &c.corrupt), ("unreadable", &c.unreadable)] {
        if !list.is_empty() {
            println!("  {} {what}:", list.len());
            for f in list.iter().take(20) {
                println!("    {} ({})", f.hash, f.problem);
            }
            if list.len() > 20 {
                println!("    ...");
            }
        }
    }
}

pub async fn run(g: &Global, action: StoreAction) -> Result<()> {
    g.with_app(async |app| match &action {
        StoreAction::Migrate { to, threads, json } => {
            let url: mmtt::storage::s3::StoreUrl = to.parse().map_err(|e: String| anyhow::anyhow!("--to: {e}"))?;
            let from = app.store.clone();
            let (dir, cfg) = (app.data_dir.clone(), StoreConfig { url: Some(url), ..g.store_config()? });
            let dest = tokio::task::spawn_blocking(move || store::open(&dir, &cfg)).await??;
            if dest.location() == from.location() {
                bail!("--to {to} is the store in use: give another folder or bucket");
            }
            let rows = migrate::rows(&app.pool).await?;
            let (threads, json) = (*threads, *json);
            let (done, checked) = tokio::task::spawn_blocking(move || -> Result<_> {
                let b = bar(rows.len(), json, "copying");
                let done = migrate::migrate(&rows, from.as_ref(), dest.as_ref(), threads, &|| b.inc(1))
                    .map_err(|e| anyhow::anyhow!("{e}: the migration stopped; run the same command again to resume"))?;
                b.finish_and_clear();
                let b = bar(rows.len(), json, "checking");
                let checked = migrate::check(&rows, dest.as_ref(), threads, &|| b.inc(1));
                b.finish_and_clear();
                Ok((done, (checked, dest.location())))
            })
            .await??;
            let (checked, location) = checked;
            if json {
                println!("{}", serde_json::json!({"migrated": done, "check": checked, "to": location}));
            } else {
                println!(
                    "copied {} blobs ({} MB) to {location}; {} were there already",
                    done.copied,
                    done.bytes >> 20,
                    done.present
                );
                report(&checked, &location);
            }
            if !checked.clean() {
                bail!("{location} is incomplete or damaged after the copy: run the migration again");
            }
            if !json {
                println!("every row's blob is in {location}: run mmtt with --store {to} (or MMTT_STORE) from now on");
            }
            Ok(())
        }
        StoreAction::Check { threads, json } => {
            let rows = migrate::rows(&app.pool).await?;
            let (s, threads, json) = (app.store.clone(), *threads, *json);
            let checked = tokio::task::spawn_blocking(move || {
                let b = bar(rows.len(), json, "checking");
                let c = migrate::check(&rows, s.as_ref(), threads, &|| b.inc(1));
                b.finish_and_clear();
                c
            })
            .await?;
            if json {
                println!("{}", serde_json::json!({"check": checked, "store": app.store.location()}));
            } else {
                report(&checked, &app.store.location());
            }
            if !checked.clean() {
                bail!(
                    "{} blobs are missing, corrupt or unreadable in {}: restore them (mmtt store migrate from a good copy) or re-import their sources",
                    checked.missing.len() + checked.corrupt.len() + checked.unreadable.len(),
                    app.store.location()
                );
            }
            Ok(())
        }
    })
    .await
}
