//! Meteor 1.5's aligner: the four matchers (exact, stem, synonym, paraphrase) and the beam
//! search over their matches, replicated decision for decision (including the Java code's
//! quirks: words compared by `String.hashCode()`, a search that scores stem/synonym/paraphrase
//! matches with truncated integer weights, and the distance tie-breaker that is added to the
//! parent path rather than the new one), so that ties resolve exactly as in the Java scorer.

use super::Word;

pub const EXACT: u8 = 0;
pub const STEM: u8 = 1;
pub const SYNONYM: u8 = 2;
pub const PARAPHRASE: u8 = 3;
const MODULES: usize = 4;
/// Module weights the search uses (`MeteorScorer.loadConfiguration`): 1.0 exact, 0.5 otherwise.
const SEARCH_WEIGHTS: [f64; MODULES] = [1.0, 0.5, 0.5, 0.5];
const BEAM: usize = 40;

/// A match: `length` words of the reference from `start` against `match_length` words of the
/// hypothesis from `match_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub start: usize,
    pub length: usize,
    pub match_start: usize,
    pub match_length: usize,
    pub module: u8,
}

/// What the scorer needs of an alignment (per module: matched content and function words).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub test_len: usize,
    pub ref_len: usize,
    pub test_function: usize,
    pub ref_function: usize,
    pub content1: [usize; MODULES],
    pub content2: [usize; MODULES],
    pub function1: [usize; MODULES],
    pub function2: [usize; MODULES],
    pub chunks: usize,
}

/// The paraphrase table restricted to the words in play: `paths(words, i)` lists
/// (length, paraphrase) for every table phrase that starts at `words[i]`, shortest first and in
/// file order, as `ParaphraseTransducer.getReferencePaths` does.
pub trait Paraphrases {
    fn paths(&self, words: &[u32], start: usize, out: &mut Vec<(usize, u32)>);
    fn paraphrase(&self, idx: u32) -> &[u32];
}

/// A partial alignment of the beam search. The per-path arrays (chosen match per reference
/// position, used words of either side) live in a flat arena of fixed-size slots; a new path is
/// a head naming its parent's slot and the match it adds, and only the paths that survive into
/// the beam get a slot of their own.
#[derive(Clone, Copy, Debug)]
struct Head {
    /// matches1 + matches2 (truncated weighted match counts; only their sum is compared)
    matched: i32,
    chunks: i32,
    distance: i32,
    idx: usize,
    last_match_end: Option<usize>,
    /// the parent's slot in the current arena
    parent: usize,
    /// the match this path adds to its parent (NONE: none), applied when the path survives
    pending: u32,
    /// insertion order in its beam: the stable sort's tie-breaker
    order: usize,
}

impl Head {
    /// `Constants.PARTIAL_COMPARE_TOTAL` (more weighted matches, then fewer chunks, then less
    /// distance) then insertion order (Java's sort is stable), as one integer.
    fn key(&self) -> u128 {
        let flip = |x: i32| (x as u32 ^ 0x8000_0000) as u128; // order-preserving i32 -> u32
        (!flip(self.matched) & 0xFFFF_FFFF) << 96 | flip(self.chunks) << 64 | flip(self.distance) << 32 | self.order as u128
    }
    /// Counts a match into the path's statistics (shared by the fixed and the chosen case).
    fn take(&mut self, m: &Match) {
        let w = SEARCH_WEIGHTS[m.module as usize];
        // Java: `matches1 += (int)(matchLength * weight)`, the same for matches2
        self.matched += (m.match_length as f64 * w) as i32 + (m.length as f64 * w) as i32;
        if self.last_match_end.is_some_and(|e| e != m.match_start) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }
}

const NONE: u32 = u32::MAX;

/// Slot layout: `n2` match indices (NONE = no match starts here), then the used-word bitsets of
/// the hypothesis and of the reference.
struct Layout {
    n2: usize,
    w1: usize,
    stride: usize,
}

impl Layout {
    fn new(n1: usize, n2: usize) -> Self {
        let (w1, w2) = (n1.div_ceil(32), n2.div_ceil(32));
        Layout { n2, w1, stride: n2 + w1 + w2 }
    }
    fn used1(&self, slot: &[u32], j: usize) -> bool {
        slot[self.n2 + j / 32] >> (j % 32) & 1 == 1
    }
    fn used2(&self, slot: &[u32], i: usize) -> bool {
        slot[self.n2 + self.w1 + i / 32] >> (i % 32) & 1 == 1
    }
    fn is_used(&self, slot: &[u32], m: &Match) -> bool {
        (m.start..m.start + m.length).any(|i| self.used2(slot, i))
            || (m.match_start..m.match_start + m.match_length).any(|j| self.used1(slot, j))
    }
    fn set_used(&self, slot: &mut [u32], m: &Match) {
        for i in m.start..m.start + m.length {
            slot[self.n2 + self.w1 + i / 32] |= 1 << (i % 32);
        }
        for j in m.match_start..m.match_start + m.match_length {
            slot[self.n2 + j / 32] |= 1 << (j % 32);
        }
    }
}

/// Aligns hypothesis `w1` with reference `w2` (words resolved against the shared vocabulary).
pub fn align(w1: &[&Word], w2: &[&Word], para: &impl Paraphrases) -> Counts {
    let (n1, n2) = (w1.len(), w2.len());
    let mut matches: Vec<Vec<Match>> = vec![Vec::new(); n2];
    let mut cov1 = vec![0u32; n1];
    let mut cov2 = vec![0u32; n2];
    let mut add = |m: Match, matches: &mut Vec<Vec<Match>>| {
        cov1[m.match_start..m.match_start + m.match_length].iter_mut().for_each(|c| *c += 1);
        cov2[m.start..m.start + m.length].iter_mut().for_each(|c| *c += 1);
        matches[m.start].push(m);
    };
    let one = |i, j, module| Match { start: i, length: 1, match_start: j, match_length: 1, module };
    let identical = n1 == n2 && w1.iter().zip(w2).all(|(a, b)| a.hash == b.hash);
    // exact
    for (i, b) in w2.iter().enumerate() {
        for (j, a) in w1.iter().enumerate() {
            if a.hash == b.hash {
                add(one(i, j, EXACT), &mut matches);
            }
        }
    }
    if !identical {
        for (i, b) in w2.iter().enumerate() {
            for (j, a) in w1.iter().enumerate() {
                if a.stem_hash == b.stem_hash && a.hash != b.hash {
                    add(one(i, j, STEM), &mut matches);
                }
            }
        }
        for (i, b) in w2.iter().enumerate() {
            for (j, a) in w1.iter().enumerate() {
                if a.hash != b.hash && a.synonyms.binary_search(&b.id).is_ok() {
                    add(one(i, j, SYNONYM), &mut matches);
                }
            }
        }
        let ids1: Vec<u32> = w1.iter().map(|w| w.id).collect();
        let ids2: Vec<u32> = w2.iter().map(|w| w.id).collect();
        // where each word occurs: a paraphrase is looked for only where its first word is
        let at = |ids: &[u32]| {
            let mut m: rustc_hash::FxHashMap<u32, Vec<usize>> = Default::default();
            for (i, &w) in ids.iter().enumerate() {
                m.entry(w).or_default().push(i);
            }
            m
        };
        let (at1, at2) = (at(&ids1), at(&ids2));
        let mut paths = Vec::new();
        let occurs = |p: &[u32], words: &[u32], at: usize| words.len() >= at + p.len() && words[at..at + p.len()] == *p;
        for k in 0..n2 {
            paths.clear();
            para.paths(&ids2, k, &mut paths);
            for &(length, idx) in &paths {
                let p = para.paraphrase(idx);
                // in increasing position order, as Java's scan of every start
                for &s in p.first().and_then(|w| at1.get(w)).map(Vec::as_slice).unwrap_or(&[]) {
                    if occurs(p, &ids1, s) {
                        add(Match { start: k, length, match_start: s, match_length: p.len(), module: PARAPHRASE }, &mut matches);
                    }
                }
            }
        }
        for s in 0..n1 {
            paths.clear();
            para.paths(&ids1, s, &mut paths);
            for &(length, idx) in &paths {
                let p = para.paraphrase(idx);
                for &k in p.first().and_then(|w| at2.get(w)).map(Vec::as_slice).unwrap_or(&[]) {
                    if occurs(p, &ids2, k) {
                        add(Match { start: k, length: p.len(), match_start: s, match_length: length, module: PARAPHRASE }, &mut matches);
                    }
                }
            }
        }
    }
    // matches flattened: position i's candidates are flat[offsets[i]..offsets[i + 1]]
    let mut offsets = Vec::with_capacity(n2 + 1);
    let mut flat = Vec::with_capacity(matches.iter().map(Vec::len).sum());
    for ms in &matches {
        offsets.push(flat.len());
        flat.extend_from_slice(ms);
    }
    offsets.push(flat.len());
    // one-to-one, non-overlapping matches are fixed
    let lay = Layout::new(n1, n2);
    let mut start = vec![0u32; lay.stride];
    start[..n2].fill(NONE);
    for (i, ms) in matches.iter().enumerate() {
        if let [m] = ms.as_slice() {
            let overlap = (0..m.length).any(|j| cov2[i + j] != 1) || (0..m.match_length).any(|j| cov1[m.match_start + j] != 1);
            if !overlap {
                start[i] = offsets[i] as u32;
                lay.set_used(&mut start, m);
            }
        }
    }
    let best_slot = resolve(&flat, &offsets, &lay, start);
    let best: Vec<Option<Match>> = best_slot[..n2].iter().map(|&k| (k != NONE).then(|| flat[k as usize])).collect();
    let mut c = Counts { test_len: n1, ref_len: n2, ..Counts::default() };
    c.test_function = w1.iter().filter(|w| w.function).count();
    c.ref_function = w2.iter().filter(|w| w.function).count();
    for m in best.iter().flatten() {
        let md = m.module as usize;
        for w in &w1[m.match_start..m.match_start + m.match_length] {
            if w.function { c.function1[md] += 1 } else { c.content1[md] += 1 }
        }
        for w in &w2[m.start..m.start + m.length] {
            if w.function { c.function2[md] += 1 } else { c.content2[md] += 1 }
        }
    }
    c.chunks = count_chunks(&best);
    c
}

/// Puts the first `BEAM` heads of a stable sort (Java's `Collections.sort`) in front, in order:
/// a selection on (order, position) and a sort of the selected only.
fn top_beam(heads: &mut [Head]) {
    if heads.len() > BEAM {
        heads.select_nth_unstable_by_key(BEAM - 1, Head::key);
        heads[..BEAM].sort_unstable_by_key(Head::key);
    } else if heads.len() > 1 {
        heads.sort_unstable_by_key(Head::key);
    }
}

/// `Aligner.resolve`: left-to-right beam search over the reference positions. Returns the
/// best path's slot.
fn resolve(flat: &[Match], offsets: &[usize], lay: &Layout, start: Vec<u32>) -> Vec<u32> {
    let n = lay.n2;
    let st = lay.stride;
    let root = Head { matched: 0, chunks: 0, distance: 0, idx: 0, last_match_end: None, parent: 0, pending: NONE, order: 0 };
    // `prev` holds the slots the heads' parents live in; `cur` gets the survivors' own slots
    let (mut heads, mut prev, mut cur) = (vec![root], start, Vec::<u32>::new());
    let mut next: Vec<Head> = Vec::new();
    let materialize = |h: &Head, prev: &[u32], cur: &mut Vec<u32>| {
        let at = cur.len();
        cur.extend_from_slice(&prev[h.parent * st..(h.parent + 1) * st]);
        if h.pending != NONE {
            let m = &flat[h.pending as usize];
            let body = &mut cur[at..at + st];
            lay.set_used(body, m);
            body[m.start] = h.pending;
        }
    };
    for current in 0..=n {
        top_beam(&mut heads);
        let take = heads.len().min(BEAM);
        cur.clear();
        for h in &heads[..take] {
            materialize(h, &prev, &mut cur);
        }
        next.clear();
        let push = |next: &mut Vec<Head>, h: Head, parent: usize, pending: u32| next.push(Head { parent, pending, order: next.len(), ..h });
        for (slot, h) in heads[..take].iter_mut().enumerate() {
            let body = &cur[slot * st..(slot + 1) * st];
            if current == n {
                if h.last_match_end.is_some() {
                    h.chunks += 1;
                }
                push(&mut next, *h, slot, NONE);
                continue;
            }
            if lay.used2(body, current) {
                if current < h.idx {
                    push(&mut next, *h, slot, NONE);
                } else if body[h.idx] != NONE {
                    let m = flat[body[h.idx] as usize];
                    h.take(&m);
                    h.distance += (m.start as i32 - m.match_start as i32).abs();
                    push(&mut next, *h, slot, NONE);
                }
                continue;
            }
            for (k, m) in flat.iter().enumerate().take(offsets[current + 1]).skip(offsets[current]) {
                if lay.is_used(body, m) {
                    continue;
                }
                let mut nh = *h;
                nh.take(m);
                push(&mut next, nh, slot, k as u32);
                // Java adds this to the parent path (a quirk kept for identical tie-breaking)
                h.distance += (m.start as i32 - m.match_start as i32).abs();
            }
            if h.last_match_end.is_some() {
                h.chunks += 1;
                h.last_match_end = None;
            }
            h.idx += 1;
            push(&mut next, *h, slot, NONE);
        }
        if next.is_empty() {
            // Java: "unexpected conditions - skipping matches until possible to continue";
            // nothing was pushed, so the first head is as it was
            push(&mut next, heads[0], 0, NONE);
        }
        std::mem::swap(&mut heads, &mut next);
        std::mem::swap(&mut prev, &mut cur);
    }
    top_beam(&mut heads);
    let mut out = Vec::with_capacity(st);
    materialize(&heads[0], &prev, &mut out);
    out
}

/// `Aligner.getCountAndChunks`: chunks of the final alignment.
fn count_chunks(matches: &[Option<Match>]) -> usize {
    let (mut chunks, mut idx, mut last) = (0, 0, None::<usize>);
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last.take().is_some() {
                    chunks += 1;
                }
                idx += 1;
            }
            Some(m) => {
                if last.is_some_and(|e| e != m.match_start) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last = Some(m.match_start + m.match_length);
            }
        }
    }
    if last.is_some() {
        chunks += 1;
    }
    chunks
}
