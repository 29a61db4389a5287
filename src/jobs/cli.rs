//! What the `mmtt jobs`, `mmtt worker` and the long commands (`import`, `masks plan`, `export`,
//! `train fpn`, `train talker`, `ablation fpn`) print, over the job system's API. The long commands record a job and run it in their own
//! process under a lease ([`run_inline`]), so they appear in `mmtt jobs` and a killed one is
//! taken over by a worker.

use super::forge::WorkerOptions;
use super::runner::{self, JobOutput, Stopped};
use super::{JobAction, JobFilter, JobKind, JobSpec, JobState, JobView};
use crate::app::App;
use anyhow::{Result, anyhow, bail};
use indicatif::ProgressBar;
use uuid::Uuid;

/// Who starts jobs from the command line (`cli:USER`).
pub fn cli_user() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// Records `spec` as a job held by this process and runs it here; a killed process's job is taken
/// over by a worker once its lease (`MMTT_JOB_LEASE_SECONDS`, default 60) expires.
pub async fn run_inline(app: &App, spec: &JobSpec, progress: bool) -> Result<(Uuid, JobOutput)> {
    spec.validate()?;
    if let JobSpec::Train(t) = spec {
        super::train::check_run_dir_free(&app.pool, t, None).await?;
    }
    let id = Uuid::new_v4();
    let name = runner::process_name();
    let lease = runner::inline_lease();
    super::insert(&app.pool, id, spec, &cli_user(), Some((&name, lease))).await?;
    let o = WorkerOptions {
        name: name.clone(),
        device: mmtt_generators::forge::onnx::Device::Cpu,
        models_dir: super::forge::default_models_dir(&app.data_dir),
        threads: 0,
        lease,
        until_empty: true,
        job: Some(id),
        progress,
    };
    let bar = if progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    match runner::execute(app, id, spec, &name, lease, &o, bar).await? {
        Ok(out) => Ok((id, out)),
        Err(Stopped::Lost) => bail!("job {id}: this process lost its lease (it stalled); another worker took the job over"),
        Err(s) => bail!("job {id} was {} (`mmtt jobs show {id}`)", runner::stopped_state(s)),
    }
}

/// `mmtt import` (not the release): the same output as before the job system.
pub async fn import(app: &App, spec: super::ImportSpec, json: bool) -> Result<()> {
    let dataset = spec.dataset.dataset();
    match run_inline(app, &JobSpec::Import(spec), true).await?.1 {
        JobOutput::Import(s) => {
            if let Some(d) = dataset {
                s.print_human(d);
            }
            if json {
                println!("{}", serde_json::to_string(&s)?);
            }
        }
        JobOutput::Release(s) => {
            println!(
                "imported {} samples from the MMTT release ({}); {} were already present",
                s.imported,
                s.per_split.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
                s.already_present
            );
            if json {
                println!("{}", serde_json::to_string(&s)?);
            }
        }
        other => bail!("an import job produced {other:?}"),
    }
    Ok(())
}

/// `mmtt masks plan`.
pub async fn masks_plan(app: &App, spec: super::MasksSpec, json: bool) -> Result<()> {
    let JobOutput::Masks(s) = run_inline(app, &JobSpec::Masks(spec), true).await?.1 else {
        bail!("a masks job produced something else");
    };
    println!(
        "masks planned for {} sources, {} already planned, {} without facial parts",
        s.planned,
        s.already_planned,
        s.unplannable.len()
    );
    for u in &s.unplannable {
        println!("  {u}");
    }
    if json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}

/// `mmtt export`.
pub async fn export(app: &App, spec: super::ExportSpec, json: bool) -> Result<()> {
    let JobOutput::Export(r) = run_inline(app, &JobSpec::Export(spec), true).await?.1 else {
        bail!("an export job produced something else");
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "exported {} samples ({}) to {} in {:.1} s: {} files, {:.1} MB ({} verified from an earlier run: {} kept, {} rewritten; {} stale removed); splits seed {} ratios {}",
            r.samples,
            r.per_split.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
            r.out,
            r.seconds,
            r.files,
            r.bytes as f64 / 1e6,
            r.verified_files,
            r.reused_files,
            r.replaced_files,
            r.removed_files,
            r.split_seed,
            r.split_ratios
        );
    }
    Ok(())
}

/// `mmtt jobs [--kind K] [--state S] [--json]`: every kind, newest first.
pub async fn list(app: &App, kind: Option<&str>, state: Option<&str>, json: bool) -> Result<()> {
    let filter = JobFilter {
        kind: kind.map(|k| k.parse::<JobKind>()).transpose().map_err(|e| anyhow!("--kind: {e}"))?,
        state: state.map(|s| s.parse::<JobState>()).transpose().map_err(|e| anyhow!("--state: {e}"))?,
        limit: Some(1000),
    };
    let jobs = super::list(&app.pool, &filter).await?;
    if json {
        println!("{}", serde_json::to_string(&jobs)?);
        return Ok(());
    }
    for j in &jobs {
        print_line(j);
    }
    let workers = super::live_workers(&app.pool).await?;
    if !workers.is_empty() {
        println!("live workers:");
        for w in workers {
            println!(
                "  {} (pid {}, v{}) devices {} methods {}{}",
                w.name,
                w.pid,
                w.version,
                w.devices.join(","),
                w.methods.join(","),
                w.current_job.map(|j| format!(", working on {j}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn print_line(j: &JobView) {
    let tail = |j: &JobView| {
        let mut t = String::new();
        if let Some(r) = j.rate_per_s {
            t.push_str(&format!(", {r:.2}/s"));
        }
        if let Some(e) = j.eta_s {
            t.push_str(&format!(", eta {e:.0} s"));
        }
        if let Some(e) = &j.error {
            t.push_str(&format!(" ({e})"));
        }
        if let Some(b) = &j.blocked {
            t.push_str(&format!(" [blocked: {b}]"));
        }
        t
    };
    match j.kind {
        JobKind::Forge => {
            println!(
                "job {} {}: {} done, {} queued, {} running, {} failed (of {} requested); {}{}",
                j.id,
                j.params["methods"],
                j.done,
                j.queued,
                j.running,
                j.failed,
                j.params["count"],
                j.state,
                tail(j)
            );
            for f in &j.failures {
                println!("  failed {} ({}): {}", f.item, f.method, f.reason.as_deref().unwrap_or_default());
            }
        }
        JobKind::Export => println!(
            "export {} {} -> {}: {}, {}/{} samples{}",
            j.id,
            j.params["format"].as_str().unwrap_or("?"),
            j.params["out"].as_str().unwrap_or("?"),
            j.state,
            j.done,
            j.total,
            tail(j)
        ),
        JobKind::Import => println!(
            "import {} {} from {}: {}, {}/{} inputs{}",
            j.id,
            j.params["dataset"].as_str().unwrap_or("?"),
            j.params["root"].as_str().unwrap_or("?"),
            j.state,
            j.done,
            j.total,
            tail(j)
        ),
        JobKind::Train => println!(
            "train {} {} {} -> {}: {}, step {}/{}{}",
            j.id,
            j.params["model"].as_str().unwrap_or("?"),
            j.params["config"]["preset"].as_str().unwrap_or("?"),
            j.params["run_dir"].as_str().unwrap_or("?"),
            j.state,
            j.done,
            j.total,
            tail(j).replacen("/s", " images/s", 1)
        ),
        _ => println!("{} {}: {}, {}/{}{}", j.kind, j.id, j.state, j.done, j.total, tail(j)),
    }
}

/// `mmtt jobs show ID [--json]`.
pub async fn show(app: &App, id: Uuid, json: bool) -> Result<()> {
    let j = super::get(&app.pool, id).await?.ok_or_else(|| anyhow!("no job {id} (`mmtt jobs` lists them)"))?;
    if json {
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    print_line(&j);
    println!("  started by {} at {}, attempts {} of {}", j.started_by, j.created_at, j.attempts, j.max_attempts);
    println!("  params {}", j.params);
    if let Some(r) = &j.result {
        println!("  result {r}");
    }
    for e in &j.events {
        println!(
            "  {} {:<5} {}{}",
            e.at.format("%H:%M:%S"),
            e.level,
            e.worker.as_deref().map(|w| format!("[{w}] ")).unwrap_or_default(),
            e.message
        );
    }
    Ok(())
}

/// `mmtt jobs cancel|pause|resume|retry ID`.
pub async fn control(app: &App, id: Uuid, action: JobAction) -> Result<()> {
    let j = super::control(&app.pool, id, action, &cli_user()).await?;
    println!("job {id}: {} ({} done, {} failed of {})", j.state, j.done, j.failed, j.total);
    Ok(())
}

/// `mmtt worker`.
pub async fn worker(app: &App, o: WorkerOptions) -> Result<()> {
    let s = runner::run(app, o).await?;
    println!("worker done: {} forged, {} failed attempts", s.done, s.failed_attempts);
    Ok(())
}

/// Runs `serve` with an embedded worker beside it (restarted after an error) unless `worker` is None.
pub async fn serve_with_worker(
    app: &App,
    serve: impl std::future::Future<Output = Result<()>>,
    worker: Option<WorkerOptions>,
) -> Result<()> {
    let Some(o) = worker else { return serve.await };
    let embedded = async {
        loop {
            if let Err(e) = runner::run(app, o.clone()).await {
                tracing::warn!(error = %format!("{e:#}"), "the embedded worker stopped; restarting it in 5 s");
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    };
    tokio::select! {
        r = serve => r,
        _ = embedded => unreachable!("the embedded worker loop never ends"),
    }
}

/// The default run folder of a training run: `DATA_DIR/runs/fpn-YYYYMMDD-HHMMSS-XXXXXX`.
pub fn default_run_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    default_run_dir_of(data_dir, super::train::TrainModel::Fpn)
}

/// The default run folder of a `model` training run: `DATA_DIR/runs/MODEL-YYYYMMDD-HHMMSS-XXXXXX`.
pub fn default_run_dir_of(data_dir: &std::path::Path, model: super::train::TrainModel) -> std::path::PathBuf {
    data_dir.join("runs").join(format!(
        "{}-{}-{}",
        model.name(),
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        &Uuid::new_v4().simple().to_string()[..6]
    ))
}

fn print_train(s: &super::train::TrainSummary) {
    println!(
        "trained {} steps of {} ({} training, {} validation samples{}) in {:.0} s; final loss {}; best validation PLM {}",
        s.last_step,
        s.total_steps,
        s.train_samples,
        s.val_samples,
        if s.resumed_from > 0 { format!(", resumed from step {}", s.resumed_from) } else { String::new() },
        s.seconds,
        s.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        s.best_plm.map(|p| format!("{:.2}", 100.0 * p)).unwrap_or_else(|| "- (no validation)".into()),
    );
    println!(
        "  run folder {}\n  best checkpoint {}\n  last checkpoint {}",
        s.run_dir.display(),
        s.best_dir.display(),
        s.last_dir.display()
    );
}

fn print_talker(s: &super::train::talker::TalkerSummary) {
    println!(
        "trained {} steps of {} ({} training, {} validation samples{}) in {:.0} s; final loss {}; best validation CIDEr + BLEU-4 {}",
        s.last_step,
        s.total_steps,
        s.train_samples,
        s.val_samples,
        if s.resumed_from > 0 { format!(", resumed from step {}", s.resumed_from) } else { String::new() },
        s.seconds,
        s.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        match (s.best_score, s.best_step) {
            (Some(x), Some(at)) => format!("{x:.4} (step {at})"),
            (Some(x), None) => format!("{x:.4}"),
            _ => "- (no validation)".into(),
        },
    );
    println!(
        "  run folder {}\n  best checkpoint {}\n  last checkpoint {}",
        s.run_dir.display(),
        s.best_dir.display(),
        s.last_dir.display()
    );
}

/// `mmtt train fpn|talker`: queues the training job (a worker runs it), or with `wait` runs it in
/// this process with a progress bar (a killed command's job is taken over by a worker, which
/// resumes from the run folder).
pub async fn train(app: &App, spec: super::train::TrainSpec, wait: bool, json: bool) -> Result<()> {
    let run_dir = spec.run_dir().to_path_buf();
    let spec = JobSpec::Train(spec);
    if !wait {
        let id = super::submit(&app.pool, &spec, &cli_user()).await?;
        if json {
            println!("{}", serde_json::json!({ "job": id, "run_dir": run_dir }));
        } else {
            println!(
                "queued train job {id} (run folder {}): a worker runs it (`mmtt worker`, or the one `mmtt serve` runs); follow it with `mmtt jobs show {id}`",
                run_dir.display()
            );
        }
        return Ok(());
    }
    let (id, out) = run_inline(app, &spec, !json).await?;
    match out {
        JobOutput::Train(s) if json => println!("{}", serde_json::json!({ "job": id, "summary": s })),
        JobOutput::Talker(s) if json => println!("{}", serde_json::json!({ "job": id, "summary": s })),
        JobOutput::Train(s) => {
            println!("job {id}:");
            print_train(&s);
        }
        JobOutput::Talker(s) => {
            println!("job {id}:");
            print_talker(&s);
        }
        _ => bail!("a training job produced something else"),
    }
    Ok(())
}

/// `mmtt ablation fpn`: the four rows of the paper's Table 4, each trained (as a job run in this
/// process; a row already trained in its folder is only resumed to its end) and scored on
/// `split`, printed beside the paper's PLM.
pub async fn ablation(
    app: &App,
    base: &super::train::ConfigFile,
    root: &std::path::Path,
    split: crate::storage::split::Split,
    json: bool,
) -> Result<Vec<super::train::AblationRow>> {
    use super::train::{FpnTrainSpec, TABLE4, TrainSpec, ablation_config, ablation_dir, evaluate, scoring_checkpoint, unfinished};
    let mut rows = Vec::new();
    for (i, row) in TABLE4.iter().enumerate() {
        let spec = FpnTrainSpec { config: ablation_config(&base.config, i), run_dir: ablation_dir(root, i), data: base.data.clone() };
        if !json {
            eprintln!("[{}/4] {}: training into {}", i + 1, row.0, spec.run_dir.display());
        }
        let (job, out) = run_inline(app, &JobSpec::Train(TrainSpec::Fpn(Box::new(spec.clone()))), !json).await?;
        let JobOutput::Train(s) = out else { bail!("a training job produced something else") };
        if let Some(why) = unfinished(&s) {
            bail!("{}: the run {why}; run the ablation again to resume it", row.0);
        }
        let ck = scoring_checkpoint(&s);
        let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(0) };
        let e = evaluate(app, &ck, &base.data, split, base.config.labels, bar.clone()).await?;
        bar.finish_and_clear();
        super::train::record_evaluation(&app.pool, job, split, &e).await?;
        rows.push(super::train::AblationRow {
            name: row.0.to_string(),
            paper_plm: row.5,
            plm: 100.0 * e.scores.plm,
            macro_f1: 100.0 * e.scores.macro_avg.f1,
            micro_f1: 100.0 * e.scores.micro_avg.f1,
            job,
            run_dir: spec.run_dir,
            checkpoint: ck,
        });
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!("Table 4 (PLM in %, {} split)", split);
        println!("{:<24} {:>10} {:>10} {:>10} {:>10}", "model", "paper PLM", "PLM", "macro F1", "micro F1");
        for r in &rows {
            println!("{:<24} {:>10.2} {:>10.2} {:>10.2} {:>10.2}", r.name, r.paper_plm, r.plm, r.macro_f1, r.micro_f1);
        }
    }
    Ok(rows)
}
