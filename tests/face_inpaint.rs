//! The built-in inpainters on real faces (Debian's sample photos, imported as a user would):
//! face-aware `patch-inpaint` on "skin" and full-face masks, `part-swap` on eyes, nose and lips,
//! judged by a measure of whether the forged region is a face or background (see
//! [`Verdict`]); the face-unaware exemplar inpainting the platform used before must fail it.
//!
//! Set `MMTT_INPAINT_OUT=DIR` to keep every result as `original | forgery | mask` in DIR.

mod common;

use image::{GrayImage, RgbImage};
use mmtt_generators::detect::{Face, FaceFinder};
use mmtt_generators::forge::patch_inpaint::PatchInpaint;
use mmtt_generators::forge::{ForgeInput, PartMasks, composite};
use mmtt_generators::geometry::{dilate, union_into};
use mmtt_generators::landmarks::Landmarks68;
use mmtt_generators::parts::Part;
use std::ops::Add;
use std::path::{Path, PathBuf};

/// sRGB (8-bit) to CIE L*a*b* (D65).
fn lab(p: [u8; 3]) -> [f64; 3] {
    let lin = |v: u8| {
        let c = v as f64 / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (lin(p[0]), lin(p[1]), lin(p[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 0.008856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn d2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

fn luma(p: [u8; 3]) -> f64 {
    0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
}

/// One imported face: its stored 512x512 picture, part masks and landmarks.
struct Imported {
    name: String,
    image: RgbImage,
    parts: PartMasks,
    landmarks: Landmarks68,
    path: PathBuf,
}

/// What the measure says about one forgery.
///
/// - `face_like`: the share of forged pixels (4000 evenly spaced ones of the mask) whose colour,
///   in CIE Lab, has its nearest neighbour among the original face's pixels (skin, brows, eyes,
///   nose, lips) rather than among the pixels off the face (everything farther than a tenth of
///   the interocular distance from the face region: background, hair, clothes); 3000 evenly
///   spaced pixels of each. A nearest-neighbour vote and not a distance of means, because
///   background and clothes are several colours each and a fill mixing them may have a mean near
///   nothing. It catches a face filled with the backdrop's blue; it cannot catch a flat beige
///   blank, whose colour is skin's. The bar: at least 0.75 times the share of the original's own
///   pixels under the mask (eye whites and pupils sit near a pale backdrop and a dark uniform, so
///   the original's eyes score 0.76-0.84 themselves); the face-unaware fills score 0.01-0.05.
/// - `structure`: the mean gradient magnitude (luma, central differences) of the forgery over
///   the mask's interior (the mask eroded by 3 px, so its seam does not count), divided by the
///   original's over the same pixels. A face has eyes, brows, lips, shading and pores; a flat
///   blank has none and scores near 0. The bar: 0.25 (the face-unaware fills score 0.18-0.21 on
///   Grace Hopper; a donor's smooth skin on her wrinkled one, 0.29).
/// - `face_found`: dlib, run on the forgery as on any photo, still finds the face: a detection
///   whose box overlaps the original's (IoU >= 0.5) with its 68 landmarks within 0.15
///   interocular distances of the original's on average. A face whose features were wiped out
///   or smeared is not found, or found with its features elsewhere.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    face_like: f64,
    /// `face_like` of the original's pixels under the mask: the bar is relative to it, since
    /// some regions are not face-coloured to begin with (eye whites against a pale backdrop).
    face_like_original: f64,
    structure: f64,
    iou: f64,
    landmark_error: f64,
}

impl Verdict {
    fn face_found(&self) -> bool {
        self.iou >= 0.5 && self.landmark_error <= 0.15
    }
    /// The bar every built-in forgery of a facial region must clear.
    fn is_a_face(&self) -> bool {
        self.face_like >= 0.75 * self.face_like_original && self.structure >= 0.25 && self.face_found()
    }
}

fn face_region(parts: &PartMasks) -> GrayImage {
    let mut face = GrayImage::new(512, 512);
    for p in Part::FACE_REGION {
        if let Some(m) = parts.get(&p) {
            union_into(&mut face, m);
        }
    }
    face
}

fn best_face(finder: &FaceFinder, img: &RgbImage, near: &Landmarks68) -> Option<Face> {
    let centre = near.left_eye().add(near.right_eye()).scale(0.5);
    finder.faces(img).into_iter().min_by(|a, b| {
        let c = |f: &Face| f.landmarks.left_eye().add(f.landmarks.right_eye()).scale(0.5).dist(centre);
        c(a).total_cmp(&c(b))
    })
}

fn judge(finder: &FaceFinder, f: &Imported, forged: &RgbImage, mask: &GrayImage) -> Verdict {
    let d = f.landmarks.interocular();
    let face = face_region(&f.parts);
    let off_face = dilate(&face, 0.1 * d);
    // reference colours: 3000 evenly spaced pixels of each set
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (x, y, p) in f.image.enumerate_pixels() {
        if face.get_pixel(x, y).0[0] > 0 {
            on.push(lab(p.0));
        } else if off_face.get_pixel(x, y).0[0] == 0 {
            off.push(lab(p.0));
        }
    }
    assert!(on.len() > 3000 && off.len() > 3000, "{}: {} face and {} off-face reference pixels", f.name, on.len(), off.len());
    let spaced = |v: Vec<[f64; 3]>, k: usize| -> Vec<[f64; 3]> { (0..k).map(|i| v[i * v.len() / k]).collect() };
    let (on, off) = (spaced(on, 3000), spaced(off, 3000));
    let nearest = |set: &[[f64; 3]], q: [f64; 3]| set.iter().map(|&s| d2(s, q)).fold(f64::INFINITY, f64::min);
    // the forged pixels: 4000 evenly spaced ones of the mask
    let masked: Vec<(u32, u32)> = mask.enumerate_pixels().filter(|(_, _, m)| m.0[0] > 0).map(|(x, y, _)| (x, y)).collect();
    let k = masked.len().min(4000);
    let share = |img: &RgbImage| {
        let like = (0..k)
            .filter(|&i| {
                let (x, y) = masked[i * masked.len() / k];
                let q = lab(img.get_pixel(x, y).0);
                nearest(&on, q) < nearest(&off, q)
            })
            .count();
        like as f64 / k.max(1) as f64
    };
    let inner = {
        let outside = GrayImage::from_fn(512, 512, |x, y| image::Luma([if mask.get_pixel(x, y).0[0] == 0 { 255 } else { 0 }]));
        let grown = dilate(&outside, 3.0);
        GrayImage::from_fn(512, 512, |x, y| image::Luma([if grown.get_pixel(x, y).0[0] == 0 { 255 } else { 0 }]))
    };
    let grad = |img: &RgbImage| {
        let (mut s, mut k) = (0.0, 0.0);
        for y in 1..511 {
            for x in 1..511 {
                if inner.get_pixel(x, y).0[0] > 0 {
                    let gx = luma(img.get_pixel(x + 1, y).0) - luma(img.get_pixel(x - 1, y).0);
                    let gy = luma(img.get_pixel(x, y + 1).0) - luma(img.get_pixel(x, y - 1).0);
                    s += gx.hypot(gy);
                    k += 1.0;
                }
            }
        }
        s / f64::max(k, 1.0)
    };
    let structure = grad(forged) / grad(&f.image).max(1e-9);
    let original = best_face(finder, &f.image, &f.landmarks).expect("the original face is found");
    let (iou, landmark_error) = match best_face(finder, forged, &f.landmarks) {
        Some(g) => (g.face_box.iou(&original.face_box), g.landmarks.mean_error(&original.landmarks) / d),
        None => (0.0, f64::INFINITY),
    };
    Verdict { face_like: share(forged), face_like_original: share(&f.image), structure, iou, landmark_error }
}

fn save_triptych(name: &str, f: &Imported, forged: &RgbImage, mask: &GrayImage) {
    let Some(dir) = std::env::var_os("MMTT_INPAINT_OUT") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut canvas = RgbImage::new(1536, 512);
    image::imageops::replace(&mut canvas, &f.image, 0, 0);
    image::imageops::replace(&mut canvas, forged, 512, 0);
    let m = RgbImage::from_fn(512, 512, |x, y| image::Rgb([mask.get_pixel(x, y).0[0]; 3]));
    image::imageops::replace(&mut canvas, &m, 1024, 0);
    canvas.save(dir.join(format!("{}-{name}.png", f.name))).unwrap();
}

fn import_samples(env: &common::Env) -> Vec<Imported> {
    let dir = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &dir);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    let rows: Vec<(uuid::Uuid, String, String, serde_json::Value)> = env.db.query(async |p| {
        sqlx::query_as("SELECT id, original_path, image_hash, landmarks FROM sources ORDER BY original_path").fetch_all(p).await.unwrap()
    });
    assert_eq!(rows.len(), 2, "both sample faces imported");
    let out = env.data.path().join("faces");
    std::fs::create_dir_all(&out).unwrap();
    rows.into_iter()
        .map(|(id, original, hash, lm)| {
            let parts: Vec<(String, String)> = env.db.query(async |p| {
                sqlx::query_as("SELECT part, mask_hash FROM source_parts WHERE source_id = $1").bind(id).fetch_all(p).await.unwrap()
            });
            let parts: PartMasks =
                parts.into_iter().map(|(p, h)| (p.parse().unwrap(), image::open(env.blob_path(&h)).unwrap().into_luma8())).collect();
            let name = Path::new(&original).file_stem().unwrap().to_string_lossy().to_string();
            let path = out.join(format!("{name}.png"));
            std::fs::copy(env.blob_path(&hash), &path).unwrap();
            Imported { name, image: image::open(&path).unwrap().into_rgb8(), parts, landmarks: serde_json::from_value(lm).unwrap(), path }
        })
        .collect()
}

fn merge(f: &Imported, parts: &[Part]) -> GrayImage {
    let mut m = GrayImage::new(512, 512);
    for p in parts {
        union_into(&mut m, f.parts.get(p).unwrap_or_else(|| panic!("{} has no {p}", f.name)));
    }
    m
}

/// Forges with `mmtt generate`, as a user would.
fn generate(env: &common::Env, method: &str, target: &Imported, donor: &Imported, mask: &GrayImage, case: &str) -> RgbImage {
    let dir = env.data.path().join("gen");
    std::fs::create_dir_all(&dir).unwrap();
    let mask_path = dir.join(format!("{}-{case}-mask.png", target.name));
    mask.save(&mask_path).unwrap();
    let out = dir.join(format!("{}-{case}-{method}.png", target.name));
    let p = |p: &Path| p.display().to_string();
    env.ok(&[
        "generate",
        "--method",
        method,
        "--image",
        &p(&target.path),
        "--mask",
        &p(&mask_path),
        "--source",
        &p(&donor.path),
        "--seed",
        "7",
        "--out",
        &p(&out),
    ]);
    image::open(&out).unwrap().into_rgb8()
}

/// The face-unaware exemplar inpainting that `patch-inpaint` was: the same PatchMatch with every
/// intact patch of the picture a candidate (what it still does for a picture without a face).
fn face_unaware(f: &Imported, mask: &GrayImage) -> RgbImage {
    let input = ForgeInput {
        target: &f.image,
        mask,
        target_landmarks: None,
        source: None,
        source_landmarks: None,
        target_parts: None,
        source_parts: None,
        seed: 7,
        options: None,
    };
    composite(&f.image, &PatchInpaint::default().inpaint(&input).unwrap(), mask)
}

#[test]
fn built_in_inpainting_forges_faces_not_background() {
    let env = common::Env::new();
    let faces = import_samples(&env);
    let finder = FaceFinder::load().unwrap();
    let mut failures = Vec::new();
    for (i, target) in faces.iter().enumerate() {
        let donor = &faces[1 - i];
        let full_face: Vec<Part> = Part::FACE_REGION.into_iter().filter(|p| target.parts.contains_key(p)).collect();
        let cases: [(&str, &str, Vec<Part>); 5] = [
            ("patch-inpaint", "skin", vec![Part::Skin]),
            ("patch-inpaint", "full-face", full_face),
            ("part-swap", "eyes", vec![Part::LEye, Part::REye]),
            ("part-swap", "nose", vec![Part::Nose]),
            ("part-swap", "lips", vec![Part::ULip, Part::LLip]),
        ];
        for (method, case, parts) in cases {
            let mask = merge(target, &parts);
            let forged = generate(&env, method, target, donor, &mask, case);
            for (x, y, m) in mask.enumerate_pixels() {
                if m.0[0] == 0 {
                    assert_eq!(forged.get_pixel(x, y), target.image.get_pixel(x, y), "{method} changed ({x},{y}) outside the mask");
                }
            }
            let v = judge(&finder, target, &forged, &mask);
            println!("{:<12} {case:<9} {method:<13} new: {v:?} face={}", target.name, v.is_a_face());
            save_triptych(&format!("{case}-{method}"), target, &forged, &mask);
            if !v.is_a_face() {
                failures.push(format!("{} {case} by {method}: {v:?}", target.name));
            }
            if method == "patch-inpaint" {
                // the measure tells the old behaviour apart: it must reject it
                let old = face_unaware(target, &mask);
                let o = judge(&finder, target, &old, &mask);
                println!("{:<12} {case:<9} {method:<13} old: {o:?} face={}", target.name, o.is_a_face());
                save_triptych(&format!("{case}-{method}-old"), target, &old, &mask);
                assert!(!o.is_a_face(), "{} {case}: the measure does not reject face-unaware inpainting: {o:?}", target.name);
            }
        }
    }
    assert!(failures.is_empty(), "built-in forgeries that are not faces:\n{}", failures.join("\n"));
}

/// Determinism and the job path: part-swap and patch-inpaint jobs on the sample faces take a donor
/// from the target's split, keep every pixel outside the mask, leave a face dlib still finds, and
/// the same seed gives the same bytes.
#[test]
fn part_swap_and_patch_inpaint_jobs_use_a_donor_and_keep_the_face() {
    let env = common::Env::new();
    let faces = import_samples(&env);
    let finder = FaceFinder::load().unwrap();
    for method in ["part-swap", "patch-inpaint"] {
        env.ok(&["forge", "--method", method, "--count", "2", "--seed", "11", "--wait"]);
    }
    // (method, image, mask, target's path, donor, split, donor's split)
    type Row = (String, String, String, String, Option<uuid::Uuid>, String, String);
    let rows: Vec<Row> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.method, f.image_hash, f.mask_hash, s.original_path, f.donor_id, f.split, d.split FROM forgeries f \
             JOIN sources s ON s.id = f.target_id LEFT JOIN sources d ON d.id = f.donor_id ORDER BY f.method, s.original_path",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (method, image, mask, original, donor, split, donor_split) in &rows {
        assert!(donor.is_some(), "{method} on {original} has no donor");
        assert_eq!(split, donor_split);
        let f = faces.iter().find(|f| original.contains(&f.name)).unwrap();
        let forged = image::open(env.blob_path(image)).unwrap().into_rgb8();
        let mask = image::open(env.blob_path(mask)).unwrap().into_luma8();
        let (mut inside, mut changed) = (0u32, 0u32);
        for (x, y, m) in mask.enumerate_pixels() {
            let same = forged.get_pixel(x, y) == f.image.get_pixel(x, y);
            if m.0[0] == 0 {
                assert!(same, "{method} changed ({x},{y}) outside its mask");
            } else {
                inside += 1;
                changed += !same as u32;
            }
        }
        assert!(changed * 2 > inside, "{method}: {changed} of {inside} masked pixels changed");
        let v = judge(&finder, f, &forged, &mask);
        println!("job {method:<13} {:<12}: {v:?}", f.name);
        assert!(v.face_found(), "{method} on {}: the face is no longer found: {v:?}", f.name);
    }
    // same seed, same bytes: the generator run twice on the same item
    let (t, d) = (&faces[0], &faces[1]);
    let mask = merge(t, &[Part::Nose, Part::LEye]);
    for method in ["part-swap", "patch-inpaint"] {
        let a = generate(&env, method, t, d, &mask, "again-a");
        let b = generate(&env, method, t, d, &mask, "again-b");
        assert!(a == b, "{method} is not deterministic");
    }
}
