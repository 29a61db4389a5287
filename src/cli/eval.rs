//! `mmtt eval captions|masks|report|labels` and `mmtt regions`: the paper's metrics over files
//! (JSON on stdout, a table on stderr), no database.

use anyhow::Result;
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
        /// The method name in the printed row.
        #[arg(long, default_value = "mmtt")]
        name: String,
        /// pycocoevalcap's meteor/ folder (see `eval captions`).
        #[arg(long)]
        meteor_data: Option<PathBuf>,
    },
    /// PLM and per-label / macro / micro precision, recall, F1 of 21-label sets per id.
    Labels {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        pred: PathBuf,
    },
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

pub fn eval(action: EvalAction) -> Result<()> {
    let v = match action {
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
        EvalAction::Report { gt, pred, gt_mask_base, pred_mask_base, threshold, name, meteor_data: meteor_data_dir } => {
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

pub fn regions(a: RegionsArgs) -> Result<()> {
    let labels = mmtt::dataset::annotation::region_labels(&a.text);
    if a.vector {
        println!("{}", serde_json::json!({"regions": labels, "multilabel": mmtt::dataset::annotation::multilabel(&a.text)}));
    } else {
        println!("{}", serde_json::to_string(&labels)?);
    }
    Ok(())
}
