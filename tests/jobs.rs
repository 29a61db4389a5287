//! The job system with the real `mmtt` binary and PostgreSQL: a worker SIGKILLed mid-job (forge,
//! and an import run by the CLI) is taken over and the job ends done with correct counts and no
//! duplicates; a cancelled job stops its workers within one lease; a paused job resumes where it
//! was; failed items are retried; `mmtt jobs --json` lists every kind; migration 0009 keeps the
//! rows stored before it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds of the short lease these tests give workers.
const LEASE: &str = "2";

fn spawn(env: &common::Env, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmtt"));
    c.arg("--data-dir").arg(env.data.path()).arg("--database-url").arg(&env.db.url).args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn mmtt")
}

fn worker(env: &common::Env, extra: &[&str], delay_ms: Option<&str>) -> Child {
    let mut args = vec!["worker", "--lease-seconds", LEASE];
    args.extend_from_slice(extra);
    let envs: Vec<(&str, &str)> = delay_ms.map(|d| vec![("MMTT_TEST_ITEM_DELAY_MS", d)]).unwrap_or_default();
    spawn(env, &args, &envs)
}

/// Waits (polling) until `f` holds; panics after `secs` (a generous bound, not a timing assertion).
fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "gave up waiting ({secs} s) for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

fn job(env: &common::Env, id: &str) -> serde_json::Value {
    env.json(&["jobs", "show", id, "--json"])
}

fn state(env: &common::Env, id: &str) -> String {
    env.db.query(async |p| {
        sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = $1::uuid").bind(id).fetch_one(p).await.expect("job state")
    })
}

fn kill(mut c: Child) {
    c.kill().expect("SIGKILL");
    c.wait().expect("wait");
}

/// `n` photo variants imported; returns the number of sources.
fn imported(env: &common::Env, n: usize) -> i64 {
    let dir = env.data.path().join("many");
    common::variants(&dir, n);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    env.db.scalar_i64("SELECT count(*) FROM sources")
}

fn forge_job(env: &common::Env, count: i64, seed: &str) -> String {
    let e = env.json(&["forge", "--method", "patch-inpaint", "--count", &count.to_string(), "--seed", seed, "--json"]);
    assert_eq!(e["queued"].as_i64(), Some(count), "{e}");
    e["job_id"].as_str().expect("job id").to_string()
}

#[test]
fn a_killed_forge_worker_is_taken_over_and_the_job_ends_done() {
    let env = common::Env::new();
    let n = imported(&env, 10);
    assert!(n >= 8, "{n}");
    let id = forge_job(&env, n, "3");
    assert_eq!(state(&env, &id), "queued");
    let w = worker(&env, &[], Some("300"));
    let dead = format!("{}-{}", std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), w.id());
    wait_until("two forgeries stored", 300, || env.db.scalar_i64("SELECT count(*) FROM forgeries") >= 2);
    kill(w);
    let killed_at = Instant::now();
    let before = env.db.scalar_i64("SELECT count(*) FROM forgeries");
    let held = env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status = 'running'");
    assert!(before < n, "killed midway: {before} of {n}");
    assert_eq!(state(&env, &id), "running");
    let b = worker(&env, &["--until-empty"], None);
    // the dead worker's items are claimed again once their lease expires
    // the first of the dead worker's items claimed again (they are the oldest: claimed first)
    let takeover = (held > 0).then(|| {
        wait_until("a dead worker's item claimed again", 120, || {
            env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE attempts > 1") > 0
        });
        killed_at.elapsed()
    });
    wait_until("every item of the dead worker taken over", 300, || {
        env.db.scalar_i64(&format!("SELECT count(*) FROM forge_items WHERE worker = '{dead}' AND status = 'running'")) == 0
    });
    let all_taken = killed_at.elapsed();
    let mut b = b;
    assert!(b.wait().unwrap().success());
    let j = job(&env, &id);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["done"].as_i64(), Some(n), "{j}");
    assert_eq!(j["failed"].as_i64(), Some(0), "{j}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries"), n);
    assert_eq!(env.db.scalar_i64("SELECT count(DISTINCT item_id) FROM forgeries"), n);
    let redone = env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE attempts > 1");
    println!(
        "FIGURES forge kill: {before} of {n} stored at the kill, {held} items held under the dead worker's lease ({LEASE} s); \
         first taken over {} after the kill, all {:.1} s after it; {redone} items redone; job done {}/{}",
        takeover.map(|t| format!("{:.1} s", t.as_secs_f64())).unwrap_or_else(|| "(none held)".into()),
        all_taken.as_secs_f64(),
        j["done"],
        j["total"]
    );
    env.assert_store_consistent();
}

#[test]
fn a_killed_import_is_taken_over_by_a_worker_and_resumes() {
    let env = common::Env::new();
    let dir = env.data.path().join("many");
    common::variants(&dir, 16);
    env.ok(&["jobs"]); // migrates the database before the polling below
    let cli = spawn(&env, &["import", "photos", "--root", &dir.display().to_string()], &[("MMTT_JOB_LEASE_SECONDS", LEASE)]);
    wait_until("two sources imported", 300, || env.db.scalar_i64("SELECT count(*) FROM sources") >= 2);
    kill(cli);
    let killed = Instant::now();
    let at_kill = env.db.scalar_i64("SELECT count(DISTINCT original_id) FROM sources");
    let jobs = env.json(&["jobs", "--json", "--kind", "import"]);
    assert_eq!(jobs.as_array().map(|a| a.len()), Some(1), "{jobs}");
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    assert!(at_kill < 16, "killed midway: {at_kill} of 16 inputs stored");
    assert_eq!(jobs[0]["state"], "running", "the killed import's job stays running until taken over: {jobs}");
    let mut w = worker(&env, &["--until-empty"], None);
    let takeover = wait_until("the import taken over", 120, || {
        let j = job(&env, &id);
        j["events"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap_or_default().contains("taken over from worker"))
    });
    let since_kill = killed.elapsed();
    assert!(w.wait().unwrap().success());
    let j = job(&env, &id);
    assert_eq!(j["state"], "done", "{j}");
    let r = &j["result"];
    let stored = env.db.scalar_i64("SELECT count(DISTINCT original_id) FROM sources");
    let skipped = r["skipped"].as_array().map(|a| a.len()).unwrap_or(0) as i64;
    assert_eq!(stored + skipped, 16, "every input stored or skipped with a reason: {j}");
    assert_eq!(r["already_present"].as_i64().unwrap() + r["imported"].as_i64().unwrap() + skipped, 16, "{r}");
    assert!(r["already_present"].as_i64().unwrap() >= at_kill, "the resumed import skipped what was stored: {r}");
    assert_eq!(
        env.db.scalar_i64("SELECT count(*) FROM sources"),
        env.db.scalar_i64("SELECT count(*) FROM (SELECT DISTINCT original_id, face_index FROM sources) x"),
        "no duplicate sources"
    );
    assert_eq!(env.db.scalar_i64(&format!("SELECT count(*) FROM import_runs WHERE id = '{id}' AND status = 'finished'")), 1);
    let taken = j["events"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap_or_default().contains("taken over")).cloned();
    println!(
        "FIGURES import kill: {at_kill} of 16 inputs stored at the kill; taken over {:.1} s after the kill (lease {LEASE} s, seen after {:.1} s of polling); \
         resumed run: {} imported, {} already present, {} skipped; event {}",
        since_kill.as_secs_f64(),
        takeover.as_secs_f64(),
        r["imported"],
        r["already_present"],
        skipped,
        taken.map(|e| e["message"].to_string()).unwrap_or_default()
    );
    env.assert_store_consistent();
}

#[test]
fn cancel_stops_workers_within_a_lease_and_pause_resumes_where_it_was() {
    let env = common::Env::new();
    let n = imported(&env, 10);
    // pause: the in-flight item finishes, nothing more is claimed, resume continues
    let id = forge_job(&env, n, "4");
    let mut w = worker(&env, &["--until-empty"], Some("400"));
    wait_until("one forgery", 300, || env.db.scalar_i64("SELECT count(*) FROM forgeries") >= 1);
    env.ok(&["jobs", "pause", &id]);
    assert_eq!(state(&env, &id), "paused");
    wait_until("no item held after the pause", 60, || env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE status = 'running'") == 0);
    // an --until-empty worker exits: nothing claimable is left
    assert!(w.wait().unwrap().success());
    let paused_done = env.db.scalar_i64("SELECT count(*) FROM forgeries");
    assert!(paused_done < n, "paused midway: {paused_done} of {n}");
    let j = job(&env, &id);
    assert_eq!(j["done"].as_i64(), Some(paused_done), "{j}");
    assert_eq!(j["state"], "paused");
    env.ok(&["jobs", "resume", &id]);
    let mut w = worker(&env, &["--until-empty"], None);
    assert!(w.wait().unwrap().success());
    let j = job(&env, &id);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["done"].as_i64(), Some(n), "{j}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE attempts > 1"), 0, "nothing redone after the pause");
    println!("FIGURES pause: {paused_done} of {n} done when paused; resumed to {n}, no item redone");

    // cancel: a second job (another seed, other plans) with a slow worker
    let id =
        env.json(&["forge", "--method", "patch-inpaint", "--count", &n.to_string(), "--seed", "5", "--plan-seed", "6", "--json"])["job_id"]
            .as_str()
            .unwrap()
            .to_string();
    let w = worker(&env, &[], Some("600"));
    let count =
        || env.db.scalar_i64(&format!("SELECT count(*) FROM forgeries f JOIN forge_items i ON i.id = f.item_id WHERE i.job_id = '{id}'"));
    wait_until("one forgery of the second job", 300, || count() >= 1);
    env.ok(&["jobs", "cancel", &id]);
    let asked = Instant::now();
    let st = state(&env, &id);
    assert!(st == "cancelling" || st == "cancelled", "{st}");
    // within one lease (2 s): the worker's next heartbeat (a third of a lease) releases the items
    let stopped = wait_until("the job cancelled", 60, || state(&env, &id) == "cancelled");
    let at_cancel = count();
    let held = env.db.scalar_i64(&format!("SELECT count(*) FROM forge_items WHERE job_id = '{id}' AND status = 'running'"));
    assert_eq!(held, 0, "no item of a cancelled job is held");
    // two more leases: the live worker forged nothing more of it
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(), at_cancel, "a cancelled job's items are not worked on");
    assert!(at_cancel < n, "cancelled midway: {at_cancel} of {n}");
    let j = job(&env, &id);
    assert_eq!(j["state"], "cancelled");
    assert!(j["events"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap_or_default().starts_with("cancel by cli:")), "{j}");
    println!(
        "FIGURES cancel: {at_cancel} of {n} done; state cancelled {:.2} s after the request (lease {LEASE} s; seen {:.2} s)",
        asked.elapsed().as_secs_f64(),
        stopped.as_secs_f64()
    );
    // a cancelled job cannot be paused; it can be retried
    let o = env.mmtt(&["jobs", "pause", &id]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("it is cancelled"), "{o:?}");
    kill(w);
}

#[test]
fn failed_items_are_retried() {
    let env = common::Env::new();
    let n = imported(&env, 4);
    let empty = env.data.path().join("models-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = env.json(&["forge", "--method", "mat", "--count", &n.to_string(), "--seed", "2", "--max-attempts", "1", "--json"]);
    let id = e["job_id"].as_str().unwrap().to_string();
    let queued = e["queued"].as_i64().unwrap();
    assert!(queued > 0, "{e}");
    // no live worker has mat's model: the job says so instead of waiting silently
    let j = job(&env, &id);
    assert!(j["blocked"].as_str().unwrap_or_default().contains("no live worker"), "{j}");
    let mut w = worker(&env, &["--until-empty", "--models", &empty.display().to_string()], None);
    assert!(w.wait().unwrap().success());
    let j = job(&env, &id);
    assert_eq!(j["failed"].as_i64(), Some(queued), "{j}");
    assert_eq!(j["state"], "failed", "every item failed: {j}");
    assert!(j["error"].as_str().unwrap_or_default().contains("items failed"), "{j}");
    assert!(j["failures"][0]["reason"].as_str().unwrap_or_default().contains("mat.onnx"), "{j}");
    // with the model in place, retry re-queues the failed items and they are forged
    let models = env.data.path().join("models");
    let st = Command::new(common::python()).arg(common::script("make_tiny_models.py")).arg(&models).status().unwrap();
    assert!(st.success());
    let out = env.ok(&["jobs", "retry", &id]);
    assert!(out.contains("running"), "{out}");
    assert_eq!(env.db.scalar_i64(&format!("SELECT count(*) FROM forge_items WHERE job_id = '{id}' AND status = 'queued'")), queued);
    let mut w = worker(&env, &["--until-empty", "--models", &models.display().to_string()], None);
    assert!(w.wait().unwrap().success());
    let j = job(&env, &id);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["done"].as_i64(), Some(queued), "{j}");
    assert_eq!(j["failed"].as_i64(), Some(0), "{j}");
    // nothing left to retry
    let o = env.mmtt(&["jobs", "retry", &id]);
    assert!(!o.status.success(), "{o:?}");
}

#[test]
fn jobs_lists_every_kind_and_refuses_bad_input() {
    let env = common::Env::new();
    let n = imported(&env, 3);
    env.ok(&["masks", "plan", "--seed", "7"]);
    forge_job(&env, n, "7");
    // an export with nothing to export fails: the job says why
    let out = env.data.path().join("exp");
    let o = env.mmtt(&["export", "--format", "hf", "--out", &out.display().to_string()]);
    assert!(!o.status.success());
    let jobs = env.json(&["jobs", "--json"]);
    let kinds: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    for k in ["import", "masks", "forge", "export"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let export = jobs.as_array().unwrap().iter().find(|j| j["kind"] == "export").unwrap();
    assert_eq!(export["state"], "failed");
    assert!(export["error"].as_str().unwrap_or_default().contains("nothing to export"), "{export}");
    let masks = jobs.as_array().unwrap().iter().find(|j| j["kind"] == "masks").unwrap();
    assert_eq!(masks["state"], "done");
    assert_eq!(masks["done"].as_i64(), Some(n), "{masks}");
    let import = jobs.as_array().unwrap().iter().find(|j| j["kind"] == "import").unwrap();
    assert_eq!(import["state"], "done");
    assert_eq!(import["result"]["imported"].as_i64(), Some(3), "{import}");
    // filters
    let only = env.json(&["jobs", "--json", "--kind", "forge", "--state", "queued"]);
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    let human = env.ok(&["jobs"]);
    assert!(human.contains("import ") && human.contains("masks ") && human.contains("export "), "{human}");
    // bad input: named field, nothing stored
    let before = env.db.scalar_i64("SELECT count(*) FROM jobs");
    let o = env.mmtt(&["jobs", "--kind", "bogus"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--kind: unknown job kind `bogus`"), "{o:?}");
    let o = env.mmtt(&["forge", "--method", "nope", "--count", "1", "--seed", "1"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown method `nope`"), "{o:?}");
    let o = env.mmtt(&["import", "photos", "--root", "/nonexistent/faces"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("root: /nonexistent/faces is not a directory"), "{o:?}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), before, "refused requests store nothing");
    let o = env.mmtt(&["jobs", "show", &uuid::Uuid::new_v4().to_string()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no job"), "{o:?}");
}

#[test]
fn migration_0009_keeps_the_rows_stored_before_it() {
    let env = common::Env::new();
    env.db.query(async |p| {
        let mut m = sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")).await.unwrap();
        m.migrations = std::borrow::Cow::Owned(m.migrations.iter().filter(|x| x.version <= 8).cloned().collect());
        m.run(p).await.unwrap();
        for sql in [
            "INSERT INTO forge_jobs (id, requested, seed, plan_seed, mix, methods, device, params) \
             VALUES ('00000000-0000-0000-0000-00000000000f', 10, 1, 1, 'paper', '{classic-swap,mat,sdxl}', 'cpu', '{\"prompt\": \"p\"}')",
            "INSERT INTO import_runs (id, dataset, root, status, imported, faces, already_present) \
             VALUES ('00000000-0000-0000-0000-000000000001', 'photos', '/data/a', 'finished', 5, 6, 1)",
            "INSERT INTO import_runs (id, dataset, root, status, imported, faces) \
             VALUES ('00000000-0000-0000-0000-000000000002', 'ffhq', '/data/b', 'running', 2, 2)",
            "INSERT INTO exports (id, format, out_dir, options, status, total, done, finished_at) \
             VALUES ('00000000-0000-0000-0000-00000000000e', 'coco', '/exp/c', \
             '{\"format\": \"coco\", \"include_unreviewed\": false, \"methods\": [], \"datasets\": [], \"resplit\": null, \"originals\": true, \"shard_bytes\": 1000}', \
             'done', 40, 40, now())",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await.unwrap();
        }
    });
    // any command migrates the database to the newest version
    let jobs = env.json(&["jobs", "--json"]);
    let by_id = |id: &str| jobs.as_array().unwrap().iter().find(|j| j["id"] == id).cloned().unwrap_or_else(|| panic!("{id} lost: {jobs}"));
    let f = by_id("00000000-0000-0000-0000-00000000000f");
    assert_eq!((f["kind"].as_str(), f["state"].as_str()), (Some("forge"), Some("done")), "{f}");
    assert_eq!(f["params"]["methods"], serde_json::json!(["classic-swap", "mat", "sdxl"]));
    assert_eq!(f["params"]["params"]["prompt"], "p");
    assert_eq!(f["params"]["mix_paper"], true);
    let a = by_id("00000000-0000-0000-0000-000000000001");
    assert_eq!((a["kind"].as_str(), a["state"].as_str()), (Some("import"), Some("done")));
    assert_eq!(a["result"]["imported"], 5);
    assert_eq!(a["result"]["faces"], 6);
    let b = by_id("00000000-0000-0000-0000-000000000002");
    assert_eq!(b["state"], "failed", "a run left running before the job system is failed with the reason: {b}");
    assert!(b["error"].as_str().unwrap().contains("stopped without finishing"), "{b}");
    let e = by_id("00000000-0000-0000-0000-00000000000e");
    assert_eq!((e["kind"].as_str(), e["state"].as_str(), e["done"].as_i64()), (Some("export"), Some("done"), Some(40)));
    assert_eq!(e["params"]["out"], "/exp/c");
    // the detail tables keep their rows
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM import_runs"), 2);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM import_runs WHERE status = 'running'"), 0);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM exports"), 1);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forge_jobs"), 1);
    // the stored params of every kind read back as typed specs
    let params: Vec<serde_json::Value> =
        env.db.query(async |p| sqlx::query_scalar("SELECT params FROM jobs ORDER BY id").fetch_all(p).await.unwrap());
    for v in params {
        serde_json::from_value::<mmtt::jobs::JobSpec>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

#[test]
fn eval_jobs_are_validated_and_run_by_a_worker() {
    let env = common::Env::new();
    env.ok(&["jobs"]); // migrates
    let dir = env.data.path().join("eval");
    std::fs::create_dir_all(&dir).unwrap();
    let (gt, pred) = (dir.join("test.json"), dir.join("pred.jsonl"));
    std::fs::write(&gt, "not json").unwrap();
    std::fs::write(&pred, "").unwrap();
    let spec = |gt: &std::path::Path, name: &str| {
        mmtt::jobs::JobSpec::Eval(mmtt::jobs::EvalSpec {
            name: name.into(),
            gt: gt.to_path_buf(),
            predictions: pred.clone(),
            gt_masks: None,
            masks: None,
            threshold: 127,
            meteor_data: None,
            model: None,
            regions: None,
        })
    };
    // refused with the field named; nothing stored
    let refused = env.db.query(async |p| {
        let a = mmtt::jobs::submit(p, &spec(&dir.join("missing.json"), "m"), "test").await.unwrap_err().to_string();
        let b = mmtt::jobs::submit(p, &spec(&gt, " "), "test").await.unwrap_err().to_string();
        (a, b)
    });
    assert!(refused.0.starts_with("gt: ") && refused.0.contains("missing.json"), "{refused:?}");
    assert!(refused.1.starts_with("name: "), "{refused:?}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM jobs"), 0);
    // a worker runs it; the evaluator's error is the job's error
    let id = env.db.query(async |p| mmtt::jobs::submit(p, &spec(&gt, "mine"), "test").await.unwrap());
    assert_eq!(state(&env, &id.to_string()), "queued");
    let mut w = worker(&env, &["--until-empty"], None);
    assert!(w.wait().unwrap().success());
    let j = job(&env, &id.to_string());
    assert_eq!(j["kind"], "eval");
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap_or_default().contains("ground truth"), "{j}");
    assert_eq!(j["started_by"], "test");
}
