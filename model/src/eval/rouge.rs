//! pycocoevalcap 1.2's Rouge: ROUGE-L per image with beta 1.2, where precision and recall are each
//! the maximum over the references (taken separately, as the reference does), averaged over
//! images. The reference splits on single spaces, so an empty caption is one (empty) token:
//! callers pass `[EMPTY]` for it.

pub const BETA: f64 = 1.2;
/// The word id standing for the empty token of an empty caption.
pub const EMPTY: u32 = u32::MAX;

pub fn lcs(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn or_empty(s: &[u32]) -> &[u32] {
    if s.is_empty() { &[EMPTY] } else { s }
}

/// ROUGE-L of one hypothesis against its references.
pub fn score(hyp: &[u32], refs: &[Vec<u32>]) -> f64 {
    let c = or_empty(hyp);
    let (mut pmax, mut rmax) = (0.0f64, 0.0f64);
    for r in refs {
        let t = or_empty(r);
        let l = lcs(t, c) as f64;
        pmax = pmax.max(l / c.len() as f64);
        rmax = rmax.max(l / t.len() as f64);
    }
    if pmax != 0.0 && rmax != 0.0 { ((1.0 + BETA * BETA) * pmax * rmax) / (rmax + BETA * BETA * pmax) } else { 0.0 }
}
