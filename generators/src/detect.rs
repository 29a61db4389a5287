//! Face detection and 68-point landmarks through dlib (`dlib-face-recognition`, linked to Debian's
//! `libdlib-dev`; model from Debian's `libdlib-data`).
//!
//! - The shape predictor is loaded once per [`FaceFinder`] (about 1 s) and shared by all threads
//!   (dlib's `shape_predictor` is immutable once loaded).
//! - The HOG detector is not thread-safe in the binding, so each thread keeps its own (cheap).
//! - Small faces: dlib's HOG window is 80x80 px, so images whose longer side is at most
//!   [`UPSAMPLE_BELOW`] are also searched at twice their size (what `dlib`'s `upsample_num_times=1`
//!   does); detections from that pass are kept only when narrower than [`SMALL_FACE_PX`], since
//!   larger faces are seen at 1x and the upsampled pass adds false positives on textures.
//! - Where the PyPI `face_recognition_models` package is installed (or `MMTT_DLIB_MMOD` names the
//!   file), its CNN (MMOD) detector is used instead: better recall on turned faces.
//!
//! The binding uses `image` 0.24; conversion happens here, at the boundary, and nowhere else.

use crate::geometry::Pt;
use crate::landmarks::Landmarks68;
use dlib_face_recognition::{
    FaceDetector, FaceDetectorCnn, FaceDetectorTrait, ImageMatrix, LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Debian's `libdlib-data` location of the 68-point model.
pub const DEBIAN_PREDICTOR: &str = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat";
/// Images whose longer side is at most this many pixels are also searched upsampled 2x.
pub const UPSAMPLE_BELOW: u32 = 1200;
/// Faces at least this wide are left to the 1x pass (dlib's HOG window is 80 px).
pub const SMALL_FACE_PX: i64 = 88;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "the dlib 68-point landmark model was not found at {0}: install Debian's `libdlib-data` \
         (apt-get install libdlib-data) or set MMTT_DLIB_PREDICTOR to the .dat file"
    )]
    PredictorMissing(PathBuf),
    #[error("could not load the dlib model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// A face box in image pixels (left/top inclusive, right/bottom exclusive-ish as dlib reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceBox {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl FaceBox {
    pub fn width(&self) -> i64 {
        self.right - self.left
    }
    pub fn height(&self) -> i64 {
        self.bottom - self.top
    }
    /// Intersection over union with another box.
    pub fn iou(&self, o: &FaceBox) -> f64 {
        let iw = (self.right.min(o.right) - self.left.max(o.left)).max(0) as f64;
        let ih = (self.bottom.min(o.bottom) - self.top.max(o.top)).max(0) as f64;
        let inter = iw * ih;
        let union = (self.width() * self.height() + o.width() * o.height()) as f64 - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    fn to_dlib(self) -> Rectangle {
        Rectangle { left: self.left as _, top: self.top as _, right: self.right as _, bottom: self.bottom as _ }
    }
    fn from_dlib(r: &Rectangle, scale: f64) -> Self {
        FaceBox {
            left: (r.left as f64 / scale).round() as i64,
            top: (r.top as f64 / scale).round() as i64,
            right: (r.right as f64 / scale).round() as i64,
            bottom: (r.bottom as f64 / scale).round() as i64,
        }
    }
}

/// One face found in an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Face {
    pub face_box: FaceBox,
    pub landmarks: Landmarks68,
}

/// Which detector found the faces, for provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    DlibHog,
    DlibMmod,
}

impl DetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::DlibHog => "dlib-hog",
            DetectorKind::DlibMmod => "dlib-mmod",
        }
    }
}

thread_local! {
    static HOG: FaceDetector = FaceDetector::new();
    static MMOD: std::cell::RefCell<Option<FaceDetectorCnn>> = const { std::cell::RefCell::new(None) };
}

/// dlib's detector and landmark predictor, loaded once and usable from many threads.
pub struct FaceFinder {
    predictor: LandmarkPredictor,
    mmod: Option<Mutex<FaceDetectorCnn>>,
}

impl FaceFinder {
    /// Loads the 68-point predictor (from `MMTT_DLIB_PREDICTOR` or Debian's path) and, when one is
    /// found, the MMOD CNN detector.
    pub fn load() -> Result<Self, DetectError> {
        let path = std::env::var_os("MMTT_DLIB_PREDICTOR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEBIAN_PREDICTOR));
        Self::load_from(&path, find_mmod_model().as_deref())
    }

    pub fn load_from(predictor: &Path, mmod: Option<&Path>) -> Result<Self, DetectError> {
        if !predictor.is_file() {
            return Err(DetectError::PredictorMissing(predictor.to_path_buf()));
        }
        let predictor_model =
            LandmarkPredictor::open(predictor).map_err(|reason| DetectError::Load { path: predictor.to_path_buf(), reason })?;
        let mmod = match mmod {
            Some(p) => Some(Mutex::new(FaceDetectorCnn::open(p).map_err(|reason| DetectError::Load { path: p.to_path_buf(), reason })?)),
            None => None,
        };
        Ok(Self { predictor: predictor_model, mmod })
    }

    pub fn detector_kind(&self) -> DetectorKind {
        if self.mmod.is_some() { DetectorKind::DlibMmod } else { DetectorKind::DlibHog }
    }

    /// Face boxes in `img`, ordered top-to-bottom then left-to-right.
    pub fn detect(&self, img: &RgbImage) -> Vec<FaceBox> {
        self.detect_with(img, img.width().max(img.height()) <= UPSAMPLE_BELOW)
    }

    /// Face boxes found at 1x only (faces of at least 80 px): a cheap check.
    pub fn detect_no_upsample(&self, img: &RgbImage) -> Vec<FaceBox> {
        self.detect_with(img, false)
    }

    fn detect_with(&self, img: &RgbImage, upsample: bool) -> Vec<FaceBox> {
        let matrix = to_matrix(img);
        let (w, h) = img.dimensions();
        let mut boxes: Vec<FaceBox> = Vec::new();
        let mut add = |found: &[Rectangle], scale: f64| {
            for r in found {
                let b = FaceBox::from_dlib(r, scale);
                // the 1x pass sees every face of at least the 80 px window; the upsampled pass is
                // only trusted for the smaller ones (it adds false positives on textures)
                if scale > 1.0 && b.width() >= SMALL_FACE_PX {
                    continue;
                }
                if !boxes.iter().any(|o| o.iou(&b) > 0.3) {
                    boxes.push(b);
                }
            }
        };
        let run = |m: &ImageMatrix| -> Vec<Rectangle> {
            if let Some(cnn) = &self.mmod {
                MMOD.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        let guard = cnn.lock().unwrap_or_else(|e| e.into_inner());
                        *slot = Some(guard.clone());
                    }
                    slot.as_ref().map(|d| d.face_locations(m).to_vec()).unwrap_or_default()
                })
            } else {
                HOG.with(|d| d.face_locations(m).to_vec())
            }
        };
        if upsample {
            let up = matrix.resize(w as usize * 2, h as usize * 2);
            add(&run(&up), 2.0);
        }
        add(&run(&matrix), 1.0);
        boxes.sort_by_key(|b| (b.top / 32, b.left));
        boxes
    }

    /// The 68 landmarks of the face in `face_box`.
    pub fn landmarks(&self, img: &RgbImage, face_box: FaceBox) -> Landmarks68 {
        self.landmarks_in(&to_matrix(img), face_box)
    }

    fn landmarks_in(&self, matrix: &ImageMatrix, face_box: FaceBox) -> Landmarks68 {
        let shape = self.predictor.face_landmarks(matrix, &face_box.to_dlib());
        let mut pts = [Pt::default(); 68];
        for (i, p) in shape.iter().take(68).enumerate() {
            pts[i] = Pt::new(p.x() as f64, p.y() as f64);
        }
        Landmarks68(pts)
    }

    /// Detects every face and predicts its landmarks.
    pub fn faces(&self, img: &RgbImage) -> Vec<Face> {
        let boxes = self.detect(img);
        let matrix = to_matrix(img);
        boxes.into_iter().map(|b| Face { face_box: b, landmarks: self.landmarks_in(&matrix, b) }).collect()
    }
}

fn to_matrix(img: &RgbImage) -> ImageMatrix {
    let (w, h) = img.dimensions();
    let old = image024::RgbImage::from_raw(w, h, img.as_raw().clone()).expect("an RgbImage's buffer always has width * height * 3 bytes");
    ImageMatrix::from_image(&old)
}

/// The MMOD CNN model: `MMTT_DLIB_MMOD`, or the one the PyPI `face_recognition_models` package ships.
pub fn find_mmod_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MMTT_DLIB_MMOD") {
        let p = PathBuf::from(p);
        return if p.as_os_str().is_empty() { None } else { Some(p) };
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import face_recognition_models as m; print(m.cnn_face_detector_model_location())"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}
