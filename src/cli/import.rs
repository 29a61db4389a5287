//! `mmtt import`, `mmtt landmarks [backfill]`, `mmtt sources list`: source faces in.

use super::Global;
use anyhow::Result;
use clap::Subcommand;
use mmtt::dataset::import::{self, datasets::Dataset, decode::DecodeLimits};
use mmtt_generators::detect::FaceFinder;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ImportArgs {
    #[arg(value_enum)]
    dataset: ImportKind,
    /// The dataset's folder.
    #[arg(long)]
    root: PathBuf,
    /// Import at most this many inputs (in the dataset's order).
    #[arg(long)]
    limit: Option<usize>,
    /// Largest accepted image width or height (decompression-bomb guard).
    #[arg(long, default_value_t = 12_000)]
    max_side: u32,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// What `mmtt import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ImportKind {
    /// CelebA-HQ-img/{k}.jpg with CelebAMask-HQ-mask-anno/{k/2000}/{k:05}_{part}.png
    #[value(name = "celebamask-hq")]
    CelebamaskHq,
    /// FFHQ aligned faces (any folder of images, searched recursively)
    Ffhq,
    /// Any photos: faces detected, aligned FFHQ-style
    Photos,
    /// The authors' MMTT release: {train,val,test}.json with images and masks
    #[value(name = "mmtt-release")]
    MmttRelease,
}

#[derive(clap::Args)]
pub struct LandmarksArgs {
    #[command(subcommand)]
    action: Option<LandmarksAction>,
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum LandmarksAction {
    /// Detect and store the 68 landmarks of stored sources that have none (CelebAMask-HQ imported
    /// before landmarks were detected at import). Resumable; running again does nothing.
    Backfill {
        /// Only this dataset's sources (default: all).
        #[arg(long, value_enum)]
        dataset: Option<Dataset>,
        /// Search at most this many sources in this run.
        #[arg(long)]
        limit: Option<u64>,
        /// Sources per batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Also search again the sources where no face was found before.
        #[arg(long)]
        retry_no_face: bool,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SourcesAction {
    List {
        #[arg(long, value_enum)]
        dataset: Option<Dataset>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn import(g: &Global, a: ImportArgs) -> Result<()> {
    use mmtt::jobs::ImportLayout;
    let dataset = match a.dataset {
        ImportKind::CelebamaskHq => ImportLayout::CelebamaskHq,
        ImportKind::Ffhq => ImportLayout::Ffhq,
        ImportKind::Photos => ImportLayout::Photos,
        ImportKind::MmttRelease => ImportLayout::MmttRelease,
    };
    let spec = mmtt::jobs::ImportSpec { dataset, root: a.root, limit: a.limit, max_side: a.max_side };
    g.with_app(async |app| mmtt::jobs::cli::import(app, spec, a.json).await).await
}

pub async fn landmarks(g: &Global, a: LandmarksArgs) -> Result<()> {
    match a.action {
        Some(LandmarksAction::Backfill { dataset, limit, batch, retry_no_face, json }) => {
            let opts = import::landmarks::BackfillOptions {
                datasets: dataset.iter().copied().collect(),
                limit,
                batch,
                retry_no_face,
                progress: true,
            };
            g.with_app(async |app| {
                let s = import::landmarks::backfill(app, &opts, None).await?;
                s.print_human();
                if json {
                    println!("{}", serde_json::to_string(&s)?);
                }
                Ok(())
            })
            .await
        }
        None => detect(&a.images, a.json),
    }
}

/// `mmtt landmarks IMAGE...`: faces and landmarks of image files, without the database.
fn detect(images: &[PathBuf], json: bool) -> Result<()> {
    let finder = FaceFinder::load()?;
    let mut all = Vec::new();
    for p in images {
        let res = import::decode::read_image(p, DecodeLimits::default())
            .map(|d| finder.faces(&d.rgb))
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", p.display()));
        match res {
            Ok(faces) => {
                if !json {
                    println!("{}: {} face(s)", p.display(), faces.len());
                    for (i, f) in faces.iter().enumerate() {
                        let b = f.face_box;
                        println!("  face {i}: box ({}, {})-({}, {})", b.left, b.top, b.right, b.bottom);
                        let pts: Vec<String> = f.landmarks.0.iter().map(|q| format!("{:.0},{:.0}", q.x, q.y)).collect();
                        println!("    {}", pts.join(" "));
                    }
                }
                all.push(serde_json::json!({"path": p.display().to_string(), "detector": finder.detector_kind().name(), "faces": faces}));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                all.push(serde_json::json!({"path": p.display().to_string(), "error": format!("{e:#}")}));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&all)?);
    }
    Ok(())
}

pub async fn sources(g: &Global, action: SourcesAction) -> Result<()> {
    let SourcesAction::List { dataset, json } = action;
    g.with_app(async |app| {
        let list = mmtt::dataset::sources::list(app, dataset).await?;
        if json {
            println!("{}", serde_json::to_string(&list)?);
        } else {
            for v in &list {
                println!(
                    "{}  {:<13} {:<20} face {} {:<10} {} parts  {}",
                    v.id,
                    v.dataset,
                    truncate(&v.original_id, 20),
                    v.face_index,
                    v.split,
                    v.parts.len(),
                    v.image.as_deref().unwrap_or_default()
                );
            }
        }
        Ok(())
    })
    .await
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 1).chain(['…']).collect() } else { s.to_string() }
}
