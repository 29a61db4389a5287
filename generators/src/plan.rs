//! The MMTT mask rules (spec section 3, paper section 3.1): which parts each forgery mask covers.
//!
//! Rule set [`MASK_RULES_VERSION`] = 1:
//! - **Inpainting, CelebAMask-HQ** (parts annotated by hand): draw `k` uniformly from 1..=11, then
//!   `k` distinct parts uniformly among the facial parts present ([`Part::FACIAL`]); when fewer
//!   than `k` are present, all present ones are taken.
//! - **Inpainting, landmark sources** (FFHQ, photos): with probability 0.2 the mask is the full face
//!   ([`Part::FACE_REGION`]); otherwise the CelebAMask-HQ rule above on the landmark regions.
//! - **Face swap**: the whole face region of the target (no hair, ears, neck or background),
//!   dilated by [`SWAP_DILATION_FRACTION`] of the image size, as E4S dilates its swap mask.
//!
//! Randomness is a ChaCha8 stream seeded from SHA-256 of (plan seed, source key, purpose), and
//! integers are drawn by rejection sampling on raw 64-bit words, so a plan depends only on its
//! inputs and this file, never on a `rand` release: same seed, same plan, always.

use crate::parts::Part;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Version of the rules above, stored with every plan.
pub const MASK_RULES_VERSION: i32 = 1;
/// Probability of a full-face mask for landmark sources.
pub const FULL_FACE_PROBABILITY: f64 = 0.2;
/// Largest number of merged parts.
pub const MAX_PARTS: usize = 11;
/// Swap-mask dilation as a fraction of the image width (8 px at 512).
pub const SWAP_DILATION_FRACTION: f64 = 8.0 / 512.0;

/// Where a source's part regions come from, which decides the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartSource {
    /// Hand-annotated part masks (CelebAMask-HQ).
    Annotated,
    /// Regions derived from dlib landmarks (FFHQ, photos).
    Landmarks,
}

impl PartSource {
    /// The stored name (`sources.part_source`).
    pub fn as_str(self) -> &'static str {
        match self {
            PartSource::Annotated => "annotated",
            PartSource::Landmarks => "landmarks",
        }
    }
}

impl std::str::FromStr for PartSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "annotated" => Ok(PartSource::Annotated),
            "landmarks" => Ok(PartSource::Landmarks),
            other => Err(format!("unknown part source `{other}`: annotated or landmarks")),
        }
    }
}

/// What a mask is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Inpaint,
    Swap,
}

impl Purpose {
    /// The stored name (`mask_plans.purpose`).
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Inpaint => "inpaint",
            Purpose::Swap => "swap",
        }
    }

    /// The same as [`Purpose::as_str`].
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inpaint" => Ok(Purpose::Inpaint),
            "swap" => Ok(Purpose::Swap),
            other => Err(format!("unknown mask purpose `{other}`: inpaint or swap")),
        }
    }
}

/// The shape of a planned mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// `k` merged parts.
    Parts,
    /// The whole face region (inpainting, probability 0.2 on landmark sources).
    FullFace,
    /// The dilated whole face region replaced by a face swap.
    Swap,
}

impl MaskKind {
    /// The stored name (`mask_plans.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::Parts => "parts",
            MaskKind::FullFace => "full_face",
            MaskKind::Swap => "swap",
        }
    }

    /// The same as [`MaskKind::as_str`].
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for MaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parts" => Ok(MaskKind::Parts),
            "full_face" => Ok(MaskKind::FullFace),
            "swap" => Ok(MaskKind::Swap),
            other => Err(format!("unknown mask kind `{other}`: parts, full_face or swap")),
        }
    }
}

/// A planned mask: its kind and the parts it merges (in [`Part::ALL`] order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMask {
    pub kind: MaskKind,
    pub parts: Vec<Part>,
    /// The `k` that was drawn (before capping at the parts present); 0 for full-face and swap.
    pub k_drawn: u8,
}

/// The per-item seed: SHA-256 of the plan seed, the source key and the purpose, first 8 bytes.
pub fn item_seed(plan_seed: u64, source_key: &str, purpose: Purpose) -> u64 {
    let mut h = Sha256::new();
    h.update(b"mmtt-mask-plan-v1\0");
    h.update(plan_seed.to_le_bytes());
    h.update(source_key.as_bytes());
    h.update([0]);
    h.update(purpose.name().as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Uniform integer in `0..n` (n > 0) by rejection sampling: unbiased and stable.
fn uniform_below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    // 2^64 mod n: the values below it are rejected, the rest cover every residue equally often
    let threshold = 0u64.wrapping_sub(n) % n;
    loop {
        let v = rng.next_u64();
        if v >= threshold {
            return v % n;
        }
    }
}

/// `true` with probability `p` (53-bit resolution).
fn bernoulli(rng: &mut ChaCha8Rng, p: f64) -> bool {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    u < p
}

/// Plans the inpainting mask of one source. `available` lists the parts present (any order, may
/// include non-facial parts, which are ignored). Returns `None` when no facial part is present.
pub fn plan_inpaint(source: PartSource, available: &[Part], seed: u64) -> Option<PlannedMask> {
    let mut facial: Vec<Part> = Part::FACIAL.iter().copied().filter(|p| available.contains(p)).collect();
    if facial.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if source == PartSource::Landmarks && bernoulli(&mut rng, FULL_FACE_PROBABILITY) {
        let parts: Vec<Part> = Part::FACE_REGION.iter().copied().filter(|p| available.contains(p)).collect();
        return Some(PlannedMask { kind: MaskKind::FullFace, parts, k_drawn: 0 });
    }
    let k_drawn = 1 + uniform_below(&mut rng, MAX_PARTS as u64) as usize;
    let k = k_drawn.min(facial.len());
    // partial Fisher-Yates: the first k entries are a uniform k-subset
    for i in 0..k {
        let j = i + uniform_below(&mut rng, (facial.len() - i) as u64) as usize;
        facial.swap(i, j);
    }
    let mut parts = facial[..k].to_vec();
    parts.sort();
    Some(PlannedMask { kind: MaskKind::Parts, parts, k_drawn: k_drawn as u8 })
}

/// Plans the face-swap mask of a target: its whole face region (the parts of it present).
pub fn plan_swap(available: &[Part]) -> Option<PlannedMask> {
    let parts: Vec<Part> = Part::FACE_REGION.iter().copied().filter(|p| available.contains(p)).collect();
    (!parts.is_empty()).then_some(PlannedMask { kind: MaskKind::Swap, parts, k_drawn: 0 })
}

/// The distribution of a set of inpainting plans: what `masks stats` and `masks simulate` print.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanStats {
    /// Number of inpainting plans counted.
    pub n: u64,
    /// Plans that are full-face masks.
    pub full_face: u64,
    /// `full_face / n`.
    pub full_face_share: f64,
    /// Number of merged parts -> count, over part masks (not full-face), keys 1..=11.
    pub k_histogram: BTreeMap<u8, u64>,
    /// Part name -> number of plans (of any kind) that cover it.
    pub part_counts: BTreeMap<String, u64>,
    /// Part name -> share of plans that cover it.
    pub part_frequency: BTreeMap<String, f64>,
    /// Number of face-swap plans counted beside them.
    pub swap: u64,
}

impl PlanStats {
    pub fn add(&mut self, m: &PlannedMask) {
        match m.kind {
            MaskKind::Swap => {
                self.swap += 1;
                return;
            }
            MaskKind::FullFace => self.full_face += 1,
            MaskKind::Parts => *self.k_histogram.entry(m.parts.len() as u8).or_default() += 1,
        }
        self.n += 1;
        for p in &m.parts {
            *self.part_counts.entry(p.name().to_string()).or_default() += 1;
        }
    }

    /// Fills the shares from the counts.
    pub fn finish(mut self) -> Self {
        let n = self.n.max(1) as f64;
        self.full_face_share = self.full_face as f64 / n;
        for k in 1..=MAX_PARTS as u8 {
            self.k_histogram.entry(k).or_default();
        }
        self.part_frequency = self.part_counts.iter().map(|(k, v)| (k.clone(), *v as f64 / n)).collect();
        self
    }

    /// Pearson's chi-square statistic of the k histogram against the uniform distribution on 1..=11
    /// (10 degrees of freedom).
    pub fn k_chi_square(&self) -> f64 {
        let total: u64 = self.k_histogram.values().sum();
        let expected = total as f64 / MAX_PARTS as f64;
        (1..=MAX_PARTS as u8)
            .map(|k| {
                let o = *self.k_histogram.get(&k).unwrap_or(&0) as f64;
                (o - expected).powi(2) / expected
            })
            .sum()
    }
}

/// Runs the inpainting rules `n` times with every part present, without images.
pub fn simulate(source: PartSource, n: u64, seed: u64) -> PlanStats {
    let mut stats = PlanStats::default();
    for i in 0..n {
        let s = item_seed(seed, &format!("simulated/{i}"), Purpose::Inpaint);
        if let Some(m) = plan_inpaint(source, &Part::ALL, s) {
            stats.add(&m);
        }
    }
    stats.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan() {
        let a = plan_inpaint(PartSource::Landmarks, &Part::ALL, 42);
        let b = plan_inpaint(PartSource::Landmarks, &Part::ALL, 42);
        assert_eq!(a, b);
        let differs = (0..50).any(|s| plan_inpaint(PartSource::Landmarks, &Part::ALL, s) != a);
        assert!(differs);
    }

    #[test]
    fn caps_k_at_parts_present() {
        let avail = [Part::Nose, Part::Hair];
        for s in 0..200 {
            let m = plan_inpaint(PartSource::Annotated, &avail, s).expect("nose is facial");
            assert_eq!(m.parts, vec![Part::Nose]);
        }
        assert_eq!(plan_inpaint(PartSource::Annotated, &[Part::Hair, Part::Cloth], 1), None);
    }

    #[test]
    fn annotated_sources_never_full_face() {
        let st = simulate(PartSource::Annotated, 2000, 7);
        assert_eq!(st.full_face, 0);
        assert_eq!(st.n, 2000);
    }
}
