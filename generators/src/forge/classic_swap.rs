//! `classic-swap`: a landmark face swap done with classical image processing, no learned weights.
//!
//! 1. Pose: a least-squares similarity (rotation, scale, shift) maps the source's inner landmarks
//!    (brows, eyes, nose, mouth: points 17-67) onto the target's.
//! 2. Geometry: destination points are the source's inner landmarks in the target's pose (so the
//!    result has the source's face shape and the target's pose), the target's own jaw line and
//!    forehead (so the face fills the target's outline and the swap mask), and the image border.
//!    They are Delaunay-triangulated; every triangle is warped piecewise-affinely from the
//!    corresponding source triangle (bilinear sampling).
//! 3. Colour: inside the core (the hull of the destination jaw and brows, the brows lifted by half
//!    the forehead's lift so the target's own brows are covered) the warped face's
//!    per-channel mean and spread are matched to the target's (Reinhard-style transfer in RGB).
//! 4. Blending: Poisson (seamless) cloning over the whole swap mask, guided by the warped face in
//!    the core and by the target's own picture between the core and the mask's edge (forehead,
//!    dilation): the new face's gradients are kept, and its colours meet the target's exactly at
//!    the mask's edge (conjugate gradients).

use super::{ForgeError, ForgeInput, Generator, check_input};
use crate::geometry::Pt;
use crate::landmarks::Landmarks68;
use image::{GrayImage, RgbImage};
use std::ops::{Add, Sub};

#[derive(Debug, Clone)]
pub struct ClassicSwap {
    /// Conjugate-gradient iterations at most for the Poisson solve.
    pub max_iterations: usize,
}

impl Default for ClassicSwap {
    fn default() -> Self {
        ClassicSwap { max_iterations: 600 }
    }
}

/// `b ~ mb + c (a - ma)` with `c` a complex number (scale and rotation).
#[derive(Debug, Clone, Copy)]
pub struct Similarity {
    ma: Pt,
    mb: Pt,
    c: (f64, f64),
}

impl Similarity {
    /// Least-squares fit of `a[i] -> b[i]`.
    pub fn fit(a: &[Pt], b: &[Pt]) -> Self {
        let n = a.len().max(1) as f64;
        let ma = a.iter().fold(Pt::default(), |s, p| s.add(*p)).scale(1.0 / n);
        let mb = b.iter().fold(Pt::default(), |s, p| s.add(*p)).scale(1.0 / n);
        let (mut re, mut im, mut norm) = (0.0, 0.0, 0.0);
        for (p, q) in a.iter().zip(b) {
            let (ax, ay) = (p.x - ma.x, p.y - ma.y);
            let (bx, by) = (q.x - mb.x, q.y - mb.y);
            // conj(a') * b'
            re += ax * bx + ay * by;
            im += ax * by - ay * bx;
            norm += ax * ax + ay * ay;
        }
        let c = if norm > 0.0 { (re / norm, im / norm) } else { (1.0, 0.0) };
        Similarity { ma, mb, c }
    }
    pub fn apply(&self, p: Pt) -> Pt {
        let (x, y) = (p.x - self.ma.x, p.y - self.ma.y);
        Pt::new(self.mb.x + self.c.0 * x - self.c.1 * y, self.mb.y + self.c.1 * x + self.c.0 * y)
    }
    pub fn inverse(&self) -> Similarity {
        let d = self.c.0 * self.c.0 + self.c.1 * self.c.1;
        Similarity { ma: self.mb, mb: self.ma, c: (self.c.0 / d, -self.c.1 / d) }
    }
}

/// Inner-feature (17-67) shape distance between two landmark sets after removing pose: the RMS
/// residual of the best similarity from `a` to `b`, divided by `b`'s interocular distance.
pub fn shape_distance(a: &Landmarks68, b: &Landmarks68) -> f64 {
    let s = Similarity::fit(&a.0[17..68], &b.0[17..68]);
    let ss: f64 = a.0[17..68].iter().zip(&b.0[17..68]).map(|(p, q)| s.apply(*p).dist(*q).powi(2)).sum();
    (ss / 51.0).sqrt() / b.interocular().max(1.0)
}

fn forehead(lm: &Landmarks68) -> Vec<Pt> {
    let (re, le) = (lm.right_eye(), lm.left_eye());
    lm.0[17..=26].iter().enumerate().map(|(i, p)| p.add(p.sub(if i < 5 { re } else { le }))).collect()
}

/// Bilinear sample at a point in pixel coordinates (pixel centres at `+0.5`), clamped to the image.
pub(crate) fn sample(img: &RgbImage, p: Pt) -> [f32; 3] {
    let (w, h) = img.dimensions();
    let x = (p.x - 0.5).clamp(0.0, w as f64 - 1.0);
    let y = (p.y - 0.5).clamp(0.0, h as f64 - 1.0);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let g = |xx, yy| img.get_pixel(xx, yy).0.map(|v| v as f32);
    let (a, b, c, d) = (g(x0, y0), g(x1, y0), g(x0, y1), g(x1, y1));
    [0, 1, 2].map(|k| (a[k] * (1.0 - fx) + b[k] * fx) * (1.0 - fy) + (c[k] * (1.0 - fx) + d[k] * fx) * fy)
}

/// Corresponding points for warping a source face `sl` onto a target face `tl` in a `w x h`
/// frame, as `(source points, destination points)`: the 68 landmarks, the forehead and the image
/// border. With `keep_source_shape` (a swap) the inner points 17-67 are the source's own, posed
/// onto the target by the best similarity, and only the jaw line is the target's; without it (a
/// part transplant) every landmark lands on the target's own, so each source part fills the
/// target's part region exactly.
pub(crate) fn correspondences(tl: &Landmarks68, sl: &Landmarks68, w: u32, h: u32, keep_source_shape: bool) -> (Vec<Pt>, Vec<Pt>) {
    let pose = Similarity::fit(&sl.0[17..68], &tl.0[17..68]);
    let back = pose.inverse();
    let mut dst: Vec<Pt> = Vec::new();
    let mut src: Vec<Pt> = Vec::new();
    for i in 0..68 {
        src.push(sl.0[i]);
        dst.push(if i < 17 || !keep_source_shape { tl.0[i] } else { pose.apply(sl.0[i]) });
    }
    for (d, s) in forehead(tl).into_iter().zip(forehead(sl)) {
        dst.push(d);
        src.push(s);
    }
    let (fw, fh) = (w as f64, h as f64);
    for (x, y) in [(0.0, 0.0), (fw / 2.0, 0.0), (fw, 0.0), (fw, fh / 2.0), (fw, fh), (fw / 2.0, fh), (0.0, fh), (0.0, fh / 2.0)] {
        let p = Pt::new(x, y);
        dst.push(p);
        src.push(back.apply(p));
    }
    (src, dst)
}

/// The piecewise-affine map of a Delaunay triangulation of `dst`: for every pixel set in
/// `region` that a triangle covers, the matching point of the source frame (`src[i]` is where
/// `dst[i]` comes from); `None` elsewhere. Row-major, the size of `region`.
pub(crate) fn triangle_map(src: &[Pt], dst: &[Pt], region: &GrayImage) -> Result<Vec<Option<Pt>>, ForgeError> {
    let (w, h) = region.dimensions();
    let pts: Vec<delaunator::Point> = dst.iter().map(|p| delaunator::Point { x: p.x, y: p.y }).collect();
    let tri = delaunator::triangulate(&pts);
    if tri.triangles.is_empty() {
        return Err(ForgeError::Input("degenerate landmarks: no triangulation".into()));
    }
    let mut out: Vec<Option<Pt>> = vec![None; (w * h) as usize];
    for t in tri.triangles.chunks_exact(3) {
        let (a, b, c) = (dst[t[0]], dst[t[1]], dst[t[2]]);
        let det = (b.y - c.y) * (a.x - c.x) + (c.x - b.x) * (a.y - c.y);
        if det.abs() < 1e-9 {
            continue;
        }
        let x0 = a.x.min(b.x).min(c.x).floor().max(0.0) as u32;
        let x1 = (a.x.max(b.x).max(c.x).ceil().max(0.0) as u32).min(w - 1);
        let y0 = a.y.min(b.y).min(c.y).floor().max(0.0) as u32;
        let y1 = (a.y.max(b.y).max(c.y).ceil().max(0.0) as u32).min(h - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let i = (y * w + x) as usize;
                if out[i].is_some() || region.get_pixel(x, y).0[0] == 0 {
                    continue;
                }
                let p = Pt::new(x as f64 + 0.5, y as f64 + 0.5);
                let l1 = ((b.y - c.y) * (p.x - c.x) + (c.x - b.x) * (p.y - c.y)) / det;
                let l2 = ((c.y - a.y) * (p.x - c.x) + (a.x - c.x) * (p.y - c.y)) / det;
                let l3 = 1.0 - l1 - l2;
                if l1 < -1e-9 || l2 < -1e-9 || l3 < -1e-9 {
                    continue;
                }
                out[i] = Some(src[t[0]].scale(l1).add(src[t[1]].scale(l2)).add(src[t[2]].scale(l3)));
            }
        }
    }
    Ok(out)
}

impl ClassicSwap {
    pub fn swap(&self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        check_input(input)?;
        let missing = |w: &str| ForgeError::Input(format!("classic-swap needs {w}"));
        let target = input.target;
        let source = input.source.ok_or_else(|| missing("a source face"))?;
        let tl = input.target_landmarks.ok_or_else(|| missing("the target's landmarks"))?;
        let sl = input.source_landmarks.ok_or_else(|| missing("the source's landmarks"))?;
        let (w, h) = target.dimensions();
        let (src, dst) = correspondences(tl, sl, w, h, true);

        // piecewise-affine warp of the source into the target's frame, inside the mask
        let mask = input.mask;
        let mut warped: Vec<[f32; 3]> = target.pixels().map(|p| p.0.map(|v| v as f32)).collect();
        for (i, q) in triangle_map(&src, &dst, mask)?.into_iter().enumerate() {
            if let Some(q) = q {
                warped[i] = sample(source, q);
            }
        }
        // the swapped core is the face inside the jaw line and the brows; between the core and the
        // mask's edge (forehead, the dilation) the guidance is the target's own picture, so the
        // Poisson solve carries the new face's colours smoothly out to the target's
        let mut core = GrayImage::new(w, h);
        let mut core_pts: Vec<Pt> = dst[..68].to_vec();
        // cover the target's own brows too: the destination brows lifted by half their forehead lift
        core_pts.extend(dst[17..27].iter().zip(&dst[68..78]).map(|(b, f)| b.add(f.sub(*b).scale(0.5))));
        crate::geometry::fill_polygon(&mut core, &crate::geometry::convex_hull(&core_pts));
        for (c, m) in core.pixels_mut().zip(mask.pixels()) {
            if m.0[0] == 0 {
                c.0[0] = 0;
            }
        }
        for (i, (c, t)) in core.pixels().zip(target.pixels()).enumerate() {
            if c.0[0] == 0 {
                warped[i] = t.0.map(|v| v as f32);
            }
        }
        colour_transfer(&mut warped, target, &core);
        Ok(poisson_blend(target, &warped, mask, self.max_iterations))
    }
}

/// Matches the mean and standard deviation of each channel of `img` inside the mask to `target`'s.
fn colour_transfer(img: &mut [[f32; 3]], target: &RgbImage, mask: &GrayImage) {
    let inside: Vec<usize> = mask.pixels().enumerate().filter(|(_, p)| p.0[0] > 0).map(|(i, _)| i).collect();
    if inside.len() < 2 {
        return;
    }
    let n = inside.len() as f64;
    let t: Vec<[f32; 3]> = target.pixels().map(|p| p.0.map(|v| v as f32)).collect();
    for c in 0..3 {
        let stats = |v: &dyn Fn(usize) -> f64| {
            let m = inside.iter().map(|&i| v(i)).sum::<f64>() / n;
            let s = (inside.iter().map(|&i| (v(i) - m).powi(2)).sum::<f64>() / n).sqrt();
            (m, s.max(1e-3))
        };
        let (ms, ss) = stats(&|i| img[i][c] as f64);
        let (mt, st) = stats(&|i| t[i][c] as f64);
        for &i in &inside {
            img[i][c] = (((img[i][c] as f64 - ms) * st / ss) + mt) as f32;
        }
    }
}

/// Seamless cloning: inside the mask, solve the discrete Poisson equation with the guidance
/// field of `guide` and Dirichlet boundary values from `target` (conjugate gradients per channel).
pub(crate) fn poisson_blend(target: &RgbImage, guide: &[[f32; 3]], mask: &GrayImage, max_iter: usize) -> RgbImage {
    let (w, h) = target.dimensions();
    let (wi, hi) = (w as i64, h as i64);
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && x < wi && y < hi && mask.get_pixel(x as u32, y as u32).0[0] > 0;
    let unknowns: Vec<(i64, i64)> = (0..hi).flat_map(|y| (0..wi).map(move |x| (x, y))).filter(|&(x, y)| inside(x, y)).collect();
    let mut index = vec![usize::MAX; (w * h) as usize];
    for (k, &(x, y)) in unknowns.iter().enumerate() {
        index[(y * wi + x) as usize] = k;
    }
    let n = unknowns.len();
    let tv = |x: i64, y: i64, c: usize| target.get_pixel(x as u32, y as u32).0[c] as f64;
    let gv = |x: i64, y: i64, c: usize| guide[(y * wi + x) as usize][c] as f64;
    let mut out: Vec<[f32; 3]> = target.pixels().map(|p| p.0.map(|v| v as f32)).collect();
    const NB: [(i64, i64); 4] = [(1, 0), (-1, 0), (0, 1), (0, -1)];
    for c in 0..3 {
        // A f = b, A = (number of in-image neighbours) I - adjacency within the mask
        let mut b = vec![0.0f64; n];
        let mut diag = vec![0.0f64; n];
        for (k, &(x, y)) in unknowns.iter().enumerate() {
            for (dx, dy) in NB {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= wi || ny >= hi {
                    continue;
                }
                diag[k] += 1.0;
                b[k] += gv(x, y, c) - gv(nx, ny, c);
                if !inside(nx, ny) {
                    b[k] += tv(nx, ny, c);
                }
            }
        }
        let apply = |v: &[f64], out: &mut [f64]| {
            for (k, &(x, y)) in unknowns.iter().enumerate() {
                let mut s = diag[k] * v[k];
                for (dx, dy) in NB {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx >= 0 && ny >= 0 && nx < wi && ny < hi {
                        let j = index[(ny * wi + nx) as usize];
                        if j != usize::MAX {
                            s -= v[j];
                        }
                    }
                }
                out[k] = s;
            }
        };
        let mut f: Vec<f64> = unknowns.iter().map(|&(x, y)| gv(x, y, c)).collect();
        let mut ap = vec![0.0; n];
        apply(&f, &mut ap);
        let mut r: Vec<f64> = b.iter().zip(&ap).map(|(bi, ai)| bi - ai).collect();
        let mut p = r.clone();
        let mut rr: f64 = r.iter().map(|v| v * v).sum();
        let tol = 1e-6 * b.iter().map(|v| v * v).sum::<f64>().max(1.0);
        for _ in 0..max_iter {
            if rr <= tol {
                break;
            }
            apply(&p, &mut ap);
            let alpha = rr / p.iter().zip(&ap).map(|(a, b)| a * b).sum::<f64>();
            for k in 0..n {
                f[k] += alpha * p[k];
                r[k] -= alpha * ap[k];
            }
            let rr_new: f64 = r.iter().map(|v| v * v).sum();
            let beta = rr_new / rr;
            for k in 0..n {
                p[k] = r[k] + beta * p[k];
            }
            rr = rr_new;
        }
        for (k, &(x, y)) in unknowns.iter().enumerate() {
            out[(y * wi + x) as usize][c] = f[k] as f32;
        }
    }
    RgbImage::from_fn(w, h, |x, y| image::Rgb(out[(y * w + x) as usize].map(|v| v.round().clamp(0.0, 255.0) as u8)))
}

impl Generator for ClassicSwap {
    fn method(&self) -> &'static str {
        "classic-swap"
    }
    fn needs_source(&self) -> bool {
        true
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        self.swap(input)
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": "classic-swap",
            "kind": "classical: dlib landmarks, Delaunay piecewise-affine warp, colour transfer, Poisson blending (no learned weights)",
            "max_cg_iterations": self.max_iterations,
            "execution_provider": "cpu (built-in)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_blend_meets_the_boundary() {
        // flat guide inside a disk: the solution is the flat target value everywhere
        let target = RgbImage::from_pixel(64, 64, image::Rgb([100, 120, 140]));
        let mut mask = GrayImage::new(64, 64);
        for y in 0..64 {
            for x in 0..64 {
                if (x as i32 - 32).pow(2) + (y as i32 - 32).pow(2) < 400 {
                    mask.put_pixel(x, y, image::Luma([255]));
                }
            }
        }
        let guide = vec![[200.0f32, 10.0, 60.0]; 64 * 64];
        let out = poisson_blend(&target, &guide, &mask, 2000);
        for p in out.pixels() {
            assert!((p.0[0] as i32 - 100).abs() <= 1 && (p.0[2] as i32 - 140).abs() <= 1, "{:?}", p.0);
        }
    }

    #[test]
    fn similarity_fit_recovers_a_transform() {
        let a: Vec<Pt> = (0..10).map(|i| Pt::new(i as f64 * 3.0, (i * i) as f64 * 0.5)).collect();
        let (c, s) = (0.3f64.cos() * 1.7, 0.3f64.sin() * 1.7);
        let b: Vec<Pt> = a.iter().map(|p| Pt::new(c * p.x - s * p.y + 5.0, s * p.x + c * p.y - 2.0)).collect();
        let t = Similarity::fit(&a, &b);
        for (p, q) in a.iter().zip(&b) {
            assert!(t.apply(*p).dist(*q) < 1e-9);
            assert!(t.inverse().apply(*q).dist(*p) < 1e-9);
        }
    }
}
