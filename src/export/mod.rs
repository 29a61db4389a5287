//! `mmtt export`: accepted triplets (I_f, M, T) as datasets that researchers load with their own
//! tools. Four formats ([`Format`]): Hugging Face imagefolder, COCO captions + RLE instances,
//! WebDataset tar shards, and the authors' release format (spec section 8).
//!
//! Every export writes, beside the data: `MANIFEST.sha256` (every file, `sha256sum -c` format),
//! `splits.json` (the split of every face with the seed and ratios), and a dataset card
//! `README.md` with the statistics of spec section 6 and their charts (`charts/*.svg`).
//!
//! Invariants: a file appears under its final name only complete (temp name, then rename); an
//! interrupted export resumes when run again with the same options and `--out` (finished images
//! and shards are kept); splits come from the faces' stored splits (or one `--resplit` that no
//! swap pair would cross), so no face is in two splits.

pub mod formats;
pub mod rle;

use crate::app::App;
use crate::split::{self, Split, SplitRatios};
use crate::stats::{StatSample, Stats};
use crate::store::{BlobKey, FsBlobStore};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
    pub fn name(self) -> &'static str {
        match self {
            Format::Hf => "hf",
            Format::Coco => "coco",
            Format::Webdataset => "webdataset",
            Format::Mmtt => "mmtt",
        }
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
}

#[derive(Debug, Serialize)]
pub struct ExportSummary {
    pub export_id: uuid::Uuid,
    pub format: Format,
    pub out: String,
    pub samples: u64,
    pub per_split: BTreeMap<String, u64>,
    pub files: u64,
    /// Files found complete from an earlier, interrupted run.
    pub reused_files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub split_seed: u64,
    pub split_ratios: String,
}

/// The samples the options select, with their final splits, in id order.
pub async fn select(app: &App, o: &ExportOptions) -> Result<(Vec<Sample>, u64, SplitRatios, BTreeMap<uuid::Uuid, Split>)> {
    let statuses: Vec<&str> = if o.include_unreviewed { vec!["accepted", "submitted"] } else { vec!["accepted"] };
    let rows = sqlx::query(
        "SELECT f.id, f.target_id, f.donor_id, f.method, i.family, f.provenance->>'generator', s.dataset, f.split, s.split_key, d.split_key, \
                f.image_hash, f.mask_hash, f.original_hash, a.text, a.regions, a.mentions, p.parts, a.annotator_id, a.status, a.active_seconds, a.word_count \
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
    let settings = crate::db::settings(&app.pool).await?;
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
        });
    }
    if crossing > 0 {
        bail!(
            "--resplit --seed {seed} --ratios {ratios} would put the target and the donor of {crossing} face-swap pairs in different splits \
             (a face would appear in two splits): keep the stored splits (drop --resplit), try another seed, or export without swaps (--method)"
        );
    }
    Ok((samples, seed, ratios, faces))
}

/// Files written under the output folder, with their SHA-256 for the manifest.
pub struct Out {
    pub root: PathBuf,
    store: Arc<FsBlobStore>,
    link: bool,
    manifest: Mutex<Vec<(String, String)>>,
    pub reused: AtomicU64,
    pub bytes: AtomicU64,
    pub done: AtomicU64,
}

impl Out {
    pub fn new(root: PathBuf, store: Arc<FsBlobStore>, link: bool) -> Self {
        Out { root, store, link, manifest: Mutex::new(Vec::new()), reused: AtomicU64::new(0), bytes: AtomicU64::new(0), done: AtomicU64::new(0) }
    }

    pub fn store_ref(&self) -> &FsBlobStore {
        &self.store
    }

    fn record(&self, rel: &str, sha: String, size: u64) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Ok(mut m) = self.manifest.lock() {
            m.push((rel.to_string(), sha));
        }
    }

    fn target(&self, rel: &str) -> Result<(PathBuf, PathBuf)> {
        let path = self.root.join(rel);
        let dir = path.parent().ok_or_else(|| anyhow!("bad export path {rel}"))?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("bad export path {rel}"))?;
        let tmp = dir.join(format!(".{name}.part-{}", std::process::id()));
        Ok((path, tmp))
    }

    /// A stored image under `rel` (copied, or hard-linked with `--link`); an earlier run's
    /// complete file is kept.
    pub fn blob(&self, rel: &str, key: &BlobKey) -> Result<()> {
        let src = self.store.path_of(key);
        let size = std::fs::metadata(&src).with_context(|| format!("the store lacks {} (run `mmtt` store checks)", src.display()))?.len();
        let (path, tmp) = self.target(rel)?;
        if std::fs::metadata(&path).map(|m| m.len() == size).unwrap_or(false) {
            self.reused.fetch_add(1, Ordering::Relaxed);
        } else if self.link {
            let _ = std::fs::remove_file(&tmp);
            std::fs::hard_link(&src, &tmp).map_err(|e| {
                anyhow!("--link: cannot hard-link {} into {}: {e} (the output must be on the data directory's filesystem; drop --link to copy)", src.display(), self.root.display())
            })?;
            std::fs::rename(&tmp, &path)?;
        } else {
            std::fs::copy(&src, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
        }
        // the store's files are named by their SHA-256
        self.record(rel, key.as_str().to_string(), size);
        Ok(())
    }

    /// Generated bytes under `rel` (always rewritten, atomically).
    pub fn bytes(&self, rel: &str, data: &[u8]) -> Result<()> {
        let (path, tmp) = self.target(rel)?;
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
        self.record(rel, hex::encode(Sha256::digest(data)), data.len() as u64);
        Ok(())
    }

    /// A file produced by `write` (given the temp path, returning its SHA-256), unless an earlier
    /// run left it complete.
    pub fn produced(&self, rel: &str, write: impl FnOnce(&Path) -> Result<String>) -> Result<()> {
        let (path, tmp) = self.target(rel)?;
        let sha = if path.exists() {
            self.reused.fetch_add(1, Ordering::Relaxed);
            hash_file(&path)?
        } else {
            let sha = write(&tmp)?;
            std::fs::rename(&tmp, &path)?;
            sha
        };
        let size = std::fs::metadata(&path)?.len();
        self.record(rel, sha, size);
        Ok(())
    }

    /// Writes `MANIFEST.sha256` (sorted; `sha256sum -c MANIFEST.sha256` checks it).
    pub fn write_manifest(&self) -> Result<u64> {
        let mut m = self.manifest.lock().map_err(|_| anyhow!("manifest lock poisoned"))?.clone();
        m.sort();
        m.dedup();
        let text: String = m.iter().map(|(p, h)| format!("{h}  {p}\n")).collect();
        let (path, tmp) = self.target("MANIFEST.sha256")?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(m.len() as u64 + 1)
    }
}

pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

const STATE_FILE: &str = ".mmtt-export.json";

/// Refuses an output folder that holds something else; returns whether this resumes a run.
fn check_out(o: &ExportOptions) -> Result<bool> {
    if !o.out.exists() {
        std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create {}", o.out.display()))?;
        return Ok(false);
    }
    let state = o.out.join(STATE_FILE);
    if state.exists() {
        let prev: ExportOptions = serde_json::from_slice(&std::fs::read(&state)?).with_context(|| format!("{} is damaged: delete the folder and export again", state.display()))?;
        let mut mine = o.clone();
        mine.link = false;
        mine.out = PathBuf::new();
        if prev != mine {
            bail!("{} holds an export with other options ({}): choose another --out, or delete it", o.out.display(), serde_json::to_string(&prev)?);
        }
        return Ok(true);
    }
    if std::fs::read_dir(&o.out)?.next().is_some() {
        bail!("{} is not empty and holds no mmtt export: choose a new or empty --out folder", o.out.display());
    }
    Ok(false)
}

/// Runs an export to the end (or resumes one), with progress on stderr and in the `exports` table.
pub async fn run(app: &App, o: &ExportOptions) -> Result<ExportSummary> {
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
    std::fs::write(o.out.join(STATE_FILE), serde_json::to_vec_pretty(o)?)?;
    let export_id = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO exports (id, format, out_dir, options, total) VALUES ($1, $2, $3, $4, $5)")
        .bind(export_id)
        .bind(o.format.name())
        .bind(o.out.display().to_string())
        .bind(serde_json::to_value(o)?)
        .bind(samples.len() as i32)
        .execute(&app.pool)
        .await?;
    if resumed {
        eprintln!("export: resuming the export in {}", o.out.display());
    }
    let out = Arc::new(Out::new(o.out.clone(), app.store.clone(), o.link));
    let samples = Arc::new(samples);
    let bar = indicatif::ProgressBar::new(samples.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("export {bar:40} {pos}/{len} samples {per_sec} eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
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
    sqlx::query("UPDATE exports SET status = 'done', done = total, finished_at = now(), updated_at = now() WHERE id = $1").bind(export_id).execute(&app.pool).await?;
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
        reused_files: out.reused.load(Ordering::Relaxed),
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
    let faces: std::collections::HashSet<uuid::Uuid> = samples.iter().flat_map(|s| std::iter::once(s.source_id).chain(s.donor_id)).collect();
    Stats::compute(&v, faces.len() as u64)
}

/// `splits.json`, the charts and the dataset card `README.md`.
fn card(o: &ExportOptions, out: &Out, samples: &[Sample], seed: u64, ratios: SplitRatios, faces: &BTreeMap<uuid::Uuid, Split>) -> Result<()> {
    let assignment: BTreeMap<String, &str> = faces.iter().map(|(k, v)| (k.to_string(), v.name())).collect();
    let splits = serde_json::json!({
        "seed": seed, "ratios": ratios.to_string(), "resplit": o.resplit.is_some(),
        "rule": "split = mmtt::split::assign(seed, ratios, SHA-256 of the face's stored image); donors share their target's split",
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
    let whole: Vec<String> = stats.per_method.iter().map(|(m, n)| format!("{m} {:.1} %", 100.0 * *n as f64 / stats.samples.max(1) as f64)).collect();
    md += &format!("| all | {} | {} |\n\n", stats.samples, whole.join(", "));
    md += "## Statistics (spec section 6)\n\n```text\n";
    md += &stats.to_text();
    md += "```\n\n## Charts\n\n";
    for (name, _) in &charts {
        md += &format!("![{name}](charts/{name})\n\n");
    }
    md += "## Files\n\n";
    md += match o.format {
        Format::Hf => "`{split}/images/`, `{split}/masks/` (single-channel PNG, 0/255), `{split}/originals/`, `{split}/metadata.jsonl`. Load with `datasets.load_dataset(\"imagefolder\", data_dir=...)`.\n",
        Format::Coco => "`{split}/*.png` and `annotations/captions_{split}.json`, `annotations/instances_{split}.json` (masks as COCO RLE). Load with pycocotools.\n",
        Format::Webdataset => "`{split}/{split}-NNNNNN.tar` shards; per sample `KEY.png`, `KEY.mask.png`, `KEY.txt`, `KEY.json`.\n",
        Format::Mmtt => "`train.json`, `val.json`, `test.json` (records `{image_id, instance_id, caption, img_path, mask_path, multilabel}`), `images/`, `masks/`.\n",
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
    let (samples, faces) = crate::stats::load(&app.pool, &crate::stats::Scope::default()).await?;
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
