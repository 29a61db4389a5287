//! Inference: a checkpoint directory (or a release `.bin`) loaded once, then probabilities for
//! batches of images, in evaluation mode (BatchNorm running statistics, no dropout).

use super::config::{FpnConfig, Preprocess};
use super::face_vit::{FaceVit, Init, Noise};
use super::weights;
use super::{FpnError, LABELS};
use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// `cpu` (burn's flex backend) or `cuda:N` (needs the `cuda` feature).
pub fn parse_device(spec: &str) -> Result<Device, FpnError> {
    match spec.trim() {
        "cpu" | "flex" | "" => Ok(Device::flex()),
        s if s.starts_with("cuda") => {
            let idx: usize = match s.strip_prefix("cuda").unwrap_or("") {
                "" => 0,
                rest => rest
                    .trim_start_matches(':')
                    .parse()
                    .map_err(|_| FpnError::Device(format!("`{s}`: write the device as cuda:N, for example cuda:0")))?,
            };
            cuda_device(idx, s)
        }
        other => Err(FpnError::Device(format!("unknown device `{other}`: use cpu or cuda:N"))),
    }
}

/// The CUDA device `idx`, started once per process with a one-element tensor: burn starts a
/// device on its first operation and panics when the driver or the device is missing, so the
/// start is made here, where that becomes an error naming the device and the fix.
#[cfg(feature = "cuda")]
fn cuda_device(idx: usize, s: &str) -> Result<Device, FpnError> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static STARTED: Mutex<Option<HashMap<usize, Result<(), String>>>> = Mutex::new(None);
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = started.get_or_insert_with(HashMap::new).entry(idx).or_insert_with(|| {
        std::panic::catch_unwind(|| {
            let device = Device::cuda(idx);
            Tensor::<1>::zeros([1], &device).into_data().try_to_vec::<f32>().map(|_| ()).map_err(|e| format!("{e:?}"))
        })
        .unwrap_or_else(|panic| {
            Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_else(|| "the CUDA runtime panicked".into()))
        })
    });
    match outcome {
        Ok(()) => Ok(Device::cuda(idx)),
        Err(why) => Err(FpnError::Device(format!(
            "`{s}` could not be started ({why}): this needs an NVIDIA driver (libcuda.so.1), NVRTC (libnvrtc.so) and a GPU numbered {idx} \
             (nvidia-smi lists them); use cpu, or run on a machine that has them"
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_idx: usize, s: &str) -> Result<Device, FpnError> {
    Err(FpnError::Device(format!(
        "`{s}` needs a build with CUDA support: cargo build --release --features cuda (this binary runs on cpu only)"
    )))
}

#[derive(Clone)]
pub struct Predictor {
    model: FaceVit,
    config: FpnConfig,
    preprocess: Preprocess,
    device: Device,
}

impl Predictor {
    /// Loads on the CPU.
    pub fn load(path: &Path) -> Result<Self, FpnError> {
        Self::load_on(path, None, &Device::flex())
    }

    /// Loads a checkpoint directory or a release `.bin` (whose shape comes from `config` when
    /// there is no `config.json` beside it) on `device`.
    pub fn load_on(path: &Path, config: Option<&FpnConfig>, device: &Device) -> Result<Self, FpnError> {
        let l = weights::load(path, config, device)?;
        Ok(Predictor { model: l.model.valid(), config: l.config, preprocess: l.preprocess, device: device.clone() })
    }

    pub(crate) fn from_model(model: &FaceVit, config: &FpnConfig, preprocess: &Preprocess, device: &Device) -> Self {
        Predictor { model: model.valid(), config: config.clone(), preprocess: preprocess.clone(), device: device.clone() }
    }

    pub fn config(&self) -> &FpnConfig {
        &self.config
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Logits for pixel values already preprocessed, `[B, 3, S, S]` flattened.
    pub fn logits(&self, pixels: Vec<f32>, batch: usize) -> Result<Vec<[f32; 21]>, FpnError> {
        let s = self.config.image_size;
        if pixels.len() != batch * 3 * s * s {
            return Err(FpnError::Data(format!("{} pixel values for {batch} images of 3x{s}x{s}", pixels.len())));
        }
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, s, s]), &self.device);
        let z = self.model.forward(&self.config, x, &mut Noise::off());
        rows(z)
    }

    /// Probabilities (sigmoid of the logits) for RGB images, in batches of 16.
    pub fn predict_images(&self, images: &[RgbImage]) -> Result<Vec<[f32; 21]>, FpnError> {
        let s = self.config.image_size;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(16) {
            let mut px = Vec::with_capacity(chunk.len() * 3 * s * s);
            for img in chunk {
                px.extend(self.preprocess.pixels(img, false));
            }
            let x = Tensor::<4>::from_data(TensorData::new(px, [chunk.len(), 3, s, s]), &self.device);
            out.extend(rows(sigmoid(self.model.forward(&self.config, x, &mut Noise::off())))?);
        }
        Ok(out)
    }

    pub fn predict_paths(&self, paths: &[PathBuf]) -> Result<Vec<[f32; 21]>, FpnError> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(16) {
            let imgs = chunk.iter().map(|p| Preprocess::open(p)).collect::<Result<Vec<_>, _>>()?;
            out.extend(self.predict_images(&imgs)?);
        }
        Ok(out)
    }
}

pub(crate) fn rows(z: Tensor<2>) -> Result<Vec<[f32; 21]>, FpnError> {
    let [b, k] = z.dims();
    if k != LABELS.len() {
        return Err(FpnError::Data(format!("the model gives {k} outputs, not {}", LABELS.len())));
    }
    let v: Vec<f32> = z.into_data().try_to_vec::<f32>().map_err(|e| FpnError::Device(format!("reading the outputs back: {e:?}")))?;
    Ok((0..b).map(|i| std::array::from_fn(|j| v[i * k + j])).collect())
}

/// Writes a freshly initialised model (seeded) as a checkpoint directory: the starting point
/// of the parity check with transformers and of training runs without `init`.
pub fn init_checkpoint(cfg: &FpnConfig, seed: u64, dir: &Path) -> Result<(), FpnError> {
    cfg.validate()?;
    let device = Device::flex();
    let model = FaceVit::new(cfg, &mut Init::new(seed, &device));
    weights::save_dir(&model, cfg, &Preprocess::for_config(cfg), dir)
}
