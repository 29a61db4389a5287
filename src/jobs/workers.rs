//! Workers announce themselves in `workers` (host, pid, version, devices, execution providers,
//! models present, the forgery methods they can run) and heartbeat there; the console lists the
//! live ones with their current job and rate, and a job that no live worker can run says so
//! ([`super::JobView::blocked`]).

use super::forge::WorkerOptions;
use super::{JobError, runner};
use mmtt_generators::forge::onnx::Device;
use mmtt_generators::registry::Method;
use sqlx::PgPool;
use std::path::Path;

/// What a worker can do, as it announces it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub devices: Vec<String>,
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub methods: Vec<String>,
}

/// CUDA is usable here: an NVIDIA device node and ONNX Runtime's CUDA provider library beside
/// the ONNX Runtime this process would load.
pub fn cuda_available() -> bool {
    if !Path::new("/dev/nvidia0").exists() {
        return false;
    }
    match mmtt_generators::forge::onnx::find_onnxruntime() {
        Ok(lib) => lib.parent().map(|d| d.join("libonnxruntime_providers_cuda.so").is_file()).unwrap_or(false),
        Err(_) => false,
    }
}

/// This worker's capabilities: CUDA counts only when the worker runs with `--device cuda`.
pub fn capabilities(models_dir: &Path, device: Device) -> Capabilities {
    let cuda = device == Device::Cuda && cuda_available();
    let mut c = Capabilities { devices: vec!["cpu".into()], providers: vec!["CPUExecutionProvider".into()], ..Default::default() };
    if cuda {
        c.devices.push("cuda".into());
        c.providers.push("CUDAExecutionProvider".into());
    }
    for m in Method::ALL {
        match m.model_path() {
            None => c.methods.push(m.to_string()),
            Some(p) if models_dir.join(p).exists() => {
                c.models.push(p.to_string());
                c.methods.push(m.to_string());
            }
            Some(_) => {}
        }
    }
    c
}

pub async fn register(pool: &PgPool, o: &WorkerOptions) -> Result<(), JobError> {
    let c = capabilities(&o.models_dir, o.device);
    sqlx::query(
        "INSERT INTO workers (name, host, pid, version, devices, providers, models, methods, lease_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (name) DO UPDATE SET host = $2, pid = $3, version = $4, devices = $5, providers = $6, models = $7, methods = $8, \
           lease_seconds = $9, started_at = now(), heartbeat_at = now(), stopped_at = NULL, current_job = NULL, rate_per_s = NULL, done = 0",
    )
    .bind(&o.name)
    .bind(runner::hostname())
    .bind(std::process::id() as i32)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(&c.devices)
    .bind(&c.providers)
    .bind(&c.models)
    .bind(&c.methods)
    .bind(o.lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Heartbeat: the job it works on now and its rate (items done in the last minute).
pub async fn heartbeat(pool: &PgPool, name: &str) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE workers SET heartbeat_at = now(), \
           current_job = coalesce((SELECT id FROM jobs WHERE worker = $1 AND state = 'running' LIMIT 1), \
                                  (SELECT job_id FROM forge_items WHERE worker = $1 AND status = 'running' LIMIT 1)), \
           done = (SELECT count(*) FROM forge_items WHERE worker = $1 AND status = 'done'), \
           rate_per_s = (SELECT count(*)::float8 / 60 FROM forge_items WHERE worker = $1 AND status = 'done' \
                         AND updated_at > now() - interval '60 seconds') \
         WHERE name = $1",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn stopped(pool: &PgPool, name: &str) -> Result<(), JobError> {
    sqlx::query("UPDATE workers SET stopped_at = now(), current_job = NULL WHERE name = $1").bind(name).execute(pool).await?;
    Ok(())
}
