//! The platform side of ForgeryTalker's explainer (the model is `mmtt_model::talker`): what
//! `mmtt explain` and the web app's explain page share. Owns the checks of people's input (region
//! words, generation settings), mask files (the binary mask at the image's own size, written
//! atomically), the PNG and `data:` URL encodings of masks and overlays, and [`TalkerService`]:
//! the model a server was configured with, loaded lazily once and run one inference at a time.

use image::{GrayImage, ImageFormat, RgbImage, RgbaImage};
use mmtt_model::fpn::LABELS;
use mmtt_model::talker::{ExplainOptions, Explainer, Explanation, GenerationConfig, Mask, Prompting};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Region words as the instruction uses them: trimmed, lower-cased, each one of the 21 labels
/// ([`LABELS`]), without repeats, in label order (the order the FPN's regions take, so one set of
/// regions always gives one instruction). The error names the word and lists the labels.
pub fn parse_regions<S: AsRef<str>>(words: &[S]) -> Result<Vec<String>, String> {
    let mut on = [false; 21];
    for w in words {
        let w = w.as_ref().trim().to_lowercase();
        if w.is_empty() {
            continue;
        }
        match LABELS.iter().position(|l| *l == w) {
            Some(i) => on[i] = true,
            None => {
                return Err(format!("`{w}` is not a region word: use some of the 21 labels {} (comma-separated)", LABELS.join(", ")));
            }
        }
    }
    let out: Vec<String> = LABELS.iter().zip(on).filter(|(_, o)| *o).map(|(l, _)| l.to_string()).collect();
    if out.is_empty() {
        return Err(format!("no region word given: name at least one of {}", LABELS.join(", ")));
    }
    Ok(out)
}

/// Upper bounds of the generation settings a caller may ask for.
#[derive(Debug, Clone, Copy)]
pub struct GenerationLimits {
    pub max_beams: usize,
    pub max_new_tokens: usize,
}

impl GenerationLimits {
    /// The command line's: generous (a user's own machine).
    pub const CLI: GenerationLimits = GenerationLimits { max_beams: 64, max_new_tokens: 4096 };
    /// The web page's: one request must not hold the server's only model for long.
    pub const WEB: GenerationLimits = GenerationLimits { max_beams: 10, max_new_tokens: 300 };
}

/// Generation settings checked against `limits`; the error is the setting's field name and a
/// message naming it and the fix (`flag` turns a field name into what the caller calls it:
/// `--num-beams`, `num_beams`).
pub fn check_generation(
    g: &GenerationConfig,
    limits: GenerationLimits,
    flag: impl Fn(&str) -> String,
) -> Result<(), (&'static str, String)> {
    if g.num_beams == 0 || g.num_beams > limits.max_beams {
        return Err(("num_beams", format!("{} must be between 1 and {} (1: greedy search)", flag("num_beams"), limits.max_beams)));
    }
    if g.max_new_tokens == 0 || g.max_new_tokens > limits.max_new_tokens {
        return Err(("max_new_tokens", format!("{} must be between 1 and {}", flag("max_new_tokens"), limits.max_new_tokens)));
    }
    if !(g.repetition_penalty.is_finite() && g.repetition_penalty > 0.0) {
        return Err(("repetition_penalty", format!("{} must be a number above 0 (1.0: no penalty)", flag("repetition_penalty"))));
    }
    if !g.length_penalty.is_finite() {
        return Err(("length_penalty", format!("{} must be a finite number (1.0: the release's)", flag("length_penalty"))));
    }
    Ok(())
}

/// PNG bytes of an image.
pub fn png_bytes(img: &image::DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Writes `mask` as a PNG at `path` atomically: a temporary file in the same folder, renamed
/// over `path` once complete (a reader never sees half a file).
pub fn write_mask_png(mask: &GrayImage, path: &Path) -> std::io::Result<()> {
    let bytes = png_bytes(&image::DynamicImage::ImageLuma8(mask.clone())).map_err(std::io::Error::other)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// The mask file's name for `image`: its stem with `_mask.png` (never the image's own name,
/// should the mask folder be the images' folder); a stem seen before gets `_2`, `_3`, ...
pub fn mask_file_name(image: &Path, used: &mut std::collections::HashSet<String>) -> String {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty()).unwrap_or_else(|| "image".into());
    let mut name = format!("{stem}_mask.png");
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{stem}_{n}_mask.png");
    }
    name
}

/// The mask drawn over an image of `w` x `h`: the forged pixels (nearest-resized binary mask) in
/// a translucent red, the rest transparent.
pub fn overlay(mask: &Mask, w: u32, h: u32) -> RgbaImage {
    let bin = mask.binary_resized(w, h);
    RgbaImage::from_fn(w, h, |x, y| if bin.get_pixel(x, y)[0] > 127 { image::Rgba([255, 40, 40, 130]) } else { image::Rgba([0, 0, 0, 0]) })
}

/// `img` scaled down (never up) so that its longer side is at most `max_side`.
pub fn fit(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w.max(h) <= max_side {
        return img.clone();
    }
    let s = max_side as f64 / w.max(h) as f64;
    let (nw, nh) = (((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1));
    image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
}

/// A `data:image/png;base64,...` URL of PNG bytes.
pub fn png_data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64(png))
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    out
}

/// Where a server's explainer comes from (`mmtt serve --talker DIR [--talker-fpn DIR]`).
#[derive(Debug, Clone)]
pub struct TalkerConfig {
    /// A ForgeryTalker / InstructBLIP checkpoint folder (see `mmtt explain --checkpoint`).
    pub checkpoint: PathBuf,
    /// An FPN checkpoint folder overriding the checkpoint's own.
    pub fpn: Option<PathBuf>,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

/// What a loaded model is, for the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// [`Explainer::describe`].
    pub describe: String,
    pub has_fpn: bool,
    pub has_mask_branch: bool,
}

/// Why the service gave no explanation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "no explainer model is configured on this server: start it with `mmtt serve --talker DIR` (a ForgeryTalker or InstructBLIP checkpoint folder; `--talker-fpn DIR` for a separate FPN), or set MMTT_TALKER"
    )]
    NotConfigured,
    /// The configured model did not load (a server configuration problem; retried on the next request).
    #[error("the explainer model {checkpoint} did not load: {message}")]
    Load { checkpoint: String, message: String },
    /// The request cannot be answered by this model (e.g. FPN prompting without an FPN).
    #[error("{0}")]
    Input(String),
    #[error("the explainer failed: {0}")]
    Model(String),
}

/// The server's explainer: configured at start, loaded on first use (so a server starts at once
/// and a model that does not load is reported on the page, not fatal), then kept. One inference
/// runs at a time (the model holds the whole machine's compute); callers wait for the lock, in a
/// blocking thread (`tokio::task::spawn_blocking`), never on the async runtime.
pub struct TalkerService {
    config: Option<TalkerConfig>,
    model: Mutex<Option<Explainer>>,
    info: OnceLock<ModelInfo>,
}

impl TalkerService {
    pub fn unconfigured() -> Self {
        TalkerService { config: None, model: Mutex::new(None), info: OnceLock::new() }
    }

    pub fn new(config: TalkerConfig) -> Self {
        TalkerService { config: Some(config), model: Mutex::new(None), info: OnceLock::new() }
    }

    pub fn config(&self) -> Option<&TalkerConfig> {
        self.config.as_ref()
    }

    /// The model's description once it has loaded.
    pub fn info(&self) -> Option<&ModelInfo> {
        self.info.get()
    }

    /// Loads the model now unless it is loaded (blocking).
    pub fn load(&self) -> Result<ModelInfo, ServiceError> {
        let mut guard = self.model.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure(&mut guard)
    }

    fn ensure(&self, slot: &mut Option<Explainer>) -> Result<ModelInfo, ServiceError> {
        let cfg = self.config.as_ref().ok_or(ServiceError::NotConfigured)?;
        if slot.is_none() {
            let load_err = |message: String| ServiceError::Load { checkpoint: cfg.checkpoint.display().to_string(), message };
            let device = mmtt_model::fpn::parse_device(&cfg.device).map_err(|e| load_err(e.to_string()))?;
            let t = std::time::Instant::now();
            let e = Explainer::load(&cfg.checkpoint, cfg.fpn.as_deref(), &device).map_err(|e| load_err(e.to_string()))?;
            let info = ModelInfo { describe: e.describe(), has_fpn: e.has_fpn(), has_mask_branch: e.has_mask_branch() };
            tracing::info!(model = %info.describe, seconds = t.elapsed().as_secs_f64(), "explainer loaded");
            let _ = self.info.set(info);
            *slot = Some(e);
        }
        self.info.get().cloned().ok_or_else(|| ServiceError::Model("the model loaded without its description".into()))
    }

    /// Explains `images` (blocking; loads the model first if needed; waits for any running
    /// inference). FPN prompting on a model without an FPN is refused before any work.
    pub fn explain(&self, images: &[RgbImage], opts: &ExplainOptions) -> Result<(Vec<Explanation>, ModelInfo), ServiceError> {
        let mut guard = self.model.lock().unwrap_or_else(|p| p.into_inner());
        let info = self.ensure(&mut guard)?;
        if opts.prompting == Prompting::Fpn && !info.has_fpn {
            return Err(ServiceError::Input(
                "this model has no FPN to choose the regions: pick regions or write an instruction (or configure one with `mmtt serve --talker-fpn DIR`)"
                    .into(),
            ));
        }
        let model = guard.as_ref().ok_or_else(|| ServiceError::Model("the model is not loaded".into()))?;
        let out = model.explain(images, opts).map_err(|e| ServiceError::Model(e.to_string()))?;
        Ok((out, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_checked_and_put_in_label_order() {
        assert_eq!(parse_regions(&["Lip", " eye ", "lip"]).unwrap(), ["eye", "lip"]);
        let e = parse_regions(&["eye", "elbow"]).unwrap_err();
        assert!(e.contains("`elbow` is not a region word") && e.contains("pupil") && e.contains("dimple"), "{e}");
        assert!(parse_regions(&["", " "]).unwrap_err().contains("no region word"));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn mask_names_never_collide() {
        let mut used = Default::default();
        assert_eq!(mask_file_name(Path::new("a/x.png"), &mut used), "x_mask.png");
        assert_eq!(mask_file_name(Path::new("b/x.jpg"), &mut used), "x_2_mask.png");
        assert_eq!(mask_file_name(Path::new("y"), &mut used), "y_mask.png");
    }

    #[test]
    fn masks_are_written_whole_and_binary() {
        let d = tempfile::tempdir().unwrap();
        let m = Mask { size: 2, probs: vec![0.9, 0.1, 0.2, 0.7] };
        let p = d.path().join("m.png");
        write_mask_png(&m.binary_resized(5, 3), &p).unwrap();
        let back = image::open(&p).unwrap().into_luma8();
        assert_eq!(back.dimensions(), (5, 3));
        assert!(back.pixels().all(|v| v[0] == 0 || v[0] == 255));
        assert_eq!(back.get_pixel(0, 0)[0], 255);
        assert_eq!(back.get_pixel(4, 0)[0], 0);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file is left behind");
    }

    #[test]
    fn generation_settings_are_bounded() {
        let flag = |f: &str| format!("--{}", f.replace('_', "-"));
        assert!(check_generation(&GenerationConfig::release(), GenerationLimits::WEB, flag).is_ok());
        let g = GenerationConfig { num_beams: 0, ..GenerationConfig::release() };
        assert!(check_generation(&g, GenerationLimits::CLI, flag).unwrap_err().1.contains("--num-beams"));
        let g = GenerationConfig { repetition_penalty: f32::NAN, ..GenerationConfig::release() };
        assert!(check_generation(&g, GenerationLimits::CLI, flag).unwrap_err().0 == "repetition_penalty");
        let g = GenerationConfig { max_new_tokens: 1000, ..GenerationConfig::release() };
        assert!(check_generation(&g, GenerationLimits::WEB, flag).is_err());
    }
}
