//! METEOR as pycocoevalcap 1.2 computes it: Meteor 1.5 (`-l en -norm`, the English "rank"
//! parameters α 0.85, β 0.2, γ 0.6, δ 0.75 and module weights 1.0/0.6/0.8/0.6 for exact, stem,
//! synonym and paraphrase matches), the corpus score from summed sufficient statistics (the
//! `EVAL` line pycocoevalcap sends), each segment scored against its best reference.
//!
//! The language data is read at run time from the files the `pycocoevalcap` package ships
//! (`meteor-1.5.jar`: function words, nonbreaking prefixes, WordNet synonyms and morphological
//! exceptions; `data/paraphrase-en.gz`); nothing is copied into this repository. Without them
//! [`MeteorData::require`] fails with the places it searched and how to install them.
//!
//! Speed: the paraphrase table (5.3 million entries, 272 MB unpacked) is streamed once and only
//! the entries whose words all occur in the evaluated captions are kept; words are resolved once
//! per vocabulary entry (hash, stem, synonym sets), segments are aligned in parallel.

pub mod align;
pub mod normalize;
pub mod paracache;

use super::EvalError;
use normalize::{Normalizer, java_tokens, java_trim};
use rayon::prelude::*;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

const ALPHA: f64 = 0.85;
const BETA: f64 = 0.2;
const GAMMA: f64 = 0.6;
const DELTA: f64 = 0.75;
const WEIGHTS: [f64; 4] = [1.0, 0.6, 0.8, 0.6];

/// Where Meteor's data lives: a folder holding `meteor-1.5.jar` and `data/paraphrase-en.gz`
/// (pycocoevalcap's `meteor/` folder).
#[derive(Debug, Clone)]
pub struct MeteorData {
    pub dir: PathBuf,
}

impl MeteorData {
    pub fn jar(&self) -> PathBuf {
        self.dir.join("meteor-1.5.jar")
    }
    pub fn paraphrases(&self) -> PathBuf {
        self.dir.join("data/paraphrase-en.gz")
    }

    /// Meteor's English normalizer with the jar's nonbreaking prefixes.
    pub fn normalizer(&self) -> Result<Normalizer, EvalError> {
        load_normalizer(&self.jar())
    }

    /// Checks a folder given explicitly (`--meteor-data`, `MMTT_METEOR_DATA`).
    pub fn at(dir: &Path) -> Result<Self, EvalError> {
        let d = MeteorData { dir: dir.to_path_buf() };
        for f in [d.jar(), d.paraphrases()] {
            if !f.is_file() {
                return Err(EvalError::Input(format!(
                    "{} is missing: point --meteor-data (or MMTT_METEOR_DATA) at pycocoevalcap's meteor/ folder, which holds meteor-1.5.jar and data/paraphrase-en.gz (pip install pycocoevalcap==1.2)",
                    f.display()
                )));
            }
        }
        Ok(d)
    }

    /// The folders [`MeteorData::locate`] looks in, in order: the site-packages
    /// (`lib/python*/{site,dist}-packages/pycocoevalcap/meteor`) of `$VIRTUAL_ENV`, of a `.venv`
    /// in the working directory or above it, of a `.venv` above the executable, of the user
    /// (`~/.local`) and of the system (`/usr/local`, `/usr`). Library roots, newest Python first.
    pub fn search_roots() -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
            roots.push(PathBuf::from(v).join("lib"));
        }
        if let Ok(cwd) = std::env::current_dir() {
            roots.extend(cwd.ancestors().map(|a| a.join(".venv/lib")));
        }
        if let Ok(exe) = std::env::current_exe() {
            roots.extend(exe.ancestors().skip(1).map(|a| a.join(".venv/lib")));
        }
        if let Some(h) = std::env::var_os("HOME") {
            roots.push(PathBuf::from(h).join(".local/lib"));
        }
        roots.extend(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
        let mut seen = HashSet::default();
        roots.retain(|r| seen.insert(r.clone()));
        roots
    }

    /// Finds pycocoevalcap's `meteor/` folder: `MMTT_METEOR_DATA`, then [`Self::search_roots`].
    /// `Ok(None)` when there is none. An empty `MMTT_METEOR_DATA` means: look nowhere.
    pub fn locate() -> Result<Option<Self>, EvalError> {
        if let Some(d) = std::env::var_os("MMTT_METEOR_DATA") {
            if d.is_empty() {
                return Ok(None);
            }
            return Self::at(Path::new(&d)).map(Some);
        }
        for root in Self::search_roots() {
            let Ok(rd) = std::fs::read_dir(&root) else {
                continue;
            };
            let mut pythons: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python")))
                .collect();
            pythons.sort();
            for py in pythons.iter().rev() {
                for sp in ["site-packages", "dist-packages"] {
                    let d = py.join(sp).join("pycocoevalcap/meteor");
                    if d.join("meteor-1.5.jar").is_file() && d.join("data/paraphrase-en.gz").is_file() {
                        return Ok(Some(MeteorData { dir: d }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// [`Self::locate`] for a caller that needs METEOR: no data is an error that lists where
    /// mmtt looked and how to install it (or to skip METEOR).
    pub fn require() -> Result<Self, EvalError> {
        if let Some(d) = Self::locate()? {
            return Ok(d);
        }
        let looked = if std::env::var_os("MMTT_METEOR_DATA").is_some_and(|d| d.is_empty()) {
            "MMTT_METEOR_DATA is set and empty, so mmtt looked nowhere".to_string()
        } else {
            let roots: Vec<String> = Self::search_roots()
                .iter()
                .map(|r| format!("  {}/python*/{{site,dist}}-packages/pycocoevalcap/meteor", r.display()))
                .collect();
            format!("MMTT_METEOR_DATA is unset; mmtt looked in\n{}", roots.join("\n"))
        };
        Err(EvalError::Input(format!(
            "METEOR needs Meteor 1.5's data (meteor-1.5.jar and data/paraphrase-en.gz, shipped by pycocoevalcap 1.2) and none was found: {looked}\n\
             Install it with scripts/setup.sh (or: python3 -m venv .venv && .venv/bin/pip install pycocoevalcap==1.2), \
             or point --meteor-data DIR (or MMTT_METEOR_DATA) at pycocoevalcap's meteor/ folder, \
             or, for `mmtt eval captions`, skip METEOR with --metrics ngram."
        )))
    }
}

/// A vocabulary word with everything the matchers ask of it, computed once.
#[derive(Debug, Clone)]
pub struct Word {
    pub id: u32,
    /// `String.hashCode()`: Meteor's exact, stem and synonym matchers compare these.
    pub hash: i32,
    pub stem_hash: i32,
    /// Sorted ids of the vocabulary words that share a WordNet synset with this word (its own
    /// synsets and its base forms', as `SynonymMatcher` unites them).
    pub synonyms: Vec<u32>,
    pub function: bool,
}

/// The stem module's stemmer (Snowball English, as `org.tartarus.snowball.ext.englishStemmer`).
pub fn stem(word: &str) -> String {
    rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English).stem(word).into_owned()
}

/// `String.hashCode()` over UTF-16 code units.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32))
}

/// Meteor's sufficient statistics of one segment (its best reference) or of a corpus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub test_len: f64,
    pub ref_len: f64,
    pub test_function: f64,
    pub ref_function: f64,
    pub content1: [f64; 4],
    pub content2: [f64; 4],
    pub function1: [f64; 4],
    pub function2: [f64; 4],
    pub chunks: f64,
}

impl Stats {
    fn from_counts(c: &align::Counts) -> Self {
        let f = |a: [usize; 4]| a.map(|x| x as f64);
        Stats {
            test_len: c.test_len as f64,
            ref_len: c.ref_len as f64,
            test_function: c.test_function as f64,
            ref_function: c.ref_function as f64,
            content1: f(c.content1),
            content2: f(c.content2),
            function1: f(c.function1),
            function2: f(c.function2),
            chunks: c.chunks as f64,
        }
    }
    fn test_matches(&self) -> f64 {
        (0..4).map(|i| self.content1[i] + self.function1[i]).sum()
    }
    fn ref_matches(&self) -> f64 {
        (0..4).map(|i| self.content2[i] + self.function2[i]).sum()
    }
    fn perfect(&self) -> bool {
        self.test_matches() == self.test_len && self.ref_matches() == self.ref_len && self.chunks == 1.0
    }

    /// `MeteorStats.addStats`: a segment aligned whole in one chunk adds no chunks.
    pub fn add(&mut self, o: &Stats) {
        self.test_len += o.test_len;
        self.ref_len += o.ref_len;
        self.test_function += o.test_function;
        self.ref_function += o.ref_function;
        for i in 0..4 {
            self.content1[i] += o.content1[i];
            self.content2[i] += o.content2[i];
            self.function1[i] += o.function1[i];
            self.function2[i] += o.function2[i];
        }
        if !o.perfect() {
            self.chunks += o.chunks;
        }
    }

    /// `MeteorScorer.computeMetrics`.
    pub fn score(&self) -> f64 {
        let tw_len = DELTA * (self.test_len - self.test_function) + (1.0 - DELTA) * self.test_function;
        let rw_len = DELTA * (self.ref_len - self.ref_function) + (1.0 - DELTA) * self.ref_function;
        let mut tw = 0.0;
        let mut rw = 0.0;
        // the Java order of the sums (floating point)
        for (c, w) in self.content1.iter().zip(WEIGHTS) {
            tw += c * w * DELTA;
        }
        for (c, w) in self.content2.iter().zip(WEIGHTS) {
            rw += c * w * DELTA;
        }
        for (f, w) in self.function1.iter().zip(WEIGHTS) {
            tw += f * w * (1.0 - DELTA);
        }
        for (f, w) in self.function2.iter().zip(WEIGHTS) {
            rw += f * w * (1.0 - DELTA);
        }
        let p = tw / tw_len;
        let r = rw / rw_len;
        let fmean = 1.0 / ((1.0 - ALPHA) / p + ALPHA / r);
        let frag = if self.perfect() { 0.0 } else { self.chunks / ((self.test_matches() + self.ref_matches()) / 2.0) };
        let pen = GAMMA * frag.powf(BETA);
        let s = fmean * (1.0 - pen);
        if s.is_nan() { 0.0 } else { s.max(0.0) }
    }
}

/// The jar's lexical resources: function words, WordNet synonyms and morphological exceptions.
struct JarData {
    function_words: HashSet<String>,
    /// inflected form -> base forms (`synonym/english.exceptions`)
    bases: HashMap<String, Vec<String>>,
    /// word -> synset ids (`synonym/english.synsets`)
    synsets: HashMap<String, Vec<i32>>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Input(format!(
        "{}: cannot read Meteor's data ({e}); reinstall pycocoevalcap==1.2 or point --meteor-data at a complete copy",
        path.display()
    ))
}

/// Text entries of the jar (a zip archive).
fn jar_entries<const N: usize>(jar: &Path, names: [&str; N]) -> Result<[String; N], EvalError> {
    let f = std::fs::File::open(jar).map_err(|e| io_err(jar, e))?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| io_err(jar, e))?;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (name, s) in names.iter().zip(out.iter_mut()) {
        z.by_name(name)
            .map_err(|e| io_err(jar, format!("{name}: {e}")))?
            .read_to_string(s)
            .map_err(|e| io_err(jar, format!("{name}: {e}")))?;
    }
    Ok(out)
}

fn load_normalizer(jar: &Path) -> Result<Normalizer, EvalError> {
    let [prefixes] = jar_entries(jar, ["nonbreaking/english.prefixes"])?;
    Ok(Normalizer::new(&prefixes))
}

impl JarData {
    fn load(jar: &Path) -> Result<Self, EvalError> {
        let [function_words, exceptions, syn] =
            jar_entries(jar, ["function/english.words", "synonym/english.exceptions", "synonym/english.synsets"])?;
        let function_words = function_words.lines().map(str::to_string).collect();
        let mut bases: HashMap<String, Vec<String>> = HashMap::default();
        let mut lines = exceptions.lines();
        while let Some(base) = lines.next() {
            for form in java_tokens(lines.next().unwrap_or("")) {
                bases.entry(form.to_string()).or_default().push(base.to_string());
            }
        }
        let mut synsets: HashMap<String, Vec<i32>> = HashMap::default();
        let mut lines = syn.lines();
        while let Some(word) = lines.next() {
            let mut ids: Vec<i32> = java_tokens(lines.next().unwrap_or("")).filter_map(|t| t.parse().ok()).collect();
            ids.sort_unstable();
            ids.dedup();
            synsets.insert(word.to_string(), ids);
        }
        Ok(JarData { function_words, bases, synsets })
    }

    fn syn(&self, w: &str) -> &[i32] {
        self.synsets.get(w).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `SynonymDictionary.getStemSynSets`.
    fn stem_syn(&self, w: &str, out: &mut Vec<i32>) {
        if let Some(bs) = self.bases.get(w) {
            for b in bs {
                out.extend_from_slice(self.syn(b));
            }
        } else {
            out.extend_from_slice(self.syn(&self.morph(w)));
        }
    }

    /// `SynonymDictionary.morph`, including its "ful" quirk (the suffix is not removed before
    /// the search but is appended to the result).
    fn morph(&self, s: &str) -> String {
        const SUFX: [&str; 20] = [
            "s", "ses", "xes", "zes", "ches", "shes", "men", "ies", "s", "ies", "es", "es", "ed", "ed", "ing", "ing", "er", "est", "er",
            "est",
        ];
        const ADDR: [&str; 20] = ["", "s", "x", "z", "ch", "sh", "man", "y", "", "y", "e", "", "e", "", "e", "", "", "", "e", "e"];
        let ful = if s.ends_with("ful") { "ful" } else { "" };
        if s.ends_with("ss") || s.encode_utf16().count() <= 2 {
            return s.to_string();
        }
        for (suf, add) in SUFX.iter().zip(ADDR) {
            if let Some(stem) = s.strip_suffix(suf) {
                let cand = format!("{stem}{add}");
                if self.synsets.contains_key(&cand) {
                    return cand + ful;
                }
            }
        }
        String::new()
    }
}

/// The word ids of a line's tokens; false when one is not in the vocabulary.
fn ids(line: &[u8], vocab: &HashMap<&[u8], u32>, out: &mut Vec<u32>) -> bool {
    out.clear();
    for tok in line.split(|&b| matches!(b, b' ' | b'\t' | b'\r' | 0x0C)).filter(|t| !t.is_empty()) {
        match vocab.get(tok) {
            Some(&id) => out.push(id),
            None => return false,
        }
    }
    true
}

/// The paraphrase table restricted to a vocabulary: a trie over word ids.
#[derive(Default)]
pub struct ParaTable {
    /// (node, word) -> child node
    trans: HashMap<(u32, u32), u32>,
    /// node -> indices into `paras` of the phrases ending there, in file order
    emit: HashMap<u32, Vec<u32>>,
    nodes: u32,
    paras: Vec<Vec<u32>>,
}

impl ParaTable {
    /// Streams `paraphrase-en.gz` (groups of three lines: probability, phrase, paraphrase) and
    /// keeps the entries whose words are all in `vocab`.
    pub fn load(path: &Path, vocab: &HashMap<String, u32>) -> Result<Self, EvalError> {
        let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        let bytes: HashMap<&[u8], u32> = vocab.iter().map(|(w, &i)| (w.as_bytes(), i)).collect();
        let mut t = ParaTable { nodes: 1, ..Default::default() };
        // one thread unpacks 4 MiB blocks, this one splits them into lines (one SIMD pass per
        // block); the table is sorted by phrase, so a phrase's lookup is reused while it repeats
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
        std::thread::scope(|scope| -> Result<(), EvalError> {
            scope.spawn(move || {
                let mut gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
                loop {
                    let mut block = vec![0u8; 4 << 20];
                    let mut filled = 0;
                    while filled < block.len() {
                        match gz.read(&mut block[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    block.truncate(filled);
                    if filled == 0 || tx.send(Ok(block)).is_err() {
                        return;
                    }
                }
            });
            let mut carry: Vec<u8> = Vec::new();
            let mut line_no = 0u64;
            let (mut pi, mut qi) = (Vec::new(), Vec::new());
            let (mut last_phrase, mut keep_phrase) = (Vec::<u8>::new(), false);
            let mut handle = |line: &[u8], t: &mut ParaTable| {
                match line_no % 3 {
                    0 => {} // probability
                    1 => {
                        if line != last_phrase.as_slice() {
                            last_phrase.clear();
                            last_phrase.extend_from_slice(line);
                            keep_phrase = ids(line, &bytes, &mut pi);
                        }
                    }
                    _ => {
                        if keep_phrase && ids(line, &bytes, &mut qi) {
                            t.add(&pi, qi.clone());
                        }
                    }
                }
                line_no += 1;
            };
            for block in rx {
                let block = block.map_err(|e| io_err(path, e))?;
                let mut start = 0;
                for nl in memchr::memchr_iter(b'\n', &block) {
                    if carry.is_empty() {
                        handle(&block[start..nl], &mut t);
                    } else {
                        carry.extend_from_slice(&block[start..nl]);
                        handle(&carry, &mut t);
                        carry.clear();
                    }
                    start = nl + 1;
                }
                carry.extend_from_slice(&block[start..]);
            }
            if !carry.is_empty() {
                handle(&carry, &mut t);
            }
            Ok(())
        })?;
        Ok(t)
    }

    fn add(&mut self, phrase: &[u32], para: Vec<u32>) {
        let mut node = 0u32;
        for &w in phrase {
            let next = self.nodes;
            node = *self.trans.entry((node, w)).or_insert(next);
            if node == next {
                self.nodes += 1;
            }
        }
        self.emit.entry(node).or_default().push(self.paras.len() as u32);
        self.paras.push(para);
    }

    pub fn len(&self) -> usize {
        self.paras.len()
    }
    pub fn is_empty(&self) -> bool {
        self.paras.is_empty()
    }
}

impl align::Paraphrases for ParaTable {
    fn paths(&self, words: &[u32], start: usize, out: &mut Vec<(usize, u32)>) {
        let mut node = 0u32;
        for (i, w) in words[start..].iter().enumerate() {
            match self.trans.get(&(node, *w)) {
                Some(&n) => node = n,
                None => break,
            }
            if let Some(e) = self.emit.get(&node) {
                out.extend(e.iter().map(|&k| (i + 1, k)));
            }
        }
    }
    fn paraphrase(&self, idx: u32) -> &[u32] {
        &self.paras[idx as usize]
    }
}

/// Corpus METEOR of (hypothesis, references) pairs, given as pycocoevalcap hands them to the
/// Java scorer (PTB-tokenized). Returns the corpus score and each segment's score.
pub fn score(data: &MeteorData, items: &[(String, Vec<String>)]) -> Result<(f64, Vec<f64>), EvalError> {
    score_timed(data, None, items, &mut Vec::new())
}

/// The jar's part of Meteor's data (normalizer prefixes, function words, WordNet): it does not
/// depend on the captions, so a caller may read it while it tokenizes ([`Lexicon::load`]).
pub struct Lexicon {
    normalizer: Normalizer,
    jar: JarData,
    seconds: f64,
}

impl Lexicon {
    pub fn load(data: &MeteorData) -> Result<Self, EvalError> {
        let t = std::time::Instant::now();
        let (normalizer, jar) = rayon::join(|| load_normalizer(&data.jar()), || JarData::load(&data.jar()));
        Ok(Lexicon { normalizer: normalizer?, jar: jar?, seconds: t.elapsed().as_secs_f64() })
    }
}

/// Where a run's time went: (phase, seconds), in order.
pub type Phases = Vec<(String, f64)>;

/// [`score`], with the [`Lexicon`] when the caller read it already, adding its phases to
/// `phases`: the lexicon (when read here), normalizing, the paraphrase table and resolving the
/// words (side by side: both, and the wall time of the two), aligning.
pub fn score_timed(
    data: &MeteorData,
    lexicon: Option<Lexicon>,
    items: &[(String, Vec<String>)],
    phases: &mut Phases,
) -> Result<(f64, Vec<f64>), EvalError> {
    let timing = std::env::var_os("MMTT_METEOR_TIMING").is_some();
    let (lexicon, segs) = match lexicon {
        Some(l) => (l, items.par_iter().map(|(h, rs)| stdio_split(h, rs)).collect::<Vec<_>>()),
        None => {
            let (l, segs) = rayon::join(|| Lexicon::load(data), || items.par_iter().map(|(h, rs)| stdio_split(h, rs)).collect::<Vec<_>>());
            (l?, segs)
        }
    };
    phases.push(("METEOR: jar lexicon (normalizer prefixes, function words, WordNet)".into(), lexicon.seconds));
    let t0 = std::time::Instant::now();
    let Lexicon { normalizer, jar, .. } = lexicon;
    let norm = |s: &str| -> Vec<String> { java_tokens(&normalizer.normalize(s).to_lowercase()).map(str::to_string).collect() };
    let segs: Vec<(Vec<String>, Vec<Vec<String>>)> =
        segs.par_iter().map(|(h, rs)| (norm(h), rs.iter().map(|r| norm(r)).collect())).collect();
    phases.push(("METEOR: normalize (its -norm rules)".into(), t0.elapsed().as_secs_f64()));
    let t_load = std::time::Instant::now();
    let mut vocab: HashMap<String, u32> = HashMap::default();
    for (h, rs) in &segs {
        for w in h.iter().chain(rs.iter().flatten()) {
            let n = vocab.len() as u32;
            vocab.entry(w.clone()).or_insert(n);
        }
    }
    let (para, words) = rayon::join(
        || {
            let t = std::time::Instant::now();
            paracache::load(&data.paraphrases(), &vocab).map(|(p, src)| (p, src, t.elapsed().as_secs_f64()))
        },
        || -> Result<_, EvalError> {
            let t = std::time::Instant::now();
            let mut list: Vec<(&String, u32)> = vocab.iter().map(|(w, &i)| (w, i)).collect();
            list.sort_by_key(|&(_, i)| i);
            let resolved = list
                .par_iter()
                .map(|&(w, id)| {
                    let mut syn = jar.syn(w).to_vec();
                    jar.stem_syn(w, &mut syn);
                    syn.sort_unstable();
                    syn.dedup();
                    (
                        Word {
                            id,
                            hash: java_hash(w),
                            stem_hash: java_hash(&stem(w)),
                            synonyms: Vec::new(),
                            function: jar.function_words.contains(w.as_str()),
                        },
                        syn,
                    )
                })
                .collect::<Vec<(Word, Vec<i32>)>>();
            Ok((resolved, t.elapsed().as_secs_f64()))
        },
    );
    // the lexicon and the paraphrase table load side by side
    let (para, source, t_para) = para?;
    let (words, t_jar) = words?;
    let source = match source {
        paracache::Source::Cache => "from the cache",
        paracache::Source::Built => "cache built now",
        paracache::Source::Streamed => "streamed, no cache folder",
    };
    phases.push(("METEOR: words resolved (hashes, stems, synonym sets)".into(), t_jar));
    phases.push((format!("METEOR: paraphrase table ({source}, {} entries kept)", para.len()), t_para));
    // synonym partners through an inverted index synset -> vocabulary words
    let mut by_synset: HashMap<i32, Vec<u32>> = HashMap::default();
    for (w, syn) in &words {
        for &k in syn {
            by_synset.entry(k).or_default().push(w.id);
        }
    }
    let words: Vec<Word> = words
        .into_par_iter()
        .map(|(mut w, syn)| {
            w.synonyms = syn.iter().flat_map(|k| by_synset[k].iter().copied()).collect();
            w.synonyms.sort_unstable();
            w.synonyms.dedup();
            w
        })
        .collect();
    phases.push(("METEOR: load data (the two above side by side, wall)".into(), t_load.elapsed().as_secs_f64()));
    let t_align = std::time::Instant::now();
    let seg_stats: Vec<Stats> = segs
        .par_iter()
        .map(|(h, rs)| {
            let hw: Vec<&Word> = h.iter().map(|w| &words[vocab[w] as usize]).collect();
            let mut best: Option<(f64, Stats)> = None;
            for r in rs {
                let rw: Vec<&Word> = r.iter().map(|w| &words[vocab[w] as usize]).collect();
                let st = Stats::from_counts(&align::align(&hw, &rw, &para));
                let s = st.score();
                if best.as_ref().is_none_or(|(b, _)| s > *b) {
                    best = Some((s, st));
                }
            }
            best.map(|(_, s)| s).unwrap_or_default()
        })
        .collect();
    phases.push(("METEOR: align and score".into(), t_align.elapsed().as_secs_f64()));
    if timing {
        eprintln!("meteor: {} paraphrases kept, {} words: {phases:?}", para.len(), words.len());
    }
    let mut total = Stats::default();
    let per: Vec<f64> = seg_stats
        .iter()
        .map(|s| {
            total.add(s);
            s.score()
        })
        .collect();
    Ok((total.score(), per))
}

/// What the Java scorer receives for one segment: pycocoevalcap removes `|||` from the
/// hypothesis and collapses double spaces, joins `SCORE ||| refs ||| hyp`, and Meteor splits
/// that line on `|||` again (so a `|||` inside a reference separates references) and trims.
fn stdio_split(hyp: &str, refs: &[String]) -> (String, Vec<String>) {
    let h = hyp.replace("|||", "").replace("  ", " ");
    let line = format!("SCORE ||| {} ||| {}", refs.join(" ||| "), h);
    let mut parts: Vec<&str> = line.split("|||").collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop(); // String.split drops trailing empty strings
    }
    let hyp = parts.last().map(|p| java_trim(p).to_string()).unwrap_or_default();
    let refs = parts[1..parts.len().saturating_sub(1).max(1)].iter().map(|p| java_trim(p).to_string()).collect();
    (hyp, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99162322);
        // a classic collision: Meteor treats these as the same word
        assert_eq!(java_hash("Aa"), java_hash("BB"));
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn scoring_follows_compute_metrics() {
        // identical 3-word segments without function words: precision = recall = 1, no penalty
        let s = Stats {
            test_len: 3.0,
            ref_len: 3.0,
            content1: [3.0, 0.0, 0.0, 0.0],
            content2: [3.0, 0.0, 0.0, 0.0],
            chunks: 1.0,
            ..Default::default()
        };
        assert_eq!(s.score(), 1.0);
        // two chunks over three matches: penalty 0.6 * (2/3)^0.2
        let t = Stats { chunks: 2.0, ..s.clone() };
        assert!((t.score() - (1.0 - 0.6 * (2.0f64 / 3.0).powf(0.2))).abs() < 1e-12);
        let mut all = Stats::default();
        all.add(&s);
        all.add(&t);
        assert_eq!(all.chunks, 2.0, "a perfect segment adds no chunks");
        assert_eq!(Stats::default().score(), 0.0, "0/0 is scored 0, as Java's NaN check does");
    }

    #[test]
    fn segments_are_split_like_the_stdio_protocol() {
        assert_eq!(
            stdio_split("a  b ||| c", &["r1".into(), "r2 ||| r3".into()]),
            ("a b c".into(), vec!["r1".into(), "r2".into(), "r3".into()])
        );
    }
}
