//! The talker's shape: one `Config` per model ([`VisionConfig`], [`QFormerConfig`], [`T5Config`],
//! [`MaskBranchConfig`]) gathered in [`TalkerConfig`], with the presets (`tiny` .. the release's
//! `release-xl`), the Hugging Face `InstructBlipConfig` `config.json` (field names and class
//! defaults as transformers writes them, so a saved config reads unchanged) and mmtt's own
//! `mmtt_talker.json` (what no HF file records: the release's T5 activation override, the
//! `ln_vision` epsilon, the instruction template and the mask branch).

use super::TalkerError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;

/// The preset names, smallest first (random weights; see [`TalkerConfig::preset`]).
pub const PRESETS: &[&str] = &["tiny", "release-xl"];

/// The EVA-CLIP ViT (`InstructBlipVisionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
    /// The final LayerNorm's epsilon: transformers uses `layer_norm_eps`, the release's
    /// `ln_vision` uses 1e-5.
    pub post_layernorm_eps: f64,
    /// How the attention bias is stored: transformers 5 keeps one packed `qkv.bias` [3D] (its k
    /// part trainable), EVA and transformers 4 separate `q_bias` and `v_bias` (k's is zero).
    #[serde(default)]
    pub packed_qkv_bias: bool,
}

impl VisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The BERT-style Q-Former (`InstructBlipQFormerConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QFormerConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub cross_attention_frequency: usize,
    pub encoder_hidden_size: usize,
    pub pad_token_id: u32,
}

impl QFormerConfig {
    pub fn has_cross_attention(&self, layer: usize) -> bool {
        layer.is_multiple_of(self.cross_attention_frequency.max(1))
    }
}

/// The T5 feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// Exact (erf) GELU: the release overrides flan-t5's activation to this.
    Gelu,
    /// The tanh approximation, stock flan-t5's `gelu_new`.
    GeluNew,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Self, TalkerError> {
        match s {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluNew),
            other => Err(TalkerError::Config(format!("T5 activation `{other}` is not supported: use relu, gelu or gelu_new"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
        }
    }
}

/// T5 (`T5Config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub is_gated_act: bool,
    pub dense_act_fn: Activation,
    /// Whether decoder outputs are scaled by d_model^-0.5 before the LM head (original T5; not
    /// T5 1.1 / flan-t5, whose config says `tie_word_embeddings: false`).
    pub scale_decoder_outputs: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
}

/// The release's mask branch (spec 1.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskBranchConfig {
    /// Region-word tokens after padding (the release: 21); the decoder sees 1 + this many tokens.
    pub label_tokens: usize,
    /// Heads of the two-way transformer.
    pub heads: usize,
    pub depth: usize,
    pub mlp_dim: usize,
    /// Heads of `cross_attention_layer` (label tokens over patch tokens).
    pub cross_heads: usize,
    pub downsample_rate: usize,
    /// The mask is `mask_size` x `mask_size` (the release: 224).
    pub mask_size: usize,
    /// The weights file inside the checkpoint directory.
    #[serde(default = "default_mask_file")]
    pub file: String,
}

fn default_mask_file() -> String {
    "mask_branch.safetensors".into()
}

impl MaskBranchConfig {
    pub fn release() -> Self {
        MaskBranchConfig {
            label_tokens: 21,
            heads: 8,
            depth: 2,
            mlp_dim: 2048,
            cross_heads: 8,
            downsample_rate: 2,
            mask_size: 224,
            file: default_mask_file(),
        }
    }
}

/// The instruction template that the regions fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// The paper's: "These facial areas may be manipulated by AI: [R]. Please describe the
    /// specific issues in these areas."
    Paper,
    /// The release's (`blip2_t5_instruct.py:317,320`), with its no-region variant.
    Release,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, TalkerError> {
        match s {
            "paper" => Ok(Template::Paper),
            "release" => Ok(Template::Release),
            other => Err(TalkerError::Config(format!("instruction template `{other}` is unknown: use `paper` or `release`"))),
        }
    }

    /// The instruction for these region words (label order, as the FPN lists them).
    pub fn instruction(self, regions: &[String]) -> String {
        let r = regions.join(", ");
        match (self, regions.is_empty()) {
            (Template::Paper, _) => {
                format!("These facial areas may be manipulated by AI: {r}. Please describe the specific issues in these areas.")
            }
            (Template::Release, false) => format!(
                "The following facial areas may have been modified by AI: {r}. These areas might have been manipulated either by \
                 replacing the entire face or by altering specific facial features. Please identify these areas and describe why \
                 they appear unnatural."
            ),
            (Template::Release, true) => "The following facial areas may have been modified by AI. These areas might have been \
                 manipulated either by replacing the entire face or by altering specific facial features. Please identify these \
                 areas and describe why they appear unnatural."
                .to_string(),
        }
    }
}

/// How images become pixel values (`BlipImageProcessor`: PIL bicubic resize, 1/255, CLIP mean/std).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocess {
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale_factor: f32,
}

impl ImagePreprocess {
    /// CLIP's mean and std, written as the release and transformers write them.
    #[allow(clippy::excessive_precision)]
    pub fn clip(size: usize) -> Self {
        ImagePreprocess {
            size,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
            rescale_factor: 1.0 / 255.0,
        }
    }
}

/// The whole model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TalkerConfig {
    pub vision: VisionConfig,
    pub qformer: QFormerConfig,
    pub text: T5Config,
    pub num_query_tokens: usize,
    /// The `<image>` placeholder id of a transformers 5 processor, if the tokenizer has one
    /// (mmtt concatenates the query projections instead, which is the same T5 input).
    pub image_token_index: Option<u32>,
    pub mask_branch: Option<MaskBranchConfig>,
    pub template: Template,
    pub preprocess: ImagePreprocess,
    /// Instruction tokens kept (truncation on the left), for the Q-Former and T5 alike.
    pub max_txt_len: usize,
}

fn num(v: &Value, key: &str, default: f64) -> Result<f64, TalkerError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_f64().ok_or_else(|| TalkerError::Config(format!("`{key}` must be a number, found {x}"))),
    }
}

fn int(v: &Value, key: &str, default: usize) -> Result<usize, TalkerError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| TalkerError::Config(format!("`{key}` must be a whole number, found {x}"))),
    }
}

fn token_id(v: &Value, key: &str, default: u32) -> Result<u32, TalkerError> {
    match v.get(key) {
        // eos may be a list; the first is the one generation stops on
        Some(Value::Array(a)) if !a.is_empty() => {
            a[0].as_u64().map(|n| n as u32).ok_or_else(|| TalkerError::Config(format!("`{key}` must hold token ids")))
        }
        _ => int(v, key, default as usize).map(|n| n as u32),
    }
}

impl VisionConfig {
    /// From an `InstructBlipVisionConfig` JSON object (missing fields take transformers' defaults).
    pub fn from_hf(v: &Value) -> Result<Self, TalkerError> {
        let eps = num(v, "layer_norm_eps", 1e-6)?;
        Ok(VisionConfig {
            image_size: int(v, "image_size", 224)?,
            patch_size: int(v, "patch_size", 14)?,
            hidden_size: int(v, "hidden_size", 1408)?,
            intermediate_size: int(v, "intermediate_size", 6144)?,
            num_hidden_layers: int(v, "num_hidden_layers", 39)?,
            num_attention_heads: int(v, "num_attention_heads", 16)?,
            layer_norm_eps: eps,
            qkv_bias: v.get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
            post_layernorm_eps: eps,
            packed_qkv_bias: false,
        })
    }
    fn to_hf(&self) -> Value {
        json!({
            "model_type": "instructblip_vision_model", "image_size": self.image_size, "patch_size": self.patch_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "layer_norm_eps": self.layer_norm_eps, "qkv_bias": self.qkv_bias, "hidden_act": "gelu",
        })
    }
}

impl QFormerConfig {
    /// From an `InstructBlipQFormerConfig` (or a BERT `config.json`, as the release reads it).
    pub fn from_hf(v: &Value) -> Result<Self, TalkerError> {
        Ok(QFormerConfig {
            vocab_size: int(v, "vocab_size", 30522)?,
            hidden_size: int(v, "hidden_size", 768)?,
            num_hidden_layers: int(v, "num_hidden_layers", 12)?,
            num_attention_heads: int(v, "num_attention_heads", 12)?,
            intermediate_size: int(v, "intermediate_size", 3072)?,
            max_position_embeddings: int(v, "max_position_embeddings", 512)?,
            layer_norm_eps: num(v, "layer_norm_eps", 1e-12)?,
            cross_attention_frequency: int(v, "cross_attention_frequency", 2)?,
            encoder_hidden_size: int(v, "encoder_hidden_size", 1408)?,
            pad_token_id: token_id(v, "pad_token_id", 0)?,
        })
    }
    fn to_hf(&self) -> Value {
        json!({
            "model_type": "instructblip_qformer", "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size, "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps, "cross_attention_frequency": self.cross_attention_frequency,
            "encoder_hidden_size": self.encoder_hidden_size, "pad_token_id": self.pad_token_id, "hidden_act": "gelu",
        })
    }
}

impl T5Config {
    /// From a `T5Config` JSON object. As in transformers, `dense_act_fn` is derived from
    /// `feed_forward_proj` (a saved `dense_act_fn` is not read); the release's override comes
    /// from `mmtt_talker.json`.
    pub fn from_hf(v: &Value) -> Result<Self, TalkerError> {
        if let Some(t) = v.get("model_type").and_then(Value::as_str)
            && t != "t5"
        {
            return Err(TalkerError::Config(format!("the language model is `{t}`; mmtt runs the T5 (flan-t5) InstructBLIP variants only")));
        }
        let proj = v.get("feed_forward_proj").and_then(Value::as_str).unwrap_or("relu");
        let parts: Vec<&str> = proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            ["gated", a] => (true, *a),
            [a] => (false, *a),
            _ => return Err(TalkerError::Config(format!("`feed_forward_proj` `{proj}` is not `ACT` or `gated-ACT`"))),
        };
        // transformers 5 writes (and reads back) `dense_act_fn`; older configs derive it, with
        // "gated-gelu" meaning the tanh approximation
        let act = match v.get("dense_act_fn").and_then(Value::as_str) {
            Some(a) => Activation::parse(a)?,
            None if proj == "gated-gelu" => Activation::GeluNew,
            None => Activation::parse(act)?,
        };
        let layers = int(v, "num_layers", 6)?;
        Ok(T5Config {
            vocab_size: int(v, "vocab_size", 32128)?,
            d_model: int(v, "d_model", 512)?,
            d_kv: int(v, "d_kv", 64)?,
            d_ff: int(v, "d_ff", 2048)?,
            num_layers: layers,
            num_decoder_layers: int(v, "num_decoder_layers", layers)?,
            num_heads: int(v, "num_heads", 8)?,
            relative_attention_num_buckets: int(v, "relative_attention_num_buckets", 32)?,
            relative_attention_max_distance: int(v, "relative_attention_max_distance", 128)?,
            layer_norm_epsilon: num(v, "layer_norm_epsilon", 1e-6)?,
            is_gated_act: gated,
            dense_act_fn: act,
            // transformers 5 writes `scale_decoder_outputs` (and always `tie_word_embeddings: true`);
            // older configs say `tie_word_embeddings: false` for T5 1.1 / flan-t5
            scale_decoder_outputs: match v.get("scale_decoder_outputs").and_then(Value::as_bool) {
                Some(s) => s,
                None => v.get("tie_word_embeddings").and_then(Value::as_bool) != Some(false),
            },
            pad_token_id: token_id(v, "pad_token_id", 0)?,
            eos_token_id: token_id(v, "eos_token_id", 1)?,
            decoder_start_token_id: token_id(v, "decoder_start_token_id", 0)?,
        })
    }
    fn to_hf(&self) -> Value {
        let act = match self.dense_act_fn {
            Activation::GeluNew | Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        };
        json!({
            "model_type": "t5", "vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": self.d_kv, "d_ff": self.d_ff,
            "num_layers": self.num_layers, "num_decoder_layers": self.num_decoder_layers, "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "feed_forward_proj": if self.is_gated_act { format!("gated-{act}") } else { act.to_string() },
            "tie_word_embeddings": self.scale_decoder_outputs,
            "scale_decoder_outputs": self.scale_decoder_outputs,
            "pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
        })
    }
}

/// mmtt's `mmtt_talker.json`: what no Hugging Face file records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TalkerExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5_dense_act_fn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_layernorm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// The FPN checkpoint directory, relative to the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_branch: Option<MaskBranchConfig>,
    /// Release layout only: vision settings that no release file records (heads, eps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<Value>,
    /// A trained checkpoint that stores only its trained tensors: the checkpoint (HF layout or
    /// release folder) its frozen tensors come from. Its own tensors override the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

impl TalkerExtras {
    pub fn read(dir: &Path) -> Result<Option<Self>, TalkerError> {
        let path = dir.join("mmtt_talker.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TalkerError::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| TalkerError::Config(format!("{}: {e}", path.display())))
    }

    /// Applies the overrides to a configuration read from the HF files.
    pub fn apply(&self, cfg: &mut TalkerConfig) -> Result<(), TalkerError> {
        if let Some(a) = &self.t5_dense_act_fn {
            cfg.text.dense_act_fn = Activation::parse(a)?;
        }
        if let Some(e) = self.post_layernorm_eps {
            cfg.vision.post_layernorm_eps = e;
        }
        if let Some(t) = &self.instruction {
            cfg.template = Template::parse(t)?;
        }
        if let Some(m) = &self.mask_branch {
            cfg.mask_branch = Some(m.clone());
        }
        Ok(())
    }
}

impl TalkerConfig {
    /// The Q-Former's instruction length: `max_txt_len`, but never past its position embeddings
    /// (left truncation, as the release's tokenizer does; the tiny shapes have 64 positions).
    pub fn qformer_max_len(&self) -> usize {
        self.max_txt_len.min(self.qformer.max_position_embeddings)
    }

    /// A named preset. `tiny` runs on two CPU cores in well under a second per image; `release-xl`
    /// is the authors' model (EVA ViT-g 39 blocks, BERT-base Q-Former, flan-t5-xl with exact GELU).
    pub fn preset(name: &str) -> Result<Self, TalkerError> {
        match name {
            "tiny" => Ok(TalkerConfig {
                vision: VisionConfig {
                    image_size: 64,
                    patch_size: 16,
                    hidden_size: 48,
                    intermediate_size: 96,
                    num_hidden_layers: 3,
                    num_attention_heads: 4,
                    layer_norm_eps: 1e-6,
                    qkv_bias: true,
                    post_layernorm_eps: 1e-5,
                    packed_qkv_bias: false,
                },
                qformer: QFormerConfig {
                    vocab_size: 400,
                    hidden_size: 32,
                    num_hidden_layers: 4,
                    num_attention_heads: 4,
                    intermediate_size: 64,
                    max_position_embeddings: 64,
                    layer_norm_eps: 1e-12,
                    cross_attention_frequency: 2,
                    encoder_hidden_size: 48,
                    pad_token_id: 0,
                },
                text: T5Config {
                    vocab_size: 400,
                    d_model: 32,
                    d_kv: 8,
                    d_ff: 64,
                    num_layers: 2,
                    num_decoder_layers: 2,
                    num_heads: 4,
                    relative_attention_num_buckets: 8,
                    relative_attention_max_distance: 20,
                    layer_norm_epsilon: 1e-6,
                    is_gated_act: true,
                    dense_act_fn: Activation::Gelu,
                    scale_decoder_outputs: false,
                    pad_token_id: 0,
                    eos_token_id: 1,
                    decoder_start_token_id: 0,
                },
                num_query_tokens: 8,
                image_token_index: None,
                mask_branch: Some(MaskBranchConfig { mlp_dim: 64, mask_size: 64, ..MaskBranchConfig::release() }),
                template: Template::Release,
                preprocess: ImagePreprocess::clip(64),
                max_txt_len: 128,
            }),
            "release-xl" => Ok(TalkerConfig {
                vision: VisionConfig {
                    image_size: 224,
                    patch_size: 14,
                    hidden_size: 1408,
                    intermediate_size: 6144,
                    num_hidden_layers: 39,
                    num_attention_heads: 16,
                    layer_norm_eps: 1e-6,
                    qkv_bias: true,
                    post_layernorm_eps: 1e-5,
                    packed_qkv_bias: false,
                },
                qformer: QFormerConfig {
                    vocab_size: 30523,
                    hidden_size: 768,
                    num_hidden_layers: 12,
                    num_attention_heads: 12,
                    intermediate_size: 3072,
                    max_position_embeddings: 512,
                    layer_norm_eps: 1e-12,
                    cross_attention_frequency: 2,
                    encoder_hidden_size: 1408,
                    pad_token_id: 0,
                },
                text: T5Config {
                    vocab_size: 32128,
                    d_model: 2048,
                    d_kv: 64,
                    d_ff: 5120,
                    num_layers: 24,
                    num_decoder_layers: 24,
                    num_heads: 32,
                    relative_attention_num_buckets: 32,
                    relative_attention_max_distance: 128,
                    layer_norm_epsilon: 1e-6,
                    is_gated_act: true,
                    dense_act_fn: Activation::Gelu,
                    scale_decoder_outputs: false,
                    pad_token_id: 0,
                    eos_token_id: 1,
                    decoder_start_token_id: 0,
                },
                num_query_tokens: 32,
                image_token_index: None,
                mask_branch: Some(MaskBranchConfig::release()),
                template: Template::Release,
                preprocess: ImagePreprocess::clip(224),
                max_txt_len: 128,
            }),
            other => Err(TalkerError::Config(format!("unknown preset `{other}`: the presets are {}", PRESETS.join(", ")))),
        }
    }

    /// From an `InstructBlipConfig` `config.json` object (no mask branch; the extras add it).
    pub fn from_hf(v: &Value) -> Result<Self, TalkerError> {
        if let Some(t) = v.get("model_type").and_then(Value::as_str)
            && t != "instructblip"
        {
            return Err(TalkerError::Config(format!(
                "config.json is a `{t}` model, not `instructblip`: point --checkpoint at an InstructBLIP (or ForgeryTalker) directory"
            )));
        }
        let empty = json!({});
        let vision = VisionConfig::from_hf(v.get("vision_config").unwrap_or(&empty))?;
        let mut qformer = QFormerConfig::from_hf(v.get("qformer_config").unwrap_or(&empty))?;
        // like InstructBlipConfig: the Q-Former cross-attends the vision width
        qformer.encoder_hidden_size = vision.hidden_size;
        let text_v = v.get("text_config").ok_or_else(|| {
            TalkerError::Config("config.json has no `text_config`: an InstructBLIP config names its language model there".into())
        })?;
        let text = T5Config::from_hf(text_v)?;
        let image_token_index = match v.get("image_token_index").or_else(|| v.get("image_token_id")) {
            Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
            _ => None,
        };
        let size = vision.image_size;
        let cfg = TalkerConfig {
            vision,
            qformer,
            text,
            num_query_tokens: int(v, "num_query_tokens", 32)?,
            image_token_index,
            mask_branch: None,
            template: Template::Release,
            preprocess: ImagePreprocess::clip(size),
            max_txt_len: 128,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `InstructBlipConfig` JSON (what `config.json` holds).
    pub fn to_hf(&self) -> Value {
        let mut v = json!({
            "model_type": "instructblip",
            "architectures": ["InstructBlipForConditionalGeneration"],
            "vision_config": self.vision.to_hf(),
            "qformer_config": self.qformer.to_hf(),
            "text_config": self.text.to_hf(),
            "num_query_tokens": self.num_query_tokens,
        });
        if let Some(i) = self.image_token_index {
            v["image_token_index"] = json!(i);
        }
        v
    }

    /// The extras that make a ForgeryTalker directory from an InstructBLIP one.
    pub fn extras(&self, fpn: Option<&str>) -> TalkerExtras {
        TalkerExtras {
            t5_dense_act_fn: Some(self.text.dense_act_fn.name().into()),
            post_layernorm_eps: Some(self.vision.post_layernorm_eps),
            instruction: Some(match self.template {
                Template::Paper => "paper".into(),
                Template::Release => "release".into(),
            }),
            fpn: fpn.map(str::to_string),
            mask_branch: self.mask_branch.clone(),
            vision: None,
            base: None,
        }
    }

    /// Refuses shapes the model cannot be built with, naming the field.
    pub fn validate(&self) -> Result<(), TalkerError> {
        let bad = |m: String| Err(TalkerError::Config(m));
        let v = &self.vision;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!("vision image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return bad(format!("vision hidden_size {} is not divisible by {} heads", v.hidden_size, v.num_attention_heads));
        }
        let q = &self.qformer;
        if q.num_attention_heads == 0 || !q.hidden_size.is_multiple_of(q.num_attention_heads) {
            return bad(format!("Q-Former hidden_size {} is not divisible by {} heads", q.hidden_size, q.num_attention_heads));
        }
        if self.text.num_heads == 0 || self.text.d_kv == 0 {
            return bad("T5 needs num_heads > 0 and d_kv > 0".into());
        }
        if self.num_query_tokens == 0 {
            return bad("num_query_tokens must be > 0".into());
        }
        if let Some(m) = &self.mask_branch {
            let d = v.hidden_size;
            if m.heads == 0 || !d.is_multiple_of(m.heads) || m.cross_heads == 0 || !d.is_multiple_of(m.cross_heads) {
                return bad(format!("mask branch: width {d} must be divisible by heads {} and cross_heads {}", m.heads, m.cross_heads));
            }
            if m.downsample_rate == 0 || !d.is_multiple_of(m.downsample_rate) || !(d / m.downsample_rate).is_multiple_of(m.heads) {
                return bad(format!(
                    "mask branch: width {d} / downsample_rate {} must be divisible by {} heads",
                    m.downsample_rate, m.heads
                ));
            }
            if m.label_tokens == 0 || m.mask_size == 0 {
                return bad("mask branch: label_tokens and mask_size must be > 0".into());
            }
        }
        Ok(())
    }

    /// Reads `config.json` (and `mmtt_talker.json` when present) of an HF-layout directory.
    pub fn read_dir(dir: &Path) -> Result<(Self, Option<TalkerExtras>), TalkerError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TalkerError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| TalkerError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
        let mut cfg = Self::from_hf(&v)?;
        let extras = TalkerExtras::read(dir)?;
        if let Some(x) = &extras {
            x.apply(&mut cfg)?;
        }
        cfg.preprocess = read_preprocess(dir, &cfg)?;
        cfg.validate()?;
        Ok((cfg, extras))
    }
}

/// `preprocessor_config.json` when present (size, mean, std), else CLIP's at the model's size.
fn read_preprocess(dir: &Path, cfg: &TalkerConfig) -> Result<ImagePreprocess, TalkerError> {
    let mut p = ImagePreprocess::clip(cfg.vision.image_size);
    let path = dir.join("preprocessor_config.json");
    if !path.is_file() {
        return Ok(p);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TalkerError::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| TalkerError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    let triple = |key: &str| -> Option<[f32; 3]> {
        let a = v.get(key)?.as_array()?;
        (a.len() == 3)
            .then(|| [a[0].as_f64().unwrap_or(0.0) as f32, a[1].as_f64().unwrap_or(0.0) as f32, a[2].as_f64().unwrap_or(0.0) as f32])
    };
    if let Some(m) = triple("image_mean") {
        p.mean = m;
    }
    if let Some(s) = triple("image_std") {
        p.std = s;
    }
    if let Some(r) = v.get("rescale_factor").and_then(Value::as_f64) {
        p.rescale_factor = r as f32;
    }
    let size = v.get("size").and_then(|s| s.get("height").or_else(|| s.get("shortest_edge"))).and_then(Value::as_u64);
    if let Some(s) = size {
        if s as usize != cfg.vision.image_size {
            return Err(TalkerError::Config(format!(
                "{}: images are resized to {s} but the vision encoder takes {}: fix the size in one of the two files",
                path.display(),
                cfg.vision.image_size
            )));
        }
        p.size = s as usize;
    }
    Ok(p)
}
