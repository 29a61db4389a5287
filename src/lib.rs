//! `mmtt`: the MMTT platform's library, under the `mmtt` binary (CLI, web app, workers). The
//! folders are the architecture; each part's doc says what it owns and what it may not touch
//! (see `ARCHITECTURE.md`):
//!
//! - [`storage`]: PostgreSQL, the blob store, the split rule. Depends on nothing else here.
//! - [`dataset`]: import, mask planning, annotation rules, statistics, exports (over `storage`).
//! - [`jobs`]: the job system and its workers (over `dataset` and `storage`).
//! - [`web`]: the web app (annotation, review, dashboard, admin console) over the parts above.
//! - [`devtools`]: demo, fixtures, synthetic data, benchmarks; nothing in the product uses it.
//! - [`app`]: one command's context (database pool, blob store, data directory).
//! - [`generate`]: `mmtt generate`, one forgery from files, without the database.
//! - [`explain`]: ForgeryTalker's explainer on the platform's side (input checks, mask files,
//!   the server's lazily loaded model), shared by `mmtt explain` and the explain page.
//! - [`predict`]: a trained stage-2 checkpoint over a split (the regions variants of Table 3,
//!   output folders), shared by `mmtt predict` and the Table 3 job.
//!
//! The command line sits on top, in the binary (`src/main.rs`, `src/cli/`): one module per
//! command group, parsing arguments and calling the functions above; nothing here calls it.

pub mod app;
pub mod dataset;
pub mod devtools;
pub mod explain;
pub mod generate;
pub mod jobs;
pub mod predict;
pub mod storage;
pub mod web;
