//! ForgeryTalker stage 2 from the command line to the results page, on CPU with the tiny preset:
//! a synthetic accepted set (the sample faces, aligned, with a bright patch painted over the eyes
//! or the mouth; captions naming the painted region; masks = the painted area, as an `mmtt`
//! export folder) trained with `mmtt train talker`, predicted with `mmtt predict` (regions from the
//! reference caption, and the plain instruction), scored and recorded with `mmtt eval report
//! --record --model --regions`; the rows appear as the model's Table 3 rows on the results page,
//! and a `table3` job started over HTTP predicts and scores all three variants. Also: `mmtt
//! predict` refuses what cannot work (unknown regions variant, missing checkpoint, no FPN for
//! `fpn`, another run's output folder) with messages naming the fix.

mod common;

use common::Env;
use common::admin::{add_users, login, serve, token, wait_job};
use image::{GrayImage, RgbImage};
use mmtt_generators::align::AlignTransform;
use mmtt_generators::detect::FaceFinder;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};

/// Side of the synthetic images (the tiny preset looks at 64 x 64).
const SIZE: u32 = 128;

/// The painted regions: (label, caption, landmark indices of the area).
const REGIONS: [(&str, &str, std::ops::RangeInclusive<usize>); 2] = [
    ("eye", "the eyes are covered by a bright painted patch.", 36..=47),
    ("mouth", "the mouth is covered by a bright painted patch.", 48..=67),
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn meteor_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib/python3.11/site-packages/pycocoevalcap/meteor");
    assert!(d.join("meteor-1.5.jar").is_file(), "run scripts/setup.sh first: pycocoevalcap ships Meteor's data");
    d
}

/// The sample faces aligned (FFHQ crop) at `SIZE`, with their landmarks in the crop.
fn aligned_faces() -> Vec<(RgbImage, Vec<(f64, f64)>)> {
    let finder = FaceFinder::load().expect("dlib's landmark predictor (scripts/setup.sh)");
    common::sample_faces()
        .iter()
        .map(|p| {
            let img = image::open(p).unwrap().into_rgb8();
            let f = finder.faces(&img).into_iter().next().unwrap_or_else(|| panic!("no face in {}", p.display()));
            let t = AlignTransform::ffhq(&f.landmarks, SIZE);
            let lm = t.landmarks_to_output(&f.landmarks);
            (t.warp(&img), lm.0.iter().map(|p| (p.x, p.y)).collect())
        })
        .collect()
}

/// One painted sample: the face (`i` picks the face, a mirror image, the brightness and the patch
/// colour), the region painted, its mask.
fn painted(faces: &[(RgbImage, Vec<(f64, f64)>)], i: usize, region: usize) -> (RgbImage, GrayImage) {
    let (face, lm) = &faces[(i / 2) % faces.len()];
    let flip = (i / 4) % 2 == 1;
    let gain = [1.0, 0.85, 1.15][(i / 8) % 3];
    let colour = [[255u8, 0, 255], [0, 255, 255], [255, 255, 0]][i % 3];
    let pts: Vec<(f64, f64)> = REGIONS[region].2.clone().map(|k| lm[k]).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        let x = if flip { SIZE as f64 - x } else { x };
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = 5.0;
    let inside = |x: u32, y: u32| {
        let (x, y) = (x as f64 + 0.5, y as f64 + 0.5);
        x >= x0 - pad && x <= x1 + pad && y >= y0 - pad && y <= y1 + pad
    };
    let img = RgbImage::from_fn(SIZE, SIZE, |x, y| {
        if inside(x, y) {
            return image::Rgb(colour);
        }
        let sx = if flip { SIZE - 1 - x } else { x };
        let p = face.get_pixel(sx, y).0;
        image::Rgb(p.map(|v| (v as f64 * gain).round().clamp(0.0, 255.0) as u8))
    });
    let mask = GrayImage::from_fn(SIZE, SIZE, |x, y| image::Luma([if inside(x, y) { 255 } else { 0 }]));
    (img, mask)
}

/// Writes the painted set as an `mmtt` export folder (train.json, val.json, test.json, images/,
/// masks/); the painted region of every sample, by id.
fn painted_export(dir: &Path, counts: [(&str, usize); 3]) -> std::collections::BTreeMap<String, &'static str> {
    let faces = aligned_faces();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mut regions = std::collections::BTreeMap::new();
    let mut n = 0;
    for (split, count) in counts {
        let mut records = Vec::new();
        for k in 0..count {
            let region = k % 2;
            let (img, mask) = painted(&faces, n, region);
            n += 1;
            let id = format!("painted-{split}-{k:03}");
            img.save(dir.join(format!("images/{id}.png"))).unwrap();
            mask.save(dir.join(format!("masks/{id}.png"))).unwrap();
            let caption = REGIONS[region].1;
            records.push(serde_json::json!({
                "image_id": id, "instance_id": 0, "caption": caption,
                "img_path": format!("images/{id}.png"), "mask_path": format!("masks/{id}.png"),
                "multilabel": mmtt::dataset::annotation::multilabel(caption),
            }));
            regions.insert(id, REGIONS[region].0);
        }
        std::fs::write(dir.join(format!("{split}.json")), serde_json::to_vec_pretty(&records).unwrap()).unwrap();
    }
    regions
}

/// The results page's JSON.
async fn board(c: &reqwest::Client, base: &str, tok: &str) -> serde_json::Value {
    let r = c.get(format!("{base}/admin/leaderboard")).bearer_auth(tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn finite_row(report: &serde_json::Value) {
    let row = report["table2_row"].as_object().unwrap_or_else(|| panic!("no table2_row: {report}"));
    assert_eq!(row.len(), 9, "{report}");
    for (k, v) in row {
        let x = v.as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && (0.0..=1000.0).contains(&x), "{k} = {v} in {report}");
    }
}

/// IoU x100 of a constant mask (all forged, or none) against the ground truth of `gt.json`.
fn constant_mask_iou(gt: &Path, dir: &Path, value: u8) -> f64 {
    let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(gt).unwrap()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut pairs = Vec::new();
    for r in &records {
        let g = PathBuf::from(r["mask_path"].as_str().unwrap());
        let (w, h) = image::image_dimensions(&g).unwrap();
        let p = dir.join(format!("{}.png", r["image_id"].as_str().unwrap()));
        GrayImage::from_pixel(w, h, image::Luma([value])).save(&p).unwrap();
        pairs.push((g, p));
    }
    100.0 * mmtt_model::eval::masks::evaluate_pairs(&pairs, 127).unwrap().miou
}

#[test]
fn predict_refuses_what_cannot_work_and_names_the_fix() {
    let env = Env::new();
    let d = env.data.path();
    let out = d.join("out").display().to_string();
    let refused = |args: &[&str], want: &[&str]| {
        let o = env.mmtt(args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{args:?} was accepted");
        for w in want {
            assert!(err.contains(w), "the error of {args:?} should name {w:?}: {err}");
        }
    };
    let missing = d.join("no-such-run").join("best").display().to_string();
    refused(
        &["predict", "--checkpoint", &missing, "--out", &out, "--regions", "gt"],
        &["--checkpoint", "no-such-run", "no such folder", "best/"],
    );
    refused(&["predict", "--checkpoint", &missing, "--out", &out, "--regions", "oracle"], &["oracle", "fpn", "none", "gt", "FPN-GT"]);
    // a checkpoint that names no FPN cannot predict with the FPN's regions
    let ck = d.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("config.json"), "{}").unwrap();
    let ck = ck.display().to_string();
    refused(&["predict", "--checkpoint", &ck, "--out", &out, "--regions", "fpn"], &["no FPN", "--fpn", "gt or none"]);
    refused(&["predict", "--checkpoint", &ck, "--out", &out, "--regions", "gt", "--num-beams", "0"], &["--num-beams"]);
    refused(&["predict", "--checkpoint", &ck, "--out", &out, "--regions", "gt", "--from-export", &out], &["--from-export", "mmtt export"]);
    // no samples in the database's test split
    refused(&["predict", "--checkpoint", &ck, "--out", &out, "--regions", "gt"], &["test split has no samples", "accept"]);
    assert!(!Path::new(&out).exists(), "a refused prediction writes nothing");
    // eval report: Table 3 tags only with --record, and both of them
    let gt = d.join("gt.json").display().to_string();
    refused(&["eval", "report", "--gt", &gt, "--pred", &gt, "--gt-mask-base", "/", "--pred-mask-base", "/", "--model", "m"], &["--record"]);
    refused(
        &["eval", "report", "--gt", &gt, "--pred", &gt, "--gt-mask-base", "/", "--pred-mask-base", "/", "--record", "--regions", "gt"],
        &["--model"],
    );
    refused(
        &[
            "eval",
            "report",
            "--gt",
            &gt,
            "--pred",
            &gt,
            "--gt-mask-base",
            "/",
            "--pred-mask-base",
            "/",
            "--record",
            "--model",
            "m",
            "--regions",
            "x",
        ],
        &["`x` is not a regions variant"],
    );
    refused(&["eval", "table3", "--checkpoint", &missing, "--model", "m"], &["--checkpoint", "no such folder"]);
    refused(&["eval", "table3", "--checkpoint", &ck, "--model", "m"], &["--fpn", "no FPN"]);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), 0, "nothing was recorded");
}

#[test]
fn a_tiny_talker_trained_on_painted_faces_gets_its_table3_rows() {
    let env = Env::new();
    add_users(&env);
    let d = env.data.path();
    let export = d.join("painted");
    let regions = painted_export(&export, [("train", 48), ("val", 4), ("test", 12)]);
    let n_test = regions.keys().filter(|k| k.starts_with("painted-test-")).count();

    // train: the tiny preset, regions from the captions (no FPN), a few hundred images
    let run = d.join("runs").join("painted");
    let cfg = d.join("tiny.toml");
    std::fs::write(
        &cfg,
        format!(
            "preset = \"tiny\"\nregions = \"gt\"\n\
             trainable = [\"qformer\", \"query-tokens\", \"projection\", \"ln-vision\", \"mask-branch\", \"t5\"]\n\
             steps = 400\nbatch_size = 4\nlr = 2e-3\nmin_lr = 1e-4\nwarmup_steps = 10\nseed = 5\n\
             augment = false\ncache_vision_features = true\ncheckpoint_every = 200\neval_every = 200\n\
             eval_limit = 4\neval_beams = 1\neval_max_new_tokens = 16\n\n[data]\nsource = \"export\"\ndir = \"{}\"\n",
            export.display()
        ),
    )
    .unwrap();
    env.ok(&["train", "talker", "--config", &cfg.display().to_string(), "--run-dir", &run.display().to_string(), "--wait"]);
    let jobs = env.json(&["jobs", "--kind", "train", "--json"]);
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!((job["state"].as_str(), job["params"]["model"].as_str()), (Some("done"), Some("talker")), "{job}");
    let checkpoint = mmtt::jobs::table3::run_checkpoint(Some(&job["result"])).unwrap_or_else(|| panic!("no checkpoint in {job}"));
    let ck = checkpoint.display().to_string();

    // predict with the regions from the reference captions (w/ FPN-GT) and the plain instruction
    // (w/o FPN); score and record each as a Table 3 row of the model
    let meteor = meteor_dir().display().to_string();
    let exp = export.display().to_string();
    let mut reports = std::collections::BTreeMap::new();
    for variant in ["gt", "none"] {
        let out = d.join("pred").join(variant);
        let o = out.display().to_string();
        let predict = ["predict", "--checkpoint", &ck, "--from-export", &exp, "--split", "test", "--regions", variant, "--out", &o];
        let printed = env.ok(&[&predict[..], &["--num-beams", "1", "--max-new-tokens", "20"]].concat());
        assert!(printed.contains("mmtt eval report"), "{printed}");
        let preds = lines(&out.join("predictions.jsonl"));
        assert_eq!(preds.len(), n_test, "one prediction per test image");
        for p in &preds {
            let m = out.join(p["mask_path"].as_str().unwrap());
            assert_eq!(image::image_dimensions(&m).unwrap(), (SIZE, SIZE), "the mask has its ground truth's size");
        }
        let gt = out.join("gt.json").display().to_string();
        let report = env.json(&[
            "eval",
            "report",
            "--gt",
            &gt,
            "--pred",
            &format!("{o}/predictions.jsonl"),
            "--gt-mask-base",
            "/",
            "--pred-mask-base",
            &o,
            "--meteor-data",
            &meteor,
            "--record",
            "--model",
            "painted-tiny",
            "--regions",
            variant,
        ]);
        finite_row(&report);
        assert_eq!(report["images"].as_u64(), Some(n_test as u64));
        reports.insert(variant, (out, preds, report));
    }
    // predicting again into the same folder resumes (nothing to do); another variant is refused there
    let (gt_out, gt_preds, gt_report) = &reports["gt"];
    let o = gt_out.display().to_string();
    env.ok(&[
        "predict",
        "--checkpoint",
        &ck,
        "--from-export",
        &exp,
        "--regions",
        "gt",
        "--out",
        &o,
        "--num-beams",
        "1",
        "--max-new-tokens",
        "20",
    ]);
    assert_eq!(&lines(&gt_out.join("predictions.jsonl")), gt_preds, "a resumed prediction keeps what it wrote");
    let refused = env.mmtt(&["predict", "--checkpoint", &ck, "--from-export", &exp, "--regions", "none", "--out", &o, "--num-beams", "1"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("another run") && err.contains("new output folder"), "{err}");

    // what the model learnt: told the painted region (w/ FPN-GT), it names it more often than
    // chance (half: two regions); its masks overlap the painted areas better than a constant mask
    let named = gt_preds
        .iter()
        .filter(|p| {
            let said = mmtt::dataset::annotation::region_labels(p["caption"].as_str().unwrap());
            said.contains(&regions[p["image_id"].as_str().unwrap()])
        })
        .count();
    println!("w/ FPN-GT: {named} of {n_test} captions name the painted region; rows {}", gt_report["table2_row"]);
    assert!(2 * named > n_test, "{named} of {n_test} captions name the painted region: {gt_preds:?}");
    let gt_json = gt_out.join("gt.json");
    let iou = gt_report["table2_row"]["IoU"].as_f64().unwrap();
    let (zeros, ones) = (constant_mask_iou(&gt_json, &d.join("zeros"), 0), constant_mask_iou(&gt_json, &d.join("ones"), 255));
    println!("mask IoU {iou:.2}; all-zeros {zeros:.2}, all-ones {ones:.2}");
    assert!(iou > zeros.max(ones), "predicted masks (IoU {iou:.2}) are no better than all-zeros ({zeros:.2}) or all-ones ({ones:.2})");

    // `mmtt eval table3` runs the variants as one job here (one variant, a few images)
    let train_job = job["id"].as_str().unwrap();
    let printed = env.ok(&[
        "eval",
        "table3",
        "--job",
        train_job,
        "--model",
        "painted-tiny cli",
        "--variants",
        "gt",
        "--limit",
        "4",
        "--num-beams",
        "1",
        "--max-new-tokens",
        "20",
    ]);
    assert!(printed.contains("Table 3 of painted-tiny cli (4 images of the test split") && printed.contains("| w/ FPN-GT | "), "{printed}");

    // the results page: the recorded rows are the model's Table 3 rows; then a table3 job started
    // from the Evaluate page predicts and scores all three variants
    let fpn = d.join("fpn");
    env.ok(&["fpn", "init", "--preset", "tiny", "--out", &fpn.display().to_string()]);
    let served = serve(&env, &[]);
    let tok = token(&env);
    rt().block_on(async {
        let base = &served.base;
        let c = common::admin::client();
        let b = board(&c, base, &tok).await;
        assert_eq!(b["table3"]["paper"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(b["table3"]["paper"][0]["cells"][0], 48.1, "w/ FPN-GT's CIDEr: {b}");
        let model = b["table3"]["models"].as_array().unwrap().iter().find(|m| m["model"] == "painted-tiny").cloned();
        let model = model.unwrap_or_else(|| panic!("no Table 3 rows of painted-tiny: {b}"));
        for row in model["rows"].as_array().unwrap() {
            let scored = row["job"].as_str() != Some("");
            assert_eq!(scored, row["regions"] != "fpn", "gt and none were recorded, fpn not: {row}");
            if scored {
                let want = reports[row["regions"].as_str().unwrap()].2["table2_row"]["CIDEr"].as_f64().unwrap();
                assert!((row["cells"][0].as_f64().unwrap() - want).abs() < 1e-9, "the recorded CIDEr: {row}");
            }
        }
        let (adm, _) = login(base, "adm").await;
        let html = adm.get(format!("{base}/admin/leaderboard")).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("id=\"table3\"") && html.contains("data-model=\"painted-tiny\""), "{html}");

        // the Evaluate page's Table 3 form: refusals name the field, then a job for the run
        let page: serde_json::Value = c.get(format!("{base}/admin/eval")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let runs = page["talker_runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{page}");
        let train_job = runs[0]["job"].as_str().unwrap().to_string();
        for (form, field) in [
            (serde_json::json!({ "train_job": "nope" }), "train_job"),
            (serde_json::json!({ "train_job": train_job, "variants": ["oracle"] }), "variants"),
            (serde_json::json!({ "train_job": train_job, "fpn": fpn, "num_beams": "0" }), "num_beams"),
            // the fpn variant needs an FPN: this run trained without one
            (serde_json::json!({ "train_job": train_job }), "fpn"),
            (serde_json::json!({ "train_job": train_job, "fpn": "/no/such/fpn" }), "fpn"),
        ] {
            let r = c.post(format!("{base}/admin/eval/table3")).bearer_auth(&tok).json(&form).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{form}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["field"], field, "{form}: {v}");
        }
        let form = serde_json::json!({
            "train_job": train_job, "model": "painted-tiny job", "fpn": fpn, "num_beams": "1", "max_new_tokens": "20",
        });
        let r = c.post(format!("{base}/admin/eval/table3")).bearer_auth(&tok).json(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        let id = r.json::<serde_json::Value>().await.unwrap()["job"].as_str().unwrap().to_string();
        let v = wait_job(&c, base, &tok, &id).await;
        assert_eq!((v["kind"].as_str(), v["state"].as_str()), (Some("table3"), Some("done")), "{v}");
        assert_eq!((v["done"].as_i64(), v["total"].as_i64()), (Some(3 * n_test as i64), Some(3 * n_test as i64)), "progress: {v}");
        let rows = v["result"]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{v}");
        for r in rows {
            finite_row(r);
        }
        let b = board(&c, base, &tok).await;
        let model = b["table3"]["models"].as_array().unwrap().iter().find(|m| m["model"] == "painted-tiny job").cloned();
        let model = model.unwrap_or_else(|| panic!("no Table 3 rows of the job's model: {b}"));
        let got: Vec<&str> = model["rows"].as_array().unwrap().iter().map(|r| r["regions"].as_str().unwrap()).collect();
        assert_eq!(got, ["gt", "none", "fpn"], "the paper's order");
        assert!(model["rows"].as_array().unwrap().iter().all(|r| r["job"] == id.as_str() && r["cells"][0].as_f64().is_some()), "{model}");
        // its w/ FPN row is the model's Table 2 row too
        assert!(b["rows"].as_array().unwrap().iter().any(|r| r["name"] == "painted-tiny job" && r["job"] == id.as_str()), "{b}");
    });
}
