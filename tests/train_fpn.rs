//! Training ForgeryTalker's region prompter (stage 1) as a job, with the real `mmtt` binary, the
//! real trainer (`mmtt_model::fpn`, tiny preset, few steps) and PostgreSQL: the config file's keys
//! are checked (unknown ones refused with the key and its line); a run started from the admin
//! Train form over HTTP shows its progress and chart, pauses, resumes from its checkpoint, is
//! cancelled and continued, and finishes; a `--wait` run killed mid-way is taken over by a worker
//! and resumes from its run folder; the finished checkpoint predicts and is scored
//! (`fpn predict`, `eval fpn`); an `hf` or `mmtt` export folder is a data source that gives the
//! same samples as the database; the Table 4 ablation prints its four rows.

mod common;

use common::Env;
use common::admin::{add_users, client, login, serve, token};
use reqwest::StatusCode;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A database of `n` accepted synthetic triplets (train, validation and test splits).
fn seeded(n: u64) -> Env {
    let env = Env::new();
    env.ok(&["seed-synthetic", "--samples", &n.to_string(), "--state", "accepted"]);
    for s in ["train", "validation", "test"] {
        assert!(env.db.scalar_i64(&format!("SELECT count(*) FROM forgeries WHERE split = '{s}'")) > 0, "no {s} sample among {n}");
    }
    env
}

/// A tiny config: `steps` steps of batch 2, checkpoints every `every`, validations every `eval`.
fn tiny_config(dir: &Path, name: &str, steps: u64, every: u64, eval: u64, extra: &str) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "preset = \"tiny\"\nsteps = {steps}\nbatch_size = 2\nlr = 1e-3\nwarmup_steps = 2\nseed = 3\ncheckpoint_every = {every}\neval_every = {eval}\n{extra}\n[data]\nlimit = 16\n"
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "gave up waiting ({secs} s) for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(j: &serde_json::Value) -> Vec<String> {
    j["events"].as_array().map(|a| a.iter().map(|e| e["message"].as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default()
}

#[test]
fn the_config_file_is_checked_key_by_key_and_a_queued_run_keeps_its_folder() {
    let env = Env::new();
    let d = env.data.path();
    env.ok(&["jobs"]);
    let refused = |text: &str, want: &[&str]| {
        let p = d.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = env.mmtt(&["train", "fpn", "--config", &p.display().to_string()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{text:?} was accepted");
        for w in want {
            assert!(err.contains(w), "the error for {text:?} should name {w:?}: {err}");
        }
    };
    refused("preset = \"tiny\"\nstepz = 10\n", &["bad.toml", "stepz", "line 2"]);
    refused("preset = \"tiny\"\n[data]\nsauce = \"db\"\n", &["[data]", "sauce"]);
    refused(
        "preset = \"tiny\"\n[data]\nlimit = 4\n[loss]\nkind = \"paper\"\nnegative_weight = 0.2\nbce = true\ndice = true\nwat = 1\n",
        &["wat", "line 4"],
    );
    refused("preset = \"vit-z\"\n", &["preset", "vit-z"]);
    refused("preset = \"tiny\"\nsteps = 0\n", &["steps"]);
    refused("preset = \"tiny\"\n[data]\nsource = \"export\"\n", &["dir"]);
    refused("preset = \"tiny\"\n[data]\nval_split = \"train\"\n", &["val_split"]);
    refused("preset = \"tiny\"\nsteps = [\n", &["TOML"]);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), 0, "a refused config stores nothing");

    // a good one is queued with its settings, run folder and data
    let cfg = tiny_config(d, "ok.toml", 30, 10, 10, "labels = \"chips\"");
    let run = d.join("runs").join("one");
    let v = env.json(&["train", "fpn", "--config", &cfg, "--run-dir", &run.display().to_string(), "--json"]);
    let id = v["job"].as_str().expect("job id").to_string();
    let j = env.json(&["jobs", "show", &id, "--json"]);
    assert_eq!((j["kind"].as_str(), j["state"].as_str()), (Some("train"), Some("queued")), "{j}");
    let p = &j["params"];
    assert_eq!(
        (p["model"].as_str(), p["config"]["preset"].as_str(), p["config"]["steps"].as_u64()),
        (Some("fpn"), Some("tiny"), Some(30)),
        "{p}"
    );
    assert_eq!(p["config"]["labels"], "chips");
    assert_eq!(p["run_dir"].as_str(), Some(run.display().to_string().as_str()));
    assert_eq!(p["data"]["limit"].as_u64(), Some(16));
    // --labels overrides the file; a second run into the same open run folder is refused
    let out = env.mmtt(&["train", "fpn", "--config", &cfg, "--run-dir", &run.display().to_string(), "--labels", "extractor"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&id) && err.contains("run folder"), "{err}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), 1);
}

#[test]
fn a_run_from_the_train_form_shows_progress_pauses_resumes_is_cancelled_continued_and_finishes() {
    let env = seeded(60);
    add_users(&env);
    let served = serve(&env, &[]);
    let tok = token(&env);
    let steps = 300u64;
    rt().block_on(async {
        let base = &served.base;
        let (adm, csrf) = login(base, "adm").await;
        let page = adm.get(format!("{base}/admin/train")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"train-form\"") && page.contains("href=\"/admin/train\""), "the Train page and its nav entry");
        // refusals name the field and start nothing
        for (field, value, want) in [("steps", "many", "steps"), ("preset", "vit-z", "preset"), ("w", "-1", "w"), ("loss", "mse", "loss")] {
            let mut form = vec![("csrf", csrf.as_str()), (field, value)];
            if field != "preset" {
                form.push(("preset", "tiny"));
            }
            let r = adm.post(format!("{base}/admin/train")).form(&form).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}");
            let html = r.text().await.unwrap();
            assert!(html.contains(&format!("data-field=\"{want}\"")), "{field}={value}: {html}");
        }
        assert_eq!(common::admin::count(&sqlx::PgPool::connect(&env.db.url).await.unwrap(), "SELECT count(*) FROM jobs").await, 0);

        let form = [
            ("csrf", csrf.as_str()),
            ("preset", "tiny"),
            ("variant", "fpn"),
            ("steps", &steps.to_string()),
            ("batch_size", "2"),
            ("lr", "0.001"),
            ("warmup_steps", "5"),
            ("loss", "bce+dice"),
            ("w", "0.2"),
            ("seed", "7"),
            ("labels", "extractor"),
            ("checkpoint_every", "10"),
            ("eval_every", "50"),
            ("limit", "16"),
        ];
        let r = adm.post(format!("{base}/admin/train")).form(&form).send().await.unwrap();
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
                assert!(t.elapsed() < Duration::from_secs(600), "gave up waiting for {what}: {j}");
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        };
        let control = async |action: &str| {
            let r = adm.post(format!("{base}/admin/jobs/{id}/{action}")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{action}");
        };
        // progress: steps done of the total, images/s
        let j = wait("progress", &|j| j["state"] == "running" && j["done"].as_i64().unwrap_or(0) >= 12).await;
        assert_eq!(j["total"].as_i64(), Some(steps as i64), "{j}");
        assert!(j["rate_per_s"].as_f64().is_some_and(|r| r > 0.0), "images/s while running: {j}");
        let html = adm.get(format!("{base}{to}")).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("id=\"train-panel\"") && html.contains(&format!("/admin/train/{id}/chart")), "the job page shows the chart");
        let r = adm.get(format!("{base}/admin/train/{id}/chart")).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        assert!(r.text().await.unwrap().contains("<svg"));
        let s: serde_json::Value =
            c.get(format!("{base}/admin/train/{id}/chart")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert!(!s["steps"].as_array().unwrap().is_empty() && s["last_loss"].as_f64().is_some_and(f64::is_finite), "figures: {s}");

        // pause: the trainer checkpoints, the job is paused with its folder settled
        control("pause").await;
        let j = wait("paused", &|j| j["state"] == "paused" && j["workers"].as_array().is_some_and(|w| w.is_empty())).await;
        let paused_at = j["done"].as_i64().unwrap();
        assert!(paused_at < steps as i64, "paused before the end: {j}");
        let run_dir = j["params"]["run_dir"].as_str().unwrap().to_string();
        assert!(Path::new(&run_dir).join("checkpoints/latest").is_file(), "a checkpoint in {run_dir}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(get(&id).await["done"].as_i64(), Some(paused_at), "a paused run does not move");
        // resume: it continues from its checkpoint (not from step 1)
        control("resume").await;
        let j = wait("resumed", &|j| events(j).iter().any(|e| e.contains("resumed at step"))).await;
        let resumed: Vec<String> = events(&j).into_iter().filter(|e| e.contains("resumed at step")).collect();
        let at: u64 = resumed[0].split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(at > 1 && at <= paused_at as u64 + 1, "resumed at step {at}, paused at {paused_at}: {resumed:?}");
        // cancel, then continue it with retry
        wait("running again", &|j| j["state"] == "running" && j["done"].as_i64().unwrap_or(0) > at as i64).await;
        control("cancel").await;
        let j = wait("cancelled", &|j| j["state"] == "cancelled").await;
        let cancelled_at = j["done"].as_i64().unwrap();
        control("retry").await;
        let j = wait("finished", &|j| matches!(j["state"].as_str(), Some("done" | "failed"))).await;
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!((j["done"].as_i64(), j["total"].as_i64()), (Some(steps as i64), Some(steps as i64)));
        let r = &j["result"];
        assert_eq!(r["last_step"].as_u64(), Some(steps), "{r}");
        assert!(r["resumed_from"].as_u64().is_some_and(|s| s > 0 && s <= cancelled_at as u64), "continued from its checkpoint: {r}");
        assert!(r["best_plm"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)), "{r}");
        assert_eq!((r["train_samples"].as_u64(), r["labels"].as_str()), (Some(16), Some("extractor")), "{r}");
        let s: serde_json::Value =
            c.get(format!("{base}/admin/train/{id}/chart")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(s["last_step"].as_u64(), Some(steps), "{s}");
        assert!(s["val"].as_array().unwrap().len() >= (steps / 50) as usize, "a PLM per validation: {s}");
        // every action is on the record
        let acts: serde_json::Value = c.get(format!("{base}/admin/actions")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let names: Vec<&str> = acts["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
        for a in ["train fpn", "job pause", "job resume", "job cancel", "job retry"] {
            assert!(names.contains(&a), "{a} recorded: {names:?}");
        }

        // the finished checkpoint predicts and is scored
        let best = r["best_dir"].as_str().unwrap().to_string();
        let img = env.data.path().join("probe.png");
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])).save(&img).unwrap();
        let out = env.ok(&["fpn", "predict", "--checkpoint", &best, "--json", &img.display().to_string()]);
        let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let probs: Vec<f64> = line["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        assert_eq!(probs.len(), 21);
        let labels = [
            "eye", "pupil", "lip", "mouth", "nose", "ear", "cheek", "forehead", "chin", "jaw", "eyebrow", "tooth", "tongue", "beard",
            "mustache", "skin", "hair", "wrinkle", "freckle", "scar", "dimple",
        ];
        let want: Vec<&str> = labels.iter().zip(&probs).filter(|(_, p)| **p > 0.5).map(|(l, _)| *l).collect();
        assert_eq!(line["regions"], serde_json::json!(want), "{line}");
        let preds = env.data.path().join("test-regions.json");
        let scores = env.json(&["eval", "fpn", "--job", &id, "--split", "test", "--out", &preds.display().to_string()]);
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let n_test = common::admin::count(&pool, "SELECT count(*) FROM forgeries WHERE split = 'test'").await;
        assert_eq!(scores["n"].as_i64(), Some(n_test), "{scores}");
        assert!(scores["PLM"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)), "{scores}");
        let written: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&std::fs::read(&preds).unwrap()).unwrap();
        assert_eq!(written.len() as i64, n_test);
        let j = get(&id).await;
        assert_eq!(j["result"]["evaluation"]["PLM"], scores["PLM"], "the evaluation is added to the job's result: {j}");
    });
}

#[test]
fn a_killed_wait_run_is_taken_over_and_resumes_from_its_run_folder() {
    let env = seeded(40);
    let cfg = tiny_config(env.data.path(), "tiny.toml", 400, 5, 100, "");
    let run = env.data.path().join("runs").join("killed");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .arg("--data-dir")
        .arg(env.data.path())
        .arg("--database-url")
        .arg(&env.db.url)
        .args(["train", "fpn", "--config", &cfg, "--run-dir", &run.display().to_string(), "--wait"])
        .env("MMTT_JOB_LEASE_SECONDS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a checkpoint past step 10", 600, || {
        env.db.scalar_i64("SELECT coalesce(max(done), 0) FROM jobs WHERE kind = 'train'") >= 12 && run.join("checkpoints/latest").is_file()
    });
    cli.kill().unwrap();
    cli.wait().unwrap();
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let killed_at: u64 = latest.trim().trim_start_matches("step-").parse().unwrap();
    let w = env.mmtt(&["worker", "--until-empty", "--lease-seconds", "2"]);
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let jobs = env.json(&["jobs", "--kind", "train", "--json"]);
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    let j = env.json(&["jobs", "show", &id, "--json"]);
    assert_eq!(j["state"], "done", "{j}");
    let taken =
        env.db.scalar_i64(&format!("SELECT count(*) FROM job_events WHERE job_id = '{id}' AND message LIKE 'taken over from worker%'"));
    assert_eq!(taken, 1, "{:?}", events(&j));
    let r = &j["result"];
    assert_eq!(r["last_step"].as_u64(), Some(400));
    let from = r["resumed_from"].as_u64().unwrap();
    assert!((10..400).contains(&killed_at), "killed mid-run, at checkpoint {killed_at}");
    assert_eq!(from, killed_at, "resumed from the run folder's latest checkpoint: {r}");
    println!("FIGURES train kill: killed at step {killed_at}, resumed from step {from}");
}

#[test]
fn the_ablation_prints_table_4_beside_the_paper() {
    let env = seeded(40);
    let cfg = tiny_config(env.data.path(), "base.toml", 6, 3, 3, "");
    let rows = env.json(&["ablation", "fpn", "--config", &cfg, "--json"]);
    let rows = rows.as_array().expect("rows");
    let paper: Vec<f64> = rows.iter().map(|r| r["paper_plm"].as_f64().unwrap()).collect();
    assert_eq!(paper, [34.23, 38.92, 39.16, 41.05]);
    for r in rows {
        assert!(r["plm"].as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)), "{r}");
        assert!(Path::new(r["checkpoint"].as_str().unwrap()).is_dir(), "{r}");
    }
    let runs: Vec<serde_json::Value> = env.json(&["jobs", "--kind", "train", "--json"]).as_array().unwrap().clone();
    assert_eq!(runs.len(), 4, "one job per row");
    let convs: Vec<bool> = runs.iter().rev().map(|j| j["params"]["config"]["conv_branch"].as_bool().unwrap()).collect();
    assert_eq!(convs, [false, false, true, true]);
    // the table for people
    let out = env.ok(&["ablation", "fpn", "--config", &cfg]);
    assert!(out.contains("paper PLM") && out.contains("FPN, w=0.2, BCE+Dice") && out.contains("41.05"), "{out}");
}

#[test]
fn export_folders_give_the_databases_samples() {
    let env = seeded(40);
    let d = env.data.path();
    let (hf, mm) = (d.join("hf"), d.join("mmtt"));
    env.ok(&["export", "--format", "hf", "--out", &hf.display().to_string()]);
    env.ok(&["export", "--format", "mmtt", "--out", &mm.display().to_string()]);
    let ck = d.join("init");
    env.ok(&["fpn", "init", "--preset", "tiny", "--seed", "5", "--out", &ck.display().to_string()]);
    let n_test = env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE split = 'test'");
    // one checkpoint scored on the test split from the database and from both layouts: the same samples, the same figures
    let ck = ck.display().to_string();
    let from_db = env.json(&["eval", "fpn", "--checkpoint", &ck, "--split", "test"]);
    assert_eq!(from_db["n"].as_i64(), Some(n_test), "{from_db}");
    for dir in [&hf, &mm] {
        let v = env.json(&["eval", "fpn", "--checkpoint", &ck, "--split", "test", "--data", &dir.display().to_string()]);
        assert_eq!(v, from_db, "{} gives the database's test samples and labels", dir.display());
    }
    // chips: the hf layout keeps them (the synthetic chips are the extractor's labels), the mmtt layout has none
    let v = env.json(&["eval", "fpn", "--checkpoint", &ck, "--split", "test", "--labels", "chips", "--data", &hf.display().to_string()]);
    assert_eq!(v["PLM"], from_db["PLM"]);
    let out = env.mmtt(&["eval", "fpn", "--checkpoint", &ck, "--labels", "chips", "--data", &mm.display().to_string()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no region chips"));
    // a run trained from an export folder
    let cfg = d.join("export.toml");
    std::fs::write(&cfg, format!("preset = \"tiny\"\nsteps = 4\nwarmup_steps = 1\nbatch_size = 2\ncheckpoint_every = 2\neval_every = 2\n[data]\nsource = \"export\"\ndir = \"{}\"\n", hf.display())).unwrap();
    let v = env.json(&["train", "fpn", "--config", &cfg.display().to_string(), "--wait", "--json"]);
    let n_train = env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE split = 'train'");
    assert_eq!((v["summary"]["last_step"].as_u64(), v["summary"]["train_samples"].as_i64()), (Some(4), Some(n_train)), "{v}");
    // a folder that is no export is refused before anything is queued
    std::fs::write(&cfg, format!("preset = \"tiny\"\n[data]\nsource = \"export\"\ndir = \"{}\"\n", d.join("init").display())).unwrap();
    let out = env.mmtt(&["train", "fpn", "--config", &cfg.display().to_string()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("neither an mmtt export"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
