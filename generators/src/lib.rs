//! `mmtt-generators`: everything that turns a face image into forgery inputs.
//!
//! - [`geometry`]: points, hulls, polygon rasterisation, dilation (pure).
//! - [`parts`]: CelebAMask-HQ part names and the facial subset masks are drawn from.
//! - [`landmarks`]: the 68-point layout and the part regions derived from it (ears and forehead
//!   estimated from geometry).
//! - [`align`]: FFHQ-style alignment of a face to a 512x512 crop.
//! - [`detect`]: dlib face detection and landmark prediction (the only module that touches dlib).
//! - [`plan`]: the MMTT mask rules (k parts, full face, swap) with stable seeded sampling.
//! - [`mask`]: encoding/decoding of the 0/255 single-channel mask PNGs.
//!
//! No I/O besides loading dlib models; storage belongs to the `mmtt` binary. Later issues add the
//! forgery generators here.

pub mod align;
pub mod detect;
pub mod forge;
pub mod geometry;
pub mod landmarks;
pub mod mask;
pub mod parts;
pub mod plan;

/// Side of every stored face image and mask.
pub const FACE_SIZE: u32 = 512;
