//! ForgeryTalker stage-2 losses and the caption normaliser (`mmtt_model::talker::loss`) against
//! PyTorch: `model/tests/fixtures/talker/make_loss_fixtures.py` (torch 2.15) wrote the inputs
//! (float32, `losses.safetensors`), the expected values and gradients (float64, autograd on those
//! float32 inputs) and LAVIS' `pre_caption` outputs (`losses.json`). Losses and gradients are taken
//! on burn's autodiff flex device.
//!
//! Tolerance `TOL` = 1e-5. Gradients are compared absolutely: every element is O(1) (a BCE
//! gradient is at most `pos_weight` in magnitude, a cross-entropy one at most 1). Values are
//! compared absolutely up to 1 and relatively above: they are sums of up to 192 float32 terms of up
//! to 60 each (up to ~2e3 here), and float32 carries ~6e-8 relative error per operation, so an
//! absolute 1e-5 on a sum of 2e3 would ask for 5e-9 relative precision, beyond float32 (PyTorch's
//! own float32 run is up to 8e-8 relative from the float64 reference: `checks.torch_f32_vs_f64`).
//! Each test gathers every case's failures before asserting, so a report names them all.

use burn::tensor::{Device, Tensor, TensorData};
use mmtt_model::talker::loss::{IGNORE, MaskLoss, bce_with_logits_sum, gate_mean, lm_sum, mask_sum, normalize_caption};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/talker")
}

fn json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("losses.json")).unwrap()).unwrap()
}

/// The fixture tensors, read once per test.
struct Tensors(Vec<u8>);

impl Tensors {
    fn load() -> Self {
        Tensors(std::fs::read(dir().join("losses.safetensors")).unwrap())
    }

    /// A float tensor (stored as f32 or f64) as (shape, f64 values).
    fn float(&self, key: &str) -> (Vec<usize>, Vec<f64>) {
        let st = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let v = match t.dtype() {
            safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            safetensors::Dtype::F64 => t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            other => panic!("{key}: dtype {other:?}"),
        };
        (t.shape().to_vec(), v)
    }

    /// An int64 tensor [rows, cols] as rows.
    fn rows_i64(&self, key: &str) -> Vec<Vec<i64>> {
        let st = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{key}");
        let v: Vec<i64> = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        v.chunks(t.shape()[1]).map(<[i64]>::to_vec).collect()
    }
}

/// A float32 tensor of the given shape (the fixture inputs are float32 values, so exact).
fn tensor<const D: usize>(shape: &[usize], values: &[f64], device: &Device) -> Tensor<D> {
    let dims: [usize; D] = shape.try_into().unwrap();
    Tensor::<D>::from_data(TensorData::new(values.iter().map(|x| *x as f32).collect::<Vec<f32>>(), dims), device)
}

fn grad_of<const D: usize>(x: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f32> {
    x.grad(grads).expect("a gradient").into_data().try_to_vec::<f32>().unwrap()
}

/// Collects mismatches (with the numbers) so that one failing case does not hide the others.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn value(&mut self, what: &str, got: f64, want: f64) {
        let diff = (got - want).abs();
        let tol = TOL * want.abs().max(1.0);
        eprintln!("{what}: value {got} vs torch {want} (|diff| {diff:.2e})");
        if off(diff, tol) {
            self.0.push(format!("{what}: value {got} vs torch {want}: |diff| {diff:.3e} > {tol:.1e}"));
        }
    }

    fn grad(&mut self, what: &str, got: &[f32], want: &[f64], shape: &[usize]) {
        assert_eq!(got.len(), want.len(), "{what}: gradient length");
        let bad: Vec<usize> = (0..got.len()).filter(|&i| off((got[i] as f64 - want[i]).abs(), TOL)).collect();
        let max = got.iter().zip(want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        eprintln!("{what}: max |grad - torch grad| {max:.2e}");
        if !bad.is_empty() {
            let show: Vec<String> =
                bad.iter().take(12).map(|&i| format!("{:?}: {} vs torch {}", unravel(i, shape), got[i], want[i])).collect();
            self.0.push(format!(
                "{what}: {} of {} gradient elements off by > {TOL:e} (max {max:.3e}): {}",
                bad.len(),
                got.len(),
                show.join(", ")
            ));
        }
    }

    fn finish(self) {
        assert!(self.0.is_empty(), "{} mismatch(es) against PyTorch:\n{}", self.0.len(), self.0.join("\n"));
    }
}

/// Beyond the tolerance, or NaN.
fn off(diff: f64, tol: f64) -> bool {
    diff.is_nan() || diff > tol
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (d, n) in shape.iter().enumerate().rev() {
        idx[d] = i % n;
        i /= n;
    }
    idx
}

/// `mask_sum` (fixed and double sigmoid) on one case: value, the release's mean, the gradient.
fn check_mask_case(name: &str, t: &Tensors, j: &Value, r: &mut Report) {
    let ad = Device::flex().autodiff();
    let rec = &j["mask"][name];
    let (shape, z) = t.float(&format!("mask.{name}.logits"));
    let (_, y) = t.float(&format!("mask.{name}.gt"));
    let n = z.len() as f64;
    for (mode, double_sigmoid) in [("fixed", false), ("double", true)] {
        let cfg = MaskLoss { pos_weight: rec["pos_weight"].as_f64().unwrap(), double_sigmoid };
        let zt = tensor::<3>(&shape, &z, &ad).require_grad();
        let loss = mask_sum(zt.clone(), tensor::<3>(&shape, &y, &ad), &cfg);
        let grads = loss.backward();
        let got = loss.into_scalar::<f64>();
        let what = format!("mask.{name}.{mode}");
        r.value(&what, got, rec[mode].as_f64().unwrap());
        r.value(&format!("{what} (mean = sum / {n})"), got / n, rec[format!("mean_{mode}")].as_f64().unwrap());
        let (_, want_g) = t.float(&format!("mask.{name}.grad_{mode}"));
        r.grad(&what, &grad_of(&zt, &grads), &want_g, &shape);
    }
}

#[test]
fn mask_loss_matches_torch_bce_with_logits() {
    let (t, j) = (Tensors::load(), json());
    let mut r = Report::default();
    for name in ["mixed", "large"] {
        check_mask_case(name, &t, &j, &mut r);
    }
    // `bce_with_logits_sum` itself, on a flattened (1-D) copy of a case.
    let ad = Device::flex().autodiff();
    let (_, z) = t.float("mask.mixed.logits");
    let (_, y) = t.float("mask.mixed.gt");
    let zt = tensor::<1>(&[z.len()], &z, &ad).require_grad();
    let loss = bce_with_logits_sum(zt.clone(), tensor::<1>(&[y.len()], &y, &ad), 2.0);
    let grads = loss.backward();
    r.value("bce_with_logits_sum 1-D mask.mixed", loss.into_scalar::<f64>(), j["mask"]["mixed"]["fixed"].as_f64().unwrap());
    r.grad("bce_with_logits_sum 1-D mask.mixed", &grad_of(&zt, &grads), &t.float("mask.mixed.grad_fixed").1, &[z.len()]);
    r.finish();
}

/// Logits exactly 0.0: where `softplus(-x)`'s two pieces (`log1p(exp(-|x|))` and `max(-x, 0)`)
/// meet. PyTorch's gradient there is `(1 - y) - w * sigmoid(0)`.
#[test]
fn mask_loss_at_exactly_zero_logits_matches_torch() {
    let (t, j) = (Tensors::load(), json());
    assert!(j["mask"]["zero"]["zero_logits"].as_u64().unwrap() >= 2);
    let mut r = Report::default();
    check_mask_case("zero", &t, &j, &mut r);
    r.finish();
}

#[test]
fn lm_sum_matches_torch_cross_entropy() {
    let (t, j) = (Tensors::load(), json());
    let ad = Device::flex().autodiff();
    let mut r = Report::default();
    for name in ["mixed", "large", "all_ignored"] {
        let rec = &j["lm"][name];
        let (shape, z) = t.float(&format!("lm.{name}.logits"));
        let targets = t.rows_i64(&format!("lm.{name}.targets"));
        let zt = tensor::<3>(&shape, &z, &ad).require_grad();
        let (loss, count) = lm_sum(zt.clone(), &targets);
        let grads = loss.backward();
        let got = loss.into_scalar::<f64>();
        let what = format!("lm.{name}");
        let want_count = rec["count"].as_u64().unwrap() as usize;
        if count != want_count {
            r.0.push(format!("{what}: count {count} vs torch {want_count}"));
        }
        r.value(&what, got, rec["sum"].as_f64().unwrap());
        // transformers' loss is the 'mean' reduction: sum / count (NaN in torch, null here, when nothing counts)
        match rec["mean"].as_f64() {
            Some(mean) => r.value(&format!("{what} (mean = sum / count)"), got / count as f64, mean),
            None => assert_eq!((count, got), (0, 0.0), "{what}: nothing counted, so the sum is 0"),
        }
        let (_, want_g) = t.float(&format!("lm.{name}.grad"));
        r.grad(&what, &grad_of(&zt, &grads), &want_g, &shape);

        // Rows may be shorter than T: missing positions are ignored, as -100 is.
        let ragged: Vec<Vec<i64>> = targets
            .iter()
            .map(|row| {
                let keep = row.iter().rposition(|v| *v != IGNORE).map_or(0, |p| p + 1);
                row[..keep].to_vec()
            })
            .collect();
        assert!(name != "mixed" || ragged.iter().any(|row| row.len() < shape[1]), "the mixed case has padding");
        let (loss, count) = lm_sum(tensor::<3>(&shape, &z, &ad), &ragged);
        if count != want_count {
            r.0.push(format!("{what} (ragged rows): count {count} vs torch {want_count}"));
        }
        r.value(&format!("{what} (ragged rows)"), loss.into_scalar::<f64>(), rec["sum"].as_f64().unwrap());
    }
    r.finish();
}

#[test]
fn gate_loss_matches_the_release() {
    let (t, j) = (Tensors::load(), json());
    let ad = Device::flex().autodiff();
    let rec = &j["gate"]["mixed"];
    let lengths: Vec<usize> = rec["lengths"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert!(lengths.contains(&1) && lengths.contains(&0), "the case has a one-region and a region-less sample");
    let batch = rec["batch"].as_u64().unwrap() as f64;
    let (shape, g) = t.float("gate.mixed.gates");
    let (_, y) = t.float("gate.mixed.labels");
    let mut r = Report::default();
    // The release's variant only: the fixture's "fixed" value is BCE-with-logits of the logits,
    // while mmtt's fix is BCE of the gate probabilities (a mean of sigmoids has no logit); that
    // variant is pinned to PyTorch by `talker_gate.rs`.
    for (mode, double_sigmoid) in [("double", true)] {
        let gt = tensor::<1>(&shape, &g, &ad).require_grad();
        let yt = tensor::<1>(&shape, &y, &ad);
        // The release: per sample with >= 1 region the mean BCE, summed, divided by the batch size.
        let mut total: Option<Tensor<1>> = None;
        let mut at = 0;
        for (i, &n) in lengths.iter().enumerate() {
            let want = &rec[format!("per_sample_{mode}")][i];
            if n == 0 {
                assert!(want.is_null());
                continue;
            }
            // the fixture's per-region logits z as gate probabilities sigmoid(z) (one position
            // per word): the release's BCE-with-logits of sigmoid(z)
            let p = burn::tensor::activation::sigmoid(gt.clone().narrow(0, at, n));
            let m = gate_mean(p, yt.clone().narrow(0, at, n), double_sigmoid);
            r.value(&format!("gate.mixed.{mode} sample {i} ({n} regions)"), m.clone().into_scalar::<f64>(), want.as_f64().unwrap());
            total = Some(match total {
                Some(s) => s + m,
                None => m,
            });
            at += n;
        }
        let loss = total.expect("some sample has regions").div_scalar(batch);
        let grads = loss.backward();
        let what = format!("gate.mixed.{mode}");
        r.value(&what, loss.into_scalar::<f64>(), rec[mode].as_f64().unwrap());
        r.grad(&what, &grad_of(&gt, &grads), &t.float(&format!("gate.mixed.grad_{mode}")).1, &shape);
    }
    r.finish();
}

#[test]
fn gate_mean_of_a_sample_without_regions_is_zero() {
    let d = Device::flex();
    for double_sigmoid in [false, true] {
        let empty = || Tensor::<1>::from_data(TensorData::new(Vec::<f32>::new(), [0]), &d);
        assert_eq!(gate_mean(empty(), empty(), double_sigmoid).into_scalar::<f64>(), 0.0);
    }
}

fn escaped(s: &str) -> String {
    s.escape_debug().to_string()
}

#[test]
fn normaliser_matches_lavis_pre_caption() {
    let j = json();
    let records = j["caption"].as_array().unwrap();
    assert!(records.len() >= 15);
    let mut bad = Vec::new();
    for rec in records {
        let (input, max_words, want) =
            (rec["input"].as_str().unwrap(), rec["max_words"].as_u64().unwrap() as usize, rec["output"].as_str().unwrap());
        let got = normalize_caption(input, max_words);
        if got != want {
            bad.push(format!(
                "input \"{}\" (max_words {max_words}):\n   got \"{}\"\n  want \"{}\"",
                escaped(input),
                escaped(&got),
                escaped(want)
            ));
        }
    }
    assert!(bad.is_empty(), "{} of {} captions differ from LAVIS:\n{}", bad.len(), records.len(), bad.join("\n"));
}

/// Over all of Unicode: the characters `c` for which `"x" + c + c + "y"` normalises to `"x y"`
/// (removed punctuation and whitespace that collapses) are the ones Python's `re` finds.
#[test]
fn normaliser_collapses_the_characters_python_collapses() {
    let j = json();
    let python: BTreeSet<u32> = j["caption_whitespace_probe"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let ours: BTreeSet<u32> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|c| normalize_caption(&format!("x{c}{c}y"), 256) == "x y")
        .map(u32::from)
        .collect();
    let fmt = |s: &BTreeSet<u32>| s.iter().map(|c| format!("U+{c:04X}")).collect::<Vec<_>>().join(" ");
    let (only_python, only_ours) = (&python - &ours, &ours - &python);
    assert!(
        only_python.is_empty() && only_ours.is_empty(),
        "collapsed by Python's pre_caption only: [{}]; by normalize_caption only: [{}]",
        fmt(&only_python),
        fmt(&only_ours)
    );
}
