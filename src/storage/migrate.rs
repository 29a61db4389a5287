//! Moving the blob store (`mmtt store migrate --to URL`) and checking it (`mmtt store check`).
//!
//! A migration copies the blob of every `blobs` row, in hash order, from the store in use to
//! the destination: each is read verified (SHA-256) and written verified (the destination's
//! `put`), and one the destination already holds with the row's size is skipped, so a killed
//! migration resumes where it stopped at the cost of one lookup per done blob. The final check
//! reads every row's blob back from the destination and hashes it; the migration succeeds only
//! when every row has an intact blob there. The source is left as it was: switching `--store`
//! is the operator's step, after the check.

use super::store::{BlobKey, BlobStore, StoreError};
use rayon::prelude::*;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every `blobs` row: (hash, byte size), in hash order.
pub async fn rows(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT hash, byte_size FROM blobs ORDER BY hash").fetch_all(pool).await
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    pub rows: u64,
    pub copied: u64,
    /// Already at the destination with the right size (a resumed migration).
    pub present: u64,
    pub bytes: u64,
}

/// A problem the check found, per row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub hash: String,
    pub problem: String,
}

/// The check of a store against the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    pub rows: u64,
    pub ok: u64,
    pub missing: Vec<Finding>,
    pub corrupt: Vec<Finding>,
    pub unreadable: Vec<Finding>,
}

impl Checked {
    pub fn clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty() && self.unreadable.is_empty()
    }
}

fn key_of(hash: &str) -> Result<BlobKey, StoreError> {
    hash.parse()
}

/// Copies every row's blob from `from` to `to` (see the module documentation); `tick` is
/// called once per row. The first failure stops it (rerun to resume).
pub fn migrate(
    rows: &[(String, i64)],
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    threads: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<Migrated, StoreError> {
    let (copied, present, bytes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| StoreError::Remote { location: to.location(), message: format!("starting the copy threads: {e}") })?;
    pool.install(|| {
        rows.par_iter().with_max_len(1).try_for_each(|(hash, size)| -> Result<(), StoreError> {
            let key = key_of(hash)?;
            match to.size(&key) {
                Ok(s) if s == *size as u64 => {
                    present.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) | Err(StoreError::Missing(_)) => {
                    let data = from.get(&key)?;
                    let put = to.put(&data)?;
                    debug_assert_eq!(put, key);
                    copied.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
            tick();
            Ok(())
        })
    })?;
    Ok(Migrated { rows: rows.len() as u64, copied: copied.into_inner(), present: present.into_inner(), bytes: bytes.into_inner() })
}

/// Reads every row's blob from `store` and hashes it; `tick` is called once per row.
pub fn check(rows: &[(String, i64)], store: &dyn BlobStore, threads: usize, tick: &(dyn Fn() + Sync)) -> Checked {
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
        Ok(p) => p,
        Err(e) => {
            return Checked {
                rows: rows.len() as u64,
                unreadable: vec![Finding { hash: String::new(), problem: format!("starting the check threads: {e}") }],
                ..Checked::default()
            };
        }
    };
    enum Problem {
        Missing,
        Corrupt,
        Unreadable,
    }
    let results: Vec<Result<(), (String, Problem, String)>> = pool.install(|| {
        rows.par_iter()
            .with_max_len(1)
            .map(|(hash, size)| {
                let r = match key_of(hash).and_then(|k| store.get(&k)) {
                    Ok(b) if b.len() as u64 == *size as u64 => Ok(()),
                    Ok(b) => Err((hash.clone(), Problem::Corrupt, format!("{} bytes, the row says {size}", b.len()))),
                    Err(StoreError::Missing(_)) => Err((hash.clone(), Problem::Missing, "no object".to_string())),
                    Err(e @ StoreError::Corrupt { .. }) => Err((hash.clone(), Problem::Corrupt, e.to_string())),
                    Err(e) => Err((hash.clone(), Problem::Unreadable, e.to_string())),
                };
                tick();
                r
            })
            .collect()
    });
    let mut c = Checked { rows: rows.len() as u64, ..Checked::default() };
    for r in results {
        match r {
            Ok(()) => c.ok += 1,
            Err((hash, kind, problem)) => {
                let f = Finding { hash, problem };
                match kind {
                    Problem::Missing => c.missing.push(f),
                    Problem::Corrupt => c.corrupt.push(f),
                    Problem::Unreadable => c.unreadable.push(f),
                }
            }
        }
    }
    c
}
