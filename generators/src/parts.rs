//! Face part names: CelebAMask-HQ's 18 parts, and the 11 facial parts that masks are drawn from.
//!
//! Landmark-derived regions (FFHQ, photos) use the same names as CelebAMask-HQ so that statistics
//! of both kinds of sources compare directly. `l_` and `r_` are the subject's own side: the
//! subject's left eye appears on the image's right.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One CelebAMask-HQ part, in the dataset's own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Skin,
    Nose,
    EyeG,
    LEye,
    REye,
    LBrow,
    RBrow,
    LEar,
    REar,
    Mouth,
    ULip,
    LLip,
    Hair,
    Hat,
    EarR,
    NeckL,
    Neck,
    Cloth,
}

impl Part {
    /// All 18 parts in CelebAMask-HQ's order (the order of its annotation file names).
    pub const ALL: [Part; 18] = [
        Part::Skin,
        Part::Nose,
        Part::EyeG,
        Part::LEye,
        Part::REye,
        Part::LBrow,
        Part::RBrow,
        Part::LEar,
        Part::REar,
        Part::Mouth,
        Part::ULip,
        Part::LLip,
        Part::Hair,
        Part::Hat,
        Part::EarR,
        Part::NeckL,
        Part::Neck,
        Part::Cloth,
    ];

    /// The 11 facial parts that inpainting masks merge (k in 1..=11 of these). Glasses, hair, hat,
    /// earrings, necklace, neck and cloth are not facial and never planned.
    pub const FACIAL: [Part; 11] = [
        Part::Skin,
        Part::Nose,
        Part::LEye,
        Part::REye,
        Part::LBrow,
        Part::RBrow,
        Part::LEar,
        Part::REar,
        Part::Mouth,
        Part::ULip,
        Part::LLip,
    ];

    /// The parts that make up the face region replaced by a face swap and by a full-face mask
    /// (the facial parts without the ears).
    pub const FACE_REGION: [Part; 9] =
        [Part::Skin, Part::Nose, Part::LEye, Part::REye, Part::LBrow, Part::RBrow, Part::Mouth, Part::ULip, Part::LLip];

    /// The dataset's file-name spelling (`l_eye`, `u_lip`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Part::Skin => "skin",
            Part::Nose => "nose",
            Part::EyeG => "eye_g",
            Part::LEye => "l_eye",
            Part::REye => "r_eye",
            Part::LBrow => "l_brow",
            Part::RBrow => "r_brow",
            Part::LEar => "l_ear",
            Part::REar => "r_ear",
            Part::Mouth => "mouth",
            Part::ULip => "u_lip",
            Part::LLip => "l_lip",
            Part::Hair => "hair",
            Part::Hat => "hat",
            Part::EarR => "ear_r",
            Part::NeckL => "neck_l",
            Part::Neck => "neck",
            Part::Cloth => "cloth",
        }
    }

    pub fn is_facial(self) -> bool {
        Part::FACIAL.contains(&self)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown part name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown face part `{0}`: expected one of skin, nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip, l_lip, hair, hat, ear_r, neck_l, neck, cloth"
)]
pub struct UnknownPart(pub String);

impl FromStr for Part {
    type Err = UnknownPart;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Part::ALL.iter().copied().find(|p| p.name() == s).ok_or_else(|| UnknownPart(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Part::ALL {
            assert_eq!(p.name().parse::<Part>(), Ok(p));
        }
        assert!("eyes".parse::<Part>().is_err());
        assert_eq!(Part::FACIAL.iter().filter(|p| p.is_facial()).count(), 11);
    }
}
