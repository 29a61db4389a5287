//! `mmtt predict`: a trained stage-2 checkpoint over one split of the project's accepted triplets
//! (or of an export folder): captions (`predictions.jsonl`), masks (`masks/<id>.png`) and the
//! ground truth (`gt.json`) in the format `mmtt eval report` reads. The work is in
//! `mmtt::predict`, `mmtt::dataset::talker_training::samples` and `mmtt_model::talker::predict`.

use super::Global;
use anyhow::{Context, Result, anyhow, bail};
use mmtt::dataset::training::{self, DataSource, TrainData};
use mmtt::predict::{self, PredictRecord};
use mmtt::storage::split::Split;
use mmtt_model::talker::GenerationConfig;
use mmtt_model::talker::predict::PredictOptions;
use mmtt_model::talker::train::RegionSource;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// The stage-2 checkpoint folder: a training run's best/ (or checkpoints/step-N/), as
    /// `mmtt train talker` writes it.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The split predicted.
    #[arg(long, default_value = "test", value_parser = super::train::parse_split)]
    split: Split,
    /// The output folder (new or empty; a folder of the same run is resumed).
    #[arg(long)]
    out: PathBuf,
    /// What names the regions in the instruction: fpn (the FPN's regions, the paper's model),
    /// none (the plain InstructBLIP instruction: Table 3's "w/o FPN") or gt (the regions the
    /// reference caption names: "w/ FPN-GT").
    #[arg(long, default_value = "fpn", value_parser = predict::parse_variant)]
    regions: RegionSource,
    /// An FPN checkpoint folder choosing the regions, instead of the checkpoint's own.
    #[arg(long)]
    fpn: Option<PathBuf>,
    /// cpu, or cuda:N (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Beams of the beam search (1: greedy) [default: the release's, 5].
    #[arg(long)]
    num_beams: Option<usize>,
    /// Most tokens generated per image [default: the release's, 100].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// At most this many samples (the first by id): quick runs.
    #[arg(long)]
    limit: Option<usize>,
    /// An hf or mmtt export folder instead of the database.
    #[arg(long)]
    from_export: Option<PathBuf>,
    /// Submitted, not yet reviewed triplets too (database only).
    #[arg(long, conflicts_with = "from_export")]
    include_unreviewed: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(g: &Global, a: PredictArgs) -> Result<()> {
    // everything a person can get wrong is checked before the samples are read and the model loads
    let release = GenerationConfig::release();
    let generation = GenerationConfig {
        num_beams: a.num_beams.unwrap_or(release.num_beams),
        max_new_tokens: a.max_new_tokens.unwrap_or(release.max_new_tokens),
        ..release
    };
    mmtt::explain::check_generation(&generation, mmtt::explain::GenerationLimits::CLI, |f| format!("--{}", f.replace('_', "-")))
        .map_err(|(_, m)| anyhow!(m))?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.limit == Some(0) {
        bail!("--limit 0 predicts nothing: give a positive limit, or leave it out for every sample");
    }
    predict::check_inputs(&a.checkpoint, a.fpn.as_deref(), &[a.regions]).map_err(|(field, m)| anyhow!("--{field}: {m}"))?;
    mmtt_model::fpn::parse_device(&a.device).map_err(|e| anyhow!("--device: {e}"))?;
    let checkpoint = std::path::absolute(&a.checkpoint).with_context(|| format!("--checkpoint {}", a.checkpoint.display()))?;
    let fpn = a.fpn.as_ref().map(std::path::absolute).transpose().context("--fpn")?;
    let data = match &a.from_export {
        Some(dir) => {
            training::export_layout(dir).map_err(|e| anyhow!("--from-export: {e}"))?;
            TrainData { source: DataSource::Export, dir: Some(std::path::absolute(dir)?), limit: a.limit, ..Default::default() }
        }
        None => TrainData { source: DataSource::Db, include_unreviewed: a.include_unreviewed, limit: a.limit, ..Default::default() },
    };
    let record = PredictRecord {
        checkpoint: checkpoint.clone(),
        fpn: fpn.clone(),
        regions: a.regions,
        split: a.split.name().to_string(),
        data: data.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "database".into()),
        num_beams: generation.num_beams,
        max_new_tokens: generation.max_new_tokens,
    };

    let samples = match data.source {
        DataSource::Export => {
            let dir = data.dir.clone().unwrap_or_default();
            let mut s = mmtt::dataset::talker_training::from_export(&dir, a.split)?;
            if let Some(n) = data.limit {
                s.truncate(n);
            }
            s
        }
        DataSource::Db => {
            let mut got = Vec::new();
            g.with_app(async |app| {
                got = mmtt::dataset::talker_training::samples(app, &data, a.split).await?;
                Ok(())
            })
            .await?;
            got
        }
    };
    let all = samples.clone();
    let (samples, dropped) = predict::one_per_id(samples);
    if samples.is_empty() {
        bail!(
            "the {} split has no samples{}: accept annotated triplets of that split first, or choose another --split",
            a.split,
            if a.from_export.is_some() { " in the export folder" } else { " in the database" }
        );
    }
    let resuming = predict::claim_out(&a.out, &record).map_err(|m| anyhow!("--out: {m}"))?;
    if !a.json {
        eprintln!(
            "{} {} images of the {} split with {} (regions {}: {}){}",
            if resuming { "resuming: predicting" } else { "predicting" },
            samples.len(),
            a.split,
            checkpoint.display(),
            predict::variant_name(a.regions),
            predict::variant_label(a.regions),
            if generation.num_beams == 1 { ", greedy".to_string() } else { format!(", {} beams", generation.num_beams) }
        );
        if dropped > 0 {
            eprintln!("({dropped} further accepted captions of the same images are further references in gt.json)");
        }
    }
    let opts = PredictOptions { regions: a.regions, generation, batch_size: a.batch_size };
    let bar = if a.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(samples.len() as u64) };
    let (out, device, b) = (a.out.clone(), a.device.clone(), bar.clone());
    let t = std::time::Instant::now();
    let summary = tokio::task::spawn_blocking(move || {
        predict::run(&checkpoint, fpn.as_deref(), &device, &samples, &opts, &out, None, &mut |done, total| {
            b.set_length(total as u64);
            b.set_position(done as u64);
        })
    })
    .await
    .map_err(|e| anyhow!("the prediction stopped unexpectedly (panic): {e}"))?
    .with_context(|| format!("predicting into {}", a.out.display()))?
    .ok_or_else(|| anyhow!("the prediction stopped before the end"))?;
    bar.finish_and_clear();
    if dropped > 0 {
        predict::add_references(&summary.gt, &all).map_err(|m| anyhow!(m))?;
    }
    let seconds = t.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "images": summary.images, "predictions": summary.predictions, "gt": summary.gt, "out": a.out,
                "regions": predict::variant_name(a.regions), "split": a.split.name(), "seconds": seconds,
            })
        );
    } else {
        let out = a.out.display();
        println!(
            "predicted {} images in {seconds:.1} s: captions {}, masks {out}/masks/, ground truth {}",
            summary.images,
            summary.predictions.display(),
            summary.gt.display()
        );
        println!(
            "score it: mmtt eval report --gt {} --pred {} --gt-mask-base / --pred-mask-base {out}",
            summary.gt.display(),
            summary.predictions.display()
        );
    }
    Ok(())
}
