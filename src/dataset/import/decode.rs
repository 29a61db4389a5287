//! Safe decoding of untrusted image files: format sniffed from the content, size checked from the
//! header before any pixel is decoded (decompression-bomb guard), allocation capped, truncated
//! JPEGs caught (the decoder would otherwise return a half-grey picture).

use image::{ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Limits for decoding one untrusted image.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted width or height in pixels.
    pub max_side: u32,
    /// Largest accepted decoded size in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_side: 12_000, max_alloc: 1 << 30 }
    }
}

/// A decoded image with the original file's bytes (for hashing).
pub struct Decoded {
    pub rgb: RgbImage,
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
}

/// Reads and decodes `path`; the error is a reason for people, naming the problem and the fix.
pub fn read_image(path: &Path, limits: DecodeLimits) -> Result<Decoded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    decode_image(bytes, limits)
}

pub fn decode_image(bytes: Vec<u8>, limits: DecodeLimits) -> Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("empty file: not an image".into());
    }
    let format = image::guess_format(&bytes)
        .map_err(|_| "not an image: the content is not JPEG, PNG or WebP (remove the file or convert it)".to_string())?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(format!("unsupported image format {format:?}: convert it to JPEG, PNG or WebP"));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(&bytes) {
        return Err("truncated JPEG: the file ends before its end-of-image marker (re-copy or re-download it)".into());
    }
    let header = ImageReader::with_format(Cursor::new(&bytes), format);
    let (w, h) = header.into_dimensions().map_err(|e| format!("corrupt image header: {e}"))?;
    if w == 0 || h == 0 {
        return Err("corrupt image: zero width or height".into());
    }
    if w > limits.max_side || h > limits.max_side {
        return Err(format!(
            "image is {w}x{h} px, over the {} px per side limit that guards against decompression bombs \
             (raise it with --max-side if the file is trusted)",
            limits.max_side
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(&bytes), format);
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_alloc);
    reader.limits(lim);
    let img = reader.decode().map_err(|e| format!("corrupt or truncated image: {e}"))?;
    Ok(Decoded { rgb: img.into_rgb8(), bytes, format })
}

/// A JPEG is complete when an end-of-image marker (FF D9) follows its last start-of-scan (FF DA).
/// Entropy-coded data stuffs every FF with 00, so neither marker can appear inside it.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let last = |m: u8| b.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn good_truncated_and_garbage() {
        let j = jpeg(64, 48);
        let d = decode_image(j.clone(), DecodeLimits::default()).unwrap();
        assert_eq!(d.rgb.dimensions(), (64, 48));
        let err = decode_image(j[..j.len() / 2].to_vec(), DecodeLimits::default()).err().unwrap();
        assert!(err.contains("truncated"), "{err}");
        let err = decode_image(b"hello world, not a picture".to_vec(), DecodeLimits::default()).err().unwrap();
        assert!(err.starts_with("not an image"), "{err}");
        let err = decode_image(j, DecodeLimits { max_side: 50, max_alloc: 1 << 30 }).err().unwrap();
        assert!(err.contains("64x48") && err.contains("--max-side"), "{err}");
    }
}
