//! Checkpoints by tensor name, through burn-store.
//!
//! - [`Layout::HuggingFace`]: a `ViTForImageClassification` directory (`config.json`,
//!   `model.safetensors`, `preprocessor_config.json`). The module tree has the transformers
//!   names, so only the convolution branch is remapped: its tensors sit in the same file under
//!   `fpn.` with the authors' names (`fpn.coord_conv_branch.{0.conv,1}.*`, `fpn.conv_branch2.{0,1}.*`).
//! - [`Layout::Release`]: the authors' Face-ViT `.bin` (jeonsworld ViT-pytorch names, optionally
//!   under `multi_label_classifier.` as inside the DFF checkpoint), read by burn-store's PyTorch
//!   reader.
//!
//! Loading never falls back to random values: every missing, unexpected and mis-shaped tensor
//! is collected and reported in one [`FpnError::Weights`], with the file's own names.

use super::FpnError;
use super::config::{FpnConfig, Preprocess};
use super::face_vit::{FaceVit, Init};
use burn::module::Module;
use burn::store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use burn::tensor::Device;
use std::path::Path;

/// Which naming a weights file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    HuggingFace,
    Release,
}

/// (file name pattern, module path) for the convolution branch in our safetensors files.
const HF_CONV: &[(&str, &str)] = &[
    (r"^fpn\.coord_conv_branch\.0\.conv\.", "conv_branch.conv1."),
    (r"^fpn\.coord_conv_branch\.1\.", "conv_branch.bn1."),
    (r"^fpn\.conv_branch2\.0\.", "conv_branch.conv2."),
    (r"^fpn\.conv_branch2\.1\.", "conv_branch.bn2."),
];

/// (file name pattern, module path) for the authors' release `.bin`.
const RELEASE: &[(&str, &str)] = &[
    (r"^multi_label_classifier\.", ""),
    (r"^transformer\.embeddings\.patch_embeddings\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^transformer\.embeddings\.(position_embeddings|cls_token)$", "vit.embeddings.$1"),
    (r"^transformer\.encoder\.layer\.(\d+)\.attention_norm\.", "vit.encoder.layer.$1.layernorm_before."),
    (r"^transformer\.encoder\.layer\.(\d+)\.attn\.(query|key|value)\.", "vit.encoder.layer.$1.attention.attention.$2."),
    (r"^transformer\.encoder\.layer\.(\d+)\.attn\.out\.", "vit.encoder.layer.$1.attention.output.dense."),
    (r"^transformer\.encoder\.layer\.(\d+)\.ffn_norm\.", "vit.encoder.layer.$1.layernorm_after."),
    (r"^transformer\.encoder\.layer\.(\d+)\.ffn\.fc1\.", "vit.encoder.layer.$1.intermediate.dense."),
    (r"^transformer\.encoder\.layer\.(\d+)\.ffn\.fc2\.", "vit.encoder.layer.$1.output.dense."),
    (r"^transformer\.encoder\.encoder_norm\.", "vit.layernorm."),
    (r"^head\.", "classifier."),
    (r"^coord_conv_branch\.0\.conv\.", "conv_branch.conv1."),
    (r"^coord_conv_branch\.1\.", "conv_branch.bn1."),
    (r"^conv_branch2\.0\.", "conv_branch.conv2."),
    (r"^conv_branch2\.1\.", "conv_branch.bn2."),
];

/// The reverse of [`RELEASE`] for messages (module path -> the release's name).
const RELEASE_BACK: &[(&str, &str)] = &[
    (r"^vit\.embeddings\.patch_embeddings\.projection\.", "transformer.embeddings.patch_embeddings."),
    (r"^vit\.embeddings\.(position_embeddings|cls_token)$", "transformer.embeddings.$1"),
    (r"^vit\.encoder\.layer\.(\d+)\.layernorm_before\.", "transformer.encoder.layer.$1.attention_norm."),
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.", "transformer.encoder.layer.$1.attn.$2."),
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", "transformer.encoder.layer.$1.attn.out."),
    (r"^vit\.encoder\.layer\.(\d+)\.layernorm_after\.", "transformer.encoder.layer.$1.ffn_norm."),
    (r"^vit\.encoder\.layer\.(\d+)\.intermediate\.dense\.", "transformer.encoder.layer.$1.ffn.fc1."),
    (r"^vit\.encoder\.layer\.(\d+)\.output\.dense\.", "transformer.encoder.layer.$1.ffn.fc2."),
    (r"^vit\.layernorm\.", "transformer.encoder.encoder_norm."),
    (r"^classifier\.", "head."),
    (r"^conv_branch\.conv1\.", "coord_conv_branch.0.conv."),
    (r"^conv_branch\.bn1\.", "coord_conv_branch.1."),
    (r"^conv_branch\.conv2\.", "conv_branch2.0."),
    (r"^conv_branch\.bn2\.", "conv_branch2.1."),
];

const HF_CONV_BACK: &[(&str, &str)] = &[
    (r"^conv_branch\.conv1\.", "fpn.coord_conv_branch.0.conv."),
    (r"^conv_branch\.bn1\.", "fpn.coord_conv_branch.1."),
    (r"^conv_branch\.conv2\.", "fpn.conv_branch2.0."),
    (r"^conv_branch\.bn2\.", "fpn.conv_branch2.1."),
];

fn remapper(pairs: &[(&str, &str)]) -> KeyRemapper {
    // The patterns are constants of this file; a bad one is a bug caught by the tests.
    KeyRemapper::from_patterns(pairs.to_vec()).expect("the layout's name patterns are valid regular expressions")
}

/// A module path as the file names it (burn's `gamma`/`beta` are PyTorch's `weight`/`bias`).
fn file_name(layout: Layout, path: &str) -> String {
    let torch = path
        .strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")))
        .unwrap_or_else(|| path.to_string());
    let back = match layout {
        Layout::HuggingFace => HF_CONV_BACK,
        Layout::Release => RELEASE_BACK,
    };
    let mut name = torch;
    for (pat, rep) in back {
        if let Ok(re) = regex::Regex::new(pat)
            && re.is_match(&name)
        {
            name = re.replace(&name, *rep).into_owned();
        }
    }
    name
}

/// A shape as the file writes it: burn keeps linear weights as [in, out], PyTorch as [out, in]
/// (every rank-2 parameter of this model is a linear weight).
fn torch_dims(s: &burn::tensor::Shape) -> Vec<usize> {
    let mut d = s.as_slice().to_vec();
    if d.len() == 2 {
        d.reverse();
    }
    d
}

/// Turns an [`ApplyResult`] into `Ok` only when every tensor of the module was found, with its
/// shape, and nothing in the file was left over (`num_batches_tracked` aside: burn keeps no
/// such counter). `lenient` accepts missing and mis-shaped tensors whose module path matches it
/// (for `--init` from a checkpoint with another head or no convolution branch) and reports them.
fn check(layout: Layout, file: &Path, r: &ApplyResult, lenient: &dyn Fn(&str) -> bool) -> Result<Vec<String>, FpnError> {
    let mut problems = Vec::new();
    let mut kept_init = Vec::new();
    for (path, _) in &r.missing {
        if lenient(path) {
            kept_init.push(file_name(layout, path));
        } else {
            problems.push(format!("missing: `{}`", file_name(layout, path)));
        }
    }
    for name in &r.unused {
        if name.ends_with("num_batches_tracked") || lenient(name) {
            continue;
        }
        problems.push(format!("unexpected: `{}`", file_name(layout, name)));
    }
    for e in &r.errors {
        match e {
            ApplyError::ShapeMismatch { path, expected, found } if lenient(path) => {
                kept_init.push(format!(
                    "{} (file has shape {:?}, model {:?})",
                    file_name(layout, path),
                    found.as_slice(),
                    expected.as_slice()
                ));
            }
            ApplyError::ShapeMismatch { path, expected, found } => problems.push(format!(
                "mis-shaped: `{}` is {:?} in the file, the model needs {:?}",
                file_name(layout, path),
                torch_dims(found),
                torch_dims(expected)
            )),
            ApplyError::DTypeMismatch { path, expected, found } => {
                problems.push(format!("wrong dtype: `{}` is {found:?} in the file, the model needs {expected:?}", file_name(layout, path)))
            }
            other => problems.push(other.to_string()),
        }
    }
    if problems.is_empty() {
        return Ok(kept_init);
    }
    Err(FpnError::Weights(format!(
        "{}: {} tensor problem(s), nothing loaded:\n  {}\n(the file must hold exactly the {} tensors of this model configuration; \
         check config.json matches the weights, or that the file is the right layout)",
        file.display(),
        problems.len(),
        problems.join("\n  "),
        match layout {
            Layout::HuggingFace => "ViTForImageClassification",
            Layout::Release => "Face-ViT (jeonsworld ViT-pytorch)",
        }
    )))
}

/// Loads a weights file into a freshly built model; see [`check`] for what is refused.
pub fn load_into(model: &mut FaceVit, layout: Layout, file: &Path, lenient: &dyn Fn(&str) -> bool) -> Result<Vec<String>, FpnError> {
    if !file.is_file() {
        return Err(FpnError::Weights(format!("{}: no such weights file", file.display())));
    }
    let result = match layout {
        Layout::HuggingFace => {
            let mut store = SafetensorsStore::from_file(file)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper(HF_CONV))
                .allow_partial(true)
                .validate(false);
            model.load_from(&mut store).map_err(|e| FpnError::Weights(format!("{}: cannot read safetensors: {e}", file.display())))?
        }
        Layout::Release => {
            let mut store = release_store(file, None).allow_partial(true).validate(false);
            model
                .load_from(&mut store)
                .map_err(|e| FpnError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", file.display())))?
        }
    };
    check(layout, file, &result, lenient)
}

/// A PyTorch reader with the release's names; `key`: the dict inside the pickle that holds the
/// state dict (the DFF checkpoint's `model`).
fn release_store(file: &Path, key: Option<&str>) -> PytorchStore {
    let store = PytorchStore::from_file(file).remap(remapper(RELEASE)).map_indices_contiguous(false);
    match key {
        Some(k) => store.with_top_level_key(k),
        None => store,
    }
}

/// The Face-ViT inside a bigger release checkpoint (the DFF checkpoint's
/// `multi_label_classifier.*`, in its `key` dict): the shape read off the tensors unless
/// `config` is given, every FPN tensor required, the checkpoint's other tensors left alone.
pub fn load_nested_release(file: &Path, key: &str, config: Option<&FpnConfig>, device: &Device) -> Result<Loaded, FpnError> {
    let cfg = match config {
        Some(c) => c.clone(),
        None => infer_config_from(release_store(file, Some(key)), file)?,
    };
    cfg.validate()?;
    let pre = Preprocess::for_config(&cfg);
    let mut model = FaceVit::new(&cfg, &mut Init::for_loading(device));
    let mut store = release_store(file, Some(key)).allow_partial(true).validate(false);
    let result = model
        .load_from(&mut store)
        .map_err(|e| FpnError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", file.display())))?;
    let fpn_path = |p: &str| p.starts_with("vit.") || p.starts_with("classifier.") || p.starts_with("conv_branch.");
    // the checkpoint's other modules are not the FPN's business: only FPN names are checked
    let result = ApplyResult { unused: result.unused.into_iter().filter(|u| fpn_path(u)).collect(), ..result };
    check(Layout::Release, file, &result, &|_| false)?;
    Ok(Loaded { model, config: cfg, preprocess: pre })
}

/// Writes `model.safetensors` in the Hugging Face layout (metadata `format: pt`, which
/// transformers requires), atomically.
pub fn save_safetensors(model: &FaceVit, file: &Path) -> Result<(), FpnError> {
    // `valid()` folds pending BatchNorm running-stat updates into the stored value (burn keeps the
    // latest one per thread until a sync, and saving reads the stored value): without it a
    // checkpoint would hold the statistics one step old, and a resumed run would drift.
    let model = &model.valid();
    let tmp = file.with_extension("safetensors.tmp");
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper(HF_CONV_BACK))
        .metadata("format", "pt")
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| FpnError::Weights(format!("{}: cannot write safetensors: {e}", tmp.display())))?;
    std::fs::rename(&tmp, file).map_err(|e| FpnError::io(file, e))
}

/// Writes a whole checkpoint directory in the `ViTForImageClassification` layout.
pub fn save_dir(model: &FaceVit, cfg: &FpnConfig, pre: &Preprocess, dir: &Path) -> Result<(), FpnError> {
    std::fs::create_dir_all(dir).map_err(|e| FpnError::io(dir, e))?;
    save_safetensors(model, &dir.join("model.safetensors"))?;
    write_json(&dir.join("config.json"), &cfg.to_hf_json())?;
    write_json(&dir.join("preprocessor_config.json"), &pre.to_hf_json())
}

pub(crate) fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), FpnError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(v).map_err(|e| FpnError::Config(e.to_string()))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| FpnError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FpnError::io(path, e))
}

/// A loaded model with its settings.
pub struct Loaded {
    pub model: FaceVit,
    pub config: FpnConfig,
    pub preprocess: Preprocess,
}

/// Loads a checkpoint directory (HF layout) or a release `.bin`. A `.bin` takes its shape from a
/// `config.json` beside it, else `config` (the caller's), else the shape read off its tensors
/// (heads from the standard ViT sizes).
pub fn load(path: &Path, config: Option<&FpnConfig>, device: &Device) -> Result<Loaded, FpnError> {
    if path.is_dir() {
        let cfg = FpnConfig::read_dir(path, true)?;
        let pre = Preprocess::read_dir(path, &cfg)?;
        let mut model = FaceVit::new(&cfg, &mut Init::for_loading(device));
        load_into(&mut model, Layout::HuggingFace, &path.join("model.safetensors"), &|_| false)?;
        return Ok(Loaded { model, config: cfg, preprocess: pre });
    }
    let beside = path.parent().map(|p| p.join("config.json")).filter(|p| p.is_file());
    let cfg = match (beside, config) {
        (Some(_), _) => FpnConfig::read_dir(path.parent().unwrap_or(Path::new(".")), true)?,
        (None, Some(c)) => c.clone(),
        (None, None) => infer_release_config(path)?,
    };
    cfg.validate()?;
    let pre = Preprocess::for_config(&cfg);
    let mut model = FaceVit::new(&cfg, &mut Init::for_loading(device));
    load_into(&mut model, Layout::Release, path, &|_| false)?;
    Ok(Loaded { model, config: cfg, preprocess: pre })
}

/// The release's shape from its tensors: width from `cls_token`, blocks from the highest layer
/// index, patch from the patch projection, image size from the position embeddings.
fn infer_release_config(path: &Path) -> Result<FpnConfig, FpnError> {
    infer_config_from(release_store(path, None), path)
}

fn infer_config_from(mut store: PytorchStore, path: &Path) -> Result<FpnConfig, FpnError> {
    let keys = store.keys().map_err(|e| FpnError::Weights(format!("{}: cannot read the PyTorch checkpoint: {e}", path.display())))?;
    let shape = |store: &mut PytorchStore, k: &str| -> Result<Vec<usize>, FpnError> {
        store
            .get_tensor(k)
            .map_err(|e| FpnError::Weights(format!("{}: {e}", path.display())))?
            .map(|t| t.shape.as_slice().to_vec())
            .ok_or_else(|| {
                FpnError::Weights(format!(
                    "{}: no `{}` tensor; is this a Face-ViT checkpoint?",
                    path.display(),
                    file_name(Layout::Release, k)
                ))
            })
    };
    let cls = shape(&mut store, "vit.embeddings.cls_token")?;
    let pos = shape(&mut store, "vit.embeddings.position_embeddings")?;
    let patch = shape(&mut store, "vit.embeddings.patch_embeddings.projection.weight")?;
    let fc1 = shape(&mut store, "vit.encoder.layer.0.intermediate.dense.weight")?;
    let hidden = cls.last().copied().unwrap_or(0);
    let layers = keys
        .iter()
        .filter_map(|k| k.strip_prefix("vit.encoder.layer.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let heads = match hidden {
        768 => 12,
        1024 | 1280 => 16,
        other => {
            return Err(FpnError::Config(format!(
                "{}: width {other} is not a standard ViT size, so the number of heads is unknown: put a config.json beside the file",
                path.display()
            )));
        }
    };
    let patch_size = patch.last().copied().unwrap_or(0);
    let grid = ((pos.get(1).copied().unwrap_or(1) - 1) as f64).sqrt() as usize;
    Ok(FpnConfig {
        image_size: grid * patch_size,
        patch_size,
        num_channels: 3,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: fc1.first().copied().unwrap_or(0),
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.0,
        layer_norm_eps: 1e-6,
        num_labels: 21,
        conv_branch: keys.iter().any(|k| k.starts_with("conv_branch.")),
    })
}
