//! The generator registry: the one place that knows every forgery method by name, what it needs
//! and how to build it. The job queue (`mmtt forge`, workers), `mmtt generate` and `mmtt bench
//! forge` all ask here instead of matching method names themselves.
//!
//! A [`Method`] knows its stored name ([`Method::as_str`], `forge_items.method`,
//! `forgeries.method`), its [`Family`] (the paper's kinds of forgery, `forge_items.family`), the
//! mask [`Purpose`] it forges with, whether its target needs 68 landmarks, how it uses a donor face
//! ([`DonorUse`]), whether it reads part masks, and how to load it ([`Method::load`]).

use crate::forge::classic_swap::ClassicSwap;
use crate::forge::e4s::E4s;
use crate::forge::onnx::{BUILTIN_MANIFESTS, OnnxGenerator};
use crate::forge::part_swap::PartSwap;
use crate::forge::patch_inpaint::PatchInpaint;
use crate::forge::runtime::Device;
use crate::forge::sdxl::Sdxl;
use crate::forge::{ForgeError, Generator};
use crate::plan::Purpose;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A forgery method mmtt can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    ClassicSwap,
    E4s,
    PatchInpaint,
    PartSwap,
    Mat,
    Lama,
    Sdxl,
}

/// The paper's kinds of forgery (and `inpaint` for the other inpainting methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Swap,
    Inpaint,
    Transformer,
    Diffusion,
}

/// How a method uses a donor face (always one of the target's split, with landmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DonorUse {
    /// No donor.
    None,
    /// A donor is required (the swaps; `part-swap` transplants its parts).
    Required,
    /// A donor is used where there is one (`patch-inpaint`, for regions with no counterpart left).
    Optional,
}

/// What kind of implementation a method has (what it needs on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// Classical code, no weights.
    Builtin,
    /// One ONNX graph described by a shipped manifest (`generators/manifests/NAME.json`).
    OnnxManifest,
    /// A multi-graph ONNX pipeline in a folder of the models directory (see `generators/EXPORT.md`).
    OnnxPipeline,
}

/// The paper's method counts: face swap (E4S) 44,343; transformer inpainting (MAT) 37,440;
/// diffusion inpainting (SDXL) 46,520. `mmtt forge --mix paper` takes one method per family, in
/// this order.
pub const PAPER_MIX: [(Family, u64); 3] = [(Family::Swap, 44_343), (Family::Transformer, 37_440), (Family::Diffusion, 46_520)];

/// `name` is not a method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method `{0}`: known methods are classic-swap, e4s, patch-inpaint, part-swap, mat, lama, sdxl")]
pub struct UnknownMethod(pub String);

impl Method {
    /// Every method, in the order the CLI lists them.
    pub const ALL: [Method; 7] =
        [Method::ClassicSwap, Method::E4s, Method::PatchInpaint, Method::PartSwap, Method::Mat, Method::Lama, Method::Sdxl];

    /// The stored and command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ClassicSwap => "classic-swap",
            Method::E4s => "e4s",
            Method::PatchInpaint => "patch-inpaint",
            Method::PartSwap => "part-swap",
            Method::Mat => "mat",
            Method::Lama => "lama",
            Method::Sdxl => "sdxl",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Method::ClassicSwap | Method::E4s => Family::Swap,
            Method::PatchInpaint | Method::PartSwap | Method::Lama => Family::Inpaint,
            Method::Mat => Family::Transformer,
            Method::Sdxl => Family::Diffusion,
        }
    }

    /// The mask plan a method forges with: the swap mask for swaps, the inpainting one otherwise.
    pub fn purpose(self) -> Purpose {
        self.family().purpose()
    }

    /// The target needs its 68 landmarks: a source without them is not a target of this method.
    pub fn needs_landmarks(self) -> bool {
        matches!(self, Method::ClassicSwap | Method::E4s | Method::PartSwap)
    }

    pub fn donor(self) -> DonorUse {
        match self {
            Method::ClassicSwap | Method::E4s | Method::PartSwap => DonorUse::Required,
            Method::PatchInpaint => DonorUse::Optional,
            Method::Mat | Method::Lama | Method::Sdxl => DonorUse::None,
        }
    }

    /// A donor must have landmarks (every method that takes a donor aligns it to the target).
    pub fn donor_needs_landmarks(self) -> bool {
        self.donor() != DonorUse::None
    }

    /// Face-aware: the generator reads the target's (and donor's) part masks.
    pub fn uses_parts(self) -> bool {
        matches!(self, Method::PatchInpaint | Method::PartSwap)
    }

    pub fn implementation(self) -> Implementation {
        match self {
            Method::ClassicSwap | Method::PatchInpaint | Method::PartSwap => Implementation::Builtin,
            Method::Mat | Method::Lama => Implementation::OnnxManifest,
            Method::E4s | Method::Sdxl => Implementation::OnnxPipeline,
        }
    }

    /// What the method loads under the models folder (a file or a pipeline's folder); `None` for
    /// the built-ins, which are always available.
    pub fn model_path(self) -> Option<&'static str> {
        match self {
            Method::ClassicSwap | Method::PatchInpaint | Method::PartSwap => None,
            Method::Mat => Some("mat.onnx"),
            Method::Lama => Some("lama.onnx"),
            Method::Sdxl => Some("sdxl"),
            Method::E4s => Some("e4s"),
        }
    }

    /// The shipped manifest of a single-graph ONNX method.
    pub fn manifest_text(self) -> Option<&'static str> {
        BUILTIN_MANIFESTS.iter().find(|(n, _)| *n == self.as_str()).map(|(_, t)| *t)
    }

    /// Whether this method may stand for `family` in the paper's mix: a swap for the swap family,
    /// any inpainting method for the inpainting ones.
    pub fn can_stand_for(self, family: Family) -> bool {
        (family == Family::Swap) == (self.family() == Family::Swap)
    }

    /// Builds the generator (ONNX methods load their models from `models_dir` on `device` with
    /// `threads` intra-op threads; the built-ins ignore them).
    pub fn load(self, models_dir: &Path, device: Device, threads: usize) -> Result<Box<dyn Generator>, ForgeError> {
        Ok(match self {
            Method::PatchInpaint => Box::new(PatchInpaint::default()),
            Method::ClassicSwap => Box::new(ClassicSwap::default()),
            Method::PartSwap => Box::new(PartSwap::default()),
            Method::Mat | Method::Lama => Box::new(OnnxGenerator::load_builtin(self.as_str(), models_dir, device, threads)?),
            Method::Sdxl => Box::new(Sdxl::load(models_dir, device, threads)?),
            Method::E4s => Box::new(E4s::load(models_dir, device, threads)?),
        })
    }
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Swap => "swap",
            Family::Inpaint => "inpaint",
            Family::Transformer => "transformer",
            Family::Diffusion => "diffusion",
        }
    }

    /// The mask plan the family forges with.
    pub fn purpose(self) -> Purpose {
        if self == Family::Swap { Purpose::Swap } else { Purpose::Inpaint }
    }
}

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| UnknownMethod(s.to_string()))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Family::Swap, Family::Inpaint, Family::Transformer, Family::Diffusion]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown family `{s}`: known families are swap, inpaint, transformer, diffusion"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), serde_json::json!(m.as_str()));
        }
        let e = "dalle".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("unknown method `dalle`") && e.contains("part-swap"), "{e}");
    }

    #[test]
    fn donors_and_landmarks() {
        assert_eq!(Method::PatchInpaint.donor(), DonorUse::Optional);
        assert!(Method::PatchInpaint.donor_needs_landmarks() && !Method::PatchInpaint.needs_landmarks());
        assert!(!Method::Mat.donor_needs_landmarks());
        assert!(Method::E4s.can_stand_for(Family::Swap) && !Method::Mat.can_stand_for(Family::Swap));
        assert!(Method::PatchInpaint.can_stand_for(Family::Diffusion));
        assert_eq!(Method::ClassicSwap.purpose(), Purpose::Swap);
        assert_eq!(Method::Sdxl.purpose(), Purpose::Inpaint);
        for m in Method::ALL {
            assert_eq!(m.manifest_text().is_some(), m.implementation() == Implementation::OnnxManifest, "{m}");
        }
    }
}
