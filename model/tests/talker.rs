//! The talker (ForgeryTalker stage 2) against the fixtures that
//! `model/tests/fixtures/talker/make_fixtures.py` made with transformers and torch: tokenization,
//! pixels, every stage's outputs and the first-step logits within 1e-4, greedy and beam-search
//! generations token for token, the mask branch against the script's PyTorch reference, and the
//! release layout loading to the same numbers, with its weight errors.

use burn::tensor::{Tensor, TensorData};
use mmtt_model::talker::generate::{self, GenerationConfig};
use mmtt_model::talker::{ExplainOptions, Explainer, Prompting, TalkerError};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/talker")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// A tensor of `expected.safetensors` as (shape, f32 values).
fn st(key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixtures().join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|e| panic!("expected.safetensors has no `{key}`: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{key}");
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (t.shape().to_vec(), v)
}

fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().try_to_vec::<f32>().unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn close(what: &str, got: (Vec<usize>, Vec<f32>), key: &str, tol: f32) {
    let (shape, want) = st(key);
    assert_eq!(got.0, shape, "{what}: shape");
    let d = max_diff(&got.1, &want);
    eprintln!("{what}: max |mmtt - transformers| = {d:e}");
    assert!(d < tol, "{what}: max |mmtt - transformers| = {d} (tolerance {tol})");
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

/// The Q-Former ids of a case without the batch's padding.
fn qformer_ids(c: &Value) -> Vec<Vec<u32>> {
    let mask = ids(&c["qformer_attention_mask"]);
    ids(&c["qformer_input_ids"])
        .into_iter()
        .zip(mask)
        .map(|(r, m)| r.into_iter().zip(m).filter(|(_, m)| *m == 1).map(|(i, _)| i).collect())
        .collect()
}

fn images() -> Vec<image::RgbImage> {
    ["img_a.png", "img_b.png"].iter().map(|f| image::open(fixtures().join(f)).unwrap().to_rgb8()).collect()
}

/// A returned sequence as mmtt gives it: up to and including the first EOS after the start.
fn natural(seq: &[u32], eos: u32) -> Vec<u32> {
    match seq.iter().skip(1).position(|t| *t == eos) {
        Some(p) => seq[..p + 2].to_vec(),
        None => {
            let mut s = seq.to_vec();
            while s.len() > 1 && s.last() == Some(&0) {
                s.pop();
            }
            s
        }
    }
}

fn gen_config(g: &Value) -> GenerationConfig {
    GenerationConfig {
        num_beams: g["num_beams"].as_u64().unwrap() as usize,
        max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize,
        min_length: g["min_length"].as_u64().unwrap_or(0) as usize,
        repetition_penalty: g["repetition_penalty"].as_f64().unwrap_or(1.0) as f32,
        length_penalty: g["length_penalty"].as_f64().unwrap_or(1.0) as f32,
    }
}

/// Every stage of `case` against transformers, from the case's own token ids.
fn stages_match(ex: &Explainer, case: &str) {
    let e = expected();
    let c = &e["cases"][case];
    let cfg = ex.config();
    let device = ex.device();
    let s = cfg.vision.image_size;
    let px = ex.pixel_values(&images());
    close(&format!("{case} pixels"), (vec![2, 3, s, s], px.clone()), &format!("{case}.pixel_values"), 1e-5);
    let blip = &ex.talker().blip;
    let image = blip.image_embeds(cfg, Tensor::<4>::from_data(TensorData::new(px, [2, 3, s, s]), device));
    close(&format!("{case} vision"), values(image.clone()), &format!("{case}.vision"), 1e-4);
    let qf = qformer_ids(c);
    let q = blip.query_outputs(cfg, image.clone(), &qf);
    close(&format!("{case} Q-Former"), values(q.clone()), &format!("{case}.qformer"), 1e-4);
    let t5 = ids(&c["t5_input_ids"]);
    let (input, mask) = blip.encoder_input(cfg, q, &t5);
    let (_, want_mask) = st(&format!("{case}.t5_encoder_mask"));
    let got_mask: Vec<f32> = mask.iter().flatten().map(|m| *m as f32).collect();
    assert_eq!(got_mask, want_mask, "{case}: T5 encoder mask");
    let encoded = blip.encode(cfg, input, &mask);
    close(&format!("{case} T5 encoder"), values(encoded.clone()), &format!("{case}.t5_encoder"), 1e-4);
    let logits = generate::first_logits(&blip.language_model, &cfg.text, encoded.clone(), &mask);
    close(&format!("{case} first-step logits"), values(logits), &format!("{case}.first_logits"), 1e-4);
    for g in c["generations"].as_array().unwrap() {
        let name = g["name"].as_str().unwrap();
        let got = generate::generate(&blip.language_model, &cfg.text, encoded.clone(), &mask, &gen_config(g));
        let want: Vec<Vec<u32>> = ids(&g["sequences"]).iter().map(|s| natural(s, cfg.text.eos_token_id)).collect();
        assert_eq!(got, want, "{case} {name}: generated ids");
    }
    if let Some(labels) = c.get("mask_label_ids") {
        let probs = ex.talker().mask_probs(image, &ids(labels)).expect("a mask branch");
        close(&format!("{case} mask"), values(probs), &format!("{case}.mask_probs"), 1e-4);
    }
}

fn load(dir: &str) -> Explainer {
    Explainer::load(&fixtures().join(dir), None, &burn::tensor::Device::flex()).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

#[test]
fn tokenizers_match_transformers() {
    let e = expected();
    let ex = load("hf");
    let cfg = ex.config();
    for case in ["hf", "talker"] {
        let c = &e["cases"][case];
        for (i, instr) in c["instructions"].as_array().unwrap().iter().enumerate() {
            let text = instr.as_str().unwrap();
            assert_eq!(ex.qformer_tokenizer().encode(text, cfg.max_txt_len).unwrap(), qformer_ids(c)[i], "{case} BERT ids of {text:?}");
            assert_eq!(ex.t5_tokenizer().encode(text, cfg.max_txt_len).unwrap(), ids(&c["t5_input_ids"])[i], "{case} T5 ids of {text:?}");
        }
    }
    for t in e["tokenization"]["strings"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let t5: Vec<u32> = t["t5_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let bert: Vec<u32> = t["bert_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ex.t5_tokenizer().encode(text, 128).unwrap(), t5, "T5 ids of {text:?}");
        assert_eq!(ex.qformer_tokenizer().encode(text, 128).unwrap(), bert, "BERT ids of {text:?}");
        if let Some(d) = t["t5_decoded"].as_str() {
            assert_eq!(ex.t5_tokenizer().decode(&t5).unwrap(), d, "T5 decoding of {text:?}");
        }
    }
}

#[test]
fn hf_instructblip_matches_transformers_stage_by_stage_and_token_for_token() {
    let ex = load("hf");
    assert!(!ex.has_mask_branch() && !ex.has_fpn());
    stages_match(&ex, "hf");
    // the whole path through `explain`, with the instructions given literally
    let e = expected();
    let c = &e["cases"]["hf"];
    let instructions: Vec<String> = c["instructions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    for g in c["generations"].as_array().unwrap() {
        for (i, img) in images().into_iter().enumerate() {
            let opts = ExplainOptions { prompting: Prompting::Instruction(instructions[i].clone()), generation: gen_config(g) };
            let out = ex.explain(&[img], &opts).unwrap();
            let want = natural(&ids(&g["sequences"])[i], 1);
            assert_eq!(out[0].token_ids, want, "{} image {i}", g["name"]);
            assert_eq!(out[0].text, g["texts"][i].as_str().unwrap(), "{} image {i}", g["name"]);
            assert!(out[0].mask.is_none());
        }
    }
}

#[test]
fn forgerytalker_dir_matches_the_reference_with_fpn_regions_and_mask() {
    let ex = load("talker");
    assert!(ex.has_mask_branch() && ex.has_fpn());
    stages_match(&ex, "talker");
    let e = expected();
    let c = &e["cases"]["talker"];
    let beam = c["generations"].as_array().unwrap().iter().find(|g| g["num_beams"].as_u64() == Some(5)).unwrap();
    let out = ex.explain(&images(), &ExplainOptions { prompting: Prompting::Fpn, generation: gen_config(beam) }).unwrap();
    let (_, want_mask) = st("talker.mask_probs");
    for (i, o) in out.iter().enumerate() {
        let regions: Vec<String> = c["regions"][i].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(o.regions, regions, "image {i}: FPN regions");
        assert_eq!(o.instruction, c["instructions"][i].as_str().unwrap(), "image {i}: instruction");
        assert_eq!(o.token_ids, natural(&ids(&beam["sequences"])[i], 1), "image {i}: beam ids");
        assert_eq!(o.text, beam["texts"][i].as_str().unwrap(), "image {i}: text");
        let m = o.mask.as_ref().expect("a mask");
        let n = m.size * m.size;
        assert!(max_diff(&m.probs, &want_mask[i * n..(i + 1) * n]) < 1e-4, "image {i}: mask");
    }
}

#[test]
fn release_folder_loads_to_the_same_model() {
    let ex = load("release");
    assert!(ex.has_mask_branch() && ex.has_fpn(), "{}", ex.describe());
    assert!(ex.describe().contains("release"), "{}", ex.describe());
    stages_match(&ex, "talker");
}

#[test]
fn a_missing_release_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // the release folder with the checkpoint that lacks one Q-Former tensor
    for entry in std::fs::read_dir(fixtures().join("release")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name != "checkpoint_best.pth" {
            std::os::unix::fs::symlink(&p, dir.path().join(name)).unwrap();
        }
    }
    std::os::unix::fs::symlink(fixtures().join("release_checkpoint_missing.pth"), dir.path().join("checkpoint_best.pth")).unwrap();
    let err = Explainer::load(dir.path(), None, &burn::tensor::Device::flex()).err().expect("a missing tensor must be refused");
    let msg = err.to_string();
    assert!(matches!(err, TalkerError::Weights(_)), "{msg}");
    assert!(msg.contains("missing: `Qformer.bert.encoder.layer.1.output_query.dense.weight`"), "{msg}");
}

#[test]
fn hf_weights_of_another_shape_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("hf");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name != "config.json" {
            std::os::unix::fs::symlink(&p, dir.path().join(&name)).unwrap();
        }
    }
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let inter = cfg["qformer_config"]["intermediate_size"].as_u64().unwrap_or(3072);
    cfg["qformer_config"]["intermediate_size"] = Value::from(inter + 8);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let msg = Explainer::load(dir.path(), None, &burn::tensor::Device::flex()).err().expect("refused").to_string();
    assert!(msg.contains("mis-shaped: `qformer.encoder.layer.0.intermediate.dense.weight`"), "{msg}");
    assert!(msg.contains("mis-shaped: `qformer.encoder.layer.3.output_query.dense.weight`"), "{msg}");
}
