//! GPU check of the ONNX pipelines (run by `scripts/gpu-check` on a machine with an NVIDIA GPU
//! and `onnxruntime-gpu`): the tiny SDXL and E4S models of `scripts/make_tiny_models.py` on the
//! CUDA execution provider give the CPU's outputs within tolerance, and the tiny UNet loop's
//! throughput on each provider.
//!
//!     gpu_check MODELS_DIR

use mmtt_generators::forge::ForgeInput;
use mmtt_generators::forge::e4s::E4s;
use mmtt_generators::forge::onnx::Device;
use mmtt_generators::forge::sdxl::{Sdxl, SdxlOptions};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: gpu_check MODELS_DIR")?);
    let face = image::RgbImage::from_fn(512, 512, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x + y) / 4) as u8]));
    let mask =
        image::GrayImage::from_fn(512, 512, |x, y| image::Luma([if (160..352).contains(&x) && (180..380).contains(&y) { 255 } else { 0 }]));
    let input = ForgeInput {
        target: &face,
        mask: &mask,
        target_landmarks: None,
        source: None,
        source_landmarks: None,
        target_parts: None,
        source_parts: None,
        seed: 7,
        options: None,
    };
    let opts = |steps| SdxlOptions {
        prompt: "a natural face".into(),
        negative_prompt: "blurry".into(),
        steps,
        guidance: 7.5,
        strength: 0.99,
        scheduler: "euler".into(),
    };
    let mut results = Vec::new();
    for device in [Device::Cpu, Device::Cuda] {
        let t = Instant::now();
        let mut g = Sdxl::load(&models, device, 0)?;
        let load = t.elapsed().as_secs_f64();
        let out = g.run(&input, &opts(8))?; // also the warm-up
        // seconds per denoising step: the difference of a long and a short run
        let mut time = |steps| -> Result<f64, Box<dyn std::error::Error>> {
            let t = Instant::now();
            g.run(&input, &opts(steps))?;
            Ok(t.elapsed().as_secs_f64())
        };
        let (short, long) = (time(10)?, time(60)?);
        let per_step = (long - short) / 50.0;
        println!(
            "{device:?}: sdxl load {load:.2} s, 60-step pipeline {long:.3} s, UNet step (batch 2, 128x128 latents) {:.2} ms = {:.1} steps/s; UNet session RSS {} MB",
            per_step * 1e3,
            1.0 / per_step,
            g.unet_memory_bytes() / (1 << 20)
        );
        if device == Device::Cuda {
            // the GPU memory this process holds (the sessions' weights and arenas)
            if let Ok(o) = std::process::Command::new("nvidia-smi")
                .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
                .output()
            {
                let me = std::process::id().to_string();
                for l in String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.split(',').next().map(str::trim) == Some(me.as_str())) {
                    println!("Cuda: GPU memory held by the SDXL sessions: {} MiB", l.split(',').nth(1).unwrap_or("?").trim());
                }
            }
        }
        let mut e = E4s::load(&models, device, 0)?;
        let t: Vec<f32> = (0..3 * 1024 * 1024).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let s: Vec<f32> = (0..3 * 1024 * 1024).map(|i| ((i * 104_729) % 997) as f32 / 997.0).collect();
        let te = Instant::now();
        let sw = e.swap_aligned(&t, &s)?;
        println!("{device:?}: e4s aligned swap {:.3} s", te.elapsed().as_secs_f64());
        results.push((out.hwc, sw.image, sw.target_labels));
    }
    let d_sdxl = results[0].0.iter().zip(&results[1].0).map(|(a, b)| ((a - b) / 255.0).abs()).fold(0.0f32, f32::max);
    let d_e4s = results[0].1.iter().zip(&results[1].1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let labels = results[0].2.iter().zip(&results[1].2).filter(|(a, b)| a != b).count();
    println!(
        "CUDA vs CPU: sdxl max |diff| {d_sdxl:.2e} (0..1 scale), e4s max |diff| {d_e4s:.2e}, parser labels differing {labels} of {}",
        results[0].2.len()
    );
    let ok = d_sdxl < 2e-3 && d_e4s < 2e-3 && labels * 1000 < results[0].2.len();
    println!("{}", if ok { "GPU CHECK PASSED" } else { "GPU CHECK FAILED" });
    if ok { Ok(()) } else { Err("CUDA outputs differ from CPU beyond tolerance".into()) }
}
