//! Mask and image encoding: masks are single-channel 8-bit PNGs holding only 0 and 255.

use image::{GrayImage, ImageEncoder, RgbImage};

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("mask is {got_w}x{got_h}, expected {want}x{want}")]
    Size { got_w: u32, got_h: u32, want: u32 },
    #[error("mask has a pixel value {0} other than 0 and 255")]
    NotBinary(u8),
    #[error("could not encode or decode PNG: {0}")]
    Png(#[from] image::ImageError),
}

/// Encodes an RGB image as PNG (deterministic for the same pixels and `image` version).
pub fn encode_rgb_png(img: &RgbImage) -> Result<Vec<u8>, MaskError> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

/// Encodes a 0/255 mask as a single-channel PNG, checking it first.
pub fn encode_mask_png(mask: &GrayImage) -> Result<Vec<u8>, MaskError> {
    if let Some(p) = mask.pixels().find(|p| p.0[0] != 0 && p.0[0] != 255) {
        return Err(MaskError::NotBinary(p.0[0]));
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(mask.as_raw(), mask.width(), mask.height(), image::ExtendedColorType::L8)?;
    Ok(out)
}

/// Decodes a stored mask PNG and checks it is `size x size` and binary.
pub fn decode_mask_png(bytes: &[u8], size: u32) -> Result<GrayImage, MaskError> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)?.into_luma8();
    if img.dimensions() != (size, size) {
        return Err(MaskError::Size { got_w: img.width(), got_h: img.height(), want: size });
    }
    if let Some(p) = img.pixels().find(|p| p.0[0] != 0 && p.0[0] != 255) {
        return Err(MaskError::NotBinary(p.0[0]));
    }
    Ok(img)
}
