//! The dataset's work: importing sources, planning masks, the annotation rules, statistics and
//! exports. Library functions over [`crate::storage`]; it may not reach into `jobs`, `web` or
//! `devtools`. Long runs report progress through the callbacks their callers (the job system,
//! the CLI) give them.

pub mod annotation;
pub mod assist;
pub mod assist_stats;
pub mod checks;
pub mod export;
pub mod import;
pub mod masks;
pub mod sources;
pub mod stats;
pub mod talker_training;
pub mod training;
