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
//! - [`forge`]: the forgery generators (the [`forge::Generator`] trait, the platform's composite,
//!   the classical built-ins `patch-inpaint`, `part-swap`, `classic-swap`, and the ONNX Runtime
//!   ones `mat`, `lama`, `sdxl`, `e4s`).
//! - [`registry`]: every method by name, with its family, needs and constructor: the one place
//!   the platform's job queue, `mmtt generate` and the benchmarks look methods up.
//!
//! No database and no storage (those belong to the `mmtt` crate); the only I/O is reading dlib's
//! and the generators' model files. Only [`detect`] touches dlib; only `forge::{runtime, onnx,
//! graph}` touch ONNX Runtime.

pub mod align;
pub mod detect;
pub mod forge;
pub mod geometry;
pub mod landmarks;
pub mod mask;
pub mod parts;
pub mod plan;
pub mod registry;

/// Side of every stored face image and mask.
pub const FACE_SIZE: u32 = 512;
