//! Greedy and beam search over the T5 decoder, computed as `transformers` 5's `generate` does
//! for an encoder-decoder model, so that the same weights give the same tokens:
//!
//! - logits processors in transformers' order: the repetition penalty (on raw logits in greedy
//!   search, on log-softmax scores in beam search, as the release relies on; every token already
//!   in the sequence, the decoder start token included), then the minimum length (EOS banned
//!   while the sequence, start token included, is shorter than `min_length`);
//! - beam search as the vectorised `_beam_search`: 2 x beams candidates per step, finished
//!   hypotheses scored by sum log-prob / generated_length^length_penalty, `early_stopping=False`'s
//!   heuristic, every candidate finished at `max_length` = 1 + `max_new_tokens`;
//! - the returned sequence is the best one, with its leading decoder start token, up to and
//!   including EOS when it ended there.

use super::config::T5Config;
use super::t5::T5;
use burn::tensor::Tensor;

/// How to generate; the defaults of [`GenerationConfig::release`] are the release's evaluation
/// settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    /// Minimum total decoder length (the start token counts), as transformers' `min_length`.
    pub min_length: usize,
    pub repetition_penalty: f32,
    pub length_penalty: f32,
}

impl GenerationConfig {
    /// 5 beams, at most 100 new tokens, min_length 5, repetition penalty 1.5, length penalty 1.0.
    pub fn release() -> Self {
        GenerationConfig { num_beams: 5, max_new_tokens: 100, min_length: 5, repetition_penalty: 1.5, length_penalty: 1.0 }
    }
    /// Greedy decoding without penalties.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerationConfig { num_beams: 1, max_new_tokens, min_length: 0, repetition_penalty: 1.0, length_penalty: 1.0 }
    }
    pub fn validate(&self) -> Result<(), super::TalkerError> {
        let bad = |m: &str| Err(super::TalkerError::Input(m.to_string()));
        if self.num_beams == 0 {
            return bad("--num-beams must be at least 1");
        }
        if self.max_new_tokens == 0 {
            return bad("--max-new-tokens must be at least 1");
        }
        if self.repetition_penalty <= 0.0 || !self.repetition_penalty.is_finite() {
            return bad("--repetition-penalty must be a positive number (1.0 = none)");
        }
        if !self.length_penalty.is_finite() {
            return bad("the length penalty must be a finite number");
        }
        Ok(())
    }
}

/// The repetition penalty and the minimum length, applied to one row of scores.
fn process(scores: &mut [f32], seq: &[u32], g: &GenerationConfig, eos: u32) {
    if g.repetition_penalty != 1.0 {
        let mut seen = seq.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = if *s < 0.0 { *s * g.repetition_penalty } else { *s / g.repetition_penalty };
            }
        }
    }
    if seq.len() < g.min_length
        && let Some(s) = scores.get_mut(eos as usize)
    {
        *s = f32::NEG_INFINITY;
    }
}

fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|x| ((*x - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    for x in row.iter_mut() {
        *x = (*x as f64 - lse) as f32;
    }
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    let cmp = |a: &usize, b: &usize| values[*b].partial_cmp(&values[*a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

fn rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [n, v] = logits.dims();
    let flat: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap_or_default();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Generates for each encoded input (rows of `encoded` [B, T, d] with 0/1 `mask`).
pub fn generate(t5: &T5, cfg: &T5Config, encoded: Tensor<3>, mask: &[Vec<u8>], g: &GenerationConfig) -> Vec<Vec<u32>> {
    if g.num_beams <= 1 { greedy(t5, cfg, encoded, mask, g) } else { beam_search(t5, cfg, encoded, mask, g) }
}

/// The first-step logits [B, V] (for parity checks).
pub fn first_logits(t5: &T5, cfg: &T5Config, encoded: Tensor<3>, mask: &[Vec<u8>]) -> Tensor<2> {
    let b = mask.len();
    let mut cache = t5.start_decoding(cfg, encoded, mask);
    t5.decode_step(cfg, &vec![cfg.decoder_start_token_id; b], &mut cache)
}

fn greedy(t5: &T5, cfg: &T5Config, encoded: Tensor<3>, mask: &[Vec<u8>], g: &GenerationConfig) -> Vec<Vec<u32>> {
    let b = mask.len();
    let eos = cfg.eos_token_id;
    let max_length = 1 + g.max_new_tokens;
    let mut seqs: Vec<Vec<u32>> = vec![vec![cfg.decoder_start_token_id]; b];
    let mut done = vec![false; b];
    let mut cache = t5.start_decoding(cfg, encoded, mask);
    while seqs[0].len() < max_length && !done.iter().all(|d| *d) {
        let last: Vec<u32> = seqs.iter().map(|s| *s.last().unwrap_or(&cfg.decoder_start_token_id)).collect();
        let logits = rows(t5.decode_step(cfg, &last, &mut cache));
        for (i, mut row) in logits.into_iter().enumerate() {
            if done[i] {
                seqs[i].push(cfg.pad_token_id);
                continue;
            }
            process(&mut row, &seqs[i], g, eos);
            let next = top_k(&row, 1)[0] as u32;
            seqs[i].push(next);
            if next == eos {
                done[i] = true;
            }
        }
    }
    seqs.into_iter().map(|s| trim(s, eos)).collect()
}

/// Cuts a returned sequence after its first EOS (past the start token).
fn trim(mut s: Vec<u32>, eos: u32) -> Vec<u32> {
    if let Some(p) = s.iter().skip(1).position(|t| *t == eos) {
        s.truncate(p + 2);
    }
    s
}

const PENALTY: f32 = -1.0e9;

struct BeamState {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    finished: Vec<Vec<u32>>,
    finished_scores: Vec<f32>,
    finished_done: Vec<bool>,
    improvable: bool,
}

fn beam_search(t5: &T5, cfg: &T5Config, encoded: Tensor<3>, mask: &[Vec<u8>], g: &GenerationConfig) -> Vec<Vec<u32>> {
    let b = mask.len();
    let nb = g.num_beams;
    let eos = cfg.eos_token_id;
    let max_length = 1 + g.max_new_tokens;
    let prompt_len = 1usize;
    let keep = 2 * nb;
    // rows = batch x beams
    let [_, t, d] = encoded.dims();
    let rows_idx: Vec<i64> = (0..b).flat_map(|i| std::iter::repeat_n(i as i64, nb)).collect();
    let device = encoded.device();
    let idx = Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(rows_idx, [b * nb]), &device);
    let encoded = encoded.select(0, idx).reshape([b * nb, t, d]);
    let beam_mask: Vec<Vec<u8>> = mask.iter().flat_map(|m| std::iter::repeat_n(m.clone(), nb)).collect();
    let mut cache = t5.start_decoding(cfg, encoded, &beam_mask);

    let mut states: Vec<BeamState> = (0..b)
        .map(|_| BeamState {
            running: vec![vec![cfg.decoder_start_token_id]; nb],
            running_scores: (0..nb).map(|j| if j == 0 { 0.0 } else { PENALTY }).collect(),
            finished: vec![Vec::new(); nb],
            finished_scores: vec![PENALTY; nb],
            finished_done: vec![false; nb],
            improvable: true,
        })
        .collect();
    let mut cur_len = 1usize;
    loop {
        let last: Vec<u32> = states.iter().flat_map(|s| s.running.iter().map(|r| *r.last().unwrap_or(&0))).collect();
        let logits = rows(t5.decode_step(cfg, &last, &mut cache));
        let mut parents: Vec<usize> = Vec::with_capacity(b * nb);
        let mut all_hit = true;
        for (bi, st) in states.iter_mut().enumerate() {
            let v = logits[0].len();
            let mut acc = Vec::with_capacity(nb * v);
            for j in 0..nb {
                let mut row = logits[bi * nb + j].clone();
                log_softmax(&mut row);
                process(&mut row, &st.running[j], g, eos);
                acc.extend(row.into_iter().map(|x| x + st.running_scores[j]));
            }
            let top = top_k(&acc, keep);
            let cands: Vec<(usize, u32, f32, bool)> = top
                .iter()
                .map(|&i| {
                    let (beam, tok) = (i / v, (i % v) as u32);
                    let hit = tok == eos || cur_len + 1 >= max_length;
                    (beam, tok, acc[i], hit)
                })
                .collect();
            all_hit &= cands.iter().all(|c| c.3);
            // next running beams: the best candidates that did not stop
            let running_vals: Vec<f32> = cands.iter().map(|c| c.2 + if c.3 { PENALTY } else { 0.0 }).collect();
            let next = top_k(&running_vals, nb);
            let new_running: Vec<Vec<u32>> = next
                .iter()
                .map(|&c| {
                    let mut s = st.running[cands[c].0].clone();
                    s.push(cands[c].1);
                    s
                })
                .collect();
            let new_scores: Vec<f32> = next.iter().map(|&c| running_vals[c]).collect();
            parents.extend(next.iter().map(|&c| bi * nb + cands[c].0));
            // finished hypotheses: merge the stopped top-`nb` candidates
            let norm = ((cur_len + 1 - prompt_len) as f32).powf(g.length_penalty);
            let mut merged_scores = st.finished_scores.clone();
            let mut merged_seqs = st.finished.clone();
            let mut merged_done = st.finished_done.clone();
            for (c, cand) in cands.iter().enumerate() {
                let just_finished = cand.3 && c < nb;
                let mut s = cand.2 / norm;
                if !st.improvable {
                    s += PENALTY;
                }
                if !just_finished {
                    s += PENALTY;
                }
                let mut seq = st.running[cand.0].clone();
                seq.push(cand.1);
                merged_scores.push(s);
                merged_seqs.push(seq);
                merged_done.push(just_finished);
            }
            let best = top_k(&merged_scores, nb);
            st.finished = best.iter().map(|&i| merged_seqs[i].clone()).collect();
            st.finished_scores = best.iter().map(|&i| merged_scores[i]).collect();
            st.finished_done = best.iter().map(|&i| merged_done[i]).collect();
            st.running = new_running;
            st.running_scores = new_scores;
        }
        cache.reorder(&parents);
        cur_len += 1;
        for st in states.iter_mut() {
            let best_possible = st.running_scores[0] / ((cur_len - prompt_len) as f32).powf(g.length_penalty);
            let min_finished = st.finished_scores.iter().copied().fold(f32::INFINITY, f32::min);
            let any_better = st.finished_done.iter().any(|done| best_possible > if *done { min_finished } else { PENALTY });
            st.improvable &= any_better;
        }
        if !states.iter().any(|s| s.improvable) || all_hit {
            break;
        }
    }
    states.into_iter().map(|s| trim(s.finished.into_iter().next().unwrap_or_default(), eos)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_scales_by_sign_and_min_length_bans_eos() {
        let g = GenerationConfig { num_beams: 1, max_new_tokens: 5, min_length: 3, repetition_penalty: 2.0, length_penalty: 1.0 };
        let mut s = vec![1.0, -1.0, 4.0, 3.0];
        process(&mut s, &[0, 1], &g, 3);
        assert_eq!(s, vec![0.5, -2.0, 4.0, f32::NEG_INFINITY]);
        let mut s = vec![1.0, -1.0, 4.0, 3.0];
        process(&mut s, &[0, 2, 2], &g, 3);
        assert_eq!(s, vec![0.5, -1.0, 2.0, 3.0]);
    }

    #[test]
    fn top_k_is_sorted_and_stable() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, -1.0, 0.3], 3), vec![1, 2, 4]);
        assert_eq!(trim(vec![0, 5, 1, 1, 1], 1), vec![0, 5, 1]);
        assert_eq!(trim(vec![0, 5, 6], 1), vec![0, 5, 6]);
    }
}
