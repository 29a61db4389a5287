//! pycocoevalcap 1.2's Cider (CIDEr-D): tf-idf n-gram vectors (n = 1..4) with document
//! frequencies from the evaluated references, `log(max(1, df))`, the corpus size `log(images)`,
//! clipped similarity `min(hyp, ref) * ref`, a Gaussian length penalty (sigma 6) on the
//! difference of the sentences' *bigram* counts (the reference's quirk), averaged over n and
//! references, times 10.
//!
//! Vectors are sorted lists of (packed n-gram, weight), compared by merging.

use super::bleu::{N, Sorted, order};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

pub const SIGMA: f64 = 6.0;

struct Vector {
    vec: Vec<(u128, f64)>,
    norm: [f64; N],
    length: f64,
}

fn to_vec(c: &Sorted, df: &HashMap<u128, f64>, ref_len: f64) -> Vector {
    let mut v = Vector { vec: Vec::with_capacity(c.len()), norm: [0.0; N], length: 0.0 };
    for (g, tf) in c {
        // `df` holds log(max(1, document frequency)) already; unseen n-grams have log 1 = 0
        let d = df.get(g).copied().unwrap_or(0.0);
        let n = order(*g) - 1;
        let x = *tf as f64 * (ref_len - d);
        v.vec.push((*g, x));
        v.norm[n] += x * x;
        if n == 1 {
            v.length += *tf as f64;
        }
    }
    for x in &mut v.norm {
        *x = x.sqrt();
    }
    v
}

fn sim(h: &Vector, r: &Vector) -> [f64; N] {
    let delta = h.length - r.length;
    let mut val = [0.0; N];
    let (mut i, mut j) = (0, 0);
    while i < h.vec.len() && j < r.vec.len() {
        let (gh, x) = h.vec[i];
        let (gr, y) = r.vec[j];
        if gh == gr {
            val[order(gh) - 1] += x.min(y) * y;
            i += 1;
            j += 1;
        } else if gh < gr {
            i += 1;
        } else {
            j += 1;
        }
    }
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    for ((v, hn), rn) in val.iter_mut().zip(h.norm).zip(r.norm) {
        if hn != 0.0 && rn != 0.0 {
            *v /= hn * rn;
        }
        *v *= penalty;
    }
    val
}

/// Corpus CIDEr-D and the per-image scores; `items` are the sorted n-gram counts of
/// (hypothesis, references).
pub fn score(items: &[(Sorted, Vec<Sorted>)]) -> (f64, Vec<f64>) {
    if items.is_empty() {
        return (0.0, vec![]);
    }
    let refs: Vec<&Vec<Sorted>> = items.iter().map(|(_, rs)| rs).collect();
    // document frequency: in how many images' references an n-gram occurs
    let df: HashMap<u128, f64> = refs
        .par_iter()
        .fold(HashMap::default, |mut m: HashMap<u128, f64>, rs| {
            let mut keys: Vec<u128> = rs.iter().flat_map(|r| r.iter().map(|(k, _)| *k)).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                *m.entry(k).or_insert(0.0) += 1.0;
            }
            m
        })
        .reduce(HashMap::default, |mut a, b| {
            for (k, v) in b {
                *a.entry(k).or_insert(0.0) += v;
            }
            a
        });
    let df: HashMap<u128, f64> = df.into_iter().map(|(k, v)| (k, v.max(1.0).ln())).collect();
    let ref_len = (items.len() as f64).ln();
    let scores: Vec<f64> = items
        .par_iter()
        .map(|(h, rs)| {
            let hv = to_vec(h, &df, ref_len);
            let mut acc = [0.0; N];
            for r in rs {
                let s = sim(&hv, &to_vec(r, &df, ref_len));
                for n in 0..N {
                    acc[n] += s[n];
                }
            }
            let mean = acc.iter().sum::<f64>() / N as f64;
            mean / rs.len() as f64 * 10.0
        })
        .collect();
    (scores.iter().sum::<f64>() / scores.len() as f64, scores)
}
