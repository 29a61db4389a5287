//! Storage: everything that persists. PostgreSQL (connection, migrations, settings, the private
//! cluster), the content-addressed blob store, and the train/validation/test split fixed when a
//! source is stored. Owns no workflow: it may not call into `dataset`, `jobs`, `web` or `devtools`.

pub mod db;
pub mod split;
pub mod store;
