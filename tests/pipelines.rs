//! The multi-graph ONNX pipelines (SDXL inpainting, E4S face swap) on tiny random-weight models
//! that `scripts/make_tiny_models.py` writes with the real names, shapes and dtypes: equal to an
//! independent Python reference (`scripts/onnx_reference.py`, numpy + onnxruntime) within 1e-4,
//! including full multi-step denoising loops; wrong models refused with both signatures listed.

mod common;

use mmtt_generators::forge::onnx::Device;
use mmtt_generators::forge::sdxl::{ClipTokenizer, Sdxl, SdxlOptions};
use mmtt_generators::forge::{ForgeInput, e4s::E4s};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{python, script};

fn tiny_models(dir: &Path, extra: &[&str]) {
    let out = Command::new(python()).arg(script("make_tiny_models.py")).arg(dir).args(extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn write_f32(p: &Path, v: &[f32]) {
    std::fs::write(p, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn face_and_mask(dir: &Path) -> (image::RgbImage, image::GrayImage, PathBuf, PathBuf) {
    let img = image::open(&common::sample_faces()[0]).unwrap().resize_exact(512, 512, image::imageops::FilterType::Triangle).into_rgb8();
    let mask =
        image::GrayImage::from_fn(512, 512, |x, y| image::Luma([if (170..340).contains(&x) && (190..370).contains(&y) { 255 } else { 0 }]));
    let (i, m) = (dir.join("face.png"), dir.join("mask.png"));
    img.save(&i).unwrap();
    mask.save(&m).unwrap();
    (img, mask, i, m)
}

fn max_diff(a: &[f32], b: &[f32], scale: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| ((x - y) / scale).abs()).fold(0.0f32, f32::max)
}

#[test]
fn sdxl_pipeline_equals_the_python_reference_over_full_denoising_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    tiny_models(&models, &[]);
    let (img, mask, img_p, mask_p) = face_and_mask(tmp.path());
    let mut sdxl = Sdxl::load(&models, Device::Cpu, 1).unwrap();
    let cases = [
        (4usize, 0.99f32, 7.5f32, 3u64, "a photo of a natural face", "blurry, cartoon", "euler"),
        (6, 0.6, 5.0, 11, "smooth skin, studio lighting", "", "euler"),
        (3, 1.0, 1.0, 0, "", "low quality", "euler"),
        (5, 0.99, 7.5, 3, "a photo of a natural face", "blurry, cartoon", "dpm++2m"),
        (8, 0.7, 4.0, 9, "retouched skin", "", "dpm++2m"),
    ];
    let mut outputs = Vec::new();
    for (steps, strength, guidance, seed, prompt, negative, scheduler) in cases {
        let opts =
            SdxlOptions { prompt: prompt.into(), negative_prompt: negative.into(), steps, guidance, strength, scheduler: scheduler.into() };
        let input = ForgeInput {
            target: &img,
            mask: &mask,
            target_landmarks: None,
            source: None,
            source_landmarks: None,
            target_parts: None,
            source_parts: None,
            seed,
            options: None,
        };
        let ours = sdxl.run(&input, &opts).unwrap();
        let (out, lat) = (tmp.path().join("py.f32"), tmp.path().join("py-lat.f32"));
        let st = Command::new(python())
            .arg(script("onnx_reference.py"))
            .args([
                "sdxl",
                "--threads",
                "1",
                "--steps",
                &steps.to_string(),
                "--strength",
                &strength.to_string(),
                "--guidance",
                &guidance.to_string(),
            ])
            .args(["--seed", &seed.to_string(), "--prompt", prompt, "--negative-prompt", negative, "--scheduler", scheduler])
            .arg("--models")
            .arg(&models)
            .arg("--image")
            .arg(&img_p)
            .arg("--mask")
            .arg(&mask_p)
            .arg("--out")
            .arg(&out)
            .arg("--out-latents")
            .arg(&lat)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let (py, py_lat) = (read_f32(&out), read_f32(&lat));
        assert_eq!(ours.hwc.len(), 512 * 512 * 3);
        let d_img = max_diff(&ours.hwc, &py, 255.0);
        let d_lat = max_diff(&ours.latents, &py_lat, 1.0);
        println!("sdxl {scheduler} steps {steps} strength {strength} guidance {guidance} seed {seed}: image {d_img:e}, latents {d_lat:e}");
        assert!(d_img <= 1e-4 && d_lat <= 1e-4, "image {d_img}, latents {d_lat}");
        let spread = ours.hwc.iter().fold(f32::INFINITY, |m, v| m.min(*v)) < ours.hwc.iter().fold(0.0f32, |m, v| m.max(*v)) - 10.0;
        assert!(spread, "the output depends on its inputs");
        outputs.push(ours.hwc);
    }
    // prompts, seeds, strengths and schedulers matter
    assert!(max_diff(&outputs[0], &outputs[1], 255.0) > 1e-3);
    assert!(max_diff(&outputs[0], &outputs[3], 255.0) > 1e-3);
    // the tokenizer through the tokenizers crate agrees with the reference BPE on the prompts
    let tk = ClipTokenizer::load(&models.join("sdxl/tokenizer")).unwrap();
    let ids = tk.encode("A photo of a natural, Realistic face!").unwrap();
    assert_eq!(ids.len(), 77);
    assert!(ids[1..].iter().any(|&i| i != ids[76]), "{ids:?}");
}

#[test]
fn sdxl_runs_fp16_unets_and_reads_job_options() {
    let tmp = tempfile::tempdir().unwrap();
    let (m32, m16) = (tmp.path().join("m32"), tmp.path().join("m16"));
    tiny_models(&m32, &[]);
    tiny_models(&m16, &["--fp16-unet"]);
    let (img, mask, ..) = face_and_mask(tmp.path());
    let opts = SdxlOptions {
        prompt: "a face".into(),
        negative_prompt: "".into(),
        steps: 3,
        guidance: 4.0,
        strength: 0.99,
        scheduler: "euler".into(),
    };
    let input = ForgeInput {
        target: &img,
        mask: &mask,
        target_landmarks: None,
        source: None,
        source_landmarks: None,
        target_parts: None,
        source_parts: None,
        seed: 5,
        options: None,
    };
    let a = Sdxl::load(&m32, Device::Cpu, 1).unwrap().run(&input, &opts).unwrap();
    let b = Sdxl::load(&m16, Device::Cpu, 1).unwrap().run(&input, &opts).unwrap();
    let d = max_diff(&a.hwc, &b.hwc, 255.0);
    println!("fp16 UNet vs fp32: {d:e}");
    assert!(d < 5e-2 && d > 0.0, "fp16 runs through conversions, close to fp32: {d}");
    // and exactly as the reference converts (inputs to float16, the output back)
    let (_, _, img_p, mask_p) = face_and_mask(tmp.path());
    let (out, lat) = (tmp.path().join("py.f32"), tmp.path().join("py-lat.f32"));
    let st = Command::new(python())
        .arg(script("onnx_reference.py"))
        .args([
            "sdxl",
            "--threads",
            "1",
            "--steps",
            "3",
            "--strength",
            "0.99",
            "--guidance",
            "4",
            "--seed",
            "5",
            "--prompt",
            "a face",
            "--negative-prompt",
            "",
        ])
        .arg("--models")
        .arg(&m16)
        .arg("--image")
        .arg(&img_p)
        .arg("--mask")
        .arg(&mask_p)
        .arg("--out")
        .arg(&out)
        .arg("--out-latents")
        .arg(&lat)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let d16 = max_diff(&b.hwc, &read_f32(&out), 255.0);
    println!("fp16 UNet, mmtt vs python: {d16:e}");
    assert!(d16 <= 1e-4, "{d16}");
    // job parameters override the manifest's defaults; bad ones are refused by name
    let s = Sdxl::load(&m32, Device::Cpu, 1).unwrap();
    let o = s.options.with(Some(&serde_json::json!({"steps": 12, "prompt": "x"}))).unwrap();
    assert_eq!((o.steps, o.prompt.as_str(), o.guidance), (12, "x", s.options.guidance));
    let err = s.options.with(Some(&serde_json::json!({"strength": 1.5}))).unwrap_err().to_string();
    assert!(err.contains("strength"), "{err}");
    use mmtt_generators::forge::Generator;
    let prov = s.provenance();
    assert!(prov["unet_session_rss_bytes"].as_u64().is_some(), "the UNet session's memory is reported: {prov}");
    assert!(prov["graphs"]["unet"]["sha256"].as_str().is_some_and(|h| h.len() == 64));
}

#[test]
fn wrong_models_are_refused_with_expected_and_found_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    tiny_models(&models, &[]);
    // a UNet that is really a VAE decoder: wrong inputs
    std::fs::copy(models.join("sdxl/vae_decoder/model.onnx"), models.join("sdxl/unet/model.onnx")).unwrap();
    let err = Sdxl::load(&models, Device::Cpu, 1).err().expect("refused").to_string();
    println!("{err}");
    assert!(err.contains("unet") && err.contains("expected inputs") && err.contains("found inputs"), "{err}");
    assert!(err.contains("encoder_hidden_states") && err.contains("latent_sample"), "lists both signatures: {err}");
    // an E4S parser with the wrong channel count: its generator used as the parser
    std::fs::copy(models.join("e4s/swap_generator.onnx"), models.join("e4s/face_parser.onnx")).unwrap();
    let err = E4s::load(&models, Device::Cpu, 1).err().expect("refused").to_string();
    assert!(err.contains("parser") && err.contains("logits") && err.contains("swapped"), "{err}");
    // a missing folder says where the export goes
    let err = Sdxl::load(&tmp.path().join("none"), Device::Cpu, 1).err().unwrap().to_string();
    assert!(err.contains("sdxl") && err.contains("EXPORT.md"), "{err}");
}

#[test]
fn e4s_graphs_equal_the_python_reference_and_the_swap_has_its_own_region() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    tiny_models(&models, &[]);
    let mut e4s = E4s::load(&models, Device::Cpu, 1).unwrap();
    // two aligned faces at 1024 (the sample faces, upscaled)
    let faces = common::sample_faces();
    let load = |p: &Path| -> Vec<f32> {
        let img = image::open(p).unwrap().resize_exact(1024, 1024, image::imageops::FilterType::Triangle).into_rgb8();
        let mut v = vec![0.0f32; 3 * 1024 * 1024];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                v[c * 1024 * 1024 + i] = px.0[c] as f32 / 255.0;
            }
        }
        v
    };
    let (t, s) = (load(&faces[0]), load(&faces[1 % faces.len()]));
    let ours = e4s.swap_aligned(&t, &s).unwrap();
    let (tp, sp, out, labels) = (tmp.path().join("t.f32"), tmp.path().join("s.f32"), tmp.path().join("o.f32"), tmp.path().join("l.u8"));
    write_f32(&tp, &t);
    write_f32(&sp, &s);
    let st = Command::new(python())
        .arg(script("onnx_reference.py"))
        .args(["e4s", "--threads", "1"])
        .arg("--models")
        .arg(&models)
        .arg("--target")
        .arg(&tp)
        .arg("--source")
        .arg(&sp)
        .arg("--out")
        .arg(&out)
        .arg("--out-labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let d = max_diff(&ours.image, &read_f32(&out), 1.0);
    let py_labels = std::fs::read(&labels).unwrap();
    let lab_diff = ours.target_labels.iter().chain(&ours.source_labels).zip(&py_labels).filter(|(a, b)| a != b).count();
    println!("e4s: image {d:e}, {lab_diff} of {} labels differ", py_labels.len());
    assert!(d <= 1e-4, "{d}");
    assert!(lab_diff <= py_labels.len() / 100_000, "argmax ties aside, the parsings agree: {lab_diff}");
    let region = ours.region.iter().filter(|&&r| r == 1).count();
    assert!(region > 1000 && region < ours.region.len(), "a face region, not everything: {region}");
}
