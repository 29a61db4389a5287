//! The job system: long-running work and the workers that run it. Today the forgery queue
//! ([`forge`]): items claimed under `FOR UPDATE SKIP LOCKED` and held under leases.

pub mod forge;

// TEMPORARY (branch i13-console): the job system's contract, stubbed until branch i13-jobs'
// `jobs core:` commit is merged; the merge replaces everything below.
#[allow(dead_code, clippy::all)]
mod contract_stub {
    use serde::{Deserialize, Serialize};
    use sqlx::PgPool;
    use uuid::Uuid;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum JobKind {
        Import,
        Masks,
        Forge,
        Export,
        Eval,
        Train,
    }
    impl std::str::FromStr for JobKind {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            serde_json::from_value(serde_json::Value::String(s.into())).map_err(|e| e.to_string())
        }
    }
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct JobError(pub String);
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    pub enum JobSpec {
        Import(serde_json::Map<String, serde_json::Value>),
        Masks(serde_json::Map<String, serde_json::Value>),
        Forge(serde_json::Map<String, serde_json::Value>),
        Export(serde_json::Map<String, serde_json::Value>),
        Eval(serde_json::Map<String, serde_json::Value>),
    }
    impl JobSpec {
        pub fn validate(&self) -> Result<(), JobError> {
            Ok(())
        }
    }
    #[derive(Debug, Default, Clone)]
    pub struct JobFilter {
        pub kind: Option<JobKind>,
        pub limit: Option<i64>,
    }
    #[derive(Debug, Clone, Copy)]
    pub enum JobAction {
        Cancel,
        Pause,
        Resume,
        RetryFailed,
    }
    #[derive(Debug, Clone, Serialize)]
    pub struct JobView {
        pub id: Uuid,
    }
    #[derive(Debug, Clone, Serialize)]
    pub struct WorkerView {
        pub name: String,
    }
    pub async fn submit(_: &PgPool, _: &JobSpec, _: &str) -> Result<Uuid, JobError> {
        Err(JobError("stub".into()))
    }
    pub async fn list(_: &PgPool, _: &JobFilter) -> Result<Vec<JobView>, JobError> {
        Ok(vec![])
    }
    pub async fn get(_: &PgPool, _: Uuid) -> Result<Option<JobView>, JobError> {
        Ok(None)
    }
    pub async fn control(_: &PgPool, _: Uuid, _: JobAction, _: &str) -> Result<JobView, JobError> {
        Err(JobError("stub".into()))
    }
    pub async fn live_workers(_: &PgPool) -> Result<Vec<WorkerView>, JobError> {
        Ok(vec![])
    }
}
pub use contract_stub::*;
