//! `mmtt bench forge`: throughput of the generators, printed as figures (never asserted in tests);
//! `mmtt bench fpn`: training images/s and peak memory of the region prompter's presets on CPU;
//! `mmtt bench talker`: ForgeryTalker's forward and generation time, tokens/s and images/s;
//! `mmtt bench talker-train`: stage-2 training images/s and peak memory, with and without cached
//! vision features.
//!
//! ONNX: the `mat`- and `lama`-shaped models through mmtt (pre-processing, inference,
//! post-processing, rounding) against the same models through Python onnxruntime with the same
//! pipeline (`scripts/onnx_reference.py bench`) and the same intra-op threads, in one run.
//! Built-ins: `patch-inpaint` and `classic-swap` on the Debian sample faces.

use anyhow::{Context, Result, anyhow, bail};
use image::{GrayImage, RgbImage};
use mmtt_generators::forge::ForgeInput;
use mmtt_generators::forge::runtime::Device;
use mmtt_generators::registry::{Implementation, Method};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The project's Python: `.venv/bin/python` when present, else `python3`.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.is_file() { venv } else { PathBuf::from("python3") }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

fn bench_input() -> (RgbImage, GrayImage) {
    let mut s = 0x1234_5678u64;
    let img = RgbImage::from_fn(512, 512, |_, _| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        image::Rgb([(s >> 33) as u8, (s >> 41) as u8, (s >> 49) as u8])
    });
    let mask = GrayImage::from_fn(512, 512, |x, y| image::Luma([if (120..380).contains(&x) && (150..350).contains(&y) { 255 } else { 0 }]));
    (img, mask)
}

pub fn forge(models: Option<PathBuf>, n: usize, threads: usize) -> Result<()> {
    let n = n.max(1);
    let tmp = std::env::temp_dir().join(format!("mmtt-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp)?;
    let models = match models {
        Some(m) => m,
        None => {
            let st = std::process::Command::new(python())
                .arg(script("make_tiny_models.py"))
                .arg(&tmp)
                .status()
                .context("running scripts/make_tiny_models.py (run scripts/setup.sh first)")?;
            if !st.success() {
                bail!("scripts/make_tiny_models.py failed (the Python `onnx` package comes with scripts/setup.sh)");
            }
            tmp.clone()
        }
    };
    let (img, mask) = bench_input();
    let mut rows = Vec::new();
    for method in Method::ALL.into_iter().filter(|m| m.implementation() == Implementation::OnnxManifest) {
        let (name, text) = (method.as_str(), method.manifest_text().unwrap_or_default());
        let mut g = method.load(&models, Device::Cpu, threads)?;
        let input = ForgeInput {
            target: &img,
            mask: &mask,
            target_landmarks: None,
            source: None,
            source_landmarks: None,
            target_parts: None,
            source_parts: None,
            seed: 0,
            options: None,
        };
        g.generate(&input)?; // warm-up
        let t = Instant::now();
        for i in 0..n {
            let inp = ForgeInput { seed: i as u64, ..ForgeInput { ..input } };
            std::hint::black_box(g.generate(&inp)?);
        }
        let ours = n as f64 / t.elapsed().as_secs_f64();
        let manifest = tmp.join(format!("{name}.json"));
        std::fs::write(&manifest, text)?;
        let out = std::process::Command::new(python())
            .arg(script("onnx_reference.py"))
            .args(["bench", "--n", &n.to_string(), "--threads", &threads.to_string(), "--manifest"])
            .arg(&manifest)
            .arg("--model")
            .arg(models.join(format!("{name}.onnx")))
            .output()?;
        if !out.status.success() {
            bail!("python reference benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let theirs = v["images_per_s"].as_f64().ok_or_else(|| anyhow!("bad python output"))?;
        println!(
            "{name:<14} mmtt {ours:8.2} images/s   python onnxruntime {theirs:8.2} images/s   ratio {:.2} ({threads} threads, {n} images)",
            ours / theirs
        );
        rows.push(serde_json::json!({"method": name, "mmtt_images_per_s": ours, "python_images_per_s": theirs, "ratio": ours / theirs, "threads": threads}));
    }
    // the built-in generators on real faces
    let faces: Vec<PathBuf> = crate::devtools::demo::SAMPLE_FACES.iter().map(|(p, _)| PathBuf::from(p)).filter(|p| p.is_file()).collect();
    if faces.len() == 2 {
        let finder = mmtt_generators::detect::FaceFinder::load()?;
        let mut aligned = Vec::new();
        for p in &faces {
            let photo = image::open(p)?.into_rgb8();
            let f = finder.faces(&photo).into_iter().next().ok_or_else(|| anyhow!("no face in {}", p.display()))?;
            let t = mmtt_generators::align::AlignTransform::ffhq(&f.landmarks, 512);
            aligned.push((t.warp(&photo), t.landmarks_to_output(&f.landmarks)));
        }
        let parts = aligned[0].1.part_masks(512, 512);
        let inpaint_mask = mmtt_generators::landmarks::merge_parts(
            &parts,
            &[mmtt_generators::parts::Part::Nose, mmtt_generators::parts::Part::LEye],
            512,
            512,
            0.0,
        );
        let swap_mask = mmtt_generators::landmarks::merge_parts(&parts, &mmtt_generators::parts::Part::FACE_REGION, 512, 512, 8.0);
        let reps = n.min(5);
        for (method, mask) in [(Method::PatchInpaint, &inpaint_mask), (Method::ClassicSwap, &swap_mask)] {
            let mut g = method.load(&models, Device::Cpu, threads)?;
            let method = method.as_str();
            let input = ForgeInput {
                target: &aligned[0].0,
                mask,
                target_landmarks: Some(&aligned[0].1),
                source: Some(&aligned[1].0),
                source_landmarks: Some(&aligned[1].1),
                target_parts: None,
                source_parts: None,
                seed: 1,
                options: None,
            };
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(g.generate(&input)?);
            }
            let ips = reps as f64 / t.elapsed().as_secs_f64();
            println!("{method:<14} {ips:8.2} images/s (one thread, 512x512, {reps} images)");
            rows.push(serde_json::json!({"method": method, "images_per_s": ips}));
        }
    }
    println!("{}", serde_json::to_string(&rows)?);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// `mmtt bench captions`: `mmtt eval captions` against pycocoevalcap 1.2 on the same files, each a
/// fresh process: BLEU + ROUGE-L + CIDEr (best of three runs), then all metrics with METEOR
/// (pycocoevalcap's PTBTokenizer, Bleu, Rouge, Cider and the Java Meteor 1.5 against ours, both
/// loading their data; best of `meteor_runs`, after one run of ours that makes sure the
/// paraphrase cache exists), and where our time goes.
pub fn captions(n: usize, refs: Option<PathBuf>, preds: Option<PathBuf>, meteor_runs: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let (refs, preds) = match (refs, preds) {
        (Some(r), Some(p)) => (r, p),
        (None, None) => {
            let st = std::process::Command::new(python())
                .arg(script("captions_reference.py"))
                .args(["gen", &n.to_string(), "1"])
                .arg(&dir)
                .status()?;
            if !st.success() {
                bail!("scripts/captions_reference.py gen failed (run scripts/setup.sh for .venv)");
            }
            (dir.join("refs.json"), dir.join("preds.json"))
        }
        _ => bail!("give both --refs and --preds, or neither"),
    };
    // (seconds, scores, our breakdown when asked for)
    let time = |cmd: &mut std::process::Command| -> Result<(f64, serde_json::Value, serde_json::Value)> {
        let t = Instant::now();
        let out = cmd.output()?;
        let s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("scores JSON")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let timing =
            stderr.lines().find_map(|l| l.strip_prefix("MMTT_TIMING ")).and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
        Ok((s, v, timing))
    };
    let exe = std::env::current_exe()?;
    let ours = |set: &str| {
        let mut c = std::process::Command::new(&exe);
        c.args(["eval", "captions", "--metrics", set, "--refs"]).arg(&refs).arg("--preds").arg(&preds).env("MMTT_TIMING", "1");
        c
    };
    // best of `runs` fresh processes each, the reference and ours alternating
    let pair = |set: &str, runs: usize| -> Result<(f64, f64, serde_json::Value, serde_json::Value, serde_json::Value)> {
        let (mut best_ref, mut best_ours) = (f64::MAX, f64::MAX);
        let (mut want, mut got, mut phases) = (serde_json::Value::Null, serde_json::Value::Null, serde_json::Value::Null);
        for _ in 0..runs.max(1) {
            let (s, v, _) = time(
                std::process::Command::new(python()).arg(script("captions_reference.py")).arg("score").arg(&refs).arg(&preds).arg(set),
            )?;
            best_ref = best_ref.min(s);
            want = v;
            let (s, v, p) = time(&mut ours(set))?;
            if s < best_ours {
                best_ours = s;
                phases = p;
            }
            got = v;
        }
        Ok((best_ref, best_ours, want, got, phases))
    };
    let (ref_ng, ours_ng, want, got, phases_ng) = pair("ngram", 3)?;
    let mut worst = 0.0f64;
    for k in ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"] {
        worst = worst.max((want[k].as_f64().unwrap_or(f64::NAN) - got[k].as_f64().unwrap_or(f64::NAN)).abs());
    }
    // the first run builds the paraphrase cache when there is none (once per table)
    let (first, _, first_phases) = time(&mut ours("all"))?;
    let (ref_all, ours_all, want_all, got_all, phases_all) = pair("all", meteor_runs)?;
    let mut worst_all = 0.0f64;
    for k in ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"] {
        worst_all = worst_all.max((want_all[k].as_f64().unwrap_or(f64::NAN) - got_all[k].as_f64().unwrap_or(f64::NAN)).abs());
    }
    let print_phases = |p: &serde_json::Value| {
        for ph in p["phases"].as_array().into_iter().flatten() {
            println!("    {:<70} {:7.3} s", ph[0].as_str().unwrap_or("?"), ph[1].as_f64().unwrap_or(f64::NAN));
        }
        if let Some(t) = p["total"].as_f64() {
            println!("    {:<70} {t:7.3} s (the rest: process start, output)", "total inside the process");
        }
    };
    let built =
        first_phases["phases"].as_array().into_iter().flatten().any(|ph| ph[0].as_str().is_some_and(|n| n.contains("cache built now")));
    println!("captions              {}", want.get("tokenized").and_then(|t| t["preds"].as_object()).map(|o| o.len()).unwrap_or(0));
    println!("BLEU + ROUGE-L + CIDEr (PTBTokenizer + Bleu(4) + Rouge + Cider; fresh processes, best of 3)");
    println!("  pycocoevalcap 1.2   {ref_ng:.3} s");
    println!("  mmtt eval captions  {ours_ng:.3} s (--metrics ngram)");
    println!("  speed-up            {:.1} x", ref_ng / ours_ng);
    println!("  largest difference  {worst:.2e}");
    print_phases(&phases_ng);
    println!(
        "All metrics with METEOR (PTBTokenizer + Bleu(4) + Meteor 1.5 + Rouge + Cider, incl. loading Meteor's data; fresh processes, best of {meteor_runs})"
    );
    println!("  pycocoevalcap 1.2   {ref_all:.3} s");
    println!("  mmtt eval captions  {ours_all:.3} s (--metrics all)");
    println!("  speed-up            {:.1} x", ref_all / ours_all);
    println!("  largest difference  {worst_all:.2e} (METEOR {})", got_all["METEOR"]);
    if built {
        println!("  first run           {first:.3} s (built the paraphrase cache: once per table)");
    }
    print_phases(&phases_all);
    println!(
        "{}",
        serde_json::json!({"captions_ngram": {"reference_s": ref_ng, "mmtt_s": ours_ng, "speedup": ref_ng / ours_ng},
            "captions_all": {"reference_s": ref_all, "mmtt_s": ours_all, "speedup": ref_all / ours_all, "first_run_s": first, "cache_built_on_first_run": built}})
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("mmtt-bench-captions-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// `mmtt bench masks`: `n` pairs of 512x512 masks (ground truth and a shifted prediction) written
/// to a temporary folder, then `mmtt eval masks` over them: seconds, pairs/s and the peak memory of
/// the process (bounded by the threads, not by `n`).
pub fn masks(n: usize) -> Result<()> {
    use rayon::prelude::*;
    let dir = std::env::temp_dir().join(format!("mmtt-bench-masks-{}", std::process::id()));
    let (gt, pred) = (dir.join("gt"), dir.join("pred"));
    std::fs::create_dir_all(&gt)?;
    std::fs::create_dir_all(&pred)?;
    let t = Instant::now();
    (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
        let (cx, cy, r) = (150 + (i * 37 % 200) as i64, 150 + (i * 91 % 200) as i64, 40 + (i % 60) as i64);
        let circle = |dx: i64| {
            GrayImage::from_fn(512, 512, |x, y| {
                image::Luma([if (x as i64 - cx - dx).pow(2) + (y as i64 - cy).pow(2) < r * r { 255 } else { 0 }])
            })
        };
        circle(0).save(gt.join(format!("{i:06}.png")))?;
        circle(5 + (i % 7) as i64).save(pred.join(format!("{i:06}.png")))?;
        Ok(())
    })?;
    let written = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = mmtt_model::eval::masks::evaluate(&gt, &pred, 127)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| st.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .unwrap_or_default();
    println!("mask pairs            {} (512x512, written in {written:.1} s)", s.n);
    println!("mmtt eval masks       {secs:.2} s, {:.0} pairs/s on {} threads", s.n as f64 / secs, rayon::current_num_threads());
    println!("scores                mIoU {:.4} cIoU {:.4} precision {:.4} recall {:.4}", s.miou, s.ciou, s.precision, s.recall);
    println!("peak memory           {peak} kB (VmHWM of the whole process)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in kB.
pub fn peak_kb() -> Option<u64> {
    let st = std::fs::read_to_string("/proc/self/status").ok()?;
    st.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// One preset's training throughput (`mmtt bench fpn`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FpnBench {
    pub preset: String,
    pub conv_branch: bool,
    pub image_size: usize,
    pub batch_size: usize,
    /// Steps timed (after the warm-up steps).
    pub steps: u64,
    pub warmup_steps: u64,
    pub seconds: f64,
    /// Images per second over the timed steps (the trainer's own figure is beside it).
    pub images_per_s: f64,
    pub trainer_images_per_s: f64,
    /// VmHWM of the process that trained (one process per preset), kB.
    pub peak_kb: u64,
    pub device: String,
    pub threads: usize,
}

/// `mmtt bench fpn`: each preset trained for a few steps in its own process (so each peak memory
/// is its own), on synthetic images at the model's size; a table, or JSON.
pub fn fpn(presets: &[String], steps: Option<u64>, batch: usize, json: bool) -> Result<Vec<FpnBench>> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for p in presets {
        mmtt_model::fpn::FpnConfig::preset(p)?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "fpn", "--only", p, "--batch", &batch.to_string()]);
        if let Some(s) = steps {
            cmd.args(["--steps", &s.to_string()]);
        }
        if !json {
            eprintln!("training {p} for a few steps (batch {batch}) ...");
        }
        let out = cmd.output().context("running the benchmark's child process")?;
        if !out.status.success() {
            bail!("bench fpn {p} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let row: FpnBench = serde_json::from_str(text.lines().last().unwrap_or_default())
            .with_context(|| format!("bench fpn {p}: unreadable child output: {text}"))?;
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "FPN training on {} (batch {batch}, {} threads)",
            rows.first().map(|r| r.device.as_str()).unwrap_or("cpu"),
            rows.first().map(|r| r.threads).unwrap_or(0)
        );
        println!("{:<10} {:>6} {:>6} {:>12} {:>14} {:>12}", "preset", "size", "steps", "images/s", "trainer img/s", "peak MB");
        for r in &rows {
            println!(
                "{:<10} {:>6} {:>6} {:>12.2} {:>14.2} {:>12.1}",
                r.preset,
                r.image_size,
                r.steps,
                r.images_per_s,
                r.trainer_images_per_s,
                r.peak_kb as f64 / 1024.0
            );
        }
    }
    Ok(rows)
}

/// The child of [`fpn`]: trains `preset` on `batch * 4` synthetic images and prints one JSON line.
pub fn fpn_child(preset: &str, steps: Option<u64>, batch: usize) -> Result<()> {
    use mmtt_model::fpn::{self, Control, FpnConfig, Sample, TrainConfig};
    let model = FpnConfig::preset(preset)?;
    let steps = steps.unwrap_or(if preset == "tiny" { 40 } else { 3 }).max(2);
    let warmup = if steps > 10 { 5 } else { 1 };
    let tmp = std::env::temp_dir().join(format!("mmtt-bench-fpn-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp)?;
    let mut rng = mmtt_generators::forge::SplitMix64(7);
    let mut samples = Vec::new();
    for i in 0..(batch * 4).max(8) {
        let s = model.image_size as u32;
        let img = RgbImage::from_fn(s, s, |_, _| {
            let v = rng.next_u64();
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        let path = tmp.join(format!("{i:03}.png"));
        img.save(&path)?;
        let mut labels = [false; 21];
        for (j, l) in labels.iter_mut().enumerate() {
            *l = (i + j) % 5 == 0;
        }
        samples.push(Sample { id: format!("s{i}"), image: path, labels });
    }
    let mut cfg = TrainConfig::tiny();
    cfg.preset = preset.to_string();
    cfg.steps = steps;
    cfg.batch_size = batch;
    cfg.warmup_steps = 1;
    cfg.checkpoint_every = steps;
    cfg.eval_every = steps + 1;
    cfg.device = "cpu".into();
    struct Timer {
        warmup: u64,
        start: Option<Instant>,
        end: Option<Instant>,
        last_rate: f64,
    }
    impl fpn::Progress for Timer {
        fn step(&mut self, r: &fpn::StepReport) -> Control {
            if r.step == self.warmup {
                self.start = Some(Instant::now());
            }
            self.end = Some(Instant::now());
            self.last_rate = r.images_per_s;
            Control::Continue
        }
        fn validated(&mut self, _: &fpn::ValReport) {}
        fn checkpoint(&mut self, _: u64, _: &Path) {}
    }
    let mut t = Timer { warmup, start: None, end: None, last_rate: 0.0 };
    let run = tmp.join("run");
    let r = fpn::train(&cfg, &samples, &[], &run, &mut t);
    let _ = std::fs::remove_dir_all(&tmp);
    r?;
    let seconds = match (t.start, t.end) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => bail!("the trainer reported no steps"),
    };
    let timed = steps - warmup;
    let row = FpnBench {
        preset: preset.to_string(),
        conv_branch: cfg.conv_branch,
        image_size: model.image_size,
        batch_size: batch,
        steps: timed,
        warmup_steps: warmup,
        seconds,
        images_per_s: (timed * batch as u64) as f64 / seconds.max(1e-9),
        trainer_images_per_s: t.last_rate,
        peak_kb: peak_kb().unwrap_or(0),
        device: "cpu".into(),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}

/// Settings of `mmtt bench talker`.
#[derive(Debug, Clone)]
pub struct TalkerBenchArgs {
    pub preset: String,
    pub batch: usize,
    pub rounds: usize,
    /// Beams and new tokens; the release's when `None`.
    pub num_beams: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub device: String,
}

/// `mmtt bench talker`: ForgeryTalker's forward pass and generation on a preset with random
/// weights (`mmtt_model::talker::bench`), printed as a table or JSON, with the peak memory.
pub fn talker(a: &TalkerBenchArgs, json: bool) -> Result<serde_json::Value> {
    use mmtt_model::talker::{self, GenerationConfig};
    if !talker::PRESETS.contains(&a.preset.as_str()) {
        bail!("--preset {}: unknown: use one of {}", a.preset, talker::PRESETS.join(", "));
    }
    if a.batch == 0 || a.rounds == 0 {
        bail!("--batch and --rounds must be at least 1");
    }
    let release = GenerationConfig::release();
    let gen_cfg = GenerationConfig {
        num_beams: a.num_beams.unwrap_or(release.num_beams),
        max_new_tokens: a.max_new_tokens.unwrap_or(release.max_new_tokens),
        ..release
    };
    crate::explain::check_generation(&gen_cfg, crate::explain::GenerationLimits::CLI, |f| format!("--{}", f.replace('_', "-")))
        .map_err(|(_, m)| anyhow!(m))?;
    let device = mmtt_model::fpn::parse_device(&a.device).map_err(|e| anyhow!("--device: {e}"))?;
    if !json {
        eprintln!(
            "ForgeryTalker {} with random weights on {}: batch {}, {} rounds, {} beams, at most {} new tokens ...",
            a.preset, a.device, a.batch, a.rounds, gen_cfg.num_beams, gen_cfg.max_new_tokens
        );
    }
    let f = talker::bench(&a.preset, a.batch, a.rounds, &gen_cfg, &device).with_context(|| format!("bench talker {}", a.preset))?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let peak_mb = peak_kb().map(|k| k as f64 / 1024.0);
    let v = serde_json::json!({
        "preset": f.preset,
        "device": a.device,
        "threads": threads,
        "batch": f.batch,
        "rounds": a.rounds,
        "num_beams": f.num_beams,
        "max_new_tokens": gen_cfg.max_new_tokens,
        "images": f.images,
        "new_tokens": f.new_tokens,
        "forward_s": f.forward_s,
        "generate_s": f.generate_s,
        "tokens_per_s": f.tokens_per_s,
        "images_per_s": f.images_per_s,
        "params": f.params,
        "peak_mb": peak_mb,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("ForgeryTalker generation, preset {} on {} ({threads} threads)", f.preset, a.device);
        println!("{:<22} {:>14}", "parameters", group_digits(f.params));
        println!("{:<22} {:>14}", "batch x rounds", format!("{} x {}", f.batch, a.rounds));
        println!("{:<22} {:>14}", "beams", f.num_beams);
        println!("{:<22} {:>14}", "images", f.images);
        println!("{:<22} {:>14}", "new tokens", f.new_tokens);
        println!("{:<22} {:>14.3}", "forward pass (s)", f.forward_s);
        println!("{:<22} {:>14.3}", "generation (s)", f.generate_s);
        println!("{:<22} {:>14.1}", "tokens/s", f.tokens_per_s);
        println!("{:<22} {:>14.2}", "images/s", f.images_per_s);
        if let Some(p) = peak_mb {
            println!("{:<22} {:>14.1}", "peak memory (MB)", p);
        }
    }
    Ok(v)
}

/// Settings of `mmtt bench talker-train`.
#[derive(Debug, Clone)]
pub struct TalkerTrainArgs {
    pub preset: String,
    pub batch: usize,
    /// Steps per case; 20 for tiny, 2 for the others when `None`.
    pub steps: Option<u64>,
    pub devices: Vec<String>,
}

impl TalkerTrainArgs {
    fn steps(&self) -> u64 {
        self.steps.unwrap_or(if self.preset == "tiny" { 20 } else { 2 })
    }
}

/// One case of `mmtt bench talker-train`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TalkerTrainBench {
    pub preset: String,
    pub cached: bool,
    pub batch_size: usize,
    pub steps: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// VmHWM of the process that trained (one process per case), kB.
    pub peak_kb: u64,
    pub devices: Vec<String>,
    pub threads: usize,
}

fn check_talker_train(a: &TalkerTrainArgs) -> Result<()> {
    if !mmtt_model::talker::PRESETS.contains(&a.preset.as_str()) {
        bail!("--preset {}: unknown: use one of {}", a.preset, mmtt_model::talker::PRESETS.join(", "));
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    mmtt_model::parallel::parse_devices(&a.devices).map_err(|e| anyhow!("--devices: {e}"))?;
    Ok(())
}

/// `mmtt bench talker-train`: the preset trained for a few steps without, then with cached vision
/// features, each in its own process (so each peak memory is its own); a table, or JSON.
pub fn talker_train(a: &TalkerTrainArgs, json: bool) -> Result<Vec<TalkerTrainBench>> {
    check_talker_train(a)?;
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for case in ["uncached", "cached"] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "talker-train", "--only", case, "--preset", &a.preset, "--batch", &a.batch.to_string()]).args([
            "--steps",
            &a.steps().to_string(),
            "--devices",
            &a.devices.join(","),
        ]);
        if !json {
            eprintln!("training {} for {} steps of batch {} ({case} vision features) ...", a.preset, a.steps(), a.batch);
        }
        let out = cmd.output().context("running the benchmark's child process")?;
        if !out.status.success() {
            bail!("bench talker-train ({case}) failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let row: TalkerTrainBench = serde_json::from_str(text.lines().last().unwrap_or_default())
            .with_context(|| format!("bench talker-train ({case}): unreadable child output: {text}"))?;
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "ForgeryTalker stage-2 training, preset {} on {} (batch {}, {} threads, random weights, synthetic images)",
            a.preset,
            a.devices.join(","),
            a.batch,
            rows.first().map(|r| r.threads).unwrap_or(0)
        );
        println!("{:<16} {:>6} {:>10} {:>12} {:>10}", "vision features", "steps", "seconds", "images/s", "peak MB");
        for r in &rows {
            println!(
                "{:<16} {:>6} {:>10.2} {:>12.2} {:>10.1}",
                if r.cached { "cached" } else { "computed" },
                r.steps,
                r.seconds,
                r.images_per_s,
                r.peak_kb as f64 / 1024.0
            );
        }
        if let [u, c] = rows.as_slice()
            && u.images_per_s > 0.0
        {
            println!("cached / computed: {:.2}x images/s", c.images_per_s / u.images_per_s);
        }
    }
    Ok(rows)
}

/// The child of [`talker_train`]: one case (`cached` or `uncached`), one JSON line.
pub fn talker_train_child(a: &TalkerTrainArgs, case: &str) -> Result<()> {
    check_talker_train(a)?;
    let cached = match case {
        "cached" => true,
        "uncached" => false,
        other => bail!("--only {other}: give cached or uncached"),
    };
    let b = mmtt_model::talker::train::bench_train(&a.preset, a.batch, a.steps(), cached, &a.devices)
        .with_context(|| format!("bench talker-train {} ({case})", a.preset))?;
    let row = TalkerTrainBench {
        preset: a.preset.clone(),
        cached: b.cached,
        batch_size: a.batch,
        steps: b.steps,
        seconds: b.seconds,
        images_per_s: b.images_per_s,
        peak_kb: peak_kb().unwrap_or(0),
        devices: a.devices.clone(),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}

/// 1234567 as "1,234,567".
fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
