//! `mmtt eval masks --gt DIR --pred DIR [--threshold T]` with spec section 10's rules: each mask
//! converted to 8-bit luma as Pillow's `convert('L')` does
//! (`(19595 R + 38470 G + 7471 B + 2^15) >> 16`; 16-bit grey clipped to 255, 16-bit colour by its
//! high byte), forged where the value is
//! above the threshold (127), the prediction resized to the ground truth's size with Pillow's
//! NEAREST rule (source pixel `floor((x + 0.5) * src / dst)`). Per image IoU (1 when the union is
//! empty), precision (if P is empty: 1 when G is empty, else 0), recall (if G is empty: 1 when P
//! is empty, else 0); mIoU, precision and recall are means over images, cIoU is the sum of
//! intersections over the sum of unions. Pairs are processed in parallel and dropped as they are
//! counted, so memory stays bounded by the threads, not the number of files.

use super::EvalError;
use image::DynamicImage;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MaskScores {
    #[serde(rename = "mIoU")]
    pub miou: f64,
    #[serde(rename = "cIoU")]
    pub ciou: f64,
    pub precision: f64,
    pub recall: f64,
    pub n: u64,
}

/// 8-bit luma as Pillow's `convert('L')`.
pub fn pillow_luma(img: &DynamicImage) -> (u32, u32, Vec<u8>) {
    let (w, h) = (img.width(), img.height());
    let px: Vec<u8> = match img {
        DynamicImage::ImageLuma8(g) => g.as_raw().clone(),
        DynamicImage::ImageLumaA8(g) => g.pixels().map(|p| p.0[0]).collect(),
        DynamicImage::ImageLuma16(g) => g.pixels().map(|p| p.0[0].min(255) as u8).collect(),
        DynamicImage::ImageLumaA16(g) => g.pixels().map(|p| p.0[0].min(255) as u8).collect(),
        other => other
            .to_rgb8()
            .pixels()
            .map(|p| ((19595 * p.0[0] as u32 + 38470 * p.0[1] as u32 + 7471 * p.0[2] as u32 + 0x8000) >> 16) as u8)
            .collect(),
    };
    (w, h, px)
}

/// Pillow's NEAREST resize of a `w x h` plane to `dw x dh`.
pub fn nearest(px: &[u8], w: u32, h: u32, dw: u32, dh: u32) -> Vec<u8> {
    if (w, h) == (dw, dh) {
        return px.to_vec();
    }
    let xs: Vec<usize> = (0..dw).map(|x| ((((x as f64 + 0.5) * w as f64 / dw as f64) as u32).min(w - 1)) as usize).collect();
    let mut out = Vec::with_capacity((dw * dh) as usize);
    for y in 0..dh {
        let sy = (((y as f64 + 0.5) * h as f64 / dh as f64) as u32).min(h - 1) as usize;
        let row = &px[sy * w as usize..(sy + 1) * w as usize];
        out.extend(xs.iter().map(|&sx| row[sx]));
    }
    out
}

fn load(path: &Path) -> Result<(u32, u32, Vec<u8>), EvalError> {
    let img = image::open(path).map_err(|e| EvalError::Input(format!("{}: cannot read the mask: {e}", path.display())))?;
    Ok(pillow_luma(&img))
}

/// Binary plane of a mask; refuses a mask that has ink but nothing above the threshold.
fn binary(path: &Path, px: &[u8], threshold: u8) -> Result<Vec<bool>, EvalError> {
    let b: Vec<bool> = px.iter().map(|&v| v > threshold).collect();
    if threshold > 0 && !b.iter().any(|x| *x) && px.iter().any(|&v| v > 0) {
        return Err(EvalError::Input(format!(
            "{}: the mask has non-zero pixels but none above {threshold} (a 0/1-encoded mask?): pass --threshold 0",
            path.display()
        )));
    }
    Ok(b)
}

#[derive(Default, Clone, Copy)]
struct Acc {
    iou: f64,
    precision: f64,
    recall: f64,
    inter: u64,
    union: u64,
    n: u64,
}

impl Acc {
    fn add(mut self, o: Acc) -> Acc {
        self.iou += o.iou;
        self.precision += o.precision;
        self.recall += o.recall;
        self.inter += o.inter;
        self.union += o.union;
        self.n += o.n;
        self
    }
}

/// Scores one pair.
fn pair(gt_path: &Path, pred_path: &Path, threshold: u8) -> Result<Acc, EvalError> {
    let (gw, gh, g) = load(gt_path)?;
    let (pw, ph, p) = load(pred_path)?;
    let g = binary(gt_path, &g, threshold)?;
    let p = binary(pred_path, &nearest(&p, pw, ph, gw, gh), threshold)?;
    let (mut inter, mut union, mut np, mut ng) = (0u64, 0u64, 0u64, 0u64);
    for (a, b) in p.iter().zip(&g) {
        inter += (*a && *b) as u64;
        union += (*a || *b) as u64;
        np += *a as u64;
        ng += *b as u64;
    }
    let iou = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
    let precision = if np == 0 { (ng == 0) as u8 as f64 } else { inter as f64 / np as f64 };
    let recall = if ng == 0 { (np == 0) as u8 as f64 } else { inter as f64 / ng as f64 };
    Ok(Acc { iou, precision, recall, inter, union, n: 1 })
}

fn pngs(dir: &Path) -> Result<Vec<String>, EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|source| EvalError::Io { path: dir.display().to_string(), source })?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.to_lowercase().ends_with(".png"))
        .collect();
    v.sort();
    Ok(v)
}

/// Scores (ground truth, prediction) path pairs.
pub fn evaluate_pairs(pairs: &[(PathBuf, PathBuf)], threshold: u8) -> Result<MaskScores, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::Input("no mask pairs to evaluate".into()));
    }
    let acc = pairs.par_iter().map(|(g, p)| pair(g, p, threshold)).try_reduce(Acc::default, |a, b| Ok(a.add(b)))?;
    let n = acc.n as f64;
    Ok(MaskScores {
        miou: acc.iou / n,
        ciou: if acc.union == 0 { 1.0 } else { acc.inter as f64 / acc.union as f64 },
        precision: acc.precision / n,
        recall: acc.recall / n,
        n: acc.n,
    })
}

/// Scores every same-named PNG pair; files without a counterpart are listed in the error.
pub fn evaluate(gt: &Path, pred: &Path, threshold: u8) -> Result<MaskScores, EvalError> {
    let (g, p) = (pngs(gt)?, pngs(pred)?);
    let gs: std::collections::HashSet<&String> = g.iter().collect();
    let ps: std::collections::HashSet<&String> = p.iter().collect();
    let no_pred: Vec<&String> = g.iter().filter(|n| !ps.contains(n)).collect();
    let no_gt: Vec<&String> = p.iter().filter(|n| !gs.contains(n)).collect();
    if !no_pred.is_empty() || !no_gt.is_empty() {
        let show =
            |v: &[&String]| v.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join(", ") + if v.len() > 20 { ", ..." } else { "" };
        return Err(EvalError::Input(format!(
            "masks must come in same-named pairs: {} ground-truth masks have no prediction [{}], {} predictions have no ground truth [{}]",
            no_pred.len(),
            show(&no_pred),
            no_gt.len(),
            show(&no_gt)
        )));
    }
    if g.is_empty() {
        return Err(EvalError::Input(format!("{} holds no PNG masks", gt.display())));
    }
    let pairs: Vec<(PathBuf, PathBuf)> = g.iter().map(|name| (gt.join(name), pred.join(name))).collect();
    evaluate_pairs(&pairs, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_pillow_rule() {
        // 4 -> 2: source pixels floor((x + .5) * 2) = 1, 3
        assert_eq!(nearest(&[0, 1, 2, 3], 4, 1, 2, 1), vec![1, 3]);
        // 2 -> 3: floor((x + .5) * 2 / 3) = 0, 1, 1
        assert_eq!(nearest(&[7, 9], 2, 1, 3, 1), vec![7, 9, 9]);
    }

    #[test]
    fn luma_is_pillows() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap());
        // Pillow: (255*19595 + 32768) >> 16 = 76; (10*19595 + 200*38470 + 30*7471 + 32768) >> 16 = 124
        assert_eq!(pillow_luma(&img).2, vec![76, 124]);
    }
}
