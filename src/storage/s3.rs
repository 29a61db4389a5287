//! The blob store in S3-compatible object storage (`--store s3://bucket/prefix`), through the
//! Apache Arrow project's `object_store` crate; endpoint, region and credentials come from the
//! usual `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint).
//!
//! Object names are the local store's: `PREFIX/ab/cd/<sha256>.png`, so a store migrates between
//! the two by name. Invariants, as for [`super::store::FsBlobStore`]:
//! - `put` returns only once the object is stored and verified: its size by a `HEAD`, its bytes
//!   by the MD5 `ETag` of a single-part upload (or, where the server's ETag is not an MD5, by
//!   reading it back and hashing it); so a `blobs` row committed after `put` always has its
//!   object, and a failed or interrupted upload never gets a row;
//! - `get` verifies the SHA-256 of what it returns, from the server or from the cache.
//!
//! A bounded read-through cache on local disk (`DATA_DIR/cache/blobs`, least recently used
//! evicted) serves repeated reads (the annotation page's images) without a round trip;
//! `local_file` keeps the copies it hands out (training data loaders want paths) apart, under
//! `DATA_DIR/cache/files`, outside the bound. The client is async; this store runs it on a small
//! runtime of its own, so its blocking methods work from any thread, inside an async runtime or not.

use super::store::{BlobKey, BlobStore, StoreError};
use md5::{Digest as _, Md5};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where blobs are kept, parsed from `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local folder (the default: `DATA_DIR/blobs`).
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !ok {
                return Err(format!(
                    "`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens): give s3://BUCKET/PREFIX"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(format!("`{prefix}` is not a usable prefix: give s3://BUCKET/PREFIX with plain folder names"));
            }
            return Ok(StoreUrl::S3 { bucket: bucket.to_string(), prefix });
        }
        if s.contains("://") {
            return Err(format!("`{s}`: only s3://BUCKET/PREFIX object stores and local folders are supported"));
        }
        if s.is_empty() {
            return Err("an empty store location: give a folder or s3://BUCKET/PREFIX".into());
        }
        Ok(StoreUrl::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Local(p) => write!(f, "{}", p.display()),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// The relative name of a blob in either store: `ab/cd/<hash>.png`.
pub fn relative_name(key: &BlobKey) -> String {
    let h = key.as_str();
    format!("{}/{}/{h}.png", &h[0..2], &h[2..4])
}

/// A bounded folder of verified blob copies, least recently used evicted first.
struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

impl DiskCache {
    fn open(dir: PathBuf, max_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        let used = walk(&dir).iter().map(|(_, len, _)| len).sum();
        Ok(DiskCache { dir, max_bytes, used: AtomicU64::new(used) })
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.dir.join(relative_name(key))
    }

    /// The cached bytes, if present and intact (a damaged copy is dropped).
    fn get(&self, key: &BlobKey) -> Option<Vec<u8>> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        if &BlobKey::of(&bytes) != key {
            let _ = std::fs::remove_file(&path);
            self.used.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
            return None;
        }
        // recently used: eviction goes by modification time
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    fn insert(&self, key: &BlobKey, bytes: &[u8]) {
        if self.max_bytes == 0 || bytes.len() as u64 > self.max_bytes {
            return;
        }
        let path = self.path(key);
        if path.is_file() {
            return;
        }
        if write_atomically(&path, bytes).is_ok() {
            let used = self.used.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
            if used > self.max_bytes {
                self.evict();
            }
        }
    }

    /// Removes the least recently used copies until the cache is at 90 % of its bound.
    fn evict(&self) {
        let mut files = walk(&self.dir);
        files.sort_by_key(|(_, _, t)| *t);
        let mut used: u64 = files.iter().map(|(_, len, _)| len).sum();
        let target = self.max_bytes / 10 * 9;
        for (p, len, _) in files {
            if used <= target {
                break;
            }
            if std::fs::remove_file(&p).is_ok() {
                used -= len;
            }
        }
        self.used.store(used, Ordering::Relaxed);
    }
}

/// Every file under `dir`: (path, size, modified).
fn walk(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.into_path(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect()
}

/// Writes `bytes` under `path` by a temporary name and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Blobs in an S3-compatible bucket (see the module documentation).
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    location: String,
    prefix: String,
    rt: Option<tokio::runtime::Runtime>,
    cache: DiskCache,
    files: PathBuf,
}

/// The `object_store` client for `s3://bucket`, from the environment and then `overrides`
/// (`object_store`'s configuration keys, such as `aws_endpoint`).
pub fn client(bucket: &str, overrides: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, String> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    });
    for (k, v) in overrides {
        let key: object_store::aws::AmazonS3ConfigKey = k.to_ascii_lowercase().parse().map_err(|e| format!("{k}: {e}"))?;
        b = b.with_config(key, v.clone());
    }
    let env = |k: &str| {
        overrides
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
    };
    let no_credentials = env("AWS_ACCESS_KEY_ID").is_none()
        && env("AWS_WEB_IDENTITY_TOKEN_FILE").is_none()
        && env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_none();
    if no_credentials && env("AWS_SKIP_SIGNATURE").is_none() && env("AWS_ENDPOINT").is_some() {
        // a custom endpoint without credentials: anonymous requests, not the EC2 metadata probe
        b = b.with_skip_signature(true);
    }
    b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| e.to_string())
}

impl S3BlobStore {
    /// Opens `s3://bucket/prefix` with its cache under `cache_dir` (at most `cache_bytes`), and
    /// checks that the bucket answers (a `HEAD` of a name no blob has), so a wrong endpoint,
    /// credentials or bucket is reported at start-up, not at the first image.
    pub fn open(bucket: &str, prefix: &str, cache_dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(bucket, prefix, cache_dir, cache_bytes, &[])
    }

    /// [`S3BlobStore::open`] with configuration `overrides` over the environment (tests give the
    /// endpoint and credentials this way rather than through the process environment).
    pub fn open_with(
        bucket: &str,
        prefix: &str,
        cache_dir: &Path,
        cache_bytes: u64,
        overrides: &[(String, String)],
    ) -> Result<Self, StoreError> {
        let location = StoreUrl::S3 { bucket: bucket.into(), prefix: prefix.into() }.to_string();
        let remote = |message: String| StoreError::Remote { location: location.clone(), message };
        let store = client(bucket, overrides).map_err(|e| {
            remote(format!(
                "{e} (set AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; AWS_ALLOW_HTTP=true for http://)"
            ))
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mmtt-s3")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { path: cache_dir.to_path_buf(), source })?;
        let s = S3BlobStore {
            store,
            location: location.clone(),
            prefix: prefix.trim_matches('/').to_string(),
            rt: Some(rt),
            cache: DiskCache::open(cache_dir.join("blobs"), cache_bytes)?,
            files: cache_dir.join("files"),
        };
        let probe = s.object(".mmtt-probe");
        let st = s.store.clone();
        match s.run(async move { st.head(&probe).await })? {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(s),
            Err(e) => {
                Err(remote(format!("the bucket does not answer: {e} (check AWS_ENDPOINT, the credentials, and that the bucket exists)")))
            }
        }
    }

    fn object(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() { ObjectPath::from(rel) } else { ObjectPath::from(format!("{}/{rel}", self.prefix)) }
    }

    fn path_of(&self, key: &BlobKey) -> ObjectPath {
        self.object(&relative_name(key))
    }

    /// Runs a request on the store's own runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
        let rt = self.rt.as_ref().expect("the runtime lives as long as the store");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| StoreError::Remote { location: self.location.clone(), message: "the request was dropped".into() })
    }

    fn remote(&self, what: &str, key: &BlobKey, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::Missing(key.clone()),
            e => StoreError::Remote { location: self.location.clone(), message: format!("{what} {key}: {e}") },
        }
    }

    /// The object's bytes from the server, verified.
    fn fetch(&self, key: &BlobKey) -> Result<Vec<u8>, StoreError> {
        let (st, p) = (self.store.clone(), self.path_of(key));
        let bytes = self.run(async move { st.get(&p).await?.bytes().await })?.map_err(|e| self.remote("reading", key, e))?;
        let actual = BlobKey::of(&bytes);
        if &actual != key {
            return Err(StoreError::Corrupt { key: key.clone(), actual });
        }
        Ok(bytes.to_vec())
    }
}

impl Drop for S3BlobStore {
    fn drop(&mut self) {
        // may run inside an async context, where a runtime cannot block to shut down
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl BlobStore for S3BlobStore {
    fn put(&self, bytes: &[u8]) -> Result<BlobKey, StoreError> {
        let key = BlobKey::of(bytes);
        let len = bytes.len() as u64;
        // present with the right size: written (and verified) before
        if self.size(&key).ok() == Some(len) {
            return Ok(key);
        }
        let (st, p, payload) = (self.store.clone(), self.path_of(&key), PutPayload::from(bytes.to_vec()));
        let put = self.run(async move { st.put(&p, payload).await })?.map_err(|e| self.remote("writing", &key, e))?;
        let size = self.size(&key)?;
        if size != len {
            return Err(StoreError::Remote {
                location: self.location.clone(),
                message: format!("writing {key}: the server holds {size} bytes of {len}"),
            });
        }
        let md5 = hex::encode(Md5::digest(bytes));
        match put.e_tag.as_deref().map(|t| t.trim_matches('"').to_ascii_lowercase()) {
            Some(tag) if tag == md5 => {}
            // not an MD5 ETag (some servers, encryption): read it back
            Some(tag) if tag.len() != 32 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.fetch(&key)?;
            }
            other => {
                return Err(StoreError::Remote {
                    location: self.location.clone(),
                    message: format!("writing {key}: the server stored other bytes (ETag {other:?}, expected MD5 {md5})"),
                });
            }
        }
        self.cache.insert(&key, bytes);
        Ok(key)
    }

    fn get(&self, key: &BlobKey) -> Result<Vec<u8>, StoreError> {
        if let Some(b) = self.cache.get(key) {
            return Ok(b);
        }
        let bytes = self.fetch(key)?;
        self.cache.insert(key, &bytes);
        Ok(bytes)
    }

    fn contains(&self, key: &BlobKey) -> Result<bool, StoreError> {
        match self.size(key) {
            Ok(_) => Ok(true),
            Err(StoreError::Missing(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn size(&self, key: &BlobKey) -> Result<u64, StoreError> {
        let (st, p) = (self.store.clone(), self.path_of(key));
        Ok(self.run(async move { st.head(&p).await })?.map_err(|e| self.remote("looking up", key, e))?.size)
    }

    fn local_file(&self, key: &BlobKey) -> Result<PathBuf, StoreError> {
        let path = self.files.join(relative_name(key));
        if path.is_file() {
            return Ok(path);
        }
        let bytes = self.get(key)?;
        write_atomically(&path, &bytes).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        Ok(path)
    }

    fn local_path(&self, _key: &BlobKey) -> Option<PathBuf> {
        None
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_once() {
        assert_eq!("s3://mmtt-data/run1/".parse::<StoreUrl>(), Ok(StoreUrl::S3 { bucket: "mmtt-data".into(), prefix: "run1".into() }));
        assert_eq!("s3://mmtt-data".parse::<StoreUrl>().unwrap().to_string(), "s3://mmtt-data");
        assert_eq!("/data/blobs".parse::<StoreUrl>(), Ok(StoreUrl::Local("/data/blobs".into())));
        for bad in ["s3://A_B/x", "s3://ab", "s3://bucket/../x", "gs://bucket/x", ""] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert!(e.contains("give") || e.contains("supported"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().to_path_buf(), 100).unwrap();
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 30]).collect();
        let keys: Vec<BlobKey> = blobs.iter().map(|b| BlobKey::of(b)).collect();
        for (k, b) in keys.iter().zip(&blobs).take(3) {
            c.insert(k, b);
            std::thread::sleep(Duration::from_millis(20));
        }
        // the first is used again: the second is now the oldest
        assert_eq!(c.get(&keys[0]).as_deref(), Some(&blobs[0][..]));
        std::thread::sleep(Duration::from_millis(20));
        c.insert(&keys[3], &blobs[3]);
        assert!(c.get(&keys[1]).is_none(), "the least recently used went");
        assert!(c.get(&keys[0]).is_some() && c.get(&keys[3]).is_some());
        assert!(c.used.load(Ordering::Relaxed) <= 100);
        // a damaged copy is never served
        std::fs::write(c.path(&keys[0]), b"tampered").unwrap();
        assert!(c.get(&keys[0]).is_none());
    }
}
