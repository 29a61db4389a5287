//! `patch-inpaint`: exemplar inpainting by multi-scale PatchMatch with patch voting (Barnes et al.
//! 2009, "PatchMatch"; Wexler et al. 2007, "Space-time completion"). A classical method, no
//! weights: the hole is filled with patches copied from the known part of the same face.
//!
//! Pyramid: halve until the hole's bounding box is at most [`COARSEST_HOLE`] pixels, start from
//! the mean known colour, and at each level alternate PatchMatch (propagation + random search
//! for the nearest known patch of every patch touching the hole) with voting (every hole pixel
//! becomes the mean of the pixels the overlapping patches copy there). The nearest-neighbour field
//! and the filled image are carried up one level at a time. Seeded: same input, same output.

use super::{check_input, ForgeError, ForgeInput, Generator, SplitMix64};
use image::RgbImage;

/// Levels are added until the hole's bounding box fits in this many pixels.
pub const COARSEST_HOLE: u32 = 40;

#[derive(Debug, Clone)]
pub struct PatchInpaint {
    /// Patches are `(2r + 1)^2`.
    pub patch_radius: i32,
    /// EM steps (search + vote) per level, and PatchMatch sweeps per step.
    pub em_steps: usize,
    pub sweeps: usize,
}

impl Default for PatchInpaint {
    fn default() -> Self {
        PatchInpaint { patch_radius: 3, em_steps: 3, sweeps: 3 }
    }
}

struct Level {
    w: i32,
    h: i32,
    px: Vec<[f32; 3]>,
    hole: Vec<bool>,
}

impl Level {
    fn idx(&self, x: i32, y: i32) -> usize {
        (y * self.w + x) as usize
    }
    fn down(&self) -> Level {
        let (w, h) = ((self.w + 1) / 2, (self.h + 1) / 2);
        let mut px = vec![[0.0; 3]; (w * h) as usize];
        let mut hole = vec![false; (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                let mut n = 0.0;
                let mut any_hole = false;
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (sx, sy) = ((2 * x + dx).min(self.w - 1), (2 * y + dy).min(self.h - 1));
                    let i = self.idx(sx, sy);
                    if self.hole[i] {
                        any_hole = true;
                    } else {
                        for c in 0..3 {
                            acc[c] += self.px[i][c];
                        }
                        n += 1.0;
                    }
                }
                let o = (y * w + x) as usize;
                hole[o] = any_hole;
                if n > 0.0 {
                    px[o] = acc.map(|v| v / n);
                }
            }
        }
        Level { w, h, px, hole }
    }
}

/// Counts of hole pixels in any rectangle, O(1).
struct Integral {
    w: i32,
    sum: Vec<u32>,
}

impl Integral {
    fn new(l: &Level) -> Self {
        let w = l.w + 1;
        let mut sum = vec![0u32; (w * (l.h + 1)) as usize];
        for y in 0..l.h {
            let mut row = 0;
            for x in 0..l.w {
                row += l.hole[l.idx(x, y)] as u32;
                sum[((y + 1) * w + x + 1) as usize] = sum[(y * w + x + 1) as usize] + row;
            }
        }
        Integral { w, sum }
    }
    /// Hole pixels in `[x0, x1] x [y0, y1]` (inclusive).
    fn count(&self, x0: i32, y0: i32, x1: i32, y1: i32) -> u32 {
        let s = |x: i32, y: i32| self.sum[(y * self.w + x) as usize];
        s(x1 + 1, y1 + 1) + s(x0, y0) - s(x0, y1 + 1) - s(x1 + 1, y0)
    }
}

impl PatchInpaint {
    fn valid_source(&self, l: &Level, ii: &Integral, x: i32, y: i32) -> bool {
        let r = self.patch_radius;
        x >= r && y >= r && x < l.w - r && y < l.h - r && ii.count(x - r, y - r, x + r, y + r) == 0
    }

    fn dist(&self, l: &Level, t: (i32, i32), s: (i32, i32), best: f32) -> f32 {
        let r = self.patch_radius;
        let mut d = 0.0f32;
        for dy in -r..=r {
            for dx in -r..=r {
                let a = l.px[l.idx(t.0 + dx, t.1 + dy)];
                let b = l.px[l.idx(s.0 + dx, s.1 + dy)];
                d += (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2);
            }
            if d >= best {
                return d;
            }
        }
        d
    }

    /// One level: EM steps of PatchMatch + voting. `nnf` maps target centres to source centres.
    fn solve_level(&self, l: &mut Level, nnf: &mut Vec<(i32, i32)>, rng: &mut SplitMix64, em_steps: usize) -> Result<(), ForgeError> {
        let r = self.patch_radius;
        let ii = Integral::new(l);
        let sources: Vec<(i32, i32)> = (r..l.h - r)
            .flat_map(|y| (r..l.w - r).map(move |x| (x, y)))
            .filter(|&(x, y)| self.valid_source(l, &ii, x, y))
            .collect();
        if sources.is_empty() {
            return Err(ForgeError::Input("the mask leaves no intact patch to copy from".into()));
        }
        // target centres: in-range centres whose patch touches the hole
        let targets: Vec<(i32, i32)> = (r..l.h - r)
            .flat_map(|y| (r..l.w - r).map(move |x| (x, y)))
            .filter(|&(x, y)| ii.count(x - r, y - r, x + r, y + r) > 0)
            .collect();
        let n = (l.w * l.h) as usize;
        if nnf.len() != n {
            *nnf = vec![(-1, -1); n];
        }
        let mut cost = vec![f32::INFINITY; n];
        for &(x, y) in &targets {
            let i = l.idx(x, y);
            if !self.valid_source(l, &ii, nnf[i].0, nnf[i].1) {
                nnf[i] = sources[(rng.next_u64() % sources.len() as u64) as usize];
            }
        }
        for _ in 0..em_steps {
            for &(x, y) in &targets {
                let i = l.idx(x, y);
                cost[i] = self.dist(l, (x, y), nnf[i], f32::INFINITY);
            }
            for sweep in 0..self.sweeps {
                let fwd = sweep % 2 == 0;
                let step: i32 = if fwd { 1 } else { -1 };
                let order: Box<dyn Iterator<Item = &(i32, i32)>> = if fwd { Box::new(targets.iter()) } else { Box::new(targets.iter().rev()) };
                for &(x, y) in order {
                    let i = l.idx(x, y);
                    // propagation from the previous neighbours in scan order
                    for (nx, ny) in [(x - step, y), (x, y - step)] {
                        if nx < 0 || ny < 0 || nx >= l.w || ny >= l.h {
                            continue;
                        }
                        let (sx, sy) = nnf[l.idx(nx, ny)];
                        if sx < 0 {
                            continue;
                        }
                        let cand = (sx + (x - nx), sy + (y - ny));
                        if cand != nnf[i] && self.valid_source(l, &ii, cand.0, cand.1) {
                            let d = self.dist(l, (x, y), cand, cost[i]);
                            if d < cost[i] {
                                cost[i] = d;
                                nnf[i] = cand;
                            }
                        }
                    }
                    // random search around the current best, halving the radius
                    let mut radius = l.w.max(l.h);
                    while radius >= 1 {
                        let (bx, by) = nnf[i];
                        let rx = (rng.next_u64() % (2 * radius as u64 + 1)) as i32 - radius;
                        let ry = (rng.next_u64() % (2 * radius as u64 + 1)) as i32 - radius;
                        let cand = (bx + rx, by + ry);
                        if self.valid_source(l, &ii, cand.0, cand.1) {
                            let d = self.dist(l, (x, y), cand, cost[i]);
                            if d < cost[i] {
                                cost[i] = d;
                                nnf[i] = cand;
                            }
                        }
                        radius /= 2;
                    }
                }
            }
            // voting
            let mut acc = vec![[0.0f32; 4]; n];
            for &(x, y) in &targets {
                let (sx, sy) = nnf[l.idx(x, y)];
                for dy in -r..=r {
                    for dx in -r..=r {
                        let p = l.idx(x + dx, y + dy);
                        if l.hole[p] {
                            let s = l.px[l.idx(sx + dx, sy + dy)];
                            let a = &mut acc[p];
                            a[0] += s[0];
                            a[1] += s[1];
                            a[2] += s[2];
                            a[3] += 1.0;
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                if l.hole[p] && a[3] > 0.0 {
                    l.px[p] = [a[0] / a[3], a[1] / a[3], a[2] / a[3]];
                }
            }
        }
        Ok(())
    }

    pub fn inpaint(&self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        check_input(input)?;
        let (w, h) = input.target.dimensions();
        let r = self.patch_radius;
        if (w as i32) < 4 * r + 2 || (h as i32) < 4 * r + 2 {
            return Err(ForgeError::Input(format!("image {w}x{h} is too small for {0}x{0} patches", 2 * r + 1)));
        }
        let base = Level {
            w: w as i32,
            h: h as i32,
            px: input.target.pixels().map(|p| [p.0[0] as f32, p.0[1] as f32, p.0[2] as f32]).collect(),
            hole: input.mask.pixels().map(|p| p.0[0] > 0).collect(),
        };
        let mut levels = vec![base];
        loop {
            let l = levels.last().expect("non-empty");
            let (mut x0, mut y0, mut x1, mut y1) = (i32::MAX, i32::MAX, -1, -1);
            for y in 0..l.h {
                for x in 0..l.w {
                    if l.hole[l.idx(x, y)] {
                        x0 = x0.min(x);
                        x1 = x1.max(x);
                        y0 = y0.min(y);
                        y1 = y1.max(y);
                    }
                }
            }
            let hole_side = (x1 - x0 + 1).max(y1 - y0 + 1);
            if hole_side as u32 <= COARSEST_HOLE || l.w.min(l.h) < 8 * (2 * r + 1) {
                break;
            }
            let d = l.down();
            levels.push(d);
        }
        let mut rng = SplitMix64(input.seed ^ 0x5041_5443_484D_4154);
        // coarsest: start from the mean known colour
        {
            let l = levels.last_mut().expect("non-empty");
            let known: Vec<[f32; 3]> = l.px.iter().zip(&l.hole).filter(|(_, h)| !**h).map(|(p, _)| *p).collect();
            let mean = if known.is_empty() {
                [128.0; 3]
            } else {
                let s = known.iter().fold([0.0f32; 3], |a, p| [a[0] + p[0], a[1] + p[1], a[2] + p[2]]);
                s.map(|v| v / known.len() as f32)
            };
            for (p, hole) in l.px.iter_mut().zip(&l.hole) {
                if *hole {
                    *p = mean;
                }
            }
        }
        let mut nnf: Vec<(i32, i32)> = Vec::new();
        for li in (0..levels.len()).rev() {
            let steps = if li == 0 { self.em_steps.min(2).max(1) } else { self.em_steps + 1 };
            self.solve_level(&mut levels[li], &mut nnf, &mut rng, steps)?;
            if li > 0 {
                // carry the filled image and the field one level up
                let (coarse, fine) = {
                    let (a, b) = levels.split_at_mut(li);
                    (&b[0], &mut a[li - 1])
                };
                let mut up = vec![(-1, -1); (fine.w * fine.h) as usize];
                for y in 0..fine.h {
                    for x in 0..fine.w {
                        let ci = coarse.idx((x / 2).min(coarse.w - 1), (y / 2).min(coarse.h - 1));
                        let fi = fine.idx(x, y);
                        if fine.hole[fi] {
                            fine.px[fi] = coarse.px[ci];
                        }
                        let (sx, sy) = nnf[ci];
                        if sx >= 0 {
                            up[fi] = (2 * sx + x % 2, 2 * sy + y % 2);
                        }
                    }
                }
                nnf = up;
            }
        }
        let l = &levels[0];
        Ok(RgbImage::from_fn(w, h, |x, y| {
            let p = l.px[l.idx(x as i32, y as i32)];
            image::Rgb(p.map(|v| v.round().clamp(0.0, 255.0) as u8))
        }))
    }
}

impl Generator for PatchInpaint {
    fn method(&self) -> &'static str {
        "patch-inpaint"
    }
    fn generate(&mut self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        self.inpaint(input)
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": "patch-inpaint",
            "kind": "classical: multi-scale PatchMatch exemplar inpainting (no learned weights)",
            "patch_size": 2 * self.patch_radius + 1, "em_steps": self.em_steps, "sweeps": self.sweeps,
            "execution_provider": "cpu (built-in)",
        })
    }
}
