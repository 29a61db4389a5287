//! Dataset splits: every source gets train/validation/test once, when it is stored.
//!
//! The split is a pure function of the project's split seed and the source's split key (the
//! SHA-256 of its stored image): `u = first 8 bytes of SHA-256("mmtt-split-v1", seed, key) / 2^64`,
//! then `u` is compared with the cumulative ratios. Nothing ever changes it afterwards, so swap
//! pairing and exports can keep every face inside its own split, and new sources never move old ones.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Split::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown split `{s}`: use train, validation or test"))
    }
}

/// Split ratios `A:B:C` (train:validation:test), positive integers. Valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRatios([u32; 3]);

impl Default for SplitRatios {
    fn default() -> Self {
        SplitRatios([8, 1, 1])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid split ratios `{0}`: write three non-negative integers like 8:1:1 (train:validation:test), not all zero")]
pub struct BadRatios(pub String);

impl FromStr for SplitRatios {
    type Err = BadRatios;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(BadRatios(s.to_string()));
        }
        let mut r = [0u32; 3];
        for (i, p) in parts.iter().enumerate() {
            r[i] = p.trim().parse().map_err(|_| BadRatios(s.to_string()))?;
        }
        SplitRatios::new(r).ok_or_else(|| BadRatios(s.to_string()))
    }
}

impl SplitRatios {
    pub fn new(r: [u32; 3]) -> Option<Self> {
        (r.iter().map(|&v| v as u64).sum::<u64>() > 0 && r.iter().all(|&v| v <= 1_000_000)).then_some(SplitRatios(r))
    }
    pub fn values(&self) -> [u32; 3] {
        self.0
    }
}

impl fmt::Display for SplitRatios {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0[0], self.0[1], self.0[2])
    }
}

/// The split of the source with `key` under `seed` and `ratios`.
pub fn assign(seed: u64, ratios: SplitRatios, key: &str) -> Split {
    let mut h = Sha256::new();
    h.update(b"mmtt-split-v1\0");
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let v = u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"));
    let u = (v >> 11) as f64 / (1u64 << 53) as f64;
    let [a, b, c] = ratios.0.map(|x| x as f64);
    let total = a + b + c;
    if u < a / total {
        Split::Train
    } else if u < (a + b) / total {
        Split::Validation
    } else {
        Split::Test
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_parse() {
        assert_eq!("8:1:1".parse::<SplitRatios>().unwrap().values(), [8, 1, 1]);
        assert!("8:1".parse::<SplitRatios>().is_err());
        assert!("0:0:0".parse::<SplitRatios>().is_err());
        assert!("a:1:1".parse::<SplitRatios>().is_err());
    }

    #[test]
    fn assignment_is_pure_and_close_to_ratios() {
        let r = SplitRatios::default();
        assert_eq!(assign(1, r, "abc"), assign(1, r, "abc"));
        let n = 100_000;
        let mut counts = [0u32; 3];
        for i in 0..n {
            counts[assign(7, r, &format!("key{i}")) as usize] += 1;
        }
        let shares = counts.map(|c| c as f64 / n as f64);
        assert!((shares[0] - 0.8).abs() < 0.005, "{shares:?}");
        assert!((shares[1] - 0.1).abs() < 0.005, "{shares:?}");
        assert!((shares[2] - 0.1).abs() < 0.005, "{shares:?}");
        // a different seed moves sources between splits
        let moved = (0..1000).filter(|i| assign(7, r, &format!("key{i}")) != assign(8, r, &format!("key{i}"))).count();
        assert!(moved > 100);
    }
}
