//! `mmtt explain`: ForgeryTalker's explanations of face images from a checkpoint (the model is
//! `mmtt_model::talker`; the shared checks and mask files are `mmtt::explain`). Per image one
//! line: readable, or with `--json` `{"image", "text", "token_ids", "regions", "instruction",
//! "mask", "mask_area"}`. Images go through the model in batches; masks are written atomically.

use anyhow::{Context, Result, bail};
use mmtt::dataset::import::decode::{DecodeLimits, read_image};
use mmtt::explain::{GenerationLimits, check_generation, mask_file_name, parse_regions, write_mask_png};
use mmtt_model::talker::{ExplainOptions, Explainer, GenerationConfig, Prompting};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The checkpoint folder: a ForgeryTalker checkpoint (mask branch and FPN), a plain Hugging
    /// Face InstructBLIP folder, or the authors' release folder (eva_vit_g.pth, flant5xl/, ...).
    #[arg(long)]
    checkpoint: PathBuf,
    /// An FPN checkpoint folder that chooses the regions, instead of the checkpoint's own FPN.
    #[arg(long, conflicts_with_all = ["regions", "instruction"])]
    fpn: Option<PathBuf>,
    /// The regions to name in the instruction, comma-separated (some of the 21 labels: eye,
    /// pupil, lip, mouth, nose, ...), instead of the FPN's.
    #[arg(long, value_delimiter = ',', conflicts_with = "instruction")]
    regions: Option<Vec<String>>,
    /// This exact instruction (plain InstructBLIP); the mask branch, if any, gets no region words.
    #[arg(long)]
    instruction: Option<String>,
    /// Beams of the beam search (1: greedy) [default: the release's, 5].
    #[arg(long)]
    num_beams: Option<usize>,
    /// Most tokens generated per image [default: the release's, 100].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Shortest output, in decoder tokens with the start token (as `transformers` counts) [default: the release's, 5].
    #[arg(long)]
    min_length: Option<usize>,
    /// Repetition penalty (1.0: none) [default: the release's, 1.5].
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Beam search length penalty [default: the release's, 1.0].
    #[arg(long)]
    length_penalty: Option<f32>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// cpu, or cuda:N (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write each image's mask here as `STEM_mask.png` (0/255, the image's own size).
    #[arg(long)]
    mask_out: Option<PathBuf>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Face images (PNG, JPEG or WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(a: ExplainArgs) -> Result<()> {
    // everything a person can get wrong is checked before the (slow) model load
    let release = GenerationConfig::release();
    let generation = GenerationConfig {
        num_beams: a.num_beams.unwrap_or(release.num_beams),
        max_new_tokens: a.max_new_tokens.unwrap_or(release.max_new_tokens),
        min_length: a.min_length.unwrap_or(release.min_length),
        repetition_penalty: a.repetition_penalty.unwrap_or(release.repetition_penalty),
        length_penalty: a.length_penalty.unwrap_or(release.length_penalty),
    };
    check_generation(&generation, GenerationLimits::CLI, |f| format!("--{}", f.replace('_', "-"))).map_err(|(_, m)| anyhow::anyhow!(m))?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let prompting = match (&a.regions, &a.instruction) {
        (Some(r), _) => Prompting::Regions(parse_regions(r).map_err(|e| anyhow::anyhow!("--regions: {e}"))?),
        (None, Some(i)) if i.trim().is_empty() => bail!("--instruction is empty: give the instruction's text"),
        (None, Some(i)) => Prompting::Instruction(i.clone()),
        (None, None) => Prompting::Fpn,
    };
    if !a.checkpoint.is_dir() {
        bail!(
            "--checkpoint {}: no such folder: give a ForgeryTalker, InstructBLIP (Hugging Face layout) or release checkpoint folder",
            a.checkpoint.display()
        );
    }
    if let Some(f) = &a.fpn
        && !f.exists()
    {
        bail!("--fpn {}: no such folder: give an FPN checkpoint folder (as `mmtt train fpn` writes)", f.display());
    }
    for p in &a.images {
        if !p.is_file() {
            bail!("image {}: no such file: check the path (images are given as files, not folders)", p.display());
        }
    }
    let device = mmtt_model::fpn::parse_device(&a.device).map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    if let Some(dir) = &a.mask_out {
        std::fs::create_dir_all(dir).with_context(|| format!("--mask-out {}: cannot create the folder", dir.display()))?;
    }

    let t = std::time::Instant::now();
    let model = Explainer::load(&a.checkpoint, a.fpn.as_deref(), &device)
        .with_context(|| format!("loading the checkpoint {}", a.checkpoint.display()))?;
    eprintln!("loaded {} in {:.1} s", model.describe(), t.elapsed().as_secs_f64());
    if prompting == Prompting::Fpn && !model.has_fpn() {
        bail!(
            "the checkpoint {} has no FPN to choose the regions: give --regions eye,lip (some of the 21 labels), --instruction TEXT, or --fpn DIR",
            a.checkpoint.display()
        );
    }
    let mask_out = match (&a.mask_out, model.has_mask_branch()) {
        (Some(_), false) => {
            eprintln!("warning: the checkpoint has no mask branch (a plain InstructBLIP): no masks are written");
            None
        }
        (m, _) => m.clone(),
    };
    let opts = ExplainOptions { prompting, generation };

    // many images: a bar on a terminal, a line per batch otherwise (logs)
    let many = a.images.len() > a.batch_size;
    let progress = (many && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(a.images.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut used = std::collections::HashSet::new();
    let mut done = 0;
    let mut stdout = std::io::stdout().lock();
    for chunk in a.images.chunks(a.batch_size) {
        let images = chunk
            .iter()
            .map(|p| {
                read_image(p, DecodeLimits::default())
                    .map(|d| d.rgb)
                    .map_err(|e| anyhow::anyhow!("image {}: {e}: give a PNG, JPEG or WebP image", p.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let out =
            model.explain(&images, &opts).with_context(|| format!("explaining {} images from {}", chunk.len(), chunk[0].display()))?;
        if out.len() != images.len() {
            bail!("the model gave {} explanations for {} images", out.len(), images.len());
        }
        for ((path, img), e) in chunk.iter().zip(&images).zip(&out) {
            let mask_path = match (&mask_out, &e.mask) {
                (Some(dir), Some(m)) => {
                    let file = dir.join(mask_file_name(path, &mut used));
                    write_mask_png(&m.binary_resized(img.width(), img.height()), &file)
                        .with_context(|| format!("writing the mask {}", file.display()))?;
                    Some(file)
                }
                _ => None,
            };
            let area = e.mask.as_ref().map(|m| m.area());
            let line = if a.json {
                serde_json::json!({
                    "image": path.to_string_lossy(),
                    "text": e.text,
                    "token_ids": e.token_ids,
                    "regions": e.regions,
                    "instruction": e.instruction,
                    "mask": mask_path.as_ref().map(|p| p.to_string_lossy()),
                    "mask_area": area,
                })
                .to_string()
            } else {
                let mut extra = Vec::new();
                if !e.regions.is_empty() {
                    extra.push(format!("regions {}", e.regions.join(", ")));
                }
                match (&mask_path, area) {
                    (Some(p), Some(ar)) => extra.push(format!("mask {} ({:.1} % of the image)", p.display(), ar * 100.0)),
                    (None, Some(ar)) => extra.push(format!("mask {:.1} % of the image", ar * 100.0)),
                    _ => {}
                }
                let extra = if extra.is_empty() { String::new() } else { format!("  [{}]", extra.join("; ")) };
                format!("{}: {}{extra}", path.display(), e.text)
            };
            match &progress {
                Some(pb) => pb.suspend(|| writeln!(stdout, "{line}")),
                None => writeln!(stdout, "{line}"),
            }?;
        }
        stdout.flush()?;
        done += chunk.len();
        match &progress {
            Some(pb) => pb.inc(chunk.len() as u64),
            None if many => eprintln!("{done}/{} images ({:.1} s)", a.images.len(), t.elapsed().as_secs_f64()),
            None => {}
        }
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    eprintln!("explained {} images in {:.1} s", a.images.len(), t.elapsed().as_secs_f64());
    Ok(())
}
