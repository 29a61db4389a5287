//! Forgery generation on real faces: composite exactness, classic-swap geometry, the job queue
//! under SIGKILL, bounded retries, and the ONNX generators against a Python reference.

mod common;

use mmtt_generators::detect::FaceFinder;
use mmtt_generators::forge::classic_swap::shape_distance;
use mmtt_generators::landmarks::Landmarks68;
use std::path::{Path, PathBuf};

use common::{python, script};

fn imported_env() -> common::Env {
    let env = common::Env::new();
    let dir = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &dir);
    if let Some(faces) = common::faces_dir() {
        for f in ["pexels_neutral_woman.jpg", "cc0_codait_luciano.png", "pexels_angry_man.jpg"] {
            std::fs::copy(faces.join(f), dir.join(f)).unwrap();
        }
    }
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    env
}

#[test]
fn forgeries_keep_every_pixel_outside_the_mask_and_change_inside() {
    let env = imported_env();
    let n = env.db.scalar_i64("SELECT count(*) FROM sources");
    env.ok(&["forge", "--method", "patch-inpaint", "--count", &n.to_string(), "--seed", "5", "--wait"]);
    env.ok(&["forge", "--method", "classic-swap", "--count", &n.to_string(), "--seed", "5", "--wait"]);
    let list = env.json(&["forgeries", "list", "--json"]);
    let list = list.as_array().unwrap();
    assert!(list.len() as i64 >= n + 2, "{} forgeries for {n} faces", list.len());
    for f in list {
        let orig = image::open(f["original"].as_str().unwrap()).unwrap().into_rgb8();
        let forged = image::open(f["image"].as_str().unwrap()).unwrap().into_rgb8();
        let mask = image::open(f["mask"].as_str().unwrap()).unwrap().into_luma8();
        assert_eq!(forged.dimensions(), (512, 512));
        let (mut inside, mut changed) = (0, 0);
        for (x, y, m) in mask.enumerate_pixels() {
            let (a, b) = (orig.get_pixel(x, y), forged.get_pixel(x, y));
            if m.0[0] == 0 {
                assert_eq!(a, b, "{} changed a pixel outside its mask at ({x},{y})", f["method"]);
            } else {
                inside += 1;
                changed += (a != b) as u32;
            }
        }
        assert!(changed as f64 > 0.5 * inside as f64, "{}: only {changed} of {inside} masked pixels changed", f["method"]);
        assert_eq!(f["status"], "done");
    }
    // provenance and timings on every forgery; swaps have a donor from the target's split
    assert_eq!(
        env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE provenance->>'generator' IS NULL OR timings->>'generate_ms' IS NULL"),
        0
    );
    assert_eq!(
        env.db.scalar_i64("SELECT count(*) FROM forgeries f JOIN sources d ON d.id = f.donor_id JOIN sources t ON t.id = f.target_id WHERE d.split <> t.split"),
        0
    );
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE method = 'classic-swap' AND donor_id IS NULL"), 0);
    // forging the same plans again queues nothing
    let again = env.json(&["forge", "--method", "patch-inpaint", "--count", "2", "--seed", "5", "--json"]);
    assert_eq!(again["queued"], 0);
    env.assert_store_consistent();
}

/// The measure: after removing pose (best similarity), the RMS distance of the inner landmarks
/// (brows, eyes, nose, mouth) relative to the interocular distance. A swap's result must be
/// closer in shape to the source than to the target, and sit where the target's face is.
#[test]
fn classic_swap_moves_the_source_geometry_onto_the_target() {
    let env = imported_env();
    env.ok(&["forge", "--method", "classic-swap", "--count", "10", "--seed", "9", "--wait"]);
    let rows: Vec<(String, serde_json::Value, serde_json::Value)> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.image_hash, t.landmarks, d.landmarks FROM forgeries f JOIN sources t ON t.id = f.target_id \
             JOIN sources d ON d.id = f.donor_id WHERE f.method = 'classic-swap'",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    assert!(rows.len() >= 2);
    let finder = FaceFinder::load().unwrap();
    for (hash, t, s) in rows {
        let t: Landmarks68 = serde_json::from_value(t).unwrap();
        let s: Landmarks68 = serde_json::from_value(s).unwrap();
        let img = image::open(env.blob_path(&hash)).unwrap().into_rgb8();
        let faces = finder.faces(&img);
        let face = faces
            .iter()
            .min_by(|a, b| {
                let c = |f: &&mmtt_generators::detect::Face| {
                    f.landmarks.left_eye().add(f.landmarks.right_eye()).dist(t.left_eye().add(t.right_eye()))
                };
                c(a).total_cmp(&c(b))
            })
            .expect("a face in the swap result");
        let r = &face.landmarks;
        let (to_source, to_target, source_vs_target) = (shape_distance(r, &s), shape_distance(r, &t), shape_distance(&s, &t));
        let pose_err = r.left_eye().dist(t.left_eye()).max(r.right_eye().dist(t.right_eye())) / t.interocular();
        println!(
            "shape distance to source {to_source:.4}, to target {to_target:.4} (source vs target {source_vs_target:.4}); eye offset from the target {pose_err:.3}"
        );
        assert!(to_source < to_target, "the result keeps the target's shape: {to_source} vs {to_target}");
        assert!(pose_err < 0.15, "the result is not in the target's pose: {pose_err}");
    }
}

#[test]
fn a_worker_killed_midway_loses_and_duplicates_nothing() {
    let env = common::Env::new();
    let dir = env.data.path().join("many");
    common::variants(&dir, 8);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    let n = env.db.scalar_i64("SELECT count(*) FROM sources");
    assert!(n >= 8);
    let e = env.json(&["forge", "--method", "patch-inpaint", "--count", &n.to_string(), "--seed", "3", "--json"]);
    assert_eq!(e["queued"].as_i64(), Some(n));
    let worker = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
            .arg("--data-dir")
            .arg(env.data.path())
            .arg("--database-url")
            .arg(&env.db.url)
            .args(["worker", "--lease-seconds", "2"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut w = worker(&[]);
    let start = std::time::Instant::now();
    while env.db.scalar_i64("SELECT count(*) FROM forgeries") < 2 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    w.kill().unwrap(); // SIGKILL
    w.wait().unwrap();
    let before = env.db.scalar_i64("SELECT count(*) FROM forgeries");
    let running = env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status = 'running'");
    println!("killed with {before} forgeries stored and {running} items held under a lease");
    assert!(before >= 2 && before < n, "{before}");
    env.assert_store_consistent();
    // two workers finish the job, taking over the dead worker's items when their lease expires
    let mut a = worker(&["--until-empty"]);
    let mut b = worker(&["--until-empty"]);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let items: Vec<(String, i32, Option<String>)> = env.db.query(async |p| {
        sqlx::query_as("SELECT status, attempts, last_error FROM forge_items ORDER BY status").fetch_all(p).await.unwrap()
    });
    println!("{items:?}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries"), n);
    assert_eq!(env.db.scalar_i64("SELECT count(DISTINCT target_id) FROM forgeries"), n);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status <> 'done'"), 0);
    let jobs = env.json(&["jobs", "--json", "--kind", "forge"]);
    assert_eq!(jobs[0]["state"], "done", "{jobs}");
    assert_eq!(jobs[0]["done"].as_i64(), Some(n));
    assert_eq!(jobs[0]["failed"], 0);
    env.assert_store_consistent();
}

fn tiny_models(dir: &Path) {
    let st = std::process::Command::new(python()).arg(script("make_tiny_models.py")).arg(dir).status().unwrap();
    assert!(st.success());
}

#[test]
fn failing_items_are_retried_then_failed_and_the_job_goes_on() {
    let env = imported_env();
    let models = env.data.path().join("models-empty");
    std::fs::create_dir_all(&models).unwrap();
    let n = env.db.scalar_i64("SELECT count(*) FROM sources");
    let out = env.ok(&[
        "forge",
        "--method",
        "classic-swap,mat,patch-inpaint",
        "--mix",
        "paper",
        "--count",
        &n.to_string(),
        "--seed",
        "2",
        "--max-attempts",
        "2",
        "--models",
        &models.display().to_string(),
        "--wait",
    ]);
    println!("{out}");
    let failed: Vec<(String, i32, Option<String>)> = env.db.query(async |p| {
        sqlx::query_as("SELECT method, attempts, last_error FROM forge_items WHERE status = 'failed'").fetch_all(p).await.unwrap()
    });
    assert!(!failed.is_empty(), "the mat items fail: no model file");
    for (method, attempts, reason) in &failed {
        assert_eq!(method, "mat");
        assert_eq!(*attempts, 2, "retried up to --max-attempts");
        assert!(reason.as_deref().unwrap_or_default().contains("mat.onnx"), "{reason:?}");
    }
    assert!(env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status = 'done'") > 0, "the other methods went on");
    let report = env.ok(&["jobs"]);
    assert!(report.contains("failed") && report.contains("mat.onnx"), "{report}");
}

fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let img = image::open(&common::sample_faces()[0]).unwrap().resize_exact(512, 512, image::imageops::FilterType::Triangle).into_rgb8();
    let mask =
        image::GrayImage::from_fn(512, 512, |x, y| image::Luma([if (180..330).contains(&x) && (200..360).contains(&y) { 255 } else { 0 }]));
    let (i, m) = (dir.join("face.png"), dir.join("mask.png"));
    img.save(&i).unwrap();
    mask.save(&m).unwrap();
    (i, m)
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn onnx_generators_match_the_python_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    tiny_models(&models);
    let (img, mask) = write_pair(tmp.path());
    for method in ["mat", "lama"] {
        let manifest = tmp.path().join(format!("{method}.json"));
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("generators/manifests/{method}.json")), &manifest).unwrap();
        for seed in [0u64, 7, 123_456_789] {
            let ours = tmp.path().join(format!("{method}-{seed}.f32"));
            let theirs = tmp.path().join(format!("{method}-{seed}-py.f32"));
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
                .args(["generate", "--method", method, "--seed", &seed.to_string(), "--threads", "1"])
                .arg("--models")
                .arg(&models)
                .arg("--image")
                .arg(&img)
                .arg("--mask")
                .arg(&mask)
                .arg("--out")
                .arg(tmp.path().join(format!("{method}.png")))
                .arg("--raw")
                .arg(&ours)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let st = std::process::Command::new(python())
                .arg(script("onnx_reference.py"))
                .args(["forge", "--seed", &seed.to_string(), "--threads", "1"])
                .arg("--manifest")
                .arg(&manifest)
                .arg("--model")
                .arg(models.join(format!("{method}.onnx")))
                .arg("--image")
                .arg(&img)
                .arg("--mask")
                .arg(&mask)
                .arg("--out")
                .arg(&theirs)
                .status()
                .unwrap();
            assert!(st.success());
            let (a, b) = (read_f32(&ours), read_f32(&theirs));
            assert_eq!(a.len(), 512 * 512 * 3);
            assert_eq!(a.len(), b.len());
            let max = a.iter().zip(&b).map(|(x, y)| ((x - y) / 255.0).abs()).fold(0.0f32, f32::max);
            println!("{method} seed {seed}: max |mmtt - python| = {max:e} (on the 0..1 scale)");
            assert!(max <= 1e-4, "{method} seed {seed}: {max}");
            // the output depends on the input: not a constant image
            let spread = a.iter().fold(f32::INFINITY, |m, v| m.min(*v)) < a.iter().fold(0.0f32, |m, v| m.max(*v)) - 10.0;
            assert!(spread);
        }
    }
    // MAT's latent comes from the seed: different seeds, different pictures
    let a = read_f32(&tmp.path().join("mat-0.f32"));
    let b = read_f32(&tmp.path().join("mat-7.f32"));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 0.5));
}

#[test]
fn a_model_that_does_not_match_its_manifest_is_refused_and_cuda_is_never_faked() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    tiny_models(&models);
    let (img, mask) = write_pair(tmp.path());
    let wrong = tmp.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::copy(models.join("lama.onnx"), wrong.join("mat.onnx")).unwrap();
    let run = |dir: &Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
            .args(["generate", "--method", "mat"])
            .args(extra)
            .arg("--models")
            .arg(dir)
            .arg("--image")
            .arg(&img)
            .arg("--mask")
            .arg(&mask)
            .arg("--out")
            .arg(tmp.path().join("o.png"))
            .output()
            .unwrap()
    };
    let out = run(&wrong, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the `mat` manifest"), "{err}");
    assert!(err.contains("model inputs:") && err.contains("manifest inputs:") && err.contains("z: float32 [1, 512]"), "{err}");
    let out = run(&models, &["--device", "cuda"]);
    assert!(!out.status.success(), "no CUDA provider here: must fail, not fall back");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cuda") || err.contains("CUDA"), "{err}");
}

#[test]
fn onnx_forge_job_records_provenance() {
    let env = imported_env();
    let models = env.data.path().join("models");
    tiny_models(&models);
    env.ok(&["forge", "--method", "mat", "--count", "2", "--seed", "1", "--threads", "1", "--wait"]);
    let prov: Vec<serde_json::Value> =
        env.db.query(async |p| sqlx::query_scalar("SELECT provenance FROM forgeries WHERE method = 'mat'").fetch_all(p).await.unwrap());
    assert_eq!(prov.len(), 2);
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(models.join("mat.onnx")).unwrap()));
    for p in prov {
        assert_eq!(p["model_sha256"], sha.as_str());
        assert_eq!(p["execution_provider"], "CPUExecutionProvider");
        assert_eq!(p["manifest"]["mask_convention"], "keep");
    }
}

/// `mmtt forge --method sdxl|e4s` end to end on the tiny models: queued, generated, composited
/// and stored; SDXL takes the job's prompt and steps, E4S stores its own face-region mask.
#[test]
fn sdxl_and_e4s_forge_end_to_end_on_tiny_models() {
    let env = imported_env();
    let models = env.data.path().join("models");
    tiny_models(&models);
    let m = models.display().to_string();
    let n = env.db.scalar_i64("SELECT count(*) FROM sources").min(2);
    env.ok(&[
        "forge",
        "--method",
        "sdxl",
        "--count",
        &n.to_string(),
        "--seed",
        "3",
        "--steps",
        "3",
        "--prompt",
        "a retouched face",
        "--guidance",
        "5",
        "--scheduler",
        "dpm++2m",
        "--models",
        &m,
        "--wait",
    ]);
    env.ok(&["forge", "--method", "e4s", "--count", &n.to_string(), "--seed", "3", "--models", &m, "--wait"]);
    let rows: Vec<(String, String, String, String, serde_json::Value)> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.method, f.image_hash, f.mask_hash, mp.mask_hash, f.provenance FROM forgeries f JOIN mask_plans mp ON mp.id = f.plan_id ORDER BY f.method",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    assert_eq!(rows.iter().filter(|r| r.0 == "sdxl").count() as i64, n, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.0 == "e4s").count() as i64, n);
    for (method, image_hash, mask_hash, plan_mask, prov) in &rows {
        let img = image::open(env.blob_path(image_hash)).unwrap().into_rgb8();
        let mask = image::open(env.blob_path(mask_hash)).unwrap().into_luma8();
        assert_eq!(img.dimensions(), mask.dimensions());
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255), "binary mask");
        if method == "sdxl" {
            assert_eq!(mask_hash, plan_mask, "inpainting uses the planned mask");
            assert_eq!(prov["options"]["steps"], 3);
            assert_eq!(prov["options"]["prompt"], "a retouched face");
            assert_eq!(prov["options"]["scheduler"], "dpm++2m");
            assert_eq!(prov["graphs"]["unet"]["sha256"].as_str().map(str::len), Some(64));
        } else {
            assert_ne!(mask_hash, plan_mask, "e4s stores the swapped region as the forgery's mask");
            assert!(prov["mask"].as_str().unwrap().contains("face region"));
        }
    }
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status <> 'done'"), 0);
    env.assert_store_consistent();
}
