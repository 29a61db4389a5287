//! `mmtt bench talker`: the time of one forward pass (vision encoder, Q-Former, T5 encoder, mask
//! branch) and of generation, on random weights of a preset, with fixed synthetic instructions
//! (no tokenizer needed). Figures only; nothing here asserts a speed.

use super::TalkerError;
use super::config::TalkerConfig;
use super::generate::{self, GenerationConfig};
use super::instructblip::Talker;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchFigures {
    pub preset: String,
    pub batch: usize,
    pub num_beams: usize,
    /// Images explained in the timed rounds.
    pub images: usize,
    /// New tokens generated in the timed rounds (all images).
    pub new_tokens: usize,
    /// Seconds per forward pass of a batch (mean over rounds).
    pub forward_s: f64,
    /// Seconds per generation of a batch (mean over rounds).
    pub generate_s: f64,
    pub tokens_per_s: f64,
    pub images_per_s: f64,
    pub params: usize,
}

/// Runs `rounds` timed rounds (after one warm-up) of `batch` images.
pub fn bench(
    preset: &str,
    batch: usize,
    rounds: usize,
    generation: &GenerationConfig,
    device: &Device,
) -> Result<BenchFigures, TalkerError> {
    generation.validate()?;
    if batch == 0 || rounds == 0 {
        return Err(TalkerError::Input("--batch and --rounds must be at least 1".into()));
    }
    let cfg = TalkerConfig::preset(preset)?;
    let talker = Talker::random(cfg.clone(), 7, device);
    let params = talker.blip.num_params() + talker.mask.as_ref().map_or(0, |m| m.num_params());
    let s = cfg.vision.image_size;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let px: Vec<f32> = (0..batch * 3 * s * s).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    // a 40-token instruction of ordinary ids, ending with T5's </s>
    let instr = |vocab: usize, eos: u32| -> Vec<u32> {
        (0..39).map(|i| (5 + (i * 37) % (vocab.saturating_sub(6).max(1))) as u32).chain(std::iter::once(eos)).collect()
    };
    let qf: Vec<Vec<u32>> = vec![instr(cfg.qformer.vocab_size, 3); batch];
    let t5: Vec<Vec<u32>> = vec![instr(cfg.text.vocab_size, cfg.text.eos_token_id); batch];
    let labels: Vec<Vec<u32>> = vec![vec![5; cfg.mask_branch.as_ref().map_or(21, |m| m.label_tokens)]; batch];
    let blip = &talker.blip;
    let run = |timed: bool| -> (f64, f64, usize) {
        let t0 = Instant::now();
        let pixels = Tensor::<4>::from_data(TensorData::new(px.clone(), [batch, 3, s, s]), device);
        let image = blip.image_embeds(&cfg, pixels);
        if let Some(m) = talker.mask_probs(image.clone(), &labels) {
            // force the computation
            let _ = m.into_data();
        }
        let q = blip.query_outputs(&cfg, image, &qf);
        let (input, mask) = blip.encoder_input(&cfg, q, &t5);
        let encoded = blip.encode(&cfg, input, &mask);
        let _ = encoded.clone().into_data();
        let forward = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let seqs = generate::generate(&blip.language_model, &cfg.text, encoded, &mask, generation);
        let generate = t1.elapsed().as_secs_f64();
        let tokens = if timed { seqs.iter().map(|s| s.len().saturating_sub(1)).sum() } else { 0 };
        (forward, generate, tokens)
    };
    run(false);
    let (mut f, mut g, mut tokens) = (0.0, 0.0, 0);
    for _ in 0..rounds {
        let (a, b, t) = run(true);
        f += a;
        g += b;
        tokens += t;
    }
    let images = batch * rounds;
    Ok(BenchFigures {
        preset: preset.to_string(),
        batch,
        num_beams: generation.num_beams,
        images,
        new_tokens: tokens,
        forward_s: f / rounds as f64,
        generate_s: g / rounds as f64,
        tokens_per_s: tokens as f64 / g.max(1e-9),
        images_per_s: images as f64 / (f + g).max(1e-9),
        params,
    })
}
