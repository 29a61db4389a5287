//! A one-time on-disk index of Meteor's paraphrase table, so that a run reads only the entries
//! its captions can use instead of unpacking 272 MB.
//!
//! The cache is built from `paraphrase-en.gz` the first time (one full pass) and written
//! atomically (a temporary file, fsync, rename) to the cache folder: `MMTT_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/mmtt`, else `~/.cache/mmtt`. Its name and header carry the table's size and
//! modification time, so a changed table makes a new cache (older ones are removed). Every part
//! a run reads is checked: the header, the word list and the group index against one hash, each
//! group of entries against its own; a cache that fails is rebuilt.
//!
//! Layout (little endian): a 64-byte header (magic, version, source size and mtime, counts,
//! the index hash); word offsets (`u32`, n+1) and the words' bytes, sorted; group offsets into
//! the entry stream (`u64`, n+1) and one hash per group (`u64`, n); the entry stream (`u32`s):
//! group `i` holds the entries whose rarest word (in the fewest entries) is word `i`, each as
//! its number in the table, `len(phrase) | len(para) << 16`, the phrase's word indices, the
//! paraphrase's. A run reads the groups of its captions' words (every word of an entry it can
//! use is one of them, the rarest too) and adds what it keeps in table order.

use super::{ParaTable, io_err};
use crate::eval::EvalError;
use rustc_hash::{FxHashMap as HashMap, FxHasher};
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MMTTPARA";
const VERSION: u32 = 2;
const HEADER: usize = 64;

/// What a run's paraphrase table came from (printed by `mmtt bench captions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache was valid and read.
    Cache,
    /// The cache was missing, stale or corrupt: built from the table, then read.
    Built,
    /// No cache folder could be written: the table was streamed (the slow path).
    Streamed,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

/// The cache folder, if one is configured.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("MMTT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("mmtt"));
    }
    std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache/mmtt"))
}

/// The table's identity: size and modification time (ns since the epoch).
fn identity(table: &Path) -> Result<(u64, u64), EvalError> {
    let m = std::fs::metadata(table).map_err(|e| io_err(table, e))?;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64);
    Ok((m.len(), mtime))
}

fn cache_name(size: u64, mtime: u64) -> String {
    format!("meteor-paraphrase-v{VERSION}-{size}-{mtime}.idx")
}

/// The restricted paraphrase table for `vocab`, through the cache when possible.
pub fn load(table: &Path, vocab: &HashMap<String, u32>) -> Result<(ParaTable, Source), EvalError> {
    load_in(cache_dir().as_deref(), table, vocab)
}

/// [`load`] with the cache in `dir` (none: stream the table).
pub fn load_in(dir: Option<&Path>, table: &Path, vocab: &HashMap<String, u32>) -> Result<(ParaTable, Source), EvalError> {
    let (size, mtime) = identity(table)?;
    let Some(dir) = dir else {
        return Ok((ParaTable::load(table, vocab)?, Source::Streamed));
    };
    let path = dir.join(cache_name(size, mtime));
    if let Ok(Some(t)) = read(&path, size, mtime, vocab) {
        return Ok((t, Source::Cache));
    }
    // missing, stale or corrupt: build it (a failure to write is not an error: stream instead)
    let built = build(table)?;
    if write(dir, &path, size, mtime, &built).is_err() {
        return Ok((ParaTable::load(table, vocab)?, Source::Streamed));
    }
    match read(&path, size, mtime, vocab)? {
        Some(t) => Ok((t, Source::Built)),
        None => {
            Err(EvalError::Input(format!("{}: the paraphrase cache just written does not read back; remove it and retry", path.display())))
        }
    }
}

/// The whole table, indexed: sorted words, entries grouped by their rarest word.
struct Built {
    words: Vec<Vec<u8>>,
    /// per word: the entry stream of its group
    groups: Vec<Vec<u32>>,
}

fn build(table: &Path) -> Result<Built, EvalError> {
    use std::io::BufRead;
    let f = std::fs::File::open(table).map_err(|e| io_err(table, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
    let mut lines = std::io::BufReader::with_capacity(4 << 20, gz);
    let mut ids: HashMap<Vec<u8>, u32> = HashMap::default();
    let mut words: Vec<Vec<u8>> = Vec::new();
    let intern = |line: &[u8], out: &mut Vec<u32>, ids: &mut HashMap<Vec<u8>, u32>, words: &mut Vec<Vec<u8>>| {
        out.clear();
        for tok in line.split(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0C)).filter(|t| !t.is_empty()) {
            let id = match ids.get(tok) {
                Some(&id) => id,
                None => {
                    let id = words.len() as u32;
                    ids.insert(tok.to_vec(), id);
                    words.push(tok.to_vec());
                    id
                }
            };
            out.push(id);
        }
    };
    // all entries in file order: [len(phrase) | len(para) << 16, phrase ids, para ids]
    let mut flat: Vec<u32> = Vec::new();
    let (mut prob, mut phrase, mut para) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p, mut q) = (Vec::new(), Vec::new());
    loop {
        prob.clear();
        phrase.clear();
        para.clear();
        let n = lines.read_until(b'\n', &mut prob).map_err(|e| io_err(table, e))?;
        let m = lines.read_until(b'\n', &mut phrase).map_err(|e| io_err(table, e))?;
        let k = lines.read_until(b'\n', &mut para).map_err(|e| io_err(table, e))?;
        if n == 0 || m == 0 || k == 0 {
            break;
        }
        intern(&phrase, &mut p, &mut ids, &mut words);
        intern(&para, &mut q, &mut ids, &mut words);
        if p.is_empty() || p.len() > 0xFFFF || q.len() > 0xFFFF {
            continue; // an empty phrase matches nothing
        }
        flat.push(p.len() as u32 | (q.len() as u32) << 16);
        flat.extend_from_slice(&p);
        flat.extend_from_slice(&q);
    }
    // how many entries each word occurs in: an entry is filed under its rarest word, so that a
    // run reads few entries it cannot use (every word of a usable entry is a caption word)
    let mut freq = vec![0u32; words.len()];
    let mut i = 0;
    while i < flat.len() {
        let len = 1 + (flat[i] & 0xFFFF) as usize + (flat[i] >> 16) as usize;
        let mut ws: Vec<u32> = flat[i + 1..i + len].to_vec();
        ws.sort_unstable();
        ws.dedup();
        for w in ws {
            freq[w as usize] += 1;
        }
        i += len;
    }
    // sorted words: ids remapped to ranks
    let mut order: Vec<u32> = (0..words.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| words[a as usize].cmp(&words[b as usize]));
    let mut rank = vec![0u32; words.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); words.len()];
    let (mut i, mut n) = (0, 0u32);
    while i < flat.len() {
        let len = 1 + (flat[i] & 0xFFFF) as usize + (flat[i] >> 16) as usize;
        let ws = &flat[i + 1..i + len];
        let rarest = ws.iter().copied().min_by_key(|&w| (freq[w as usize], rank[w as usize])).unwrap_or(0);
        let g = &mut groups[rank[rarest as usize] as usize];
        g.push(n);
        g.push(flat[i]);
        g.extend(ws.iter().map(|&w| rank[w as usize]));
        i += len;
        n += 1;
    }
    let sorted_words = order.iter().map(|&i| std::mem::take(&mut words[i as usize])).collect();
    Ok(Built { words: sorted_words, groups })
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write(dir: &Path, path: &Path, size: u64, mtime: u64, b: &Built) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut word_off = Vec::with_capacity(b.words.len() + 1);
    let mut blob = Vec::new();
    word_off.push(0u32);
    for w in &b.words {
        blob.extend_from_slice(w);
        word_off.push(u32::try_from(blob.len()).map_err(std::io::Error::other)?);
    }
    let mut group_off = Vec::with_capacity(b.groups.len() + 1);
    let mut group_hash = Vec::with_capacity(b.groups.len());
    let mut stream: Vec<u8> = Vec::new();
    group_off.push(0u64);
    for g in &b.groups {
        let bytes = u32s(g);
        group_hash.push(hash(&bytes));
        stream.extend_from_slice(&bytes);
        group_off.push((stream.len() / 4) as u64);
    }
    let index = [u32s(&word_off), blob, u64s(&group_off), u64s(&group_hash)].concat();
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&size.to_le_bytes());
    header.extend_from_slice(&mtime.to_le_bytes());
    header.extend_from_slice(&(b.words.len() as u64).to_le_bytes());
    header.extend_from_slice(&(index.len() as u64).to_le_bytes());
    let h = hash(&[&header[..], &index[..]].concat());
    header.extend_from_slice(&h.to_le_bytes());
    header.resize(HEADER, 0);
    let tmp = dir.join(format!(".{}.part-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("cache"), std::process::id()));
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(&header)?;
        f.write_all(&index)?;
        f.write_all(&stream)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        // older caches of other table versions
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with("meteor-paraphrase-") && e.path() != path {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    result
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads the entries `vocab` can use; `Ok(None)` when the cache is missing, stale or corrupt.
fn read(path: &Path, size: u64, mtime: u64, vocab: &HashMap<String, u32>) -> Result<Option<ParaTable>, EvalError> {
    let Ok(f) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let file_len = f.metadata().map_err(|e| io_err(path, e))?.len();
    let mut header = [0u8; HEADER];
    if f.read_exact_at(&mut header, 0).is_err()
        || &header[..8] != MAGIC
        || le_u32(&header, 8) != VERSION
        || le_u64(&header, 16) != size
        || le_u64(&header, 24) != mtime
    {
        return Ok(None);
    }
    let n = le_u64(&header, 32) as usize;
    let index_len = le_u64(&header, 40) as usize;
    let want_hash = le_u64(&header, 48);
    if (HEADER + index_len) as u64 > file_len || index_len < 4 * (n + 1) + 8 * (n + 1) + 8 * n {
        return Ok(None);
    }
    let mut index = vec![0u8; index_len];
    if f.read_exact_at(&mut index, HEADER as u64).is_err() || hash(&[&header[..48], &index[..]].concat()) != want_hash {
        return Ok(None);
    }
    let blob_len = index_len - 4 * (n + 1) - 16 * n - 8;
    let word_off = |i: usize| le_u32(&index, 4 * i) as usize;
    let blob = &index[4 * (n + 1)..4 * (n + 1) + blob_len];
    let goff_at = 4 * (n + 1) + blob_len;
    let group_off = |i: usize| le_u64(&index, goff_at + 8 * i);
    let ghash_at = goff_at + 8 * (n + 1);
    let group_hash = |i: usize| le_u64(&index, ghash_at + 8 * i);
    let stream_at = (HEADER + index_len) as u64;
    if word_off(n) != blob_len || stream_at + 4 * group_off(n) != file_len {
        return Ok(None);
    }
    let word = |i: usize| &blob[word_off(i)..word_off(i + 1)];
    // the captions' words in the table: table rank -> caption id
    let mut map: HashMap<u32, u32> = HashMap::default();
    for (w, &id) in vocab {
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match word(mid).cmp(w.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    map.insert(mid as u32, id);
                    break;
                }
            }
        }
    }
    let t_index = std::time::Instant::now();
    let mut firsts: Vec<u32> = map.keys().copied().collect();
    firsts.sort_unstable();
    // (entry number, phrase, paraphrase) of the usable entries, then in table order
    let mut kept: Vec<(u32, Vec<u32>, Vec<u32>)> = Vec::new();
    let (mut p, mut q) = (Vec::new(), Vec::new());
    for g in firsts {
        let (a, b) = (group_off(g as usize), group_off(g as usize + 1));
        if a == b {
            continue;
        }
        if b < a {
            return Ok(None);
        }
        let mut bytes = vec![0u8; 4 * (b - a) as usize];
        if f.read_exact_at(&mut bytes, stream_at + 4 * a).is_err() || hash(&bytes) != group_hash(g as usize) {
            return Ok(None);
        }
        let vals: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut i = 0;
        while i + 1 < vals.len() {
            let (pl, ql) = ((vals[i + 1] & 0xFFFF) as usize, (vals[i + 1] >> 16) as usize);
            let end = i + 2 + pl + ql;
            if end > vals.len() || pl == 0 {
                return Ok(None);
            }
            p.clear();
            q.clear();
            let ok = vals[i + 2..i + 2 + pl].iter().all(|w| map.get(w).map(|&id| p.push(id)).is_some())
                && vals[i + 2 + pl..end].iter().all(|w| map.get(w).map(|&id| q.push(id)).is_some());
            if ok {
                kept.push((vals[i], p.clone(), q.clone()));
            }
            i = end;
        }
        if i != vals.len() {
            return Ok(None);
        }
    }
    kept.sort_unstable_by_key(|e| e.0);
    let mut t = ParaTable { nodes: 1, ..Default::default() };
    for (_, p, q) in kept {
        t.add(&p, q);
    }
    if std::env::var_os("MMTT_METEOR_TIMING").is_some() {
        eprintln!("paracache: groups read in {:?}, index {} bytes", t_index.elapsed(), index_len);
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::meteor::MeteorData;

    /// The trie's entries as (phrase, paraphrase), phrases sorted, each phrase's in file order.
    fn entries(t: &ParaTable) -> Vec<(Vec<u32>, Vec<u32>)> {
        let mut children: HashMap<u32, Vec<(u32, u32)>> = HashMap::default();
        for (&(node, w), &child) in &t.trans {
            children.entry(node).or_default().push((w, child));
        }
        let mut out = Vec::new();
        let mut stack = vec![(0u32, Vec::new())];
        while let Some((node, phrase)) = stack.pop() {
            for &k in t.emit.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
                out.push((phrase.clone(), t.paras[k as usize].clone()));
            }
            for &(w, c) in children.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
                let mut p = phrase.clone();
                p.push(w);
                stack.push((c, p));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn the_cache_equals_streaming_the_table_and_corruption_is_rebuilt() {
        let data = MeteorData::locate().unwrap().expect("pycocoevalcap's Meteor data (scripts/setup.sh installs it into .venv)");
        let text = "the left eye is blurred and the nose looks smudged a visible blending seam does not match the lighting \
                    of the face it is a strong sign of editing skin colour darker unnatural artificial fake edges picture image \
                    in comparison to relative to compared with the rest 2.5 px off 30 % -- ||| can not gon na \u{201e} \u{44f}";
        let mut vocab: HashMap<String, u32> = HashMap::default();
        for w in text.split_whitespace() {
            let n = vocab.len() as u32;
            vocab.entry(w.to_string()).or_insert(n);
        }
        let streamed = ParaTable::load(&data.paraphrases(), &vocab).unwrap();
        assert!(streamed.len() > 100, "the vocabulary has paraphrases: {}", streamed.len());
        let dir = std::env::temp_dir().join(format!("mmtt-paracache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (built, src) = load_in(Some(&dir), &data.paraphrases(), &vocab).unwrap();
        assert_eq!(src, Source::Built);
        let (cached, src) = load_in(Some(&dir), &data.paraphrases(), &vocab).unwrap();
        assert_eq!(src, Source::Cache);
        let want = entries(&streamed);
        assert!(entries(&built) == want && entries(&cached) == want, "the cache changes the table");
        // one flipped byte anywhere (header, index, entries) is caught and the cache rebuilt
        let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(files.len(), 1, "one cache file, no temporary left: {files:?}");
        let len = std::fs::metadata(&files[0]).unwrap().len();
        for at in [20, HEADER as u64 + 100, len / 2, len - 3] {
            let mut bytes = std::fs::read(&files[0]).unwrap();
            bytes[at as usize] ^= 0x5A;
            std::fs::write(&files[0], &bytes).unwrap();
            let (t, src) = load_in(Some(&dir), &data.paraphrases(), &vocab).unwrap();
            // a flipped byte in a group no caption word starts is not read, and need not be
            assert!(src == Source::Built || at >= HEADER as u64 + 100, "byte {at}: {src:?}");
            assert!(entries(&t) == want, "byte {at}: wrong entries");
        }
        // a truncated cache too
        let bytes = std::fs::read(&files[0]).unwrap();
        std::fs::write(&files[0], &bytes[..bytes.len() / 3]).unwrap();
        assert_eq!(load_in(Some(&dir), &data.paraphrases(), &vocab).unwrap().1, Source::Built);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
