//! Forgery generation: one interface for every generator, and the platform's own composite.
//!
//! A [`Generator`] turns a target face, a planned mask, an optional source face (swaps) and a seed
//! into generated pixels `I_g`. The platform, never the model, composites
//! `I_f = (1 - M) * I + M * I_g` ([`composite`]): masks are binary, so outside the mask every pixel
//! of the forgery is bit-for-bit the original whatever the generator returns.
//!
//! - [`patch_inpaint`]: face-aware exemplar inpainting by multi-scale PatchMatch: exemplars come
//!   from the face's own skin and matching parts, or from an aligned donor face, never from
//!   background, hair or clothes (classical, no weights).
//! - [`part_swap`]: the masked parts transplanted from a donor face (landmark-aligned warp,
//!   per-region colour transfer, Poisson blending), and the face layout both use (classical, no
//!   weights).
//! - [`classic_swap`]: landmark face swap (Delaunay, piecewise-affine warp, colour transfer,
//!   Poisson blending) (classical, no weights).
//! - [`onnx`]: ONNX Runtime generators described by manifests (`mat`, `lama`).
//! - [`sdxl`]: SDXL inpainting over ONNX Runtime (tokenizers, text encoders, UNet, VAE, Euler).
//! - [`e4s`]: E4S face swap over ONNX Runtime (parser and swap generator graphs, alignment,
//!   paste-back, its own face-region mask).
//! - [`graph`]: one checked ONNX graph of a multi-graph pipeline.
//! - [`runtime`]: ONNX Runtime's loading, environment and sessions (shared by [`onnx`] and [`graph`]).

pub mod classic_swap;
pub mod e4s;
pub mod graph;
pub mod onnx;
pub mod part_swap;
pub mod patch_inpaint;
pub mod runtime;
pub mod sdxl;

use crate::landmarks::Landmarks68;
use crate::parts::Part;
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;

/// A face's part masks (0/255, the image's size), e.g. the stored `source_parts`.
pub type PartMasks = BTreeMap<Part, GrayImage>;

/// Everything a generator may use for one item.
pub struct ForgeInput<'a> {
    pub target: &'a RgbImage,
    /// 0/255, same size as the target; 255 = regenerate.
    pub mask: &'a GrayImage,
    pub target_landmarks: Option<&'a Landmarks68>,
    pub source: Option<&'a RgbImage>,
    pub source_landmarks: Option<&'a Landmarks68>,
    /// The target's part masks (CelebAMask-HQ's annotations or the landmark-derived regions);
    /// the face-aware generators derive them from the landmarks when absent.
    pub target_parts: Option<&'a PartMasks>,
    /// The source's (donor's) part masks, likewise.
    pub source_parts: Option<&'a PartMasks>,
    pub seed: u64,
    /// The job's parameters (`forge_jobs.params`), for generators that take any (SDXL prompts).
    pub options: Option<&'a serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{0}")]
    Input(String),
    #[error("model error: {0}")]
    Model(String),
}

/// [`Generator::generate_raw`]'s answer.
pub struct RawOutput {
    pub image: RgbImage,
    /// float32 HWC, 0..255, before rounding.
    pub hwc: Vec<f32>,
    /// The generator's own mask (E4S), which replaces the planned one.
    pub mask: Option<GrayImage>,
}

/// A forgery generator. Instances are created once per worker and reused across items.
pub trait Generator: Send {
    /// The method name stored with each forgery (`patch-inpaint`, `classic-swap`, `mat`, ...).
    fn method(&self) -> &'static str;
    /// Whether the generator needs a source (donor) face.
    fn needs_source(&self) -> bool {
        false
    }
    /// Generated pixels for the whole image; only the masked ones are used.
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError>;
    /// Generated pixels and, for generators that decide the forged region themselves (E4S: the
    /// swapped face region), that region's mask (0/255), which then replaces the planned one.
    fn generate_with_mask(&mut self, input: &ForgeInput<'_>) -> Result<(RgbImage, Option<GrayImage>), ForgeError> {
        Ok((self.generate(input)?, None))
    }
    /// The generated pixels before rounding (`hwc`: float32, height x width x 3, 0..255), the
    /// rounded image and the generator's own mask: what `mmtt generate --raw` writes for the
    /// ONNX parity tests. Generators whose output is already 8-bit return it as floats.
    fn generate_raw(&mut self, input: &ForgeInput<'_>) -> Result<RawOutput, ForgeError> {
        let (image, mask) = self.generate_with_mask(input)?;
        let hwc = image.as_raw().iter().map(|&v| v as f32).collect();
        Ok(RawOutput { image, hwc, mask })
    }
    /// What produced the pixels: generator kind, manifest, model hash, execution provider.
    fn provenance(&self) -> serde_json::Value;
}

/// `I_f = (1 - M) * I + M * I_g` for a binary mask.
pub fn composite(original: &RgbImage, generated: &RgbImage, mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(original.width(), original.height(), |x, y| {
        if mask.get_pixel(x, y).0[0] > 0 { *generated.get_pixel(x, y) } else { *original.get_pixel(x, y) }
    })
}

pub(crate) fn check_input(input: &ForgeInput<'_>) -> Result<(), ForgeError> {
    if input.mask.dimensions() != input.target.dimensions() {
        return Err(ForgeError::Input(format!("mask is {:?} but the image is {:?}", input.mask.dimensions(), input.target.dimensions())));
    }
    if !input.mask.pixels().any(|p| p.0[0] > 0) {
        return Err(ForgeError::Input("the mask is empty: nothing to generate".into()));
    }
    Ok(())
}

/// SplitMix64: the documented stream behind every seeded draw that a Python reference must be
/// able to reproduce (MAT's latent z).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1]: `((x >> 11) + 1) / 2^53`.
    pub fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    /// `n` standard normal values by Box-Muller on pairs: `r = sqrt(-2 ln u1)`, `r cos(2 pi u2)`,
    /// `r sin(2 pi u2)`.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = self.next_open01();
            let u2 = self.next_open01();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            out.push((r * t.cos()) as f32);
            out.push((r * t.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keeps_outside_pixels() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let b = RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
        let mut m = GrayImage::new(4, 4);
        m.put_pixel(1, 1, image::Luma([255]));
        let c = composite(&a, &b, &m);
        assert_eq!(c.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(c.get_pixel(0, 0).0, [1, 2, 3]);
    }

    #[test]
    fn splitmix_reference_values() {
        // first outputs of SplitMix64 seeded with 0 (Vigna's reference implementation)
        let mut s = SplitMix64(0);
        assert_eq!(s.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(s.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let z = SplitMix64(7).normals(10_000);
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / 1e4;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 1e4;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
