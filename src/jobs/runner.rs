//! The worker loop of the job system: claims jobs, runs them under a lease, reports progress,
//! stops when asked, and takes over (or fails) the jobs of workers that stopped heartbeating.
//!
//! A job other than a fanned-out forge job is held by one worker at a time: claimed with
//! `FOR UPDATE SKIP LOCKED` (a queued job, or a running one whose lease expired), its lease renewed
//! with each heartbeat (a third of a lease), its progress written at the same time. At each
//! heartbeat the worker reads the job's state back: `cancelling` stops the work and marks the job
//! cancelled, `paused` stops it and leaves the job paused (resume re-queues it; the work resumes
//! where it was, since each library function skips what is stored). A job whose lease expired
//! after its last attempt is failed with the reason, by [`sweep`] (every heartbeat of every worker
//! and every listing runs it), so no job stays `running` forever.
//!
//! Forge jobs: the first worker prepares the job (plans masks, queues items: [`super::forge::enqueue_as`])
//! under the same lease; then `fanned_out` is set and every worker shares its items
//! ([`super::forge::run_worker`]).

use super::forge::{self, Enqueued, WorkerOptions, WorkerSummary};
use super::{JobError, JobSpec, JobState};
use crate::app::App;
use crate::dataset::{export, import, masks};
use anyhow::{Context, Result, anyhow};
use indicatif::ProgressBar;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// This process's worker name: `host-pid`.
pub fn process_name() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

/// The lease of a job a CLI command runs in its own process (`MMTT_JOB_LEASE_SECONDS`, default 60):
/// a killed command's job is taken over by a worker that long after its last heartbeat.
pub fn inline_lease() -> Duration {
    let s = std::env::var("MMTT_JOB_LEASE_SECONDS").ok().and_then(|v| v.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(60.0);
    Duration::from_secs_f64(s)
}

/// What a finished job produced.
#[derive(Debug)]
pub enum JobOutput {
    Import(import::Summary),
    Release(import::release::ReleaseSummary),
    Masks(masks::PlanSummary),
    /// A prepared forge job (its items are then worked on by every worker).
    Forge(Enqueued),
    Export(export::ExportSummary),
    Eval {
        report: Box<mmtt_model::eval::report::Report>,
        line: String,
    },
    Train(Box<super::train::TrainSummary>),
    /// A stage-2 (ForgeryTalker explainer and mask decoder) training run.
    Talker(Box<super::train::talker::TalkerSummary>),
    Table3(Box<super::table3::Table3Summary>),
    Assist(super::assist::AssistSummary),
}

impl JobOutput {
    fn to_json(&self) -> serde_json::Value {
        let v = match self {
            JobOutput::Import(s) => serde_json::to_value(s),
            JobOutput::Release(s) => serde_json::to_value(s),
            JobOutput::Masks(s) => serde_json::to_value(s),
            JobOutput::Forge(s) => serde_json::to_value(s),
            JobOutput::Export(s) => serde_json::to_value(s),
            JobOutput::Eval { report, line } => Ok(serde_json::json!({ "report": report, "table_line": line })),
            JobOutput::Train(s) => serde_json::to_value(s),
            JobOutput::Talker(s) => serde_json::to_value(s),
            JobOutput::Table3(s) => serde_json::to_value(s),
            JobOutput::Assist(s) => serde_json::to_value(s),
        };
        v.unwrap_or_else(|e| serde_json::json!({ "unserializable": e.to_string() }))
    }
}

/// Why [`execute`] stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Cancelled,
    Paused,
    /// The lease was lost (this process stalled past it) and another worker holds the job.
    Lost,
}

/// Marks a prepared forge job fanned out (its items are now shared by every worker), or failed.
pub(crate) async fn fanned_out(pool: &PgPool, job: Uuid, holder: &str, r: &Result<Enqueued>) -> Result<(), JobError> {
    match r {
        Ok(e) => {
            let result = serde_json::to_value(e).unwrap_or_default();
            sqlx::query(
                "UPDATE jobs SET fanned_out = true, worker = NULL, lease_until = NULL, result = $2, updated_at = now(), \
                 state = CASE WHEN state NOT IN ('running', 'queued') THEN state \
                   WHEN EXISTS (SELECT 1 FROM forge_items WHERE job_id = $1 AND status <> 'queued') THEN 'running' ELSE 'queued' END \
                 WHERE id = $1",
            )
            .bind(job)
            .bind(&result)
            .execute(pool)
            .await?;
            let mut msg = format!("{} items queued", e.queued);
            for u in e.unavailable.iter().take(20) {
                msg.push_str("; ");
                msg.push_str(u);
            }
            super::event(pool, job, "info", Some(holder), &msg).await?;
            finish_forge_job(pool, job).await?;
        }
        Err(err) => fail_job(pool, job, holder, &format!("{err:#}")).await?,
    }
    Ok(())
}

async fn fail_job(pool: &PgPool, job: Uuid, holder: &str, reason: &str) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE jobs SET state = 'failed', error = $2, worker = NULL, lease_until = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1",
    )
    .bind(job)
    .bind(reason)
    .execute(pool)
    .await?;
    super::event(pool, job, "error", Some(holder), reason).await
}

/// Ends a fanned-out forge job whose items are all done or failed (done), or a cancelling one
/// whose items are no longer held by a live worker (cancelled).
pub async fn finish_forge_job(pool: &PgPool, job: Uuid) -> Result<(), JobError> {
    let done: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET finished_at = now(), updated_at = now(), \
           state = CASE WHEN EXISTS (SELECT 1 FROM forge_items WHERE job_id = $1 AND status = 'done') \
                          OR NOT EXISTS (SELECT 1 FROM forge_items WHERE job_id = $1) THEN 'done' ELSE 'failed' END, \
           error = (SELECT CASE WHEN count(*) > 0 THEN count(*) || ' items failed (mmtt jobs show; retry with mmtt jobs retry)' END \
                    FROM forge_items WHERE job_id = $1 AND status = 'failed') \
         WHERE id = $1 AND fanned_out AND state IN ('queued', 'running') \
           AND NOT EXISTS (SELECT 1 FROM forge_items WHERE job_id = $1 AND status IN ('queued', 'running')) \
         RETURNING (SELECT count(*) FROM forge_items WHERE job_id = $1 AND status = 'done')",
    )
    .bind(job)
    .fetch_optional(pool)
    .await?;
    if let Some(n) = done {
        super::event(pool, job, "info", None, &format!("finished: {n} items forged")).await?;
    }
    // a cancelling job: items whose worker died go back to the queue; none held -> cancelled
    sqlx::query(
        "UPDATE forge_items SET status = 'queued', worker = NULL, lease_until = NULL, updated_at = now() \
         WHERE job_id = $1 AND status = 'running' AND lease_until < now() \
           AND EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state = 'cancelling')",
    )
    .bind(job)
    .execute(pool)
    .await?;
    let cancelled = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now() \
         WHERE id = $1 AND fanned_out AND state = 'cancelling' \
           AND NOT EXISTS (SELECT 1 FROM forge_items WHERE job_id = $1 AND status = 'running')",
    )
    .bind(job)
    .execute(pool)
    .await?
    .rows_affected();
    if cancelled > 0 {
        super::event(pool, job, "info", None, "cancelled: no worker holds its items any more").await?;
    }
    Ok(())
}

/// Gives back the items `worker` holds of cancelling jobs (their results are discarded) and ends
/// those jobs when nothing else holds their items.
pub async fn release_cancelled_items(pool: &PgPool, worker: &str) -> Result<(), JobError> {
    let jobs: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE forge_items SET status = 'queued', worker = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0), \
           updated_at = now() \
         WHERE worker = $1 AND status = 'running' AND job_id IN (SELECT id FROM jobs WHERE state = 'cancelling') RETURNING job_id",
    )
    .bind(worker)
    .fetch_all(pool)
    .await?;
    let mut jobs = jobs;
    jobs.sort();
    jobs.dedup();
    for j in jobs {
        super::event(pool, j, "info", Some(worker), "stopped work on the job's items: it is being cancelled").await?;
        finish_forge_job(pool, j).await?;
    }
    Ok(())
}

/// Ends what nobody will end: forge jobs whose items are all settled, cancelling jobs whose
/// worker is gone, and jobs whose worker stopped heartbeating after their last attempt.
pub async fn sweep(pool: &PgPool) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE forge_items SET status = 'failed', updated_at = now(), \
         last_error = coalesce(last_error, 'worker lost ' || attempts || ' times (lease expired)') \
         WHERE status = 'running' AND lease_until < now() AND attempts >= max_attempts",
    )
    .execute(pool)
    .await?;
    let open: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE fanned_out AND state IN ('queued', 'running', 'cancelling')").fetch_all(pool).await?;
    for j in open {
        finish_forge_job(pool, j).await?;
    }
    let failed: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "UPDATE jobs SET state = 'failed', finished_at = now(), updated_at = now(), lease_until = NULL, \
           error = 'worker ' || coalesce(worker, '?') || ' stopped heartbeating at ' \
                   || coalesce(to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '?') || ' UTC, after ' \
                   || attempts || ' of ' || max_attempts || ' attempts' \
         WHERE NOT fanned_out AND state = 'running' AND lease_until < now() AND attempts >= max_attempts RETURNING id, error",
    )
    .fetch_all(pool)
    .await?;
    for (j, e) in failed {
        super::event(pool, j, "error", None, e.as_deref().unwrap_or("failed")).await?;
    }
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now(), worker = NULL, lease_until = NULL \
         WHERE NOT fanned_out AND state = 'cancelling' AND (lease_until IS NULL OR lease_until < now()) RETURNING id",
    )
    .fetch_all(pool)
    .await?;
    for j in cancelled {
        super::event(pool, j, "info", None, "cancelled (its worker had stopped)").await?;
    }
    Ok(())
}

/// A job claimed by this worker.
pub struct ClaimedJob {
    pub id: Uuid,
    pub spec: JobSpec,
    pub attempts: i32,
}

/// A claimed job's row: id, params, attempts, max_attempts, and the previous holder, its last
/// heartbeat and the state before the claim.
type JobClaimRow = (Uuid, serde_json::Value, i32, i32, Option<String>, Option<chrono::DateTime<chrono::Utc>>, String);

/// Claims the oldest queued job (or one whose worker's lease expired, to take it over).
pub async fn claim_job(pool: &PgPool, name: &str, lease: Duration, only: Option<Uuid>) -> Result<Option<ClaimedJob>, JobError> {
    loop {
        let row: Option<JobClaimRow> = sqlx::query_as(
            "WITH c AS (SELECT id, worker AS prev, heartbeat_at AS prev_hb, state AS prev_state FROM jobs \
                   WHERE NOT fanned_out AND ($3::uuid IS NULL OR id = $3) \
                     AND (state = 'queued' OR (state = 'running' AND lease_until < now() AND attempts < max_attempts)) \
                   ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1) \
                 UPDATE jobs j SET state = 'running', worker = $1, lease_until = now() + make_interval(secs => $2), \
                   heartbeat_at = now(), attempts = j.attempts + 1, started_at = coalesce(j.started_at, now()), updated_at = now() \
                 FROM c WHERE j.id = c.id \
                 RETURNING j.id, j.params, j.attempts, j.max_attempts, c.prev, c.prev_hb, c.prev_state",
        )
        .bind(name)
        .bind(lease.as_secs_f64())
        .bind(only)
        .fetch_optional(pool)
        .await?;
        let Some((id, params, attempts, max_attempts, prev, prev_hb, prev_state)) = row else { return Ok(None) };
        if prev_state == "running" {
            let at = prev_hb.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "?".into());
            let msg = format!(
                "taken over from worker {} (stopped heartbeating at {at}); attempt {attempts} of {max_attempts}",
                prev.as_deref().unwrap_or("?")
            );
            tracing::warn!(job = %id, "{msg}");
            super::event(pool, id, "warn", Some(name), &msg).await?;
        } else {
            super::event(pool, id, "info", Some(name), &format!("claimed (attempt {attempts} of {max_attempts})")).await?;
        }
        match serde_json::from_value::<JobSpec>(params) {
            Ok(spec) => return Ok(Some(ClaimedJob { id, spec, attempts })),
            Err(e) => fail_job(pool, id, name, &format!("its parameters cannot be read ({e}): submit it again")).await?,
        }
    }
}

/// Runs a claimed job to its end under `worker`'s lease: `Ok(Ok(output))` when done (the result is
/// stored), `Ok(Err(stopped))` when cancelled, paused or lost, `Err` when the work failed (the job
/// is marked failed with the error).
pub async fn execute(
    app: &App,
    job: Uuid,
    spec: &JobSpec,
    worker: &str,
    lease: Duration,
    o: &WorkerOptions,
    bar: ProgressBar,
) -> Result<std::result::Result<JobOutput, Stopped>> {
    let pool = &app.pool;
    let live = super::train::Live::default();
    let work = run_spec(app, job, spec, o, bar.clone(), &live);
    let mut work = std::pin::pin!(work);
    let mut beat = (lease / 3).max(Duration::from_millis(200));
    if matches!(spec, JobSpec::Train(_)) {
        // a training run's page follows its steps, and pause/cancel stop it within a second
        beat = beat.min(Duration::from_secs(1));
    }
    let outcome = loop {
        tokio::select! {
            r = &mut work => break Ok(r),
            _ = tokio::time::sleep(beat) => {
                let state: Option<String> = sqlx::query_scalar(
                    "UPDATE jobs SET lease_until = now() + make_interval(secs => $3), heartbeat_at = now(), updated_at = now(), \
                       rate_per_s = CASE WHEN $6::float8 IS NOT NULL THEN $6 WHEN progress_at IS NULL OR $4 < done THEN rate_per_s \
                         ELSE 0.5 * coalesce(rate_per_s, ($4 - done) / greatest(extract(epoch FROM now() - progress_at)::float8, 0.001)) \
                            + 0.5 * ($4 - done) / greatest(extract(epoch FROM now() - progress_at)::float8, 0.001) END, \
                       progress_at = now(), done = $4, total = greatest($5, $4) \
                     WHERE id = $1 AND worker = $2 RETURNING state",
                )
                .bind(job)
                .bind(worker)
                .bind(lease.as_secs_f64())
                .bind(bar.position() as i64)
                .bind(bar.length().unwrap_or(0) as i64)
                .bind(live.rate())
                .fetch_optional(pool)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "job heartbeat failed");
                    Some("running".into())
                });
                match state.as_deref() {
                    Some("running") => {}
                    Some("cancelling") => break Err(Stopped::Cancelled),
                    Some("paused") => break Err(Stopped::Paused),
                    Some("cancelled") => break Err(Stopped::Cancelled),
                    _ => break Err(Stopped::Lost),
                }
            }
        }
    };
    if outcome.is_err() && matches!(spec, JobSpec::Train(_) | JobSpec::Table3(_) | JobSpec::Assist(_)) {
        // a trainer (or a prediction) runs on its own thread: ask it to checkpoint and return (to
        // stop after its slice of samples), and keep the lease
        // meanwhile, so the job is marked (and can be resumed) only once its folder is settled
        live.stop();
        loop {
            tokio::select! {
                r = &mut work => {
                    if let Err(e) = r {
                        tracing::warn!(job = %job, error = %format!("{e:#}"), "the stopped trainer returned an error");
                    }
                    break;
                }
                _ = tokio::time::sleep(beat) => {
                    let _ = sqlx::query(
                        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3), heartbeat_at = now(), done = $4 \
                         WHERE id = $1 AND worker = $2",
                    )
                    .bind(job)
                    .bind(worker)
                    .bind(lease.as_secs_f64())
                    .bind(bar.position() as i64)
                    .execute(pool)
                    .await;
                }
            }
        }
        let _ = sqlx::query("UPDATE jobs SET done = $3, rate_per_s = NULL WHERE id = $1 AND worker = $2")
            .bind(job)
            .bind(worker)
            .bind(bar.position() as i64)
            .execute(pool)
            .await;
    }
    bar.finish_and_clear();
    match outcome {
        Err(stopped) => {
            // dropping the work future stops it at its next await (a blocking stage ends its current
            // item); a trainer was stopped above
            let (sql, msg) = match stopped {
                Stopped::Cancelled => (
                    "UPDATE jobs SET state = 'cancelled', worker = NULL, lease_until = NULL, finished_at = now(), updated_at = now() \
                     WHERE id = $1 AND worker = $2",
                    "stopped: cancelled",
                ),
                Stopped::Paused => (
                    "UPDATE jobs SET worker = NULL, lease_until = NULL, updated_at = now() WHERE id = $1 AND worker = $2",
                    "stopped: paused (resume continues where it was)",
                ),
                Stopped::Lost => ("SELECT $1::uuid, $2::text", "stopped: its lease was lost to another worker"),
            };
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(job).bind(worker).execute(pool).await?;
            super::event(pool, job, "info", Some(worker), msg).await?;
            Ok(Err(stopped))
        }
        Ok(Err(e)) => {
            if let JobSpec::Forge(_) = spec {
                // fanned_out already marked it failed
            } else {
                fail_job(pool, job, worker, &format!("{e:#}")).await?;
            }
            Err(e)
        }
        Ok(Ok(out)) => {
            if let JobOutput::Forge(_) = out {
                // fanned out: the items are the work now
            } else {
                let n = bar.length().unwrap_or(0).max(bar.position()) as i64;
                let (done, total, failed) = counts(&out, n);
                sqlx::query(
                    "UPDATE jobs SET state = CASE WHEN state IN ('running', 'paused') THEN 'done' ELSE state END, \
                       result = $3, done = $4, total = $5, failed = $6, worker = NULL, lease_until = NULL, \
                       finished_at = now(), updated_at = now(), error = NULL WHERE id = $1 AND worker = $2",
                )
                .bind(job)
                .bind(worker)
                .bind(out.to_json())
                .bind(done)
                .bind(total)
                .bind(failed)
                .execute(pool)
                .await?;
                super::event(pool, job, "info", Some(worker), "done").await?;
            }
            Ok(Ok(out))
        }
    }
}

/// (done, total, failed) of a finished job, in the job's own units.
fn counts(out: &JobOutput, bar_total: i64) -> (i64, i64, i64) {
    match out {
        JobOutput::Import(s) => {
            let done = (s.imported + s.already_present) as i64;
            let failed = s.skipped.len() as i64;
            (done, done + failed, failed)
        }
        JobOutput::Release(s) => ((s.imported + s.already_present) as i64, (s.imported + s.already_present) as i64, 0),
        JobOutput::Masks(s) => {
            let done = (s.planned + s.already_planned) as i64;
            (done, done, 0)
        }
        JobOutput::Export(s) => (s.samples as i64, s.samples as i64, 0),
        JobOutput::Eval { .. } => (1, 1, 0),
        JobOutput::Train(s) => (s.last_step as i64, s.total_steps as i64, 0),
        JobOutput::Talker(s) => (s.last_step as i64, s.total_steps as i64, 0),
        JobOutput::Table3(s) => {
            let n = (s.images * s.rows.len()) as i64;
            (n, n, 0)
        }
        JobOutput::Assist(s) => (s.wanted as i64, s.wanted as i64, 0),
        JobOutput::Forge(_) => (0, bar_total, 0),
    }
}

async fn run_spec(
    app: &App,
    job: Uuid,
    spec: &JobSpec,
    o: &WorkerOptions,
    bar: ProgressBar,
    live: &super::train::Live,
) -> Result<JobOutput> {
    Ok(match spec {
        JobSpec::Import(s) => match s.dataset.dataset() {
            Some(dataset) => {
                let opts = import::ImportOptions {
                    dataset,
                    root: Some(s.root.clone()),
                    files: vec![],
                    limit: s.limit,
                    limits: import::decode::DecodeLimits { max_side: s.max_side, ..Default::default() },
                    progress: o.progress,
                };
                JobOutput::Import(import::run_with(app, opts, None, bar, Some(job)).await?)
            }
            None => JobOutput::Release(import::release::import(app, &s.root).await?),
        },
        JobSpec::Masks(s) => JobOutput::Masks(masks::plan_all_with(app, s.seed, s.dataset.as_deref(), bar).await?),
        JobSpec::Forge(req) => {
            let r = forge::enqueue_as(app, req, job).await;
            fanned_out(&app.pool, job, &o.name, &r).await?;
            JobOutput::Forge(r?)
        }
        JobSpec::Export(s) => JobOutput::Export(export::run_with(app, &s.options(), bar, Some(job)).await?),
        JobSpec::Eval(s) => {
            let s = s.clone();
            bar.set_length(1);
            let (report, line) = tokio::task::spawn_blocking(move || -> Result<_> {
                let read = |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
                let data = match &s.meteor_data {
                    Some(p) => mmtt_model::eval::meteor::MeteorData::at(p)?,
                    None => mmtt_model::eval::meteor::MeteorData::require()?,
                };
                let r = mmtt_model::eval::report::evaluate(
                    &read(&s.gt)?,
                    &read(&s.predictions)?,
                    &s.gt_base(),
                    &s.pred_base(),
                    s.threshold,
                    Some(&data),
                )?;
                let line = mmtt_model::eval::report::table_line(&s.name, &r);
                Ok((r, line))
            })
            .await
            .map_err(|e| anyhow!("the evaluation panicked: {e}"))??;
            bar.inc(1);
            JobOutput::Eval { report: Box::new(report), line }
        }
        JobSpec::Train(super::train::TrainSpec::Fpn(s)) => {
            JobOutput::Train(Box::new(super::train::run(app, job, s, bar, live, &o.name).await?))
        }
        JobSpec::Train(super::train::TrainSpec::Talker(s)) => {
            JobOutput::Talker(Box::new(super::train::talker::run(app, job, s, bar, live, &o.name).await?))
        }
        JobSpec::Table3(s) => JobOutput::Table3(Box::new(super::table3::run(app, job, s, bar, live, &o.name).await?)),
        JobSpec::Assist(s) => JobOutput::Assist(super::assist::run(app, job, s, bar, live, &o.name).await?),
    })
}

/// Claims and runs jobs of every kind but fanned-out forge items, one at a time. With
/// `until_empty`, returns when none is queued, running (a running one may need taking over) or
/// cancelling; the number of jobs it ran.
async fn job_loop(app: &App, o: &WorkerOptions) -> Result<u64> {
    let mut ran = 0;
    loop {
        match claim_job(&app.pool, &o.name, o.lease, o.job).await? {
            Some(c) => {
                ran += 1;
                let bar = if o.progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
                match execute(app, c.id, &c.spec, &o.name, o.lease, o, bar).await {
                    Ok(Ok(_)) => tracing::info!(job = %c.id, kind = %c.spec.kind(), "job done"),
                    Ok(Err(s)) => tracing::info!(job = %c.id, "job stopped: {s:?}"),
                    Err(e) => tracing::warn!(job = %c.id, error = %format!("{e:#}"), "job failed"),
                }
            }
            None => {
                if o.until_empty {
                    let open: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM jobs WHERE NOT fanned_out AND ($1::uuid IS NULL OR id = $1) \
                         AND state IN ('queued', 'running', 'cancelling')",
                    )
                    .bind(o.job)
                    .fetch_one(&app.pool)
                    .await?;
                    if open == 0 {
                        return Ok(ran);
                    }
                    sweep(&app.pool).await?;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// `mmtt worker`: registers the worker, heartbeats, and runs jobs of every kind (forge items
/// shared with the other workers) until stopped, or with `until_empty` until nothing is open.
pub async fn run(app: &App, o: WorkerOptions) -> Result<WorkerSummary> {
    super::workers::register(&app.pool, &o).await?;
    let heartbeat = async {
        loop {
            tokio::time::sleep((o.lease / 3).max(Duration::from_millis(200))).await;
            if let Err(e) = super::workers::heartbeat(&app.pool, &o.name).await {
                tracing::warn!(error = %e, "worker heartbeat failed");
            }
            if let Err(e) = sweep(&app.pool).await {
                tracing::warn!(error = %e, "sweep failed");
            }
        }
    };
    let work = async {
        let mut total = WorkerSummary::default();
        if o.until_empty {
            loop {
                let ran = job_loop(app, &o).await?;
                let s = forge::run_worker(app, o.clone()).await?;
                total.done += s.done;
                total.failed_attempts += s.failed_attempts;
                if ran == 0 && s.done == 0 && s.failed_attempts == 0 {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(total)
        } else {
            let (_, b) = tokio::try_join!(job_loop(app, &o), forge::run_worker(app, o.clone()))?;
            Ok(b)
        }
    };
    let r = tokio::select! {
        r = work => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };
    super::workers::stopped(&app.pool, &o.name).await?;
    r
}

/// The state a job ended in, for messages.
pub fn stopped_state(s: Stopped) -> JobState {
    match s {
        Stopped::Cancelled => JobState::Cancelled,
        Stopped::Paused => JobState::Paused,
        Stopped::Lost => JobState::Running,
    }
}
