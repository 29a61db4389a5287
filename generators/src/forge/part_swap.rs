//! `part-swap`: the masked facial parts transplanted from a donor face (classical, no weights).
//!
//! Also owns what both built-in inpainters know about a face: its layout ([`FaceLayout`], one
//! [`Region`] per pixel, from the part masks or the landmarks) and a donor face aligned onto the
//! target ([`AlignedDonor`]).
//!
//! 1. Layout: every pixel of the target and of the donor gets its region (skin, brow, eye, nose,
//!    lips, mouth opening, ear, or outside the face: background, hair, clothes), from the stored
//!    part masks (CelebAMask-HQ's annotations, or the landmark-derived regions of photos and FFHQ)
//!    or, when none are given, from the 68 landmarks ([`Landmarks68::part_masks`]).
//! 2. Alignment: the donor is warped piecewise-affinely onto the target with every one of the 68
//!    landmarks (and the forehead) landing on the target's own
//!    ([`classic_swap::correspondences`] without the source's shape), so the donor's eye fills the
//!    target's eye region, its lips the target's lips, and so on.
//! 3. Colour: region by region, the warped donor's per-channel mean and spread are matched to the
//!    target's own pixels of the same region (Reinhard-style transfer in RGB; the spread is scaled
//!    by a factor between 1/4 and 4, so a flat donor region is not blown up into noise).
//! 4. Blending: Poisson (seamless) cloning over the mask, guided by the aligned donor, with the
//!    target's pixels as the boundary values, as `classic-swap` does for the whole face.

use super::classic_swap::{correspondences, poisson_blend, sample, triangle_map};
use super::{ForgeError, ForgeInput, Generator, PartMasks, check_input};
use crate::geometry::dilate;
use crate::landmarks::Landmarks68;
use crate::parts::Part;
use image::{GrayImage, RgbImage};

/// A face region: the classes of pixels between which exemplars may not be mixed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Region {
    /// Not the face: background, hair, hat, neck, clothes, glasses.
    Outside = 0,
    Skin,
    Brow,
    Eye,
    Nose,
    Lips,
    /// The mouth's opening (teeth, tongue).
    Mouth,
    Ear,
}

impl Region {
    pub const FACE: [Region; 7] = [Region::Skin, Region::Brow, Region::Eye, Region::Nose, Region::Lips, Region::Mouth, Region::Ear];

    /// The region of a part: both eyes are one region (either eye is the other's counterpart),
    /// likewise both brows, both lips and both ears; non-facial parts are outside.
    pub fn of(part: Part) -> Region {
        match part {
            Part::Skin => Region::Skin,
            Part::Nose => Region::Nose,
            Part::LEye | Part::REye => Region::Eye,
            Part::LBrow | Part::RBrow => Region::Brow,
            Part::ULip | Part::LLip => Region::Lips,
            Part::Mouth => Region::Mouth,
            Part::LEar | Part::REar => Region::Ear,
            Part::EyeG | Part::Hair | Part::Hat | Part::EarR | Part::NeckL | Part::Neck | Part::Cloth => Region::Outside,
        }
    }

    pub fn is_face(self) -> bool {
        self != Region::Outside
    }
}

/// One [`Region`] per pixel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceLayout {
    pub width: u32,
    pub height: u32,
    pub labels: Vec<Region>,
}

impl FaceLayout {
    /// From part masks: painted in CelebAMask-HQ's part order, a later part over an earlier one
    /// (hair over skin, an eye over glasses), as the dataset's label maps are drawn.
    pub fn from_parts(parts: &PartMasks, width: u32, height: u32) -> Result<Self, ForgeError> {
        let mut labels = vec![Region::Outside; (width * height) as usize];
        for part in Part::ALL {
            let Some(m) = parts.get(&part) else { continue };
            if m.dimensions() != (width, height) {
                return Err(ForgeError::Input(format!(
                    "the {part} part mask is {:?} but the image is {:?}",
                    m.dimensions(),
                    (width, height)
                )));
            }
            let r = Region::of(part);
            for (l, p) in labels.iter_mut().zip(m.pixels()) {
                if p.0[0] > 0 {
                    *l = r;
                }
            }
        }
        Ok(FaceLayout { width, height, labels })
    }

    /// The layout of a face: from its part masks when given, else from its landmarks; `None`
    /// when neither is known (or the masks hold no facial part).
    pub fn of_face(
        parts: Option<&PartMasks>,
        landmarks: Option<&Landmarks68>,
        width: u32,
        height: u32,
    ) -> Result<Option<Self>, ForgeError> {
        let layout = match (parts, landmarks) {
            (Some(p), _) if p.keys().any(|k| k.is_facial()) => FaceLayout::from_parts(p, width, height)?,
            (_, Some(l)) => FaceLayout::from_parts(&l.part_masks(width, height), width, height)?,
            _ => return Ok(None),
        };
        Ok(layout.labels.iter().any(|l| l.is_face()).then_some(layout))
    }

    pub fn at(&self, x: u32, y: u32) -> Region {
        self.labels[(y * self.width + x) as usize]
    }
}

/// A donor face warped onto the target's frame.
pub struct AlignedDonor {
    /// Colours (matched region by region to the target's), row-major, the target's size.
    pub px: Vec<[f32; 3]>,
    /// The donor's regions carried along (nearest pixel).
    pub labels: Vec<Region>,
    /// Pixels the warp reached (inside `region` of [`AlignedDonor::new`]).
    pub covered: Vec<bool>,
}

impl AlignedDonor {
    /// Warps `donor` so that its landmarks land on the target's, inside `region` (a mask of the
    /// target's size), and matches each region's colours to the target's same region.
    pub fn new(
        target: &RgbImage,
        target_layout: &FaceLayout,
        target_lm: &Landmarks68,
        donor: &RgbImage,
        donor_layout: &FaceLayout,
        donor_lm: &Landmarks68,
        region: &GrayImage,
    ) -> Result<Self, ForgeError> {
        let (w, h) = target.dimensions();
        let (src, dst) = correspondences(target_lm, donor_lm, w, h, false);
        let map = triangle_map(&src, &dst, region)?;
        let n = (w * h) as usize;
        let mut px: Vec<[f32; 3]> = target.pixels().map(|p| p.0.map(|v| v as f32)).collect();
        let mut labels = vec![Region::Outside; n];
        let mut covered = vec![false; n];
        let (dw, dh) = donor.dimensions();
        for (i, q) in map.into_iter().enumerate() {
            if let Some(q) = q {
                px[i] = sample(donor, q);
                let (qx, qy) = (q.x.floor().clamp(0.0, dw as f64 - 1.0) as u32, q.y.floor().clamp(0.0, dh as f64 - 1.0) as u32);
                labels[i] = donor_layout.at(qx, qy);
                covered[i] = true;
            }
        }
        // region by region, the donor's colours take the target's mean and spread
        let target_px: Vec<[f32; 3]> = target.pixels().map(|p| p.0.map(|v| v as f32)).collect();
        for r in Region::FACE {
            let mine: Vec<usize> = (0..n).filter(|&i| covered[i] && labels[i] == r).collect();
            let theirs: Vec<usize> = (0..n).filter(|&i| target_layout.labels[i] == r).collect();
            match_stats(&mut px, &mine, &theirs, &target_px);
        }
        Ok(AlignedDonor { px, labels, covered })
    }
}

/// Matches the per-channel mean and standard deviation of `img` at `idx` to `reference` at
/// `ref_idx` (nothing happens when either has fewer than 2 pixels).
fn match_stats(img: &mut [[f32; 3]], idx: &[usize], ref_idx: &[usize], reference: &[[f32; 3]]) {
    if idx.len() < 2 || ref_idx.len() < 2 {
        return;
    }
    let stats = |v: &mut dyn Iterator<Item = f64>, n: usize| {
        let vals: Vec<f64> = v.collect();
        let m = vals.iter().sum::<f64>() / n as f64;
        let s = (vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64).sqrt();
        (m, s.max(1e-3))
    };
    for c in 0..3 {
        let (ms, ss) = stats(&mut idx.iter().map(|&i| img[i][c] as f64), idx.len());
        let (mt, st) = stats(&mut ref_idx.iter().map(|&i| reference[i][c] as f64), ref_idx.len());
        // the target's contrast, within a factor 4 of the donor's (a flat donor region is not
        // blown up into noise)
        let k = (st / ss).clamp(0.25, 4.0);
        for &i in idx {
            img[i][c] = ((img[i][c] as f64 - ms) * k + mt) as f32;
        }
    }
}

#[derive(Debug, Clone)]
pub struct PartSwap {
    /// Conjugate-gradient iterations at most for the Poisson solve.
    pub max_iterations: usize,
}

impl Default for PartSwap {
    fn default() -> Self {
        PartSwap { max_iterations: 600 }
    }
}

impl PartSwap {
    pub fn swap(&self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        check_input(input)?;
        let missing = |w: &str| ForgeError::Input(format!("part-swap needs {w}"));
        let target = input.target;
        let donor = input.source.ok_or_else(|| missing("a donor face (the source)"))?;
        let tl = input.target_landmarks.ok_or_else(|| missing("the target's landmarks"))?;
        let dl = input.source_landmarks.ok_or_else(|| missing("the donor's landmarks"))?;
        let (w, h) = target.dimensions();
        let (dw, dh) = donor.dimensions();
        let t_layout = FaceLayout::of_face(input.target_parts, Some(tl), w, h)?.ok_or_else(|| missing("a face in the target"))?;
        let d_layout = FaceLayout::of_face(input.source_parts, Some(dl), dw, dh)?.ok_or_else(|| missing("a face in the donor"))?;
        // the warp reaches a little beyond the mask so the blend's boundary sees donor pixels too
        let region = dilate(input.mask, 2.0);
        let aligned = AlignedDonor::new(target, &t_layout, tl, donor, &d_layout, dl, &region)?;
        Ok(poisson_blend(target, &aligned.px, input.mask, self.max_iterations))
    }
}

impl Generator for PartSwap {
    fn method(&self) -> &'static str {
        "part-swap"
    }
    fn needs_source(&self) -> bool {
        true
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        self.swap(input)
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": "part-swap",
            "kind": "classical: the masked parts from a donor face of the same split (landmark-aligned piecewise-affine warp, per-region colour transfer, Poisson blending; no learned weights)",
            "max_cg_iterations": self.max_iterations,
            "execution_provider": "cpu (built-in)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paints_later_parts_over_earlier_ones() {
        let mut parts = PartMasks::new();
        let full = GrayImage::from_pixel(4, 4, image::Luma([255]));
        let mut corner = GrayImage::new(4, 4);
        corner.put_pixel(0, 0, image::Luma([255]));
        corner.put_pixel(3, 3, image::Luma([255]));
        let mut eye = GrayImage::new(4, 4);
        eye.put_pixel(3, 3, image::Luma([255]));
        parts.insert(Part::Skin, full);
        parts.insert(Part::Hair, corner);
        parts.insert(Part::REye, eye);
        let l = FaceLayout::from_parts(&parts, 4, 4).unwrap();
        assert_eq!(l.at(0, 0), Region::Outside);
        assert_eq!(l.at(3, 3), Region::Outside, "hair comes after the eyes in CelebAMask-HQ's order");
        assert_eq!(l.at(1, 1), Region::Skin);
        let wrong = FaceLayout::from_parts(&parts, 5, 5);
        assert!(matches!(wrong, Err(ForgeError::Input(m)) if m.contains("skin part mask")));
    }

    #[test]
    fn match_stats_moves_mean_and_bounds_contrast() {
        let mut img = vec![[10.0f32, 10.0, 10.0], [30.0, 30.0, 30.0]];
        let reference = vec![[100.0f32, 0.0, 0.0], [140.0, 0.0, 0.0]];
        match_stats(&mut img, &[0, 1], &[0, 1], &reference);
        assert!((img[0][0] - 100.0).abs() < 1e-3 && (img[1][0] - 140.0).abs() < 1e-3, "{img:?}");
        // a flat reference divides the contrast by 4 at most
        assert!((img[1][1] - img[0][1] - 5.0).abs() < 1e-3, "{img:?}");
    }
}
