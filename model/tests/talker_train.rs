//! The stage-2 trainer on synthetic faces whose forged regions are painted into the pixels and
//! named by the captions: the loss falls, the generated texts name the painted regions more often
//! than chance, the masks beat the all-ones and all-zeros masks; a SIGKILLed run resumes bit for
//! bit; two CPU replicas (data-parallel) equal one device at the same global batch.

use mmtt_model::eval::masks::nearest;
use mmtt_model::fpn::Control;
use mmtt_model::talker::predict::{PredictOptions, predict};
use mmtt_model::talker::train::{Quiet, TalkerProgress, TalkerStepReport, TalkerValReport, train};
use mmtt_model::talker::{GenerationConfig, RegionSource, TalkerSample, TalkerTrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Regions the synthetic set paints: (label index, word, cell x, cell y, cell w, cell h, colour) on a 64 px face.
type Painted = (usize, &'static str, u32, u32, u32, u32, [u8; 3]);
const REGIONS: [Painted; 4] = [
    (0, "eye", 12, 18, 40, 10, [20, 200, 255]),
    (4, "nose", 26, 30, 12, 12, [255, 220, 0]),
    (3, "mouth", 18, 46, 28, 9, [230, 20, 120]),
    (7, "forehead", 14, 2, 36, 12, [40, 255, 60]),
];
const PHRASES: [&str; 4] = ["looks blurred", "has a smeared texture", "is unnaturally smooth", "shows a colour shift"];

fn synthetic(dir: &Path, n: usize, seed: u64) -> Vec<TalkerSample> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let base = [rng.random_range(120..190u8), rng.random_range(90..150u8), rng.random_range(70..130u8)];
            let mut img = image::RgbImage::from_fn(64, 64, |x, y| {
                let s = ((x as f32 / 9.0).sin() * 10.0 + (y as f32 / 7.0).cos() * 10.0) as i16;
                image::Rgb(base.map(|c| (c as i16 + s).clamp(0, 255) as u8))
            });
            let mut mask = image::GrayImage::new(64, 64);
            let mut labels = [false; 21];
            // one or two painted regions per image
            let first = rng.random_range(0..REGIONS.len());
            let mut chosen = vec![first];
            if rng.random_bool(0.4) {
                chosen.push((first + rng.random_range(1..REGIONS.len())) % REGIONS.len());
            }
            chosen.sort_unstable();
            let mut parts = Vec::new();
            for &r in &chosen {
                let (label, word, x0, y0, w, h, colour) = REGIONS[r];
                labels[label] = true;
                for y in y0..y0 + h {
                    for x in x0..x0 + w {
                        img.put_pixel(x, y, image::Rgb(colour));
                        mask.put_pixel(x, y, image::Luma([255]));
                    }
                }
                parts.push(format!("the {word} {}", PHRASES[rng.random_range(0..PHRASES.len())]));
            }
            let caption = format!("{}.", parts.join(" and "));
            let (ip, mp) = (dir.join(format!("{i:04}.png")), dir.join(format!("{i:04}-mask.png")));
            img.save(&ip).unwrap();
            mask.save(&mp).unwrap();
            TalkerSample { id: format!("s{i}"), image: ip, mask: Some(mp), caption, labels }
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmtt-talker-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Records every step's losses and the validations.
#[derive(Default)]
struct Record {
    steps: Vec<TalkerStepReport>,
    vals: Vec<TalkerValReport>,
}
impl TalkerProgress for Record {
    fn step(&mut self, r: &TalkerStepReport) -> Control {
        self.steps.push(r.clone());
        Control::Continue
    }
    fn validated(&mut self, r: &TalkerValReport) {
        self.vals.push(r.clone());
    }
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count() as f64;
    if union == 0.0 { 1.0 } else { inter / union }
}

fn plane(path: &Path) -> Vec<bool> {
    let m = image::open(path).unwrap().to_luma8();
    let (w, h) = m.dimensions();
    nearest(m.as_raw(), w, h, 64, 64).into_iter().map(|v| v > 127).collect()
}

#[test]
fn the_tiny_preset_learns_to_name_and_locate_painted_regions() {
    let root = tmp("learn");
    let train_set = synthetic(&root.join("train"), 160, 1);
    let val = synthetic(&root.join("val"), 24, 2);
    // No regions in the instruction: what the text names must come from the pixels.
    let cfg =
        TalkerTrainConfig { regions: RegionSource::None, steps: 400, eval_every: 200, checkpoint_every: 200, ..TalkerTrainConfig::tiny() };
    let mut rec = Record::default();
    let out = train(&cfg, &train_set, &val, &root.join("run"), &mut rec).unwrap();
    assert_eq!(out.last_step, 400);
    assert_eq!(rec.vals.len(), 2);

    // The loss falls. At step 1 the LM loss is about ln(400) = 6.0 (uniform over the vocabulary)
    // and the mask BCE about 0.8; a model that learnt the template but not the image would keep
    // about ln(4) nats on the region word and ln(4) on the phrase out of ~12 tokens (~0.25 per
    // token) plus the mask's prior; so the last 20 steps must average below a quarter of the
    // first 5 steps' loss.
    let mean = |r: &[TalkerStepReport]| r.iter().map(|s| s.loss).sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&rec.steps[..5]), mean(&rec.steps[rec.steps.len() - 20..]));
    eprintln!(
        "loss: first 5 steps {first:.3}, last 20 steps {last:.3}; validations {:?}",
        rec.vals.iter().map(|v| v.score).collect::<Vec<_>>()
    );
    assert!(last < 0.25 * first, "loss fell from {first:.3} to {last:.3} only");

    // Held-out predictions through the ordinary path (`predict`, then the files `mmtt eval report` reads).
    let test = synthetic(&root.join("test"), 40, 3);
    let opts = PredictOptions { regions: RegionSource::None, generation: GenerationConfig::greedy(30), batch_size: 8 };
    let summary = predict(&out.best_dir, None, &burn::tensor::Device::flex(), &test, &opts, &root.join("pred"), &mut |_, _| {}).unwrap();
    assert_eq!(summary.images, 40);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&summary.predictions).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 40);

    // Region words: named vs painted, against chance. Each image has 1.4 of 4 regions painted on
    // average, so a text naming regions at random names a painted one with probability ~0.35;
    // the model's named regions must be painted far more often than that, and it must name most
    // painted regions.
    let (mut named, mut named_painted, mut painted, mut painted_named) = (0, 0, 0, 0);
    let mut ious = (0.0, 0.0, 0.0);
    for (s, l) in test.iter().zip(&lines) {
        assert_eq!(l["image_id"], s.id.as_str());
        let text = l["caption"].as_str().unwrap().to_string();
        for (label, word, ..) in REGIONS {
            let said = text.split(|c: char| !c.is_alphanumeric()).any(|w| w == word);
            let is = s.labels[label];
            named += said as usize;
            named_painted += (said && is) as usize;
            painted += is as usize;
            painted_named += (said && is) as usize;
        }
        let gt = plane(s.mask.as_ref().unwrap());
        let pred = plane(&root.join("pred").join(l["mask_path"].as_str().unwrap()));
        ious.0 += iou(&pred, &gt);
        ious.1 += iou(&vec![true; gt.len()], &gt);
        ious.2 += iou(&vec![false; gt.len()], &gt);
    }
    let precision = named_painted as f64 / named.max(1) as f64;
    let recall = painted_named as f64 / painted.max(1) as f64;
    let n = test.len() as f64;
    let (model_iou, ones_iou, zeros_iou) = (ious.0 / n, ious.1 / n, ious.2 / n);
    eprintln!(
        "held-out: region precision {precision:.3} recall {recall:.3} ({named} named); mask IoU {model_iou:.3} (all ones {ones_iou:.3}, all zeros {zeros_iou:.3}); e.g. {:?}",
        lines[0]["caption"]
    );
    assert!(precision > 0.6, "named regions are painted with precision {precision:.3} (chance ~0.35)");
    assert!(recall > 0.5, "painted regions named with recall {recall:.3}");
    assert!(model_iou > ones_iou.max(zeros_iou) + 0.1, "mask IoU {model_iou:.3} vs all-ones {ones_iou:.3} / all-zeros {zeros_iou:.3}");
    let _ = std::fs::remove_dir_all(&root);
}

fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    for f in ["model.safetensors", "mask_branch.safetensors", mmtt_model::talker::train::GATE_FILE] {
        if f == mmtt_model::talker::train::GATE_FILE && !dir.join(f).is_file() {
            continue;
        }
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (k, t) in st.tensors() {
            v.push((format!("{f}:{k}"), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.iter().map(|t| &t.0).collect::<Vec<_>>(), tb.iter().map(|t| &t.0).collect::<Vec<_>>());
    let differ: Vec<&String> =
        ta.iter().zip(&tb).filter(|(x, y)| x.1.iter().zip(&y.1).any(|(p, q)| p.to_bits() != q.to_bits())).map(|(x, _)| &x.0).collect();
    assert!(differ.is_empty(), "{what}: {} of {} tensors differ: {differ:?}", differ.len(), ta.len());
}

/// Augmentation on (crops, flips, aligned masks), features not cached: the hardest case to resume.
fn resume_config() -> TalkerTrainConfig {
    TalkerTrainConfig {
        steps: 24,
        batch_size: 4,
        augment: true,
        cache_vision_features: false,
        checkpoint_every: 4,
        eval_every: 1000,
        ..TalkerTrainConfig::tiny()
    }
}

const CHILD_ENV: &str = "MMTT_TALKER_TRAIN_CHILD";

/// Run by `resume_after_sigkill_equals_an_uninterrupted_run` in a child process, which it kills.
#[test]
fn child_training_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (data, run) = spec.split_once('|').unwrap();
    let train_set = synthetic(Path::new(data), 24, 5);
    struct Slow;
    impl TalkerProgress for Slow {
        fn step(&mut self, _r: &TalkerStepReport) -> Control {
            std::thread::sleep(std::time::Duration::from_millis(150));
            Control::Continue
        }
    }
    train(&resume_config(), &train_set, &[], Path::new(run), &mut Slow).unwrap();
}

/// Stops the run after `at` steps, as a cancelled job does.
struct StopAt(u64);
impl TalkerProgress for StopAt {
    fn step(&mut self, r: &TalkerStepReport) -> Control {
        if r.step >= self.0 { Control::Stop } else { Control::Continue }
    }
}

#[test]
fn resume_after_sigkill_equals_an_uninterrupted_run() {
    let root = tmp("resume");
    let data = root.join("data");
    let train_set = synthetic(&data, 24, 5);
    let cfg = resume_config();
    let straight = train(&cfg, &train_set, &[], &root.join("straight"), &mut Quiet).unwrap();
    assert_eq!(straight.last_step, 24);

    let run = root.join("killed");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_training_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}", data.display(), run.display()))
        .spawn()
        .unwrap();
    let latest = run.join("checkpoints/latest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let step = std::fs::read_to_string(&latest).ok().and_then(|s| s.trim().strip_prefix("step-").and_then(|n| n.parse::<u64>().ok()));
        if step.is_some_and(|s| s >= 8) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the child finished before it could be killed");
        assert!(std::time::Instant::now() < deadline, "no checkpoint from the child");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at: u64 = std::fs::read_to_string(&latest).unwrap().trim()["step-".len()..].parse().unwrap();
    assert!(killed_at < 24, "killed at step {killed_at}");
    let resumed = train(&cfg, &train_set, &[], &run, &mut Quiet).unwrap();
    assert_eq!(resumed.last_step, 24);
    assert_same_weights(&resumed.last_dir, &straight.last_dir, "resumed after SIGKILL vs uninterrupted");

    // A stop (cancel/pause) checkpoints and returns; starting again continues to the same end.
    let run3 = root.join("stopped");
    let first = train(&cfg, &train_set, &[], &run3, &mut StopAt(11)).unwrap();
    assert!(first.stopped);
    assert_eq!(first.last_step, 11);
    let second = train(&cfg, &train_set, &[], &run3, &mut Quiet).unwrap();
    assert_same_weights(&second.last_dir, &straight.last_dir, "stopped and resumed vs uninterrupted");

    // Another configuration in the same directory is refused, not mixed in.
    let other = TalkerTrainConfig { lr: 1e-3, ..cfg.clone() };
    let err = train(&other, &train_set, &[], &run3, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn two_cpu_replicas_equal_one_device_at_the_same_global_batch() {
    let root = tmp("ddp");
    let train_set = synthetic(&root.join("data"), 24, 7);
    // an odd global batch: the shards are 3 and 2 samples, with different token and mask counts
    let one = TalkerTrainConfig { steps: 12, batch_size: 5, checkpoint_every: 1000, eval_every: 1000, ..TalkerTrainConfig::tiny() };
    two_replicas_equal_one(&one, &train_set, &root);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn two_cpu_replicas_equal_one_device_with_the_release_gate() {
    use mmtt_model::talker::train::GateLoss;
    let root = tmp("ddp-gate");
    let train_set = synthetic(&root.join("data"), 24, 7);
    let fpn = seeded_fpn(&root.join("fpn"));
    // the gate's loss is a mean over the global batch's samples with regions, split unevenly
    // over the shards; its BERT and heads are replicated and their gradients summed too
    let one = TalkerTrainConfig {
        regions: RegionSource::Fpn,
        fpn: Some(fpn),
        gate: Some(GateLoss::default()),
        steps: 12,
        batch_size: 5,
        checkpoint_every: 1000,
        eval_every: 1000,
        ..TalkerTrainConfig::tiny()
    };
    let (a, b) = two_replicas_equal_one(&one, &train_set, &root);
    for (x, y) in a.steps.iter().zip(&b.steps) {
        assert!(x.gate_loss > 0.0, "step {}: no gate loss", x.step);
        let rel = (x.gate_loss - y.gate_loss).abs() / x.gate_loss.abs().max(1e-6);
        assert!(rel < 1e-4, "step {}: gate loss {} on one device, {} on two", x.step, x.gate_loss, y.gate_loss);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Trains `one` on one device and on two CPU replicas at the same global batch and checks that
/// they agree: every step's loss, and every saved tensor (the gate's too, when it trains).
fn two_replicas_equal_one(one: &TalkerTrainConfig, train_set: &[TalkerSample], root: &Path) -> (Record, Record) {
    let two = TalkerTrainConfig { devices: vec!["cpu:0".into(), "cpu:1".into()], ..one.clone() };
    let (mut a, mut b) = (Record::default(), Record::default());
    let ra = train(one, train_set, &[], &root.join("one"), &mut a).unwrap();
    let rb = train(&two, train_set, &[], &root.join("two"), &mut b).unwrap();
    assert_eq!(a.steps.len(), b.steps.len());
    // Losses: every step's global loss from the two shards equals the single-device loss up to
    // f32 summation order (and the weights it was computed with): relative 1e-4.
    for (x, y) in a.steps.iter().zip(&b.steps) {
        let rel = (x.loss - y.loss).abs() / x.loss.abs().max(1e-6);
        assert!(rel < 1e-4, "step {}: loss {} on one device, {} on two", x.step, x.loss, y.loss);
    }
    // Weights after 12 AdamW steps. The two gradients differ only in the order of f32 additions
    // (~1e-7 relative), but Adam divides by sqrt(v): a parameter whose gradient is ~0 can move by a
    // visible fraction of lr on either run. So: every tensor within 20 * lr * steps absolute of
    // the other run, and nearly all elements (99.9%) within 1e-5.
    let (ta, tb) = (tensors(&ra.last_dir), tensors(&rb.last_dir));
    assert_eq!(ta.iter().map(|t| &t.0).collect::<Vec<_>>(), tb.iter().map(|t| &t.0).collect::<Vec<_>>());
    if one.gate.is_some() {
        assert!(ta.iter().any(|t| t.0.starts_with(mmtt_model::talker::train::GATE_FILE)), "the gate's tensors are compared");
    }
    let (mut total, mut close) = (0usize, 0usize);
    let mut worst = 0f32;
    for ((_, va), (_, vb)) in ta.iter().zip(&tb) {
        for (p, q) in va.iter().zip(vb) {
            let d = (p - q).abs();
            worst = worst.max(d);
            total += 1;
            close += (d <= 1e-5) as usize;
        }
    }
    eprintln!("two replicas vs one: {close} of {total} weights within 1e-5, worst {worst:e}");
    assert!(worst as f64 <= 20.0 * one.lr * one.steps as f64, "worst weight difference {worst}");
    assert!(close as f64 >= 0.999 * total as f64, "only {close} of {total} weights within 1e-5");
    (a, b)
}

#[test]
fn bad_training_configs_are_refused_with_the_key_named() {
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\nstepz = 3\n").unwrap_err().to_string();
    assert!(err.contains("stepz"), "{err}");
    let err = TalkerTrainConfig::from_toml("preset = \"huge\"\n").unwrap_err().to_string();
    assert!(err.contains("unknown preset `huge`"), "{err}");
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\naugment = true\ncache_vision_features = true\n").unwrap_err().to_string();
    assert!(err.contains("cache_vision_features") && err.contains("augment = false"), "{err}");
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\ndevices = [\"cpu:0\", \"cpu:0\"]\n").unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\nregions = \"everything\"\n").unwrap_err().to_string();
    assert!(err.contains("regions"), "{err}");
    let ok = TalkerTrainConfig::from_toml("preset = \"tiny\"\nsteps = 10\n[mask_loss]\ndouble_sigmoid = true\n").unwrap();
    assert!(ok.mask_loss.double_sigmoid && ok.mask_loss.pos_weight == 2.0);
    assert_eq!(ok.lr, TalkerTrainConfig::paper().lr, "keys left out take the paper config's values");
    let c = TalkerTrainConfig { steps: 100, warmup_steps: 10, lr: 1.0, min_lr: 0.0, ..TalkerTrainConfig::tiny() };
    assert!((c.lr_at(0) - 0.1).abs() < 1e-12 && (c.lr_at(9) - 1.0).abs() < 1e-12);
    assert!((c.lr_at(55) - 0.5).abs() < 1e-12 && c.lr_at(99) < 0.01);

    // regions = fpn without an FPN is refused before anything is written
    let root = tmp("refuse");
    let data = synthetic(&root.join("data"), 4, 9);
    let cfg = TalkerTrainConfig { regions: RegionSource::Fpn, steps: 1, ..TalkerTrainConfig::tiny() };
    let err = train(&cfg, &data, &[], &root.join("run"), &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("needs an FPN"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A seeded (untrained) tiny FPN at the tiny explainer's image size: it predicts some regions for
/// every image, most of them not painted, which is what the gate learns to tell apart.
fn seeded_fpn(dir: &Path) -> PathBuf {
    use mmtt_model::fpn::config::{FpnConfig, Preprocess};
    use mmtt_model::fpn::face_vit::{FaceVit, Init};
    let size = mmtt_model::talker::TalkerConfig::preset("tiny").unwrap().vision.image_size;
    let cfg = FpnConfig { image_size: size, ..FpnConfig::preset("tiny").unwrap() };
    let device = burn::tensor::Device::flex();
    let model = FaceVit::new(&cfg, &mut Init::new(3, &device));
    mmtt_model::fpn::weights::save_dir(&model, &cfg, &Preprocess::for_config(&cfg), dir).unwrap();
    dir.to_path_buf()
}

fn gate_tensor(dir: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir.join(mmtt_model::talker::train::GATE_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn named(dir: &Path, file: &str, name: &str) -> Vec<f32> {
    tensors(dir).into_iter().find(|(n, _)| n == &format!("{file}:{name}")).unwrap_or_else(|| panic!("{name}")).1
}

#[test]
fn the_release_gate_trains_beside_stage_2_checkpoints_and_resumes() {
    use mmtt_model::talker::gate::{BertConfig, Gate, GateConfig, GateFile, load_gate};
    use mmtt_model::talker::train::GateLoss;
    let root = tmp("gate");
    let train_set = synthetic(&root.join("data"), 16, 21);
    let fpn = seeded_fpn(&root.join("fpn"));
    let cfg = TalkerTrainConfig {
        regions: RegionSource::Fpn,
        fpn: Some(fpn),
        gate: Some(GateLoss::default()),
        steps: 40,
        batch_size: 4,
        grad_clip: None,
        checkpoint_every: 20,
        eval_every: 1000,
        ..TalkerTrainConfig::tiny()
    };
    // `[gate]` and "no clipping" survive run.toml's round trip (a resume compares them)
    assert_eq!(TalkerTrainConfig::from_toml(&cfg.to_toml()).unwrap(), cfg);
    let mut rec = Record::default();
    let out = train(&cfg, &train_set, &[], &root.join("run"), &mut rec).unwrap();
    // the gate loss is reported, positive, and falls as the gate learns which predicted regions
    // the captions name
    assert!(
        rec.steps.iter().all(|s| s.gate_loss.is_finite() && s.gate_loss > 0.0),
        "{:?}",
        rec.steps.iter().map(|s| s.gate_loss).collect::<Vec<_>>()
    );
    let mean = |r: &[TalkerStepReport]| r.iter().map(|s| s.gate_loss).sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&rec.steps[..8]), mean(&rec.steps[32..]));
    eprintln!("gate loss: first 8 steps {first:.4}, last 8 {last:.4}");
    assert!(last < 0.8 * first, "the gate loss did not fall: {first} -> {last}");
    // the total is L_t + L_m + 0.5 L_gate
    for s in &rec.steps {
        let want = s.lm_loss + s.mask_loss + 0.5 * s.gate_loss;
        assert!((s.loss - want).abs() < 1e-9 * want.max(1.0), "step {}: {} vs {want}", s.step, s.loss);
    }

    // the checkpoint holds the gate in the release's names; it loads by them
    let q = mmtt_model::talker::TalkerConfig::preset("tiny").unwrap();
    let gcfg = GateConfig {
        bert: BertConfig {
            vocab_size: q.qformer.vocab_size,
            hidden_size: q.qformer.hidden_size,
            num_hidden_layers: q.qformer.num_hidden_layers,
            num_attention_heads: q.qformer.num_attention_heads,
            intermediate_size: q.qformer.intermediate_size,
            max_position_embeddings: q.qformer.max_position_embeddings,
            type_vocab_size: 2,
            layer_norm_eps: q.qformer.layer_norm_eps,
        },
        vision_width: q.vision.hidden_size,
        heads: if q.qformer.hidden_size.is_multiple_of(8) { 8 } else { q.qformer.num_attention_heads },
    };
    let device = burn::tensor::Device::flex();
    let seeded = Gate::new(&gcfg, &mut mmtt_model::fpn::face_vit::Init::new(1, &device));
    load_gate(seeded, &out.last_dir.join(mmtt_model::talker::train::GATE_FILE), GateFile::Whole).unwrap();

    // the gate's gradient reaches ln_vision (and only what the gate reads): one step with and
    // without the gate from the same start
    let one = TalkerTrainConfig { steps: 1, checkpoint_every: 1, ..cfg.clone() };
    let plain = TalkerTrainConfig { gate: None, ..one.clone() };
    let a = train(&one, &train_set, &[], &root.join("one-gate"), &mut Quiet).unwrap();
    let b = train(&plain, &train_set, &[], &root.join("one-plain"), &mut Quiet).unwrap();
    let ln = "vision_model.post_layernorm.weight";
    assert_ne!(
        named(&a.last_dir, "model.safetensors", ln),
        named(&b.last_dir, "model.safetensors", ln),
        "ln_vision got the gate's gradient"
    );
    assert!(
        a.last_dir.join(mmtt_model::talker::train::GATE_FILE).is_file() && !b.last_dir.join(mmtt_model::talker::train::GATE_FILE).exists()
    );

    // stopped at step 20 and resumed: the same gate (and model) as the uninterrupted run
    let run2 = root.join("run2");
    let stopped = train(&cfg, &train_set, &[], &run2, &mut StopAt(20)).unwrap();
    assert!(stopped.stopped && stopped.last_step == 20);
    let resumed = train(&cfg, &train_set, &[], &run2, &mut Quiet).unwrap();
    assert_eq!(resumed.last_step, 40);
    assert_same_weights(&resumed.last_dir, &out.last_dir, "gate run stopped and resumed vs uninterrupted");
    for name in ["fc_layer.weight", "bert_model.encoder.layer.0.attention.self.query.weight", "gate_cross_attention_layer.in_proj_weight"] {
        let (x, y) = (gate_tensor(&resumed.last_dir, name), gate_tensor(&out.last_dir, name));
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{name} differs after resume");
    }

    // a new run from this checkpoint continues its gate, not a seeded one: after one step every
    // watched gate tensor is within a few learning rates of the checkpoint's and nearer to it than
    // to one step from the seeded gate ("one-gate" above: what a seeded start would give here)
    let cont = TalkerTrainConfig { init: Some(out.last_dir.clone()), steps: 1, checkpoint_every: 1, ..cfg.clone() };
    let c = train(&cont, &train_set, &[], &root.join("continued"), &mut Quiet).unwrap();
    let dist = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max) as f64;
    for name in ["fc_layer.weight", "trans_layer.weight", "bert_model.encoder.layer.0.attention.self.query.weight"] {
        let (from, start) = (gate_tensor(&c.last_dir, name), gate_tensor(&out.last_dir, name));
        let d = dist(&from, &start);
        assert!(d <= 3.0 * cfg.lr, "{name}: the continued gate moved {d} from the checkpoint's (lr {})", cfg.lr);
        let seeded = dist(&from, &gate_tensor(&a.last_dir, name));
        assert!(seeded > d, "{name}: the continued gate is {seeded} from a seeded start's, {d} from the checkpoint's");
    }
    // the authors' release folder: its checkpoint's gate is loaded by name; the fixture's
    // `bert_model` has no encoder layers (only the embeddings and pooler), so every missing
    // tensor is named instead of a silently seeded BERT
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/talker/release");
    let rel = TalkerTrainConfig { init: Some(release), fpn: None, steps: 1, ..cfg.clone() };
    let err = train(&rel, &train_set, &[], &root.join("release-gate"), &mut Quiet).unwrap_err().to_string();
    for layer in 0..4 {
        let want = format!("missing: `bert_model.encoder.layer.{layer}.attention.self.query.weight`");
        assert!(err.contains("checkpoint_best.pth") && err.contains(&want), "{err}");
    }
    assert!(
        !err.contains("missing: `fc_layer") && !err.contains("missing: `trans_layer") && err.contains("64 gate tensor problem"),
        "the release's gate heads load: {err}"
    );

    // refused: a gate without FPN regions, a negative weight
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\nregions = \"gt\"\n[gate]\n").unwrap_err().to_string();
    assert!(err.contains("[gate]") && err.contains("regions = \"fpn\""), "{err}");
    let err = TalkerTrainConfig::from_toml("preset = \"tiny\"\nregions = \"fpn\"\n[gate]\nweight = -1\n").unwrap_err().to_string();
    assert!(err.contains("gate.weight"), "{err}");
    let err =
        TalkerTrainConfig::from_toml("preset = \"tiny\"\nregions = \"fpn\"\n[gate]\nbert = \"/nonexistent\"\n").unwrap_err().to_string();
    assert!(err.contains("gate.bert") && err.contains("config.json"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bf16_frozen_weights_train_like_f32_and_generate() {
    use mmtt_model::precision::WeightDtype;
    use mmtt_model::talker::train::PAPER_PARTS;
    let root = tmp("bf16");
    let all = synthetic(&root.join("data"), 20, 31);
    let (train_set, val) = all.split_at(16);
    // the paper's parts train; EVA and T5 are frozen, so `bf16` holds their weights in bf16
    let f32_cfg = TalkerTrainConfig {
        trainable: PAPER_PARTS.to_vec(),
        frozen_weights: WeightDtype::F32,
        steps: 60,
        batch_size: 4,
        lr: 5e-3,
        checkpoint_every: 1000,
        eval_every: 60,
        ..TalkerTrainConfig::tiny()
    };
    let bf16_cfg = TalkerTrainConfig { frozen_weights: WeightDtype::Bf16, ..f32_cfg.clone() };
    assert_eq!(TalkerTrainConfig::from_toml(&bf16_cfg.to_toml()).unwrap(), bf16_cfg);
    let (mut a, mut b) = (Record::default(), Record::default());
    train(&f32_cfg, train_set, val, &root.join("f32"), &mut a).unwrap();
    train(&bf16_cfg, train_set, val, &root.join("bf16"), &mut b).unwrap();
    // The first step runs the same trained weights through frozen parts whose weights differ by
    // bf16's rounding (relative 2^-9 per weight): the loss moves by a little, not by nothing.
    let (x, y) = (a.steps[0].loss, b.steps[0].loss);
    let rel = (x - y).abs() / x.abs();
    eprintln!("step 1 loss: f32 {x:.6}, bf16 frozen weights {y:.6} (relative {rel:.2e})");
    assert!(rel > 1e-7, "bf16 made no difference: the frozen weights were not converted");
    assert!(rel < 2e-2, "bf16 frozen weights moved the loss by {rel}");
    // both learn (through a frozen random T5, slowly), by about as much
    let mean = |r: &Record, s: std::ops::Range<usize>| r.steps[s.clone()].iter().map(|s| s.loss).sum::<f64>() / s.len() as f64;
    for (name, r) in [("f32", &a), ("bf16", &b)] {
        let (first, last) = (mean(r, 0..8), mean(r, 52..60));
        eprintln!("{name}: loss {first:.4} -> {last:.4}");
        assert!(last < 0.97 * first, "{name}: the loss did not fall ({first} -> {last})");
    }
    let (fa, fb) = (mean(&a, 52..60), mean(&b, 52..60));
    assert!((fa - fb).abs() < 0.02 * fa, "after 60 steps: f32 {fa}, bf16 {fb}");
    // validation generated captions through the bf16 T5 (its KV-cache decoding) and scored them
    assert_eq!(b.vals.len(), 1, "one validation");
    assert!(b.vals[0].score.is_finite(), "{:?}", b.vals[0].score);

    // both frozen parts trained: nothing to hold in bf16, refused with the key named
    let err = TalkerTrainConfig::from_toml(
        "preset = \"tiny\"\nregions = \"gt\"\ntrainable = [\"qformer\", \"vision\", \"t5\"]\nfrozen_weights = \"bf16\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("frozen_weights") && err.contains("trainable"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bf16_weights_hold_the_frozen_layers_and_give_float32_activations() {
    use burn::tensor::{DType, Tensor, TensorData};
    let device = burn::tensor::Device::flex();
    let cfg = mmtt_model::talker::TalkerConfig::preset("tiny").unwrap();
    let t = mmtt_model::talker::instructblip::Talker::random(cfg.clone(), 3, &device);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut data = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
    let rel = |a: Tensor<3>, b: Tensor<3>| {
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
    };

    // EVA: the linear layers and the patch convolution in bf16; norms and embeddings float32
    let eva = t.blip.vision_model.clone();
    let eva16 = eva.clone().with_bf16_weights();
    let l = &eva16.encoder.layers[0];
    assert_eq!(l.mlp.fc1.weight.val().dtype(), DType::BF16);
    assert_eq!(l.self_attn.qkv.weight.val().dtype(), DType::BF16);
    assert_eq!(eva16.embeddings.patch_embedding.weight.val().dtype(), DType::BF16);
    assert_eq!(l.layer_norm1.gamma.val().dtype(), DType::F32);
    assert_eq!(eva16.embeddings.position_embedding.val().dtype(), DType::F32);
    assert_eq!(eva16.post_layernorm.gamma.val().dtype(), DType::F32, "ln_vision trains: float32");
    let s = cfg.vision.image_size;
    let px = Tensor::<4>::from_data(TensorData::new(data(2 * 3 * s * s), [2, 3, s, s]), &device);
    let (a, b) = (eva.features(&cfg.vision, px.clone()), eva16.features(&cfg.vision, px));
    assert_eq!(b.dtype(), DType::F32);
    let r = rel(a, b);
    eprintln!("EVA features, bf16 weights vs f32: max relative difference {r:.2e}");
    assert!(r > 1e-6 && r < 3e-2, "{r}");

    // T5: every weight in bf16; the encoder's states and the logits float32 and close
    let t5 = t.blip.language_model.clone();
    let t516 = t5.clone().with_bf16_weights();
    assert_eq!(t516.shared.weight.val().dtype(), DType::BF16);
    let d = cfg.text.d_model;
    let embeds = Tensor::<3>::from_data(TensorData::new(data(2 * 5 * d), [2, 5, d]), &device);
    let mask = vec![vec![1u8; 5], vec![1, 1, 1, 0, 0]];
    let (ea, eb) = (t5.encode(&cfg.text, embeds.clone(), &mask), t516.encode(&cfg.text, embeds, &mask));
    assert_eq!(eb.dtype(), DType::F32);
    let r = rel(ea.clone(), eb.clone());
    eprintln!("T5 encoder states, bf16 weights vs f32: max relative difference {r:.2e}");
    assert!(r > 1e-6 && r < 3e-2, "{r}");
    let ids = mmtt_model::talker::instructblip::ids_tensor(&[vec![0, 5, 9], vec![0, 7, 3]], &device);
    let (la, lb) = (t5.decode_train(&cfg.text, ids.clone(), ea, &mask), t516.decode_train(&cfg.text, ids, eb, &mask));
    assert_eq!(lb.dtype(), DType::F32);
    let r = rel(la, lb);
    eprintln!("T5 logits, bf16 weights vs f32: max relative difference {r:.2e}");
    assert!(r > 1e-6 && r < 5e-2, "{r}");
}
