//! The explain entry point: images in, explanations (text, token ids, regions, instruction, mask)
//! out. Owns [`Explainer`] (a loaded ForgeryTalker or plain InstructBLIP with its tokenizers and
//! optional FPN), the prompting choices and the output types the CLI, the web page and the bench use.

use super::TalkerError;
use super::config::{ImagePreprocess, TalkerConfig, TalkerExtras};
use super::generate::{self, GenerationConfig};
use super::instructblip::Talker;
use super::tokenize::TextTokenizer;
use super::weights;
use crate::fpn::preprocess::{Filter, pil_resize};
use crate::fpn::{LABELS, Predictor};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use std::path::Path;

/// Where the instruction comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompting {
    /// The FPN's regions (p > 0.5, label order) fill the configured template.
    Fpn,
    /// The given region words fill the configured template.
    Regions(Vec<String>),
    /// This exact instruction (plain InstructBLIP); the mask branch, if any, gets no region words.
    Instruction(String),
    /// Region words per image (one list per image, in order) fill the configured template.
    RegionsEach(Vec<Vec<String>>),
}

/// What to generate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainOptions {
    pub prompting: Prompting,
    pub generation: GenerationConfig,
}

/// A predicted forgery mask: sigmoid probabilities, `size` x `size`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub size: usize,
    pub probs: Vec<f32>,
}

impl Mask {
    /// The binary mask (255 where p > 0.5) at the model's resolution.
    pub fn binary(&self) -> image::GrayImage {
        image::GrayImage::from_fn(self.size as u32, self.size as u32, |x, y| {
            image::Luma([if self.probs[y as usize * self.size + x as usize] > 0.5 { 255 } else { 0 }])
        })
    }
    /// The binary mask resized to `w` x `h` with nearest-neighbour sampling (as PIL's NEAREST).
    pub fn binary_resized(&self, w: u32, h: u32) -> image::GrayImage {
        let s = self.size as f64;
        image::GrayImage::from_fn(w, h, |x, y| {
            let sx = (((x as f64 + 0.5) * s / w as f64).floor() as usize).min(self.size - 1);
            let sy = (((y as f64 + 0.5) * s / h as f64).floor() as usize).min(self.size - 1);
            image::Luma([if self.probs[sy * self.size + sx] > 0.5 { 255 } else { 0 }])
        })
    }
    /// Fraction of pixels predicted forged.
    pub fn area(&self) -> f32 {
        self.probs.iter().filter(|p| **p > 0.5).count() as f32 / self.probs.len().max(1) as f32
    }
}

/// One image's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// `batch_decode(skip_special_tokens=True)` of the generated ids.
    pub text: String,
    /// The generated decoder ids as `generate` returns them (leading decoder start token included).
    pub token_ids: Vec<u32>,
    /// The region words that filled the instruction (empty for [`Prompting::Instruction`]).
    pub regions: Vec<String>,
    pub instruction: String,
    /// Present when the checkpoint has a mask branch.
    pub mask: Option<Mask>,
}

/// A loaded model with its tokenizers and (optional) FPN, ready to explain images.
pub struct Explainer {
    talker: Talker,
    t5_tok: TextTokenizer,
    bert_tok: TextTokenizer,
    fpn: Option<Predictor>,
    description: String,
    device: Device,
}

/// Pixel values [3, S, S] as the release's processor makes them: PIL bicubic resize to S x S,
/// 1/255, CLIP mean/std; channels first.
pub fn pixels(img: &RgbImage, pre: &ImagePreprocess) -> Vec<f32> {
    let s = pre.size;
    let resized;
    let img = if img.width() as usize != s || img.height() as usize != s {
        resized = pil_resize(img, s as u32, s as u32, Filter::Bicubic);
        &resized
    } else {
        img
    };
    let mut out = vec![0f32; 3 * s * s];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32 * pre.rescale_factor;
            out[c * s * s + y as usize * s + x as usize] = (v - pre.mean[c]) / pre.std[c];
        }
    }
    out
}

fn to_rows(t: Tensor<3>) -> Result<Vec<Vec<f32>>, TalkerError> {
    let [b, h, w] = t.dims();
    let v: Vec<f32> = t.into_data().try_to_vec::<f32>().map_err(|e| TalkerError::Input(format!("reading the mask back: {e:?}")))?;
    Ok((0..b).map(|i| v[i * h * w..(i + 1) * h * w].to_vec()).collect())
}

/// Region words checked against the 21 labels and put in label order, as the FPN lists them.
fn ordered_regions(words: &[String]) -> Result<Vec<String>, TalkerError> {
    for w in words {
        if !LABELS.contains(&w.as_str()) {
            return Err(TalkerError::Input(format!("`{w}` is not a region word: use {}", LABELS.join(", "))));
        }
    }
    Ok(LABELS.iter().filter(|l| words.iter().any(|w| w == *l)).map(|l| l.to_string()).collect())
}

impl Explainer {
    /// An explainer over a model already in memory (the trainer's validation).
    pub fn from_parts(talker: Talker, t5_tok: TextTokenizer, bert_tok: TextTokenizer, fpn: Option<Predictor>, device: &Device) -> Self {
        Explainer { talker, t5_tok, bert_tok, fpn, description: "a model in training".into(), device: device.clone() }
    }

    /// Loads an HF-layout directory (InstructBLIP or ForgeryTalker) or the authors' release
    /// folder; `fpn` overrides the checkpoint's own FPN.
    pub fn load(checkpoint: &Path, fpn: Option<&Path>, device: &Device) -> Result<Explainer, TalkerError> {
        if !checkpoint.is_dir() {
            return Err(TalkerError::Input(format!(
                "{}: not a directory; --checkpoint takes an InstructBLIP / ForgeryTalker directory (config.json, model*.safetensors) \
                 or the release's model_parameter/ folder",
                checkpoint.display()
            )));
        }
        let extras = TalkerExtras::read(checkpoint)?;
        let (talker, t5_tok, bert_tok, own_fpn, layout, notes) = if checkpoint.join("config.json").is_file() {
            let (mut cfg, extras) = TalkerConfig::read_dir(checkpoint)?;
            let talker = match extras.as_ref().and_then(|x| x.base.as_ref()) {
                // a trained checkpoint holding its trained tensors only
                Some(base) => {
                    let base = checkpoint.join(base);
                    if base.join("config.json").is_file() {
                        weights::adapt_hf_config(&base, &mut cfg)?;
                    }
                    weights::load_with_base(checkpoint, &base, &cfg, device)?
                }
                None => {
                    weights::adapt_hf_config(checkpoint, &mut cfg)?;
                    weights::load_hf_dir(checkpoint, &cfg, device)?
                }
            };
            let t5_tok = TextTokenizer::from_dir(checkpoint, "T5")?;
            let qdir = checkpoint.join("qformer_tokenizer");
            let bert_tok = TextTokenizer::from_dir(&qdir, "Q-Former (BERT)")?;
            let own = match extras.as_ref().and_then(|x| x.fpn.as_ref()) {
                Some(rel) => Some(Predictor::load_on(&checkpoint.join(rel), None, device)?),
                None => None,
            };
            (talker, t5_tok, bert_tok, own, "Hugging Face layout", Vec::new())
        } else {
            let files = weights::ReleaseFiles::find(checkpoint)?;
            let cfg = weights::release_config(&files, extras.as_ref())?;
            let (talker, notes) = weights::load_release(&files, &cfg, device)?;
            let t5_tok = TextTokenizer::from_dir(&files.t5_dir, "T5")?;
            let bert_tok = TextTokenizer::from_dir(&files.bert_dir, "Q-Former (BERT)")?;
            // the FPN's shape: an FPN directory's config.json when the folder has one, else read
            // off the checkpoint's `multi_label_classifier.*` tensors
            let fpn_cfg = match extras.as_ref().and_then(|x| x.fpn.as_ref()).map(|rel| checkpoint.join(rel)) {
                Some(dir) if dir.join("config.json").is_file() => Some(crate::fpn::FpnConfig::read_dir(&dir, true)?),
                _ => None,
            };
            let l = crate::fpn::weights::load_nested_release(&files.checkpoint, "model", fpn_cfg.as_ref(), device)?;
            let own = Some(Predictor::from_model(&l.model, &l.config, &l.preprocess, device));
            (talker, t5_tok, bert_tok, own, "the authors' release layout", notes)
        };
        let fpn = match fpn {
            Some(p) => Some(Predictor::load_on(p, None, device)?),
            None => own_fpn,
        };
        if let Some(f) = &fpn
            && f.config().image_size != talker.config.vision.image_size
        {
            return Err(TalkerError::Config(format!(
                "the FPN takes {} px images but the vision encoder {} px: the release feeds both the same pixels, so use an FPN \
                 trained at {} px",
                f.config().image_size,
                talker.config.vision.image_size,
                talker.config.vision.image_size
            )));
        }
        let c = &talker.config;
        let mut description = format!(
            "{} ({layout}, {}): EVA ViT {}x{} at {} px, Q-Former {}x{} with {} queries, T5 {}+{}x{} ({}){}{}",
            if talker.mask.is_some() { "ForgeryTalker" } else { "InstructBLIP" },
            checkpoint.display(),
            c.vision.num_hidden_layers,
            c.vision.hidden_size,
            c.vision.image_size,
            c.qformer.num_hidden_layers,
            c.qformer.hidden_size,
            c.num_query_tokens,
            c.text.num_layers,
            c.text.num_decoder_layers,
            c.text.d_model,
            c.text.dense_act_fn.name(),
            if talker.mask.is_some() { ", mask branch" } else { "" },
            match &fpn {
                Some(f) => format!(", FPN {}x{}", f.config().num_hidden_layers, f.config().hidden_size),
                None => String::new(),
            }
        );
        for n in notes {
            description.push_str(&format!("; {n}"));
        }
        Ok(Explainer { talker, t5_tok, bert_tok, fpn, description, device: device.clone() })
    }

    /// The model, its tokenizers (T5, Q-Former) and its FPN.
    pub fn into_parts(self) -> (Talker, TextTokenizer, TextTokenizer, Option<Predictor>) {
        (self.talker, self.t5_tok, self.bert_tok, self.fpn)
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }
    pub fn has_mask_branch(&self) -> bool {
        self.talker.mask.is_some()
    }
    pub fn has_fpn(&self) -> bool {
        self.fpn.is_some()
    }
    pub fn image_size(&self) -> usize {
        self.talker.config.vision.image_size
    }
    pub fn config(&self) -> &TalkerConfig {
        &self.talker.config
    }
    pub fn talker(&self) -> &Talker {
        &self.talker
    }
    pub fn t5_tokenizer(&self) -> &TextTokenizer {
        &self.t5_tok
    }
    pub fn qformer_tokenizer(&self) -> &TextTokenizer {
        &self.bert_tok
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The instruction and region words for each image.
    fn prompts(&self, px: &[f32], n: usize, prompting: &Prompting) -> Result<Vec<(String, Vec<String>)>, TalkerError> {
        let template = self.talker.config.template;
        match prompting {
            Prompting::Instruction(text) => Ok(vec![(text.clone(), Vec::new()); n]),
            Prompting::Regions(words) => {
                let ordered = ordered_regions(words)?;
                Ok(vec![(template.instruction(&ordered), ordered); n])
            }
            Prompting::RegionsEach(lists) => {
                if lists.len() != n {
                    return Err(TalkerError::Input(format!("{} region lists for {n} images", lists.len())));
                }
                lists.iter().map(|words| ordered_regions(words).map(|o| (template.instruction(&o), o))).collect()
            }
            Prompting::Fpn => {
                let fpn = self.fpn.as_ref().ok_or_else(|| {
                    TalkerError::Input("this checkpoint has no FPN: give region words (--regions) or an instruction (--instruction), or an FPN (--fpn DIR)".into())
                })?;
                let probs = fpn.logits(px.to_vec(), n)?;
                Ok(probs
                    .iter()
                    .map(|z| {
                        let p: [f32; 21] = std::array::from_fn(|i| 1.0 / (1.0 + (-z[i]).exp()));
                        let words: Vec<String> = crate::fpn::regions(&p).into_iter().map(str::to_string).collect();
                        (template.instruction(&words), words)
                    })
                    .collect())
            }
        }
    }

    /// Pixel values [B, 3, S, S] for a batch of images.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Vec<f32> {
        images.iter().flat_map(|img| pixels(img, &self.talker.config.preprocess)).collect()
    }

    /// One [`Explanation`] per image, in order.
    pub fn explain(&self, images: &[RgbImage], opts: &ExplainOptions) -> Result<Vec<Explanation>, TalkerError> {
        opts.generation.validate()?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = &self.talker.config;
        let n = images.len();
        let s = cfg.vision.image_size;
        let px = self.pixel_values(images);
        let prompts = self.prompts(&px, n, &opts.prompting)?;
        let pixels = Tensor::<4>::from_data(TensorData::new(px, [n, 3, s, s]), &self.device);
        let blip = &self.talker.blip;
        let image = blip.image_embeds(cfg, pixels);
        let mut qf_ids = Vec::with_capacity(n);
        let mut t5_ids = Vec::with_capacity(n);
        for (instruction, _) in &prompts {
            qf_ids.push(self.bert_tok.encode(instruction, cfg.qformer_max_len())?);
            t5_ids.push(self.t5_tok.encode(instruction, cfg.max_txt_len)?);
        }
        let masks = match &cfg.mask_branch {
            Some(m) if self.talker.mask.is_some() => {
                let labels = prompts
                    .iter()
                    .map(|(_, words)| self.t5_tok.encode_padded(&words.join(" "), m.label_tokens, cfg.text.pad_token_id))
                    .collect::<Result<Vec<_>, _>>()?;
                match self.talker.mask_probs(image.clone(), &labels) {
                    Some(t) => to_rows(t)?.into_iter().map(|probs| Some(Mask { size: m.mask_size, probs })).collect(),
                    None => vec![None; n],
                }
            }
            _ => vec![None; n],
        };
        let queries = blip.query_outputs(cfg, image, &qf_ids);
        let (input, mask) = blip.encoder_input(cfg, queries, &t5_ids);
        let encoded = blip.encode(cfg, input, &mask);
        let seqs = generate::generate(&blip.language_model, &cfg.text, encoded, &mask, &opts.generation);
        let mut out = Vec::with_capacity(n);
        for ((seq, (instruction, regions)), mask) in seqs.into_iter().zip(prompts).zip(masks) {
            out.push(Explanation { text: self.t5_tok.decode(&seq)?, token_ids: seq, regions, instruction, mask });
        }
        Ok(out)
    }
}
