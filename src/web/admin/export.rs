//! Export pages: an export job (format, filters, re-split) into `DATA_DIR/exports/`, each
//! finished export's dataset card, and its download as one tar. The tar is packed once, when
//! first asked for, deterministically (sorted paths, fixed times and owners), next to the export
//! (`DATA_DIR/exports/JOB.tar`), and served with tower-http's `ServeFile`, which answers HTTP
//! range requests (206), so an interrupted download resumes and yields the same bytes.

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::dataset::export::{ExportOptions, Format};
use crate::jobs;
use crate::storage::split::SplitRatios;
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::path::PathBuf;

pub const FORMATS: [(&str, &str); 4] = [
    ("hf", "Hugging Face imagefolder"),
    ("coco", "COCO captions + instances"),
    ("webdataset", "WebDataset tar shards"),
    ("mmtt", "the authors' release format"),
];

#[derive(Template)]
#[template(path = "admin_export.html")]
struct ExportPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    formats: &'a [(&'a str, &'a str)],
    methods: Vec<String>,
    datasets: Vec<String>,
    jobs: Vec<JobRow>,
}

async fn choices(state: &AppState) -> Result<(Vec<String>, Vec<String>), WebError> {
    let methods: Vec<String> = sqlx::query_scalar("SELECT DISTINCT method FROM forgeries ORDER BY 1").fetch_all(&state.pool).await?;
    let datasets: Vec<String> = sqlx::query_scalar("SELECT DISTINCT dataset FROM sources ORDER BY 1").fetch_all(&state.pool).await?;
    Ok((methods, datasets))
}

async fn page(
    state: &AppState,
    admin: &Admin,
    error: Option<&Refusal>,
    values: &Fields,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let (methods, datasets) = choices(state).await?;
    let jobs = recent(&state.pool, Some("export")).await?;
    let data = serde_json::json!({ "formats": FORMATS.map(|f| f.0), "methods": methods, "datasets": datasets, "jobs": jobs });
    let html = render(&ExportPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        formats: &FORMATS,
        methods,
        datasets,
        jobs,
    })?;
    Ok((html, data))
}

pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    let mut values = Fields::default();
    values.0.push(("format".into(), "hf".into()));
    values.0.push(("ratios".into(), "8:1:1".into()));
    match page(&state, &admin, None, &values).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

/// POST /admin/export: an export job.
pub async fn submit(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let format = match f.val("format") {
            "" => return Err(Refusal::new("format", "missing: choose hf, coco, webdataset or mmtt")),
            "hf" => Format::Hf,
            "coco" => Format::Coco,
            "webdataset" => Format::Webdataset,
            "mmtt" => Format::Mmtt,
            other => return Err(Refusal::new("format", format!("unknown format `{}`: choose hf, coco, webdataset or mmtt", short(other)))),
        };
        let (known_methods, known_datasets) = choices(&state).await.map_err(|e| Refusal::new("method", e.to_string()))?;
        let methods: Vec<String> = f.all("method").into_iter().map(str::to_string).collect();
        for m in &methods {
            if m.parse::<mmtt_generators::registry::Method>().is_err() && !known_methods.contains(m) {
                return Err(Refusal::new("method", format!("unknown method `{}`: choose among {}", short(m), known_methods.join(", "))));
            }
        }
        let datasets: Vec<String> = f.all("dataset").into_iter().map(str::to_string).collect();
        for d in &datasets {
            if !super::masks::DATASETS.contains(&d.as_str()) {
                return Err(Refusal::new("dataset", format!("unknown dataset `{}`: choose among {}", short(d), known_datasets.join(", "))));
            }
        }
        let out = state.admin.data_dir.join("exports").join(format!(
            "{}-{}-{}",
            format.name(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let mut o = ExportOptions::new(format, out.clone());
        o.include_unreviewed = f.flag("include_unreviewed");
        o.methods = methods;
        o.datasets = datasets;
        o.originals = !f.flag("no_originals");
        if let Some(s) = f.opt("shard_mb") {
            match s.parse::<u64>() {
                Ok(mb) if mb >= 1 => o.shard_bytes = mb * 1_000_000,
                _ => return Err(Refusal::new("shard_mb", format!("`{}` is not a shard size: give whole megabytes, at least 1", short(s)))),
            }
        }
        if f.flag("resplit") {
            let seed = f.u64_or("split_seed", None, "the seed of the new splits, a whole number")?;
            let ratios: SplitRatios = f.opt("ratios").unwrap_or("8:1:1").parse().map_err(|_| {
                Refusal::new(
                    "ratios",
                    format!("`{}` is not train:validation:test ratios: give three whole numbers such as 8:1:1", short(f.val("ratios"))),
                )
            })?;
            o.resplit = Some((seed, ratios));
        } else if f.opt("split_seed").is_some() {
            return Err(Refusal::new("split_seed", "a split seed only applies with re-split: tick re-split, or leave the seed empty"));
        }
        let spec = specs::export(&o, &out)?;
        Ok((spec, o, out))
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, Some(&r), &f).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok((spec, o, out)) => {
            let detail = serde_json::json!({ "format": o.format.name(), "out": out, "methods": o.methods, "datasets": o.datasets,
                                             "resplit": o.resplit.map(|(s, r)| format!("seed {s} ratios {r}")) });
            specs::submit_and_answer(&state, &admin, &spec, "export", detail).await
        }
    }
}

/// A finished export's folder, from its job.
async fn finished(state: &AppState, id: &str) -> Result<(uuid::Uuid, JobRow, PathBuf), WebError> {
    let id: uuid::Uuid = id.parse().map_err(|_| WebError::NotFound)?;
    let view = jobs::get(&state.pool, id).await.map_err(|e| WebError::Internal(e.to_string()))?.ok_or(WebError::NotFound)?;
    let job = JobRow::from_view(serde_json::to_value(&view).unwrap_or_default());
    if job.kind != "export" {
        return Err(WebError::NotFound);
    }
    let out = job
        .view
        .get("params")
        .and_then(|p| p.get("out"))
        .and_then(|o| o.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| WebError::Internal("the export job has no output folder".into()))?;
    Ok((id, job, out))
}

#[derive(Template)]
#[template(path = "admin_export_one.html")]
struct ExportOnePage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    job: JobRow,
    out: String,
    card: String,
    files: Vec<(String, u64)>,
}

fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            Some((rel, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect()
}

/// GET /admin/export/{id}: the export's state, dataset card and files.
pub async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> Response {
    let (_, job, out) = match finished(&state, &id).await {
        Ok(x) => x,
        Err(e) => return super::error_response(e, admin.json),
    };
    let card = tokio::fs::read_to_string(out.join("README.md")).await.unwrap_or_default();
    let o2 = out.clone();
    let files = if job.state == "done" { tokio::task::spawn_blocking(move || listing(&o2)).await.unwrap_or_default() } else { vec![] };
    let data = serde_json::json!({ "job": job.view, "out": out, "card": card, "files": files,
                                   "download": (job.state == "done").then(|| format!("/admin/export/{}/download", job.id)) });
    page_or_json(admin.json, &data, || {
        render(&ExportOnePage { nav: &NAV, name: &admin.user.name, out: out.display().to_string(), card, files, job })
    })
}

static PACKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Packs `dir` into `tar` (sorted paths under `prefix/`, fixed times, owners and modes).
fn pack(dir: &std::path::Path, tar_path: &std::path::Path, prefix: &str) -> std::io::Result<()> {
    let tmp = tar_path.with_extension(format!("tar.tmp-{}", uuid::Uuid::new_v4().simple()));
    let r = (|| {
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut b = tar::Builder::new(file);
        b.mode(tar::HeaderMode::Deterministic);
        b.follow_symlinks(true);
        for (rel, _) in listing(dir) {
            b.append_path_with_name(dir.join(&rel), format!("{prefix}/{rel}"))?;
        }
        let mut w = b.into_inner()?;
        std::io::Write::flush(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, tar_path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// GET /admin/export/{id}/download: the finished export as one tar; `Range` requests answered.
pub async fn download(State(state): State<AppState>, admin: Admin, Path(id): Path<String>, req: Request) -> Response {
    let (id, job, out) = match finished(&state, &id).await {
        Ok(x) => x,
        Err(e) => return super::error_response(e, admin.json),
    };
    if job.state != "done" {
        return super::error_response(
            WebError::Conflict(format!("the export is {}: download it once it is done (its page shows the progress)", job.state)),
            admin.json,
        );
    }
    let tar_path = state.admin.data_dir.join("exports").join(format!("{id}.tar"));
    if !tar_path.is_file() {
        let _guard = PACKING.lock().await;
        if !tar_path.is_file() {
            let (o, t, prefix) = (out.clone(), tar_path.clone(), format!("export-{}", id.simple()));
            match tokio::task::spawn_blocking(move || pack(&o, &t, &prefix)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return super::internal(admin.json, format!("cannot pack {}: {e}", out.display())),
                Err(e) => return super::internal(admin.json, e),
            }
        }
    }
    let mut res =
        match tower_http::services::ServeFile::new_with_mime(&tar_path, &"application/x-tar".parse().expect("mime")).try_call(req).await {
            Ok(r) => r.map(Body::new),
            Err(e) => return super::internal(admin.json, e),
        };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"export-{}.tar\"", id.simple())) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    res.into_response()
}
