//! What each importable dataset looks like on disk and how one of its items becomes stored faces.
//!
//! Processing is pure CPU work on one input (no database), run in parallel by [`super::run`].
//! Every dataset needs dlib: FFHQ and photos derive their part regions from the 68 landmarks;
//! CelebAMask-HQ keeps its annotated part masks and gets landmarks only for face swaps
//! ([`LandmarkSearch`]; a face dlib cannot find is still imported, without landmarks).
//! [`aligned_face`] is the one way landmarks are found on an aligned 512 face, at import and in
//! `mmtt landmarks backfill` ([`super::landmarks`]), so both give the same points.

use super::decode::{DecodeLimits, read_image};
use image::{GrayImage, RgbImage, imageops};
use mmtt_generators::FACE_SIZE;
use mmtt_generators::align::AlignTransform;
use mmtt_generators::detect::{FaceBox, FaceFinder};
use mmtt_generators::geometry::{Pt, binarize, count_set};
use mmtt_generators::landmarks::{Landmarks68, REGION_RULES_VERSION};
use mmtt_generators::mask::{encode_mask_png, encode_rgb_png};
use mmtt_generators::parts::Part;
use mmtt_generators::plan::PartSource;
use std::ops::Add;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// The datasets `mmtt import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataset {
    /// CelebA-HQ-img/{k}.jpg with CelebAMask-HQ-mask-anno/{k/2000}/{k:05}_{part}.png (part masks
    /// from the annotations; landmarks, for face swaps, detected on the aligned face)
    #[value(name = "celebamask-hq")]
    CelebAMaskHq,
    /// FFHQ aligned faces (any folder of images, searched recursively)
    Ffhq,
    /// Any photos: faces detected, aligned FFHQ-style
    Photos,
}

impl Dataset {
    /// The stored and command-line name (`sources.dataset`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::CelebAMaskHq => "celebamask-hq",
            Dataset::Ffhq => "ffhq",
            Dataset::Photos => "photos",
        }
    }
    /// The same as [`Dataset::as_str`].
    pub fn name(self) -> &'static str {
        self.as_str()
    }
    pub fn part_source(self) -> PartSource {
        match self {
            Dataset::CelebAMaskHq => PartSource::Annotated,
            _ => PartSource::Landmarks,
        }
    }
    /// The datasets of `mmtt import` that store aligned faces (all of them).
    pub const ALL: [Dataset; 3] = [Dataset::CelebAMaskHq, Dataset::Ffhq, Dataset::Photos];
}

impl std::str::FromStr for Dataset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dataset::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| format!("unknown dataset `{s}`: celebamask-hq, ffhq or photos"))
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input item.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The dataset's own id (CelebA-HQ/FFHQ image number), or `sha256:<hex>` of a photo's bytes.
    pub original_id: String,
    pub path: PathBuf,
}

/// One face ready to store.
pub struct FaceRecord {
    pub face_index: i32,
    pub image_png: Vec<u8>,
    pub landmarks: Option<Landmarks68>,
    pub face_box: Option<FaceBox>,
    pub detector: Option<&'static str>,
    pub parts: Vec<PartMask>,
}

/// A part's mask ready to store: (part, mask PNG, set pixels, origin).
pub type PartMask = (Part, Vec<u8>, u64, String);

/// Files under an import root that are not images by extension, with the reason.
pub type NotImages = Vec<(PathBuf, String)>;

pub enum Outcome {
    Faces { cand: Candidate, original_size: (u32, u32), faces: Vec<FaceRecord> },
    Skipped { path: PathBuf, reason: String },
}

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

fn ext_lower(p: &Path) -> String {
    p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default()
}

/// Lists the items under `root`, in a stable order. Files that are not images by extension are
/// returned separately so they can be reported.
pub fn discover(dataset: Dataset, root: &Path) -> anyhow::Result<(Vec<Candidate>, NotImages)> {
    if !root.is_dir() {
        anyhow::bail!("--root {} is not a directory", root.display());
    }
    let mut items = Vec::new();
    let mut others = Vec::new();
    match dataset {
        Dataset::CelebAMaskHq => {
            let img_dir = root.join("CelebA-HQ-img");
            let anno = root.join("CelebAMask-HQ-mask-anno");
            if !img_dir.is_dir() || !anno.is_dir() {
                anyhow::bail!(
                    "{} is not a CelebAMask-HQ folder: expected CelebA-HQ-img/ and CelebAMask-HQ-mask-anno/ inside it",
                    root.display()
                );
            }
            let mut numbered = Vec::new();
            for e in std::fs::read_dir(&img_dir)? {
                let p = e?.path();
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                match stem.parse::<u32>() {
                    Ok(k) if ext_lower(&p) == "jpg" && p.is_file() => numbered.push((k, Candidate { original_id: k.to_string(), path: p })),
                    _ => others.push((p, "not a CelebA-HQ image name: expected {k}.jpg with k a number".to_string())),
                }
            }
            numbered.sort_by_key(|(k, _)| *k);
            items = numbered.into_iter().map(|(_, c)| c).collect();
        }
        Dataset::Ffhq | Dataset::Photos => {
            let mut files: Vec<PathBuf> = WalkDir::new(root)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.into_path())
                .collect();
            files.sort();
            for p in files {
                if IMAGE_EXTS.contains(&ext_lower(&p).as_str()) {
                    let id = if dataset == Dataset::Ffhq {
                        p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
                    } else {
                        String::new() // filled from the content hash when processed
                    };
                    items.push(Candidate { original_id: id, path: p });
                } else {
                    others.push((p, "not an image file (only .jpg, .jpeg, .png and .webp are imported)".to_string()));
                }
            }
        }
    }
    Ok((items, others))
}

/// The photo's stable id: SHA-256 of its bytes (so the same photo is found under any path).
pub fn photo_id(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::storage::store::BlobKey::of(bytes))
}

fn resize_512(img: &RgbImage) -> RgbImage {
    if img.dimensions() == (FACE_SIZE, FACE_SIZE) {
        img.clone()
    } else {
        imageops::resize(img, FACE_SIZE, FACE_SIZE, imageops::FilterType::Lanczos3)
    }
}

fn landmark_parts(lm: &Landmarks68) -> Result<Vec<PartMask>, String> {
    let origin = format!("landmarks-v{REGION_RULES_VERSION}");
    lm.part_masks(FACE_SIZE, FACE_SIZE)
        .into_iter()
        .map(|(p, m)| {
            let n = count_set(&m);
            encode_mask_png(&m).map(|png| (p, png, n, origin.clone())).map_err(|e| e.to_string())
        })
        .collect()
}

/// The face box used for already-aligned 512x512 faces (FFHQ), where detection is skipped: where
/// dlib's HOG detector puts the face in FFHQ-aligned crops (measured on the sample faces aligned by
/// [`AlignTransform::ffhq`]: most boxes were (95, 164)-(405, 474) or (95, 130)-(405, 439)).
pub const ALIGNED_FACE_BOX: FaceBox = FaceBox { left: 95, top: 155, right: 405, bottom: 465 };

/// Landmarks predicted on an aligned face are plausible when the eyes sit where FFHQ puts them.
fn plausible_aligned(lm: &Landmarks68) -> bool {
    let d = lm.interocular();
    let mid = lm.left_eye().add(lm.right_eye()).scale(0.5);
    // FFHQ's crop puts the eye midpoint near (256, 243) with the eyes at most 128 px apart
    (90.0..=150.0).contains(&d) && mid.dist(Pt::new(256.0, 243.0)) < 40.0 && lm.left_eye().x > lm.right_eye().x
}

/// A face found on an aligned 512x512 image, with the detector that found it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedFace {
    pub landmarks: Landmarks68,
    pub face_box: FaceBox,
    /// `aligned-box` (the fast path below) or the detector's name (`dlib-hog`, `dlib-mmod`).
    pub detector: &'static str,
}

/// The face of an already-aligned 512x512 image (FFHQ, CelebA-HQ, stored sources).
///
/// Aligned faces sit where the alignment put them (CelebA-HQ and FFHQ use the same crop recipe):
/// the HOG detector runs on a 256 px copy (a quarter of the work, no upsampling), a box that
/// overlaps [`ALIGNED_FACE_BOX`] is taken, and the landmarks predicted from it at 512 px are kept
/// when the eyes are where the alignment puts them. Anything else goes through full detection
/// (with the 2x pass for small faces); of several faces, the one nearest the aligned position.
pub fn aligned_face(finder: &FaceFinder, img: &RgbImage) -> Result<AlignedFace, String> {
    let small = imageops::resize(img, FACE_SIZE / 2, FACE_SIZE / 2, imageops::FilterType::Triangle);
    let aligned = finder
        .detect_no_upsample(&small)
        .iter()
        .map(|b| FaceBox { left: b.left * 2, top: b.top * 2, right: b.right * 2, bottom: b.bottom * 2 })
        .find(|b| b.iou(&ALIGNED_FACE_BOX) > 0.4);
    if let Some(b) = aligned {
        let lm = finder.landmarks(img, b);
        if plausible_aligned(&lm) {
            return Ok(AlignedFace { landmarks: lm, face_box: b, detector: "aligned-box" });
        }
    }
    let boxes = finder.detect(img);
    // `detect` orders top-to-bottom: the first of equally central boxes wins
    let best = boxes
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| a.iou(&ALIGNED_FACE_BOX).total_cmp(&b.iou(&ALIGNED_FACE_BOX)).then(j.cmp(i)))
        .map(|(_, b)| *b)
        .ok_or_else(|| format!("no face found ({})", finder.detector_kind().name()))?;
    Ok(AlignedFace { landmarks: finder.landmarks(img, best), face_box: best, detector: finder.detector_kind().name() })
}

/// One landmark search on an aligned face whose part masks do not depend on it (CelebAMask-HQ):
/// its outcome is stored either way, so a face searched without success is not searched again.
///
/// Stored as `sources.landmarks` / `face_box` / `detector`: found, all three are set (`detector`
/// as in [`AlignedFace`]); not found, `landmarks` and `face_box` are NULL and `detector` names the
/// detector that searched (`dlib-hog`, `dlib-mmod`). Never searched: all three NULL.
#[derive(Debug, Clone, PartialEq)]
pub struct LandmarkSearch {
    pub found: Option<AlignedFace>,
    /// The finder's detector (what searched, whatever the path that found the face).
    pub searched_by: &'static str,
}

impl LandmarkSearch {
    pub fn run(finder: &FaceFinder, img: &RgbImage) -> Self {
        LandmarkSearch { found: aligned_face(finder, img).ok(), searched_by: finder.detector_kind().name() }
    }
    /// The value of `sources.detector`.
    pub fn detector(&self) -> &'static str {
        self.found.as_ref().map(|f| f.detector).unwrap_or(self.searched_by)
    }
}

pub fn process(dataset: Dataset, cand: Candidate, finder: Option<&FaceFinder>, limits: DecodeLimits) -> Outcome {
    let path = cand.path.clone();
    match process_inner(dataset, cand, finder, limits) {
        Ok(o) => o,
        Err(reason) => Outcome::Skipped { path, reason },
    }
}

fn process_inner(dataset: Dataset, mut cand: Candidate, finder: Option<&FaceFinder>, limits: DecodeLimits) -> Result<Outcome, String> {
    let decoded = read_image(&cand.path, limits)?;
    let original_size = decoded.rgb.dimensions();
    let faces = match dataset {
        Dataset::CelebAMaskHq => {
            let img = resize_512(&decoded.rgb);
            let k: u32 = cand.original_id.parse().map_err(|_| "bad CelebA-HQ id".to_string())?;
            let anno =
                cand.path.parent().and_then(|p| p.parent()).ok_or("bad path")?.join("CelebAMask-HQ-mask-anno").join((k / 2000).to_string());
            let mut parts = Vec::new();
            for part in Part::ALL {
                let mp = anno.join(format!("{k:05}_{}.png", part.name()));
                if !mp.exists() {
                    continue;
                }
                let m = read_image(&mp, limits).map_err(|r| format!("part mask {}: {r}", mp.display()))?;
                if m.rgb.dimensions() != (FACE_SIZE, FACE_SIZE) {
                    let (w, h) = m.rgb.dimensions();
                    return Err(format!("part mask {} is {w}x{h}, expected {FACE_SIZE}x{FACE_SIZE}", mp.display()));
                }
                // a pixel belongs to the part where channel 0 is non-zero
                let mut g = GrayImage::from_fn(FACE_SIZE, FACE_SIZE, |x, y| image::Luma([m.rgb.get_pixel(x, y).0[0]]));
                binarize(&mut g);
                let n = count_set(&g);
                if n == 0 {
                    continue; // an empty file means the part is absent too
                }
                parts.push((part, encode_mask_png(&g).map_err(|e| e.to_string())?, n, "annotated".to_string()));
            }
            // the landmarks (for face swaps) are found on the aligned 512 face, exactly as
            // `mmtt landmarks backfill` finds them on the stored image; the part masks stay the
            // annotated ones. No face found: stored without landmarks, `detector` naming the
            // detector that searched (see [`LandmarkSearch`])
            let finder = finder.ok_or("dlib is required")?;
            let search = LandmarkSearch::run(finder, &img);
            vec![FaceRecord {
                face_index: 0,
                image_png: encode_rgb_png(&img).map_err(|e| e.to_string())?,
                landmarks: search.found.as_ref().map(|f| f.landmarks.clone()),
                face_box: search.found.as_ref().map(|f| f.face_box),
                detector: Some(search.detector()),
                parts,
            }]
        }
        Dataset::Ffhq => {
            let finder = finder.ok_or("dlib is required")?;
            let img = resize_512(&decoded.rgb);
            let found = aligned_face(finder, &img)?;
            vec![FaceRecord {
                face_index: 0,
                image_png: encode_rgb_png(&img).map_err(|e| e.to_string())?,
                parts: landmark_parts(&found.landmarks)?,
                landmarks: Some(found.landmarks),
                face_box: Some(found.face_box),
                detector: Some(found.detector),
            }]
        }
        Dataset::Photos => {
            let finder = finder.ok_or("dlib is required")?;
            cand.original_id = photo_id(&decoded.bytes);
            let faces = finder.faces(&decoded.rgb);
            if faces.is_empty() {
                return Err(format!(
                    "no face found ({}); faces under about 40 px or strongly turned are missed",
                    finder.detector_kind().name()
                ));
            }
            let mut out = Vec::new();
            for (i, f) in faces.iter().enumerate() {
                let t = AlignTransform::ffhq(&f.landmarks, FACE_SIZE);
                let crop = t.warp(&decoded.rgb);
                let lm = t.landmarks_to_output(&f.landmarks);
                out.push(FaceRecord {
                    face_index: i as i32,
                    image_png: encode_rgb_png(&crop).map_err(|e| e.to_string())?,
                    parts: landmark_parts(&lm)?,
                    landmarks: Some(lm),
                    face_box: Some(f.face_box),
                    detector: Some(finder.detector_kind().name()),
                });
            }
            out
        }
    };
    Ok(Outcome::Faces { cand, original_size, faces })
}
