//! Plane geometry and binary rasters: points, convex hulls, polygon filling and dilation.
//!
//! Everything here is pure and deterministic (no randomness, no I/O). Binary masks are
//! [`image::GrayImage`] with values 0 or 255; a pixel `(x, y)` is inside a polygon when its centre
//! `(x + 0.5, y + 0.5)` is (even-odd rule).

use image::{GrayImage, Luma};
use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};

/// A point in image coordinates (x to the right, y down), in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pt {
    pub x: f64,
    pub y: f64,
}

impl Pt {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
    pub fn scale(self, s: f64) -> Pt {
        Pt::new(self.x * s, self.y * s)
    }
    pub fn dot(self, o: Pt) -> f64 {
        self.x * o.x + self.y * o.y
    }
    pub fn norm(self) -> f64 {
        self.x.hypot(self.y)
    }
    pub fn dist(self, o: Pt) -> f64 {
        self.sub(o).norm()
    }
    /// The unit vector in this direction (the zero vector stays zero).
    pub fn unit(self) -> Pt {
        let n = self.norm();
        if n > 0.0 { self.scale(1.0 / n) } else { self }
    }
    /// Rotated by +90 degrees in image coordinates: `(x, y) -> (y, -x)`. For a vector pointing to
    /// the image right this gives one pointing up.
    pub fn perp_up(self) -> Pt {
        Pt::new(self.y, -self.x)
    }
}

impl std::ops::Add for Pt {
    type Output = Pt;
    fn add(self, o: Pt) -> Pt {
        Pt::new(self.x + o.x, self.y + o.y)
    }
}

impl std::ops::Sub for Pt {
    type Output = Pt;
    fn sub(self, o: Pt) -> Pt {
        Pt::new(self.x - o.x, self.y - o.y)
    }
}

/// Mean of a non-empty set of points (the origin for an empty one).
pub fn centroid(pts: &[Pt]) -> Pt {
    if pts.is_empty() {
        return Pt::default();
    }
    let s = pts.iter().fold(Pt::default(), |a, &p| a.add(p));
    s.scale(1.0 / pts.len() as f64)
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in a y-up frame, without collinear points.
pub fn convex_hull(points: &[Pt]) -> Vec<Pt> {
    let mut pts: Vec<Pt> = points.iter().copied().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    pts.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: Pt, a: Pt, b: Pt| (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
    let mut hull: Vec<Pt> = Vec::with_capacity(pts.len() * 2);
    for &p in &pts {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in pts.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}

/// An all-zero mask.
pub fn empty_mask(width: u32, height: u32) -> GrayImage {
    GrayImage::new(width, height)
}

/// Fills `poly` (even-odd rule, pixel centres) into `mask` with 255. Parts outside the raster are
/// clipped, so any polygon is safe to draw.
pub fn fill_polygon(mask: &mut GrayImage, poly: &[Pt]) {
    if poly.len() < 3 {
        return;
    }
    let (w, h) = mask.dimensions();
    let min_y = poly.iter().map(|p| p.y).fold(f64::INFINITY, f64::min);
    let max_y = poly.iter().map(|p| p.y).fold(f64::NEG_INFINITY, f64::max);
    if !min_y.is_finite() || !max_y.is_finite() {
        return;
    }
    let y0 = (min_y - 0.5).floor().max(0.0) as u32;
    let y1 = ((max_y - 0.5).ceil().max(-1.0) as i64).min(h as i64 - 1);
    if y1 < 0 {
        return;
    }
    let mut xs: Vec<f64> = Vec::with_capacity(8);
    for y in y0..=(y1 as u32) {
        let cy = y as f64 + 0.5;
        xs.clear();
        for i in 0..poly.len() {
            let a = poly[i];
            let b = poly[(i + 1) % poly.len()];
            if (a.y <= cy && b.y > cy) || (b.y <= cy && a.y > cy) {
                xs.push(a.x + (cy - a.y) / (b.y - a.y) * (b.x - a.x));
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            // pixels whose centre x + 0.5 lies in [pair[0], pair[1])
            let start = (pair[0] - 0.5).ceil().max(0.0);
            let end = ((pair[1] - 0.5).ceil()).min(w as f64);
            let mut x = start;
            while x < end {
                mask.put_pixel(x as u32, y, Luma([255]));
                x += 1.0;
            }
        }
    }
}

/// Dilates a binary mask by a disk of `radius` pixels (Euclidean distance transform, exact).
pub fn dilate(mask: &GrayImage, radius: f64) -> GrayImage {
    if radius <= 0.0 {
        return mask.clone();
    }
    let d2 = squared_distance_to_set(mask);
    let r2 = radius * radius;
    let (w, h) = mask.dimensions();
    GrayImage::from_fn(w, h, |x, y| Luma([if d2[(y * w + x) as usize] <= r2 { 255 } else { 0 }]))
}

/// Squared Euclidean distance from every pixel to the nearest set (non-zero) pixel
/// (Felzenszwalb and Huttenlocher's separable transform). Pixels of an empty mask get infinity.
fn squared_distance_to_set(mask: &GrayImage) -> Vec<f64> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let inf = 1e20;
    let mut grid: Vec<f64> = mask.pixels().map(|p| if p.0[0] > 0 { 0.0 } else { inf }).collect();
    let n = w.max(h);
    let mut f = vec![0.0; n];
    let mut out = vec![0.0; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0; n + 1];
    for x in 0..w {
        for y in 0..h {
            f[y] = grid[y * w + x];
        }
        edt_1d(&f[..h], &mut out[..h], &mut v, &mut z);
        for y in 0..h {
            grid[y * w + x] = out[y];
        }
    }
    for y in 0..h {
        f[..w].copy_from_slice(&grid[y * w..(y + 1) * w]);
        edt_1d(&f[..w], &mut out[..w], &mut v, &mut z);
        grid[y * w..(y + 1) * w].copy_from_slice(&out[..w]);
    }
    grid
}

fn edt_1d(f: &[f64], d: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for q in 1..n {
        let mut s;
        loop {
            let p = v[k];
            s = ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * q as f64 - 2.0 * p as f64);
            if s <= z[k] && k > 0 {
                k -= 1;
            } else {
                break;
            }
        }
        if s <= z[k] {
            // k == 0 and the new parabola dominates everywhere
            v[0] = q;
            z[0] = f64::NEG_INFINITY;
            z[1] = f64::INFINITY;
            continue;
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dx = q as f64 - p as f64;
        *dq = dx * dx + f[p];
    }
}

/// `a OR b`, pixelwise.
pub fn union_into(a: &mut GrayImage, b: &GrayImage) {
    for (pa, pb) in a.pixels_mut().zip(b.pixels()) {
        if pb.0[0] > 0 {
            pa.0[0] = 255;
        }
    }
}

/// `a AND NOT b`, pixelwise.
pub fn subtract_into(a: &mut GrayImage, b: &GrayImage) {
    for (pa, pb) in a.pixels_mut().zip(b.pixels()) {
        if pb.0[0] > 0 {
            pa.0[0] = 0;
        }
    }
}

/// Number of set pixels.
pub fn count_set(mask: &GrayImage) -> u64 {
    mask.pixels().filter(|p| p.0[0] > 0).count() as u64
}

/// Turns any grayscale raster into a strict 0/255 mask (`> 0` is set).
pub fn binarize(mask: &mut GrayImage) {
    for p in mask.pixels_mut() {
        p.0[0] = if p.0[0] > 0 { 255 } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_square_with_inner_point() {
        let pts = [Pt::new(0., 0.), Pt::new(4., 0.), Pt::new(4., 4.), Pt::new(0., 4.), Pt::new(2., 2.)];
        let h = convex_hull(&pts);
        assert_eq!(h.len(), 4);
        assert!(!h.contains(&Pt::new(2., 2.)));
    }

    #[test]
    fn polygon_fill_area_matches_rectangle() {
        let mut m = empty_mask(20, 20);
        fill_polygon(&mut m, &[Pt::new(2., 3.), Pt::new(12., 3.), Pt::new(12., 8.), Pt::new(2., 8.)]);
        assert_eq!(count_set(&m), 10 * 5);
        assert_eq!(m.get_pixel(2, 3).0[0], 255);
        assert_eq!(m.get_pixel(12, 3).0[0], 0);
    }

    #[test]
    fn polygon_outside_is_clipped() {
        let mut m = empty_mask(10, 10);
        fill_polygon(&mut m, &[Pt::new(-50., -50.), Pt::new(50., -50.), Pt::new(50., 50.), Pt::new(-50., 50.)]);
        assert_eq!(count_set(&m), 100);
        let mut m2 = empty_mask(10, 10);
        fill_polygon(&mut m2, &[Pt::new(20., 20.), Pt::new(30., 20.), Pt::new(30., 30.)]);
        assert_eq!(count_set(&m2), 0);
    }

    #[test]
    fn dilation_of_point_is_disk() {
        let mut m = empty_mask(41, 41);
        m.put_pixel(20, 20, Luma([255]));
        let d = dilate(&m, 10.0);
        let n = count_set(&d) as f64;
        let disk = std::f64::consts::PI * 100.0;
        assert!((n - disk).abs() / disk < 0.05, "{n} vs {disk}");
        assert_eq!(d.get_pixel(30, 20).0[0], 255);
        assert_eq!(d.get_pixel(31, 20).0[0], 0);
        assert_eq!(d.get_pixel(28, 28).0[0], 0); // sqrt(128) > 10
    }
}
