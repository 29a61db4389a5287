//! `mmtt jobs`: every kind of long work (import, masks, forge, export, eval, train, table3): list, show,
//! cancel, pause, resume, retry. The output comes from `mmtt::jobs::cli`.

use super::Global;
use anyhow::Result;
use mmtt::jobs::JobAction;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    action: Option<JobsAction>,
    #[arg(long)]
    json: bool,
    /// Only this kind (import, masks, forge, export, eval, train, table3).
    #[arg(long)]
    kind: Option<String>,
    /// Only this state (queued, running, paused, cancelling, cancelled, failed, done).
    #[arg(long)]
    state: Option<String>,
}

#[derive(clap::Subcommand)]
enum JobsAction {
    /// One job with its events.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: its workers stop within one lease.
    Cancel { id: uuid::Uuid },
    /// Pause a job: its items are not claimed until resumed.
    Pause { id: uuid::Uuid },
    /// Resume a paused job where it was.
    Resume { id: uuid::Uuid },
    /// Re-queue a forge job's failed items, or a failed or cancelled job.
    Retry { id: uuid::Uuid },
}

pub async fn run(g: &Global, a: JobsArgs) -> Result<()> {
    g.with_app(async |app| match a.action {
        None => mmtt::jobs::cli::list(app, a.kind.as_deref(), a.state.as_deref(), a.json).await,
        Some(JobsAction::Show { id, json }) => mmtt::jobs::cli::show(app, id, json).await,
        Some(JobsAction::Cancel { id }) => mmtt::jobs::cli::control(app, id, JobAction::Cancel).await,
        Some(JobsAction::Pause { id }) => mmtt::jobs::cli::control(app, id, JobAction::Pause).await,
        Some(JobsAction::Resume { id }) => mmtt::jobs::cli::control(app, id, JobAction::Resume).await,
        Some(JobsAction::Retry { id }) => mmtt::jobs::cli::control(app, id, JobAction::RetryFailed).await,
    })
    .await
}
