//! The FPN trainer on synthetic faces whose labels are visible in the pixels: it learns (PLM on
//! held-out samples), and a run killed with SIGKILL and started again ends with the same weights,
//! bit for bit, as an uninterrupted one.

use mmtt_model::fpn::train::Quiet;
use mmtt_model::fpn::{Control, LossConfig, Predictor, Progress, Sample, StepReport, TrainConfig, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Where each label's texture goes on a 64 px face-like layout (x, y of an 8x8 cell), for the
/// labels the synthetic set uses: eye, lip, nose, cheek, forehead, chin, eyebrow, hair.
const PAINTED: [(usize, (u32, u32)); 8] =
    [(0, (16, 24)), (2, (28, 48)), (4, (28, 36)), (6, (44, 40)), (7, (28, 8)), (8, (28, 56)), (10, (12, 16)), (16, (4, 0))];

/// A smooth random "face" with a checker texture in the cell of every positive label.
fn synthetic(dir: &Path, n: usize, seed: u64) -> Vec<Sample> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let base = [rng.random_range(90..170u8), rng.random_range(70..140u8), rng.random_range(60..120u8)];
            let mut img = image::RgbImage::from_fn(64, 64, |x, y| {
                let s = ((x as f32 / 9.0).sin() * 12.0 + (y as f32 / 7.0).cos() * 12.0) as i16;
                image::Rgb(base.map(|c| (c as i16 + s).clamp(0, 255) as u8))
            });
            let mut labels = [false; 21];
            for (label, (cx, cy)) in PAINTED {
                if rng.random_bool(0.35) {
                    labels[label] = true;
                    for dy in 0..8 {
                        for dx in 0..8 {
                            let v = if (dx + dy) % 2 == 0 { 255 } else { 0 };
                            img.put_pixel(cx + dx, cy + dy, image::Rgb([v, v, 255 - v]));
                        }
                    }
                }
            }
            let path = dir.join(format!("{i:04}.png"));
            img.save(&path).unwrap();
            Sample { id: format!("s{i}"), image: path, labels }
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmtt-fpn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small_config(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 16,
        lr: 2e-3,
        warmup_steps: 10,
        weight_decay: 0.01,
        checkpoint_every: 5,
        eval_every: 1000,
        hflip: false,
        loss: LossConfig::Paper { negative_weight: 0.2, bce: true, dice: true },
        ..TrainConfig::tiny()
    }
}

#[test]
fn the_tiny_preset_learns_regions_visible_in_the_pixels() {
    let root = tmp("learn");
    let train_set = synthetic(&root.join("train"), 192, 1);
    let val = synthetic(&root.join("val"), 64, 2);
    let cfg = TrainConfig { steps: 240, eval_every: 80, checkpoint_every: 80, ..small_config(240) };
    let out = train(&cfg, &train_set, &val, &root.join("run"), &mut Quiet).unwrap();
    assert_eq!(out.last_step, 240);
    assert!(!out.stopped);
    let best = out.best_plm.expect("validated");
    assert!(best >= 0.9, "best validation PLM {best} < 0.9 after 240 steps");

    // The best checkpoint predicts held-out images through the ordinary predictor.
    let held_out = synthetic(&root.join("test"), 32, 3);
    let p = Predictor::load(&out.best_dir).unwrap();
    let probs = p.predict_paths(&held_out.iter().map(|s| s.image.clone()).collect::<Vec<_>>()).unwrap();
    let sets: Vec<(Vec<bool>, Vec<bool>)> =
        held_out.iter().zip(&probs).map(|(s, p)| (s.labels.to_vec(), p.iter().map(|x| *x > 0.5).collect())).collect();
    let plm = mmtt_model::eval::labels::score_sets(&sets, &mmtt_model::fpn::LABELS).plm;
    assert!(plm >= 0.9, "held-out PLM {plm} < 0.9");
    eprintln!("tiny preset, 240 steps of 16: best validation PLM {best:.4}, held-out PLM {plm:.4}");
    let metrics = std::fs::read_to_string(root.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"plm\"")).count(), 3);
    let _ = std::fs::remove_dir_all(&root);
}

/// Stops the run after `at` steps, as a cancelled job does.
struct StopAt(u64);
impl Progress for StopAt {
    fn step(&mut self, r: &StepReport) -> Control {
        if r.step >= self.0 { Control::Stop } else { Control::Continue }
    }
}

fn tensors(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(k, t)| (k, t.data().to_vec())).collect();
    v.sort();
    v
}

/// Asserts two checkpoints hold bit-identical tensors; names the ones that differ.
fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.iter().map(|t| &t.0).collect::<Vec<_>>(), tb.iter().map(|t| &t.0).collect::<Vec<_>>());
    let differ: Vec<&String> = ta.iter().zip(&tb).filter(|(x, y)| x.1 != y.1).map(|(x, _)| &x.0).collect();
    assert!(differ.is_empty(), "{what}: {} of {} tensors differ: {differ:?}", differ.len(), ta.len());
}

const CHILD_ENV: &str = "MMTT_FPN_TRAIN_CHILD";

/// Run by `resume_after_sigkill_equals_an_uninterrupted_run` in a child process, which it kills.
#[test]
fn child_training_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (data, run) = spec.split_once('|').unwrap();
    let train_set = synthetic(Path::new(data), 48, 5);
    let cfg = TrainConfig { hflip: true, ..small_config(40) };
    /// Slows the run so that the parent can kill it mid-way.
    struct Slow;
    impl Progress for Slow {
        fn step(&mut self, _r: &StepReport) -> Control {
            std::thread::sleep(std::time::Duration::from_millis(150));
            Control::Continue
        }
    }
    train(&cfg, &train_set, &[], Path::new(run), &mut Slow).unwrap();
}

#[test]
fn resume_after_sigkill_equals_an_uninterrupted_run() {
    let root = tmp("resume");
    let data = root.join("data");
    let train_set = synthetic(&data, 48, 5);
    let cfg = TrainConfig { hflip: true, ..small_config(40) };

    // Uninterrupted.
    let straight = train(&cfg, &train_set, &[], &root.join("straight"), &mut Quiet).unwrap();
    assert_eq!(straight.last_step, 40);

    // Killed with SIGKILL once a checkpoint past step 10 exists, then started again.
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
        if step.is_some_and(|s| s >= 10) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the child finished before it could be killed");
        assert!(std::time::Instant::now() < deadline, "no checkpoint from the child");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at: u64 = std::fs::read_to_string(&latest).unwrap().trim()["step-".len()..].parse().unwrap();
    assert!(killed_at < 40, "killed at step {killed_at}");

    let resumed = train(&cfg, &train_set, &[], &run, &mut Quiet).unwrap();
    assert_eq!(resumed.last_step, 40);
    assert_same_weights(&resumed.last_dir, &straight.last_dir, "resumed after SIGKILL vs uninterrupted");

    // A stop (cancel/pause) checkpoints and returns; starting again continues to the same end.
    let run3 = root.join("stopped");
    let first = train(&cfg, &train_set, &[], &run3, &mut StopAt(17)).unwrap();
    assert!(first.stopped);
    assert_eq!(first.last_step, 17);
    let second = train(&cfg, &train_set, &[], &run3, &mut Quiet).unwrap();
    assert_same_weights(&second.last_dir, &straight.last_dir, "stopped and resumed vs uninterrupted");

    // Another configuration in the same directory is refused, not mixed in.
    let other = TrainConfig { lr: 1e-3, ..cfg.clone() };
    let err = train(&other, &train_set, &[], &run3, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_training_configs_are_refused_with_the_key_named() {
    let err = TrainConfig::from_toml("preset = \"tiny\"\nstepz = 3\n").unwrap_err().to_string();
    assert!(err.contains("stepz"), "{err}");
    let err = TrainConfig::from_toml("preset = \"vit-x\"\n").unwrap_err().to_string();
    assert!(err.contains("unknown preset `vit-x`"), "{err}");
    let err = TrainConfig::from_toml("preset = \"tiny\"\n[loss]\nkind = \"paper\"\nbce = false\ndice = false\n").unwrap_err().to_string();
    assert!(err.contains("at least one of `bce` and `dice`"), "{err}");
    let ok = TrainConfig::from_toml("preset = \"tiny\"\nsteps = 10\n[loss]\nkind = \"release\"\n").unwrap();
    assert_eq!(ok.loss, LossConfig::Release);
    assert_eq!(ok.lr, TrainConfig::paper().lr, "keys left out take the paper config's values");
    // Warm-up then cosine.
    let c = TrainConfig { steps: 100, warmup_steps: 10, lr: 1.0, ..TrainConfig::tiny() };
    assert!((c.lr_at(0) - 0.1).abs() < 1e-12 && (c.lr_at(9) - 1.0).abs() < 1e-12);
    assert!((c.lr_at(55) - 0.5).abs() < 1e-12 && c.lr_at(99) < 0.01);
}

/// Collects the trainer's notes.
struct Notes(Vec<String>);
impl Progress for Notes {
    fn step(&mut self, _r: &StepReport) -> Control {
        Control::Continue
    }
    fn note(&mut self, msg: &str) {
        self.0.push(msg.to_string());
    }
}

#[test]
fn init_loads_a_backbone_and_keeps_only_the_head_and_branch_seeded() {
    let root = tmp("init");
    let data = synthetic(&root.join("data"), 8, 9);
    // A plain tiny checkpoint (no convolution branch) as the starting point of an FPN run.
    let mut plain = mmtt_model::fpn::FpnConfig::preset("tiny").unwrap();
    plain.conv_branch = false;
    mmtt_model::fpn::init_checkpoint(&plain, 11, &root.join("plain")).unwrap();
    let cfg = TrainConfig { init: Some(root.join("plain")), steps: 1, warmup_steps: 1, ..small_config(1) };
    let mut notes = Notes(Vec::new());
    train(&cfg, &data, &[], &root.join("run"), &mut notes).unwrap();
    let note = notes.0.iter().find(|n| n.starts_with("init from")).expect("a note on what init kept seeded");
    assert!(note.contains("fpn.coord_conv_branch.0.conv.weight") && note.contains("fpn.conv_branch2.1.running_var"), "{note}");
    assert!(!note.contains("vit.encoder"), "the backbone must come from the file: {note}");

    // A backbone of another shape is an error naming the tensors, not a silent random init.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fpn/hf_plain");
    let bad = TrainConfig { init: Some(fixture), ..cfg };
    let err = train(&bad, &data, &[], &root.join("run-bad"), &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("mis-shaped: `vit.embeddings.cls_token`"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

fn weights_f32(dir: &Path) -> Vec<(String, Vec<f32>)> {
    tensors(dir).into_iter().map(|(k, b)| (k, b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())).collect()
}

#[test]
fn two_cpu_replicas_equal_one_device_at_the_same_global_batch() {
    let root = tmp("ddp");
    let train_set = synthetic(&root.join("data"), 40, 13);
    // The plain ViT: BatchNorm (the convolution branch) normalises each replica's shard with its
    // own statistics, as PyTorch's DDP does without SyncBatchNorm, so only the plain model's step
    // is the same computation split in two. An odd global batch: shards of 5 and 4.
    let one = TrainConfig { conv_branch: false, ..small_config(15) };
    let one = TrainConfig { batch_size: 9, ..one };
    let two = TrainConfig { devices: vec!["cpu:0".into(), "cpu:1".into()], ..one.clone() };
    let a = train(&one, &train_set, &[], &root.join("one"), &mut Quiet).unwrap();
    let b = train(&two, &train_set, &[], &root.join("two"), &mut Quiet).unwrap();
    // The summed shard gradients differ from the one-device gradient only in the order of f32
    // additions (~1e-7 relative); AdamW divides by sqrt(v), so a weight whose gradient is ~0 can
    // move by a fraction of lr either way. Every weight within 20 * lr * steps, nearly all within 1e-5.
    let (ta, tb) = (weights_f32(&a.last_dir), weights_f32(&b.last_dir));
    let (mut total, mut close, mut worst) = (0usize, 0usize, 0f32);
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        for (p, q) in va.iter().zip(vb) {
            let d = (p - q).abs();
            worst = worst.max(d);
            total += 1;
            close += (d <= 1e-5) as usize;
        }
    }
    eprintln!("FPN, two replicas vs one: {close} of {total} weights within 1e-5, worst {worst:e}");
    assert!(worst as f64 <= 20.0 * one.lr * one.steps as f64, "worst weight difference {worst}");
    assert!(close as f64 >= 0.999 * total as f64, "only {close} of {total} weights within 1e-5");
    let _ = std::fs::remove_dir_all(&root);
}
