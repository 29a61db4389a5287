//! The 68-point (iBUG 300-W / dlib) face landmark layout and the regions derived from it.
//!
//! Index ranges (subject's own sides): jaw 0-16 (0 is on the image's left, the subject's right),
//! right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils 31-35, right eye 36-41,
//! left eye 42-47, outer mouth 48-59, inner mouth 60-67.
//!
//! # How each region is built (rule set [`REGION_RULES_VERSION`])
//! All sizes are relative to `d`, the distance between the two eye centres, and directions follow
//! the face's own axes: `e` points from the subject's right eye to the left eye, `up` is `e`
//! rotated by 90 degrees toward the forehead.
//! - brows: the 5 brow points form a band, lifted by `0.07 d` on the upper edge and lowered by
//!   `0.05 d` on the lower edge.
//! - eyes: convex hull of the 6 eye points, dilated by `0.035 d`.
//! - nose: convex hull of points 27-35 with the nostril wings (31, 35) widened by `0.06 d`.
//! - mouth: the inner lip contour 60-67 (the opening; empty when the mouth is closed).
//! - upper lip: outer points 48-54 back along the inner points 64-60; lower lip: outer 54-59, 48
//!   back along the inner points 60, 67-64.
//! - forehead: each brow point is lifted by its own eye-to-brow vector (from its eye's centre to the
//!   brow point), i.e. the forehead reaches about one eye-to-brow distance above the brows, below
//!   the hairline on typical aligned faces. The face region is the convex hull of the jaw and the
//!   lifted brow points.
//! - skin: the face region minus brows, eyes, nose, mouth and lips (CelebAMask-HQ's parts are
//!   disjoint the same way).
//! - ears (not seen by the 68 points): a band outside the jaw line on each side, from the brow
//!   line down to the nose tip's level along the face's up axis, `0.30 d` wide, minus the face
//!   region. On turned faces the hidden ear's band lies over hair or background; it is still
//!   stored, since the mask only says where pixels may be regenerated.

use crate::geometry::{Pt, centroid, convex_hull, count_set, dilate, empty_mask, fill_polygon, subtract_into, union_into};
use crate::parts::Part;
use image::GrayImage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::{Add, Sub};

/// Version of the region construction rules above; stored with every derived part mask.
pub const REGION_RULES_VERSION: u32 = 1;

/// Regions with fewer pixels than this are treated as absent (a closed mouth has no opening).
pub const MIN_REGION_PIXELS: u64 = 12;

/// 68 face landmarks in image coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<[f64; 2]>", into = "Vec<[f64; 2]>")]
pub struct Landmarks68(pub [Pt; 68]);

impl TryFrom<Vec<[f64; 2]>> for Landmarks68 {
    type Error = String;
    fn try_from(v: Vec<[f64; 2]>) -> Result<Self, Self::Error> {
        if v.len() != 68 {
            return Err(format!("expected 68 landmark points, got {}", v.len()));
        }
        let mut a = [Pt::default(); 68];
        for (i, p) in v.iter().enumerate() {
            if !p[0].is_finite() || !p[1].is_finite() {
                return Err(format!("landmark {i} is not a finite number"));
            }
            a[i] = Pt::new(p[0], p[1]);
        }
        Ok(Self(a))
    }
}

impl From<Landmarks68> for Vec<[f64; 2]> {
    fn from(l: Landmarks68) -> Self {
        l.0.iter().map(|p| [p.x, p.y]).collect()
    }
}

impl Landmarks68 {
    fn range(&self, r: std::ops::RangeInclusive<usize>) -> Vec<Pt> {
        self.0[r].to_vec()
    }
    /// Centre of the subject's right eye (image left).
    pub fn right_eye(&self) -> Pt {
        centroid(&self.0[36..=41])
    }
    /// Centre of the subject's left eye (image right).
    pub fn left_eye(&self) -> Pt {
        centroid(&self.0[42..=47])
    }
    /// Distance between the eye centres.
    pub fn interocular(&self) -> f64 {
        self.left_eye().dist(self.right_eye())
    }
    /// Applies `f` to every point.
    pub fn map(&self, f: impl Fn(Pt) -> Pt) -> Landmarks68 {
        let mut a = self.0;
        for p in a.iter_mut() {
            *p = f(*p);
        }
        Landmarks68(a)
    }
    /// Mean Euclidean distance to another set of 68 points.
    pub fn mean_error(&self, other: &Landmarks68) -> f64 {
        self.0.iter().zip(other.0.iter()).map(|(a, b)| a.dist(*b)).sum::<f64>() / 68.0
    }

    /// The face's axes: unit vector from the subject's right eye to the left eye, and the up vector.
    fn axes(&self) -> (Pt, Pt) {
        let e = self.left_eye().sub(self.right_eye()).unit();
        (e, e.perp_up())
    }

    /// Convex hull of the jaw and the forehead estimate (see the module doc).
    pub fn face_outline(&self) -> Vec<Pt> {
        let re = self.right_eye();
        let le = self.left_eye();
        let mut pts = self.range(0..=16);
        for (i, p) in self.0[17..=26].iter().enumerate() {
            let eye = if i < 5 { re } else { le };
            pts.push(*p);
            pts.push(p.add(p.sub(eye)));
        }
        convex_hull(&pts)
    }

    /// The raster regions of every landmark-derived part, in a `width x height` image. Parts whose
    /// region is smaller than [`MIN_REGION_PIXELS`] are left out.
    pub fn part_masks(&self, width: u32, height: u32) -> BTreeMap<Part, GrayImage> {
        let d = self.interocular().max(1.0);
        let (e, up) = self.axes();
        let poly = |pts: &[Pt]| {
            let mut m = empty_mask(width, height);
            fill_polygon(&mut m, pts);
            m
        };
        let brow = |r: std::ops::RangeInclusive<usize>| {
            let pts = self.range(r);
            let mut band: Vec<Pt> = pts.iter().map(|p| p.add(up.scale(0.07 * d))).collect();
            band.extend(pts.iter().rev().map(|p| p.sub(up.scale(0.05 * d))));
            poly(&band)
        };
        let eye = |r: std::ops::RangeInclusive<usize>| dilate(&poly(&convex_hull(&self.range(r))), 0.035 * d);
        let mut nose_pts = self.range(27..=35);
        nose_pts.push(self.0[31].sub(e.scale(0.06 * d)));
        nose_pts.push(self.0[35].add(e.scale(0.06 * d)));
        let idx = |ix: &[usize]| ix.iter().map(|&i| self.0[i]).collect::<Vec<Pt>>();

        let mut masks = BTreeMap::new();
        masks.insert(Part::RBrow, brow(17..=21));
        masks.insert(Part::LBrow, brow(22..=26));
        masks.insert(Part::REye, eye(36..=41));
        masks.insert(Part::LEye, eye(42..=47));
        masks.insert(Part::Nose, poly(&convex_hull(&nose_pts)));
        masks.insert(Part::Mouth, poly(&self.range(60..=67)));
        masks.insert(Part::ULip, poly(&idx(&[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60])));
        masks.insert(Part::LLip, poly(&idx(&[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64])));
        // the lips are drawn from the outer contour; keep the opening out of them
        let mouth = masks[&Part::Mouth].clone();
        for lip in [Part::ULip, Part::LLip] {
            if let Some(m) = masks.get_mut(&lip) {
                subtract_into(m, &mouth);
            }
        }

        let face = poly(&self.face_outline());
        let mut skin = face.clone();
        for m in masks.values() {
            subtract_into(&mut skin, m);
        }
        // ears: band outside the jaw from the brow line to the nose tip level
        let brow_level = |p: Pt| -> Pt {
            // move p along `up` until it reaches the brow line's height on the up axis
            let brow_h = centroid(&self.0[17..=26]).dot(up);
            p.add(up.scale(brow_h - p.dot(up)))
        };
        let nose_h = self.0[33].dot(up);
        let ear = |jaw: [usize; 3], outward: Pt| {
            let inner_top = brow_level(self.0[jaw[0]]);
            let mut inner: Vec<Pt> = vec![inner_top];
            for &j in &jaw {
                let p = self.0[j];
                if p.dot(up) >= nose_h {
                    inner.push(p);
                }
            }
            let last = *inner.last().unwrap_or(&inner_top);
            inner.push(last.add(up.scale(nose_h - last.dot(up))));
            let mut band = inner.clone();
            band.extend(inner.iter().rev().map(|p| p.add(outward.scale(0.30 * d))));
            let mut m = poly(&band);
            subtract_into(&mut m, &face);
            m
        };
        masks.insert(Part::REar, ear([0, 1, 2], e.scale(-1.0)));
        masks.insert(Part::LEar, ear([16, 15, 14], e));
        masks.insert(Part::Skin, skin);
        masks.retain(|_, m| count_set(m) >= MIN_REGION_PIXELS);
        masks
    }
}

/// Union of the given part masks (those present), dilated by `dilate_px`.
pub fn merge_parts(masks: &BTreeMap<Part, GrayImage>, parts: &[Part], width: u32, height: u32, dilate_px: f64) -> GrayImage {
    let mut out = empty_mask(width, height);
    for p in parts {
        if let Some(m) = masks.get(p) {
            union_into(&mut out, m);
        }
    }
    if dilate_px > 0.0 { dilate(&out, dilate_px) } else { out }
}
