//! The FPN's shape ([`FpnConfig`], the Hugging Face `ViTConfig` fields plus the convolution
//! branch), its presets, and the `config.json` / `preprocessor_config.json` files of a checkpoint
//! directory in the `ViTForImageClassification` layout.

use super::{FpnError, LABELS};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;

/// The model's shape. Field names are the Hugging Face `ViTConfig` names, so a `config.json`
/// written by `transformers` reads unchanged; `conv_branch` is ours (`mmtt_conv_branch` in the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpnConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub layer_norm_eps: f64,
    pub num_labels: usize,
    /// The authors' convolution branch (CoordConv 3x3 then 5x5, added before blocks 0 and 1).
    pub conv_branch: bool,
}

impl FpnConfig {
    /// The preset names, smallest first.
    pub const PRESETS: &'static [&'static str] = &["tiny", "vit-b16", "vit-l16", "vit-h14"];

    /// A named preset, with the convolution branch on (the authors' `fpn` variant).
    /// `tiny` trains on two CPU cores in minutes; `vit-h14` is the authors' model.
    pub fn preset(name: &str) -> Result<Self, FpnError> {
        let (image_size, patch_size, hidden, layers, heads, mlp) = match name {
            "tiny" => (64, 8, 64, 4, 4, 128),
            "vit-b16" => (224, 16, 768, 12, 12, 3072),
            "vit-l16" => (224, 16, 1024, 24, 16, 4096),
            "vit-h14" => (224, 14, 1280, 32, 16, 5120),
            other => {
                return Err(FpnError::Config(format!("unknown preset `{other}`: the presets are {}", Self::PRESETS.join(", "))));
            }
        };
        Ok(FpnConfig {
            image_size,
            patch_size,
            num_channels: 3,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: mlp,
            hidden_dropout_prob: if name == "tiny" { 0.0 } else { 0.1 },
            attention_probs_dropout_prob: 0.0,
            layer_norm_eps: 1e-6,
            num_labels: LABELS.len(),
            conv_branch: true,
        })
    }

    /// Patch tokens per image (without CLS).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape is buildable; names the offending field.
    pub fn validate(&self) -> Result<(), FpnError> {
        let bad = |m: String| Err(FpnError::Config(m));
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return bad(format!("image_size {} must be at least patch_size {}", self.image_size, self.patch_size));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!("hidden_size {} is not divisible by num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if self.num_channels != 3 {
            return bad(format!("num_channels is {}; only RGB (3) images are supported", self.num_channels));
        }
        if self.num_labels != LABELS.len() {
            return bad(format!("num_labels is {}; the FPN predicts the {} region labels", self.num_labels, LABELS.len()));
        }
        if self.conv_branch {
            if self.image_size < 16 {
                return bad(format!("image_size {} is too small for the convolution branch (at least 16)", self.image_size));
            }
            if self.num_hidden_layers < 2 {
                return bad("the convolution branch feeds blocks 0 and 1: num_hidden_layers must be at least 2".into());
            }
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) || !(0.0..1.0).contains(&self.attention_probs_dropout_prob) {
            return bad("dropout probabilities must be in [0, 1)".into());
        }
        Ok(())
    }

    /// The `config.json` of a `ViTForImageClassification` checkpoint (transformers reads it
    /// unchanged; the extra `mmtt_conv_branch` key is ignored there).
    pub fn to_hf_json(&self) -> Value {
        let id2label: serde_json::Map<String, Value> = LABELS.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(*l))).collect();
        let label2id: serde_json::Map<String, Value> = LABELS.iter().enumerate().map(|(i, l)| ((*l).to_string(), Value::from(i))).collect();
        json!({
            "architectures": ["ViTForImageClassification"],
            "model_type": "vit",
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "initializer_range": 0.02,
            "layer_norm_eps": self.layer_norm_eps,
            "qkv_bias": true,
            "encoder_stride": self.patch_size,
            "problem_type": "multi_label_classification",
            "id2label": id2label,
            "label2id": label2id,
            "torch_dtype": "float32",
            "mmtt_conv_branch": self.conv_branch,
        })
    }

    /// Reads a `config.json` in the `ViTConfig` layout. Missing optional keys take transformers'
    /// defaults; what the FPN cannot run (another activation, no q/k/v bias, a label count other
    /// than 21 when `need_labels`) is refused with the key named.
    pub fn from_hf_json(v: &Value, need_labels: bool) -> Result<Self, FpnError> {
        let usize_or = |k: &str, d: usize| -> Result<usize, FpnError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| FpnError::Config(format!("config.json: `{k}` must be a non-negative integer, found {x}"))),
            }
        };
        let f64_or = |k: &str, d: f64| -> Result<f64, FpnError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x.as_f64().ok_or_else(|| FpnError::Config(format!("config.json: `{k}` must be a number, found {x}"))),
            }
        };
        if let Some(mt) = v.get("model_type").and_then(Value::as_str)
            && mt != "vit"
        {
            return Err(FpnError::Config(format!(
                "config.json: model_type is `{mt}`; the FPN loads ViT checkpoints (`vit`, ViTForImageClassification)"
            )));
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
            && act != "gelu"
        {
            return Err(FpnError::Config(format!("config.json: hidden_act is `{act}`; the FPN uses exact (erf) GELU, `gelu`")));
        }
        if v.get("qkv_bias").and_then(Value::as_bool) == Some(false) {
            return Err(FpnError::Config("config.json: qkv_bias is false; the FPN's attention has q/k/v biases".into()));
        }
        let num_labels = match v.get("id2label").and_then(Value::as_object) {
            Some(m) => m.len(),
            None => usize_or("num_labels", 2)?,
        };
        let cfg = FpnConfig {
            image_size: usize_or("image_size", 224)?,
            patch_size: usize_or("patch_size", 16)?,
            num_channels: usize_or("num_channels", 3)?,
            hidden_size: usize_or("hidden_size", 768)?,
            num_hidden_layers: usize_or("num_hidden_layers", 12)?,
            num_attention_heads: usize_or("num_attention_heads", 12)?,
            intermediate_size: usize_or("intermediate_size", 3072)?,
            hidden_dropout_prob: f64_or("hidden_dropout_prob", 0.0)?,
            attention_probs_dropout_prob: f64_or("attention_probs_dropout_prob", 0.0)?,
            layer_norm_eps: f64_or("layer_norm_eps", 1e-12)?,
            num_labels,
            conv_branch: v.get("mmtt_conv_branch").and_then(Value::as_bool).unwrap_or(false),
        };
        if need_labels {
            if let Some(m) = v.get("id2label").and_then(Value::as_object) {
                for (i, l) in LABELS.iter().enumerate() {
                    let got = m.get(&i.to_string()).and_then(Value::as_str);
                    if got != Some(*l) {
                        return Err(FpnError::Config(format!(
                            "config.json: id2label[{i}] is {got:?}, expected `{l}`: the FPN's labels are, in order, {}",
                            LABELS.join(", ")
                        )));
                    }
                }
            }
            cfg.validate()?;
        }
        Ok(cfg)
    }

    pub fn read_dir(dir: &Path, need_labels: bool) -> Result<Self, FpnError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| FpnError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| FpnError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
        Self::from_hf_json(&v, need_labels)
    }
}

/// How images become pixel values: `preprocessor_config.json` of a `ViTImageProcessor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub do_resize: bool,
    pub height: usize,
    pub width: usize,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// `ViTImageProcessor`'s defaults at the model's size (mean and std 0.5).
    pub fn for_config(cfg: &FpnConfig) -> Self {
        Preprocess {
            do_resize: true,
            height: cfg.image_size,
            width: cfg.image_size,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    pub fn to_hf_json(&self) -> Value {
        json!({
            "image_processor_type": "ViTImageProcessor",
            "do_resize": self.do_resize,
            "size": {"height": self.height, "width": self.width},
            "resample": 2,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.mean,
            "image_std": self.std,
        })
    }

    pub fn from_hf_json(v: &Value, cfg: &FpnConfig) -> Result<Self, FpnError> {
        let mut p = Self::for_config(cfg);
        let bad = |k: &str, x: &Value| FpnError::Config(format!("preprocessor_config.json: bad `{k}`: {x}"));
        if let Some(x) = v.get("do_resize") {
            p.do_resize = x.as_bool().ok_or_else(|| bad("do_resize", x))?;
        }
        if let Some(size) = v.get("size") {
            let h = size.get("height").or_else(|| size.get("shortest_edge")).and_then(Value::as_u64);
            let w = size.get("width").or_else(|| size.get("shortest_edge")).and_then(Value::as_u64);
            match (h, w) {
                (Some(h), Some(w)) => (p.height, p.width) = (h as usize, w as usize),
                _ => return Err(bad("size", size)),
            }
        }
        if let Some(x) = v.get("do_rescale") {
            p.do_rescale = x.as_bool().ok_or_else(|| bad("do_rescale", x))?;
        }
        if let Some(x) = v.get("rescale_factor") {
            p.rescale_factor = x.as_f64().ok_or_else(|| bad("rescale_factor", x))?;
        }
        if let Some(x) = v.get("do_normalize") {
            p.do_normalize = x.as_bool().ok_or_else(|| bad("do_normalize", x))?;
        }
        let triple = |k: &str| -> Result<Option<[f32; 3]>, FpnError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(|x| x.as_f64().is_some()) => {
                    Ok(Some([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32)))
                }
                Some(Value::Number(n)) => Ok(n.as_f64().map(|x| [x as f32; 3])),
                Some(x) => Err(bad(k, x)),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            p.std = s;
        }
        if p.do_resize && (p.height != cfg.image_size || p.width != cfg.image_size) {
            return Err(FpnError::Config(format!(
                "preprocessor_config.json resizes to {}x{} but the model takes {}x{} images",
                p.height, p.width, cfg.image_size, cfg.image_size
            )));
        }
        if p.std.contains(&0.0) {
            return Err(FpnError::Config("preprocessor_config.json: image_std has a zero".into()));
        }
        Ok(p)
    }

    /// Reads the directory's `preprocessor_config.json`, or the defaults when there is none.
    pub fn read_dir(dir: &Path, cfg: &FpnConfig) -> Result<Self, FpnError> {
        let path = dir.join("preprocessor_config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let v: Value =
                    serde_json::from_str(&text).map_err(|e| FpnError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
                Self::from_hf_json(&v, cfg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::for_config(cfg)),
            Err(e) => Err(FpnError::io(&path, e)),
        }
    }
}
