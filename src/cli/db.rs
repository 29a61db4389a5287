//! `mmtt db start|stop|status`: the private PostgreSQL cluster under the data directory.

use super::Global;
use anyhow::Result;
use clap::Subcommand;
use mmtt::storage::db::cluster;

#[derive(Subcommand)]
pub enum DbAction {
    /// Start the private cluster and keep it running.
    Start,
    /// Stop the private cluster.
    Stop,
    /// Say whether the private cluster is running.
    Status,
}

pub async fn run(g: &Global, action: DbAction) -> Result<()> {
    let c = cluster::Cluster::new(&g.data_dir)?;
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
