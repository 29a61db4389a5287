//! Storage: everything that persists, and nothing that decides what to store.
//!
//! - [`db`]: PostgreSQL (connection, embedded migrations, project settings, the private cluster).
//! - [`store`]: the content-addressed blob store; [`s3`]: the same in S3-compatible object storage;
//!   [`migrate`]: copying the store elsewhere and checking it against the `blobs` rows.
//! - [`split`]: the train/validation/test split, fixed when a source is stored.
//! - [`status`]: the stored statuses that several parts share, as enums.
//! - [`tables`]: the one writer of each table that several parts fill.
//!
//! Owns no workflow: it may not call into `dataset`, `jobs`, `web` or `devtools` (it uses only
//! the generators crate's plain types, such as a mask plan's purpose).

pub mod db;
pub mod migrate;
pub mod s3;
pub mod split;
pub mod status;
pub mod store;
pub mod tables;
