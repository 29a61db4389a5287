//! Images to pixel values as `ViTImageProcessor` makes them: resize to the model's size with
//! Pillow's BILINEAR resampling (reproduced exactly: [`pil_bilinear`]; skipped when the image
//! already has that size), rescale by 1/255, normalise with the checkpoint's mean and std;
//! channels first.

use super::FpnError;
use super::config::Preprocess;
use image::RgbImage;
use std::path::Path;

impl Preprocess {
    /// `[3, H, W]` values, channels first, for one image; `flip` mirrors it left to right.
    pub fn pixels(&self, img: &RgbImage, flip: bool) -> Vec<f32> {
        let resized;
        let img = if self.do_resize && (img.width() as usize != self.width || img.height() as usize != self.height) {
            resized = pil_bilinear(img, self.width as u32, self.height as u32);
            &resized
        } else {
            img
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let scale = if self.do_rescale { self.rescale_factor as f32 } else { 1.0 };
        let mut out = vec![0f32; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            let xs = if flip { w - 1 - x as usize } else { x as usize };
            for c in 0..3 {
                let mut v = p.0[c] as f32 * scale;
                if self.do_normalize {
                    v = (v - self.mean[c]) / self.std[c];
                }
                out[c * h * w + y as usize * w + xs] = v;
            }
        }
        out
    }

    /// Decodes an image file (any format the `image` crate reads) to RGB.
    pub fn open(path: &Path) -> Result<RgbImage, FpnError> {
        let img = image::open(path).map_err(|e| FpnError::Image { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(img.to_rgb8())
    }
}

/// Pillow's fixed-point precision for 8-bit images (`Resample.c`: 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Pillow's resampling filters (`Resample.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle, support 1.
    Bilinear,
    /// Keys cubic with a = -0.5, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Per output pixel: (first input index, fixed-point weights), as Pillow's `precompute_coeffs`
/// and `normalize_coeffs_8bpc` compute them; the filter's support widens by the downscale factor.
fn pil_coeffs(in_size: u32, out_size: u32, filter: Filter) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let w: Vec<f64> = (0..xmax.max(0)).map(|x| filter.weight(((x + xmin) as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|k| {
                    let k = if ww != 0.0 { k / ww } else { *k };
                    let f = k * (1u64 << PRECISION_BITS) as f64;
                    if k < 0.0 { (f - 0.5) as i64 } else { (f + 0.5) as i64 }
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// `PIL.Image.resize((w, h), Image.BILINEAR)` on an RGB image, bit for bit.
pub fn pil_bilinear(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    pil_resize(img, w, h, Filter::Bilinear)
}

/// `PIL.Image.resize((w, h), filter)` on an RGB image, bit for bit as Pillow 13 computes it: two
/// separable passes, each rounding to 8 bits, horizontal first unless the height shrinks by more
/// than twice as many pixels as the width (`ImagingResampleInner`; Pillow before 13 always went
/// horizontal first, which differs only in that case).
pub fn pil_resize(img: &RgbImage, w: u32, h: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let shrink_h = ih as i64 - h as i64;
    let vertical_first = shrink_h > 0 && shrink_h > (iw as i64 - w as i64) * 2;
    if vertical_first {
        let v = if ih != h { vertical_pass(img, h, filter) } else { img.clone() };
        if iw != w { horizontal_pass(&v, w, filter) } else { v }
    } else {
        let t = if iw != w { horizontal_pass(img, w, filter) } else { img.clone() };
        if ih != h { vertical_pass(&t, h, filter) } else { t }
    }
}

fn horizontal_pass(img: &RgbImage, w: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let cx = pil_coeffs(iw, w, filter);
    RgbImage::from_fn(w, ih, |x, y| {
        let (x0, k) = &cx[x as usize];
        let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
        for (i, kk) in k.iter().enumerate() {
            let p = img.get_pixel((x0 + i) as u32, y).0;
            for c in 0..3 {
                acc[c] += p[c] as i64 * kk;
            }
        }
        image::Rgb(acc.map(clip8))
    })
}

fn vertical_pass(img: &RgbImage, h: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let cy = pil_coeffs(ih, h, filter);
    RgbImage::from_fn(iw, h, |x, y| {
        let (y0, k) = &cy[y as usize];
        let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
        for (i, kk) in k.iter().enumerate() {
            let p = img.get_pixel(x, (y0 + i) as u32).0;
            for c in 0..3 {
                acc[c] += p[c] as i64 * kk;
            }
        }
        image::Rgb(acc.map(clip8))
    })
}
