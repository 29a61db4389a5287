//! `mmtt demo`: imports sample faces, plans masks, writes previews, forges every face, writes
//! the demo captions (generated, accepted annotations by the account `demo`, so that the FPN has
//! data to train on: [`super::demo_captions`]) and says where to look.
//!
//! The sample faces come from Debian packages (`python3-skimage`'s astronaut.png,
//! `python-matplotlib-data`'s grace_hopper.jpg), plus any `--faces DIR`.

use crate::app::App;
use crate::dataset::import::{self, ImportOptions, datasets::Dataset, decode::DecodeLimits};
use crate::dataset::masks;
use anyhow::Result;
use mmtt_generators::detect::FaceFinder;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Debian's sample face photos: (path, package).
pub const SAMPLE_FACES: [(&str, &str); 2] = [
    ("/usr/lib/python3/dist-packages/skimage/data/astronaut.png", "python3-skimage"),
    ("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg", "python-matplotlib-data"),
];

pub async fn run(app: &App, faces: Option<&Path>, seed: u64) -> Result<()> {
    let finder = Arc::new(FaceFinder::load()?);
    let mut files = Vec::new();
    for (p, pkg) in SAMPLE_FACES {
        if Path::new(p).is_file() {
            files.push(PathBuf::from(p));
        } else {
            eprintln!("sample face {p} is missing: install it with `apt-get install {pkg}`");
        }
    }
    let base = ImportOptions { dataset: Dataset::Photos, root: None, files, limit: None, limits: DecodeLimits::default(), progress: true };
    let s = import::run(app, base.clone(), Some(finder.clone())).await?;
    s.print_human(Dataset::Photos);
    if let Some(dir) = faces {
        let s = import::run(app, ImportOptions { root: Some(dir.to_path_buf()), files: vec![], ..base }, Some(finder)).await?;
        s.print_human(Dataset::Photos);
    }
    let plan = masks::plan_all(app, seed, None, true).await?;
    println!("masks planned for {} sources ({} already planned)", plan.planned, plan.already_planned);
    let stats = masks::stats(app, Some(seed)).await?;
    masks::print_stats(&stats.all);
    let dir = app.data_dir.join("previews");
    let rows = sqlx::query("SELECT id, original_path, face_index FROM sources ORDER BY created_at, id").fetch_all(&app.pool).await?;
    println!("\npreviews (left: landmarks and part regions; right: inpainting mask in red, swap mask outlined in green):");
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        let out = dir.join(format!("{id}.png"));
        masks::preview(app, id, Some(seed), &out).await?;
        println!("  {}  <- {} (face {})", out.display(), r.get::<String, _>(1), r.get::<i32, _>(2));
    }

    // forge every face with the built-in generators (no downloaded weights needed): the inpainting
    // mask by part-swap (the parts from a donor face of the same split) and by face-aware
    // patch-inpaint, the swap mask by classic-swap
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sources").fetch_one(&app.pool).await?;
    for method in ["part-swap", "patch-inpaint", "classic-swap"] {
        let req = crate::jobs::forge::ForgeRequest {
            methods: vec![method.to_string()],
            count: n as u64,
            seed,
            plan_seed: seed,
            mix_paper: false,
            device: mmtt_generators::forge::onnx::Device::Cpu,
            max_attempts: 2,
            params: serde_json::json!({}),
        };
        let e = crate::jobs::forge::enqueue(app, &req).await?;
        for u in &e.unavailable {
            println!("  {u}");
        }
        let o = crate::jobs::forge::WorkerOptions {
            name: format!("demo-{}", std::process::id()),
            device: req.device,
            models_dir: crate::jobs::forge::default_models_dir(&app.data_dir),
            threads: 0,
            lease: std::time::Duration::from_secs(600),
            until_empty: true,
            job: Some(e.job_id),
            progress: false,
        };
        let s = crate::jobs::forge::run_worker(app, o).await?;
        println!("{method}: {} forgeries made", s.done);
    }
    let forgeries = crate::jobs::forge::list(app).await?;
    println!("\nforgeries (original | forgery | mask):");
    let fdir = app.data_dir.join("forgeries");
    for f in &forgeries {
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        let out = fdir.join(format!("{}-{}.png", s("method"), s("id")));
        forgery_preview(Path::new(&s("original")), Path::new(&s("image")), Path::new(&s("mask")), &out)?;
        println!("  {}", out.display());
    }
    // demo captions: one accepted annotation per forgery that has none (generated, not human)
    println!();
    super::demo_captions::write(app, seed).await?.print_human();
    println!(
        "\nimages and masks are in {}; `mmtt sources list`, `mmtt forgeries list` and `mmtt masks stats` say more.",
        app.data_dir.join("blobs").display()
    );
    Ok(())
}

/// The demo's accounts, created or given new passwords: (name, role, password).
pub async fn demo_accounts(app: &App) -> Result<Vec<(String, String, String)>> {
    use crate::web::auth::{Role, UserName, hash_password, random_token};
    let mut out = Vec::new();
    for role in [Role::Annotator, Role::Reviewer, Role::Admin] {
        let name = UserName::parse(&format!("demo-{role}")).map_err(anyhow::Error::msg)?;
        let password = random_token()[..16].to_string();
        sqlx::query(
            "INSERT INTO users (id, name, role, password_hash) VALUES ($1, $2, $3, $4)              ON CONFLICT (name) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, disabled = false",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(name.as_str())
        .bind(role.name())
        .bind(hash_password(&password)?)
        .execute(&app.pool)
        .await?;
        out.push((name.as_str().to_string(), role.to_string(), password));
    }
    Ok(out)
}

/// Writes `original | forgery | mask` for one forgery.
pub fn forgery_preview(original: &std::path::Path, forged: &std::path::Path, mask: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let o = image::open(original)?.into_rgb8();
    let f = image::open(forged)?.into_rgb8();
    let m = image::open(mask)?.into_rgb8();
    let mut canvas = image::RgbImage::new(o.width() * 3, o.height());
    image::imageops::replace(&mut canvas, &o, 0, 0);
    image::imageops::replace(&mut canvas, &f, o.width() as i64, 0);
    image::imageops::replace(&mut canvas, &m, 2 * o.width() as i64, 0);
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    canvas.save_with_format(out, image::ImageFormat::Png)?;
    Ok(())
}
