//! Loading the talker by tensor name, through burn-store, from the two layouts users have:
//!
//! - **Hugging Face** ([`load_hf_dir`]): an `InstructBlipForConditionalGeneration` directory
//!   (`config.json`, `model.safetensors` or sharded `model-*.safetensors` with their index, the
//!   tokenizer files and `qformer_tokenizer/`). A ForgeryTalker directory adds `mmtt_talker.json`,
//!   the mask branch (`mask_branch.safetensors`, the release's names) and an FPN directory.
//! - **The authors' release** ([`load_release_dir`]): their `model_parameter/` folder: EVA's
//!   `eva_vit_g.pth`, `flant5xl/` (HF T5), `bert-base-uncased/` (tokenizer and Q-Former config), an
//!   optional `instruct_blip_flanxl_trimmed.pth`, and the DFF checkpoint (`*checkpoint*.pth`, its
//!   `model` dict), loaded in the release's order so later files override earlier ones.
//!
//! Unlike the release's own loader, nothing is left at random: every tensor of the model must
//! come from some file, and every missing, unexpected or mis-shaped tensor is listed in one
//! [`TalkerError::Weights`] by the file's own name. Tensors stored in bf16 or fp16 (frozen parts)
//! load and are widened to f32.

use super::TalkerError;
use super::config::{MaskBranchConfig, QFormerConfig, T5Config, TalkerConfig, TalkerExtras, VisionConfig};
use super::instructblip::{InstructBlip, Talker};
use super::mask_branch::MaskBranch;
use crate::fpn::face_vit::Init;
use burn::module::{Module, ModuleMapper, Param};
use burn::store::{ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::{DType, Device, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// File names -> module paths shared by both layouts (BERT's and T5's CamelCase module names).
const HF: &[(&str, &str)] = &[
    (r"\.LayerNorm\.", ".layer_norm."),
    (r"\.SelfAttention\.", ".self_attention."),
    (r"\.EncDecAttention\.", ".enc_dec_attention."),
    (r"\.DenseReluDense\.", ".dense_relu_dense."),
];

/// The release's names (EVA, LAVIS' Q-Former, `t5_proj`, `ln_vision`, `t5_model`) -> module paths.
const RELEASE: &[(&str, &str)] = &[
    (r"^visual_encoder\.", ""),
    (r"^cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", "vision_model.encoder.layers.$1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", "vision_model.encoder.layers.$1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", "vision_model.encoder.layers.$1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.(q_bias|v_bias)$", "vision_model.encoder.layers.$1.self_attn.$2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", "vision_model.encoder.layers.$1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.(fc1|fc2)\.", "vision_model.encoder.layers.$1.mlp.$2."),
    (r"^ln_vision\.", "vision_model.post_layernorm."),
    (r"^t5_proj\.", "language_projection."),
    (r"^t5_model\.", "language_model."),
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.embeddings.layernorm."),
    (r"^Qformer\.bert\.embeddings\.", "qformer.embeddings."),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", "qformer.encoder.layer.$1.$2.attention."),
    (r"^Qformer\.bert\.encoder\.", "qformer.encoder."),
    (r"\.LayerNorm\.", ".layer_norm."),
    (r"\.SelfAttention\.", ".self_attention."),
    (r"\.EncDecAttention\.", ".enc_dec_attention."),
    (r"\.DenseReluDense\.", ".dense_relu_dense."),
];

/// Release names no inference path uses (the gate, the MLM and contrastive heads, `seg_proj`).
const RELEASE_UNUSED: &[&str] = &[
    "bert_model.",
    "gate_cross_attention_layer.",
    "trans_layer.",
    "fc_layer.",
    "mlm_head.",
    "text_proj.",
    "seg_proj.",
    "Qformer.cls.",
    "Qformer.bert.embeddings.position_ids",
];

/// Aliases transformers may save beside `shared.weight`, and buffers that are not weights.
fn hf_alias(name: &str) -> bool {
    name.ends_with("encoder.embed_tokens.weight") || name.ends_with("decoder.embed_tokens.weight") || name.ends_with("position_ids")
}

fn regexes(pairs: &[(&str, &str)]) -> Vec<(regex::Regex, String)> {
    // The patterns are constants of this file; a bad one is a bug the tests catch.
    pairs.iter().map(|(p, r)| (regex::Regex::new(p).expect("layout patterns are valid regular expressions"), r.to_string())).collect()
}

/// Applies the patterns in order, as burn-store's `KeyRemapper` does.
fn remap_name(patterns: &[(regex::Regex, String)], name: &str) -> String {
    let mut n = name.to_string();
    for (re, rep) in patterns {
        if re.is_match(&n) {
            n = re.replace_all(&n, rep.as_str()).into_owned();
        }
    }
    n
}

fn remapper(pairs: &[(&str, &str)], prefix: Option<&str>) -> KeyRemapper {
    let mut p = regexes(pairs);
    if let Some(pre) = prefix {
        p.insert(0, (regex::Regex::new("^").expect("valid"), pre.to_string()));
    }
    KeyRemapper::from_compiled_patterns(p)
}

/// A module path as a file names it (burn's `gamma`/`beta` are `weight`/`bias`; BERT and T5 module
/// names in CamelCase).
fn hf_name(path: &str) -> String {
    let mut n = path
        .strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")))
        .unwrap_or_else(|| path.to_string());
    if n.starts_with("qformer.") && !n.starts_with("qformer.embeddings.") {
        n = n.replace(".layer_norm.", ".LayerNorm.");
    }
    n.replace(".self_attention.", ".SelfAttention.")
        .replace(".enc_dec_attention.", ".EncDecAttention.")
        .replace(".dense_relu_dense.", ".DenseReluDense.")
}

/// Torch's [out, in] for messages: burn keeps linear weights as [in, out].
fn torch_dims(path: &str, s: &burn::tensor::Shape) -> Vec<usize> {
    let mut d = s.as_slice().to_vec();
    // raw 2-D parameters kept in PyTorch's layout (the packed MHA projection) are not transposed
    if d.len() == 2
        && path.ends_with(".weight")
        && !path.ends_with("in_proj_weight")
        && !path.contains("embedding")
        && !path.contains("shared")
    {
        d.reverse();
    }
    d
}

/// What the files gave, over several files and modules.
#[derive(Default)]
struct Tally {
    applied: BTreeSet<String>,
    missing: BTreeSet<String>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Tally {
    /// Records one file's application. `unexpected(name)` says whether an unused (remapped) name
    /// is an error; `show(path)` names a module path as the user's file names it.
    fn add(&mut self, file: &Path, r: ApplyResult, unexpected: &dyn Fn(&str) -> bool, show: &dyn Fn(&str) -> String) {
        self.applied.extend(r.applied);
        self.missing.extend(r.missing.into_iter().map(|(p, _)| p));
        for u in r.unused {
            if unexpected(&u) {
                self.problems.push(format!("unexpected: `{}` in {}", show(&u), file.display()));
            }
        }
        for e in r.errors {
            match e {
                ApplyError::ShapeMismatch { path, expected, found } => self.problems.push(format!(
                    "mis-shaped: `{}` in {} is {:?}, the model needs {:?}",
                    show(&path),
                    file.display(),
                    torch_dims(&path, &found),
                    torch_dims(&path, &expected)
                )),
                other => self.problems.push(format!("{}: {other}", file.display())),
            }
        }
    }

    /// `Ok(notes)` when every module tensor was applied (except those `optional` accepts) and
    /// no file had a problem.
    fn finish(mut self, what: &str, optional: &dyn Fn(&str) -> bool, show: &dyn Fn(&str) -> String) -> Result<Vec<String>, TalkerError> {
        for m in &self.missing {
            if !self.applied.contains(m) && !optional(m) {
                self.problems.push(format!("missing: `{}`", show(m)));
            }
        }
        if self.problems.is_empty() {
            return Ok(self.notes);
        }
        Err(TalkerError::Weights(format!(
            "{what}: {} tensor problem(s), nothing loaded:\n  {}\n(every tensor of the configured model must come from the files, with its \
             shape: check that config.json matches the weights and that the files are complete)",
            self.problems.len(),
            self.problems.join("\n  ")
        )))
    }
}

fn safetensors_into<M: ModuleSnapshot>(module: &mut M, file: &Path, remap: KeyRemapper) -> Result<ApplyResult, TalkerError> {
    let mut store = SafetensorsStore::from_file(file)
        .with_from_adapter(burn::store::PyTorchToBurnAdapter)
        .remap(remap)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .validate(false);
    module.load_from(&mut store).map_err(|e| TalkerError::Weights(format!("{}: cannot read safetensors: {e}", file.display())))
}

fn pytorch_into<M: ModuleSnapshot>(module: &mut M, file: &Path, remap: KeyRemapper, key: Option<&str>) -> Result<ApplyResult, TalkerError> {
    let store = PytorchStore::from_file(file).remap(remap).map_indices_contiguous(false).allow_partial(true).validate(false);
    let mut store = match key {
        Some(k) => store.with_top_level_key(k),
        None => store,
    };
    module.load_from(&mut store).map_err(|e| TalkerError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", file.display())))
}

/// The original tensor names and shapes of a PyTorch file (`key`: the dict holding them).
pub(crate) fn pytorch_shapes(file: &Path, key: Option<&str>) -> Result<BTreeMap<String, Vec<usize>>, TalkerError> {
    let store = PytorchStore::from_file(file).map_indices_contiguous(false);
    let mut store = match key {
        Some(k) => store.with_top_level_key(k),
        None => store,
    };
    let err = |e: String| TalkerError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", file.display()));
    let keys = store.keys().map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for k in keys {
        if let Some(t) = store.get_tensor(&k).map_err(|e| err(e.to_string()))? {
            out.insert(k, t.shape.as_slice().to_vec());
        }
    }
    Ok(out)
}

/// Widens every float parameter to f32 (bf16 / fp16 files load as they are stored).
pub(crate) struct ToF32;

impl ModuleMapper for ToF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| if t.dtype() == DType::F32 { t } else { t.cast(DType::F32) })
    }
}

/// The safetensors files of an HF directory: the index's shards, or `model.safetensors`.
pub fn hf_weight_files(dir: &Path) -> Result<Vec<PathBuf>, TalkerError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| TalkerError::io(&index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TalkerError::Weights(format!("{}: not valid JSON: {e}", index.display())))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| TalkerError::Weights(format!("{}: no `weight_map` object (is this a safetensors index?)", index.display())))?;
        let files: BTreeSet<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        let mut out = Vec::new();
        for f in files {
            let p = dir.join(&f);
            if !p.is_file() {
                return Err(TalkerError::Weights(format!(
                    "{}: shard `{f}` listed in the index is not in {}",
                    index.display(),
                    dir.display()
                )));
            }
            out.push(p);
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(TalkerError::Weights(format!(
        "{}: no model.safetensors and no model.safetensors.index.json: save the model with `save_pretrained` (safetensors)",
        dir.display()
    )))
}

/// The tensor names in a safetensors file's header (the file's data is not read).
pub fn safetensors_names(file: &Path) -> Result<Vec<String>, TalkerError> {
    use std::io::Read;
    let bad = |m: String| TalkerError::Weights(format!("{}: {m}", file.display()));
    let mut f = std::fs::File::open(file).map_err(|e| TalkerError::io(file, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(bad(format!("header of {n} bytes: not a safetensors file")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| bad(format!("truncated header ({e})")))?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    Ok(v.as_object().map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect()).unwrap_or_default())
}

/// Settles what the configuration cannot say but the files do: the vision bias layout.
pub fn adapt_hf_config(dir: &Path, cfg: &mut TalkerConfig) -> Result<(), TalkerError> {
    for f in hf_weight_files(dir)? {
        if safetensors_names(&f)?.iter().any(|n| n.ends_with("self_attn.qkv.bias")) {
            cfg.vision.packed_qkv_bias = true;
        }
    }
    Ok(())
}

/// Loads an HF-layout InstructBLIP (or ForgeryTalker) directory.
pub fn load_hf_dir(dir: &Path, cfg: &TalkerConfig, device: &Device) -> Result<Talker, TalkerError> {
    let mut blip = InstructBlip::new(cfg, &mut Init::for_loading(device));
    let mut tally = Tally::default();
    let files = hf_weight_files(dir)?;
    for f in &files {
        let r = safetensors_into(&mut blip, f, remapper(HF, None))?;
        tally.add(f, r, &|u| !hf_alias(u), &hf_name);
    }
    let tied = !tally.applied.contains("language_model.lm_head.weight");
    tally.finish(&dir.display().to_string(), &|m| m == "language_model.lm_head.weight", &hf_name)?;
    if tied {
        blip.language_model.lm_head = None;
    }
    let mask = match &cfg.mask_branch {
        Some(m) => Some(load_mask_safetensors(&dir.join(&m.file), m, cfg, device)?),
        None => None,
    };
    Ok(Talker { config: cfg.clone(), blip: blip.map(&mut ToF32), mask: mask.map(|m| m.map(&mut ToF32)) })
}

fn load_mask_safetensors(file: &Path, m: &MaskBranchConfig, cfg: &TalkerConfig, device: &Device) -> Result<MaskBranch, TalkerError> {
    if !file.is_file() {
        return Err(TalkerError::Weights(format!(
            "{}: no such file; mmtt_talker.json declares a mask branch, whose weights (prompt_proj, cross_attention_layer, \
             mask_decoder) belong in this file",
            file.display()
        )));
    }
    let mut branch = MaskBranch::new(m, cfg.text.d_model, cfg.vision.hidden_size, &mut Init::for_loading(device));
    let mut tally = Tally::default();
    let r = safetensors_into(&mut branch, file, KeyRemapper::new())?;
    tally.add(file, r, &|_| true, &hf_name);
    tally.finish(&file.display().to_string(), &|_| false, &hf_name)?;
    Ok(branch)
}

/// The files of a release folder, found as the release names them.
#[derive(Debug, Clone)]
pub struct ReleaseFiles {
    pub eva: PathBuf,
    pub t5_dir: PathBuf,
    pub bert_dir: PathBuf,
    pub trimmed: Option<PathBuf>,
    pub checkpoint: PathBuf,
}

impl ReleaseFiles {
    pub fn find(dir: &Path) -> Result<Self, TalkerError> {
        let first = |cands: &[PathBuf]| cands.iter().find(|p| p.exists()).cloned();
        let eva = first(&[dir.join("eva_vit_g.pth"), dir.join("bert-base-uncased/eva_vit_g.pth")]).ok_or_else(|| {
            TalkerError::Weights(format!("{}: no eva_vit_g.pth (EVA ViT-g weights, as the release downloads them)", dir.display()))
        })?;
        let t5_dir = first(&[dir.join("flant5xl"), dir.join("flan-t5-xl"), dir.join("flant5base")]).ok_or_else(|| {
            TalkerError::Weights(format!("{}: no flant5xl/ folder (the Hugging Face google/flan-t5-xl files)", dir.display()))
        })?;
        let bert_dir = dir.join("bert-base-uncased");
        if !bert_dir.is_dir() {
            return Err(TalkerError::Weights(format!("{}: no bert-base-uncased/ folder (its tokenizer and config)", dir.display())));
        }
        let trimmed = first(&[dir.join("instruct_blip_flanxl_trimmed.pth")]);
        let mut ckpts: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| TalkerError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.ends_with(".pth") && n.contains("checkpoint")
            })
            .collect();
        ckpts.sort();
        let checkpoint = match ckpts.len() {
            1 => ckpts.remove(0),
            0 => {
                return Err(TalkerError::Weights(format!(
                    "{}: no DFF checkpoint (a `*checkpoint*.pth` file such as 2111_checkpoint_best.pth)",
                    dir.display()
                )));
            }
            _ => {
                return Err(TalkerError::Weights(format!(
                    "{}: several checkpoints ({}): keep the one to run in the folder",
                    dir.display(),
                    ckpts.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        Ok(ReleaseFiles { eva, t5_dir, bert_dir, trimmed, checkpoint })
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, TalkerError> {
    let text = std::fs::read_to_string(path).map_err(|e| TalkerError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TalkerError::Config(format!("{}: not valid JSON: {e}", path.display())))
}

/// The release model's shape from its files: EVA's width, patch, positions and blocks (the
/// release builds all but the last), the Q-Former from `bert-base-uncased/config.json` plus the
/// `[DEC]` token, T5 from `flant5xl/config.json` with the release's exact-GELU override, and the
/// mask branch's release sizes; `mmtt_talker.json` may override what no file records.
pub fn release_config(files: &ReleaseFiles, extras: Option<&TalkerExtras>) -> Result<TalkerConfig, TalkerError> {
    let eva = pytorch_shapes(&files.eva, None)?;
    let eva_file = files.eva.display().to_string();
    let get = |k: &str| {
        eva.get(k).cloned().ok_or_else(|| TalkerError::Weights(format!("{eva_file}: no `{k}` tensor; is this EVA's eva_vit_g.pth?")))
    };
    let cls = get("cls_token")?;
    let pos = get("pos_embed")?;
    let patch = get("patch_embed.proj.weight")?;
    let fc1 = get("blocks.0.mlp.fc1.weight")?;
    let blocks = eva.keys().filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok()).max().map_or(0, |m| m + 1);
    let width = cls.last().copied().unwrap_or(0);
    let patch_size = patch.last().copied().unwrap_or(0);
    let grid = ((pos.get(1).copied().unwrap_or(1).saturating_sub(1)) as f64).sqrt() as usize;
    let ev = extras.and_then(|x| x.vision.clone()).unwrap_or(serde_json::json!({}));
    let heads = match ev.get("num_attention_heads").and_then(|h| h.as_u64()) {
        Some(h) => h as usize,
        None if width % 88 == 0 => width / 88,
        None => {
            return Err(TalkerError::Config(format!(
                "{eva_file}: width {width} is not EVA ViT-g's (1408): give the number of heads in mmtt_talker.json \
                 (`\"vision\": {{\"num_attention_heads\": N}}`)"
            )));
        }
    };
    let depth = ev.get("num_hidden_layers").and_then(|h| h.as_u64()).map(|d| d as usize).unwrap_or(blocks.saturating_sub(1));
    if depth == 0 || depth > blocks {
        return Err(TalkerError::Config(format!("{eva_file}: {blocks} blocks in the file, so {depth} cannot be built")));
    }
    let vision = VisionConfig {
        image_size: grid * patch_size,
        patch_size,
        hidden_size: width,
        intermediate_size: fc1.first().copied().unwrap_or(0),
        num_hidden_layers: depth,
        num_attention_heads: heads,
        layer_norm_eps: ev.get("layer_norm_eps").and_then(|e| e.as_f64()).unwrap_or(1e-6),
        qkv_bias: eva.contains_key("blocks.0.attn.q_bias"),
        post_layernorm_eps: 1e-5,
        packed_qkv_bias: false,
    };
    let ckpt = pytorch_shapes(&files.checkpoint, Some("model"))?;
    let qshape = ckpt.get("query_tokens").cloned().ok_or_else(|| {
        TalkerError::Weights(format!("{}: no `query_tokens` in its `model` dict; is this the DFF checkpoint?", files.checkpoint.display()))
    })?;
    let mut qformer = QFormerConfig::from_hf(&read_json(&files.bert_dir.join("config.json"))?)?;
    qformer.vocab_size += 1; // the release's added [DEC] bos token
    qformer.encoder_hidden_size = width;
    qformer.cross_attention_frequency = 2;
    let qlayers = ckpt.keys().filter_map(|k| k.strip_prefix("Qformer.bert.encoder.layer.")?.split('.').next()?.parse::<usize>().ok()).max();
    if let Some(m) = qlayers {
        qformer.num_hidden_layers = m + 1;
    }
    let mut text = T5Config::from_hf(&read_json(&files.t5_dir.join("config.json"))?)?;
    text.dense_act_fn = super::config::Activation::Gelu;
    let mut cfg = TalkerConfig {
        preprocess: super::config::ImagePreprocess::clip(vision.image_size),
        vision,
        qformer,
        text,
        num_query_tokens: qshape.get(1).copied().unwrap_or(32),
        image_token_index: None,
        mask_branch: Some(MaskBranchConfig::release()),
        template: super::config::Template::Release,
        max_txt_len: 128,
    };
    if let Some(m) = cfg.mask_branch.as_mut() {
        m.mask_size = cfg.vision.image_size;
    }
    if let Some(x) = extras {
        x.apply(&mut cfg)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Loads the release's files in its order: EVA, flan-t5, the trimmed InstructBLIP (if present),
/// then the DFF checkpoint's `model` dict.
pub fn load_release(files: &ReleaseFiles, cfg: &TalkerConfig, device: &Device) -> Result<(Talker, Vec<String>), TalkerError> {
    let mut blip = InstructBlip::new(cfg, &mut Init::for_loading(device));
    let release = regexes(RELEASE);
    let mut tally = Tally::default();
    let depth = cfg.vision.num_hidden_layers;
    // EVA: blocks past the configured depth are ignored, as the release builds them out
    let eva_extra = |u: &str| {
        u.strip_prefix("vision_model.encoder.layers.").and_then(|r| r.split('.').next()?.parse::<usize>().ok()).is_some_and(|i| i >= depth)
    };
    let r = pytorch_into(&mut blip, &files.eva, remapper(RELEASE, None), None)?;
    let ignored = r.unused.iter().filter(|u| eva_extra(u)).count();
    if ignored > 0 {
        tally
            .notes
            .push(format!("{}: {ignored} tensors of blocks >= {depth} ignored (the release builds {depth} blocks)", files.eva.display()));
    }
    tally.add(&files.eva, r, &|u| !eva_extra(u), &hf_name);
    for f in hf_weight_files(&files.t5_dir).or_else(|_| {
        let bin = files.t5_dir.join("pytorch_model.bin");
        if bin.is_file() { Ok(vec![bin]) } else { Err(TalkerError::Weights(format!("{}: no T5 weights", files.t5_dir.display()))) }
    })? {
        let r = if f.extension().is_some_and(|e| e == "bin") {
            pytorch_into(&mut blip, &f, remapper(HF, Some("language_model.")), None)?
        } else {
            safetensors_into(&mut blip, &f, remapper(HF, Some("language_model.")))?
        };
        // T5 files hold only T5: everything else of the model comes later
        tally.add(&f, r, &|u| !hf_alias(u), &hf_name);
    }
    let mask_or_fpn = |orig: &str| {
        orig.starts_with("prompt_proj.")
            || orig.starts_with("cross_attention_layer.")
            || orig.starts_with("mask_decoder.")
            || orig.starts_with("multi_label_classifier.")
    };
    let mut sources: Vec<(PathBuf, Option<&str>)> = Vec::new();
    if let Some(t) = &files.trimmed {
        sources.push((t.clone(), Some("model")));
    }
    sources.push((files.checkpoint.clone(), Some("model")));
    for (file, key) in &sources {
        let names = pytorch_shapes(file, *key)?;
        let back: BTreeMap<String, String> = names.keys().map(|n| (remap_name(&release, n), n.clone())).collect();
        let r = pytorch_into(&mut blip, file, remapper(RELEASE, None), *key)?;
        let unexpected = |u: &str| {
            let orig = back.get(u).map(String::as_str).unwrap_or(u);
            !(mask_or_fpn(orig) || RELEASE_UNUSED.iter().any(|p| orig.starts_with(p)) || hf_alias(orig))
        };
        tally.add(file, r, &unexpected, &|p| release_name(p));
    }
    let tied = !tally.applied.contains("language_model.lm_head.weight");
    let notes = tally.finish("release folder", &|m| m == "language_model.lm_head.weight", &|p| release_name(p))?;
    if tied {
        blip.language_model.lm_head = None;
    }
    let mask = match &cfg.mask_branch {
        Some(m) => {
            let mut branch = MaskBranch::new(m, cfg.text.d_model, cfg.vision.hidden_size, &mut Init::for_loading(device));
            let mut t = Tally::default();
            let r = pytorch_into(&mut branch, &files.checkpoint, KeyRemapper::new(), Some("model"))?;
            t.add(&files.checkpoint, r, &|_| false, &hf_name);
            t.finish(&files.checkpoint.display().to_string(), &|_| false, &hf_name)?;
            Some(branch.map(&mut ToF32))
        }
        None => None,
    };
    Ok((Talker { config: cfg.clone(), blip: blip.map(&mut ToF32), mask }, notes))
}

/// Module paths -> HF names when saving (the inverse of [`HF`]): BERT's `LayerNorm` in the
/// Q-Former encoder, T5's CamelCase sub-modules.
const HF_BACK: &[(&str, &str)] = &[
    (r"^(qformer\.encoder\..*)\.layer_norm\.", "$1.LayerNorm."),
    (r"\.self_attention\.", ".SelfAttention."),
    (r"\.enc_dec_attention\.", ".EncDecAttention."),
    (r"\.dense_relu_dense\.", ".DenseReluDense."),
];

/// Writes `module`'s tensors (those whose module path matches one of `only`, all when empty) to
/// a safetensors file in the HF layout, through a temporary name.
fn save_safetensors<M: ModuleSnapshot>(module: &M, file: &Path, only: &[String], hf_names: bool) -> Result<(), TalkerError> {
    let tmp = file.with_extension("safetensors.tmp");
    let mut store =
        SafetensorsStore::from_file(&tmp).with_to_adapter(burn::store::BurnToPyTorchAdapter).metadata("format", "pt").overwrite(true);
    if hf_names {
        store = store.remap(remapper(HF_BACK, None));
    }
    for p in only {
        store = store.with_regex(p);
    }
    module.save_into(&mut store).map_err(|e| TalkerError::Weights(format!("{}: cannot write safetensors: {e}", tmp.display())))?;
    std::fs::rename(&tmp, file).map_err(|e| TalkerError::io(file, e))
}

fn write_json_file(path: &Path, v: &serde_json::Value) -> Result<(), TalkerError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(v).map_err(|e| TalkerError::Config(e.to_string()))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| TalkerError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TalkerError::io(path, e))
}

/// Writes a ForgeryTalker directory that [`load_hf_dir`] and `Explainer::load` read:
/// `config.json`, `preprocessor_config.json`, `mmtt_talker.json` (`extras`), `model.safetensors`
/// (HF names) and `mask_branch.safetensors` (the release's names). With `extras.base` set, only
/// the InstructBLIP tensors whose module path matches `trained` are written (the rest come from
/// the base); otherwise every tensor is. The tokenizers are the caller's to copy.
pub fn save_dir(talker: &Talker, extras: &TalkerExtras, trained: &[String], dir: &Path) -> Result<(), TalkerError> {
    std::fs::create_dir_all(dir).map_err(|e| TalkerError::io(dir, e))?;
    let cfg = &talker.config;
    let only: &[String] = if extras.base.is_some() { trained } else { &[] };
    if extras.base.is_none() || !only.is_empty() {
        save_safetensors(&talker.blip, &dir.join("model.safetensors"), only, true)?;
    }
    if let (Some(m), Some(branch)) = (&cfg.mask_branch, &talker.mask) {
        save_safetensors(branch, &dir.join(&m.file), &[], false)?;
    }
    let mut hf = cfg.to_hf();
    // transformers ties the LM head to `shared` unless told otherwise
    hf["text_config"]["tie_word_embeddings"] = serde_json::json!(talker.blip.language_model.lm_head.is_none());
    write_json_file(&dir.join("config.json"), &hf)?;
    let p = &cfg.preprocess;
    write_json_file(
        &dir.join("preprocessor_config.json"),
        &serde_json::json!({
            "image_processor_type": "BlipImageProcessor",
            "do_resize": true, "size": {"height": p.size, "width": p.size}, "resample": 3,
            "do_rescale": true, "rescale_factor": p.rescale_factor,
            "do_normalize": true, "image_mean": p.mean, "image_std": p.std, "do_convert_rgb": true
        }),
    )?;
    write_json_file(&dir.join("mmtt_talker.json"), &serde_json::to_value(extras).map_err(|e| TalkerError::Config(e.to_string()))?)
}

/// Loads a checkpoint whose `mmtt_talker.json` names a `base`: the base (an HF-layout directory
/// or the release folder) first, then this directory's tensors over it. Every tensor of this
/// directory must land on a module tensor of the same shape.
pub fn load_with_base(dir: &Path, base: &Path, cfg: &TalkerConfig, device: &Device) -> Result<Talker, TalkerError> {
    let mut talker = if base.join("config.json").is_file() {
        let mut base_cfg = cfg.clone();
        base_cfg.mask_branch = None;
        adapt_hf_config(base, &mut base_cfg)?;
        let t = load_hf_dir(base, &base_cfg, device)?;
        Talker { config: cfg.clone(), blip: t.blip, mask: None }
    } else {
        let files = ReleaseFiles::find(base)?;
        let (t, _) = load_release(&files, cfg, device)?;
        t
    };
    let file = dir.join("model.safetensors");
    if file.is_file() {
        let mut tally = Tally::default();
        let r = safetensors_into(&mut talker.blip, &file, remapper(HF, None))?;
        if r.applied.is_empty() {
            tally.problems.push(format!("{}: no tensor of it names a module tensor", file.display()));
        }
        tally.add(&file, ApplyResult { missing: Vec::new(), ..r }, &|u| !hf_alias(u), &hf_name);
        tally.finish(&dir.display().to_string(), &|_| true, &hf_name)?;
    }
    if let Some(m) = &cfg.mask_branch {
        let f = dir.join(&m.file);
        if f.is_file() || talker.mask.is_none() {
            talker.mask = Some(load_mask_safetensors(&f, m, cfg, device)?);
        }
    }
    Ok(Talker { config: cfg.clone(), blip: talker.blip.map(&mut ToF32), mask: talker.mask.map(|m| m.map(&mut ToF32)) })
}

/// A module path as the release's files name it.
fn release_name(path: &str) -> String {
    const BACK: &[(&str, &str)] = &[
        (r"^vision_model\.embeddings\.class_embedding$", "cls_token (eva_vit_g.pth)"),
        (r"^vision_model\.embeddings\.position_embedding$", "pos_embed (eva_vit_g.pth)"),
        (r"^vision_model\.embeddings\.patch_embedding\.", "patch_embed.proj."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", "blocks.$1.norm1."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", "blocks.$1.norm2."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", "blocks.$1.attn.proj."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.", "blocks.$1.attn."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", "blocks.$1.mlp."),
        (r"^vision_model\.post_layernorm\.", "ln_vision."),
        (r"^language_projection\.", "t5_proj."),
        (r"^language_model\.", "t5_model."),
        (r"^qformer\.embeddings\.layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
        (r"^qformer\.embeddings\.", "Qformer.bert.embeddings."),
        (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", "Qformer.bert.encoder.layer.$1.$2.self."),
        (r"^qformer\.encoder\.", "Qformer.bert.encoder."),
        (r"\.layer_norm\.", ".LayerNorm."),
    ];
    let torch = path
        .strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")))
        .unwrap_or_else(|| path.to_string());
    if torch.starts_with("language_model.") {
        return format!("t5_model.{}", hf_name(&torch).trim_start_matches("language_model."));
    }
    remap_name(&regexes(BACK), &torch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_map_to_module_paths_and_back() {
        let re = regexes(RELEASE);
        let cases = [
            ("Qformer.bert.encoder.layer.1.output_query.dense.weight", "qformer.encoder.layer.1.output_query.dense.weight"),
            ("Qformer.bert.encoder.layer.2.crossattention.self.key.bias", "qformer.encoder.layer.2.crossattention.attention.key.bias"),
            (
                "Qformer.bert.encoder.layer.0.attention.output.LayerNorm.weight",
                "qformer.encoder.layer.0.attention.output.layer_norm.weight",
            ),
            ("Qformer.bert.embeddings.LayerNorm.bias", "qformer.embeddings.layernorm.bias"),
            ("blocks.3.attn.q_bias", "vision_model.encoder.layers.3.self_attn.q_bias"),
            ("visual_encoder.blocks.0.attn.proj.weight", "vision_model.encoder.layers.0.self_attn.projection.weight"),
            ("t5_model.encoder.block.0.layer.0.SelfAttention.q.weight", "language_model.encoder.block.0.layer.0.self_attention.q.weight"),
            ("ln_vision.weight", "vision_model.post_layernorm.weight"),
            ("t5_proj.bias", "language_projection.bias"),
        ];
        for (file, module) in cases {
            assert_eq!(remap_name(&re, file), module, "{file}");
            if !file.starts_with("visual_encoder.") {
                assert_eq!(release_name(module), file, "{module}");
            }
        }
        assert_eq!(hf_name("qformer.encoder.layer.0.output.layer_norm.gamma"), "qformer.encoder.layer.0.output.LayerNorm.weight");
        assert_eq!(
            hf_name("language_model.encoder.block.1.layer.1.dense_relu_dense.wi_0.weight"),
            "language_model.encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
        );
        assert_eq!(
            hf_name("language_model.decoder.block.0.layer.2.layer_norm.weight"),
            "language_model.decoder.block.0.layer.2.layer_norm.weight"
        );
    }
}
