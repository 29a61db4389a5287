//! Export integrity on resume (files an earlier run left are checked against what they should
//! be: corrupted ones rewritten, partial and stale ones removed, the manifest lists expected
//! hashes; an export killed with SIGKILL resumes to the uninterrupted run's files), and the
//! authors' release ids through import and every export format.

mod common;

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use common::python;

/// What the real client saw (scripts/read_exports.py).
fn read(kind: &str, dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .arg(common::script("read_exports.py"))
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

/// Stored truth per accepted forgery: (caption, SHA-256 of the mask's 0/255 pixels).
fn truth(env: &common::Env) -> HashMap<String, (String, String)> {
    let rows: Vec<(uuid::Uuid, String, String)> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.id, a.text, f.mask_hash FROM forgeries f JOIN annotations a ON a.forgery_id = f.id WHERE a.status = 'accepted'",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    rows.into_iter()
        .map(|(id, text, mask)| {
            let img = image::open(env.blob_path(&mask)).unwrap().to_luma8();
            let px: Vec<u8> = img.as_raw().iter().map(|v| if *v > 0 { 255 } else { 0 }).collect();
            (id.to_string(), (text, hex::encode(Sha256::digest(&px))))
        })
        .collect()
}

/// Every accepted sample read back once by the real client, with its caption and mask.
fn check_read_back(kind: &str, dir: &Path, truth: &HashMap<String, (String, String)>) {
    let seen = read(kind, dir);
    let mut n = 0;
    for part in seen.as_object().unwrap().values() {
        for r in part["rows"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let (text, mask) = truth.get(id).unwrap_or_else(|| panic!("{kind}: unknown sample {id}"));
            assert_eq!(r["text"].as_str().unwrap(), text, "{kind}: caption of {id}");
            assert_eq!(r["mask"].as_str().unwrap(), mask, "{kind}: mask of {id}");
            n += 1;
        }
    }
    assert_eq!(n, truth.len(), "{kind}: every accepted sample once");
}

/// Every file under `dir` (relative path -> SHA-256), hidden ones included.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            m.insert(rel, hex::encode(Sha256::digest(std::fs::read(e.path()).unwrap())));
        }
    }
    m
}

/// The export's temp names (`.NAME.part-PID`) under `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir).into_keys().filter(|rel| mmtt::dataset::export::is_temp_name(rel.rsplit('/').next().unwrap())).collect()
}

/// Flips bytes in the middle of a file, keeping its size.
fn corrupt_same_size(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    for v in &mut b[mid..mid + 16] {
        *v ^= 0x5a;
    }
    std::fs::write(path, &b).unwrap();
}

fn export(env: &common::Env, fmt: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let d = dir.display().to_string();
    let mut args = vec!["export", "--format", fmt, "--out", d.as_str(), "--json"];
    args.extend(extra);
    env.json(&args)
}

/// The first file (sorted) under `dir/sub` whose name ends with `ext`.
fn first_file(dir: &Path, sub: &str, ext: &str) -> PathBuf {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join(sub)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_str().unwrap().ends_with(ext)).collect();
    v.sort();
    v.into_iter().next().unwrap_or_else(|| panic!("no {ext} in {}", dir.join(sub).display()))
}

#[test]
fn a_resume_checks_every_file_it_keeps_and_removes_stale_ones() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "30", "--seed", "4", "--state", "accepted"]);
    let truth = truth(&env);
    let root = env.data.path().join("exports");
    for (fmt, extra, image_dir) in [
        ("hf", vec![], "train/images"),
        ("coco", vec![], "train"),
        ("mmtt", vec![], "images"),
        ("webdataset", vec!["--shard-size", "300000"], "train"),
    ] {
        let dir = root.join(fmt);
        let first = export(&env, fmt, &dir, &extra);
        assert_eq!(first["replaced_files"], 0, "{fmt}: {first}");
        let pristine = tree(&dir);
        let manifest = std::fs::read(dir.join("MANIFEST.sha256")).unwrap();
        // on disk: a same-size corruption and a truncation of data files (images, or shards),
        // a damaged generated file, partial files of a killed run, and a user's own file
        let ext = if fmt == "webdataset" { ".tar" } else { ".png" };
        let victim = first_file(&dir, image_dir, ext);
        corrupt_same_size(&victim);
        assert_eq!(std::fs::metadata(&victim).unwrap().len() as usize, std::fs::read(&victim).unwrap().len());
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join(image_dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(ext))
            .collect();
        names.sort();
        let truncated = names.last().unwrap().clone();
        assert_ne!(truncated, victim);
        let len = std::fs::metadata(&truncated).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len / 2).unwrap();
        corrupt_same_size(&dir.join("README.md"));
        std::fs::write(dir.join(image_dir).join(".x.part-123"), b"half an image").unwrap();
        std::fs::write(dir.join(".stats.json.part-77"), b"{").unwrap();
        let mut stale = vec![dir.join(image_dir).join(".x.part-123"), dir.join(".stats.json.part-77")];
        if fmt == "webdataset" {
            // a partial shard of a killed run, and a whole shard of another shard plan
            let part = dir.join("train").join(".train-000001.tar.part-4242");
            std::fs::write(&part, &std::fs::read(&victim).unwrap()[..1024]).unwrap();
            std::fs::copy(names[0].clone(), dir.join("train/train-000090.tar")).unwrap();
            stale.push(part);
            stale.push(dir.join("train/train-000090.tar"));
        }
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        // sha256sum -c now fails: the manifest lists what the files should be
        let o = std::process::Command::new("sha256sum").arg("--quiet").arg("-c").arg("MANIFEST.sha256").current_dir(&dir).output().unwrap();
        assert!(!o.status.success(), "{fmt}: the corruption is visible to sha256sum");

        let d = dir.display().to_string();
        let mut args = vec!["export", "--format", fmt, "--out", d.as_str(), "--json"];
        args.extend(extra.iter().copied());
        let o = env.mmtt(&args);
        assert!(o.status.success(), "{fmt} resume: {}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        let s: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
        println!("{fmt} resume: {s}\n{err}");
        assert_eq!(s["replaced_files"], 3, "{fmt}: the two data files and README.md: {s}");
        assert_eq!(s["removed_files"].as_u64().unwrap(), stale.len() as u64, "{fmt}: {s}");
        assert_eq!(
            s["verified_files"].as_u64().unwrap(),
            pristine.len() as u64 - 3,
            "{fmt}: every file but the manifest, the state and the lock: {s}"
        );
        assert_eq!(s["reused_files"].as_u64().unwrap() + 3, s["verified_files"].as_u64().unwrap());
        let victim_rel = victim.strip_prefix(&dir).unwrap().display().to_string();
        assert!(err.contains(&format!("{victim_rel} differs")), "{fmt}: the report names the corrupted file: {err}");
        assert!(err.contains("rewritten;") && err.contains("stale files removed"), "{err}");
        for p in &stale {
            assert!(!p.exists(), "{fmt}: {} removed", p.display());
        }
        assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine", "a user's file is left alone");
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        assert_eq!(std::fs::read(dir.join("MANIFEST.sha256")).unwrap(), manifest, "{fmt}: the manifest of an uninterrupted run");
        assert_eq!(tree(&dir), pristine, "{fmt}: every file as an uninterrupted run wrote it");
        common::manifest_ok(&dir);
        check_read_back(fmt, &dir, &truth);
        // a resume over a complete export changes nothing
        let again = export(&env, fmt, &dir, &extra);
        assert_eq!((again["replaced_files"].as_u64(), again["removed_files"].as_u64()), (Some(0), Some(0)), "{again}");
        assert_eq!(tree(&dir), pristine);
    }

    // --link: an exported image is the store's file; damaging it damages the blob, which the
    // resume names instead of passing it on
    let l = root.join("link");
    export(&env, "hf", &l, &["--link"]);
    let victim = first_file(&l, "train/images", ".png");
    let key = {
        let m = std::fs::read_to_string(l.join("MANIFEST.sha256")).unwrap();
        let rel = victim.strip_prefix(&l).unwrap().display().to_string();
        m.lines().find(|x| x.ends_with(&format!("  {rel}"))).unwrap().split_once("  ").unwrap().0.to_string()
    };
    let blob = env.blob_path(&key);
    let good = std::fs::read(&blob).unwrap();
    corrupt_same_size(&victim);
    assert_ne!(std::fs::read(&blob).unwrap(), good, "a hard link shares the store's file");
    let o = env.mmtt(&["export", "--format", "hf", "--out", &l.display().to_string(), "--link"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("blob store is damaged") && err.contains(&key), "{err}");
    assert!(!l.join("MANIFEST.sha256").exists(), "no manifest beside a damaged export");
    std::fs::write(&blob, &good).unwrap();
    assert_eq!(export(&env, "hf", &l, &["--link"])["replaced_files"], 0, "the store repaired, the link is right again");
    common::manifest_ok(&l);
    env.assert_store_consistent();
}

/// Starts `mmtt export` in the background.
fn spawn_export(env: &common::Env, fmt: &str, dir: &Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .arg("--data-dir")
        .arg(env.data.path())
        .arg("--database-url")
        .arg(&env.db.url)
        .args(["export", "--format", fmt, "--out", &dir.display().to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_export_killed_midway_resumes_to_the_uninterrupted_files() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "40", "--seed", "11", "--state", "accepted"]);
    let truth = truth(&env);
    // the forged image of the last train sample: while the export reads it from a FIFO, the
    // export cannot finish, so the kill always lands midway
    let (last, hash): (uuid::Uuid, String) = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.id, f.image_hash FROM forgeries f WHERE f.split = 'train' \
             AND (SELECT count(*) FROM forgeries g WHERE f.image_hash IN (g.image_hash, g.mask_hash, g.original_hash)) = 1 ORDER BY f.id DESC LIMIT 1",
        )
        .fetch_one(p)
        .await
        .unwrap()
    });
    let blob = env.blob_path(&hash);
    let aside = blob.with_extension("aside");
    let root = env.data.path().join("exports");
    for (fmt, extra) in [("webdataset", vec!["--shard-size", "300000"]), ("hf", vec![]), ("mmtt", vec![])] {
        let reference = root.join(format!("{fmt}-ref"));
        export(&env, fmt, &reference, &extra);
        let dir = root.join(fmt);
        std::fs::rename(&blob, &aside).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&blob).status().unwrap().success());
        let mut child = spawn_export(&env, fmt, &dir, &extra);
        // wait until the export has finished files and is stuck on the FIFO's sample
        let start = std::time::Instant::now();
        let stuck = loop {
            assert!(child.try_wait().unwrap().is_none(), "{fmt}: the export cannot end while it waits on the FIFO");
            let t = if dir.exists() { tree_names(&dir) } else { vec![] };
            let done = t.iter().filter(|n| n.ends_with(".tar") || n.ends_with(".png")).count();
            let partial = t.iter().filter(|n| mmtt::dataset::export::is_temp_name(n.rsplit('/').next().unwrap())).count();
            // webdataset: the FIFO's shard is a partial file; hf/mmtt: the other images are done
            let ready = if fmt == "webdataset" { partial > 0 && done > 0 } else { done >= 2 * truth.len() / 3 };
            if ready {
                break t;
            }
            assert!(start.elapsed().as_secs() < 300, "{fmt}: the export made no progress: {t:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::fs::remove_file(&blob).unwrap();
        std::fs::rename(&aside, &blob).unwrap();
        println!("{fmt}: killed with {} files written", stuck.len());
        assert!(!dir.join("MANIFEST.sha256").exists(), "{fmt}: no manifest beside an unfinished export");
        let left = temp_files(&dir);
        if fmt == "webdataset" {
            assert!(!left.is_empty(), "the FIFO's shard was being written: {stuck:?}");
        }
        let s = export(&env, fmt, &dir, &extra);
        println!("{fmt} resume: {s}");
        assert_eq!(s["removed_files"].as_u64().unwrap(), left.len() as u64, "{fmt}: partial files of the killed run: {left:?} {s}");
        assert!(s["reused_files"].as_u64().unwrap() > 0, "{s}");
        assert!(temp_files(&dir).is_empty(), "{fmt}: no stray temp files");
        assert_eq!(
            std::fs::read(dir.join("MANIFEST.sha256")).unwrap(),
            std::fs::read(reference.join("MANIFEST.sha256")).unwrap(),
            "{fmt}: same manifest"
        );
        assert_eq!(tree(&dir), tree(&reference), "{fmt}: same files, same bytes");
        common::manifest_ok(&dir);
        if fmt != "mmtt" {
            check_read_back(fmt, &dir, &truth);
        }
        assert!(
            tree(&dir).keys().any(|k| k.contains(&last.simple().to_string())) || fmt == "webdataset",
            "{fmt}: the FIFO's sample is exported"
        );
    }
}

fn tree_names(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_str().unwrap().to_string())
        .collect()
}

/// A release-format fixture: (split file, image_id, instance_id, caption, multilabel).
fn write_release(dir: &Path, records: &[(&str, &str, serde_json::Value, &str, [u8; 21])]) {
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    std::fs::create_dir_all(dir.join("msks")).unwrap();
    let mut files: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for (n, (file, id, inst, caption, labels)) in records.iter().enumerate() {
        let n = n as u32;
        let img = image::RgbImage::from_fn(96, 96, |x, y| image::Rgb([(x * 2 + n * 17) as u8, (y * 2) as u8, (x + y + n * 31) as u8]));
        img.save(dir.join("imgs").join(format!("{id}.png"))).unwrap();
        let m = image::GrayImage::from_fn(96, 96, |x, y| {
            image::Luma([if (20 + n..60 + n).contains(&x) && (30..70).contains(&y) { 255 } else { 0 }])
        });
        m.save(dir.join("msks").join(format!("{id}.png"))).unwrap();
        files.entry(file).or_default().push(serde_json::json!({
            "image_id": id, "instance_id": inst, "caption": caption,
            "img_path": format!("imgs/{id}.png"), "mask_path": format!("msks/{id}.png"), "multilabel": labels,
        }));
    }
    for (f, v) in files {
        std::fs::write(dir.join(f), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

/// (image_id, instance_id) per sample id, from what the real client read.
fn ids_seen(kind: &str, dir: &Path) -> HashMap<String, (String, serde_json::Value)> {
    let seen = read(kind, dir);
    let mut m = HashMap::new();
    for part in seen.as_object().unwrap().values() {
        for r in part["rows"].as_array().unwrap() {
            let prev =
                m.insert(r["id"].as_str().unwrap().to_string(), (r["image_id"].as_str().unwrap().to_string(), r["instance_id"].clone()));
            assert!(prev.is_none());
        }
    }
    m
}

#[test]
fn the_authors_ids_survive_import_and_every_export() {
    let env = common::Env::new();
    // the platform's own samples beside the imported ones: their generated ids must not collide
    env.ok(&["seed-synthetic", "--samples", "12", "--seed", "2", "--state", "accepted"]);
    let mut labels = [0u8; 21];
    labels[3] = 1;
    let cap = "The left eye is blurred and its eyelid lacks texture compared with the right eye.";
    let inputs: Vec<(&str, &str, serde_json::Value, &str, [u8; 21])> = vec![
        ("train.json", "sd_000017", 17.into(), cap, labels),
        ("train.json", "mat_hq_0042", 0.into(), cap, labels),
        ("train.json", "e4s_12_34", 1.into(), cap, labels),
        ("train.json", "faceapp-7", 2.into(), cap, labels),
        ("val.json", "sd_000018", 5.into(), cap, labels),
        ("val.json", "mat_hq_0043", 0.into(), cap, labels),
        ("test.json", "e4s_99_1", 40321.into(), cap, labels),
        ("test.json", "inpaint_3", 3.into(), cap, labels),
    ];
    let rel = env.data.path().join("release");
    write_release(&rel, &inputs);
    let s = env.json(&["import", "mmtt-release", "--root", &rel.display().to_string(), "--json"]);
    assert_eq!(s["imported"], 8, "{s}");
    let want: HashMap<String, serde_json::Value> = inputs.iter().map(|r| (r.1.to_string(), r.2.clone())).collect();
    // sample id -> authors' image id, from the database
    let imported: HashMap<String, String> = env
        .db
        .query(async |p| {
            sqlx::query_as::<_, (uuid::Uuid, String)>("SELECT id, release_image_id FROM forgeries WHERE release_image_id IS NOT NULL")
                .fetch_all(p)
                .await
                .unwrap()
        })
        .into_iter()
        .map(|(id, i)| (id.to_string(), i))
        .collect();
    assert_eq!(imported.len(), 8);
    let root = env.data.path().join("exports");
    let mut first_mmtt = None;
    for (fmt, extra) in [("mmtt", vec![]), ("hf", vec![]), ("coco", vec![]), ("webdataset", vec!["--shard-size", "300000"])] {
        let dir = root.join(fmt);
        assert_eq!(export(&env, fmt, &dir, &extra)["samples"], 20);
        let ids = ids_seen(fmt, &dir);
        assert_eq!(ids.len(), 20, "{fmt}");
        let mut per_image: HashSet<&str> = HashSet::new();
        let imported_instances: HashSet<i64> = want.values().filter_map(|v| v.as_i64()).collect();
        for (sample, (image_id, instance_id)) in &ids {
            assert!(per_image.insert(image_id), "{fmt}: image id {image_id} twice");
            match imported.get(sample) {
                Some(theirs) => {
                    assert_eq!(image_id, theirs, "{fmt}: the authors' image id");
                    assert_eq!(instance_id, &want[theirs], "{fmt}: the authors' instance id of {theirs}");
                }
                None => {
                    assert!(image_id.ends_with(&uuid::Uuid::parse_str(sample).unwrap().simple().to_string()), "{fmt}: {image_id}");
                    let n = instance_id.as_i64().unwrap_or_else(|| panic!("{fmt}: {instance_id}"));
                    assert!(!imported_instances.contains(&n), "{fmt}: generated instance id {n} equals an imported one");
                }
            }
        }
        if fmt == "mmtt" {
            for theirs in imported.values() {
                assert!(dir.join("images").join(format!("{theirs}.png")).is_file(), "{theirs}");
                assert!(dir.join("masks").join(format!("{theirs}.png")).is_file(), "{theirs}");
            }
            first_mmtt = Some(ids);
        } else {
            assert_eq!(Some(&ids), first_mmtt.as_ref(), "{fmt}: the same ids as the mmtt export");
        }
    }
    // the round trip: the mmtt export imported into a fresh database and exported again keeps
    // every id, the platform's generated ones included
    let other = common::Env::new();
    let mmtt_dir = root.join("mmtt");
    let s = other.json(&["import", "mmtt-release", "--root", &mmtt_dir.display().to_string(), "--json"]);
    assert_eq!(s["imported"], 20, "{s}");
    let back = other.data.path().join("back");
    export(&other, "mmtt", &back, &[]);
    let by_image = |dir: &Path| -> BTreeMap<String, (serde_json::Value, String)> {
        let mut m = BTreeMap::new();
        for f in ["train.json", "val.json", "test.json"] {
            let Ok(b) = std::fs::read(dir.join(f)) else { continue };
            for r in serde_json::from_slice::<Vec<serde_json::Value>>(&b).unwrap() {
                m.insert(r["image_id"].as_str().unwrap().to_string(), (r["instance_id"].clone(), format!("{f}:{}", r["caption"])));
            }
        }
        m
    };
    assert_eq!(by_image(&back), by_image(&mmtt_dir), "image ids, instance ids, splits and captions after a round trip");
    // the same release imported into the database it came from: its own samples are recognised
    let s = env.json(&["import", "mmtt-release", "--root", &mmtt_dir.display().to_string(), "--json"]);
    assert_eq!((s["imported"].as_u64(), s["already_present"].as_u64()), (Some(0), Some(20)), "{s}");
    // an image id that cannot name a file is refused with the reason
    let bad = env.data.path().join("bad");
    write_release(&bad, &[("train.json", "ok_1", 1.into(), cap, labels)]);
    let mut v: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(bad.join("train.json")).unwrap()).unwrap();
    v[0]["image_id"] = "../../etc/x".into();
    std::fs::write(bad.join("train.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let o = env.mmtt(&["import", "mmtt-release", "--root", &bad.display().to_string()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("an image_id names the exported files"), "{}", String::from_utf8_lossy(&o.stderr));
}
