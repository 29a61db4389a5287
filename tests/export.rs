//! Dataset exports read back by the real clients (Hugging Face `datasets`, pycocotools, Python's
//! tarfile, json), leak-free and deterministic splits, resume, statistics, and the MMTT release
//! import, on `seed-synthetic` databases.

mod common;

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use common::python;

/// What the real client saw (scripts/read_exports.py).
fn read(kind: &str, dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_exports.py"))
        .arg(kind)
        .arg(dir)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.parent().unwrap().join("hf-home"))
        .output()
        .expect("python");
    assert!(out.status.success(), "{kind} reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("reader JSON")
}

/// Stored truth per forgery: (split, caption, SHA-256 of the mask's 0/255 pixels, source).
fn truth(env: &common::Env) -> HashMap<String, (String, String, String, String)> {
    let rows: Vec<(uuid::Uuid, String, String, String, uuid::Uuid)> = env.db.query(async |p| {
        sqlx::query_as("SELECT f.id, f.split, a.text, f.mask_hash, f.target_id FROM forgeries f JOIN annotations a ON a.forgery_id = f.id WHERE a.status = 'accepted'")
            .fetch_all(p)
            .await
            .unwrap()
    });
    rows.into_iter()
        .map(|(id, split, text, mask, src)| {
            let img = image::open(env.blob_path(&mask)).unwrap().to_luma8();
            let px: Vec<u8> = img.as_raw().iter().map(|v| if *v > 0 { 255 } else { 0 }).collect();
            (id.to_string(), (split, text, hex::encode(Sha256::digest(&px)), src.to_string()))
        })
        .collect()
}

fn check_rows(
    kind: &str,
    seen: &serde_json::Value,
    truth: &HashMap<String, (String, String, String, String)>,
    split_name: impl Fn(&str) -> String,
) {
    let mut n = 0;
    for (split, part) in seen.as_object().unwrap() {
        for r in part["rows"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let (s, text, mask, _) = truth.get(id).unwrap_or_else(|| panic!("{kind}: unknown sample {id}"));
            assert_eq!(&split_name(s), split, "{kind}: {id} in the wrong split");
            assert_eq!(r["text"].as_str().unwrap(), text, "{kind}: caption of {id}");
            assert_eq!(r["mask"].as_str().unwrap(), mask, "{kind}: mask of {id}");
            n += 1;
        }
    }
    assert_eq!(n, truth.len(), "{kind}: every accepted sample once");
}

#[test]
fn all_four_formats_are_read_back_by_the_real_clients() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "36", "--seed", "3", "--state", "accepted"]);
    // a few submitted, not yet reviewed: left out unless asked for
    env.db.scalar_i64("WITH x AS (UPDATE annotations SET status = 'submitted' WHERE id IN (SELECT id FROM annotations ORDER BY id LIMIT 4) RETURNING 1) SELECT count(*) FROM x");
    let truth = truth(&env);
    assert_eq!(truth.len(), 32);
    let root = env.data.path().join("exports");
    let same = |s: &str| s.to_string();
    for (fmt, extra) in [("hf", vec![]), ("coco", vec![]), ("webdataset", vec!["--shard-size", "300000"]), ("mmtt", vec![])] {
        let dir = root.join(fmt);
        let d = dir.display().to_string();
        let mut args = vec!["export", "--format", fmt, "--out", d.as_str(), "--json"];
        args.extend(extra);
        let summary = env.json(&args);
        assert_eq!(summary["samples"], 32, "{fmt}: {summary}");
        common::manifest_ok(&dir);
        for f in ["README.md", "splits.json", "charts/methods.svg", "charts/caption-length.svg"] {
            assert!(dir.join(f).is_file(), "{fmt}: {f}");
        }
        let seen = read(fmt, &dir);
        match fmt {
            "mmtt" => {
                check_rows(fmt, &seen, &truth, |s| if s == "validation" { "val".into() } else { s.into() });
                for part in seen.as_object().unwrap().values() {
                    for r in part["rows"].as_array().unwrap() {
                        let id = r["image_id"].as_str().unwrap();
                        assert!(["sd_", "mat_", "e4s_"].iter().any(|p| id.starts_with(p)), "{id}");
                        let text = truth[r["id"].as_str().unwrap()].1.clone();
                        let want: Vec<u8> = mmtt::dataset::annotation::multilabel(&text).to_vec();
                        let got: Vec<u8> = r["multilabel"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
                        assert_eq!(got, want, "multilabel from the reference extractor");
                    }
                }
            }
            "webdataset" => {
                check_rows(fmt, &seen, &truth, same);
                let shards: u64 = seen.as_object().unwrap().values().map(|p| p["shards"].as_u64().unwrap()).sum();
                assert!(shards > 3, "small shards were asked for: {shards}");
                for part in seen.as_object().unwrap().values() {
                    for r in part["rows"].as_array().unwrap() {
                        assert_eq!(r["exts"], serde_json::json!(["json", "mask.png", "png", "txt"]));
                        assert!(!r["key"].as_str().unwrap().contains('.'));
                    }
                }
            }
            "hf" => {
                check_rows(fmt, &seen, &truth, same);
                let cols = seen["train"]["columns"].as_array().unwrap();
                for c in ["image", "text", "regions", "method", "annotator_id", "review_status", "active_time_s", "word_count"] {
                    assert!(cols.iter().any(|x| x == c), "hf column {c}: {cols:?}");
                }
            }
            _ => check_rows(fmt, &seen, &truth, same),
        }
    }
    // --include-unreviewed adds the submitted ones
    let d = root.join("hf-all").display().to_string();
    assert_eq!(env.json(&["export", "--format", "hf", "--out", &d, "--include-unreviewed", "--json"])["samples"], 36);
    // bad input: a folder that holds something else, a re-run with other options, nothing to export
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let o = env.mmtt(&["export", "--format", "hf", "--out", &other.display().to_string()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(other.join("keep.txt")).unwrap(), "mine");
    let hf = root.join("hf").display().to_string();
    let o = env.mmtt(&["export", "--format", "hf", "--out", &hf, "--include-unreviewed"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("other options"));
    let o = env.mmtt(&["export", "--format", "hf", "--out", &root.join("none").display().to_string(), "--method", "no-such-method"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing to export"));
}

/// sample id -> split, from an hf export's metadata.
fn hf_splits(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for split in ["train", "validation", "test"] {
        let Ok(text) = std::fs::read_to_string(dir.join(split).join("metadata.jsonl")) else { continue };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            m.insert(v["id"].as_str().unwrap().to_string(), split.to_string());
        }
    }
    m
}

#[test]
fn splits_are_leak_free_deterministic_stable_and_exports_resume() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "60", "--seed", "5", "--state", "accepted"]);
    let root = env.data.path().join("exports");
    let (a, b) = (root.join("a"), root.join("b"));
    env.ok(&["export", "--format", "hf", "--out", &a.display().to_string()]);
    env.ok(&["export", "--format", "hf", "--out", &b.display().to_string()]);
    assert_eq!(
        std::fs::read(a.join("MANIFEST.sha256")).unwrap(),
        std::fs::read(b.join("MANIFEST.sha256")).unwrap(),
        "two exports are identical"
    );
    // no face in two splits
    let splits: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("splits.json")).unwrap()).unwrap();
    let faces = splits["faces"].as_object().unwrap();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for split in ["train", "validation", "test"] {
        for line in std::fs::read_to_string(a.join(split).join("metadata.jsonl")).unwrap_or_default().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let src = v["source_id"].as_str().unwrap().to_string();
            assert_eq!(faces[&src], split);
            seen.entry(src).or_default().insert(split.to_string());
        }
    }
    assert!(seen.values().all(|s| s.len() == 1));
    // new samples never move old ones
    let before = hf_splits(&a);
    env.ok(&["seed-synthetic", "--samples", "20", "--seed", "6", "--state", "accepted"]);
    let c = root.join("c");
    env.ok(&["export", "--format", "hf", "--out", &c.display().to_string()]);
    let after = hf_splits(&c);
    assert_eq!(after.len(), 80);
    for (id, s) in &before {
        assert_eq!(&after[id], s, "sample {id} moved");
    }
    // resume: an interrupted export left some files and a temp file; the rerun completes it
    let images: Vec<_> = std::fs::read_dir(c.join("train/images")).unwrap().map(|e| e.unwrap().path()).collect();
    for p in images.iter().take(5) {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(c.join("MANIFEST.sha256")).unwrap();
    std::fs::write(c.join("train/images/.partial.png.part-1"), b"half").unwrap();
    let s = env.json(&["export", "--format", "hf", "--out", &c.display().to_string(), "--json"]);
    assert!(s["reused_files"].as_u64().unwrap() > 100, "{s}");
    assert!(!c.join("train/images/.partial.png.part-1").exists(), "a killed run's temp file is removed");
    assert_eq!(s["removed_files"], 1, "{s}");
    common::manifest_ok(&c);
    for p in images.iter().take(5) {
        assert!(p.is_file());
    }
    // --resplit draws new splits (no swaps here, so nothing crosses), deterministic per seed
    let r1 = root.join("r1");
    env.ok(&["export", "--format", "hf", "--out", &r1.display().to_string(), "--resplit", "--seed", "99", "--ratios", "1:1:1"]);
    let n: BTreeMap<String, usize> = hf_splits(&r1).values().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.clone()).or_default() += 1;
        m
    });
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(n.values().all(|v| *v > 10), "1:1:1 over 80 samples: {n:?}");
    // --background runs it in another process; `mmtt jobs` shows it
    let bg = root.join("bg");
    let out = env.ok(&["export", "--format", "mmtt", "--out", &bg.display().to_string(), "--background"]);
    assert!(out.contains("export running in the background"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !bg.join("MANIFEST.sha256").exists() {
        assert!(std::time::Instant::now() < deadline, "the background export did not finish");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    common::manifest_ok(&bg);
    let jobs = env.ok(&["jobs"]);
    assert!(jobs.contains(&format!("mmtt -> {}: ", bg.display())), "{jobs}");
    // --link hard-links the images
    let l = root.join("l");
    env.ok(&["export", "--format", "hf", "--out", &l.display().to_string(), "--link"]);
    use std::os::unix::fs::MetadataExt;
    let any = std::fs::read_dir(l.join("train/images")).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::metadata(&any).unwrap().nlink() > 1);
    common::manifest_ok(&l);
}

#[test]
fn resplit_is_refused_when_a_swap_pair_would_cross() {
    let env = common::Env::new();
    let dir = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &dir);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    env.ok(&["forge", "--method", "classic-swap", "--count", "2", "--seed", "1", "--wait"]);
    let swaps = env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE donor_id IS NOT NULL");
    assert!(swaps > 0, "swaps with donors");
    // accept annotations for them
    env.db.scalar_i64(
        "WITH u AS (INSERT INTO users (id, name, role, password_hash) VALUES (gen_random_uuid(), 'ann', 'annotator', '!') RETURNING id), \
         a AS (INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status, mentions) \
               SELECT gen_random_uuid(), f.id, u.id, 'The skin tone of the face does not match the neck.', '{skin}', 11, 70, 80, 'accepted', '{skin}' FROM forgeries f, u RETURNING 1) \
         SELECT count(*) FROM a",
    );
    let mut refused = None;
    let mut accepted = None;
    for seed in 1..200u64 {
        let out = env.data.path().join(format!("x{seed}"));
        let o = env.mmtt(&["export", "--format", "mmtt", "--out", &out.display().to_string(), "--resplit", "--seed", &seed.to_string()]);
        if o.status.success() {
            accepted.get_or_insert(seed);
        } else {
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert!(err.contains("face-swap pairs in different splits"), "{err}");
            assert!(!out.join("MANIFEST.sha256").exists(), "a refused export writes nothing");
            refused.get_or_insert(err);
        }
        if refused.is_some() && accepted.is_some() {
            break;
        }
    }
    let err = refused.expect("some seed splits a swap pair");
    assert!(err.contains(&format!("of {swaps} face-swap pairs")) || err.contains("face-swap pairs"), "{err}");
    assert!(accepted.is_some(), "some seed keeps every pair together");
}

#[test]
fn statistics_match_independent_counts_and_the_release_round_trips() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "50", "--seed", "8", "--state", "accepted"]);
    let st = env.json(&["stats", "--json"]);
    assert_eq!(st["samples"], 50);
    let per_method: Vec<(String, i64)> =
        env.db.query(async |p| sqlx::query_as("SELECT method, count(*) FROM forgeries GROUP BY method").fetch_all(p).await.unwrap());
    for (m, n) in per_method {
        assert_eq!(st["per_method"][&m], n, "{m}");
    }
    let words: (i64, i32, i32, f64) = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT count(*), min(word_count), max(word_count), avg(word_count)::float8 FROM annotations WHERE status = 'accepted'",
        )
        .fetch_one(p)
        .await
        .unwrap()
    });
    assert_eq!(st["caption_length"]["captions"], words.0);
    assert_eq!(st["caption_length"]["min"], words.1);
    assert_eq!(st["caption_length"]["max"], words.2);
    assert!((st["caption_length"]["mean"].as_f64().unwrap() - words.3).abs() < 1e-9);
    // region mentions: the extractor over every caption, counted here independently
    let texts: Vec<String> =
        env.db.query(async |p| sqlx::query_scalar("SELECT text FROM annotations WHERE status = 'accepted'").fetch_all(p).await.unwrap());
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for t in &texts {
        for l in mmtt::dataset::annotation::region_labels(t) {
            *want.entry(l.to_string()).or_default() += 1;
        }
    }
    for pair in st["region_mentions"].as_array().unwrap() {
        let (l, n) = (pair[0].as_str().unwrap(), pair[1].as_u64().unwrap());
        assert_eq!(n, want.get(l).copied().unwrap_or(0), "mentions of {l}");
    }
    let parts: Vec<(String, String, i64)> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.method, part, count(*) FROM forgeries f JOIN mask_plans m ON m.id = f.plan_id, unnest(m.parts) part GROUP BY 1, 2",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    for (m, part, n) in parts {
        assert_eq!(st["part_frequency"][&m][&part], n, "{m} {part}");
    }
    assert_eq!(st["table1"]["unique_fakes"], 50);
    assert_eq!(st["table1"]["pristine"], 50);
    assert_eq!(st["table1"]["text_annotations"], 50);

    // the authors' release format, imported into a fresh database
    let rel = env.data.path().join("release");
    env.ok(&["export", "--format", "mmtt", "--out", &rel.display().to_string()]);
    let other = common::Env::new();
    let out = other.ok(&["import", "mmtt-release", "--root", &rel.display().to_string()]);
    assert!(out.contains("imported 50 samples"), "{out}");
    let again = other.ok(&["import", "mmtt-release", "--root", &rel.display().to_string()]);
    assert!(again.contains("imported 0 samples") && again.contains("50 were already present"), "{again}");
    let mut a: Vec<String> = texts.clone();
    let mut b: Vec<String> =
        other.db.query(async |p| sqlx::query_scalar("SELECT text FROM annotations WHERE status = 'accepted'").fetch_all(p).await.unwrap());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let methods: Vec<String> =
        other.db.query(async |p| sqlx::query_scalar("SELECT DISTINCT method FROM forgeries ORDER BY 1").fetch_all(p).await.unwrap());
    assert!(methods.iter().all(|m| ["e4s", "mat", "sdxl"].contains(&m.as_str())), "{methods:?}");
    other.assert_store_consistent();
    // a bad release is refused with the reason
    let bad = env.data.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("train.json"),
        r#"[{"image_id": "sd_1", "caption": "x", "img_path": "images/missing.png", "mask_path": "m.png", "multilabel": [0]}]"#,
    )
    .unwrap();
    let o = other.mmtt(&["import", "mmtt-release", "--root", &bad.display().to_string()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("multilabel must be 21 values"), "{}", String::from_utf8_lossy(&o.stderr));
}
