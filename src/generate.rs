//! `mmtt generate`: one forgery from files, outside any job (what IOPaint's `run` does for
//! inpainting users), also the Rust side of the ONNX parity tests (`--raw`).

use crate::dataset::import::decode::{DecodeLimits, read_image};
use anyhow::{Context, Result, anyhow, bail};
use image::GrayImage;
use mmtt_generators::detect::FaceFinder;
use mmtt_generators::forge::runtime::Device;
use mmtt_generators::forge::{ForgeInput, RawOutput, composite};
use mmtt_generators::registry::{DonorUse, Method};
use std::path::PathBuf;

pub struct GenerateArgs {
    pub method: String,
    pub image: PathBuf,
    pub mask: PathBuf,
    pub source: Option<PathBuf>,
    pub seed: u64,
    pub out: PathBuf,
    pub raw: Option<PathBuf>,
    pub models: PathBuf,
    pub device: Device,
    pub threads: usize,
    /// Generator settings (SDXL: prompt, negative_prompt, steps, guidance, strength).
    pub options: Option<serde_json::Value>,
    /// E4S: where to write the swapped region's mask (it replaces `--mask` in the composite).
    pub mask_out: Option<PathBuf>,
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    let limits = DecodeLimits::default();
    let target = read_image(&a.image, limits).map_err(|r| anyhow!("{}: {r}", a.image.display()))?.rgb;
    let mask_rgb = read_image(&a.mask, limits).map_err(|r| anyhow!("{}: {r}", a.mask.display()))?.rgb;
    if mask_rgb.dimensions() != target.dimensions() {
        bail!("the mask is {:?} but the image is {:?}: they must be the same size", mask_rgb.dimensions(), target.dimensions());
    }
    let mask = GrayImage::from_fn(target.width(), target.height(), |x, y| {
        let p = mask_rgb.get_pixel(x, y).0;
        image::Luma([if p.iter().any(|&v| v > 0) { 255 } else { 0 }])
    });
    let method: Method = a.method.parse()?;
    let face_aware = method.uses_parts();
    let (source, tl, sl) = if method.donor() == DonorUse::Required || (face_aware && a.source.is_some()) {
        let src_path = a.source.as_ref().ok_or_else(|| anyhow!("{} needs --source FACE (the donor face)", a.method))?;
        let src = read_image(src_path, limits).map_err(|r| anyhow!("{}: {r}", src_path.display()))?.rgb;
        let finder = FaceFinder::load()?;
        let first = |img: &image::RgbImage, p: &PathBuf| {
            finder.faces(img).into_iter().next().map(|f| f.landmarks).ok_or_else(|| anyhow!("no face found in {}", p.display()))
        };
        let tl = first(&target, &a.image)?;
        let sl = first(&src, src_path)?;
        (Some(src), Some(tl), Some(sl))
    } else if face_aware {
        // patch-inpaint without a donor: the target's face layout still guides it; a picture
        // without a face is inpainted from all of it
        let finder = FaceFinder::load()?;
        let tl = finder.faces(&target).into_iter().next().map(|f| f.landmarks);
        if tl.is_none() {
            eprintln!("no face found in {}: patch-inpaint copies from the whole picture", a.image.display());
        }
        (None, tl, None)
    } else {
        (None, None, None)
    };
    let input = ForgeInput {
        target: &target,
        mask: &mask,
        target_landmarks: tl.as_ref(),
        source: source.as_ref(),
        source_landmarks: sl.as_ref(),
        target_parts: None,
        source_parts: None,
        seed: a.seed,
        options: a.options.as_ref(),
    };
    let mut g = method.load(&a.models, a.device, a.threads)?;
    let RawOutput { image: generated, hwc: raw, mask: own_mask } = g.generate_raw(&input)?;
    if let (Some(p), Some(own)) = (&a.mask_out, &own_mask) {
        own.save_with_format(p, image::ImageFormat::Png).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let forged = composite(&target, &generated, own_mask.as_ref().unwrap_or(&mask));
    forged.save_with_format(&a.out, image::ImageFormat::Png).with_context(|| format!("cannot write {}", a.out.display()))?;
    if let Some(p) = &a.raw {
        let bytes: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
