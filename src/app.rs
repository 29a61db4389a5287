//! The running context of one `mmtt` command: database pool, blob store, data directory.

use crate::storage::db::{self, cluster};
use crate::storage::store::{FsBlobStore, SharedStore};
use anyhow::{Context, Result};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct App {
    pub pool: PgPool,
    pub store: SharedStore,
    pub data_dir: PathBuf,
    lease: Option<cluster::ClusterLease>,
}

impl App {
    /// Opens the data directory and the database: `database_url`, or the private cluster under
    /// the data directory (started on demand).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let store: SharedStore = Arc::new(FsBlobStore::open(data_dir.join("blobs"))?);
        let (pool, lease) = match database_url {
            Some(url) if !url.is_empty() => (db::connect_url(url).await?, None),
            _ => {
                let c = cluster::Cluster::new(data_dir)?;
                let lease = tokio::task::spawn_blocking(move || cluster::ClusterLease::acquire(c)).await??;
                lease.cluster().ensure_database().await?;
                let pool = db::connect_with(lease.cluster().connect_options(cluster::DATABASE)).await?;
                (pool, Some(lease))
            }
        };
        Ok(App { pool, store, data_dir: data_dir.to_path_buf(), lease })
    }

    /// The context of a process that already holds its pool and store (the web server's): closing
    /// it closes the pool only.
    pub fn from_parts(pool: PgPool, store: SharedStore, data_dir: &Path) -> Self {
        App { pool, store, data_dir: data_dir.to_path_buf(), lease: None }
    }

    /// Closes the pool and, if this was the last command using the private cluster, stops it.
    pub async fn close(self) -> Result<()> {
        self.pool.close().await;
        if let Some(lease) = self.lease {
            tokio::task::spawn_blocking(move || lease.release()).await??;
        }
        Ok(())
    }
}
