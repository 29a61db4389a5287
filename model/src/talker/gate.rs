//! The release's region gate (spec 1.3.5 and 1.8): an auxiliary head trained beside stage 2 whose
//! only effect is its loss. It changes no caption, mask or prompt (the release computes gated
//! probabilities and never uses them), so inference skips it; training may add `weight *
//! gate_loss` (the release: 0.5) through [`super::train::GateLoss`].
//!
//! For a sample whose FPN predicts n >= 1 regions:
//! - `bert_model` (a separate Hugging Face `BertModel`) encodes the n region words as a batch,
//!   each `[CLS] word [SEP]`, padded to the longest (attention mask on, token types 0; the pad
//!   row of the word embeddings gets no gradient, as `padding_idx` does): the last hidden
//!   states [n, L, H];
//! - the image embeddings after `ln_vision` without CLS [N, D_vision] go through `trans_layer`
//!   (Linear D_vision -> H) and are shared by the n words;
//! - `gate_cross_attention_layer` (`nn.MultiheadAttention(H, 8)`, packed projection, no padding
//!   mask: pad positions attend too) from the word tokens to the projected patches;
//! - `fc_layer` (H -> 1), sigmoid, mean over all L positions (CLS, SEP and padding included):
//!   one gate value in (0, 1) per region.
//!
//! The module tree uses the release's names (`bert_model.*`, `trans_layer.*`,
//! `gate_cross_attention_layer.*`, `fc_layer.*`) with BERT's `LayerNorm` spelled `layer_norm`
//! and `attention.self` spelled `attention.attention`; [`load_gate`] and [`save_gate`] map them.

use super::TalkerError;
use super::mask_branch::PackedMultiheadAttention;
use super::qformer::{MASKED, QAddNorm, QAttention, QDense};
use crate::fpn::face_vit::Init;
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::store::{KeyRemapper, ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A Hugging Face `BertConfig`'s shape (the keys of its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// bert-base-uncased.
    pub fn base() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    /// Reads a `config.json`; unknown keys (architectures, dropout, ...) are ignored.
    pub fn read(dir: &Path) -> Result<Self, TalkerError> {
        let p = dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| TalkerError::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| TalkerError::Config(format!("{}: not a BERT config.json: {e}", p.display())))
    }
}

/// The gate's shape: its BERT, the vision width it projects from, its attention heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateConfig {
    pub bert: BertConfig,
    pub vision_width: usize,
    /// `gate_cross_attention_layer`'s heads (the release: 8).
    pub heads: usize,
}

impl GateConfig {
    pub fn validate(&self) -> Result<(), TalkerError> {
        let b = &self.bert;
        if b.hidden_size == 0 || self.heads == 0 || !b.hidden_size.is_multiple_of(self.heads) {
            return Err(TalkerError::Config(format!("the gate's width {} must be a multiple of its {} heads", b.hidden_size, self.heads)));
        }
        if !b.hidden_size.is_multiple_of(b.num_attention_heads.max(1)) {
            return Err(TalkerError::Config(format!(
                "the gate's BERT width {} must be a multiple of its {} heads",
                b.hidden_size, b.num_attention_heads
            )));
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: QAttention,
    pub intermediate: QDense,
    pub output: QAddNorm,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

/// `BertPooler` (loaded so that standard checkpoints apply fully; the gate does not use it).
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: BertPooler,
}

#[derive(Module, Debug)]
pub struct Gate {
    pub bert_model: Bert,
    pub trans_layer: Linear,
    pub gate_cross_attention_layer: PackedMultiheadAttention,
    pub fc_layer: Linear,
}

impl Gate {
    /// Seeded weights (BERT's and the heads' truncated normal(0.02), zero biases, unit norms).
    pub fn new(cfg: &GateConfig, init: &mut Init) -> Self {
        let b = &cfg.bert;
        let h = b.hidden_size;
        let bert_model = Bert {
            embeddings: BertEmbeddings {
                word_embeddings: init.embedding(b.vocab_size, h),
                position_embeddings: init.embedding(b.max_position_embeddings, h),
                token_type_embeddings: init.embedding(b.type_vocab_size, h),
                layer_norm: init.layer_norm(h, b.layer_norm_eps),
            },
            encoder: BertEncoder {
                layer: (0..b.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: QAttention::with_widths(h, h, b.layer_norm_eps, init),
                        intermediate: QDense { dense: init.linear(h, b.intermediate_size) },
                        output: QAddNorm { dense: init.linear(b.intermediate_size, h), layer_norm: init.layer_norm(h, b.layer_norm_eps) },
                    })
                    .collect(),
            },
            pooler: BertPooler { dense: init.linear(h, h) },
        };
        Gate {
            bert_model,
            trans_layer: init.linear(cfg.vision_width, h),
            gate_cross_attention_layer: PackedMultiheadAttention {
                in_proj_weight: init.trunc_normal([3 * h, h], 0.02),
                in_proj_bias: init.constant([3 * h], 0.0),
                out_proj: init.linear(h, h),
            },
            fc_layer: init.linear(h, 1),
        }
    }

    /// BERT's last hidden states [n, L, H] of `ids` [n][L] with their 0/1 `mask`.
    fn encode_words(&self, cfg: &GateConfig, ids: &[Vec<u32>], mask: &[Vec<u8>], pad_id: u32, device: &Device) -> Tensor<3> {
        let n = ids.len();
        let l = ids.first().map_or(0, Vec::len);
        let flat: Vec<i64> = ids.iter().flat_map(|r| r.iter().map(|&i| i as i64)).collect();
        // BERT's word embedding has `padding_idx = pad_token_id`: the pad row gets no gradient
        let not_pad: Vec<f32> = ids.iter().flat_map(|r| r.iter().map(|&i| if i == pad_id { 0.0 } else { 1.0 })).collect();
        let not_pad = Tensor::<3>::from_data(TensorData::new(not_pad, [n, l, 1]), device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [n, l]), device);
        let e = &self.bert_model.embeddings;
        let words = e.word_embeddings.forward(ids);
        let words = words.clone() * not_pad.clone() + words.detach() * not_pad.neg().add_scalar(1.0);
        let pos = Tensor::<1, Int>::arange(0..l as i64, device).unsqueeze::<2>().expand([n, l]);
        let types = Tensor::<2, Int>::zeros([n, l], device);
        let mut x = e.layer_norm.forward(words + e.position_embeddings.forward(pos) + e.token_type_embeddings.forward(types));
        let v: Vec<f32> = mask.iter().flat_map(|r| r.iter().map(|m| if *m == 0 { MASKED } else { 0.0 })).collect();
        let additive = Tensor::<4>::from_data(TensorData::new(v, [n, 1, 1, l]), device);
        for layer in &self.bert_model.encoder.layer {
            let a = layer.attention.attend(cfg.bert.num_attention_heads, x.clone(), x, Some(additive.clone()));
            x = layer.output.ff(&layer.intermediate, a);
        }
        x
    }

    /// The gate values [n] of one sample's region words, given its image embeddings after
    /// `ln_vision` [1 + N, D_vision] (CLS first) and the words' token ids (each `[CLS] .. [SEP]`,
    /// unpadded; padded here to the longest with `pad_id`).
    pub fn values(&self, cfg: &GateConfig, image: Tensor<2>, words: &[Vec<u32>], pad_id: u32) -> Tensor<1> {
        let device = image.device();
        let n = words.len();
        let l = words.iter().map(Vec::len).max().unwrap_or(0);
        let ids: Vec<Vec<u32>> =
            words.iter().map(|w| w.iter().copied().chain(std::iter::repeat_n(pad_id, l - w.len())).collect()).collect();
        let mask: Vec<Vec<u8>> = words.iter().map(|w| (0..l).map(|i| u8::from(i < w.len())).collect()).collect();
        let hidden = self.encode_words(cfg, &ids, &mask, pad_id, &device);
        let [tokens, dv] = image.dims();
        let patches = image.slice([1..tokens, 0..dv]);
        let h = cfg.bert.hidden_size;
        let kv = self.trans_layer.forward(patches).unsqueeze::<3>().expand([n, tokens - 1, h]);
        let att = self.gate_cross_attention_layer.forward(cfg.heads, hidden, kv);
        let g = sigmoid(self.fc_layer.forward(att)); // [n, L, 1]
        g.mean_dim(1).reshape([n])
    }
}

/// Module paths <- the release's (and `BertModel`'s) names.
const FROM_FILE: &[(&str, &str)] = &[(r"\.attention\.self\.", ".attention.attention."), (r"\.LayerNorm\.", ".layer_norm.")];

/// The release's names <- module paths.
const TO_FILE: &[(&str, &str)] = &[(r"\.attention\.attention\.", ".attention.self."), (r"\.layer_norm\.", ".LayerNorm.")];

fn remapper(pairs: &[(&str, &str)], first: Option<(&str, &str)>) -> Result<KeyRemapper, TalkerError> {
    let mut p = Vec::new();
    for (a, b) in first.into_iter().chain(pairs.iter().copied()) {
        p.push((regex::Regex::new(a).map_err(|e| TalkerError::Config(format!("pattern {a}: {e}")))?, b.to_string()));
    }
    Ok(KeyRemapper::from_compiled_patterns(p))
}

/// Which tensors a gate file gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFile {
    /// The whole gate in the release's names (`bert_model.*`, `trans_layer.*`, ...): a gate
    /// checkpoint as [`save_gate`] writes it. Every tensor must be present.
    Whole,
    /// A Hugging Face BERT (`BertModel`'s `embeddings.*`, or `bert.*` as `BertForPreTraining`
    /// saves it): the gate's `bert_model`; the heads keep their seeded weights. `cls.*` heads are
    /// ignored.
    Bert,
}

/// Loads `file` into `gate`, reporting every missing, unexpected or mis-shaped tensor by its
/// file name; nothing is changed when there is a problem.
pub fn load_gate(gate: Gate, file: &Path, kind: GateFile) -> Result<Gate, TalkerError> {
    let first = match kind {
        GateFile::Whole => None,
        GateFile::Bert => Some((r"^(bert\.)?", "bert_model.")),
    };
    let mut store = SafetensorsStore::from_file(file)
        .with_from_adapter(burn::store::PyTorchToBurnAdapter)
        .remap(remapper(FROM_FILE, first)?)
        .allow_partial(true)
        .validate(false);
    let mut loaded = gate.clone();
    let r = loaded.load_from(&mut store).map_err(|e| TalkerError::Weights(format!("{}: cannot read safetensors: {e}", file.display())))?;
    check_applied(file, &r, kind, &|_| true)?;
    Ok(loaded.map(&mut super::weights::ToF32))
}

/// The module-path prefixes of the gate's tensors, as the release's checkpoint names them.
const GATE_PREFIXES: [&str; 4] = ["bert_model.", "trans_layer.", "gate_cross_attention_layer.", "fc_layer."];

/// Loads the whole gate from a PyTorch checkpoint that holds it beside other tensors: the
/// release's DFF checkpoint (`key` = `model`: the fine-tuned `bert_model.*`, `trans_layer.*`,
/// `gate_cross_attention_layer.*` and `fc_layer.*`, whatever their dtype). The file's other tensors
/// (the rest of the model) are not the gate's and are left alone; a missing or mis-shaped gate
/// tensor is an error that names them all, and nothing is loaded then.
pub fn load_gate_pytorch(gate: Gate, file: &Path, key: Option<&str>) -> Result<Gate, TalkerError> {
    let store = burn::store::PytorchStore::from_file(file)
        .remap(remapper(FROM_FILE, None)?)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .validate(false);
    let mut store = match key {
        Some(k) => store.with_top_level_key(k),
        None => store,
    };
    let mut loaded = gate.clone();
    let r = loaded
        .load_from(&mut store)
        .map_err(|e| TalkerError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", file.display())))?;
    check_applied(file, &r, GateFile::Whole, &|u| GATE_PREFIXES.iter().any(|p| u.starts_with(p)))?;
    Ok(loaded.map(&mut super::weights::ToF32))
}

/// The problems of one application: mis-shaped tensors, the gate's names the gate lacks
/// (`ours(name)`: an unused name the file means for the gate), and what `kind` needs but the
/// file lacks.
fn check_applied(file: &Path, r: &burn::store::ApplyResult, kind: GateFile, ours: &dyn Fn(&str) -> bool) -> Result<(), TalkerError> {
    let mut problems = Vec::new();
    for e in &r.errors {
        problems.push(format!("{e}"));
    }
    for u in &r.unused {
        let ignorable = u.starts_with("bert_model.cls.") || u.ends_with("position_ids") || !ours(u);
        if !ignorable {
            problems.push(format!("unexpected: `{u}`"));
        }
    }
    for (m, _) in &r.missing {
        let needed = kind == GateFile::Whole || m.starts_with("bert_model.");
        if needed && !r.applied.contains(m) {
            problems.push(format!("missing: `{}`", file_name(m)));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(TalkerError::Weights(format!(
        "{}: {} gate tensor problem(s), nothing loaded:\n  {}\n(a gate file holds `bert_model.*`, `trans_layer.*`, `gate_cross_attention_layer.*` and `fc_layer.*` with the configured shapes; a BERT file holds a BertModel of the configured shape)",
        file.display(),
        problems.len(),
        problems.join("\n  ")
    )))
}

/// A module path as the release's files name it.
fn file_name(path: &str) -> String {
    let mut n = path.replace(".attention.attention.", ".attention.self.").replace(".layer_norm.", ".LayerNorm.");
    for (burn, torch) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = n.strip_suffix(burn) {
            n = format!("{stem}{torch}");
        }
    }
    n
}

/// Writes the gate in the release's names (`gate.safetensors` in a checkpoint).
pub fn save_gate(gate: &Gate, file: &Path) -> Result<(), TalkerError> {
    let tmp = file.with_extension("safetensors.tmp");
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(burn::store::BurnToPyTorchAdapter)
        .metadata("format", "pt")
        .overwrite(true)
        .remap(remapper(TO_FILE, None)?);
    gate.save_into(&mut store).map_err(|e| TalkerError::Checkpoint(format!("{}: cannot write the gate: {e}", tmp.display())))?;
    std::fs::rename(&tmp, file).map_err(|e| TalkerError::io(file, e))
}
