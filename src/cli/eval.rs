//! `mmtt eval captions|masks|report|labels|fpn|table3` and `mmtt regions`: the paper's metrics
//! over files (JSON on stdout, a table on stderr); no database, except `eval fpn` over the
//! project's samples, `eval report --record` (the row stored as an `eval` job) and `eval table3`
//! (a trained stage-2 model's Table 3 rows, as a `table3` job).

use anyhow::{Context, Result};
use clap::Subcommand;
use mmtt_model::eval::meteor::MeteorData;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricSet {
    All,
    Ngram,
    Meteor,
}

#[derive(Subcommand)]
pub enum EvalAction {
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr: refs `{"id": ["ref", ...]}`, preds `{"id": "hyp"}`.
    Captions {
        #[arg(long)]
        refs: PathBuf,
        #[arg(long)]
        preds: PathBuf,
        /// pycocoevalcap's meteor/ folder (meteor-1.5.jar, data/paraphrase-en.gz); found in
        /// MMTT_METEOR_DATA or the Python site-packages when not given.
        #[arg(long)]
        meteor_data: Option<PathBuf>,
        /// all: every metric (an error without Meteor's data); ngram: BLEU, ROUGE-L, CIDEr
        /// (METEOR null, its data not needed); meteor: METEOR only.
        #[arg(long, value_enum, default_value = "all")]
        metrics: MetricSet,
    },
    /// mIoU, cIoU, precision, recall over same-named PNG masks.
    Masks {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        /// A pixel is forged where its 8-bit luma is above this.
        #[arg(long, default_value_t = 127)]
        threshold: u8,
    },
    /// The paper's Table 2 row from release-format ground truth and a JSONL prediction file.
    Report {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        gt_mask_base: PathBuf,
        #[arg(long)]
        pred_mask_base: PathBuf,
        #[arg(long, default_value_t = 127)]
        threshold: u8,
        /// The method name in the printed row [default: mmtt; with --model: "MODEL (w/o FPN)" ...].
        #[arg(long)]
        name: Option<String>,
        /// pycocoevalcap's meteor/ folder (see `eval captions`).
        #[arg(long)]
        meteor_data: Option<PathBuf>,
        /// Store the row in the project's database (an `eval` job run in this process): the
        /// console's results page shows it.
        #[arg(long)]
        record: bool,
        /// The trained model the predictions came from: with --regions, the row is one of the
        /// model's Table 3 rows on the results page.
        #[arg(long, requires_all = ["record", "regions"])]
        model: Option<String>,
        /// The regions variant the predictions were made with (`mmtt predict --regions`): fpn,
        /// none or gt.
        #[arg(long, requires = "model", value_parser = mmtt::predict::parse_variant)]
        regions: Option<mmtt_model::talker::train::RegionSource>,
    },
    /// PLM and per-label / macro / micro precision, recall, F1 of 21-label sets per id.
    Labels {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
    },
    /// A trained stage-2 model's Table 3 rows: predicted with each regions variant (w/o FPN, w/
    /// FPN, w/ FPN-GT) on a split and scored, as a `table3` job run here; the rows go to the
    /// results page.
    Table3(EvalTable3Args),
    /// A region-prompter checkpoint on a split: PLM, per-label, macro and micro figures; the
    /// predicted regions of every sample written with --out (the JSON `eval labels --pred` and
    /// stage 2 read).
    Fpn(EvalFpnArgs),
}

#[derive(clap::Args)]
pub struct EvalFpnArgs {
    /// The checkpoint folder (or the authors' .bin).
    #[arg(long, required_unless_present = "job")]
    checkpoint: Option<PathBuf>,
    /// A training job: its best checkpoint (else its last) is scored, and the figures are added
    /// to the job's result.
    #[arg(long, conflicts_with = "checkpoint")]
    job: Option<uuid::Uuid>,
    #[arg(long, default_value = "test", value_parser = super::train::parse_split)]
    split: mmtt::storage::split::Split,
    /// Write `{sample id: [predicted regions]}` here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// An hf or mmtt export folder instead of the database.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Ground-truth labels from the captions (extractor, default) or the annotators' chips.
    #[arg(long, value_enum, default_value = "extractor")]
    labels: super::train::LabelsArg,
}

#[derive(clap::Args)]
pub struct EvalTable3Args {
    /// A finished stage-2 training job: its best (else last) checkpoint, its data source and its
    /// FPN.
    #[arg(long, required_unless_present = "checkpoint", conflicts_with = "checkpoint")]
    job: Option<uuid::Uuid>,
    /// The stage-2 checkpoint folder (instead of --job).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The model's name on the results page [default: the run folder's name].
    #[arg(long, required_unless_present = "job")]
    model: Option<String>,
    #[arg(long, default_value = "test", value_parser = super::train::parse_split)]
    split: mmtt::storage::split::Split,
    /// The variants, comma-separated [default: none,fpn,gt].
    #[arg(long, value_delimiter = ',', value_parser = mmtt::predict::parse_variant)]
    variants: Vec<mmtt_model::talker::train::RegionSource>,
    /// An FPN checkpoint folder for the w/ FPN variant, instead of the checkpoint's own.
    #[arg(long)]
    fpn: Option<PathBuf>,
    /// An hf or mmtt export folder instead of the database (with --job: the run's own source).
    #[arg(long)]
    from_export: Option<PathBuf>,
    /// At most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// The output folder (one sub-folder per variant) [default: DATA_DIR/evals/table3-DATE-ID].
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Beams of the beam search (1: greedy) [default: the release's, 5].
    #[arg(long)]
    num_beams: Option<usize>,
    /// Most tokens generated per image [default: the release's, 100].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RegionsArgs {
    text: String,
    /// Print the 21-value vector too.
    #[arg(long)]
    vector: bool,
}

/// Meteor's data from `--meteor-data`, else found on the machine; an error saying where mmtt
/// looked and how to install it when there is none (`--metrics ngram` skips METEOR).
fn meteor_data(explicit: Option<&Path>) -> Result<MeteorData> {
    Ok(match explicit {
        Some(p) => MeteorData::at(p)?,
        None => MeteorData::require()?,
    })
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
}

/// Prints `v` as JSON on stdout and its top-level numbers as a table on stderr.
fn print_scores(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            match x {
                serde_json::Value::Number(n) => eprintln!("{k:<12} {:>10.6}", n.as_f64().unwrap_or(0.0)),
                serde_json::Value::Null => eprintln!("{k:<12} {:>10}", "unavailable"),
                _ => {}
            }
        }
    }
    Ok(())
}

pub async fn eval(g: &super::Global, action: EvalAction) -> Result<()> {
    let v = match action {
        EvalAction::Fpn(a) => return eval_fpn(g, a).await,
        EvalAction::Table3(a) => return g.with_app(async |app| eval_table3(app, &g.data_dir, a).await).await,
        EvalAction::Captions { refs, preds, meteor_data: meteor_data_dir, metrics } => {
            let t = std::time::Instant::now();
            let set = mmtt_model::eval::captions::CaptionSet::parse(&read_text(&refs)?, &read_text(&preds)?)?;
            let mut phases = vec![("read and parse the JSON files".to_string(), t.elapsed().as_secs_f64())];
            let v = match metrics {
                MetricSet::Ngram => serde_json::to_value(set.score_timed(None, &mut phases)?)?,
                MetricSet::Meteor => serde_json::json!({ "METEOR": set.meteor(&meteor_data(meteor_data_dir.as_deref())?)? }),
                MetricSet::All => serde_json::to_value(set.score_timed(Some(&meteor_data(meteor_data_dir.as_deref())?), &mut phases)?)?,
            };
            // `mmtt bench captions` asks where the time went
            if std::env::var_os("MMTT_TIMING").is_some() {
                eprintln!("MMTT_TIMING {}", serde_json::json!({ "phases": phases, "total": t.elapsed().as_secs_f64() }));
            }
            v
        }
        EvalAction::Masks { gt, pred, threshold } => serde_json::to_value(mmtt_model::eval::masks::evaluate(&gt, &pred, threshold)?)?,
        EvalAction::Report {
            gt,
            pred,
            gt_mask_base,
            pred_mask_base,
            threshold,
            name,
            meteor_data: meteor_data_dir,
            record,
            model,
            regions,
        } => {
            let name = match (name, &model, regions) {
                (Some(n), ..) => n,
                (None, Some(m), Some(r)) => format!("{m} ({})", mmtt::predict::variant_label(r)),
                _ => "mmtt".to_string(),
            };
            if record {
                let abs = |p: &Path| std::path::absolute(p).with_context(|| p.display().to_string());
                let spec = mmtt::jobs::EvalSpec {
                    name,
                    gt: abs(&gt)?,
                    predictions: abs(&pred)?,
                    gt_masks: Some(abs(&gt_mask_base)?),
                    masks: Some(abs(&pred_mask_base)?),
                    threshold,
                    meteor_data: meteor_data_dir.as_deref().map(abs).transpose()?,
                    model,
                    regions,
                };
                return g.with_app(async |app| record_report(app, spec).await).await;
            }
            let data = meteor_data(meteor_data_dir.as_deref())?;
            let r = mmtt_model::eval::report::evaluate(
                &read_text(&gt)?,
                &read_text(&pred)?,
                &gt_mask_base,
                &pred_mask_base,
                threshold,
                Some(&data),
            )?;
            eprintln!("{}", mmtt_model::eval::report::table_line(&name, &r));
            println!("{}", serde_json::to_string(&r)?);
            return Ok(());
        }
        EvalAction::Labels { gt, pred } => {
            let labels: Vec<&str> = mmtt::dataset::annotation::REGION_LABELS.iter().map(|(l, _)| *l).collect();
            serde_json::to_value(mmtt_model::eval::labels::evaluate(&read_text(&gt)?, &read_text(&pred)?, &labels)?)?
        }
    };
    print_scores(&v)
}

/// `eval report --record`: the report as an `eval` job run here, stored with its row.
async fn record_report(app: &mmtt::app::App, spec: mmtt::jobs::EvalSpec) -> Result<()> {
    let (id, out) = mmtt::jobs::cli::run_inline(app, &mmtt::jobs::JobSpec::Eval(spec.clone()), false).await?;
    let mmtt::jobs::runner::JobOutput::Eval { report, line } = out else {
        anyhow::bail!("the eval job {id} produced something else");
    };
    eprintln!("{line}");
    match (&spec.model, spec.regions) {
        (Some(m), Some(r)) => eprintln!(
            "recorded as job {id}: the {} row of {m} in Table 3 on the results page (/admin/leaderboard)",
            mmtt::predict::variant_label(r)
        ),
        _ => eprintln!("recorded as job {id}: the row `{}` on the results page (/admin/leaderboard)", spec.name),
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `eval table3`: the spec from a training job or a checkpoint, run as a job here, its rows printed.
async fn eval_table3(app: &mmtt::app::App, data_dir: &Path, a: EvalTable3Args) -> Result<()> {
    use mmtt::dataset::training::{DataSource, TrainData};
    use mmtt::jobs::table3::{Table3Spec, default_out, finished_talker_runs};
    let abs = |p: &Path| std::path::absolute(p).with_context(|| p.display().to_string());
    let out = match &a.out {
        Some(o) => abs(o)?,
        None => default_out(data_dir),
    };
    let mut spec = match (a.job, &a.checkpoint) {
        (Some(job), _) => {
            let runs = finished_talker_runs(&app.pool).await?;
            let run = runs.iter().find(|r| r.job == job).ok_or_else(|| {
                anyhow::anyhow!("job {job} is not a finished stage-2 training job with a checkpoint (`mmtt jobs --kind train` lists them)")
            })?;
            let mut s = Table3Spec::new(a.model.as_deref().unwrap_or(&run.name), &run.checkpoint, &out);
            s.train_job = Some(job);
            s.data = run.data.clone();
            if !mmtt::predict::checkpoint_has_fpn(&run.checkpoint) {
                s.fpn = run.fpn.clone();
            }
            s
        }
        (None, Some(c)) => Table3Spec::new(a.model.as_deref().unwrap_or_default(), &abs(c)?, &out),
        (None, None) => anyhow::bail!("give --job ID (a finished stage-2 training job) or --checkpoint DIR --model NAME"),
    };
    spec.split = a.split;
    if !a.variants.is_empty() {
        spec.variants = a.variants.clone();
    }
    if let Some(f) = &a.fpn {
        spec.fpn = Some(abs(f)?);
    }
    if let Some(d) = &a.from_export {
        spec.data = TrainData { source: DataSource::Export, dir: Some(abs(d)?), ..Default::default() };
    }
    if a.limit.is_some() {
        spec.data.limit = a.limit;
    }
    spec.device = a.device.clone();
    spec.num_beams = a.num_beams.unwrap_or(spec.num_beams);
    spec.max_new_tokens = a.max_new_tokens.unwrap_or(spec.max_new_tokens);
    spec.validate().map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
    let (id, out) = mmtt::jobs::cli::run_inline(app, &mmtt::jobs::JobSpec::Table3(spec), !a.json).await?;
    let mmtt::jobs::runner::JobOutput::Table3(s) = out else {
        anyhow::bail!("the table3 job {id} produced something else");
    };
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let cols = ["CIDEr", "B-1", "B-2", "B-3", "B-4", "ROUGE-L", "IoU", "Prec.", "Rec."];
    println!("Table 3 of {} ({} images of the {} split; job {id})", s.model, s.images, s.split);
    println!("| variant | {} |", cols.join(" | "));
    for r in &s.rows {
        let cells: Vec<String> =
            cols.iter().map(|c| r.table2_row.get(*c).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())).collect();
        println!("| {} | {} |", r.label, cells.join(" | "));
    }
    Ok(())
}

async fn eval_fpn(g: &super::Global, a: EvalFpnArgs) -> Result<()> {
    use mmtt::dataset::training::{self, DataSource, TrainData};
    let labels = a.labels.into();
    let bar = indicatif::ProgressBar::new(0);
    let e = match (&a.data, a.job) {
        (Some(dir), None) => {
            let Some(ck) = a.checkpoint.clone() else { anyhow::bail!("give --checkpoint (or --job, with the database)") };
            let (dir, split, b) = (dir.clone(), a.split, bar.clone());
            tokio::task::spawn_blocking(move || {
                let samples = training::from_export(&dir, split, labels)?;
                b.set_length(samples.len() as u64);
                training::evaluate_checkpoint(&ck, &samples, 16, |n| b.inc(n as u64))
            })
            .await??
        }
        (Some(_), Some(_)) => anyhow::bail!("--job scores on the database's samples: leave out --data"),
        (None, _) => {
            let mut got = None;
            g.with_app(async |app| {
                let data = TrainData { source: DataSource::Db, ..Default::default() };
                let ck = match (a.job, &a.checkpoint) {
                    (Some(job), _) => mmtt::jobs::train::job_checkpoint(&app.pool, job).await?,
                    (None, Some(c)) => c.clone(),
                    (None, None) => anyhow::bail!("give --checkpoint DIR or --job ID"),
                };
                let e = mmtt::jobs::train::evaluate(app, &ck, &data, a.split, labels, bar.clone()).await?;
                if let Some(job) = a.job {
                    mmtt::jobs::train::record_evaluation(&app.pool, job, a.split, &e).await?;
                }
                got = Some(e);
                Ok(())
            })
            .await?;
            got.ok_or_else(|| anyhow::anyhow!("the evaluation produced nothing"))?
        }
    };
    bar.finish_and_clear();
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_vec_pretty(&e.regions_json())?).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("predicted regions of {} samples written to {}", e.predictions.len(), out.display());
    }
    let s = &e.scores;
    println!("{}", serde_json::to_string(s)?);
    eprintln!("{:<12} {:>8.2}  ({} samples, {} split)", "PLM", 100.0 * s.plm, s.n, a.split);
    eprintln!("{:<12} {:>8} {:>8} {:>8} {:>8}", "", "prec", "recall", "F1", "support");
    for (name, x) in [("macro", &s.macro_avg), ("micro", &s.micro_avg)].into_iter().chain(s.per_label.iter().map(|(k, v)| (k.as_str(), v)))
    {
        eprintln!("{:<12} {:>8.2} {:>8.2} {:>8.2} {:>8}", name, 100.0 * x.precision, 100.0 * x.recall, 100.0 * x.f1, x.support);
    }
    Ok(())
}

pub fn regions(a: RegionsArgs) -> Result<()> {
    let labels = mmtt::dataset::annotation::region_labels(&a.text);
    if a.vector {
        println!("{}", serde_json::json!({"regions": labels, "multilabel": mmtt::dataset::annotation::multilabel(&a.text)}));
    } else {
        println!("{}", serde_json::to_string(&labels)?);
    }
    Ok(())
}
