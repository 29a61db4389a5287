//! The blob store in S3-compatible object storage, against a real server: SeaweedFS started by
//! the harness (`common::s3`) on loopback ports, with SigV4 credentials. The same blob-store suite
//! runs on the local store and on S3; the read-through cache serves without the server; a server
//! killed while an import writes leaves no `blobs` row without its object; import, masks, forge,
//! export and the annotation page work on S3 with an empty local blob folder; `store migrate`
//! is interrupted, resumed, checked (a corrupted and a deleted object are reported), and goes
//! back to a local folder.

mod common;

use common::Env;
use common::s3::SeaweedFs;
use mmtt::storage::s3::S3BlobStore;
use mmtt::storage::store::{BlobKey, BlobStore, FsBlobStore, StoreError};
use object_store::ObjectStoreExt;
use std::path::Path;
use std::time::{Duration, Instant};

const BUCKET: &str = "mmtt-test";

fn s3_store(s: &SeaweedFs, prefix: &str, cache: &Path) -> S3BlobStore {
    S3BlobStore::open_with(BUCKET, prefix, cache, 64 << 20, &s.env()).expect("the S3 store")
}

/// Writes raw bytes under a blob's object name, bypassing the store (damage).
fn overwrite_object(s: &SeaweedFs, prefix: &str, key: &BlobKey, bytes: &[u8]) {
    let client = mmtt::storage::s3::client(BUCKET, &s.env()).unwrap();
    let p = object_store::path::Path::from(format!("{prefix}/{}", mmtt::storage::s3::relative_name(key)));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if bytes.is_empty() {
            client.delete(&p).await.unwrap();
        } else {
            client.put(&p, object_store::PutPayload::from(bytes.to_vec())).await.unwrap();
        }
    });
}

/// What every blob store must do. `damage` replaces a stored blob's bytes behind the store's
/// back; `fresh` opens the same store anew (no cache).
fn suite(s: &dyn BlobStore, damage: &dyn Fn(&BlobKey, &[u8]), fresh: &dyn Fn() -> Box<dyn BlobStore>) {
    let a = b"\x89PNG not really, but bytes".to_vec();
    let k = s.put(&a).unwrap();
    assert_eq!(k, BlobKey::of(&a));
    assert_eq!(s.put(&a).unwrap(), k, "idempotent");
    assert_eq!(s.get(&k).unwrap(), a);
    assert_eq!(s.size(&k).unwrap(), a.len() as u64);
    assert!(s.contains(&k).unwrap());
    assert_eq!(std::fs::read(s.local_file(&k).unwrap()).unwrap(), a, "a local file with the blob's bytes");
    let missing = BlobKey::of(b"never stored");
    assert!(!s.contains(&missing).unwrap());
    assert!(matches!(s.get(&missing), Err(StoreError::Missing(_))), "missing is Missing");
    assert!(matches!(s.size(&missing), Err(StoreError::Missing(_))));
    assert!(matches!(s.local_file(&missing), Err(StoreError::Missing(_))));
    // many blobs, from several threads
    let many: Vec<Vec<u8>> = (0..24u32).map(|i| format!("blob {i} {}", "x".repeat(i as usize * 100)).into_bytes()).collect();
    std::thread::scope(|sc| {
        for chunk in many.chunks(6) {
            sc.spawn(move || {
                for b in chunk {
                    assert_eq!(s.put(b).unwrap(), BlobKey::of(b));
                }
            });
        }
    });
    for b in &many {
        assert_eq!(&s.get(&BlobKey::of(b)).unwrap(), b);
    }
    // damage is detected on read, never served
    let victim = BlobKey::of(&many[3]);
    let mut bad = many[3].clone();
    bad[0] ^= 0xff;
    damage(&victim, &bad);
    let cold = fresh();
    match cold.get(&victim) {
        Err(StoreError::Corrupt { key, actual }) => {
            assert_eq!(key, victim);
            assert_eq!(actual, BlobKey::of(&bad));
        }
        other => panic!("a damaged blob must be reported corrupt: {other:?}"),
    }
}

#[test]
fn the_blob_store_suite_passes_on_the_local_store_and_on_s3() {
    // local
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    let root = dir.path().to_path_buf();
    suite(&fs, &|k, b| std::fs::write(FsBlobStore::open(&root).unwrap().path_of(k), b).unwrap(), &|| {
        Box::new(FsBlobStore::open(&root).unwrap())
    });
    // S3
    let sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let cache = tempfile::tempdir().unwrap();
    let s3 = s3_store(&sw, "suite", cache.path());
    assert_eq!(s3.location(), "s3://mmtt-test/suite");
    let sw_ref = &sw;
    suite(&s3, &|k, b| overwrite_object(sw_ref, "suite", k, b), &|| {
        let c = tempfile::tempdir().unwrap().keep();
        Box::new(s3_store(sw_ref, "suite", &c))
    });
    // bad settings are reported at open, naming the fix
    let wrong: Vec<(String, String)> =
        sw.env().into_iter().map(|(k, v)| if k == "AWS_SECRET_ACCESS_KEY" { (k, "wrong".into()) } else { (k, v) }).collect();
    let e = S3BlobStore::open_with(BUCKET, "suite", cache.path(), 1 << 20, &wrong).err().expect("a wrong secret is refused");
    assert!(e.to_string().contains("check AWS_ENDPOINT, the credentials"), "{e}");
}

#[test]
fn the_read_through_cache_serves_when_the_server_is_gone() {
    let mut sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let cache = tempfile::tempdir().unwrap();
    let writer_cache = tempfile::tempdir().unwrap();
    let writer = s3_store(&sw, "cache", writer_cache.path());
    let (a, b) = (b"first image".to_vec(), b"second image".to_vec());
    let (ka, kb) = (writer.put(&a).unwrap(), writer.put(&b).unwrap());
    // a reader with a cold cache: the first read fetches, and fills the cache
    let reader = s3_store(&sw, "cache", cache.path());
    assert_eq!(reader.get(&ka).unwrap(), a);
    assert!(cache.path().join("blobs").join(mmtt::storage::s3::relative_name(&ka)).is_file());
    sw.kill();
    assert_eq!(reader.get(&ka).unwrap(), a, "served from the cache without the server");
    let t = Instant::now();
    match reader.get(&kb) {
        Err(StoreError::Remote { location, message }) => {
            assert_eq!(location, "s3://mmtt-test/cache");
            assert!(message.contains(kb.as_str()), "{message}");
        }
        other => panic!("an uncached blob without the server is a remote error: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(120));
}

fn s3_env(sw: &SeaweedFs, prefix: &str) -> Env {
    let mut env = Env::new();
    env.store = Some(format!("s3://{BUCKET}/{prefix}"));
    env.vars = sw.env();
    env
}

fn local_blob_files(env: &Env) -> usize {
    walk_files(&env.data.path().join("blobs"))
}

fn walk_files(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    walkdir_count(dir)
}

fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walkdir_count(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

fn blob_rows(env: &Env) -> i64 {
    env.db.query(async |p| sqlx::query_scalar::<_, i64>("SELECT count(*) FROM blobs").fetch_one(p).await.unwrap())
}

#[test]
fn the_platform_runs_on_s3_with_an_empty_local_blob_folder() {
    let sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let env = s3_env(&sw, "e2e");
    let photos = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &photos);
    env.ok(&["import", "photos", "--root", &photos.display().to_string()]);
    env.ok(&["masks", "plan", "--seed", "1"]);
    env.ok(&["forge", "--method", "patch-inpaint", "--count", "2", "--seed", "1", "--wait"]);
    assert_eq!(local_blob_files(&env), 0, "no image was written to the local folder");
    let rows = blob_rows(&env);
    assert!(rows > 4, "{rows} blobs");
    let v = env.json(&["store", "check", "--json"]);
    assert_eq!(v["check"]["ok"], rows, "{v}");
    // the annotation page serves the forged image from S3 (through the server's cache)
    common::admin::add_users(&env);
    let served = common::admin::serve(&env, &["--min-seconds", "0"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        common::admin::forged_image_is_served(&env, &served.base).await;
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        // accepted, so the export has them
        assert_eq!(common::admin::accept_all(&pool).await, 2);
    });
    drop(served);
    // an export reads its images from S3, byte for byte (the manifest lists the blob keys)
    let out = env.data.path().join("export");
    env.ok(&["export", "--format", "mmtt", "--out", &out.display().to_string()]);
    common::manifest_ok(&out);
    let manifest = std::fs::read_to_string(out.join("MANIFEST.sha256")).unwrap();
    assert!(manifest.lines().filter(|l| l.ends_with(".png")).count() >= 4, "{manifest}");
    assert_eq!(local_blob_files(&env), 0);
}

#[test]
fn a_server_killed_while_an_import_writes_leaves_no_row_without_its_object() {
    let mut sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let env = s3_env(&sw, "crash");
    let photos = env.data.path().join("photos");
    common::variants(&photos, 12);
    let mut child = env.command().args(["import", "photos", "--root", &photos.display().to_string()]).spawn().unwrap();
    // kill the server as soon as the first rows are in
    let deadline = Instant::now() + Duration::from_secs(120);
    // (the table appears once the import has migrated the fresh database)
    let rows_now = || env.db.query(async |p| sqlx::query_scalar::<_, i64>("SELECT count(*) FROM blobs").fetch_one(p).await.unwrap_or(0));
    while rows_now() == 0 {
        assert!(Instant::now() < deadline, "the import stored nothing");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sw.kill();
    let status = child.wait().unwrap();
    let rows_after_crash = blob_rows(&env);
    eprintln!("import exit {status}, {rows_after_crash} rows when the server died");
    // the server back on the same data: every row has its intact object
    sw.restart(None);
    sw.ready(BUCKET);
    let v = env.json(&["store", "check", "--json"]);
    assert_eq!(v["check"]["rows"], rows_after_crash, "{v}");
    assert_eq!(v["check"]["ok"], rows_after_crash, "a row without its object: {v}");
    // and the import completes when run again
    env.ok(&["import", "photos", "--root", &photos.display().to_string()]);
    let v = env.json(&["store", "check", "--json"]);
    assert_eq!(v["check"]["ok"], v["check"]["rows"]);
    assert!(blob_rows(&env) >= rows_after_crash);
}

#[test]
fn the_store_migrates_to_s3_resumably_is_checked_and_comes_back() {
    let sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let mut env = Env::new();
    env.vars = sw.env();
    let photos = env.data.path().join("photos");
    common::variants(&photos, 8);
    env.ok(&["import", "photos", "--root", &photos.display().to_string()]);
    let rows = blob_rows(&env);
    let to = format!("s3://{BUCKET}/migrated");
    // interrupted: killed once some objects are copied (one copy at a time)
    let mut child = env
        .command()
        .args(["store", "migrate", "--to", &to, "--threads", "1", "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let probe = s3_store(&sw, "migrated", cache.path());
    let keys: Vec<BlobKey> = env
        .db
        .query(async |p| sqlx::query_scalar::<_, String>("SELECT hash FROM blobs ORDER BY hash").fetch_all(p).await.unwrap())
        .iter()
        .map(|h| h.parse().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !probe.contains(&keys[0]).unwrap() {
        assert!(Instant::now() < deadline, "the migration copied nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let copied_before = keys.iter().filter(|k| probe.contains(k).unwrap()).count();
    assert!(copied_before < keys.len(), "the kill came after the whole copy ({copied_before} of {})", keys.len());
    // resumed: what is there is kept, the rest copied, all checked
    let v = env.json(&["store", "migrate", "--to", &to, "--json"]);
    assert_eq!(v["migrated"]["rows"], rows);
    assert_eq!(v["migrated"]["present"].as_u64().unwrap() as usize, copied_before, "{v}");
    assert_eq!(v["migrated"]["copied"].as_u64().unwrap() as usize, keys.len() - copied_before);
    assert_eq!(v["check"]["ok"], rows);
    // from now on on S3: damage is found by the check
    let mut on_s3 = Env { db: env.db, data: env.data, store: Some(to.clone()), vars: sw.env() };
    assert_eq!(on_s3.json(&["store", "check", "--json"])["check"]["ok"], rows);
    let (corrupt, gone) = (&keys[1], &keys[2]);
    overwrite_object(&sw, "migrated", corrupt, b"damaged bytes");
    overwrite_object(&sw, "migrated", gone, b"");
    // a fresh cache, so the check reads the server
    std::fs::remove_dir_all(on_s3.data.path().join("cache")).ok();
    let out = on_s3.mmtt(&["store", "check"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 corrupt") && text.contains(corrupt.as_str()), "{text}");
    assert!(text.contains("1 missing") && text.contains(gone.as_str()), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 blobs are missing, corrupt or unreadable"));
    // repaired from the local copy (a migration fills what is missing or the wrong size) ...
    let local = on_s3.data.path().join("blobs").display().to_string();
    on_s3.store = Some(local.clone());
    let v = on_s3.json(&["store", "migrate", "--to", &to, "--json"]);
    assert_eq!(v["migrated"]["copied"], 2, "the damaged and the deleted object: {v}");
    assert_eq!(v["check"]["ok"], rows);
    // ... and back from S3 to a new local folder
    on_s3.store = Some(to.clone());
    let back = on_s3.data.path().join("blobs-back");
    let v = on_s3.json(&["store", "migrate", "--to", &back.display().to_string(), "--json"]);
    assert_eq!(v["migrated"]["copied"], rows);
    assert_eq!(v["check"]["ok"], rows);
    let back_store = FsBlobStore::open(&back).unwrap();
    for k in &keys {
        assert_eq!(BlobKey::of(&back_store.get(k).unwrap()), *k);
    }
    on_s3.store = None;
    assert_eq!(on_s3.json(&["store", "check", "--json"])["check"]["ok"], rows, "the source is left as it was");
    // a bad destination is refused, naming the fix
    let out = on_s3.mmtt(&["store", "migrate", "--to", "s3://Bad_Bucket/x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not an S3 bucket name"));
}

#[test]
fn training_reads_its_images_from_s3() {
    let sw = SeaweedFs::start();
    sw.ready(BUCKET);
    let env = s3_env(&sw, "train");
    env.ok(&["seed-synthetic", "--samples", "40", "--state", "accepted"]);
    assert_eq!(local_blob_files(&env), 0);
    let cfg = env.data.path().join("fpn.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\nsteps = 6\nbatch_size = 2\nwarmup_steps = 1\ncheckpoint_every = 6\neval_every = 6\n[data]\nlimit = 8\n",
    )
    .unwrap();
    let v = env.json(&["train", "fpn", "--config", &cfg.display().to_string(), "--wait", "--json"]);
    assert!(Path::new(v["summary"]["best_dir"].as_str().expect("a checkpoint")).is_dir(), "{v}");
    // the loader's files came from the object store, verified, into this host's cache
    let files = walk_files(&env.data.path().join("cache").join("files"));
    assert!(files >= 8, "{files} images materialised from S3");
    assert_eq!(local_blob_files(&env), 0);
}
