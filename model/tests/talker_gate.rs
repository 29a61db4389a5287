//! The release's region gate against PyTorch and transformers (`tests/fixtures/talker/gate/`, made
//! by `make_gate_fixtures.py`): the gate loaded by its release names gives the same gate values,
//! the same batch losses (the release's BCE-with-logits on probabilities and the fixed BCE) and
//! the same gradients for the image embeddings (so `ln_vision` gets the release's gradient) and
//! the weights; a Hugging Face `BertModel` folder loads into `bert_model`; a file of the wrong
//! layout is refused with every tensor named; a saved gate reloads unchanged.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use mmtt_model::fpn::face_vit::Init;
use mmtt_model::talker::gate::{BertConfig, Gate, GateConfig, GateFile, load_gate, save_gate};
use mmtt_model::talker::loss::gate_mean;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/talker/gate")
}

fn case() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("case.json")).unwrap()).unwrap()
}

fn config(c: &Value) -> GateConfig {
    GateConfig {
        bert: serde_json::from_value::<BertConfig>(c["bert"].clone()).unwrap(),
        vision_width: c["vision_width"].as_u64().unwrap() as usize,
        heads: c["heads"].as_u64().unwrap() as usize,
    }
}

fn float(key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(dir().join("case.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{key}");
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
}

fn words(c: &Value, i: usize) -> Vec<Vec<u32>> {
    c["words"][i].as_array().unwrap().iter().map(|w| w.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

fn labels(c: &Value, i: usize) -> Vec<f32> {
    c["labels"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Every parameter on the autodiff backend, tracked.
struct Track;
impl ModuleMapper for Track {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.autodiff().require_grad())
    }
}

fn loaded(device: &Device) -> (Gate, GateConfig, Value) {
    let c = case();
    let cfg = config(&c);
    let gate = load_gate(Gate::new(&cfg, &mut Init::new(3, device)), &dir().join("gate.safetensors"), GateFile::Whole).unwrap();
    (gate, cfg, c)
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("{what}: max |diff| {worst:.2e} (scale {scale:.2e})");
    assert!(worst <= tol * scale, "{what}: max |diff| {worst:e} over {tol:e} x {scale:e}");
}

/// [out, in] (PyTorch's Linear) as burn's [in, out].
fn transposed(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (r, c) = (shape[0], shape[1]);
    (0..c).flat_map(|j| (0..r).map(move |i| v[i * c + j])).collect()
}

fn values_of(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn gate_values_losses_and_gradients_equal_the_release() {
    let ad = Device::flex().autodiff();
    let (gate, cfg, c) = loaded(&Device::flex());
    let gate = gate.map(&mut Track);
    let pad = c["pad_id"].as_u64().unwrap() as u32;
    let (shape, image) = float("image");
    let [b, t, d]: [usize; 3] = shape.clone().try_into().unwrap();
    for (mode, double) in [("double", true), ("fixed", false)] {
        let x = Tensor::<3>::from_data(TensorData::new(image.clone(), [b, t, d]), &ad).require_grad();
        let mut total: Option<Tensor<1>> = None;
        for i in 0..b {
            let w = words(&c, i);
            if w.is_empty() {
                assert!(c["values"][i].is_null());
                continue;
            }
            let p = gate.values(&cfg, x.clone().slice([i..i + 1, 0..t, 0..d]).reshape([t, d]), &w, pad);
            let want: Vec<f32> = c["values"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            close(&format!("sample {i} gate values"), &values_of(p.clone()), &want, 1e-5);
            let y = Tensor::<1>::from_data(TensorData::new(labels(&c, i), [w.len()]), &ad);
            let one = gate_mean(p, y, double);
            total = Some(match total {
                Some(s) => s + one,
                None => one,
            });
        }
        let loss = total.unwrap().div_scalar(b as f64);
        let grads = loss.backward();
        let got = loss.into_scalar::<f64>();
        let want = c[format!("loss_{mode}")].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "{mode} loss {got} vs torch {want}");
        close(
            &format!("{mode}: d loss / d image"),
            &x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
            &float(&format!("grad_{mode}.image")).1,
            1e-4,
        );
        let g2 = |p: &Param<Tensor<2>>| p.val().grad(&grads).expect("a gradient").into_data().try_to_vec::<f32>().unwrap();
        let want = |n: &str| float(&format!("grad_{mode}.{n}"));
        let (s, v) = want("fc_layer.weight");
        close(&format!("{mode}: fc_layer.weight"), &g2(&gate.fc_layer.weight), &transposed(&s, &v), 1e-4);
        let (s, v) = want("trans_layer.weight");
        close(&format!("{mode}: trans_layer.weight"), &g2(&gate.trans_layer.weight), &transposed(&s, &v), 1e-4);
        let (_, v) = want("gate_cross_attention_layer.in_proj_weight");
        close(&format!("{mode}: in_proj_weight"), &g2(&gate.gate_cross_attention_layer.in_proj_weight), &v, 1e-4);
        let (_, v) = want("bert_model.embeddings.word_embeddings.weight");
        close(&format!("{mode}: word_embeddings"), &g2(&gate.bert_model.embeddings.word_embeddings.weight), &v, 1e-4);
        let (s, v) = want("bert_model.encoder.layer.0.attention.self.query.weight");
        close(
            &format!("{mode}: layer 0 query"),
            &g2(&gate.bert_model.encoder.layer[0].attention.attention.query.weight),
            &transposed(&s, &v),
            1e-4,
        );
    }
}

fn tensor_values<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    p.val().into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn a_hugging_face_bert_folder_loads_into_the_gate_and_a_saved_gate_reloads() {
    let device = Device::flex();
    let (whole, cfg, c) = loaded(&device);
    // the HF folder fills bert_model; the heads keep their seeded values
    let seeded = Gate::new(&cfg, &mut Init::new(3, &device));
    let from_bert = load_gate(seeded.clone(), &dir().join("bert/model.safetensors"), GateFile::Bert).unwrap();
    assert_eq!(
        tensor_values(&from_bert.bert_model.encoder.layer[1].output.dense.weight),
        tensor_values(&whole.bert_model.encoder.layer[1].output.dense.weight)
    );
    assert_eq!(tensor_values(&from_bert.bert_model.pooler.dense.weight), tensor_values(&whole.bert_model.pooler.dense.weight));
    assert_eq!(tensor_values(&from_bert.fc_layer.weight), tensor_values(&seeded.fc_layer.weight));
    assert_ne!(tensor_values(&from_bert.fc_layer.weight), tensor_values(&whole.fc_layer.weight));

    // save and reload: the same gate values
    let tmp = std::env::temp_dir().join(format!("mmtt-gate-{}.safetensors", std::process::id()));
    save_gate(&whole, &tmp).unwrap();
    let names = {
        let bytes = std::fs::read(&tmp).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    assert!(names.contains(&"bert_model.encoder.layer.0.attention.self.query.weight".to_string()), "release names: {names:?}");
    assert!(names.contains(&"bert_model.embeddings.LayerNorm.weight".to_string()), "{names:?}");
    let again = load_gate(Gate::new(&cfg, &mut Init::new(9, &device)), &tmp, GateFile::Whole).unwrap();
    let _ = std::fs::remove_file(&tmp);
    let (shape, image) = float("image");
    let [_, t, d]: [usize; 3] = shape.try_into().unwrap();
    let x = Tensor::<2>::from_data(TensorData::new(image[..t * d].to_vec(), [t, d]), &device);
    let pad = c["pad_id"].as_u64().unwrap() as u32;
    assert_eq!(values_of(again.values(&cfg, x.clone(), &words(&c, 0), pad)), values_of(whole.values(&cfg, x, &words(&c, 0), pad)));
}

#[test]
fn a_file_of_the_wrong_layout_or_shape_is_refused_with_the_tensors_named() {
    let device = Device::flex();
    let (_, cfg, _) = loaded(&device);
    // a whole-gate file read as a BERT: every name lands under bert_model.bert_model.*
    let err =
        load_gate(Gate::new(&cfg, &mut Init::new(3, &device)), &dir().join("gate.safetensors"), GateFile::Bert).unwrap_err().to_string();
    assert!(err.contains("unexpected") && err.contains("missing: `bert_model.embeddings.word_embeddings.weight`"), "{err}");
    // a BERT folder read as a whole gate: the heads are missing
    let err = load_gate(Gate::new(&cfg, &mut Init::new(3, &device)), &dir().join("bert/model.safetensors"), GateFile::Whole)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing: `fc_layer.weight`") && err.contains("missing: `trans_layer.weight`"), "{err}");
    // a gate of another width: every mis-shaped tensor is reported
    let mut wide = cfg.clone();
    wide.vision_width += 8;
    let err =
        load_gate(Gate::new(&wide, &mut Init::new(3, &device)), &dir().join("gate.safetensors"), GateFile::Whole).unwrap_err().to_string();
    assert!(err.contains("trans_layer.weight"), "{err}");
}

/// Every tensor of a gate, by the release's name, as f32 (for comparing two loads).
fn gate_tensors(gate: &Gate) -> Vec<(String, Vec<f32>)> {
    let tmp = std::env::temp_dir().join(format!("mmtt-gate-all-{}-{:?}.safetensors", std::process::id(), std::thread::current().id()));
    save_gate(gate, &tmp).unwrap();
    let bytes = std::fs::read(&tmp).unwrap();
    let _ = std::fs::remove_file(&tmp);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_gate_loads_by_name_from_a_release_checkpoint_beside_the_rest_of_the_model() {
    use mmtt_model::talker::gate::load_gate_pytorch;
    let device = Device::flex();
    let (whole, cfg, c) = loaded(&device);
    let pth = dir().join("release_model.pth");
    // the `model` dict of a DFF-style checkpoint: the gate in float16 beside other tensors
    let from_release = load_gate_pytorch(Gate::new(&cfg, &mut Init::new(5, &device)), &pth, Some("model")).unwrap();
    // every tensor equals the float32 file's (the fixture's weights are float16-exact) ...
    let (a, b) = (gate_tensors(&from_release), gate_tensors(&whole));
    assert_eq!(a.iter().map(|t| &t.0).collect::<Vec<_>>(), b.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{n}");
    }
    // ... and so do torch's gate values
    let (shape, image) = float("image");
    let [_, t, d]: [usize; 3] = shape.try_into().unwrap();
    let x = Tensor::<2>::from_data(TensorData::new(image[..t * d].to_vec(), [t, d]), &device);
    let pad = c["pad_id"].as_u64().unwrap() as u32;
    let want: Vec<f32> = c["values"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    close("release checkpoint gate values", &values_of(from_release.values(&cfg, x, &words(&c, 0), pad)), &want, 1e-5);

    // a gate of another shape: every mis-shaped tensor named, by the file's names
    let mut wide = cfg.clone();
    wide.vision_width += 8;
    let err = load_gate_pytorch(Gate::new(&wide, &mut Init::new(5, &device)), &pth, Some("model")).unwrap_err().to_string();
    assert!(err.contains("trans_layer.weight") && err.contains("release_model.pth"), "{err}");
    // a BERT deeper than the checkpoint's: the missing tensors are listed, nothing is loaded at random
    let mut deeper = cfg.clone();
    deeper.bert.num_hidden_layers += 1;
    let err = load_gate_pytorch(Gate::new(&deeper, &mut Init::new(5, &device)), &pth, Some("model")).unwrap_err().to_string();
    assert!(err.contains("missing: `bert_model.encoder.layer.2.attention.self.query.weight`"), "{err}");
    assert!(err.contains("missing: `bert_model.encoder.layer.2.output.LayerNorm.weight`"), "{err}");
    assert!(
        !err.contains("t5_proj") && !err.contains("mlm_head") && !err.contains("query_tokens"),
        "the rest of the model is not the gate's: {err}"
    );
}
