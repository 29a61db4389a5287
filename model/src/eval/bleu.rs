//! pycocoevalcap 1.2's Bleu(4): corpus BLEU over all images, the 'closest' reference length
//! (ties to the shorter), clipped n-gram counts against the maximum count in any reference, and
//! its smoothing of zero counts: `(correct + 1e-15) / (guess + 1e-9)` per order.
//!
//! Sentences are word ids (see [`super::captions`]); an n-gram is packed into one `u128`.

use rustc_hash::FxHashMap as HashMap;

pub const N: usize = 4;
const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// An n-gram of word ids (n = 1..=4, ids below 2^31) as one key.
pub fn key(words: &[u32]) -> u128 {
    let mut k = (words.len() as u128) << 124;
    for (i, w) in words.iter().enumerate() {
        k |= (*w as u128) << (31 * i);
    }
    k
}

pub fn order(key: u128) -> usize {
    (key >> 124) as usize
}

/// n-gram counts of a sentence, n = 1..=4.
pub fn ngrams(words: &[u32]) -> HashMap<u128, u32> {
    let mut m = HashMap::with_capacity_and_hasher(words.len() * N, Default::default());
    for k in 1..=N {
        if words.len() < k {
            break;
        }
        for w in words.windows(k) {
            *m.entry(key(w)).or_insert(0) += 1;
        }
    }
    m
}

/// Per-image BLEU statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comps {
    pub testlen: usize,
    pub reflen: usize,
    pub guess: [usize; N],
    pub correct: [usize; N],
}

/// n-gram counts sorted by key (shared by BLEU and CIDEr).
pub type Sorted = Vec<(u128, u32)>;

/// With every word id below 2^15, n-grams also fit a `u64` (order in the top bits, then the
/// later words first), which sorts faster and in the same order as [`key`].
pub const NARROW_IDS: u32 = 1 << 15;

fn key64(words: &[u32]) -> u64 {
    let mut k = (words.len() as u64) << 60;
    for (i, w) in words.iter().enumerate() {
        k |= (*w as u64) << (15 * i);
    }
    k
}

fn widen(k: u64) -> u128 {
    let mut out = ((k >> 60) as u128) << 124;
    for i in 0..N {
        out |= (((k >> (15 * i)) & 0x7fff) as u128) << (31 * i);
    }
    out
}

/// Sorted n-gram counts; `narrow` when every id is below [`NARROW_IDS`].
pub fn sorted_counts_with(words: &[u32], narrow: bool) -> Sorted {
    let keys: Vec<u128> = if narrow {
        let mut k64: Vec<u64> = Vec::with_capacity(words.len() * N);
        for k in 1..=N.min(words.len()) {
            k64.extend(words.windows(k).map(key64));
        }
        k64.sort_unstable();
        k64.into_iter().map(widen).collect()
    } else {
        let mut keys: Vec<u128> = Vec::with_capacity(words.len() * N);
        for k in 1..=N.min(words.len()) {
            keys.extend(words.windows(k).map(key));
        }
        keys.sort_unstable();
        keys
    };
    run_lengths(keys)
}

pub fn sorted_counts(words: &[u32]) -> Sorted {
    sorted_counts_with(words, words.iter().all(|w| *w < NARROW_IDS))
}

fn run_lengths(keys: Vec<u128>) -> Sorted {
    let mut out: Sorted = Vec::with_capacity(keys.len());
    for k in keys {
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => out.push((k, 1)),
        }
    }
    out
}

/// The statistics of one hypothesis (`hyp` words, `hc` their counts) against its references.
pub fn comps(hyp_len: usize, hc: &Sorted, ref_lens: &[usize], rcs: &[Sorted]) -> Comps {
    // the largest count of each hypothesis n-gram in any reference, by merging sorted lists
    let mut maxcounts = vec![0u32; hc.len()];
    for r in rcs {
        let (mut i, mut j) = (0, 0);
        while i < hc.len() && j < r.len() {
            match hc[i].0.cmp(&r[j].0) {
                std::cmp::Ordering::Equal => {
                    maxcounts[i] = maxcounts[i].max(r[j].1);
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
            }
        }
    }
    let testlen = hyp_len;
    let reflen = ref_lens.iter().map(|&l| ((l as i64 - testlen as i64).abs(), l)).min().map(|(_, l)| l).unwrap_or(0);
    let mut c = Comps { testlen, reflen, ..Default::default() };
    for k in 0..N {
        c.guess[k] = (testlen + 1).saturating_sub(k + 1);
    }
    for ((g, n), m) in hc.iter().zip(&maxcounts) {
        c.correct[order(*g) - 1] += (*n).min(*m) as usize;
    }
    c
}

/// Corpus BLEU-1..4 from per-image statistics, and the per-image scores.
pub fn score(all: &[Comps]) -> ([f64; N], Vec<[f64; N]>) {
    let mut per_image = Vec::with_capacity(all.len());
    let (mut testlen, mut reflen) = (0usize, 0usize);
    let (mut guess, mut correct) = ([0usize; N], [0usize; N]);
    for c in all {
        testlen += c.testlen;
        reflen += c.reflen;
        let mut b = 1.0f64;
        let mut s = [0.0; N];
        for k in 0..N {
            guess[k] += c.guess[k];
            correct[k] += c.correct[k];
            b *= (c.correct[k] as f64 + TINY) / (c.guess[k] as f64 + SMALL);
            s[k] = b.powf(1.0 / (k as f64 + 1.0));
        }
        let ratio = (c.testlen as f64 + TINY) / (c.reflen as f64 + SMALL);
        if ratio < 1.0 {
            for v in &mut s {
                *v *= (1.0 - 1.0 / ratio).exp();
            }
        }
        per_image.push(s);
    }
    let mut out = [0.0; N];
    let mut b = 1.0f64;
    for k in 0..N {
        b *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        out[k] = b.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
    if ratio < 1.0 {
        for v in &mut out {
            *v *= (1.0 - 1.0 / ratio).exp();
        }
    }
    (out, per_image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_keys_sort_like_wide_ones() {
        let words = [3u32, 17, 3, 32767, 0, 17, 3, 17];
        assert_eq!(sorted_counts_with(&words, true), sorted_counts_with(&words, false));
        let g = &words[1..4];
        assert_eq!(widen(key64(g)), key(g));
    }
}
