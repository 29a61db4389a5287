//! Shared test helpers: a fresh PostgreSQL database per test, the real `mmtt` binary, and the
//! real face photos (Debian's samples, and `MMTT_FACES_DIR` in CI).
#![allow(dead_code)]

pub mod admin;
pub mod browser;
pub mod netns;
pub mod s3;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project's `.venv` Python (scripts/setup.sh makes it: onnxruntime, onnx, pycocoevalcap, ...).
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.is_file(), "run scripts/setup.sh first: the tests need .venv (onnxruntime, onnx, pycocoevalcap, datasets)");
    venv
}

/// A file of `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// The server tests create their databases on (`MMTT_TEST_DATABASE_URL`, default the local one).
pub fn server_url() -> String {
    std::env::var("MMTT_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// A database created for one test and dropped afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

fn admin(sql: &str) {
    let url = format!("{}/postgres", server_url());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("tests need PostgreSQL at {url} (run scripts/setup.sh): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

impl TestDb {
    pub fn new() -> Self {
        let name = format!("mmtt_test_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("CREATE DATABASE {name}"));
        TestDb { url: format!("{}/{name}", server_url()), name }
    }

    /// Runs `f` on a pool connected to this database.
    pub fn query<T>(&self, f: impl AsyncFnOnce(&sqlx::PgPool) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
            let r = f(&pool).await;
            pool.close().await;
            r
        })
    }

    pub fn scalar_i64(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        self.query(async move |p| sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.expect("query"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A test's world: its database and data directory.
pub struct Env {
    pub db: TestDb,
    pub data: tempfile::TempDir,
    /// `--store` for every command (an object store), and the environment it needs.
    pub store: Option<String>,
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Self {
        Env { db: TestDb::new(), data: tempfile::tempdir().expect("tempdir"), store: None, vars: Vec::new() }
    }

    /// The `mmtt` command on this world's database, data directory and store.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mmtt"));
        c.arg("--data-dir").arg(self.data.path()).arg("--database-url").arg(&self.db.url);
        if let Some(s) = &self.store {
            c.arg("--store").arg(s);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn mmtt(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run mmtt")
    }

    /// Runs mmtt, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mmtt(args);
        assert!(
            out.status.success(),
            "mmtt {args:?} failed: {}\nstdout: {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs mmtt with `--json` output and parses its last line.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last line of {args:?} is not JSON ({e}): {out}"))
    }

    /// Where the blob store keeps the file of `hash`.
    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.data.path().join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(format!("{hash}.png"))
    }

    /// Every `blobs` row has its file, and the file hashes to the key.
    pub fn assert_store_consistent(&self) {
        let hashes: Vec<String> = self.db.query(async |p| sqlx::query_scalar("SELECT hash FROM blobs").fetch_all(p).await.expect("q"));
        for h in hashes {
            let path = self.blob_path(&h);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("blob row {h} has no file {}: {e}", path.display()));
            use sha2::Digest;
            assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), h, "blob {h} content does not match its key");
        }
        let orphan_refs = self.db.scalar_i64(
            "SELECT (SELECT count(*) FROM sources s LEFT JOIN blobs b ON b.hash = s.image_hash WHERE b.hash IS NULL) + \
             (SELECT count(*) FROM source_parts s LEFT JOIN blobs b ON b.hash = s.mask_hash WHERE b.hash IS NULL)",
        );
        assert_eq!(orphan_refs, 0);
    }
}

/// Debian's sample face photos (python3-skimage, python-matplotlib-data).
pub fn sample_faces() -> Vec<PathBuf> {
    let v: Vec<PathBuf> =
        ["/usr/lib/python3/dist-packages/skimage/data/astronaut.png", "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
    for p in &v {
        assert!(p.is_file(), "{} is missing: run scripts/setup.sh (installs python3-skimage and python-matplotlib-data)", p.display());
    }
    v
}

/// `MMTT_FACES_DIR` when set (CI sets it): must exist then. `None` when unset.
pub fn faces_dir() -> Option<PathBuf> {
    let d = std::env::var_os("MMTT_FACES_DIR")?;
    let d = PathBuf::from(d);
    assert!(d.is_dir(), "MMTT_FACES_DIR={} does not exist: point it at the real-face folder or unset it", d.display());
    Some(d)
}

pub fn copy_into(files: &[PathBuf], dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in files {
        std::fs::copy(f, dir.join(f.file_name().expect("name"))).expect("copy");
    }
}

/// `n` distinct photos: crops of the sample faces at different offsets.
pub fn variants(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let faces = sample_faces();
    for i in 0..n {
        let img = image::open(&faces[i % faces.len()]).expect("sample").into_rgb8();
        let off = 6 * (i / faces.len()) as u32;
        let (w, h) = img.dimensions();
        image::imageops::crop_imm(&img, off, off / 2, w - 40, h - 40).to_image().save(dir.join(format!("v{i:02}.png"))).expect("save");
    }
}

/// `sha256sum -c MANIFEST.sha256` passes in an export folder.
pub fn manifest_ok(dir: &Path) {
    let out = std::process::Command::new("sha256sum").arg("--quiet").arg("-c").arg("MANIFEST.sha256").current_dir(dir).output().unwrap();
    assert!(out.status.success(), "sha256sum -c in {}: {}", dir.display(), String::from_utf8_lossy(&out.stdout));
}
