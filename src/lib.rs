//! `mmtt`: the MMTT platform's binary crate — CLI, storage, import and mask planning (later the
//! web app and jobs). See `ARCHITECTURE.md` for the map.
//!
//! - [`app`]: one command's context (database pool, blob store, data directory).
//! - [`db`]: PostgreSQL connection, migrations, settings; [`db::cluster`] the private cluster.
//! - [`store`]: the content-addressed image store.
//! - [`split`]: train/validation/test assignment, fixed when a source is stored.
//! - [`import`]: dataset readers and the parallel import pipeline.
//! - [`masks`]: mask planning, statistics and previews.
//! - [`fixtures`]: builds test/demo inputs (a CelebAMask-HQ-layout folder) from face photos.
//! - [`demo`]: the end-to-end demo.
//! - [`web`]: the annotation and QA web app; [`bench_web`] its load benchmark.
//! - [`export`]: dataset exports (hf, coco, webdataset, mmtt); [`stats`]: spec section 6 statistics and charts.
//! - [`bench`]: generator throughput; [`synthetic`]: bulk synthetic samples for benchmarks.

pub mod annotation;
pub mod app;
pub mod bench;
pub mod bench_web;
pub mod db;
pub mod demo;
pub mod export;
pub mod fixtures;
pub mod forge;
pub mod generate;
pub mod import;
pub mod masks;
pub mod split;
pub mod stats;
pub mod store;
pub mod synthetic;
pub mod web;
