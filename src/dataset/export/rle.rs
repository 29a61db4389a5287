//! COCO run-length encoding of binary masks, as pycocotools writes it: runs over the pixels in
//! column-major order, starting with a (possibly empty) run of zeros, compressed into the
//! ASCII string of `maskApi.c`'s `rleToString` (5 bits per character, differences against the
//! run two places back from the third run on).

/// Runs of a `width` x `height` mask given row-major (`mask[y * width + x]`, non-zero = 1).
pub fn runs(mask: &[u8], width: usize, height: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut current = 0u8;
    let mut n = 0u64;
    for x in 0..width {
        for y in 0..height {
            let v = (mask[y * width + x] != 0) as u8;
            if v != current {
                out.push(n);
                n = 0;
                current = v;
            }
            n += 1;
        }
    }
    out.push(n);
    out
}

/// The compressed string of `runs`.
pub fn to_string(runs: &[u64]) -> String {
    let mut s = String::new();
    for i in 0..runs.len() {
        let mut x = runs[i] as i64;
        if i > 2 {
            x -= runs[i - 2] as i64;
        }
        let mut more = true;
        while more {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            s.push((c + 48) as char);
        }
    }
    s
}

/// Decodes a compressed string back to runs (`rleFrString`), for tests.
pub fn from_string(s: &str) -> Vec<u64> {
    let b = s.as_bytes();
    let mut out: Vec<u64> = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        let mut more = true;
        while more {
            let c = (b[p] - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && (c & 0x10) != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if out.len() > 2 {
            x += out[out.len() - 2] as i64;
        }
        out.push(x as u64);
    }
    out
}

/// Pixel count and `[x, y, w, h]` box of a row-major mask.
pub fn area_and_bbox(mask: &[u8], width: usize, height: usize) -> (u64, [u32; 4]) {
    let (mut area, mut x0, mut y0, mut x1, mut y1) = (0u64, usize::MAX, usize::MAX, 0usize, 0usize);
    for y in 0..height {
        for x in 0..width {
            if mask[y * width + x] != 0 {
                area += 1;
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    if area == 0 {
        return (0, [0, 0, 0, 0]);
    }
    (area, [x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_known_strings() {
        // 3x2 mask, row-major: [[0,1,1],[0,1,0]] -> column-major 0,0 | 1,1 | 1,0 -> runs 2,3,1
        let m = [0, 1, 1, 0, 1, 0];
        let r = runs(&m, 3, 2);
        assert_eq!(r, vec![2, 3, 1]);
        assert_eq!(from_string(&to_string(&r)), r);
        // long runs and the difference coding from the fourth run on
        let r = vec![100_000, 5, 262_139, 3, 1, 0, 70_000];
        assert_eq!(from_string(&to_string(&r)), r);
        // an empty mask is one run of zeros
        assert_eq!(runs(&[0; 4], 2, 2), vec![4]);
        assert_eq!(area_and_bbox(&m, 3, 2), (3, [1, 0, 2, 2]));
    }
}
