//! The ONNX Runtime itself, shared by the single-graph generators ([`super::onnx`]) and the
//! multi-graph pipelines ([`super::graph`]): where `libonnxruntime.so` is found, the process's one
//! environment, the device, and the session builder (threads, the CUDA provider or a clear error).
//! With [`super::graph`] and [`super::onnx`], the only code that touches ONNX Runtime.

use super::ForgeError;
use ort::session::Session;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

/// `libonnxruntime.so` of the PyPI wheel: `ORT_DYLIB_PATH`, the project's `.venv`, or `python3`'s.
pub fn find_onnxruntime() -> Result<PathBuf, ForgeError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(ForgeError::Model(format!("ORT_DYLIB_PATH={} does not exist", p.display()))) };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for venv in [PathBuf::from(".venv"), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv")] {
        if let Ok(rd) = std::fs::read_dir(venv.join("lib")) {
            for e in rd.flatten() {
                dirs.push(e.path().join("site-packages/onnxruntime/capi"));
            }
        }
    }
    for py in ["python3"] {
        if let Ok(out) = std::process::Command::new(py)
            .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"])
            .stderr(std::process::Stdio::null())
            .output()
            && out.status.success()
        {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi"));
        }
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut libs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
                .collect();
            libs.sort();
            if let Some(l) = libs.pop() {
                return Ok(l);
            }
        }
    }
    Err(ForgeError::Model(
        "ONNX Runtime was not found: run scripts/setup.sh (it installs onnxruntime==1.31.1 into .venv), \
         `pip install onnxruntime==1.31.1`, or set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1"
            .into(),
    ))
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static ort::environment::Environment, ForgeError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = find_onnxruntime().map_err(|e| e.to_string())?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
                .with_name("mmtt")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| ForgeError::Model(e.clone()))
}

/// Makes a session for `path` on `device` (CUDA or a clear error, never a silent CPU fallback);
/// every ONNX generator's sessions are made here.
pub fn session(path: &Path, device: Device, threads: usize) -> Result<Session, ForgeError> {
    let env = environment()?;
    let m = |e: ort::Error| ForgeError::Model(e.to_string());
    let mut builder = Session::builder(env).map_err(m)?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| ForgeError::Model(e.to_string()))?;
    }
    if device == Device::Cuda {
        use ort::ep::ExecutionProvider;
        if !ort::ep::CUDA::is_available().unwrap_or(false) {
            return Err(ForgeError::Model(
                "--device cuda was asked for, but this ONNX Runtime has no usable CUDA provider: install \
                 onnxruntime-gpu==1.31.1 (needs CUDA 13 and cuDNN 9) or use --device cpu"
                    .into(),
            ));
        }
        // TF32 off: forgeries must not depend on the card (with TF32 an H200 moved the tiny SDXL
        // pipeline's output by up to 0.12 on the 0..1 scale against the CPU)
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().with_tf32(false).build().error_on_failure()])
            .map_err(|e| ForgeError::Model(format!("the CUDA provider failed to start: {e}")))?;
    }
    builder.commit_from_file(path).map_err(|e| ForgeError::Model(format!("{}: {e}", path.display())))
}
