//! The FPN against the fixtures `model/tests/fixtures/fpn/make_fixtures.py` made with
//! transformers and torch: logits of the Hugging Face and release layouts, weight errors,
//! preprocessing, the losses and their gradients, saving and reading back.

use burn::tensor::{Device, Tensor, TensorData};
use mmtt_model::fpn::face_vit::{FaceVit, Init, Noise};
use mmtt_model::fpn::weights::{self, Layout};
use mmtt_model::fpn::{FpnConfig, FpnError, LossConfig, Predictor, Preprocess};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fpn")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// A tensor of a fixture safetensors file as (shape, f32 values).
fn st_tensor(file: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{file}:{key}");
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (t.shape().to_vec(), v)
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

fn max_diff(a: &[[f32; 21]], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (*p as f64 - q).abs())).fold(0.0, f64::max)
}

fn tiny_release_config(image: usize, conv: bool) -> FpnConfig {
    FpnConfig {
        image_size: image,
        patch_size: 8,
        num_channels: 3,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        layer_norm_eps: 1e-6,
        num_labels: 21,
        conv_branch: conv,
    }
}

fn logits_of(p: &Predictor, input: &str) -> Vec<[f32; 21]> {
    let (shape, px) = st_tensor("inputs.safetensors", input);
    p.logits(px, shape[0]).unwrap()
}

#[test]
fn hf_checkpoints_give_transformers_logits() {
    let e = expected();
    for case in ["hf_plain", "hf_conv", "hf_conv48"] {
        let c = &e["cases"][case];
        let p = Predictor::load(&fixtures().join(case)).unwrap();
        assert_eq!(p.config().conv_branch, c["conv_branch"].as_bool().unwrap(), "{case}");
        let key = c["input"].as_str().unwrap().split(':').nth(1).unwrap();
        let got = logits_of(&p, key);
        let d = max_diff(&got, &matrix(&c["logits"]));
        assert!(d < 1e-4, "{case}: max |logit - transformers| = {d}");
    }
}

#[test]
fn release_bins_give_the_same_logits_as_their_hf_twins() {
    let e = expected();
    for (bin, case, conv) in [("release.bin", "hf_conv", true), ("release_plain.bin", "hf_plain", false)] {
        let cfg = tiny_release_config(32, conv);
        let p = Predictor::load_on(&fixtures().join(bin), Some(&cfg), &Device::flex()).unwrap();
        let got = logits_of(&p, "pixel_values");
        let d = max_diff(&got, &matrix(&e["cases"][case]["logits"]));
        assert!(d < 1e-4, "{bin}: max |logit - reference| = {d}");
    }
}

#[test]
fn a_release_bin_without_the_conv_branch_is_refused_for_the_conv_model() {
    // The plain file lacks the branch's tensors: every one of them is named, nothing random.
    let cfg = tiny_release_config(32, true);
    let Err(err) = Predictor::load_on(&fixtures().join("release_plain.bin"), Some(&cfg), &Device::flex()) else {
        panic!("loading a plain checkpoint into the conv model must fail")
    };
    let msg = err.to_string();
    for name in ["coord_conv_branch.0.conv.weight", "coord_conv_branch.1.running_var", "conv_branch2.0.weight", "conv_branch2.1.bias"] {
        assert!(msg.contains(&format!("missing: `{name}`")), "{name} not named in: {msg}");
    }
}

#[test]
fn mis_shaped_and_renamed_tensors_are_named() {
    let cfg = tiny_release_config(32, false);
    let Err(err) = Predictor::load_on(&fixtures().join("release_bad_shape.bin"), Some(&cfg), &Device::flex()) else {
        panic!("a mis-shaped tensor must be refused")
    };
    let msg = err.to_string();
    assert!(matches!(err, FpnError::Weights(_)), "{msg}");
    assert!(
        msg.contains("mis-shaped: `transformer.encoder.layer.1.ffn.fc1.weight` is [32, 64] in the file, the model needs [64, 32]"),
        "{msg}"
    );
    assert!(msg.contains("1 tensor problem(s)"), "{msg}");

    let Err(err) = Predictor::load_on(&fixtures().join("release_renamed.bin"), Some(&cfg), &Device::flex()) else {
        panic!("a renamed tensor must be refused")
    };
    let msg = err.to_string();
    assert!(msg.contains("missing: `transformer.encoder.encoder_norm.weight`"), "{msg}");
    assert!(msg.contains("unexpected: `transformer.encoder.final_norm.weight`"), "{msg}");
    assert!(msg.contains("2 tensor problem(s)"), "{msg}");
}

#[test]
fn preprocessing_matches_the_image_processor() {
    let e = expected();
    let p = Predictor::load(&fixtures().join("hf_plain")).unwrap();
    for stem in ["img_32x32", "img_45x37", "img_20x27"] {
        let c = &e["preprocess"][stem];
        let img = Preprocess::open(&fixtures().join(c["png"].as_str().unwrap())).unwrap();
        let got = p.preprocess().pixels(&img, false);
        let (_, want) = st_tensor("preprocess.safetensors", stem);
        assert_eq!(got.len(), want.len());
        let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let tol = c["tolerance"].as_f64().unwrap() as f32;
        assert!(d <= tol, "{stem}: max |pixel - processor| = {d} > {tol}");
        // Pillow's resampling is reproduced bit for bit, so resized images match exactly too.
        assert!(d < 1e-6, "{stem}: max |pixel - processor| = {d}");
    }
}

#[test]
fn images_end_to_end() {
    let e = expected();
    for case in ["hf_plain", "hf_conv"] {
        let p = Predictor::load(&fixtures().join(case)).unwrap();
        let c = &e["image_cases"][case]["img_32x32"];
        let probs = p.predict_paths(&[fixtures().join("img_32x32.png")]).unwrap();
        let want: Vec<f64> = c["probs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let d = max_diff(&probs, &[want]);
        assert!(d < 1e-4, "{case}: max |p - transformers| = {d}");
    }
}

#[test]
fn a_saved_checkpoint_keeps_the_names_and_reads_back_identically() {
    let dir = std::env::temp_dir().join(format!("mmtt-fpn-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let l = weights::load(&fixtures().join("hf_conv"), None, &device).unwrap();
    weights::save_dir(&l.model, &l.config, &l.preprocess, &dir).unwrap();

    // Same tensor names as transformers wrote (plus the branch under `fpn.`), metadata `pt`.
    let names = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut n: Vec<String> = meta.tensors().keys().filter(|k| !k.ends_with("num_batches_tracked")).cloned().collect();
        n.sort();
        (n, meta.metadata().clone())
    };
    let (ours, meta) = names(&dir.join("model.safetensors"));
    let (theirs, _) = names(&fixtures().join("hf_conv/model.safetensors"));
    assert_eq!(ours, theirs);
    assert_eq!(meta.and_then(|m| m.get("format").cloned()).as_deref(), Some("pt"));

    let cfg = FpnConfig::read_dir(&dir, true).unwrap();
    assert_eq!(cfg, l.config);
    let a = Predictor::load(&fixtures().join("hf_conv")).unwrap();
    let b = Predictor::load(&dir).unwrap();
    assert_eq!(logits_of(&a, "pixel_values"), logits_of(&b, "pixel_values"), "reading back must be bit-identical");
    let _ = std::fs::remove_dir_all(&dir);

    // For the fixture script's `verify` (transformers reads an mmtt-written checkpoint back):
    // MMTT_FPN_WRITE_PLAIN=DIR writes the plain fixture model through mmtt's writer.
    if let Some(out) = std::env::var_os("MMTT_FPN_WRITE_PLAIN") {
        let l = weights::load(&fixtures().join("hf_plain"), None, &device).unwrap();
        weights::save_dir(&l.model, &l.config, &l.preprocess, Path::new(&out)).unwrap();
    }
}

#[test]
fn config_json_is_checked() {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("hf_plain/config.json")).unwrap()).unwrap();
    let cfg = FpnConfig::from_hf_json(&v, true).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_attention_heads, cfg.image_size, cfg.conv_branch), (32, 4, 32, false));
    v["hidden_act"] = "relu".into();
    let err = FpnConfig::from_hf_json(&v, true).unwrap_err().to_string();
    assert!(err.contains("hidden_act is `relu`"), "{err}");
    v["hidden_act"] = "gelu".into();
    v["id2label"]["3"] = "nose".into();
    let err = FpnConfig::from_hf_json(&v, true).unwrap_err().to_string();
    assert!(err.contains("id2label[3]") && err.contains("expected `mouth`"), "{err}");
}

fn losses() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("losses.json")).unwrap()).unwrap()
}

fn tensor2(m: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let (r, c) = (m.len(), m[0].len());
    let flat: Vec<f32> = m.iter().flatten().map(|x| *x as f32).collect();
    Tensor::<2>::from_data(TensorData::new(flat, [r, c]), device)
}

fn loss_value(cfg: &LossConfig, z: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
    let d = Device::flex();
    cfg.loss(tensor2(z, &d), tensor2(y, &d)).into_scalar::<f64>()
}

#[test]
fn losses_and_gradients_match_torch() {
    let l = losses();
    let z = matrix(&l["logits"]);
    let y = matrix(&l["targets"]);
    let cases = [
        ("paper_w0.2", LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true }),
        ("paper_w1.0", LossConfig::Paper { negative_weight: 1.0, bce: true, dice: true }),
        ("release", LossConfig::Release),
    ];
    let ad = Device::flex().autodiff();
    for (name, cfg) in cases {
        let want = l["losses"][name]["value"].as_f64().unwrap();
        let got = loss_value(&cfg, &z, &y);
        assert!((got - want).abs() < 1e-5, "{name}: {got} vs torch {want}");

        let zt = tensor2(&z, &ad).require_grad();
        let loss = cfg.loss(zt.clone(), tensor2(&y, &ad));
        let grads = loss.backward();
        let g: Vec<f32> = zt.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let want_g: Vec<f64> = matrix(&l["losses"][name]["grad"]).into_iter().flatten().collect();
        let d = g.iter().zip(&want_g).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(d < 1e-6, "{name}: max |grad - torch grad| = {d}");
    }
    // Parts switch off: BCE alone is the `bce` part.
    let bce_only = LossConfig::Paper { negative_weight: 0.2, bce: true, dice: false };
    let want = l["losses"]["paper_w0.2"]["parts"]["bce"]["value"].as_f64().unwrap();
    assert!((loss_value(&bce_only, &z, &y) - want).abs() < 1e-5);
}

#[test]
fn loss_gradients_agree_with_finite_differences() {
    let l = losses();
    let z = matrix(&l["logits"]);
    let y = matrix(&l["targets"]);
    let ad = Device::flex().autodiff();
    for cfg in [
        LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true },
        LossConfig::Paper { negative_weight: 0.2, bce: false, dice: true },
        LossConfig::Release,
    ] {
        let zt = tensor2(&z, &ad).require_grad();
        let grads = cfg.loss(zt.clone(), tensor2(&y, &ad)).backward();
        let g: Vec<f32> = zt.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        // Central differences in f32 with h = 1e-2 on a few entries, including saturated ones.
        for (r, c) in [(0, 0), (1, 5), (2, 20), (3, 7), (0, 13)] {
            let h = 1e-2;
            let mut zp = z.clone();
            zp[r][c] += h;
            let mut zm = z.clone();
            zm[r][c] -= h;
            let fd = (loss_value(&cfg, &zp, &y) - loss_value(&cfg, &zm, &y)) / (2.0 * h);
            let an = g[r * 21 + c] as f64;
            assert!((fd - an).abs() < 2e-4 + 2e-2 * an.abs(), "{cfg:?} [{r},{c}]: analytic {an} vs numeric {fd}");
        }
    }
}

#[test]
fn seeded_init_is_reproducible_and_seed_dependent() {
    let cfg = FpnConfig::preset("tiny").unwrap();
    let d = Device::flex();
    let x = Tensor::<4>::from_data(
        TensorData::new((0..2 * 3 * 64 * 64).map(|i| ((i % 97) as f32 / 48.0) - 1.0).collect::<Vec<_>>(), [2, 3, 64, 64]),
        &d,
    );
    let run = |seed| {
        use burn::module::Module;
        let m = FaceVit::new(&cfg, &mut Init::new(seed, &d)).valid();
        m.forward(&cfg, x.clone(), &mut Noise::off()).into_data().try_to_vec::<f32>().unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn inferred_release_config_needs_a_standard_width() {
    // The fixture is 32 wide: the head count cannot be guessed, and the error says what to do.
    let err = weights::load(&fixtures().join("release.bin"), None, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("put a config.json beside the file"), "{err}");
    let _ = Layout::Release;
}
