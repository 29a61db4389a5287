//! Metrics of the paper's tables (spec sections 9 and 10).

pub mod bleu;
pub mod captions;
pub mod cider;
pub mod labels;
pub mod masks;
pub mod meteor;
pub mod report;
pub mod rouge;
pub mod tokenize;

/// Errors of the evaluators: each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}
