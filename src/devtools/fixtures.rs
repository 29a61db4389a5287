//! Test and demo inputs built from real face photos, so tests need no downloaded dataset.
//!
//! [`celebamask`] writes a folder in the CelebAMask-HQ layout (spec section 2): for each face a
//! 1024x1024 `CelebA-HQ-img/{k}.jpg` (FFHQ-aligned crop) and 512x512 RGB part masks
//! `CelebAMask-HQ-mask-anno/{k / 2000}/{k:05}_{part}.png` drawn from dlib landmark regions, plus a
//! `neck` mask below the jaw. To exercise the importer's rules, some parts are left out on purpose
//! (no ear files for the second image, an all-zero `hat` file for the first) and the part pixels
//! are written in channel 0 only for one image. The returned manifest lists what each image has.

use anyhow::{Context, Result, bail};
use image::{Rgb, RgbImage, imageops};
use mmtt_generators::align::AlignTransform;
use mmtt_generators::detect::FaceFinder;
use mmtt_generators::geometry::{Pt, empty_mask, fill_polygon, subtract_into};
use mmtt_generators::parts::Part;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct FixtureImage {
    pub k: u32,
    pub from: String,
    /// Parts with a non-empty mask file.
    pub parts: Vec<String>,
}

/// Ids used for the fixture images: the third lands in annotation folder 1 (k / 2000).
pub const FIXTURE_IDS: [u32; 3] = [0, 1, 2001];

pub fn celebamask(photos: &[PathBuf], out: &Path) -> Result<Vec<FixtureImage>> {
    if photos.is_empty() {
        bail!("no photos given for the fixture");
    }
    let finder = FaceFinder::load()?;
    let img_dir = out.join("CelebA-HQ-img");
    std::fs::create_dir_all(&img_dir)?;
    let mut manifest = Vec::new();
    for (i, &k) in FIXTURE_IDS.iter().enumerate() {
        let src = &photos[i % photos.len()];
        let img = image::open(src).with_context(|| format!("cannot read {}", src.display()))?.into_rgb8();
        let face = finder.faces(&img).into_iter().next().with_context(|| format!("no face found in {}", src.display()))?;
        let t = AlignTransform::ffhq(&face.landmarks, 1024);
        let mut crop = t.warp(&img);
        let mut lm = t.landmarks_to_output(&face.landmarks).map(|p| p.scale(0.5));
        if i == 2 {
            // a mirrored copy: a different picture of the same face, sides swapped
            crop = imageops::flip_horizontal(&crop);
            let mut pts = lm.0;
            for p in pts.iter_mut() {
                p.x = 512.0 - p.x;
            }
            // re-index so the subject's sides stay right (dlib's 68-point mirror permutation)
            lm = mmtt_generators::landmarks::Landmarks68(mirror_68(&pts));
        }
        crop.save_with_format(img_dir.join(format!("{k}.jpg")), image::ImageFormat::Jpeg)?;
        let anno = out.join("CelebAMask-HQ-mask-anno").join((k / 2000).to_string());
        std::fs::create_dir_all(&anno)?;
        let mut masks = lm.part_masks(512, 512);
        // a neck below the jaw, so a non-facial part is present too
        let mut neck = empty_mask(512, 512);
        let j = &lm.0;
        fill_polygon(&mut neck, &[j[5], j[8], j[11], Pt::new(j[11].x, 512.0), Pt::new(j[5].x, 512.0)]);
        let face = {
            let mut m = empty_mask(512, 512);
            fill_polygon(&mut m, &lm.face_outline());
            m
        };
        subtract_into(&mut neck, &face);
        masks.insert(Part::Neck, neck);
        if i == 1 {
            masks.remove(&Part::LEar);
            masks.remove(&Part::REar);
        }
        let mut parts = Vec::new();
        for (part, m) in &masks {
            let rgb = RgbImage::from_fn(512, 512, |x, y| {
                let v = m.get_pixel(x, y).0[0];
                if i == 2 { Rgb([v, 0, 0]) } else { Rgb([v, v, v]) }
            });
            rgb.save_with_format(anno.join(format!("{k:05}_{}.png", part.name())), image::ImageFormat::Png)?;
            parts.push(part.name().to_string());
        }
        if i == 0 {
            RgbImage::new(512, 512).save_with_format(anno.join(format!("{k:05}_hat.png")), image::ImageFormat::Png)?;
        }
        manifest.push(FixtureImage { k, from: src.display().to_string(), parts });
    }
    std::fs::write(out.join("fixture.json"), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// The 68-point indices after a horizontal flip (iBUG mirror map).
fn mirror_68(p: &[Pt; 68]) -> [Pt; 68] {
    let mut map = [0usize; 68];
    for (i, m) in map[..17].iter_mut().enumerate() {
        *m = 16 - i; // jaw
    }
    for i in 0..5 {
        map[17 + i] = 26 - i; // brows
    }
    for (i, m) in map.iter_mut().enumerate().take(31).skip(27) {
        *m = i; // nose bridge
    }
    for i in 0..5 {
        map[31 + i] = 35 - i; // nostrils
    }
    let eyes = [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)];
    for (a, b) in eyes {
        map[a] = b;
        map[b] = a;
    }
    let outer = [(48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57)];
    let inner = [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)];
    for (a, b) in outer.iter().chain(inner.iter()) {
        map[*a] = *b;
        map[*b] = *a;
    }
    map.map(|i| p[i])
}

/// Writes FFHQ-style inputs: `{out}/{n / 1000:05}/{n:05}.png`, 1024x1024 FFHQ-aligned crops of the
/// first face of each photo, numbered from 0. Returns the written paths.
pub fn ffhq(photos: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    let finder = FaceFinder::load()?;
    let mut written = Vec::new();
    for (n, src) in photos.iter().enumerate() {
        let img = image::open(src).with_context(|| format!("cannot read {}", src.display()))?.into_rgb8();
        let face = finder.faces(&img).into_iter().next().with_context(|| format!("no face found in {}", src.display()))?;
        let crop = AlignTransform::ffhq(&face.landmarks, 1024).warp(&img);
        let dir = out.join(format!("{:05}", (n / 1000) * 1000));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join(format!("{n:05}.png"));
        crop.save_with_format(&p, image::ImageFormat::Png)?;
        written.push(p);
    }
    Ok(written)
}
