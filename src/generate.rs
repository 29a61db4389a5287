//! `mmtt generate`: one forgery from files, outside any job (what IOPaint's `run` does for
//! inpainting users), also the Rust side of the ONNX parity tests (`--raw`).

use crate::dataset::import::decode::{DecodeLimits, read_image};
use anyhow::{Context, Result, anyhow, bail};
use image::GrayImage;
use mmtt_generators::detect::FaceFinder;
use mmtt_generators::forge::classic_swap::ClassicSwap;
use mmtt_generators::forge::onnx::{Device, OnnxGenerator};
use mmtt_generators::forge::part_swap::PartSwap;
use mmtt_generators::forge::patch_inpaint::PatchInpaint;
use mmtt_generators::forge::{ForgeInput, Generator, composite};
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
    let face_aware = matches!(a.method.as_str(), "patch-inpaint" | "part-swap");
    let (source, tl, sl) = if matches!(a.method.as_str(), "classic-swap" | "e4s" | "part-swap") || (face_aware && a.source.is_some()) {
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
    let mut own_mask: Option<GrayImage> = None;
    let (generated, raw) = match a.method.as_str() {
        "sdxl" => {
            let mut g = mmtt_generators::forge::sdxl::Sdxl::load(&a.models, a.device, a.threads)?;
            let opts = g.options.with(a.options.as_ref())?;
            let out = g.run(&input, &opts)?;
            (mmtt_generators::forge::onnx::to_rgb(out.width, out.height, &out.hwc), out.hwc)
        }
        "e4s" => {
            let mut g = mmtt_generators::forge::e4s::E4s::load(&a.models, a.device, a.threads)?;
            let (img, own) = g.swap(&input)?;
            if let Some(p) = &a.mask_out {
                own.save_with_format(p, image::ImageFormat::Png).with_context(|| format!("cannot write {}", p.display()))?;
            }
            own_mask = Some(own);
            let raw = img.as_raw().iter().map(|&v| v as f32).collect();
            (img, raw)
        }
        "mat" | "lama" => {
            let mut g = OnnxGenerator::load_builtin(&a.method, &a.models, a.device, a.threads)?;
            let (w, h, hwc) = g.run_raw(&input)?;
            (mmtt_generators::forge::onnx::to_rgb(w, h, &hwc), hwc)
        }
        "patch-inpaint" | "classic-swap" | "part-swap" => {
            let mut g: Box<dyn Generator> = match a.method.as_str() {
                "patch-inpaint" => Box::new(PatchInpaint::default()),
                "part-swap" => Box::new(PartSwap::default()),
                _ => Box::new(ClassicSwap::default()),
            };
            let img = g.generate(&input)?;
            let raw = img.as_raw().iter().map(|&v| v as f32).collect();
            (img, raw)
        }
        other => bail!("unknown method `{other}`: known methods are classic-swap, e4s, patch-inpaint, part-swap, mat, lama, sdxl"),
    };
    let forged = composite(&target, &generated, own_mask.as_ref().unwrap_or(&mask));
    forged.save_with_format(&a.out, image::ImageFormat::Png).with_context(|| format!("cannot write {}", a.out.display()))?;
    if let Some(p) = &a.raw {
        let bytes: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
