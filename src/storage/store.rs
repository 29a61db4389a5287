//! The content-addressed image store: every file is kept under the SHA-256 of its bytes.
//!
//! [`BlobStore`] is the small interface the rest of the platform uses; [`FsBlobStore`] keeps
//! blobs in a local folder, [`super::s3::S3BlobStore`] in S3-compatible object storage, and
//! [`open`] picks one from `--store`. Invariants:
//! - a blob is written to a temporary name, synced, then renamed: no file ever exists under its
//!   final name half-written;
//! - writing the same bytes twice is a no-op; a blob's key always equals the hash of its content;
//! - the database's `blobs` rows are inserted only after `put` returned, so every row has a file.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A SHA-256 content key, 64 lowercase hex digits. Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn of(bytes: &[u8]) -> Self {
        BlobKey(hex::encode(Sha256::digest(bytes)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a blob key: expected 64 lowercase hex digits (a SHA-256)")]
    BadKey(String),
    #[error("blob {0} is not in the store (the data directory is incomplete or another one is in use)")]
    Missing(BlobKey),
    #[error("blob {key} is corrupt: its content hashes to {actual}")]
    Corrupt { key: BlobKey, actual: BlobKey },
    #[error("blob store I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("object store {location}: {message}")]
    Remote { location: String, message: String },
}

impl FromStr for BlobKey {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(BlobKey(s.to_string()))
        } else {
            Err(StoreError::BadKey(s.to_string()))
        }
    }
}

/// Where image files live. Implementations must be safe to share between threads; their methods
/// block (the object store runs its requests on its own runtime), so async callers use them from
/// blocking threads or accept a short block, as with files.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` and returns their key (idempotent). When it returns, the blob is durable
    /// and verified (size and hash), so the caller may commit its `blobs` row.
    fn put(&self, bytes: &[u8]) -> Result<BlobKey, StoreError>;
    /// Reads a blob back, verifying its hash.
    fn get(&self, key: &BlobKey) -> Result<Vec<u8>, StoreError>;
    /// Whether the blob is present (not verified: [`BlobStore::get`] verifies).
    fn contains(&self, key: &BlobKey) -> Result<bool, StoreError>;
    /// The blob's size in bytes ([`StoreError::Missing`] when absent).
    fn size(&self, key: &BlobKey) -> Result<u64, StoreError>;
    /// A local file holding the blob's verified bytes, for readers that want a path (training
    /// data loaders): the store's own file, or a copy the object store keeps under its cache.
    fn local_file(&self, key: &BlobKey) -> Result<PathBuf, StoreError>;
    /// The store's own local file for the blob, where it has one (for people and scripts).
    fn local_path(&self, key: &BlobKey) -> Option<PathBuf>;
    /// Where the store is, for messages (`DIR` or `s3://bucket/prefix`).
    fn location(&self) -> String;
}

/// The store as the platform shares it.
pub type SharedStore = std::sync::Arc<dyn BlobStore>;

/// Blobs as files under `root/ab/cd/<hash>.png`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io { path: root.clone(), source })?;
        Ok(Self { root })
    }

    pub fn path_of(&self, key: &BlobKey) -> PathBuf {
        let h = key.as_str();
        self.root.join(&h[0..2]).join(&h[2..4]).join(format!("{h}.png"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<BlobKey, StoreError> {
        let key = BlobKey::of(bytes);
        let path = self.path_of(&key);
        if path.is_file() {
            return Ok(key);
        }
        let io = |source| StoreError::Io { path: path.clone(), source };
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.{}.tmp", key.as_str(), uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(key)
    }

    fn get(&self, key: &BlobKey) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key);
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StoreError::Missing(key.clone())
            } else {
                StoreError::Io { path: path.clone(), source }
            }
        })?;
        let actual = BlobKey::of(&bytes);
        if &actual != key {
            return Err(StoreError::Corrupt { key: key.clone(), actual });
        }
        Ok(bytes)
    }

    fn contains(&self, key: &BlobKey) -> Result<bool, StoreError> {
        Ok(self.path_of(key).is_file())
    }

    fn size(&self, key: &BlobKey) -> Result<u64, StoreError> {
        let path = self.path_of(key);
        std::fs::metadata(&path).map(|m| m.len()).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound { StoreError::Missing(key.clone()) } else { StoreError::Io { path, source } }
        })
    }

    fn local_file(&self, key: &BlobKey) -> Result<PathBuf, StoreError> {
        let path = self.path_of(key);
        if path.is_file() { Ok(path) } else { Err(StoreError::Missing(key.clone())) }
    }

    fn local_path(&self, key: &BlobKey) -> Option<PathBuf> {
        Some(self.path_of(key))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// How a command reaches its blobs: where (`--store`, default `DATA_DIR/blobs`) and the object
/// store's local cache.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: Option<super::s3::StoreUrl>,
    /// The object store's read-through cache bound.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: None, cache_bytes: 2 << 30 }
    }
}

/// Opens the store `config` names for the data directory `data_dir`.
pub fn open(data_dir: &Path, config: &StoreConfig) -> Result<SharedStore, StoreError> {
    use super::s3::{S3BlobStore, StoreUrl};
    Ok(match &config.url {
        None => std::sync::Arc::new(FsBlobStore::open(data_dir.join("blobs"))?),
        Some(StoreUrl::Local(dir)) => std::sync::Arc::new(FsBlobStore::open(dir)?),
        Some(StoreUrl::S3 { bucket, prefix }) => {
            std::sync::Arc::new(S3BlobStore::open(bucket, prefix, &data_dir.join("cache"), config.cache_bytes)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::open(dir.path()).unwrap();
        let k1 = s.put(b"hello").unwrap();
        let k2 = s.put(b"hello").unwrap();
        assert_eq!(k1, k2);
        assert_eq!(k1.as_str(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(s.get(&k1).unwrap(), b"hello");
        std::fs::write(s.path_of(&k1), b"tampered").unwrap();
        assert!(matches!(s.get(&k1), Err(StoreError::Corrupt { .. })));
        let missing: BlobKey = "00".repeat(32).parse().unwrap();
        assert!(matches!(s.get(&missing), Err(StoreError::Missing(_))));
        assert!("XYZ".parse::<BlobKey>().is_err());
    }
}
