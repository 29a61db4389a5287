//! Evaluation pages: upload a prediction file (the JSONL `mmtt eval report` reads) with a tar of
//! its masks, against the ground truth of a finished export in the release format; an eval job
//! computes the Table 2 row. A finished stage-2 training run is predicted and scored with each
//! regions variant by one `table3` job (w/o FPN, w/ FPN, w/ FPN-GT). The results page (the
//! leaderboard) lists every finished evaluation beside the paper's Table 2 rows (spec section 9),
//! and each trained model's Table 3 rows beside the paper's (from `table3` jobs, and from `eval`
//! jobs tagged with a model and a regions variant: `mmtt eval report --record --model --regions`).

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::jobs;
use crate::jobs::table3::{TalkerRun, finished_talker_runs};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use mmtt_model::talker::train::RegionSource;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The Table 2 columns, in the paper's order.
pub const COLUMNS: [&str; 9] = ["CIDEr", "B-1", "B-2", "B-3", "B-4", "ROUGE-L", "IoU", "Prec.", "Rec."];

/// The paper's reference rows (spec section 9); `None`: not reported.
pub const PAPER_ROWS: [(&str, [Option<f64>; 9]); 8] = [
    ("SCA (GPT2-large)", [Some(10.6), Some(17.7), Some(7.6), Some(4.0), Some(2.4), Some(17.8), Some(72.87), None, None]),
    ("LISA-7B", [Some(18.1), Some(29.4), Some(15.5), Some(8.6), Some(4.9), Some(23.3), Some(68.52), Some(77.80), Some(84.64)]),
    ("Osprey", [Some(9.2), Some(16.7), Some(7.8), Some(4.4), Some(2.5), Some(18.5), None, None, None]),
    ("InstructBLIP", [Some(20.9), Some(30.6), Some(16.8), Some(9.8), Some(5.6), Some(24.8), Some(67.38), Some(85.47), Some(80.25)]),
    (
        "ForgeryTalker (paper)",
        [Some(21.5), Some(31.1), Some(16.9), Some(9.8), Some(5.9), Some(24.3), Some(70.81), Some(87.06), Some(78.34)],
    ),
    (
        "ForgeryTalker w/ FPN-GT (oracle regions)",
        [Some(48.1), Some(38.0), Some(22.4), Some(14.4), Some(9.5), Some(32.3), Some(70.26), Some(88.83), Some(77.93)],
    ),
    (
        "authors' release, validation",
        [Some(59.30), Some(35.00), Some(22.10), Some(16.00), Some(12.50), Some(28.80), Some(73.67), Some(91.43), Some(86.22)],
    ),
    (
        "authors' release, test (21,679)",
        [Some(69.48), Some(34.50), Some(22.49), Some(16.73), Some(13.47), Some(30.54), Some(66.06), Some(76.27), Some(81.83)],
    ),
];

/// The paper's Table 3 (the ablation of the region prompts), in its order: (variant, the paper's
/// row name, the Table 2 columns). "w/o FPN" is the paper's InstructBLIP row but for B-4 (6.0).
pub const PAPER_TABLE3: [(RegionSource, &str, [Option<f64>; 9]); 3] = [
    (
        RegionSource::Gt,
        "ForgeryTalker w/ FPN-GT",
        [Some(48.1), Some(38.0), Some(22.4), Some(14.4), Some(9.5), Some(32.3), Some(70.26), Some(88.83), Some(77.93)],
    ),
    (
        RegionSource::None,
        "ForgeryTalker w/o FPN",
        [Some(20.9), Some(30.6), Some(16.8), Some(9.8), Some(6.0), Some(24.8), Some(67.38), Some(85.47), Some(80.25)],
    ),
    (
        RegionSource::Fpn,
        "ForgeryTalker",
        [Some(21.5), Some(31.1), Some(16.9), Some(9.8), Some(5.9), Some(24.3), Some(70.81), Some(87.06), Some(78.34)],
    ),
];

/// Largest prediction file and masks archive accepted.
pub const MAX_PRED_BYTES: usize = 64 << 20;
pub const MAX_ARCHIVE_BYTES: usize = 1 << 30;

/// A ground truth the form offers: a finished export in the release format.
#[derive(Debug, Clone, Serialize)]
pub struct GroundTruth {
    pub job: String,
    pub out: String,
    pub splits: Vec<String>,
}

async fn ground_truths(state: &AppState) -> Result<Vec<GroundTruth>, WebError> {
    let mut out = Vec::new();
    for j in recent(&state.pool, Some("export")).await? {
        let params = j.view.get("params");
        let is_mmtt = params.and_then(|p| p.get("format")).and_then(|f| f.as_str()) == Some("mmtt");
        let dir = params.and_then(|p| p.get("out")).and_then(|o| o.as_str()).map(PathBuf::from);
        if let (true, "done", Some(dir)) = (is_mmtt, j.state.as_str(), dir) {
            let splits: Vec<String> =
                ["test", "val", "train"].iter().filter(|s| dir.join(format!("{s}.json")).is_file()).map(|s| s.to_string()).collect();
            if !splits.is_empty() {
                out.push(GroundTruth { job: j.id.clone(), out: dir.display().to_string(), splits });
            }
        }
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "admin_eval.html")]
struct EvalPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    truths: Vec<GroundTruth>,
    jobs: Vec<JobRow>,
    runs: Vec<TalkerRun>,
    beams: usize,
    new_tokens: usize,
}

impl EvalPage<'_> {
    /// The form's value of `name`, else the default shown.
    fn v(&self, name: &str, default: String) -> String {
        self.values.opt(name).map(str::to_string).unwrap_or(default)
    }
    fn variant_on(&self, name: &str) -> bool {
        self.values.all("variants").is_empty() || self.values.has("variants", name)
    }
}

/// The evaluation jobs of both kinds, newest first.
async fn eval_jobs(state: &AppState) -> Result<Vec<JobRow>, WebError> {
    let mut jobs = recent(&state.pool, Some("eval")).await?;
    jobs.extend(recent(&state.pool, Some("table3")).await?);
    jobs.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(jobs)
}

async fn page(
    state: &AppState,
    admin: &Admin,
    error: Option<&Refusal>,
    values: &Fields,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let truths = ground_truths(state).await?;
    let jobs = eval_jobs(state).await?;
    let runs = finished_talker_runs(&state.pool).await.map_err(|e| WebError::Internal(e.to_string()))?;
    let g = mmtt_model::talker::GenerationConfig::release();
    let data = serde_json::json!({ "ground_truths": truths, "jobs": jobs, "talker_runs": runs });
    let html = render(&EvalPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        truths,
        jobs,
        runs,
        beams: g.num_beams,
        new_tokens: g.max_new_tokens,
    })?;
    Ok((html, data))
}

pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    match page(&state, &admin, None, &Fields::default()).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

/// A relative path without `..`, root or prefix components.
fn safe_rel(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Unpacks a tar of PNG masks into `dir`: regular files only, relative paths only.
fn unpack(bytes: &[u8], dir: &Path) -> Result<BTreeSet<String>, String> {
    let mut ar = tar::Archive::new(std::io::Cursor::new(bytes));
    let mut names = BTreeSet::new();
    let entries = ar.entries().map_err(|e| format!("not a tar archive ({e}): pack the masks with `tar cf masks.tar -C DIR .`"))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("not a tar archive ({e}): pack the masks with `tar cf masks.tar -C DIR .`"))?;
        let kind = e.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let path = e.path().map_err(|e| format!("an entry has an unreadable name: {e}"))?.into_owned();
        if !kind.is_file() {
            return Err(format!("`{}` is not a regular file (links are not accepted): pack the files themselves", path.display()));
        }
        if !safe_rel(&path) {
            return Err(format!("`{}` is not a relative path inside the archive: pack with `tar cf masks.tar -C DIR .`", path.display()));
        }
        let norm: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        let target = dir.join(&norm);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot store the masks: {e}"))?;
        }
        e.unpack(&target).map_err(|e| format!("cannot unpack `{}`: {e}", path.display()))?;
        names.insert(norm.to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Err("the archive holds no files: pack the predicted masks (PNG) named by the prediction file".into());
    }
    Ok(names)
}

/// Checks the prediction lines (the fields `mmtt eval report` reads); returns the masks they name.
fn check_predictions(text: &str) -> Result<Vec<String>, Refusal> {
    let mut masks = Vec::new();
    let mut ids = BTreeSet::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |m: &str| Refusal::new("predictions", format!("line {}: {m}", n + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&format!("not JSON ({e}): one JSON object per line")))?;
        let s = |names: &[&str]| names.iter().find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string));
        let id = s(&["image_id"]).ok_or_else(|| at("no image_id: each line needs image_id, caption and mask_path"))?;
        s(&["caption", "pred_caption", "prediction"]).ok_or_else(|| at("no caption: each line needs image_id, caption and mask_path"))?;
        let mask =
            s(&["mask_path", "pred_mask_path"]).ok_or_else(|| at("no mask_path: each line needs image_id, caption and mask_path"))?;
        if !ids.insert(id.clone()) {
            return Err(at(&format!("image_id `{}` appears twice: keep one prediction per image", short(&id))));
        }
        if !safe_rel(Path::new(&mask)) {
            return Err(at(&format!("mask_path `{}` must be relative to the archive's root", short(&mask))));
        }
        masks.push(mask);
    }
    if masks.is_empty() {
        return Err(Refusal::new("predictions", "the file is empty: upload one JSON line per image (image_id, caption, mask_path)"));
    }
    Ok(masks)
}

/// POST /admin/eval (multipart: csrf, name, truth = export job id, split, predictions, masks).
pub async fn submit(State(state): State<AppState>, admin: Admin, mut mp: Multipart) -> Response {
    let mut values = Fields::default();
    let mut pred: Option<Vec<u8>> = None;
    let mut archive: Option<Vec<u8>> = None;
    let read = async {
        while let Some(field) =
            mp.next_field().await.map_err(|e| Refusal::new("predictions", format!("the upload was cut off or malformed ({e})")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let (limit, slot) = match name.as_str() {
                "predictions" => (MAX_PRED_BYTES, &mut pred),
                "masks" => (MAX_ARCHIVE_BYTES, &mut archive),
                _ => {
                    let t = field.text().await.map_err(|e| Refusal::new(&name, format!("unreadable: {e}")))?;
                    if t.len() > 10_000 {
                        return Err(Refusal::new(&name, "too long: use at most 10,000 characters"));
                    }
                    values.0.push((name, t));
                    continue;
                }
            };
            if field.file_name().is_some_and(|n| n.is_empty()) {
                continue;
            }
            let mut field = field;
            let mut buf = Vec::new();
            while let Some(c) = field.chunk().await.map_err(|e| Refusal::new(&name, format!("the upload was cut off ({e})")))? {
                buf.extend_from_slice(&c);
                if buf.len() > limit {
                    return Err(Refusal::new(&name, format!("larger than {} MB: upload a smaller file", limit >> 20)));
                }
            }
            *slot = Some(buf);
        }
        Ok(())
    }
    .await;
    if let Err(r) = read {
        let html = page(&state, &admin, Some(&r), &values).await.map(|(h, _)| h);
        return refused(admin.json, &r, |_| html);
    }
    if let Err(e) = admin.check_csrf(values.csrf()) {
        return super::error_response(e, admin.json);
    }
    let dir = state.admin.data_dir.join("evals").join(uuid::Uuid::new_v4().simple().to_string());
    let tmp = dir.with_extension("tmp");
    let checked = async {
        let row_name = values.val("name").to_string();
        if row_name.is_empty() || row_name.chars().count() > 100 {
            return Err(Refusal::new("name", "give the model's name for the leaderboard (1-100 characters)"));
        }
        let truths = ground_truths(&state).await.map_err(|e| Refusal::new("truth", e.to_string()))?;
        if truths.is_empty() {
            return Err(Refusal::new(
                "truth",
                "no finished export in the mmtt format: export one (Export page, format mmtt) to evaluate against",
            ));
        }
        let truth = truths.iter().find(|t| t.job == values.val("truth")).ok_or_else(|| {
            Refusal::new("truth", format!("`{}` is not a finished mmtt-format export: choose one of the list", short(values.val("truth"))))
        })?;
        let split = values.opt("split").unwrap_or("test");
        if !truth.splits.iter().any(|s| s == split) {
            return Err(Refusal::new("split", format!("the export has no {} split: choose {}", short(split), truth.splits.join(", "))));
        }
        let pred = pred.as_deref().ok_or_else(|| Refusal::new("predictions", "missing: upload the JSONL prediction file"))?;
        let text =
            std::str::from_utf8(pred).map_err(|_| Refusal::new("predictions", "not UTF-8 text: upload the JSONL prediction file"))?;
        let named = check_predictions(text)?;
        let archive = archive.ok_or_else(|| Refusal::new("masks", "missing: upload a tar of the predicted masks named by mask_path"))?;
        let t2 = tmp.join("masks");
        let names = tokio::task::spawn_blocking(move || unpack(&archive, &t2))
            .await
            .map_err(|e| Refusal::new("masks", e.to_string()))?
            .map_err(|m| Refusal::new("masks", m))?;
        for m in &named {
            let norm: PathBuf = Path::new(m).components().filter(|c| matches!(c, Component::Normal(_))).collect();
            if !names.contains(&*norm.to_string_lossy()) {
                return Err(Refusal::new(
                    "masks",
                    format!("`{}` (a mask_path of the predictions) is not in the archive: add it", short(m)),
                ));
            }
        }
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| Refusal::new("predictions", format!("cannot store: {e}")))?;
        tokio::fs::write(tmp.join("predictions.jsonl"), text)
            .await
            .map_err(|e| Refusal::new("predictions", format!("cannot store: {e}")))?;
        Ok((row_name, truth.job.clone(), truth.out.clone(), split.to_string()))
    }
    .await;
    match checked {
        Err(r) => {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            let html = page(&state, &admin, Some(&r), &values).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok((row_name, truth, out, split)) => {
            if let Err(e) = tokio::fs::rename(&tmp, &dir).await {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return super::internal(admin.json, e);
            }
            let out = PathBuf::from(out);
            let spec = match specs::eval(
                &out.join(format!("{split}.json")),
                &out,
                &dir.join("predictions.jsonl"),
                &dir.join("masks"),
                &row_name,
            ) {
                Ok(s) => s,
                Err(r) => {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                    let html = page(&state, &admin, Some(&r), &values).await.map(|(h, _)| h);
                    return refused(admin.json, &r, |_| html);
                }
            };
            let detail = serde_json::json!({ "name": row_name, "ground_truth_export": truth, "split": split });
            let r = specs::submit_and_answer(&state, &admin, &spec, "evaluate", detail).await;
            if !r.status().is_success() && !r.status().is_redirection() {
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            r
        }
    }
}

/// The Table 3 job the form asks for (checked by the job system's own validation).
async fn table3_spec(state: &AppState, f: &Fields) -> Result<crate::jobs::table3::Table3Spec, Refusal> {
    let runs = finished_talker_runs(&state.pool).await.map_err(|e| Refusal::new("train_job", e.to_string()))?;
    if runs.is_empty() {
        return Err(Refusal::new(
            "train_job",
            "no finished stage-2 training run with a checkpoint yet: train one on the Train page (model: ForgeryTalker stage 2) first",
        ));
    }
    let run = runs.iter().find(|r| r.job.to_string() == f.val("train_job")).ok_or_else(|| {
        Refusal::new("train_job", format!("`{}` is not a finished stage-2 training run: choose one of the list", short(f.val("train_job"))))
    })?;
    let split = crate::dataset::training::parse_split(f.opt("split").unwrap_or("test")).map_err(|m| Refusal::new("split", m))?;
    let mut variants = Vec::new();
    for v in f.all("variants") {
        variants.push(crate::predict::parse_variant(v).map_err(|m| Refusal::new("variants", m))?);
    }
    if variants.is_empty() {
        variants = crate::predict::VARIANTS.iter().map(|v| v.0).collect();
    }
    let model = f.opt("model").unwrap_or(&run.name).to_string();
    let out = crate::jobs::table3::default_out(&state.admin.data_dir);
    let mut spec = crate::jobs::table3::Table3Spec::new(&model, &run.checkpoint, &out);
    spec.train_job = Some(run.job);
    spec.split = split;
    spec.variants = variants;
    spec.fpn = match f.opt("fpn") {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None if !crate::predict::checkpoint_has_fpn(&run.checkpoint) => run.fpn.clone(),
        None => None,
    };
    spec.data = run.data.clone();
    if let Some(l) = f.opt("limit") {
        spec.data.limit = Some(l.parse().map_err(|_| {
            Refusal::new("limit", format!("`{}` is not a whole number: give at most how many images, or nothing for all", short(l)))
        })?);
    }
    spec.num_beams = f.u64_or("num_beams", Some(spec.num_beams as u64), "the beams of the beam search, such as 5 (1: greedy)")? as usize;
    spec.max_new_tokens =
        f.u64_or("max_new_tokens", Some(spec.max_new_tokens as u64), "the most new tokens per image, such as 100")? as usize;
    spec.batch_size = f.u64_or("batch_size", Some(spec.batch_size as u64), "images per forward pass, such as 8")? as usize;
    if let Some(d) = f.opt("device") {
        spec.device = d.to_string();
    }
    specs::table3(spec)
}

/// POST /admin/eval/table3: predict and score a finished stage-2 training run with each regions
/// variant (a `table3` job).
pub async fn submit_table3(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match table3_spec(&state, &f).await {
        Err(r) => {
            let html = page(&state, &admin, Some(&r), &f).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok(spec) => {
            let detail = serde_json::json!({
                "model": spec.model, "checkpoint": spec.checkpoint, "train_job": spec.train_job, "split": spec.split,
                "variants": spec.variants, "out": spec.out,
            });
            specs::submit_and_answer(&state, &admin, &crate::jobs::JobSpec::Table3(spec), "table3", detail).await
        }
    }
}

/// One leaderboard row.
#[derive(Debug, Clone, Serialize)]
pub struct BoardRow {
    pub name: String,
    pub paper: bool,
    pub by: String,
    pub when: String,
    pub job: String,
    pub cells: Vec<Option<f64>>,
}

impl BoardRow {
    pub fn cell_texts(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())).collect()
    }
}

/// The paper's rows and every finished evaluation (best CIDEr first).
pub async fn board(state: &AppState) -> Result<Vec<BoardRow>, WebError> {
    let mut rows: Vec<BoardRow> = PAPER_ROWS
        .iter()
        .map(|(n, c)| BoardRow {
            name: n.to_string(),
            paper: true,
            by: "paper".into(),
            when: String::new(),
            job: String::new(),
            cells: c.to_vec(),
        })
        .collect();
    let filter = jobs::JobFilter { kind: Some(jobs::JobKind::Eval), limit: Some(1000), ..Default::default() };
    let evals = jobs::list(&state.pool, &filter).await.map_err(|e| WebError::Internal(e.to_string()))?;
    let mut mine = Vec::new();
    for j in evals {
        let j = JobRow::from_view(serde_json::to_value(&j).unwrap_or_default());
        if j.state != "done" {
            continue;
        }
        let Some(row) =
            j.view.get("result").and_then(|r| r.get("table2_row").or_else(|| r.get("report").and_then(|x| x.get("table2_row"))))
        else {
            continue;
        };
        let name = j.view.get("params").and_then(|p| p.get("name")).and_then(|n| n.as_str()).unwrap_or("unnamed").to_string();
        mine.push(BoardRow {
            name,
            paper: false,
            by: j.started_by.clone(),
            when: j.created.clone(),
            job: j.id.clone(),
            cells: COLUMNS.iter().map(|c| row.get(*c).and_then(|v| v.as_f64())).collect(),
        });
    }
    // a Table 3 job's w/ FPN row is its model's Table 2 row
    for r in table3_results(state).await? {
        if r.regions == RegionSource::Fpn {
            mine.push(BoardRow { name: r.model, paper: false, by: r.by, when: r.when, job: r.job, cells: r.cells });
        }
    }
    mine.sort_by(|a, b| b.cells[0].unwrap_or(f64::MIN).total_cmp(&a.cells[0].unwrap_or(f64::MIN)));
    rows.extend(mine);
    Ok(rows)
}

/// One scored variant of a trained model, from a `table3` job or a tagged `eval` job.
#[derive(Debug, Clone)]
struct Table3Result {
    model: String,
    checkpoint: String,
    regions: RegionSource,
    cells: Vec<Option<f64>>,
    job: String,
    by: String,
    when: String,
}

fn cells_of(row: &serde_json::Value) -> Vec<Option<f64>> {
    COLUMNS.iter().map(|c| row.get(*c).and_then(|v| v.as_f64())).collect()
}

/// Every scored variant of every trained model, newest first.
async fn table3_results(state: &AppState) -> Result<Vec<Table3Result>, WebError> {
    let list = |kind| {
        let filter = jobs::JobFilter { kind: Some(kind), state: Some(jobs::JobState::Done), limit: Some(1000) };
        async move { jobs::list(&state.pool, &filter).await.map_err(|e| WebError::Internal(e.to_string())) }
    };
    let mut out = Vec::new();
    for j in list(jobs::JobKind::Table3).await? {
        let j = JobRow::from_view(serde_json::to_value(&j).unwrap_or_default());
        let Some(r) = j.view.get("result") else { continue };
        let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        for row in r.get("rows").and_then(|x| x.as_array()).into_iter().flatten() {
            let Some(regions) = row.get("regions").and_then(|v| serde_json::from_value::<RegionSource>(v.clone()).ok()) else { continue };
            let Some(t) = row.get("table2_row") else { continue };
            out.push(Table3Result {
                model: text("model"),
                checkpoint: text("checkpoint"),
                regions,
                cells: cells_of(t),
                job: j.id.clone(),
                by: j.started_by.clone(),
                when: j.created.clone(),
            });
        }
    }
    for j in list(jobs::JobKind::Eval).await? {
        let j = JobRow::from_view(serde_json::to_value(&j).unwrap_or_default());
        let p = j.view.get("params");
        let model = p.and_then(|p| p.get("model")).and_then(|m| m.as_str()).map(str::to_string);
        let regions = p.and_then(|p| p.get("regions")).and_then(|v| serde_json::from_value::<RegionSource>(v.clone()).ok());
        let row = j.view.get("result").and_then(|r| r.get("table2_row").or_else(|| r.get("report").and_then(|x| x.get("table2_row"))));
        if let (Some(model), Some(regions), Some(row)) = (model, regions, row) {
            out.push(Table3Result {
                model,
                checkpoint: String::new(),
                regions,
                cells: cells_of(row),
                job: j.id.clone(),
                by: j.started_by.clone(),
                when: j.created.clone(),
            });
        }
    }
    out.sort_by(|a, b| b.when.cmp(&a.when));
    Ok(out)
}

/// One Table 3 row: the paper's, or a trained model's (cells `None` where not scored yet).
#[derive(Debug, Clone, Serialize)]
pub struct Table3Line {
    /// `fpn`, `none`, `gt`.
    pub regions: &'static str,
    /// `w/ FPN-GT`, `w/o FPN`, `w/ FPN`.
    pub label: &'static str,
    pub cells: Vec<Option<f64>>,
    /// The job that scored it ("" for the paper's rows and rows not scored yet).
    pub job: String,
    pub by: String,
    pub when: String,
}

impl Table3Line {
    pub fn cell_texts(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())).collect()
    }
}

/// A trained model's three Table 3 rows, in the paper's order.
#[derive(Debug, Clone, Serialize)]
pub struct Table3Model {
    pub model: String,
    pub checkpoint: String,
    pub rows: Vec<Table3Line>,
}

/// The paper's Table 3 rows and each trained model's (the newest score of each variant; models
/// with the newest scores first).
pub async fn table3(state: &AppState) -> Result<(Vec<(String, Table3Line)>, Vec<Table3Model>), WebError> {
    let paper = PAPER_TABLE3
        .iter()
        .map(|(r, name, cells)| {
            let line = Table3Line {
                regions: crate::predict::variant_name(*r),
                label: crate::predict::variant_label(*r),
                cells: cells.to_vec(),
                job: String::new(),
                by: "paper".into(),
                when: String::new(),
            };
            (name.to_string(), line)
        })
        .collect();
    let mut models: Vec<Table3Model> = Vec::new();
    for r in table3_results(state).await? {
        let i = match models.iter().position(|m| m.model == r.model) {
            Some(i) => i,
            None => {
                let rows = PAPER_TABLE3
                    .iter()
                    .map(|(v, ..)| Table3Line {
                        regions: crate::predict::variant_name(*v),
                        label: crate::predict::variant_label(*v),
                        cells: vec![None; COLUMNS.len()],
                        job: String::new(),
                        by: String::new(),
                        when: String::new(),
                    })
                    .collect();
                models.push(Table3Model { model: r.model.clone(), checkpoint: String::new(), rows });
                models.len() - 1
            }
        };
        let m = &mut models[i];
        if m.checkpoint.is_empty() {
            m.checkpoint = r.checkpoint.clone();
        }
        let name = crate::predict::variant_name(r.regions);
        if let Some(line) = m.rows.iter_mut().find(|l| l.regions == name && l.job.is_empty()) {
            line.cells = r.cells;
            line.job = r.job;
            line.by = r.by;
            line.when = r.when;
        }
    }
    Ok((paper, models))
}

#[derive(Template)]
#[template(path = "admin_leaderboard.html")]
struct BoardPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    columns: &'a [&'a str],
    rows: Vec<BoardRow>,
    paper3: Vec<(String, Table3Line)>,
    models3: Vec<Table3Model>,
}

/// GET /admin/leaderboard
pub async fn leaderboard(State(state): State<AppState>, admin: Admin) -> Response {
    let got = async { Ok::<_, WebError>((board(&state).await?, table3(&state).await?)) }.await;
    let (rows, (paper3, models3)) = match got {
        Ok(r) => r,
        Err(e) => return super::error_response(e, admin.json),
    };
    let data = serde_json::json!({
        "columns": COLUMNS,
        "rows": rows,
        "table3": {
            "paper": paper3.iter().map(|(name, l)| serde_json::json!({ "name": name, "regions": l.regions, "label": l.label, "cells": l.cells })).collect::<Vec<_>>(),
            "models": models3,
        },
    });
    page_or_json(admin.json, &data, || render(&BoardPage { nav: &NAV, name: &admin.user.name, columns: &COLUMNS, rows, paper3, models3 }))
}
