//! `sdxl`: Stable Diffusion XL inpainting over ONNX Runtime, from an Optimum-layout export of
//! `stable-diffusion-xl-1.0-inpainting-0.1` (`MODELS/sdxl/`: `tokenizer/`, `tokenizer_2/`,
//! `text_encoder/`, `text_encoder_2/`, `unet/`, `vae_encoder/`, `vae_decoder/`,
//! `scheduler/scheduler_config.json`). The graphs' names, types and shapes are in
//! `generators/manifests/sdxl.json` and are checked at load.
//!
//! The pipeline follows diffusers' `StableDiffusionXLInpaintPipeline` for a 9-channel UNet:
//! 1. The face (512 in MMTT) is upscaled to the model's 1024 (bilinear, half-pixel centres), the
//!    mask by pixel replication; both to `[-1, 1]` / `{0, 1}`; the masked image keeps the pixels
//!    outside the mask.
//! 2. Prompt and negative prompt through both CLIP tokenizers (BPE via the `tokenizers` crate) and
//!    text encoders: the penultimate hidden states of both, concatenated (768 + 1280 = 2048), and
//!    the second encoder's pooled `text_embeds`; `time_ids` = (original size, crop (0, 0), target
//!    size) = (1024, 1024, 0, 0, 1024, 1024).
//! 3. The VAE encodes image and masked image; the latent distribution's mean (the first four
//!    channels of `latent_parameters`) times the scaling factor 0.13025 (diffusers samples here;
//!    the mean keeps a seed's result reproducible). The mask goes to latent size by nearest.
//! 4. Euler discrete scheduling from `scheduler_config.json` (scaled-linear betas, `leading`,
//!    `trailing` or `linspace` spacing, epsilon or v prediction), or DPM-Solver++ 2M on the same
//!    sigmas (`scheduler: "dpm++2m"`), `strength` choosing the first step; the starting noise is SplitMix64(seed) + Box-Muller ([`super::SplitMix64::normals`]),
//!    so a Python reference reproduces it exactly. Classifier-free guidance with the unconditional
//!    and conditional halves in one UNet batch.
//! 5. The VAE decodes `latents / 0.13025`; the image goes back to `[0, 1]` and down to the face's
//!    size by box averaging. The platform composites it ([`super::composite`]).
//!
//! Graphs exported in float16 run unchanged: inputs are converted to the declared type
//! ([`super::graph`]). The UNet session's memory (resident memory taken by its creation) is
//! reported in the provenance.

use super::graph::{Data, Graph, GraphSpec, rss_bytes};
use super::runtime::Device;
use super::{ForgeError, ForgeInput, Generator, SplitMix64, check_input};
use ndarray::{Array4, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = include_str!("../../manifests/sdxl.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdxlManifest {
    pub name: String,
    pub description: String,
    pub license: String,
    pub folder: String,
    pub model_size: u32,
    pub vae_scaling_factor: f32,
    pub tokenizers: [String; 2],
    pub text_hidden_outputs: [String; 2],
    pub pooled_output: String,
    pub graphs: BTreeMap<String, GraphSpec>,
    pub defaults: SdxlOptions,
}

/// Per-job settings (`forge_jobs.params`; missing keys take the manifest's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdxlOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub strength: f32,
    pub scheduler: String,
}

impl SdxlOptions {
    /// The defaults overridden by the keys of `params` that are present.
    pub fn with(&self, params: Option<&serde_json::Value>) -> Result<Self, ForgeError> {
        let mut v = serde_json::to_value(self).map_err(|e| ForgeError::Input(e.to_string()))?;
        if let (Some(serde_json::Value::Object(p)), Some(o)) = (params, v.as_object_mut()) {
            for (k, val) in p {
                if o.contains_key(k) {
                    o.insert(k.clone(), val.clone());
                }
            }
        }
        let o: SdxlOptions = serde_json::from_value(v).map_err(|e| ForgeError::Input(format!("sdxl options: {e}")))?;
        if o.steps == 0 || o.steps > 1000 {
            return Err(ForgeError::Input(format!("sdxl: steps must be 1..=1000, got {}", o.steps)));
        }
        if !(o.strength > 0.0 && o.strength <= 1.0) {
            return Err(ForgeError::Input(format!("sdxl: strength must be in (0, 1], got {}", o.strength)));
        }
        if o.scheduler != "euler" && o.scheduler != "dpm++2m" {
            return Err(ForgeError::Input(format!("sdxl: unknown scheduler `{}` (supported: euler, dpm++2m)", o.scheduler)));
        }
        Ok(o)
    }
}

/// The CLIP BPE tokenizer of one `tokenizer*/` folder: `tokenizer.json` when present, else
/// `vocab.json` + `merges.txt` assembled as Hugging Face's CLIP converter does (NFC, whitespace
/// runs to one space, lowercase; CLIP's split pattern; byte-level BPE with `</w>` word ends).
pub struct ClipTokenizer {
    tk: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

fn tok_err(dir: &Path, e: impl std::fmt::Display) -> ForgeError {
    ForgeError::Model(format!("tokenizer {}: {e}", dir.display()))
}

/// A special token from `tokenizer_config.json` / `special_tokens_map.json`: a string or
/// `{"content": ...}`.
fn special(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ClipTokenizer {
    pub fn load(dir: &Path) -> Result<Self, ForgeError> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSeq};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};
        let mut cfg = serde_json::Value::Object(Default::default());
        for f in ["special_tokens_map.json", "tokenizer_config.json"] {
            if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| tok_err(dir, format!("{f}: {e}")))?;
                if let (Some(o), serde_json::Value::Object(n)) = (cfg.as_object_mut(), v) {
                    o.extend(n);
                }
            }
        }
        let bos_s = special(&cfg, "bos_token").unwrap_or_else(|| "<|startoftext|>".into());
        let eos_s = special(&cfg, "eos_token").unwrap_or_else(|| "<|endoftext|>".into());
        let pad_s = special(&cfg, "pad_token").unwrap_or_else(|| eos_s.clone());
        let unk_s = special(&cfg, "unk_token").unwrap_or_else(|| eos_s.clone());
        let max_len = cfg.get("model_max_length").and_then(|v| v.as_u64()).filter(|&n| n <= 4096).unwrap_or(77) as usize;
        let tk = if dir.join("tokenizer.json").is_file() {
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| tok_err(dir, e))?
        } else {
            let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if !v.is_file() || !m.is_file() {
                return Err(tok_err(dir, "neither tokenizer.json nor vocab.json + merges.txt is there"));
            }
            let bpe = BPE::from_file(&v.to_string_lossy(), &m.to_string_lossy())
                .end_of_word_suffix("</w>".into())
                .unk_token(unk_s)
                .build()
                .map_err(|e| tok_err(dir, e))?;
            let mut tk = tokenizers::Tokenizer::new(bpe);
            let ws =
                Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ").map_err(|e| tok_err(dir, e))?;
            tk.with_normalizer(Some(NormalizerWrapper::from(NormSeq::new(vec![NFC.into(), ws.into(), Lowercase.into()]))));
            let split = Split::new(
                SplitPattern::Regex(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+".into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(|e| tok_err(dir, e))?;
            tk.with_pre_tokenizer(Some(PreTokenizerWrapper::from(PreSeq::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ]))));
            tk
        };
        let id = |s: &str| tk.token_to_id(s).ok_or_else(|| tok_err(dir, format!("special token {s} is not in the vocabulary")));
        Ok(ClipTokenizer { bos: id(&bos_s)?, eos: id(&eos_s)?, pad: id(&pad_s)?, max_len, tk })
    }

    /// `[bos] + tokens (truncated) + [eos]`, padded to the model length.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ForgeError> {
        let enc = self.tk.encode(text, false).map_err(|e| ForgeError::Input(format!("tokenizing {text:?}: {e}")))?;
        let mut ids = vec![self.bos as i64];
        ids.extend(enc.get_ids().iter().take(self.max_len - 2).map(|&i| i as i64));
        ids.push(self.eos as i64);
        ids.resize(self.max_len, self.pad as i64);
        Ok(ids)
    }
}

/// `scheduler/scheduler_config.json` (diffusers' EulerDiscreteScheduler).
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_train")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_bstart")]
    pub beta_start: f64,
    #[serde(default = "d_bend")]
    pub beta_end: f64,
    #[serde(default = "d_sched")]
    pub beta_schedule: String,
    #[serde(default = "d_spacing")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "d_pred")]
    pub prediction_type: String,
    #[serde(default)]
    pub use_karras_sigmas: bool,
}
fn d_train() -> usize {
    1000
}
fn d_bstart() -> f64 {
    0.00085
}
fn d_bend() -> f64 {
    0.012
}
fn d_sched() -> String {
    "scaled_linear".into()
}
fn d_spacing() -> String {
    "leading".into()
}
fn d_pred() -> String {
    "epsilon".into()
}

/// The discrete timesteps and their sigmas for a number of steps (`set_timesteps`).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub timesteps: Vec<f32>,
    /// One more than `timesteps`: the last is 0.
    pub sigmas: Vec<f32>,
    pub init_noise_sigma: f32,
}

impl SchedulerConfig {
    pub fn check(&self) -> Result<(), ForgeError> {
        let bad = |what: &str, v: &str| Err(ForgeError::Model(format!("scheduler_config.json: {what} `{v}` is not supported")));
        if !["scaled_linear", "linear"].contains(&self.beta_schedule.as_str()) {
            return bad("beta_schedule", &self.beta_schedule);
        }
        if !["leading", "trailing", "linspace"].contains(&self.timestep_spacing.as_str()) {
            return bad("timestep_spacing", &self.timestep_spacing);
        }
        if !["epsilon", "v_prediction"].contains(&self.prediction_type.as_str()) {
            return bad("prediction_type", &self.prediction_type);
        }
        if self.use_karras_sigmas {
            return bad("use_karras_sigmas", "true");
        }
        Ok(())
    }

    pub fn schedule(&self, steps: usize) -> Schedule {
        let n = self.num_train_timesteps;
        let betas: Vec<f64> = (0..n)
            .map(|i| {
                let f = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
                if self.beta_schedule == "linear" {
                    self.beta_start + f * (self.beta_end - self.beta_start)
                } else {
                    let (a, b) = (self.beta_start.sqrt(), self.beta_end.sqrt());
                    (a + f * (b - a)).powi(2)
                }
            })
            .collect();
        let mut ac = 1.0;
        let full: Vec<f64> = betas
            .iter()
            .map(|b| {
                ac *= 1.0 - b;
                ((1.0 - ac) / ac).sqrt()
            })
            .collect();
        let ts: Vec<f64> = match self.timestep_spacing.as_str() {
            "leading" => {
                let ratio = n / steps;
                (0..steps).rev().map(|i| (i * ratio) as f64 + self.steps_offset as f64).collect()
            }
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                (0..steps).map(|i| (n as f64 - i as f64 * ratio).round() - 1.0).collect()
            }
            _ => (0..steps).rev().map(|i| if steps > 1 { i as f64 * (n - 1) as f64 / (steps - 1) as f64 } else { 0.0 }).collect(),
        };
        let interp = |t: f64| {
            let t = t.clamp(0.0, (n - 1) as f64);
            let i = (t.floor() as usize).min(n - 1);
            let j = (i + 1).min(n - 1);
            full[i] + (t - i as f64) * (full[j] - full[i])
        };
        let mut sigmas: Vec<f32> = ts.iter().map(|&t| interp(t) as f32).collect();
        sigmas.push(0.0);
        let max = sigmas.iter().copied().fold(0.0f32, f32::max);
        let init_noise_sigma = if self.timestep_spacing == "leading" { (max * max + 1.0).sqrt() } else { max };
        Schedule { timesteps: ts.iter().map(|&t| t as f32).collect(), sigmas, init_noise_sigma }
    }
}

/// Integer-factor bilinear upscaling with half-pixel centres (edges clamped), CHW floats.
pub fn upscale_bilinear(src: &[f32], c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let (oh, ow) = (h * k, w * k);
    let taps = |o: usize, n: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) / k as f32 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, s - i0 as f32)
    };
    let xs: Vec<_> = (0..ow).map(|x| taps(x, w)).collect();
    let ys: Vec<_> = (0..oh).map(|y| taps(y, h)).collect();
    let mut out = vec![0.0f32; c * oh * ow];
    for ch in 0..c {
        let p = &src[ch * h * w..(ch + 1) * h * w];
        for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
                let top = p[y0 * w + x0] * (1.0 - fx) + p[y0 * w + x1] * fx;
                let bot = p[y1 * w + x0] * (1.0 - fx) + p[y1 * w + x1] * fx;
                out[ch * oh * ow + y * ow + x] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    out
}

/// Integer-factor box downscaling (the mean of each k x k block), CHW floats.
pub fn downscale_box(src: &[f32], c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let (oh, ow) = (h / k, w / k);
    let mut out = vec![0.0f32; c * oh * ow];
    let norm = 1.0 / (k * k) as f32;
    for ch in 0..c {
        for y in 0..oh {
            for x in 0..ow {
                let mut s = 0.0f32;
                for dy in 0..k {
                    for dx in 0..k {
                        s += src[ch * h * w + (y * k + dy) * w + x * k + dx];
                    }
                }
                out[ch * oh * ow + y * ow + x] = s * norm;
            }
        }
    }
    out
}

/// The SDXL inpainting generator: tokenizers, five graphs and the scheduler, loaded once.
pub struct Sdxl {
    pub manifest: SdxlManifest,
    dir: PathBuf,
    tokenizers: [ClipTokenizer; 2],
    text_encoder: Graph,
    text_encoder_2: Graph,
    unet: Graph,
    vae_encoder: Graph,
    vae_decoder: Graph,
    scheduler: SchedulerConfig,
    device: Device,
    threads: usize,
    unet_rss_bytes: u64,
    /// The defaults; each item's job parameters override them ([`ForgeInput::options`]).
    pub options: SdxlOptions,
    /// What the last item used (its provenance).
    used: SdxlOptions,
    /// Cached prompt embeddings: (prompt, negative) -> (hidden [2,77,2048], pooled [2,1280]).
    text_cache: Option<PromptCache>,
}

/// (prompt, negative) -> (hidden [2,77,2048], pooled [2,1280]).
type PromptCache = ((String, String), ArrayD<f32>, ArrayD<f32>);

/// Everything one run produced, for parity checks: the final latents and the generated image
/// (HWC floats in 0..255, at the input's size).
pub struct SdxlOutput {
    pub latents: Vec<f32>,
    pub width: u32,
    pub height: u32,
    pub hwc: Vec<f32>,
}

impl Sdxl {
    /// Loads `models_dir/sdxl/` (the manifest's `folder`).
    pub fn load(models_dir: &Path, device: Device, threads: usize) -> Result<Self, ForgeError> {
        let manifest: SdxlManifest = serde_json::from_str(MANIFEST).map_err(|e| ForgeError::Model(format!("sdxl manifest: {e}")))?;
        let dir = models_dir.join(&manifest.folder);
        if !dir.is_dir() {
            return Err(ForgeError::Model(format!(
                "{} is missing: export stable-diffusion-xl-1.0-inpainting-0.1 there in the Optimum ONNX layout (see generators/EXPORT.md)",
                dir.display()
            )));
        }
        let sched_path = dir.join("scheduler/scheduler_config.json");
        let sched_text = std::fs::read_to_string(&sched_path).map_err(|e| ForgeError::Model(format!("{}: {e}", sched_path.display())))?;
        let scheduler: SchedulerConfig =
            serde_json::from_str(&sched_text).map_err(|e| ForgeError::Model(format!("{}: {e}", sched_path.display())))?;
        scheduler.check()?;
        let tokenizers =
            [ClipTokenizer::load(&dir.join(&manifest.tokenizers[0]))?, ClipTokenizer::load(&dir.join(&manifest.tokenizers[1]))?];
        let g = |name: &str| -> Result<Graph, ForgeError> {
            let spec = manifest.graphs.get(name).ok_or_else(|| ForgeError::Model(format!("sdxl manifest lacks graph {name}")))?;
            Graph::load(&format!("sdxl {name}"), &dir, spec, device, threads)
        };
        let (text_encoder, text_encoder_2, vae_encoder, vae_decoder) =
            (g("text_encoder")?, g("text_encoder_2")?, g("vae_encoder")?, g("vae_decoder")?);
        let before = rss_bytes();
        let unet = g("unet")?;
        let unet_rss_bytes = rss_bytes().saturating_sub(before);
        let options = manifest.defaults.clone();
        Ok(Sdxl {
            manifest,
            dir,
            tokenizers,
            text_encoder,
            text_encoder_2,
            unet,
            vae_encoder,
            vae_decoder,
            scheduler,
            device,
            threads,
            unet_rss_bytes,
            used: options.clone(),
            options,
            text_cache: None,
        })
    }

    pub fn unet_memory_bytes(&self) -> u64 {
        self.unet_rss_bytes
    }

    /// Prompt embeddings for [negative, positive]: hidden [2, 77, 2048] and pooled [2, 1280].
    fn encode_prompts(&mut self, prompt: &str, negative: &str) -> Result<(ArrayD<f32>, ArrayD<f32>), ForgeError> {
        let key = (prompt.to_string(), negative.to_string());
        if let Some((k, h, p)) = &self.text_cache
            && *k == key
        {
            return Ok((h.clone(), p.clone()));
        }
        let ids = |t: &ClipTokenizer| -> Result<ArrayD<i64>, ForgeError> {
            let mut v = t.encode(negative)?;
            v.extend(t.encode(prompt)?);
            let n = v.len() / 2;
            ArrayD::from_shape_vec(IxDyn(&[2, n]), v).map_err(|e| ForgeError::Model(e.to_string()))
        };
        let (h1n, h2n, pn) = (
            self.manifest.text_hidden_outputs[0].clone(),
            self.manifest.text_hidden_outputs[1].clone(),
            self.manifest.pooled_output.clone(),
        );
        let h1 = self.text_encoder.run(vec![("input_ids", Data::I64(ids(&self.tokenizers[0])?))], &[&h1n])?.remove(0);
        let mut o2 = self.text_encoder_2.run(vec![("input_ids", Data::I64(ids(&self.tokenizers[1])?))], &[&h2n, &pn])?;
        let pooled = o2.remove(1);
        let h2 = o2.remove(0);
        let hidden =
            ndarray::concatenate(Axis(2), &[h1.view(), h2.view()]).map_err(|e| ForgeError::Model(format!("text embeddings: {e}")))?;
        self.text_cache = Some((key, hidden.clone(), pooled.clone()));
        Ok((hidden, pooled))
    }

    /// The VAE's latent mean, scaled: [1, 4, h/8, w/8].
    fn encode_image(&mut self, chw: Vec<f32>, size: usize) -> Result<ArrayD<f32>, ForgeError> {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, size, size]), chw).map_err(|e| ForgeError::Model(e.to_string()))?;
        let name = self.vae_encoder.output_name(&self.manifest.graphs["vae_encoder"].outputs[0].name);
        let p = self.vae_encoder.run(vec![("sample", Data::F32(x))], &[&name])?.remove(0);
        let c = p.shape()[1];
        if c != 8 && c != 4 {
            return Err(ForgeError::Model(format!("sdxl vae_encoder: {name} has {c} channels, expected 8 (mean, log-variance) or 4")));
        }
        let mean = p.slice_axis(Axis(1), ndarray::Slice::from(0..4)).to_owned();
        Ok(mean * self.manifest.vae_scaling_factor)
    }

    /// The whole pipeline on one face; the raw floats a parity test compares.
    pub fn run(&mut self, input: &ForgeInput<'_>, opts: &SdxlOptions) -> Result<SdxlOutput, ForgeError> {
        check_input(input)?;
        let (w, h) = input.target.dimensions();
        let size = self.manifest.model_size as usize;
        if w != h || !size.is_multiple_of(w as usize) {
            return Err(ForgeError::Input(format!("sdxl takes square faces whose side divides {size} (512 in MMTT), got {w}x{h}")));
        }
        let k = size / w as usize;
        let (wu, hu) = (w as usize, h as usize);
        // 1. image and mask at model size
        let mut chw = vec![0.0f32; 3 * wu * hu];
        for (i, p) in input.target.pixels().enumerate() {
            for c in 0..3 {
                chw[c * wu * hu + i] = p.0[c] as f32 / 255.0;
            }
        }
        let up = upscale_bilinear(&chw, 3, hu, wu, k);
        let image: Vec<f32> = up.iter().map(|v| 2.0 * v - 1.0).collect();
        let mask: Vec<f32> = (0..size * size)
            .map(|i| {
                let (y, x) = (i / size / k, i % size / k);
                if input.mask.get_pixel(x as u32, y as u32).0[0] > 0 { 1.0 } else { 0.0 }
            })
            .collect();
        let plane = size * size;
        let masked: Vec<f32> = (0..3 * plane).map(|i| if mask[i % plane] < 0.5 { image[i] } else { 0.0 }).collect();
        let ls = size / 8;
        let mask_lat: Vec<f32> = (0..ls * ls).map(|i| mask[(i / ls) * 8 * size + (i % ls) * 8]).collect();
        // 2. prompts
        let (hidden, pooled) = self.encode_prompts(&opts.prompt, &opts.negative_prompt)?;
        let s = size as f32;
        let time_ids = ArrayD::from_shape_vec(IxDyn(&[2, 6]), [s, s, 0.0, 0.0, s, s, s, s, 0.0, 0.0, s, s].to_vec())
            .map_err(|e| ForgeError::Model(e.to_string()))?;
        // 3. latents of the image and the masked image
        let image_lat = self.encode_image(image, size)?;
        let masked_lat = self.encode_image(masked, size)?;
        // 4. schedule, noise, denoising
        let sch = self.scheduler.schedule(opts.steps);
        let init = ((opts.steps as f32 * opts.strength) as usize).min(opts.steps);
        let t_start = opts.steps - init;
        if t_start >= opts.steps {
            return Err(ForgeError::Input(format!("sdxl: strength {} leaves no step of {}", opts.strength, opts.steps)));
        }
        let n_lat = 4 * ls * ls;
        let noise = SplitMix64(input.seed).normals(n_lat);
        let img_lat = image_lat.as_slice().ok_or_else(|| ForgeError::Model("latents not contiguous".into()))?;
        // Euler works on x = x0 + sigma * noise (the UNet sees x / sqrt(sigma^2 + 1)); DPM-Solver++
        // works on x = alpha * x0 + sigma_vp * noise with alpha = 1 / sqrt(sigma^2 + 1) and
        // sigma_vp = sigma * alpha (the UNet sees x as it is)
        let dpm = opts.scheduler == "dpm++2m";
        let vp = |sigma: f32| -> (f32, f32) {
            let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            (alpha, sigma * alpha)
        };
        let mut latents: Vec<f32> = if dpm {
            if opts.strength >= 1.0 {
                noise.clone()
            } else {
                let (a, sv) = vp(sch.sigmas[t_start]);
                img_lat.iter().zip(&noise).map(|(x, n)| a * x + sv * n).collect()
            }
        } else if opts.strength >= 1.0 {
            noise.iter().map(|n| n * sch.init_noise_sigma).collect()
        } else {
            let sigma = sch.sigmas[t_start];
            img_lat.iter().zip(&noise).map(|(x, n)| x + n * sigma).collect()
        };
        let masked_slice = masked_lat.as_slice().ok_or_else(|| ForgeError::Model("latents not contiguous".into()))?.to_vec();
        let mut prev_x0: Option<Vec<f32>> = None;
        for i in t_start..opts.steps {
            let (sigma, t) = (sch.sigmas[i], sch.timesteps[i]);
            let scale = if dpm { 1.0 } else { (sigma * sigma + 1.0).sqrt() };
            let mut sample = Vec::with_capacity(2 * 9 * ls * ls);
            for _ in 0..2 {
                sample.extend(latents.iter().map(|v| v / scale));
                sample.extend_from_slice(&mask_lat);
                sample.extend_from_slice(&masked_slice);
            }
            let sample = ArrayD::from_shape_vec(IxDyn(&[2, 9, ls, ls]), sample).map_err(|e| ForgeError::Model(e.to_string()))?;
            let ts = ArrayD::from_shape_vec(IxDyn(&[2]), vec![t, t]).map_err(|e| ForgeError::Model(e.to_string()))?;
            let out = self
                .unet
                .run(
                    vec![
                        ("sample", Data::F32(sample)),
                        ("timestep", Data::F32(ts)),
                        ("encoder_hidden_states", Data::F32(hidden.clone())),
                        ("text_embeds", Data::F32(pooled.clone())),
                        ("time_ids", Data::F32(time_ids.clone())),
                    ],
                    &["out_sample"],
                )?
                .remove(0);
            let o = out.as_slice().ok_or_else(|| ForgeError::Model("unet output not contiguous".into()))?;
            let (uncond, cond) = o.split_at(n_lat);
            let v_pred = self.scheduler.prediction_type == "v_prediction";
            if dpm {
                // DPMSolverMultistepScheduler, algorithm dpmsolver++, order 2, midpoint; the first
                // step and the last (final sigma 0) are first order
                let (a_s, s_s) = vp(sigma);
                let (a_t, s_t) = vp(sch.sigmas[i + 1]);
                let lambda = |a: f32, s: f32| a.ln() - s.ln();
                let h = lambda(a_t, s_t) - lambda(a_s, s_s);
                let x0: Vec<f32> = (0..n_lat)
                    .map(|j| {
                        let eps = uncond[j] + opts.guidance * (cond[j] - uncond[j]);
                        if v_pred { a_s * latents[j] - s_s * eps } else { (latents[j] - s_s * eps) / a_s }
                    })
                    .collect();
                let em1 = (-h).exp() - 1.0;
                let second = match &prev_x0 {
                    Some(p) if i + 1 < opts.steps => {
                        let (a_p, s_p) = vp(sch.sigmas[i - 1]);
                        let r0 = (lambda(a_s, s_s) - lambda(a_p, s_p)) / h;
                        Some((p, r0))
                    }
                    _ => None,
                };
                for j in 0..n_lat {
                    let mut x = (s_t / s_s) * latents[j] - a_t * em1 * x0[j];
                    if let Some((p, r0)) = second {
                        let d1 = (1.0 / r0) * (x0[j] - p[j]);
                        x -= 0.5 * a_t * em1 * d1;
                    }
                    latents[j] = x;
                }
                prev_x0 = Some(x0);
                continue;
            }
            let dt = sch.sigmas[i + 1] - sigma;
            for j in 0..n_lat {
                let eps = uncond[j] + opts.guidance * (cond[j] - uncond[j]);
                let x = latents[j];
                let pred = if v_pred { eps * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0) } else { x - sigma * eps };
                let d = (x - pred) / sigma;
                latents[j] = x + d * dt;
            }
        }
        // 5. decode, back to the face's size
        let z = Array4::from_shape_vec((1, 4, ls, ls), latents.iter().map(|v| v / self.manifest.vae_scaling_factor).collect())
            .map_err(|e| ForgeError::Model(e.to_string()))?
            .into_dyn();
        let dec = self.vae_decoder.run(vec![("latent_sample", Data::F32(z))], &["sample"])?.remove(0);
        if dec.shape() != [1, 3, size, size] {
            return Err(ForgeError::Model(format!(
                "sdxl vae_decoder: sample has shape {:?}, expected [1, 3, {size}, {size}]",
                dec.shape()
            )));
        }
        let unit: Vec<f32> = dec.iter().map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0)).collect();
        let small = downscale_box(&unit, 3, size, size, k);
        let mut hwc = vec![0.0f32; 3 * wu * hu];
        for c in 0..3 {
            for i in 0..wu * hu {
                hwc[i * 3 + c] = small[c * wu * hu + i] * 255.0;
            }
        }
        Ok(SdxlOutput { latents, width: w, height: h, hwc })
    }
}

impl Generator for Sdxl {
    fn method(&self) -> &'static str {
        "sdxl"
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<image::RgbImage, ForgeError> {
        let opts = self.options.with(input.options)?;
        let out = self.run(input, &opts)?;
        self.used = opts;
        Ok(super::onnx::to_rgb(out.width, out.height, &out.hwc))
    }
    fn generate_raw(&mut self, input: &ForgeInput<'_>) -> Result<super::RawOutput, ForgeError> {
        let opts = self.options.with(input.options)?;
        let out = self.run(input, &opts)?;
        self.used = opts;
        Ok(super::RawOutput { image: super::onnx::to_rgb(out.width, out.height, &out.hwc), hwc: out.hwc, mask: None })
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": "sdxl",
            "kind": "onnx-pipeline",
            "folder": self.dir.display().to_string(),
            "graphs": {
                "text_encoder": self.text_encoder.provenance(),
                "text_encoder_2": self.text_encoder_2.provenance(),
                "unet": self.unet.provenance(),
                "vae_encoder": self.vae_encoder.provenance(),
                "vae_decoder": self.vae_decoder.provenance(),
            },
            "unet_session_rss_bytes": self.unet_rss_bytes,
            "scheduler": "EulerDiscreteScheduler",
            "options": self.used,
            "execution_provider": match self.device { Device::Cpu => "CPUExecutionProvider", Device::Cuda => "CUDAExecutionProvider" },
            "intra_threads": self.threads,
        })
    }
}
