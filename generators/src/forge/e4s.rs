//! `e4s`: E4S face swapping over ONNX Runtime. No public ONNX export exists, so
//! `generators/manifests/e4s.json` defines the contract (a BiSeNet parser and a swap generator in
//! `MODELS/e4s/`) and `generators/EXPORT.md` says how to export the authors' code to it.
//!
//! The pipeline around the graphs:
//! 1. Both faces are FFHQ-aligned to 1024 from their 68 landmarks ([`AlignTransform`]).
//! 2. Each aligned face is parsed: 2x2 box-averaged to 512, ImageNet-normalized, BiSeNet logits,
//!    argmax (the first class wins ties) into the 19 classes, one-hot.
//! 3. The generator swaps: target and source in `[-1, 1]` plus both parsings -> the swapped face.
//! 4. The face region: every pixel whose class is a facial one (skin, brows, eyes, glasses, ears,
//!    nose, mouth, lips) in the target's or the source's parsing; not background, hair, hat,
//!    earrings, neck or cloth.
//! 5. Paste back: the swapped face and the region are mapped into the target's frame (bilinear,
//!    nearest), the region dilated by 2% of the aligned face's width, and returned as this
//!    item's mask; the platform composites with it.

use super::graph::{Data, Graph, GraphSpec};
use super::runtime::Device;
use super::{ForgeError, ForgeInput, Generator};
use crate::align::AlignTransform;
use crate::geometry::Pt;
use image::{GrayImage, RgbImage};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = include_str!("../../manifests/e4s.json");
pub const CLASSES: usize = 19;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct E4sManifest {
    pub name: String,
    pub description: String,
    pub license: String,
    pub folder: String,
    pub size: usize,
    pub parse_size: usize,
    pub parser_mean: [f32; 3],
    pub parser_std: [f32; 3],
    pub face_classes: Vec<u8>,
    pub dilate_fraction: f64,
    pub graphs: BTreeMap<String, GraphSpec>,
}

/// What the aligned-domain core produced (parity tests compare these).
pub struct Swapped {
    /// CHW in 0..1 at `size`.
    pub image: Vec<f32>,
    /// Class per pixel at `parse_size`.
    pub target_labels: Vec<u8>,
    pub source_labels: Vec<u8>,
    /// 0/1 per pixel at `parse_size`: the facial region of either parsing.
    pub region: Vec<u8>,
}

pub struct E4s {
    pub manifest: E4sManifest,
    dir: PathBuf,
    parser: Graph,
    generator: Graph,
    device: Device,
    threads: usize,
}

fn shape_err(e: impl std::fmt::Display) -> ForgeError {
    ForgeError::Model(e.to_string())
}

impl E4s {
    pub fn load(models_dir: &Path, device: Device, threads: usize) -> Result<Self, ForgeError> {
        let manifest: E4sManifest = serde_json::from_str(MANIFEST).map_err(|e| ForgeError::Model(format!("e4s manifest: {e}")))?;
        let dir = models_dir.join(&manifest.folder);
        if !dir.is_dir() {
            return Err(ForgeError::Model(format!(
                "{} is missing: export E4S to the ONNX contract there (see generators/EXPORT.md)",
                dir.display()
            )));
        }
        let g = |name: &str| Graph::load(&format!("e4s {name}"), &dir, &manifest.graphs[name], device, threads);
        let (parser, generator) = (g("parser")?, g("generator")?);
        Ok(E4s { manifest, dir, parser, generator, device, threads })
    }

    /// Class labels of an aligned face (CHW, 0..1, at `size`).
    pub fn parse(&mut self, chw: &[f32]) -> Result<Vec<u8>, ForgeError> {
        let (n, p) = (self.manifest.size, self.manifest.parse_size);
        let mut x = super::sdxl::downscale_box(chw, 3, n, n, n / p);
        let plane = p * p;
        for c in 0..3 {
            for v in &mut x[c * plane..(c + 1) * plane] {
                *v = (*v - self.manifest.parser_mean[c]) / self.manifest.parser_std[c];
            }
        }
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, p, p]), x).map_err(shape_err)?;
        let logits = self.parser.run(vec![("image", Data::F32(x))], &["logits"])?.remove(0);
        let l = logits.as_slice().ok_or_else(|| ForgeError::Model("parser output not contiguous".into()))?;
        Ok((0..plane)
            .map(|i| {
                let mut best = 0;
                for c in 1..CLASSES {
                    if l[c * plane + i] > l[best * plane + i] {
                        best = c;
                    }
                }
                best as u8
            })
            .collect())
    }

    fn one_hot(&self, labels: &[u8]) -> Result<ArrayD<f32>, ForgeError> {
        let p = self.manifest.parse_size;
        let mut v = vec![0.0f32; CLASSES * p * p];
        for (i, &c) in labels.iter().enumerate() {
            v[c as usize * p * p + i] = 1.0;
        }
        ArrayD::from_shape_vec(IxDyn(&[1, CLASSES, p, p]), v).map_err(shape_err)
    }

    /// The graphs on two aligned faces (CHW, 0..1, at `size`).
    pub fn swap_aligned(&mut self, target: &[f32], source: &[f32]) -> Result<Swapped, ForgeError> {
        let n = self.manifest.size;
        let target_labels = self.parse(target)?;
        let source_labels = self.parse(source)?;
        let signed = |x: &[f32]| ArrayD::from_shape_vec(IxDyn(&[1, 3, n, n]), x.iter().map(|v| 2.0 * v - 1.0).collect()).map_err(shape_err);
        let out = self
            .generator
            .run(
                vec![
                    ("target", Data::F32(signed(target)?)),
                    ("source", Data::F32(signed(source)?)),
                    ("target_parsing", Data::F32(self.one_hot(&target_labels)?)),
                    ("source_parsing", Data::F32(self.one_hot(&source_labels)?)),
                ],
                &["swapped"],
            )?
            .remove(0);
        let image: Vec<f32> = out.iter().map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0)).collect();
        let face = |c: u8| self.manifest.face_classes.contains(&c);
        let region = target_labels.iter().zip(&source_labels).map(|(&a, &b)| u8::from(face(a) || face(b))).collect();
        Ok(Swapped { image, target_labels, source_labels, region })
    }

    /// The whole swap: the generated image in the target's frame and the swapped region's mask.
    pub fn swap(&mut self, input: &ForgeInput<'_>) -> Result<(RgbImage, GrayImage), ForgeError> {
        let need = "e4s needs both faces with their 68 landmarks (sources imported with dlib landmarks)";
        let (Some(tl), Some(src), Some(sl)) = (input.target_landmarks, input.source, input.source_landmarks) else {
            return Err(ForgeError::Input(need.into()));
        };
        let n = self.manifest.size;
        let (tt, st) = (AlignTransform::ffhq(tl, n as u32), AlignTransform::ffhq(sl, n as u32));
        let chw = |img: &RgbImage| -> Vec<f32> {
            let plane = n * n;
            let mut v = vec![0.0f32; 3 * plane];
            for (i, p) in img.pixels().enumerate() {
                for c in 0..3 {
                    v[c * plane + i] = p.0[c] as f32 / 255.0;
                }
            }
            v
        };
        let s = self.swap_aligned(&chw(&tt.warp(input.target)), &chw(&st.warp(src)))?;
        // paste back into the target's frame
        let (w, h) = input.target.dimensions();
        let (p, plane) = (self.manifest.parse_size, n * n);
        let mut out = input.target.clone();
        let mut region = GrayImage::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let q = tt.to_output(Pt::new(x as f64 + 0.5, y as f64 + 0.5));
                if q.x < 0.0 || q.y < 0.0 || q.x >= n as f64 || q.y >= n as f64 {
                    continue;
                }
                let (rx, ry) = ((q.x as usize * p / n).min(p - 1), (q.y as usize * p / n).min(p - 1));
                if s.region[ry * p + rx] == 1 {
                    region.put_pixel(x, y, image::Luma([255]));
                }
                let (sx, sy) = ((q.x - 0.5).clamp(0.0, (n - 1) as f64), (q.y - 0.5).clamp(0.0, (n - 1) as f64));
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
                let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
                let mut px = [0u8; 3];
                for (c, v) in px.iter_mut().enumerate() {
                    let g = |yy: usize, xx: usize| s.image[c * plane + yy * n + xx];
                    let top = g(y0, x0) * (1.0 - fx) + g(y0, x1) * fx;
                    let bot = g(y1, x0) * (1.0 - fx) + g(y1, x1) * fx;
                    *v = ((top * (1.0 - fy) + bot * fy) * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                out.put_pixel(x, y, image::Rgb(px));
            }
        }
        let radius = self.manifest.dilate_fraction * n as f64 * tt.scale();
        let region = crate::geometry::dilate(&region, radius);
        if !region.pixels().any(|p| p.0[0] > 0) {
            return Err(ForgeError::Model("e4s: the parser found no face region to swap".into()));
        }
        Ok((out, region))
    }
}

impl Generator for E4s {
    fn method(&self) -> &'static str {
        "e4s"
    }
    fn needs_source(&self) -> bool {
        true
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        Ok(self.swap(input)?.0)
    }
    fn generate_with_mask(&mut self, input: &ForgeInput<'_>) -> Result<(RgbImage, Option<GrayImage>), ForgeError> {
        let (img, mask) = self.swap(input)?;
        Ok((img, Some(mask)))
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": "e4s",
            "kind": "onnx-pipeline",
            "folder": self.dir.display().to_string(),
            "graphs": { "parser": self.parser.provenance(), "generator": self.generator.provenance() },
            "mask": "face region of the parsings (not background, hair, hat, earrings, neck, cloth), dilated",
            "execution_provider": match self.device { Device::Cpu => "CPUExecutionProvider", Device::Cuda => "CUDAExecutionProvider" },
            "intra_threads": self.threads,
        })
    }
}
