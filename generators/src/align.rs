//! FFHQ-style face alignment: the crop that FFHQ's `align_images.py` takes from 68 landmarks.
//!
//! From the eye centres and mouth corners (points 48 and 54):
//! ```text
//! eye_avg = (eye_l + eye_r)/2, eye_to_eye = eye_l - eye_r, eye_to_mouth = mouth_avg - eye_avg
//! x = eye_to_eye - rot90(eye_to_mouth); x /= |x|; x *= max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
//! y = rot90(x); c = eye_avg + 0.1 eye_to_mouth
//! quad = [c - x - y, c - x + y, c + x + y, c + x - y]   (top-left, bottom-left, bottom-right, top-right)
//! ```
//! The quad is mapped onto the `size x size` output. As in FFHQ, a large source is first shrunk by
//! an integer factor (so no output pixel averages fewer source pixels than it covers), then
//! sampled bilinearly. Outside the photo, FFHQ pads by reflection and blurs the padding; we reflect
//! without the blur (the padding stays outside every planned mask).

use crate::geometry::Pt;
use crate::landmarks::Landmarks68;
use image::{RgbImage, imageops};
use std::ops::{Add, Sub};

/// The affine map from output pixel centres to source coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignTransform {
    /// Source position of the output's top-left corner.
    pub origin: Pt,
    /// Source displacement per output pixel along x.
    pub ux: Pt,
    /// Source displacement per output pixel along y.
    pub uy: Pt,
    pub size: u32,
}

impl AlignTransform {
    /// FFHQ's crop for these landmarks, onto a `size x size` output.
    pub fn ffhq(lm: &Landmarks68, size: u32) -> Self {
        let eye_r = lm.right_eye();
        let eye_l = lm.left_eye();
        let eye_avg = eye_l.add(eye_r).scale(0.5);
        let eye_to_eye = eye_l.sub(eye_r);
        let mouth_avg = lm.0[48].add(lm.0[54]).scale(0.5);
        let eye_to_mouth = mouth_avg.sub(eye_avg);
        // np.flipud(v) * [-1, 1] == (-v.y, v.x)
        let rot = |v: Pt| Pt::new(-v.y, v.x);
        let mut x = eye_to_eye.sub(rot(eye_to_mouth));
        x = x.unit().scale((eye_to_eye.norm() * 2.0).max(eye_to_mouth.norm() * 1.8));
        let y = rot(x);
        let c = eye_avg.add(eye_to_mouth.scale(0.1));
        let origin = c.sub(x).sub(y);
        let s = size as f64;
        AlignTransform { origin, ux: x.scale(2.0 / s), uy: y.scale(2.0 / s), size }
    }

    /// Source coordinates of the output point `(u, v)` (continuous; pixel centres are at +0.5).
    pub fn to_source(&self, u: f64, v: f64) -> Pt {
        self.origin.add(self.ux.scale(u)).add(self.uy.scale(v))
    }

    /// Output coordinates of a source point (the inverse map).
    pub fn to_output(&self, p: Pt) -> Pt {
        let q = p.sub(self.origin);
        let det = self.ux.x * self.uy.y - self.ux.y * self.uy.x;
        Pt::new((q.x * self.uy.y - q.y * self.uy.x) / det, (self.ux.x * q.y - self.ux.y * q.x) / det)
    }

    /// Source pixels per output pixel.
    pub fn scale(&self) -> f64 {
        self.ux.norm()
    }

    /// Warps `src` into the aligned `size x size` crop.
    pub fn warp(&self, src: &RgbImage) -> RgbImage {
        let shrink = (self.scale() * 0.5).floor().max(1.0) as u32;
        let (img, t) = if shrink > 1 {
            let (w, h) = src.dimensions();
            let nw = (w / shrink).max(1);
            let nh = (h / shrink).max(1);
            let small = imageops::resize(src, nw, nh, imageops::FilterType::Triangle);
            let fx = nw as f64 / w as f64;
            let fy = nh as f64 / h as f64;
            let t = AlignTransform {
                origin: Pt::new(self.origin.x * fx, self.origin.y * fy),
                ux: Pt::new(self.ux.x * fx, self.ux.y * fy),
                uy: Pt::new(self.uy.x * fx, self.uy.y * fy),
                size: self.size,
            };
            (std::borrow::Cow::Owned(small), t)
        } else {
            (std::borrow::Cow::Borrowed(src), *self)
        };
        let (w, h) = img.dimensions();
        let reflect = |v: f64, n: u32| -> f64 {
            let n = n as f64;
            if n <= 1.0 {
                return 0.0;
            }
            let period = 2.0 * (n - 1.0);
            let mut m = v.rem_euclid(period);
            if m > n - 1.0 {
                m = period - m;
            }
            m
        };
        RgbImage::from_fn(self.size, self.size, |u, v| {
            let p = t.to_source(u as f64 + 0.5, v as f64 + 0.5);
            let sx = reflect(p.x - 0.5, w);
            let sy = reflect(p.y - 0.5, h);
            let x0 = sx.floor() as u32;
            let y0 = sy.floor() as u32;
            let x1 = (x0 + 1).min(w - 1);
            let y1 = (y0 + 1).min(h - 1);
            let fx = sx - x0 as f64;
            let fy = sy - y0 as f64;
            let a = img.get_pixel(x0, y0).0;
            let b = img.get_pixel(x1, y0).0;
            let c = img.get_pixel(x0, y1).0;
            let d = img.get_pixel(x1, y1).0;
            let mut out = [0u8; 3];
            for k in 0..3 {
                let top = a[k] as f64 * (1.0 - fx) + b[k] as f64 * fx;
                let bot = c[k] as f64 * (1.0 - fx) + d[k] as f64 * fx;
                out[k] = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
            }
            image::Rgb(out)
        })
    }

    /// The landmarks in output coordinates.
    pub fn landmarks_to_output(&self, lm: &Landmarks68) -> Landmarks68 {
        lm.map(|p| self.to_output(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trips() {
        let t = AlignTransform { origin: Pt::new(10., 20.), ux: Pt::new(0.8, 0.3), uy: Pt::new(-0.3, 0.8), size: 512 };
        let p = t.to_source(100.0, 200.0);
        let q = t.to_output(p);
        assert!((q.x - 100.0).abs() < 1e-9 && (q.y - 200.0).abs() < 1e-9);
    }
}
