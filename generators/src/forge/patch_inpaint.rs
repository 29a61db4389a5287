//! `patch-inpaint`: face-aware exemplar inpainting by multi-scale PatchMatch with patch voting
//! (Barnes et al. 2009, "PatchMatch"; Wexler et al. 2007, "Space-time completion"), guided by the
//! face's layout as in guided texture synthesis (Hertzmann et al. 2001, "Image Analogies"). A
//! classical method, no weights.
//!
//! Pyramid: halve until the hole's bounding box is at most [`COARSEST_HOLE`] pixels, start from
//! a first fill, and at each level alternate PatchMatch (propagation + random search for the
//! nearest allowed patch of every patch touching the hole) with voting (every hole pixel becomes
//! the mean of the pixels the overlapping patches copy there). The nearest-neighbour field and
//! the filled image are carried up one level at a time. Seeded: same input, same output.
//!
//! Face-awareness (when the target's part masks or landmarks are known, see
//! [`FaceLayout`]):
//! - Where exemplars may come from: a source patch must lie wholly on the face (skin, brows, eyes,
//!   nose, lips, mouth, ears) outside the hole, at every pyramid level; background, hair, hat,
//!   neck and clothes are never copied. The region of every pixel, in the hole too, is known
//!   from the layout, and the patch distance adds [`LABEL_PENALTY`] for every pixel whose region
//!   differs between the two patches: a hole in the skin is filled from skin, an eye from the
//!   other eye.
//! - A region of the hole with no counterpart left (the skin under a "skin" mask, the nose, both
//!   eyes, the whole face) is a region whose intact patches number less than a quarter of its
//!   hole pixels. Then, when a donor face is given (the `source`, with its landmarks), the donor
//!   aligned onto the target ([`AlignedDonor`]: landmark warp and per-region colour transfer) is
//!   set beside the target as a second exemplar picture whose patches centred on those regions
//!   may be copied; its aligned pixels are the first fill of those regions, and the nearest
//!   neighbour field starts on them. Without a donor, the region is filled from the face's other
//!   regions (the label penalty is then the same for every candidate and colour decides).
//! - Without any layout (no landmarks, no part masks: not a face), every intact patch of the
//!   picture is a candidate and the first fill is the mean known colour.

use super::part_swap::{AlignedDonor, FaceLayout, Region};
use super::{ForgeError, ForgeInput, Generator, SplitMix64, check_input};
use image::{GrayImage, RgbImage};

/// Levels are added until the hole's bounding box fits in this many pixels.
pub const COARSEST_HOLE: u32 = 40;

/// Cost added to a patch distance for every pixel whose face region differs between the hole's
/// patch and the exemplar (in squared 8-bit RGB units: a colour difference of 30 per channel).
pub const LABEL_PENALTY: f32 = 3.0 * 30.0 * 30.0;

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

/// One pyramid level of the canvas: the target, and when a donor is used, the aligned donor to
/// its right (`x >= tw`).
struct Level {
    w: i32,
    h: i32,
    /// Width of the target part of the canvas.
    tw: i32,
    /// Offset of the aligned donor to the right of the target (0: no donor).
    dx: i32,
    px: Vec<[f32; 3]>,
    hole: Vec<bool>,
    /// Face region per pixel ([`Region`] as u8; all 0 without a layout).
    label: Vec<u8>,
    /// Pixels an exemplar patch may contain.
    ok: Vec<bool>,
}

impl Level {
    fn idx(&self, x: i32, y: i32) -> usize {
        (y * self.w + x) as usize
    }
    fn down(&self) -> Level {
        let (w, h) = ((self.w + 1) / 2, (self.h + 1) / 2);
        let n = (w * h) as usize;
        let (mut px, mut hole, mut label, mut ok) = (vec![[0.0; 3]; n], vec![false; n], vec![0u8; n], vec![false; n]);
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                let mut k = 0.0;
                let mut any_hole = false;
                let mut all_ok = true;
                let mut votes = [0u8; 8];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (sx, sy) = ((2 * x + dx).min(self.w - 1), (2 * y + dy).min(self.h - 1));
                    let i = self.idx(sx, sy);
                    votes[self.label[i] as usize & 7] += 1;
                    all_ok &= self.ok[i];
                    if self.hole[i] {
                        any_hole = true;
                    } else {
                        for (a, v) in acc.iter_mut().zip(self.px[i]) {
                            *a += v;
                        }
                        k += 1.0;
                    }
                }
                let o = (y * w + x) as usize;
                hole[o] = any_hole;
                ok[o] = all_ok && !any_hole;
                // the most frequent region of the four, the first one on ties
                let first = self.label[self.idx((2 * x).min(self.w - 1), (2 * y).min(self.h - 1))];
                label[o] = (0..8u8).fold(first, |best, c| if votes[c as usize] > votes[best as usize & 7] { c } else { best });
                if k > 0.0 {
                    px[o] = acc.map(|v| v / k);
                }
            }
        }
        Level { w, h, tw: (self.tw + 1) / 2, dx: self.dx / 2, px, hole, label, ok }
    }
}

/// Counts of set pixels in any rectangle, O(1).
struct Integral {
    w: i32,
    sum: Vec<u32>,
}

impl Integral {
    fn new(l: &Level, set: impl Fn(usize) -> bool) -> Self {
        let w = l.w + 1;
        let mut sum = vec![0u32; (w * (l.h + 1)) as usize];
        for y in 0..l.h {
            let mut row = 0;
            for x in 0..l.w {
                row += set(l.idx(x, y)) as u32;
                sum[((y + 1) * w + x + 1) as usize] = sum[(y * w + x + 1) as usize] + row;
            }
        }
        Integral { w, sum }
    }
    /// Set pixels in `[x0, x1] x [y0, y1]` (inclusive).
    fn count(&self, x0: i32, y0: i32, x1: i32, y1: i32) -> u32 {
        let s = |x: i32, y: i32| self.sum[(y * self.w + x) as usize];
        s(x1 + 1, y1 + 1) + s(x0, y0) - s(x0, y1 + 1) - s(x1 + 1, y0)
    }
}

/// What guides one run: whether regions count, and which donor regions may be copied.
struct Guide {
    labelled: bool,
    /// Regions (by u8) whose donor patches are candidates.
    from_donor: [bool; 8],
}

/// Per level: the hole's integral, the "not allowed" integral, and the allowed centres.
struct Sources {
    hole: Integral,
    bad: Integral,
    centre_ok: Vec<bool>,
}

impl Sources {
    fn new(l: &Level, g: &Guide) -> Self {
        let centre_ok = (0..l.w * l.h)
            .map(|i| {
                let i = i as usize;
                let x = i as i32 % l.w;
                l.ok[i] && (x < l.tw || g.from_donor[l.label[i] as usize & 7])
            })
            .collect();
        Sources { hole: Integral::new(l, |i| l.hole[i]), bad: Integral::new(l, |i| !l.ok[i]), centre_ok }
    }
}

impl PatchInpaint {
    fn valid_source(&self, l: &Level, s: &Sources, x: i32, y: i32) -> bool {
        let r = self.patch_radius;
        x >= r && y >= r && x < l.w - r && y < l.h - r && s.centre_ok[l.idx(x, y)] && s.bad.count(x - r, y - r, x + r, y + r) == 0
    }

    fn dist(&self, l: &Level, g: &Guide, t: (i32, i32), s: (i32, i32), best: f32) -> f32 {
        let r = self.patch_radius;
        let mut d = 0.0f32;
        for dy in -r..=r {
            for dx in -r..=r {
                let (ti, si) = (l.idx(t.0 + dx, t.1 + dy), l.idx(s.0 + dx, s.1 + dy));
                let (a, b) = (l.px[ti], l.px[si]);
                d += (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2);
                if g.labelled && l.label[ti] != l.label[si] {
                    d += LABEL_PENALTY;
                }
            }
            if d >= best {
                return d;
            }
        }
        d
    }

    /// One level: EM steps of PatchMatch + voting. `nnf` maps target centres to source centres.
    /// Returns `false` when the level has no allowed exemplar patch (nothing was done).
    fn solve_level(&self, l: &mut Level, g: &Guide, nnf: &mut Vec<(i32, i32)>, rng: &mut SplitMix64, em_steps: usize) -> bool {
        let r = self.patch_radius;
        let src = Sources::new(l, g);
        let sources: Vec<(i32, i32)> =
            (r..l.h - r).flat_map(|y| (r..l.w - r).map(move |x| (x, y))).filter(|&(x, y)| self.valid_source(l, &src, x, y)).collect();
        if sources.is_empty() {
            return false;
        }
        // target centres: in-range centres of the target whose patch touches the hole
        let targets: Vec<(i32, i32)> = (r..l.h - r)
            .flat_map(|y| (r..l.tw.min(l.w) - r).map(move |x| (x, y)))
            .filter(|&(x, y)| src.hole.count(x - r, y - r, x + r, y + r) > 0)
            .collect();
        let n = (l.w * l.h) as usize;
        if nnf.len() != n {
            *nnf = vec![(-1, -1); n];
        }
        let mut cost = vec![f32::INFINITY; n];
        for &(x, y) in &targets {
            let i = l.idx(x, y);
            if !self.valid_source(l, &src, nnf[i].0, nnf[i].1) {
                // the same place on the aligned donor when its region is copied from there
                let beside = (x + l.dx, y);
                nnf[i] = if l.dx > 0 && g.from_donor[l.label[i] as usize & 7] && self.valid_source(l, &src, beside.0, beside.1) {
                    beside
                } else {
                    sources[(rng.next_u64() % sources.len() as u64) as usize]
                };
            }
        }
        for _ in 0..em_steps {
            for &(x, y) in &targets {
                let i = l.idx(x, y);
                cost[i] = self.dist(l, g, (x, y), nnf[i], f32::INFINITY);
            }
            for sweep in 0..self.sweeps {
                let fwd = sweep % 2 == 0;
                let step: i32 = if fwd { 1 } else { -1 };
                let order: Box<dyn Iterator<Item = &(i32, i32)>> =
                    if fwd { Box::new(targets.iter()) } else { Box::new(targets.iter().rev()) };
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
                        if cand != nnf[i] && self.valid_source(l, &src, cand.0, cand.1) {
                            let d = self.dist(l, g, (x, y), cand, cost[i]);
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
                        if self.valid_source(l, &src, cand.0, cand.1) {
                            let d = self.dist(l, g, (x, y), cand, cost[i]);
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
        true
    }

    /// The finest level (the canvas) and the guide: the target alone without a layout; with one,
    /// exemplars restricted to the face, and the aligned donor beside the target when a region
    /// of the hole has no counterpart left and a donor is given.
    fn canvas(&self, input: &ForgeInput<'_>) -> Result<(Level, Guide), ForgeError> {
        let (w, h) = input.target.dimensions();
        let r = self.patch_radius;
        let mut l = Level {
            w: w as i32,
            h: h as i32,
            tw: w as i32,
            dx: 0,
            px: input.target.pixels().map(|p| [p.0[0] as f32, p.0[1] as f32, p.0[2] as f32]).collect(),
            hole: input.mask.pixels().map(|p| p.0[0] > 0).collect(),
            label: vec![0; (w * h) as usize],
            ok: vec![false; (w * h) as usize],
        };
        let mut g = Guide { labelled: false, from_donor: [false; 8] };
        let Some(layout) = FaceLayout::of_face(input.target_parts, input.target_landmarks, w, h)? else {
            for (ok, hole) in l.ok.iter_mut().zip(&l.hole) {
                *ok = !hole;
            }
            return Ok((l, g));
        };
        g.labelled = true;
        // the landmark-derived ear bands often lie over hair or background: exemplars only for ears
        let ears = layout.labels.iter().zip(&l.hole).any(|(r, h)| *h && *r == Region::Ear);
        let allowed = |r: Region| r.is_face() && (ears || r != Region::Ear);
        for i in 0..l.label.len() {
            l.label[i] = layout.labels[i] as u8;
            l.ok[i] = !l.hole[i] && allowed(layout.labels[i]);
        }
        // regions of the hole with too few intact patches of their own
        let src = Sources::new(&l, &g);
        let (mut in_hole, mut intact) = ([0u64; 8], [0u64; 8]);
        for y in 0..l.h {
            for x in 0..l.w {
                let i = l.idx(x, y);
                let c = l.label[i] as usize & 7;
                if l.hole[i] {
                    in_hole[c] += 1;
                } else if self.valid_source(&l, &src, x, y) {
                    intact[c] += 1;
                }
            }
        }
        let needs: Vec<usize> = (1..8).filter(|&c| in_hole[c] > 0 && 4 * intact[c] < in_hole[c]).collect();
        let donor = match (input.source, input.source_landmarks, input.target_landmarks) {
            (Some(d), Some(dl), Some(tl)) if !needs.is_empty() => {
                let (dw, dh) = d.dimensions();
                FaceLayout::of_face(input.source_parts, Some(dl), dw, dh)?.map(|dlayout| (d, dl, tl, dlayout))
            }
            _ => None,
        };
        let Some((d, dl, tl, dlayout)) = donor else {
            return Ok((l, g));
        };
        let everywhere = GrayImage::from_pixel(w, h, image::Luma([255]));
        let aligned = AlignedDonor::new(input.target, &layout, tl, d, &dlayout, dl, &everywhere)?;
        for c in needs {
            g.from_donor[c] = true;
        }
        // the canvas: target | gap | donor; the donor's offset is a multiple of 64 (so it halves
        // exactly down the pyramid) and leaves a gap of a patch at least, so no patch spans both
        let dx = (w as i32 + 2 * r + 1 + 63) / 64 * 64;
        let cw = dx + w as i32;
        let n = (cw * h as i32) as usize;
        let mut canvas = Level {
            w: cw,
            h: h as i32,
            tw: w as i32,
            dx,
            px: vec![[0.0; 3]; n],
            hole: vec![false; n],
            label: vec![0; n],
            ok: vec![false; n],
        };
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let (ti, di, ci) = (l.idx(x, y), canvas.idx(x + dx, y), canvas.idx(x, y));
                canvas.px[ci] = l.px[ti];
                canvas.hole[ci] = l.hole[ti];
                canvas.label[ci] = l.label[ti];
                canvas.ok[ci] = l.ok[ti];
                canvas.px[di] = aligned.px[ti];
                canvas.label[di] = aligned.labels[ti] as u8;
                canvas.ok[di] = aligned.covered[ti] && allowed(aligned.labels[ti]);
            }
        }
        Ok((canvas, g))
    }

    pub fn inpaint(&self, input: &ForgeInput<'_>) -> Result<RgbImage, ForgeError> {
        check_input(input)?;
        let (w, h) = input.target.dimensions();
        let r = self.patch_radius;
        if (w as i32) < 4 * r + 2 || (h as i32) < 4 * r + 2 {
            return Err(ForgeError::Input(format!("image {w}x{h} is too small for {0}x{0} patches", 2 * r + 1)));
        }
        let (base, guide) = self.canvas(input)?;
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
        // coarsest: start from the mean known colour (of the same region, when the layout is
        // known), or from the aligned donor where the region is copied from it
        {
            let l = levels.last_mut().expect("non-empty");
            let mean = |pick: &dyn Fn(usize) -> bool| -> Option<[f32; 3]> {
                let (mut s, mut k) = ([0.0f32; 3], 0.0f32);
                for i in 0..l.px.len() {
                    if pick(i) {
                        for (a, v) in s.iter_mut().zip(l.px[i]) {
                            *a += v;
                        }
                        k += 1.0;
                    }
                }
                (k > 0.0).then(|| s.map(|v| v / k))
            };
            let in_target = |i: usize| (i as i32 % l.w) < l.tw;
            let all = mean(&|i| in_target(i) && !l.hole[i]).unwrap_or([128.0; 3]);
            let mut fill = [all; 8];
            if guide.labelled {
                let face = mean(&|i| in_target(i) && l.ok[i]).unwrap_or(all);
                for (c, f) in fill.iter_mut().enumerate() {
                    *f = mean(&|i| in_target(i) && l.ok[i] && l.label[i] as usize == c).unwrap_or(face);
                }
            }
            for i in 0..l.px.len() {
                if !l.hole[i] {
                    continue;
                }
                let c = l.label[i] as usize & 7;
                let (x, y) = (i as i32 % l.w, i as i32 / l.w);
                l.px[i] = if l.dx > 0 && guide.from_donor[c] { l.px[l.idx((x + l.dx).min(l.w - 1), y)] } else { fill[c] };
            }
        }
        let mut nnf: Vec<(i32, i32)> = Vec::new();
        let mut solved_finest = false;
        for li in (0..levels.len()).rev() {
            let steps = if li == 0 { self.em_steps.clamp(1, 2) } else { self.em_steps + 1 };
            let solved = self.solve_level(&mut levels[li], &guide, &mut nnf, &mut rng, steps);
            if li == 0 {
                solved_finest = solved;
            }
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
                        if nnf.len() == coarse.px.len() {
                            let (sx, sy) = nnf[ci];
                            if sx >= 0 {
                                up[fi] = (2 * sx + x % 2, 2 * sy + y % 2);
                            }
                        }
                    }
                }
                nnf = up;
            }
        }
        if !solved_finest {
            return Err(ForgeError::Input(if guide.labelled {
                "the mask leaves no intact patch of the face to copy from: give a donor face (a source) to copy the parts from".into()
            } else {
                "the mask leaves no intact patch to copy from".into()
            }));
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
            "kind": "classical: face-aware multi-scale PatchMatch exemplar inpainting (exemplars from the face's own regions, or from an aligned donor face where a region has no counterpart left; no learned weights)",
            "patch_size": 2 * self.patch_radius + 1, "em_steps": self.em_steps, "sweeps": self.sweeps,
            "label_penalty": LABEL_PENALTY,
            "execution_provider": "cpu (built-in)",
        })
    }
}
