//! ONNX Runtime generators, each described by a manifest in `generators/manifests/`.
//!
//! - The runtime is `libonnxruntime.so` from the PyPI `onnxruntime` wheel, loaded dynamically:
//!   `ORT_DYLIB_PATH`, else the project's `.venv`, else the `onnxruntime` package of `python3`
//!   ([`find_onnxruntime`], in [`super::runtime`]). One environment per process.
//! - A manifest names the model file, its inputs and outputs (names, shapes, roles), the image
//!   value range, the mask convention (`keep`: 1 = known, MAT; `fill`: 1 = hole, LaMa), whether
//!   holes are zeroed in the image input, and the output range (`auto` detects 0..1 or 0..255).
//!   A model whose inputs or outputs differ from its manifest is refused with both listed.
//! - `--device cuda` uses the CUDA provider or fails saying why: never a silent CPU fallback.
//! - MAT's latent `z` is drawn from the item's seed with SplitMix64 + Box-Muller
//!   ([`super::SplitMix64::normals`]), so a Python reference reproduces it exactly.

pub use super::runtime::{Device, find_onnxruntime};
use super::{ForgeError, ForgeInput, Generator, SplitMix64, check_input};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The manifests shipped with mmtt, by method name.
pub const BUILTIN_MANIFESTS: [(&str, &str); 2] =
    [("mat", include_str!("../../manifests/mat.json")), ("lama", include_str!("../../manifests/lama.json"))];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub role: String,
    pub shape: Vec<i64>,
    pub dtype: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskConvention {
    /// 1 = known pixel, 0 = hole (MAT).
    Keep,
    /// 1 = hole to fill (LaMa, IOPaint).
    Fill,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OutputRange {
    Fixed([f32; 2]),
    /// `"auto"`: 0..255 when the output's maximum exceeds 1.5, else 0..1.
    Auto(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub license: String,
    pub model_file: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub image_range: [f32; 2],
    pub mask_convention: MaskConvention,
    pub zero_holes: bool,
    pub output_range: OutputRange,
    pub latent: Option<String>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, ForgeError> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| ForgeError::Input(format!("bad generator manifest: {e}")))?;
        for role in ["image", "mask"] {
            if !m.inputs.iter().any(|i| i.role == role) {
                return Err(ForgeError::Input(format!("manifest {} has no input with role `{role}`", m.name)));
            }
        }
        if let OutputRange::Auto(s) = &m.output_range
            && s != "auto"
        {
            return Err(ForgeError::Input(format!("manifest {}: output_range must be [lo, hi] or \"auto\"", m.name)));
        }
        if m.outputs.len() != 1 {
            return Err(ForgeError::Input(format!("manifest {} must name exactly one output", m.name)));
        }
        Ok(m)
    }

    pub fn builtin(name: &str) -> Option<Manifest> {
        BUILTIN_MANIFESTS.iter().find(|(n, _)| *n == name).and_then(|(_, t)| Manifest::parse(t).ok())
    }

    fn input(&self, role: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|i| i.role == role)
    }
}

fn sha256_file(p: &Path) -> Result<String, ForgeError> {
    let bytes = std::fs::read(p).map_err(|e| ForgeError::Model(format!("cannot read model {}: {e}", p.display())))?;
    Ok(hex_string(&Sha256::digest(&bytes)))
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An ONNX generator: one session, created once and reused.
pub struct OnnxGenerator {
    manifest: Manifest,
    manifest_sha256: String,
    model_sha256: String,
    model_path: PathBuf,
    device: Device,
    threads: usize,
    session: Session,
    method: &'static str,
}

fn describe(specs: &[(String, String, Vec<i64>)]) -> String {
    specs.iter().map(|(n, t, s)| format!("{n}: {t} {s:?}")).collect::<Vec<_>>().join(", ")
}

impl OnnxGenerator {
    /// Loads `manifest.model_file` from `models_dir` and checks it against the manifest.
    pub fn load(manifest: Manifest, manifest_text: &str, models_dir: &Path, device: Device, threads: usize) -> Result<Self, ForgeError> {
        let model_path = models_dir.join(&manifest.model_file);
        if !model_path.is_file() {
            return Err(ForgeError::Model(format!(
                "model file {} for `{}` is missing: put the ONNX export there (see generators/manifests/{}.json)",
                model_path.display(),
                manifest.name,
                manifest.name
            )));
        }
        let session = super::runtime::session(&model_path, device, threads)?;
        let actual = |outlets: &[ort::value::Outlet]| -> Vec<(String, String, Vec<i64>)> {
            outlets
                .iter()
                .map(|o| {
                    let (ty, shape) = match o.dtype() {
                        ort::value::ValueType::Tensor { ty, shape, .. } => {
                            (format!("{ty:?}").to_lowercase(), shape.iter().copied().collect())
                        }
                        other => (format!("{other:?}"), vec![]),
                    };
                    (o.name().to_string(), ty, shape)
                })
                .collect()
        };
        let want = |specs: &[TensorSpec]| -> Vec<(String, String, Vec<i64>)> {
            specs.iter().map(|s| (s.name.clone(), s.dtype.clone(), s.shape.clone())).collect()
        };
        let compatible = |a: &[(String, String, Vec<i64>)], w: &[(String, String, Vec<i64>)]| {
            a.len() == w.len()
                && w.iter().all(|(n, t, s)| {
                    a.iter().any(|(an, at, as_)| {
                        an == n && at == t && as_.len() == s.len() && as_.iter().zip(s).all(|(x, y)| *x == -1 || x == y)
                    })
                })
        };
        let (ai, ao) = (actual(session.inputs()), actual(session.outputs()));
        let (wi, wo) = (want(&manifest.inputs), want(&manifest.outputs));
        if !compatible(&ai, &wi) || !compatible(&ao, &wo) {
            return Err(ForgeError::Model(format!(
                "{} does not match the `{}` manifest.\n  model inputs:     {}\n  manifest inputs:  {}\n  model outputs:    {}\n  manifest outputs: {}",
                model_path.display(),
                manifest.name,
                describe(&ai),
                describe(&wi),
                describe(&ao),
                describe(&wo)
            )));
        }
        let method: &'static str = match manifest.name.as_str() {
            "mat" => "mat",
            "lama" => "lama",
            other => Box::leak(other.to_string().into_boxed_str()),
        };
        Ok(OnnxGenerator {
            manifest_sha256: hex_string(&Sha256::digest(manifest_text.as_bytes())),
            model_sha256: sha256_file(&model_path)?,
            model_path,
            manifest,
            device,
            threads,
            session,
            method,
        })
    }

    /// Loads a built-in manifest's model from `models_dir`.
    pub fn load_builtin(name: &str, models_dir: &Path, device: Device, threads: usize) -> Result<Self, ForgeError> {
        let (_, text) = BUILTIN_MANIFESTS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ForgeError::Input(format!("no ONNX generator named `{name}` (known: mat, lama)")))?;
        Self::load(Manifest::parse(text)?, text, models_dir, device, threads)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The generated image as floats in 0..255 (HWC), before rounding: what parity tests compare.
    pub fn run_raw(&mut self, input: &ForgeInput<'_>) -> Result<(u32, u32, Vec<f32>), ForgeError> {
        check_input(input)?;
        let m = &self.manifest;
        let img_spec = m.input("image").expect("checked at parse");
        let mask_spec = m.input("mask").expect("checked at parse");
        let (w, h) = input.target.dimensions();
        let want = (img_spec.shape[3], img_spec.shape[2]);
        if (want.0 > 0 && want.0 != w as i64) || (want.1 > 0 && want.1 != h as i64) {
            return Err(ForgeError::Input(format!("`{}` takes {}x{} images, got {w}x{h}", m.name, want.0, want.1)));
        }
        let (lo, hi) = (m.image_range[0], m.image_range[1]);
        let (wu, hu) = (w as usize, h as usize);
        let plane = wu * hu;
        let mut image = ndarray::Array4::<f32>::zeros((1, 3, hu, wu));
        let mut mask = ndarray::Array4::<f32>::zeros((1, 1, hu, wu));
        {
            let img_buf = image.as_slice_mut().expect("a new array is contiguous");
            let mask_buf = mask.as_slice_mut().expect("a new array is contiguous");
            let scale = (hi - lo) / 255.0;
            let (keep, fill) = match m.mask_convention {
                MaskConvention::Keep => (1.0, 0.0),
                MaskConvention::Fill => (0.0, 1.0),
            };
            for (i, (p, mk)) in input.target.pixels().zip(input.mask.pixels()).enumerate() {
                let hole = mk.0[0] > 0;
                mask_buf[i] = if hole { fill } else { keep };
                let zero = hole && m.zero_holes;
                for c in 0..3 {
                    img_buf[c * plane + i] = if zero { 0.0 } else { lo + scale * p.0[c] as f32 };
                }
            }
        }
        let e = |e: ort::Error| ForgeError::Model(e.to_string());
        let out_name = m.outputs[0].name.clone();
        let output: Vec<f32> = {
            let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = vec![
                (img_spec.name.clone().into(), TensorRef::from_array_view(&image).map_err(e)?.into()),
                (mask_spec.name.clone().into(), TensorRef::from_array_view(&mask).map_err(e)?.into()),
            ];
            let z;
            if let Some(spec) = m.input("latent") {
                let dim = spec.shape.iter().skip(1).product::<i64>().max(1) as usize;
                z = ndarray::Array2::<f32>::from_shape_vec((1, dim), SplitMix64(input.seed).normals(dim)).expect("shape");
                inputs.push((spec.name.clone().into(), TensorRef::from_array_view(&z).map_err(e)?.into()));
            }
            let outputs = self.session.run(inputs).map_err(e)?;
            let (shape, data) = outputs[out_name.as_str()].try_extract_tensor::<f32>().map_err(e)?;
            let dims: Vec<i64> = shape.iter().copied().collect();
            if dims != [1, 3, h as i64, w as i64] {
                return Err(ForgeError::Model(format!("output {out_name} has shape {dims:?}, expected [1, 3, {h}, {w}]")));
            }
            let (olo, ohi) = match &m.output_range {
                OutputRange::Fixed(r) => (r[0], r[1]),
                OutputRange::Auto(_) => {
                    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if max > 1.5 { (0.0, 255.0) } else { (0.0, 1.0) }
                }
            };
            let mut hwc = vec![0.0f32; plane * 3];
            for c in 0..3 {
                let src = &data[c * plane..(c + 1) * plane];
                for (i, v) in src.iter().enumerate() {
                    hwc[i * 3 + c] = ((v - olo) / (ohi - olo) * 255.0).clamp(0.0, 255.0);
                }
            }
            hwc
        };
        Ok((w, h, output))
    }
}

/// Rounds a 0..255 float HWC image to 8 bits.
pub fn to_rgb(w: u32, h: u32, hwc: &[f32]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let i = ((y * w + x) * 3) as usize;
        image::Rgb([hwc[i].round() as u8, hwc[i + 1].round() as u8, hwc[i + 2].round() as u8])
    })
}

impl Generator for OnnxGenerator {
    fn method(&self) -> &'static str {
        self.method
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        let (w, h, hwc) = self.run_raw(input)?;
        Ok(to_rgb(w, h, &hwc))
    }
    fn generate_raw(&mut self, input: &ForgeInput<'_>) -> Result<super::RawOutput, ForgeError> {
        let (w, h, hwc) = self.run_raw(input)?;
        Ok(super::RawOutput { image: to_rgb(w, h, &hwc), hwc, mask: None })
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": self.manifest.name,
            "kind": "onnx",
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "model_file": self.model_path.display().to_string(),
            "model_sha256": self.model_sha256,
            "execution_provider": match self.device { Device::Cpu => "CPUExecutionProvider", Device::Cuda => "CUDAExecutionProvider" },
            "intra_threads": self.threads,
        })
    }
}
