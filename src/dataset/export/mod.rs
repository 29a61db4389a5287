//! `mmtt export`: accepted triplets (I_f, M, T) as datasets that researchers load with their own
//! tools. Four formats ([`Format`]): Hugging Face imagefolder, COCO captions + RLE instances,
//! WebDataset tar shards, and the authors' release format (spec section 8).
//!
//! Every export writes, beside the data: `MANIFEST.sha256` (every file, `sha256sum -c` format),
//! `splits.json` (the split of every face with the seed and ratios), and a dataset card
//! `README.md` with the statistics of spec section 6 and their charts (`charts/*.svg`).
//!
//! Invariants: a file appears under its final name only complete (temp name, then rename); an
//! interrupted export resumes when run again with the same options and `--out`: every file an
//! earlier run left is checked against what it should be (images: size and SHA-256 = the blob
//! key; generated files and shards: the bytes this run would write) and kept only when equal,
//! temp files of killed runs (`.NAME.part-PID`) and files no longer part of the export are
//! removed, and `MANIFEST.sha256` (absent until the export is complete) lists expected hashes.
//! One export at a time per folder (`flock` on `.mmtt-export.lock`). Splits come from the
//! faces' stored splits (or one `--resplit` that no swap pair would cross), so no face is in two
//! splits. Samples imported from the authors' release keep their `image_id` and `instance_id`
//! in every format; the platform's own samples get `{prefix}_{forgery id}` and a number no
//! imported sample uses.

pub mod formats;
pub mod rle;

use crate::app::App;
use crate::dataset::stats::{StatSample, Stats};
use crate::storage::split::{self, Split, SplitRatios};
use crate::storage::status::{AnnotationStatus, exported_statuses};
use crate::storage::store::{BlobKey, BlobStore, SharedStore};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hugging Face imagefolder: split/{images,masks,originals}/ + metadata.jsonl.
    Hf,
    /// COCO: annotations/captions_{split}.json and instances_{split}.json (RLE masks).
    Coco,
    /// WebDataset tar shards: KEY.png, KEY.mask.png, KEY.txt, KEY.json.
    Webdataset,
    /// The authors' release format: {train,val,test}.json + images/ + masks/.
    Mmtt,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Hf, Format::Coco, Format::Webdataset, Format::Mmtt];

    /// The stored and command-line name (`exports.format`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Hf => "hf",
            Format::Coco => "coco",
            Format::Webdataset => "webdataset",
            Format::Mmtt => "mmtt",
        }
    }

    /// The same as [`Format::as_str`].
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown export format `{s}`: hf, coco, webdataset or mmtt"))
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to export and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportOptions {
    pub format: Format,
    #[serde(skip)]
    pub out: PathBuf,
    /// Submitted (not yet reviewed) annotations too.
    pub include_unreviewed: bool,
    pub methods: Vec<String>,
    pub datasets: Vec<String>,
    /// New splits for this export: (seed, ratios).
    pub resplit: Option<(u64, SplitRatios)>,
    /// Hard-link images from the store instead of copying them.
    #[serde(skip)]
    pub link: bool,
    /// hf: also write the originals.
    pub originals: bool,
    /// webdataset: bytes per shard (about).
    pub shard_bytes: u64,
}

impl ExportOptions {
    pub fn new(format: Format, out: PathBuf) -> Self {
        ExportOptions {
            format,
            out,
            include_unreviewed: false,
            methods: vec![],
            datasets: vec![],
            resplit: None,
            link: false,
            originals: true,
            shard_bytes: 1_000_000_000,
        }
    }
}

/// One exported sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub id: uuid::Uuid,
    /// `id` without dashes: file names and WebDataset keys (no dots).
    pub key: String,
    pub source_id: uuid::Uuid,
    pub donor_id: Option<uuid::Uuid>,
    pub method: String,
    pub family: String,
    pub generator: Option<String>,
    pub dataset: String,
    pub split: Split,
    pub image: BlobKey,
    pub mask: BlobKey,
    pub original: BlobKey,
    pub text: String,
    pub regions: Vec<String>,
    pub mentions: Vec<String>,
    pub parts: Vec<String>,
    pub annotator_id: uuid::Uuid,
    pub review_status: String,
    pub active_time_s: f64,
    pub word_count: i32,
    /// The release format's `image_id`: the authors' own for a sample imported from their
    /// release, `{prefix}_{key}` ([`formats::release_prefix`]) for the platform's samples.
    pub image_id: String,
    /// The release format's `instance_id`: the authors' own (any JSON value) for an imported
    /// sample, else a number no imported sample of this export uses ([`assign_release_ids`]).
    pub instance_id: serde_json::Value,
    /// Imported from the authors' release (`image_id`, `instance_id` are theirs).
    pub imported: bool,
    /// How model assistance shaped the annotation (mode, held-out arm, model, token counts,
    /// edit distance to the suggestion): present only for annotations written while assistance
    /// was on, so exports of unassisted projects are as before.
    pub assistance: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ExportSummary {
    pub export_id: uuid::Uuid,
    pub format: Format,
    pub out: String,
    pub samples: u64,
    pub per_split: BTreeMap<String, u64>,
    pub files: u64,
    /// Files an earlier run left that were exactly what they should be (kept).
    pub reused_files: u64,
    /// Files an earlier run left, checked (size and SHA-256 against their expected content).
    pub verified_files: u64,
    /// Checked files that differed (corrupted, truncated, stale content) and were rewritten.
    pub replaced_files: u64,
    /// Stale files removed on resume: partial temp files, files no longer part of the export.
    pub removed_files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub split_seed: u64,
    pub split_ratios: String,
}

/// The samples the options select, with their final splits, in id order.
pub async fn select(app: &App, o: &ExportOptions) -> Result<(Vec<Sample>, u64, SplitRatios, BTreeMap<uuid::Uuid, Split>)> {
    let statuses = AnnotationStatus::texts(&exported_statuses(o.include_unreviewed));
    let rows = sqlx::query(
        "SELECT f.id, f.target_id, f.donor_id, f.method, i.family, f.provenance->>'generator', s.dataset, f.split, s.split_key, d.split_key, \
                f.image_hash, f.mask_hash, f.original_hash, a.text, a.regions, a.mentions, p.parts, a.annotator_id, a.status, a.active_seconds, a.word_count, \
                f.release_image_id, f.release_instance_id, \
                CASE WHEN a.assist_mode <> 'off' OR a.assist_holdout THEN jsonb_build_object( \
                  'mode', a.assist_mode, 'held_out', a.assist_holdout, 'suggestion_model', a.suggestion_model, \
                  'suggestion_tokens', a.suggestion_tokens, 'text_tokens', a.text_tokens, 'edit_distance', a.suggestion_edit_distance) END \
         FROM forgeries f JOIN annotations a ON a.forgery_id = f.id JOIN sources s ON s.id = f.target_id \
         JOIN forge_items i ON i.id = f.item_id JOIN mask_plans p ON p.id = f.plan_id LEFT JOIN sources d ON d.id = f.donor_id \
         WHERE a.status = ANY($1) AND (cardinality($2::text[]) = 0 OR f.method = ANY($2)) AND (cardinality($3::text[]) = 0 OR s.dataset = ANY($3)) \
         ORDER BY f.id",
    )
    .bind(&statuses)
    .bind(&o.methods)
    .bind(&o.datasets)
    .fetch_all(&app.pool)
    .await?;
    let settings = crate::storage::db::settings(&app.pool).await?;
    let (seed, ratios) = o.resplit.unwrap_or((settings.split_seed, settings.split_ratios));
    use sqlx::Row;
    let mut samples = Vec::with_capacity(rows.len());
    let mut faces: BTreeMap<uuid::Uuid, Split> = BTreeMap::new();
    let mut crossing = 0u64;
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        let target: uuid::Uuid = r.get(1);
        let donor: Option<uuid::Uuid> = r.get(2);
        let stored: String = r.get(7);
        let split = match o.resplit {
            None => stored.parse::<Split>().map_err(|e| anyhow!("forgery {id}: {e}"))?,
            Some(_) => split::assign(seed, ratios, &r.get::<String, _>(8)),
        };
        if let (Some(d), Some(_)) = (donor, o.resplit) {
            let ds = split::assign(seed, ratios, &r.get::<Option<String>, _>(9).unwrap_or_default());
            if ds != split {
                crossing += 1;
            }
            faces.insert(d, ds);
        } else if let Some(d) = donor {
            faces.insert(d, split);
        }
        faces.insert(target, split);
        let key = |i: usize| -> Result<BlobKey> { r.get::<String, _>(i).parse().map_err(|_| anyhow!("forgery {id}: bad blob key")) };
        samples.push(Sample {
            id,
            key: id.simple().to_string(),
            source_id: target,
            donor_id: donor,
            method: r.get(3),
            family: r.get(4),
            generator: r.get(5),
            dataset: r.get(6),
            split,
            image: key(10)?,
            mask: key(11)?,
            original: key(12)?,
            text: r.get(13),
            regions: r.get(14),
            mentions: r.get(15),
            parts: r.get(16),
            annotator_id: r.get(17),
            review_status: r.get(18),
            active_time_s: r.get(19),
            word_count: r.get(20),
            image_id: r.get::<Option<String>, _>(21).unwrap_or_default(),
            instance_id: r.get::<Option<serde_json::Value>, _>(22).unwrap_or(serde_json::Value::Null),
            imported: r.get::<Option<String>, _>(21).is_some(),
            assistance: r.get(23),
        });
    }
    assign_release_ids(&mut samples)?;
    if crossing > 0 {
        bail!(
            "--resplit --seed {seed} --ratios {ratios} would put the target and the donor of {crossing} face-swap pairs in different splits \
             (a face would appear in two splits): keep the stored splits (drop --resplit), try another seed, or export without swaps (--method)"
        );
    }
    Ok((samples, seed, ratios, faces))
}

/// Gives the platform's samples their release-format ids, beside the imported samples' own.
///
/// Image ids: imported samples keep the authors' `image_id` (unique in the database: a unique
/// index on `forgeries.release_image_id`); the platform's are `{prefix}_{forgery id as 32 hex
/// digits}`. The import refuses an authors' id that is this shape for a forgery of the same
/// database ([`crate::dataset::import::release`]), and forgery ids are fresh random UUIDs, so the two
/// kinds cannot meet; the check below refuses an export where they would anyway.
/// Instance ids: imported samples keep theirs; the platform's samples are numbered per split in
/// id order from 0 (as before imports existed), skipping every integer an imported sample of
/// this export uses, so no generated instance id equals an imported one.
pub fn assign_release_ids(samples: &mut [Sample]) -> Result<()> {
    let used: std::collections::HashSet<i64> = samples.iter().filter(|s| s.imported).filter_map(|s| s.instance_id.as_i64()).collect();
    let mut next: BTreeMap<Split, i64> = BTreeMap::new();
    for s in samples.iter_mut() {
        if !s.imported {
            s.image_id = format!("{}_{}", formats::release_prefix(&s.family), s.key);
        }
        if !s.imported || s.instance_id.is_null() {
            let n = next.entry(s.split).or_insert(0);
            while used.contains(n) {
                *n += 1;
            }
            s.instance_id = (*n).into();
            *n += 1;
        }
    }
    let mut seen: std::collections::HashMap<&str, uuid::Uuid> = std::collections::HashMap::new();
    for s in samples.iter() {
        if !crate::dataset::import::release::safe_image_id(&s.image_id) {
            bail!("forgery {}: its image id `{}` cannot name a file (re-import the release with valid ids)", s.id, s.image_id);
        }
        if let Some(other) = seen.insert(&s.image_id, s.id) {
            bail!(
                "forgeries {other} and {} would both be exported as image id `{}`: an imported id equals one the platform gives its own samples; delete one of them before exporting",
                s.id,
                s.image_id
            );
        }
    }
    Ok(())
}

/// Files written under the output folder, with their SHA-256 for the manifest.
///
/// Every file has an expected content known before it is written: an image is its blob (the
/// key is its SHA-256), a generated file is its bytes, a shard is the deterministic tar of its
/// members. A file an earlier run left under its final name is kept only when it is exactly
/// that content (size, then SHA-256); otherwise it is rewritten. The manifest lists the expected
/// hashes, never a hash read back from a file that was not checked.
pub struct Out {
    pub root: PathBuf,
    store: SharedStore,
    link: bool,
    manifest: Mutex<Vec<(String, String)>>,
    /// Files an earlier run left complete and correct (verified, kept).
    pub reused: AtomicU64,
    /// Files an earlier run left that differed from what they should be (rewritten).
    pub replaced: AtomicU64,
    /// Stale files removed: temp names of killed runs, files no longer part of the export.
    pub removed: AtomicU64,
    pub bytes: AtomicU64,
    pub done: AtomicU64,
    /// Set when the export is stopped (its job cancelled or paused): the writer refuses the next
    /// file, so the export ends at its next file and resumes later.
    pub stop: std::sync::atomic::AtomicBool,
}

/// How many file names a resume prints per kind of finding (the counts are always complete).
const REPORT_NAMES: u64 = 10;

impl Out {
    pub fn new(root: PathBuf, store: SharedStore, link: bool) -> Self {
        Out {
            root,
            store,
            link,
            manifest: Mutex::new(Vec::new()),
            reused: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            done: AtomicU64::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn store_ref(&self) -> &dyn BlobStore {
        self.store.as_ref()
    }

    fn record(&self, rel: &str, sha: String, size: u64) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Ok(mut m) = self.manifest.lock() {
            m.push((rel.to_string(), sha));
        }
    }

    fn note_replaced(&self, rel: &str, why: &str) {
        let n = self.replaced.fetch_add(1, Ordering::Relaxed);
        if n < REPORT_NAMES {
            eprintln!("export: {rel} {why}: rewritten");
        } else if n == REPORT_NAMES {
            eprintln!("export: (more files rewritten; the summary counts them)");
        }
    }

    fn target(&self, rel: &str) -> Result<(PathBuf, PathBuf)> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("the export was stopped");
        }
        let path = self.root.join(rel);
        let dir = path.parent().ok_or_else(|| anyhow!("bad export path {rel}"))?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("bad export path {rel}"))?;
        let tmp = dir.join(format!(".{name}.part-{}", std::process::id()));
        Ok((path, tmp))
    }

    /// What an earlier run left under `path`: `None` when nothing, else whether it has `size`
    /// bytes and hashes to `sha`.
    fn existing_matches(path: &Path, rel: &str, size: u64, sha: impl FnOnce() -> Result<String>) -> Result<Option<bool>> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
            Ok(m) if m.is_file() => Ok(Some(m.len() == size && hash_file(path)? == sha()?)),
            Ok(_) => bail!("{} is in the way of the export's file {rel} (not a plain file): move it away and run again", path.display()),
        }
    }

    /// A stored image under `rel` (copied, or hard-linked with `--link`). An earlier run's file
    /// is kept only when its size and SHA-256 are the blob's; otherwise it is replaced.
    pub fn blob(&self, rel: &str, key: &BlobKey) -> Result<()> {
        let size = self.store.size(key).with_context(|| format!("the image of {rel}"))?;
        let (path, tmp) = self.target(rel)?;
        let found = Self::existing_matches(&path, rel, size, || Ok(key.as_str().to_string()))?;
        if found == Some(true) {
            self.reused.fetch_add(1, Ordering::Relaxed);
        } else {
            if found == Some(false) {
                self.note_replaced(rel, "differs from its image (size or SHA-256)");
            }
            let src = self.store.local_path(key);
            match (&src, self.link) {
                (Some(src), true) => {
                    let _ = std::fs::remove_file(&tmp);
                    std::fs::hard_link(src, &tmp).map_err(|e| {
                        anyhow!("--link: cannot hard-link {} into {}: {e} (the output must be on the data directory's filesystem; drop --link to copy)", src.display(), self.root.display())
                    })?;
                }
                (None, true) => {
                    bail!("--link needs a local blob store, and {} is an object store: drop --link to copy", self.store.location())
                }
                (Some(src), false) => {
                    std::fs::copy(src, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
                }
                // an object store: its verified bytes
                (None, false) => {
                    let bytes = self.store.get(key).with_context(|| format!("the image of {rel}"))?;
                    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
                }
            }
            if found == Some(false) {
                // a damaged file may be the store's own (a hard link from `--link`): never put
                // back bytes that are not the blob
                let got = hash_file(&tmp)?;
                if got != key.as_str() {
                    let _ = std::fs::remove_file(&tmp);
                    bail!(
                        "the store's blob {key} does not hash to its key (SHA-256 {got}): the blob store is damaged (an exported hard link to it was modified?); restore it from a backup or re-import its source (store {})",
                        self.store.location()
                    );
                }
            }
            std::fs::rename(&tmp, &path)?;
        }
        // the store's files are named by their SHA-256
        self.record(rel, key.as_str().to_string(), size);
        Ok(())
    }

    /// Generated bytes under `rel`: an earlier run's file is kept when it is exactly `data`,
    /// otherwise written (atomically).
    pub fn bytes(&self, rel: &str, data: &[u8]) -> Result<()> {
        let (path, tmp) = self.target(rel)?;
        let sha = hex::encode(Sha256::digest(data));
        match Self::existing_matches(&path, rel, data.len() as u64, || Ok(sha.clone()))? {
            Some(true) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
            }
            found => {
                if found == Some(false) {
                    self.note_replaced(rel, "differs from what this export writes");
                }
                std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        self.record(rel, sha, data.len() as u64);
        Ok(())
    }

    /// A file produced by `write` into a writer (deterministic). An earlier run's file is kept
    /// when its size and SHA-256 are those of `write`'s output (computed without writing it),
    /// otherwise it is rebuilt under a temp name and renamed.
    pub fn produced(&self, rel: &str, write: impl Fn(&mut dyn Write) -> Result<()>) -> Result<()> {
        let (path, tmp) = self.target(rel)?;
        let expected = || -> Result<(String, u64)> {
            let mut w = HashWriter::new(std::io::sink());
            write(&mut w)?;
            Ok(w.finish())
        };
        let (sha, size) = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {
                let (sha, size) = expected()?;
                if m.len() == size && hash_file(&path)? == sha {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    (sha, size)
                } else {
                    self.note_replaced(rel, "differs from its expected content (a member differs, or it is truncated)");
                    let got = self.produce(&path, &tmp, &write)?;
                    if got.0 != sha {
                        bail!("{rel}: two builds of the same file differ (the store changed during the export?): run the export again");
                    }
                    got
                }
            }
            Ok(_) => bail!("{} is in the way of the export's file {rel} (not a plain file): move it away and run again", path.display()),
            Err(_) => self.produce(&path, &tmp, &write)?,
        };
        self.record(rel, sha, size);
        Ok(())
    }

    fn produce(&self, path: &Path, tmp: &Path, write: &impl Fn(&mut dyn Write) -> Result<()>) -> Result<(String, u64)> {
        let f = std::fs::File::create(tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut w = HashWriter::new(std::io::BufWriter::new(f));
        write(&mut w)?;
        w.flush()?;
        let HashWriter { inner, hash, len } = w;
        let f = inner.into_inner().map_err(|e| anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
        f.sync_all()?;
        std::fs::rename(tmp, path)?;
        Ok((hex::encode(hash.finalize()), len))
    }

    /// The relative paths recorded so far (the export's files).
    fn recorded(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self.manifest.lock().map_err(|_| anyhow!("manifest lock poisoned"))?.iter().map(|(p, _)| p.clone()).collect())
    }

    /// Writes `MANIFEST.sha256` (sorted; `sha256sum -c MANIFEST.sha256` checks it).
    pub fn write_manifest(&self) -> Result<u64> {
        let mut m = self.manifest.lock().map_err(|_| anyhow!("manifest lock poisoned"))?.clone();
        m.sort();
        m.dedup();
        let text: String = m.iter().map(|(p, h)| format!("{h}  {p}\n")).collect();
        let (path, tmp) = self.target(MANIFEST)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(m.len() as u64 + 1)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hash: Sha256::new(), len: 0 }
    }

    /// SHA-256 (hex) and length of everything written.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hash.finalize()), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

const STATE_FILE: &str = ".mmtt-export.json";
const LOCK_FILE: &str = ".mmtt-export.lock";
const MANIFEST: &str = "MANIFEST.sha256";

/// Whether `name` is one of the export's temp names (`.NAME.part-PID`, see [`Out`]).
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else { return false };
    match rest.rsplit_once(".part-") {
        Some((base, pid)) => !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Whether `rel` (a path relative to the output folder, `/`-separated) has the shape of a file
/// this format writes (so a resume may remove it when it is no longer part of the export); the
/// dataset card's files are the same for every format. Other files are never touched.
pub fn owned_name(format: Format, rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let split = |s: &str| Split::ALL.iter().any(|x| x.name() == s);
    let ext = |s: &str, e: &str| s.len() > e.len() && s.ends_with(e) && !s.starts_with('.');
    match parts.as_slice() {
        ["charts", f] => ext(f, ".svg"),
        [d, f] if split(d) => match format {
            Format::Hf => *f == "metadata.jsonl",
            Format::Coco => ext(f, ".png"),
            Format::Webdataset => f
                .strip_prefix(&format!("{d}-"))
                .and_then(|n| n.strip_suffix(".tar"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            Format::Mmtt => false,
        },
        [d, sub, f] if split(d) && format == Format::Hf => ["images", "masks", "originals"].contains(sub) && ext(f, ".png"),
        ["annotations", f] if format == Format::Coco => (f.starts_with("captions_") || f.starts_with("instances_")) && ext(f, ".json"),
        [sub, f] if format == Format::Mmtt => ["images", "masks"].contains(sub) && ext(f, ".png"),
        [f] if format == Format::Mmtt => ["train.json", "val.json", "test.json"].contains(f),
        _ => false,
    }
}

/// Every plain file under `root`, as `/`-separated relative paths (symlinks are not followed).
fn files_under(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.with_context(|| format!("cannot list {}", root.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root).map_err(|_| anyhow!("bad path {}", e.path().display()))?;
        let Some(rel) = rel.to_str() else { continue };
        v.push((rel.replace(std::path::MAIN_SEPARATOR, "/"), e.path().to_path_buf()));
    }
    v.sort();
    Ok(v)
}

fn remove_stale(out: &Out, rel: &str, path: &Path, why: &str) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove the stale file {}", path.display()))?;
    let n = out.removed.fetch_add(1, Ordering::Relaxed);
    if n < REPORT_NAMES {
        eprintln!("export: removed {rel} ({why})");
    } else if n == REPORT_NAMES {
        eprintln!("export: (more stale files removed; the summary counts them)");
    }
    Ok(())
}

/// The start of a resume: the old manifest goes first (it exists only beside a complete export,
/// so a run killed from here on leaves none that could pass `sha256sum -c`), then the temp files
/// (`.NAME.part-PID`: partial images and partial shards) that killed runs left. Returns the files
/// the old manifest listed.
fn clean_start(out: &Out) -> Result<std::collections::HashSet<String>> {
    let manifest = out.root.join(MANIFEST);
    let listed = match std::fs::read_to_string(&manifest) {
        Ok(text) => text.lines().filter_map(|l| l.split_once("  ").map(|(_, p)| p.to_string())).collect(),
        Err(_) => Default::default(),
    };
    if manifest.exists() {
        std::fs::remove_file(&manifest).with_context(|| format!("cannot remove {}", manifest.display()))?;
    }
    for (rel, path) in files_under(&out.root)? {
        let name = rel.rsplit('/').next().unwrap_or_default();
        if is_temp_name(name) {
            remove_stale(out, &rel, &path, "a partial file of an interrupted run")?;
        }
    }
    Ok(listed)
}

/// The end of a resume: files an earlier run wrote that this export does not (samples since
/// rejected, shards of another plan) are removed when they have the shape of this format's files
/// or the old manifest listed them; anything else in the folder is left alone.
fn clean_end(o: &ExportOptions, out: &Out, listed: &std::collections::HashSet<String>) -> Result<()> {
    let mine = out.recorded()?;
    for (rel, path) in files_under(&out.root)? {
        if mine.contains(&rel) || [STATE_FILE, LOCK_FILE, MANIFEST].contains(&rel.as_str()) {
            continue;
        }
        if listed.contains(&rel) || owned_name(o.format, &rel) {
            remove_stale(out, &rel, &path, "no longer part of this export")?;
        }
    }
    Ok(())
}

/// One export at a time per folder: held until the process ends.
fn lock_out(o: &ExportOptions) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = o.out.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another mmtt export is writing into {} right now: wait for it (`mmtt jobs`) or choose another --out", o.out.display());
    }
    Ok(f)
}

/// Refuses an output folder that holds something else; returns whether this resumes a run.
fn check_out(o: &ExportOptions) -> Result<bool> {
    if !o.out.exists() {
        std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create {}", o.out.display()))?;
        return Ok(false);
    }
    let state = o.out.join(STATE_FILE);
    if state.exists() {
        let prev: ExportOptions = serde_json::from_slice(&std::fs::read(&state)?)
            .with_context(|| format!("{} is damaged: delete the folder and export again", state.display()))?;
        let mut mine = o.clone();
        mine.link = false;
        mine.out = PathBuf::new();
        if prev != mine {
            bail!(
                "{} holds an export with other options ({}): choose another --out, or delete it",
                o.out.display(),
                serde_json::to_string(&prev)?
            );
        }
        return Ok(true);
    }
    // a run killed between taking the lock and writing its options left only the lock file
    if std::fs::read_dir(&o.out)?.any(|e| e.map(|e| e.file_name() != LOCK_FILE).unwrap_or(true)) {
        bail!("{} is not empty and holds no mmtt export: choose a new or empty --out folder", o.out.display());
    }
    Ok(false)
}

/// Runs an export to the end (or resumes one), with progress on stderr and in the `exports` table.
pub async fn run(app: &App, o: &ExportOptions) -> Result<ExportSummary> {
    run_with(app, o, indicatif::ProgressBar::new(0), None).await
}

/// Sets [`Out::stop`] when dropped: an export future dropped midway stops its writer thread.
struct StopOnDrop(Arc<Out>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// [`run`] reporting progress on `bar` (samples written of samples), recorded in `exports` under
/// `export_id` (the job's id) when given. Dropping the future stops the writer at its next file.
pub async fn run_with(app: &App, o: &ExportOptions, bar: indicatif::ProgressBar, export_id: Option<uuid::Uuid>) -> Result<ExportSummary> {
    let started = std::time::Instant::now();
    if o.shard_bytes < 1024 {
        bail!("--shard-size must be at least 1024 bytes");
    }
    let (samples, seed, ratios, faces) = select(app, o).await?;
    if samples.is_empty() {
        bail!(
            "nothing to export: no {} annotations{} (review some, or pass --include-unreviewed)",
            if o.include_unreviewed { "accepted or submitted" } else { "accepted" },
            if o.methods.is_empty() && o.datasets.is_empty() { "" } else { " match the filters" }
        );
    }
    let resumed = check_out(o)?;
    let _lock = lock_out(o)?;
    std::fs::write(o.out.join(STATE_FILE), serde_json::to_vec_pretty(o)?)?;
    let export_id = export_id.unwrap_or_else(uuid::Uuid::new_v4);
    sqlx::query(
        "INSERT INTO exports (id, format, out_dir, options, total) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET status = 'running', total = $5, error = NULL, updated_at = now()",
    )
    .bind(export_id)
    .bind(o.format.name())
    .bind(o.out.display().to_string())
    .bind(serde_json::to_value(o)?)
    .bind(samples.len() as i32)
    .execute(&app.pool)
    .await?;
    let out = Arc::new(Out::new(o.out.clone(), app.store.clone(), o.link));
    let _stop = StopOnDrop(out.clone());
    let listed = if resumed {
        eprintln!("export: resuming the export in {}: every file already there is checked against what it should be", o.out.display());
        clean_start(&out)?
    } else {
        Default::default()
    };
    let samples = Arc::new(samples);
    bar.set_length(samples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("export {bar:40} {pos}/{len} samples {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let work = {
        let (out, samples, o, bar) = (out.clone(), samples.clone(), o.clone(), bar.clone());
        tokio::task::spawn_blocking(move || formats::write(&o, &out, &samples, &bar))
    };
    // progress into the jobs table while the writer runs
    let mut work = std::pin::pin!(work);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                let _ = sqlx::query("UPDATE exports SET done = $2, updated_at = now() WHERE id = $1")
                    .bind(export_id).bind(out.done.load(Ordering::Relaxed) as i32).execute(&app.pool).await;
            }
        }
    };
    bar.finish_and_clear();
    let written = match result.map_err(|e| anyhow!("the export writer panicked: {e}")).and_then(|r| r) {
        Ok(()) => card(o, &out, &samples, seed, ratios, &faces),
        Err(e) => Err(e),
    };
    let written = written.and_then(|_| if resumed { clean_end(o, &out, &listed) } else { Ok(()) });
    let files = match written.and_then(|_| out.write_manifest()) {
        Ok(n) => n,
        Err(e) => {
            sqlx::query("UPDATE exports SET status = 'failed', error = $2, updated_at = now() WHERE id = $1")
                .bind(export_id)
                .bind(format!("{e:#}"))
                .execute(&app.pool)
                .await?;
            return Err(e.context(format!("export to {} stopped; run the same command again to resume", o.out.display())));
        }
    };
    sqlx::query("UPDATE exports SET status = 'done', done = total, finished_at = now(), updated_at = now() WHERE id = $1")
        .bind(export_id)
        .execute(&app.pool)
        .await?;
    let (reused, replaced, removed) =
        (out.reused.load(Ordering::Relaxed), out.replaced.load(Ordering::Relaxed), out.removed.load(Ordering::Relaxed));
    if resumed {
        eprintln!(
            "export: resume checked {} files an earlier run left: {reused} kept (size and SHA-256 as expected), {replaced} rewritten; {removed} stale files removed",
            reused + replaced
        );
    }
    let mut per_split = BTreeMap::new();
    for s in samples.iter() {
        *per_split.entry(s.split.name().to_string()).or_insert(0u64) += 1;
    }
    Ok(ExportSummary {
        export_id,
        format: o.format,
        out: o.out.display().to_string(),
        samples: samples.len() as u64,
        per_split,
        files,
        reused_files: reused,
        verified_files: reused + replaced,
        replaced_files: replaced,
        removed_files: removed,
        bytes: out.bytes.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        split_seed: seed,
        split_ratios: ratios.to_string(),
    })
}

/// Statistics of the exported samples.
pub fn stats_of(samples: &[Sample]) -> Stats {
    let v: Vec<StatSample> = samples
        .iter()
        .map(|s| StatSample {
            method: s.method.clone(),
            split: s.split.name().to_string(),
            parts: s.parts.clone(),
            words: Some(s.word_count),
            mentions: s.mentions.clone(),
            count: 1,
        })
        .collect();
    let faces: std::collections::HashSet<uuid::Uuid> =
        samples.iter().flat_map(|s| std::iter::once(s.source_id).chain(s.donor_id)).collect();
    Stats::compute(&v, faces.len() as u64)
}

/// `splits.json`, the charts and the dataset card `README.md`.
fn card(
    o: &ExportOptions,
    out: &Out,
    samples: &[Sample],
    seed: u64,
    ratios: SplitRatios,
    faces: &BTreeMap<uuid::Uuid, Split>,
) -> Result<()> {
    let assignment: BTreeMap<String, &str> = faces.iter().map(|(k, v)| (k.to_string(), v.name())).collect();
    let splits = serde_json::json!({
        "seed": seed, "ratios": ratios.to_string(), "resplit": o.resplit.is_some(),
        "rule": "split = mmtt::storage::split::assign(seed, ratios, SHA-256 of the face's stored image); donors share their target's split",
        "faces": assignment,
    });
    out.bytes("splits.json", &serde_json::to_vec_pretty(&splits)?)?;
    let stats = stats_of(samples);
    out.bytes("stats.json", &serde_json::to_vec_pretty(&stats)?)?;
    let charts = stats.charts()?;
    for (name, svg) in &charts {
        out.bytes(&format!("charts/{name}"), svg.as_bytes())?;
    }
    let mut md = String::new();
    md += "---\nlicense: other\ntask_categories:\n- image-segmentation\n- image-to-text\npretty_name: MMTT-style face forgery triplets\n---\n\n";
    md += "# Face forgery triplets (forged image, mask, explanation)\n\n";
    md += &format!(
        "Exported by mmtt in the `{}` format: {} samples ({}). Splits: seed {seed}, ratios {ratios}{}; no face (target or donor) is in two splits.\n\n",
        o.format.name(),
        samples.len(),
        if o.include_unreviewed { "accepted and submitted annotations" } else { "accepted annotations only" },
        if o.resplit.is_some() { " (drawn for this export)" } else { " (the faces' stored splits)" }
    );
    md += "Forgeries of identifiable people are research material: do not publish them outside the terms of the source datasets.\n\n";
    md += "## Samples per split and method\n\n| split | samples | method mix |\n| --- | ---: | --- |\n";
    for sp in Split::ALL.map(Split::name) {
        let Some(ms) = stats.per_split_method.get(sp) else { continue };
        let total: u64 = ms.values().sum();
        let mix: Vec<String> = ms.iter().map(|(m, n)| format!("{m} {:.1} %", 100.0 * *n as f64 / total.max(1) as f64)).collect();
        md += &format!("| {sp} | {total} | {} |\n", mix.join(", "));
    }
    let whole: Vec<String> =
        stats.per_method.iter().map(|(m, n)| format!("{m} {:.1} %", 100.0 * *n as f64 / stats.samples.max(1) as f64)).collect();
    md += &format!("| all | {} | {} |\n\n", stats.samples, whole.join(", "));
    md += "## Statistics (spec section 6)\n\n```text\n";
    md += &stats.to_text();
    md += "```\n\n## Charts\n\n";
    for (name, _) in &charts {
        md += &format!("![{name}](charts/{name})\n\n");
    }
    md += "## Files\n\n";
    md += match o.format {
        Format::Hf => {
            "`{split}/images/`, `{split}/masks/` (single-channel PNG, 0/255), `{split}/originals/`, `{split}/metadata.jsonl`. Load with `datasets.load_dataset(\"imagefolder\", data_dir=...)`.\n"
        }
        Format::Coco => {
            "`{split}/*.png` and `annotations/captions_{split}.json`, `annotations/instances_{split}.json` (masks as COCO RLE). Load with pycocotools.\n"
        }
        Format::Webdataset => "`{split}/{split}-NNNNNN.tar` shards; per sample `KEY.png`, `KEY.mask.png`, `KEY.txt`, `KEY.json`.\n",
        Format::Mmtt => {
            "`train.json`, `val.json`, `test.json` (records `{image_id, instance_id, caption, img_path, mask_path, multilabel}`), `images/`, `masks/`.\n"
        }
    };
    md += "\n`MANIFEST.sha256` lists every file (`sha256sum -c MANIFEST.sha256`); `splits.json` gives every face's split.\n";
    out.bytes("README.md", md.as_bytes())?;
    Ok(())
}

/// `mmtt bench export`: `mmtt stats` time, an `hf` export against `cp -r` of the same files in
/// one run, and the `--link` mode; prints figures (never asserted in tests).
pub async fn bench(app: &App, dir: &Path) -> Result<serde_json::Value> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: the benchmark needs an empty or new folder", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let t = std::time::Instant::now();
    let (samples, faces) = crate::dataset::stats::load(&app.pool, &crate::dataset::stats::Scope::default()).await?;
    let st = Stats::compute(&samples, faces);
    let stats_ms = t.elapsed().as_secs_f64() * 1e3;
    let charts = st.charts()?;
    let stats_and_charts_ms = t.elapsed().as_secs_f64() * 1e3;
    let o = ExportOptions::new(Format::Hf, dir.join("hf"));
    let copy = run(app, &o).await?;
    // the same files, copied by cp -r in the same run (page cache warm for both)
    let t = std::time::Instant::now();
    let cp = std::process::Command::new("cp").arg("-r").arg(dir.join("hf")).arg(dir.join("cp")).status().context("cp -r")?;
    if !cp.success() {
        bail!("cp -r failed");
    }
    let cp_s = t.elapsed().as_secs_f64();
    let mut lo = ExportOptions::new(Format::Hf, dir.join("link"));
    lo.link = true;
    let link = run(app, &lo).await?;
    Ok(serde_json::json!({
        "samples": copy.samples, "stats_samples": st.samples, "stats_ms": stats_ms,
        "stats_and_charts_ms": stats_and_charts_ms, "charts": charts.len(),
        "hf_export_s": copy.seconds, "hf_files": copy.files, "hf_bytes": copy.bytes,
        "cp_r_s": cp_s, "throughput_ratio_export_vs_cp": cp_s / copy.seconds,
        "hf_link_export_s": link.seconds, "link_ratio_vs_cp": cp_s / link.seconds,
    }))
}

/// One export's row, as `mmtt jobs` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    pub id: uuid::Uuid,
    pub format: String,
    pub out_dir: String,
    pub status: String,
    pub done: i32,
    pub total: i32,
    pub error: Option<String>,
}

/// Every export, oldest first.
pub async fn list_exports(pool: &sqlx::PgPool) -> Result<Vec<ExportRow>> {
    Ok(sqlx::query_as("SELECT id, format, out_dir, status, done, total, error FROM exports ORDER BY started_at").fetch_all(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_only_the_writers_own() {
        for n in [".a.png.part-1", ".train-000001.tar.part-4242", ".metadata.jsonl.part-77"] {
            assert!(is_temp_name(n), "{n}");
        }
        for n in ["a.png.part-1", ".a.png.part-", ".a.png.part-12x", "..part-1", ".png", "notes.part-3.txt", ".a.png"] {
            assert!(!is_temp_name(n), "{n}");
        }
    }

    #[test]
    fn owned_names_follow_each_format() {
        assert!(owned_name(Format::Webdataset, "train/train-000003.tar"));
        assert!(!owned_name(Format::Webdataset, "train/test-000003.tar"));
        assert!(!owned_name(Format::Webdataset, "train/train-.tar"));
        assert!(!owned_name(Format::Webdataset, "train/mine.tar"));
        assert!(owned_name(Format::Hf, "validation/masks/abc.png"));
        assert!(owned_name(Format::Hf, "test/metadata.jsonl"));
        assert!(!owned_name(Format::Hf, "train/notes/abc.png"));
        assert!(owned_name(Format::Coco, "annotations/captions_train.json"));
        assert!(owned_name(Format::Coco, "train/abc.png"));
        assert!(owned_name(Format::Mmtt, "images/sd_1.png"));
        assert!(owned_name(Format::Mmtt, "val.json"));
        assert!(!owned_name(Format::Mmtt, "notes.json"));
        assert!(owned_name(Format::Mmtt, "charts/methods.svg"));
        for f in [Format::Hf, Format::Coco, Format::Webdataset, Format::Mmtt] {
            assert!(!owned_name(f, "notes.txt"));
            assert!(!owned_name(f, "README.md.orig"));
            assert!(!owned_name(f, "train/.hidden.png"));
        }
    }

    fn sample(n: u128, split: Split, imported: Option<(&str, serde_json::Value)>) -> Sample {
        let id = uuid::Uuid::from_u128(n);
        let key: BlobKey = "0".repeat(64).parse().unwrap();
        Sample {
            id,
            key: id.simple().to_string(),
            source_id: id,
            donor_id: None,
            method: "mat".into(),
            family: "transformer".into(),
            generator: None,
            dataset: "synthetic".into(),
            split,
            image: key.clone(),
            mask: key.clone(),
            original: key,
            text: String::new(),
            regions: vec![],
            mentions: vec![],
            parts: vec![],
            annotator_id: id,
            review_status: "accepted".into(),
            active_time_s: 0.0,
            word_count: 1,
            image_id: imported.as_ref().map(|(i, _)| i.to_string()).unwrap_or_default(),
            instance_id: imported.as_ref().map(|(_, v)| v.clone()).unwrap_or(serde_json::Value::Null),
            imported: imported.is_some(),
            assistance: None,
        }
    }

    #[test]
    fn imported_ids_are_kept_and_generated_ones_avoid_them() {
        let mut v = vec![
            sample(1, Split::Train, None),
            sample(2, Split::Train, Some(("sd_7", 0.into()))),
            sample(3, Split::Train, None),
            sample(4, Split::Test, Some(("mat_x", 2.into()))),
            sample(5, Split::Train, None),
            sample(6, Split::Test, None),
            sample(7, Split::Test, Some(("e4s_y", serde_json::Value::Null))),
        ];
        assign_release_ids(&mut v).unwrap();
        let got: Vec<(String, serde_json::Value)> = v.iter().map(|s| (s.image_id.clone(), s.instance_id.clone())).collect();
        let hex = |n: u128| uuid::Uuid::from_u128(n).simple().to_string();
        assert_eq!(
            got,
            vec![
                (format!("mat_{}", hex(1)), 1.into()),
                ("sd_7".into(), 0.into()),
                (format!("mat_{}", hex(3)), 3.into()),
                ("mat_x".into(), 2.into()),
                (format!("mat_{}", hex(5)), 4.into()),
                (format!("mat_{}", hex(6)), 1.into()),
                ("e4s_y".into(), 3.into()),
            ]
        );
        // an imported id equal to a generated one is refused
        let mut v = vec![sample(1, Split::Train, None), sample(2, Split::Train, Some((&format!("mat_{}", hex(1)), 0.into())))];
        let e = assign_release_ids(&mut v).unwrap_err().to_string();
        assert!(e.contains("would both be exported as image id"), "{e}");
        let mut v = vec![sample(2, Split::Train, Some(("../x", 0.into())))];
        assert!(assign_release_ids(&mut v).is_err());
    }
}
