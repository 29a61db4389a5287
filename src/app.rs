//! The running context of one `mmtt` command: database pool, blob store, data directory.

use crate::storage::db::{self, cluster};
use crate::storage::store::{self, SharedStore, StoreConfig};
use anyhow::{Context, Result};
use sqlx::PgPool;
use std::path::{Path, PathBuf};

pub struct App {
    pub pool: PgPool,
    pub store: SharedStore,
    pub data_dir: PathBuf,
    lease: Option<cluster::ClusterLease>,
}

impl App {
    /// Opens the data directory, the local blob store and the database: `database_url`, or the
    /// private cluster under the data directory (started on demand).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Self> {
        Self::open_with(data_dir, database_url, &StoreConfig::default()).await
    }

    /// [`App::open`] with the blob store `store` names (an object store, `--store s3://...`).
    pub async fn open_with(data_dir: &Path, database_url: Option<&str>, store: &StoreConfig) -> Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let (dir, config) = (data_dir.to_path_buf(), store.clone());
        let store: SharedStore = tokio::task::spawn_blocking(move || store::open(&dir, &config)).await??;
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
