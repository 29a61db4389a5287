//! One writer per table: the tables that several parts of the platform fill (import, planning,
//! the forge worker, the release importer, synthetic data) are inserted into only here, so a
//! column, a conflict rule or an invariant of such a table has one place to change.
//!
//! - [`mask_plans`]: planned masks (`dataset::masks`, `dataset::import::release`, synthetic data).
//! - [`forgeries`]: stored forgeries (the forge worker, the release importer, synthetic data).
//! - [`annotations`]: annotations and their revisions (the web app's annotation and review
//!   pages, the demo's generated captions, the release importer, synthetic data).
//! - [`annotation_tasks`]: rows are made by a trigger on `forgeries`; what is written here is
//!   the task state that goes with an annotation's writes. The web app's claim / heartbeat /
//!   draft / skip statements are its own (and so is marking a suggestion shown).
//! - [`assist`]: model-assisted annotation: `assist_models`, `suggestions` (the `assist` job)
//!   and the project's assistance settings (the console).
//!
//! Functions take a connection (usually a transaction's), never a pool: the caller decides what
//! is committed together.

pub mod annotation_tasks;
pub mod annotations;
pub mod assist;
pub mod forgeries;
pub mod mask_plans;
