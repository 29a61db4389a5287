//! Images to pixel values as `ViTImageProcessor` makes them: resize to the model's size
//! (bilinear, skipped when the image already has that size), rescale by 1/255, normalise with
//! the checkpoint's mean and std; channels first.

use super::FpnError;
use super::config::Preprocess;
use image::RgbImage;
use image::imageops::FilterType;
use std::path::Path;

impl Preprocess {
    /// `[3, H, W]` values, channels first, for one image; `flip` mirrors it left to right.
    pub fn pixels(&self, img: &RgbImage, flip: bool) -> Vec<f32> {
        let resized;
        let img = if self.do_resize && (img.width() as usize != self.width || img.height() as usize != self.height) {
            resized = image::imageops::resize(img, self.width as u32, self.height as u32, FilterType::Triangle);
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
