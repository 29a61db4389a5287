//! Training ForgeryTalker stage 2 (the explainer and mask decoder) as a job, with the real `mmtt`
//! binary, the real trainer (`mmtt_model::talker::train`, tiny preset, a few dozen steps) and
//! PostgreSQL: the Train page's stage-2 form refuses what cannot run (naming the field) and
//! stores nothing; a run started from it over HTTP shows its progress, figures and chart, pauses
//! and resumes from its checkpoint, is cancelled and continued, and finishes with a `best/` that
//! `Explainer::load` loads and explains with; `mmtt train talker --config` checks its keys,
//! queues the job with its settings, and trains from an export folder (`--wait`).

mod common;

use common::Env;
use common::admin::{add_users, client, login, serve, token};
use reqwest::StatusCode;
use std::path::Path;
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A database of `n` accepted synthetic triplets (train, validation and test splits).
fn seeded(n: u64) -> Env {
    let env = Env::new();
    env.ok(&["seed-synthetic", "--samples", &n.to_string(), "--state", "accepted"]);
    for s in ["train", "validation"] {
        assert!(env.db.scalar_i64(&format!("SELECT count(*) FROM forgeries WHERE split = '{s}'")) > 0, "no {s} sample among {n}");
    }
    env
}

/// The best checkpoint of a finished (short, tiny) FPN training job: the stage-1 model whose
/// regions fill the instruction.
fn trained_fpn(env: &Env) -> String {
    let cfg = env.data.path().join("fpn.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\nsteps = 20\nbatch_size = 2\nwarmup_steps = 2\ncheckpoint_every = 10\neval_every = 10\n[data]\nlimit = 8\n",
    )
    .unwrap();
    let v = env.json(&["train", "fpn", "--config", &cfg.display().to_string(), "--wait", "--json"]);
    let best = v["summary"]["best_dir"].as_str().expect("an FPN checkpoint").to_string();
    assert!(Path::new(&best).is_dir(), "{v}");
    best
}

/// What fills the instruction in the page's run.
const REGIONS: &str = "gt";

fn events(j: &serde_json::Value) -> Vec<String> {
    j["events"].as_array().map(|a| a.iter().map(|e| e["message"].as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default()
}

#[test]
fn a_stage_2_run_from_the_train_page_shows_progress_pauses_resumes_is_cancelled_continued_and_finishes() {
    let env = seeded(40);
    add_users(&env);
    let fpn = trained_fpn(&env);
    let served = serve(&env, &[]);
    let tok = token(&env);
    // enough steps that a pause and a cancel (each answered within about a second) land mid-run
    let steps = 200u64;
    rt().block_on(async {
        let base = &served.base;
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let (adm, csrf) = login(base, "adm").await;
        let page = adm.get(format!("{base}/admin/train")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"talker-form\"") && page.contains("action=\"/admin/train/talker\""), "the stage-2 form");
        assert!(page.contains(&format!("<option value=\"{fpn}\">FPN job")), "the finished FPN run's checkpoint is offered");

        // refusals name the field, re-show the form and store nothing
        let good: Vec<(&str, String)> = vec![
            ("csrf", csrf.clone()),
            ("checkboxes", "1".into()),
            ("preset", "tiny".into()),
            ("fpn", fpn.clone()),
            ("regions", REGIONS.into()),
            ("steps", steps.to_string()),
            ("batch_size", "2".into()),
            ("lr", "0.001".into()),
            ("warmup_steps", "2".into()),
            ("seed", "5".into()),
            ("checkpoint_every", "5".into()),
            ("eval_every", "50".into()),
            ("eval_limit", "2".into()),
            ("devices", "cpu".into()),
            ("limit", "8".into()),
            ("normalize_captions", "on".into()),
            ("align_masks", "on".into()),
            ("cache_vision_features", "on".into()),
        ];
        let with = |changes: &[(&'static str, &str)]| -> Vec<(&str, String)> {
            let mut f: Vec<(&str, String)> = good.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).cloned().collect();
            f.extend(changes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v.to_string())));
            f
        };
        for (changes, field) in [
            (vec![("steps", "0")], "steps"),
            (vec![("steps", "many")], "steps"),
            (vec![("devices", "tpu:0")], "devices"),
            (vec![("regions", "fpn"), ("fpn", "")], "fpn"),
            (vec![("fpn", "/nonexistent/fpn")], "fpn"),
            (vec![("regions", "faces")], "regions"),
            (vec![("preset", "huge")], "preset"),
            (vec![("cache_vision_features", "on"), ("augment", "on")], "cache_vision_features"),
            // the release's gate scores the FPN's regions: refused with regions = gt
            (vec![("gate", "on")], "gate"),
        ] {
            let r = adm.post(format!("{base}/admin/train/talker")).form(&with(&changes)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{changes:?}");
            let html = r.text().await.unwrap();
            assert!(html.contains(&format!("data-field=\"{field}\"")), "{changes:?}: {html}");
            assert!(html.contains("id=\"talker-form\""), "the form is shown again");
        }
        // a script gets the refusal as JSON
        let r = client()
            .post(format!("{base}/admin/train/talker"))
            .bearer_auth(&tok)
            .json(&serde_json::json!({"preset": "tiny", "regions": "gt", "steps": "0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["field"], "steps", "{v}");
        assert_eq!(
            common::admin::count(&pool, "SELECT count(*) FROM jobs WHERE params->>'model' = 'talker'").await,
            0,
            "a refused form stores no job"
        );

        // the run
        let r = adm.post(format!("{base}/admin/train/talker")).form(&good).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let to = r.headers()["location"].to_str().unwrap().to_string();
        let id = to.trim_start_matches("/admin/jobs/").to_string();
        let c = client();
        let get = async |id: &str| -> serde_json::Value {
            c.get(format!("{base}/admin/jobs/{id}")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap()
        };
        let wait = async |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
            let t = Instant::now();
            loop {
                let j = get(&id).await;
                if f(&j) {
                    return j;
                }
                // a run that ends before the awaited state is a failure now, not after the time limit
                assert!(!matches!(j["state"].as_str(), Some("failed" | "done" | "cancelled")), "the run ended while waiting for {what}: {j}");
                assert!(t.elapsed() < Duration::from_secs(600), "gave up waiting for {what}: {j}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let wait_end = async |id: &str| -> serde_json::Value {
            let t = Instant::now();
            loop {
                let j = get(id).await;
                if matches!(j["state"].as_str(), Some("done" | "failed" | "cancelled")) {
                    return j;
                }
                assert!(t.elapsed() < Duration::from_secs(600), "gave up waiting for the end: {j}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let control = async |action: &str| {
            let r = adm.post(format!("{base}/admin/jobs/{id}/{action}")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{action}");
        };
        let j = get(&id).await;
        let p = &j["params"];
        assert_eq!((j["kind"].as_str(), p["model"].as_str()), (Some("train"), Some("talker")), "{j}");
        assert_eq!(
            (p["config"]["regions"].as_str(), p["config"]["fpn"].as_str(), p["config"]["steps"].as_u64()),
            (Some(REGIONS), Some(fpn.as_str()), Some(steps)),
            "{p}"
        );
        assert_eq!((p["config"]["align_masks"].as_bool(), p["config"]["mask_loss"]["double_sigmoid"].as_bool()), (Some(true), Some(false)));
        assert_eq!((p["config"]["cache_vision_features"].as_bool(), p["config"]["augment"].as_bool()), (Some(true), Some(false)));
        assert_eq!(p["data"]["limit"].as_u64(), Some(8));

        // progress: steps done of the total, images/s
        let j = wait("progress", &|j| j["state"] == "running" && j["done"].as_i64().unwrap_or(0) >= 3).await;
        assert_eq!(j["total"].as_i64(), Some(steps as i64), "{j}");
        assert!(j["rate_per_s"].as_f64().is_some_and(|r| r > 0.0), "images/s while running: {j}");
        let html = adm.get(format!("{base}{to}")).send().await.unwrap().text().await.unwrap();
        assert!(
            html.contains("id=\"train-panel\"") && html.contains("data-model=\"talker\"") && html.contains(&format!("/admin/train/{id}/chart")),
            "the job page shows the stage-2 panel and chart"
        );
        let r = adm.get(format!("{base}/admin/train/{id}/chart")).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        assert!(r.text().await.unwrap().contains("validation CIDEr + BLEU-4"));
        let s: serde_json::Value =
            c.get(format!("{base}/admin/train/{id}/chart")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(s["model"], "talker", "{s}");
        assert!(!s["steps"].as_array().unwrap().is_empty(), "figures: {s}");
        for k in ["last_loss", "last_lm_loss", "last_mask_loss", "last_lr"] {
            assert!(s[k].as_f64().is_some_and(f64::is_finite), "{k}: {s}");
        }

        // pause: the trainer checkpoints, the job is paused with its folder settled
        control("pause").await;
        let j = wait("paused", &|j| j["state"] == "paused" && j["workers"].as_array().is_some_and(|w| w.is_empty())).await;
        let paused_at = j["done"].as_i64().unwrap();
        assert!(paused_at < steps as i64, "paused before the end: {j}");
        let run_dir = j["params"]["run_dir"].as_str().unwrap().to_string();
        assert!(Path::new(&run_dir).join("checkpoints/latest").is_file(), "a checkpoint in {run_dir}");
        // resume: it continues from its checkpoint (not from step 1)
        control("resume").await;
        let j = wait("resumed", &|j| events(j).iter().any(|e| e.contains("resumed at step"))).await;
        let resumed: Vec<String> = events(&j).into_iter().filter(|e| e.contains("resumed at step")).collect();
        let at: u64 = resumed[0].split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(at > 1 && at <= paused_at as u64 + 1, "resumed at step {at}, paused at {paused_at}: {resumed:?}");
        // cancel, then continue it with retry
        wait("running again", &|j| j["state"] == "running" && j["done"].as_i64().unwrap_or(0) > at as i64).await;
        control("cancel").await;
        let j = wait_end(&id).await;
        assert_eq!(j["state"], "cancelled", "cancelled before the end: {j}");
        let cancelled_at = j["done"].as_i64().unwrap();
        control("retry").await;
        let j = wait_end(&id).await;
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!((j["done"].as_i64(), j["total"].as_i64()), (Some(steps as i64), Some(steps as i64)));
        let r = &j["result"];
        assert_eq!((r["model"].as_str(), r["last_step"].as_u64(), r["stopped"].as_bool()), (Some("talker"), Some(steps), Some(false)), "{r}");
        assert!(r["resumed_from"].as_u64().is_some_and(|s| s > 0 && s <= cancelled_at as u64), "continued from its checkpoint: {r}");
        assert_eq!((r["train_samples"].as_u64(), r["regions"].as_str()), (Some(8), Some(REGIONS)), "{r}");
        assert!(r["best_score"].as_f64().is_some_and(|x| x.is_finite() && x >= 0.0), "validation chose a best checkpoint: {r}");
        let log = events(&j);
        assert!(log.iter().any(|e| e.starts_with("validation at step") && e.contains("CIDEr")), "validations are logged: {log:?}");

        // every step's figures and every validation are recorded
        let s: serde_json::Value =
            c.get(format!("{base}/admin/train/{id}/chart")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(s["last_step"].as_u64(), Some(steps), "{s}");
        let n_steps = common::admin::count(
            &pool,
            &format!("SELECT count(*) FROM train_metrics WHERE job_id = '{id}' AND loss IS NOT NULL AND lm_loss IS NOT NULL AND mask_loss IS NOT NULL AND lr IS NOT NULL"),
        )
        .await;
        assert_eq!(n_steps, steps as i64, "a row per step");
        let scores = s["scores"].as_array().unwrap();
        assert!(scores.len() >= (steps / 50) as usize, "a score per validation: {s}");
        for v in scores {
            let (cider, bleu, score) = (v["cider"].as_f64().unwrap(), v["bleu4"].as_f64().unwrap(), v["score"].as_f64().unwrap());
            assert!((score - (cider + bleu)).abs() < 1e-9, "score = CIDEr + BLEU-4: {v}");
        }
        assert_eq!(s["best_score"].as_f64(), r["best_score"].as_f64(), "{s}");
        // every action is on the record
        let acts: serde_json::Value = c.get(format!("{base}/admin/actions")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let names: Vec<&str> = acts["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
        for a in ["train talker", "job pause", "job resume", "job cancel", "job retry"] {
            assert!(names.contains(&a), "{a} recorded: {names:?}");
        }

        // best/ loads and explains an image, with the FPN it was trained with
        let best = r["best_dir"].as_str().unwrap().to_string();
        assert!(Path::new(&best).is_dir(), "{best}");
        let device = mmtt_model::fpn::parse_device("cpu").unwrap();
        let e = mmtt_model::talker::Explainer::load(Path::new(&best), Some(Path::new(&fpn)), &device).unwrap();
        assert!(e.has_fpn() && e.has_mask_branch(), "{}", e.describe());
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
        let opts = mmtt_model::talker::ExplainOptions {
            prompting: mmtt_model::talker::Prompting::Fpn,
            generation: mmtt_model::talker::GenerationConfig::greedy(8),
        };
        let out = e.explain(&[img], &opts).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].mask.is_some(), "the mask branch predicts a mask");
    });
}

#[test]
fn the_cli_checks_the_config_queues_the_job_and_trains_from_an_export_folder() {
    let env = seeded(30);
    let d = env.data.path();
    let refused = |text: &str, want: &[&str]| {
        let p = d.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = env.mmtt(&["train", "talker", "--config", &p.display().to_string()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{text:?} was accepted");
        for w in want {
            assert!(err.contains(w), "the error for {text:?} should name {w:?}: {err}");
        }
    };
    refused("preset = \"tiny\"\nstepz = 10\n", &["bad.toml", "stepz"]);
    refused("preset = \"tiny\"\nregions = \"gt\"\n[data]\nsauce = \"db\"\n", &["[data]", "sauce"]);
    refused("preset = \"tiny\"\nregions = \"gt\"\nsteps = 0\n", &["steps"]);
    refused("preset = \"tiny\"\nregions = \"fpn\"\n", &["fpn", "regions"]);
    refused("preset = \"tiny\"\nregions = \"gt\"\ndevices = [\"tpu:0\"]\n", &["devices"]);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), 0, "a refused config stores nothing");

    // a good one is queued with its settings; --regions and --devices override the file
    let cfg = d.join("ok.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\nregions = \"fpn\"\nsteps = 4\nbatch_size = 2\nwarmup_steps = 1\ncheckpoint_every = 2\neval_every = 2\neval_limit = 2\n[data]\nlimit = 6\n",
    )
    .unwrap();
    let run = d.join("runs").join("queued");
    let v = env.json(&[
        "train",
        "talker",
        "--config",
        &cfg.display().to_string(),
        "--regions",
        "gt",
        "--devices",
        "cpu",
        "--run-dir",
        &run.display().to_string(),
        "--json",
    ]);
    let id = v["job"].as_str().expect("job id").to_string();
    let j = env.json(&["jobs", "show", &id, "--json"]);
    assert_eq!(
        (j["kind"].as_str(), j["state"].as_str(), j["params"]["model"].as_str()),
        (Some("train"), Some("queued"), Some("talker")),
        "{j}"
    );
    assert_eq!((j["params"]["config"]["regions"].as_str(), j["params"]["config"]["steps"].as_u64()), (Some("gt"), Some(4)));
    assert_eq!(j["params"]["run_dir"].as_str(), Some(run.display().to_string().as_str()));
    env.ok(&["jobs", "cancel", &id]);

    // trained from an mmtt export (the release's JSON: caption, mask_path), in this process
    let mm = d.join("mmtt-export");
    env.ok(&["export", "--format", "mmtt", "--out", &mm.display().to_string()]);
    std::fs::write(
        &cfg,
        format!(
            "preset = \"tiny\"\nregions = \"gt\"\nsteps = 4\nbatch_size = 2\nwarmup_steps = 1\ncheckpoint_every = 2\neval_every = 2\neval_limit = 2\n[data]\nsource = \"export\"\ndir = \"{}\"\n",
            mm.display()
        ),
    )
    .unwrap();
    let v = env.json(&["train", "talker", "--config", &cfg.display().to_string(), "--wait", "--json"]);
    let n_train = env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE split = 'train'");
    let s = &v["summary"];
    assert_eq!((s["last_step"].as_u64(), s["train_samples"].as_i64()), (Some(4), Some(n_train)), "{v}");
    assert!(Path::new(s["best_dir"].as_str().unwrap()).is_dir() || Path::new(s["last_dir"].as_str().unwrap()).is_dir(), "{s}");
    let id = v["job"].as_str().unwrap();
    let j = env.json(&["jobs", "show", id, "--json"]);
    assert_eq!(j["state"], "done", "{j}");
    // the run's samples are frozen in its folder, masks included
    let frozen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(s["run_dir"].as_str().unwrap()).join("mmtt-samples.json")).unwrap()).unwrap();
    let train = frozen["train"].as_array().unwrap();
    assert_eq!(train.len() as i64, n_train);
    assert!(train.iter().all(|t| t["mask"].as_str().is_some_and(|m| Path::new(m).is_file())), "every sample has its mask");
    assert!(train.iter().all(|t| !t["caption"].as_str().unwrap_or_default().is_empty()), "every sample has its caption");
}
