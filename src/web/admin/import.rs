//! Import pages: a dataset layout from a folder on the server (only under the allowed roots), and
//! photos uploaded from the admin's computer (multipart; count and size limits; every file
//! decoded with the CLI import's checks before anything is kept). Both submit an import job.

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::dataset::import::decode::{DecodeLimits, decode_image};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use std::path::{Path, PathBuf};

/// The layouts an import reads, as the form offers them.
pub const LAYOUTS: [(&str, &str); 4] = [
    ("photos", "Photos (any folder of face photos; faces detected and aligned)"),
    ("ffhq", "FFHQ aligned faces"),
    ("celebamask-hq", "CelebAMask-HQ (CelebA-HQ-img/ + CelebAMask-HQ-mask-anno/)"),
    ("mmtt-release", "The authors' MMTT release ({train,val,test}.json + images/ + masks/)"),
];

#[derive(Template)]
#[template(path = "admin_import.html")]
struct ImportPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    layouts: &'a [(&'a str, &'a str)],
    roots: Vec<String>,
    max_files: usize,
    max_mb: u64,
    jobs: Vec<JobRow>,
}

async fn page(state: &AppState, admin: &Admin, error: Option<&Refusal>, values: &Fields) -> Result<Html<String>, WebError> {
    let jobs = recent(&state.pool, Some("import")).await?;
    render(&ImportPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        layouts: &LAYOUTS,
        roots: state.admin.roots().iter().map(|r| r.display().to_string()).collect(),
        max_files: state.admin.max_upload_files,
        max_mb: state.admin.max_upload_file_bytes / (1024 * 1024),
        jobs,
    })
}

pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    let data = match recent(&state.pool, Some("import")).await {
        Ok(j) => serde_json::json!({ "roots": state.admin.roots(), "layouts": LAYOUTS.map(|l| l.0), "jobs": j,
                                     "max_upload_files": state.admin.max_upload_files,
                                     "max_upload_file_bytes": state.admin.max_upload_file_bytes }),
        Err(e) => return super::error_response(e, admin.json),
    };
    let html = page(&state, &admin, None, &Fields::default()).await;
    page_or_json(admin.json, &data, || html)
}

/// Checks a server folder: given, existing, a folder, under an allowed root. Returns it canonical.
pub fn allowed_folder(roots: &[PathBuf], field: &str, raw: &str) -> Result<PathBuf, Refusal> {
    let list = roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
    if raw.is_empty() {
        return Err(Refusal::new(field, format!("missing: give the dataset's folder on the server, under {list}")));
    }
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(Refusal::new(field, format!("`{}` is not an absolute path: give the full path, under {list}", short(raw))));
    }
    let canon = p.canonicalize().map_err(|_| {
        Refusal::new(field, format!("`{}` does not exist on the server: copy the dataset under {list} and give its path", short(raw)))
    })?;
    if !roots.iter().any(|r| canon.starts_with(r)) {
        return Err(Refusal::new(
            field,
            format!(
                "`{}` is outside the allowed roots ({list}): copy the dataset under one of them, or start the server with \
                 `mmtt serve --import-root DIR`",
                short(raw)
            ),
        ));
    }
    if !canon.is_dir() {
        return Err(Refusal::new(field, format!("`{}` is a file, not a folder: give the dataset's folder", short(raw))));
    }
    Ok(canon)
}

/// The folder holds the layout's files (the import's own discovery, without reading images).
fn check_layout(layout: &str, dir: &Path) -> Result<(), Refusal> {
    use crate::dataset::import::datasets::{Dataset, discover};
    let dataset = match layout {
        "photos" => Dataset::Photos,
        "ffhq" => Dataset::Ffhq,
        "celebamask-hq" => Dataset::CelebAMaskHq,
        "mmtt-release" => {
            return if ["train.json", "val.json", "validation.json", "test.json"].iter().any(|f| dir.join(f).is_file()) {
                Ok(())
            } else {
                Err(Refusal::new(
                    "folder",
                    "holds none of train.json, val.json, validation.json, test.json: give the MMTT release's folder",
                ))
            };
        }
        other => {
            return Err(Refusal::new(
                "dataset",
                format!("unknown layout `{}`: choose photos, ffhq, celebamask-hq or mmtt-release", short(other)),
            ));
        }
    };
    match discover(dataset, dir) {
        Ok((items, _)) if items.is_empty() => Err(Refusal::new(
            "folder",
            format!("no images (.jpg, .jpeg, .png, .webp) in {}: give the folder that holds them", dir.display()),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::new("folder", format!("{e:#}"))),
    }
}

/// POST /admin/import: a dataset from a folder on the server.
pub async fn submit_folder(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let layout = f.val("dataset").to_string();
        if layout.is_empty() {
            return Err(Refusal::new("dataset", "missing: choose photos, ffhq, celebamask-hq or mmtt-release"));
        }
        let dir = allowed_folder(&state.admin.roots(), "folder", f.val("folder"))?;
        let limit = match f.opt("limit") {
            None => None,
            Some(_) => match f.u64_or("limit", None, "the most inputs to import (at least 1), or leave it empty")? {
                0 => return Err(Refusal::new("limit", "0 imports nothing: give at least 1, or leave it empty for all")),
                n => Some(n),
            },
        };
        let (l2, d2) = (layout.clone(), dir.clone());
        tokio::task::spawn_blocking(move || check_layout(&l2, &d2))
            .await
            .map_err(|e| Refusal::new("folder", format!("cannot check the folder: {e}")))??;
        let spec = specs::import(&layout, &dir, limit)?;
        Ok((spec, layout, dir))
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, Some(&r), &f).await;
            refused(admin.json, &r, |_| html)
        }
        Ok((spec, layout, dir)) => {
            let detail = serde_json::json!({ "dataset": layout, "folder": dir });
            specs::submit_and_answer(&state, &admin, &spec, "import folder", detail).await
        }
    }
}

/// A file name for an upload: its index and a safe stem, the extension of its real format.
fn stored_name(i: usize, original: &str, format: image::ImageFormat) -> String {
    let stem: String = Path::new(original)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("photo")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(60)
        .collect();
    let ext = match format {
        image::ImageFormat::Png => "png",
        image::ImageFormat::WebP => "webp",
        _ => "jpg",
    };
    format!("{i:04}-{stem}.{ext}")
}

/// Reads the multipart upload into `tmp`, checking limits and decoding every photo. Returns the
/// form's other fields and the number of photos.
async fn receive(state: &AppState, mut mp: Multipart, tmp: &Path) -> Result<(Fields, usize), Refusal> {
    let cfg = &state.admin;
    let mut values = Fields::default();
    let mut n = 0usize;
    let mut received: Vec<(PathBuf, String)> = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(Refusal::new("photos", format!("the upload was cut off or malformed ({e}): send it again"))),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name != "photos" {
            let text = field.text().await.map_err(|e| Refusal::new(&name, format!("unreadable field: {e}")))?;
            if text.len() > 10_000 {
                return Err(Refusal::new(&name, "too long: use at most 10,000 characters"));
            }
            values.0.push((name, text));
            continue;
        }
        let original = field.file_name().unwrap_or("photo").to_string();
        if original.is_empty() {
            continue; // an empty file input
        }
        n += 1;
        if n > cfg.max_upload_files {
            return Err(Refusal::new(
                "photos",
                format!("too many files: upload at most {} photos at once (split them over several uploads)", cfg.max_upload_files),
            ));
        }
        let mut field = field;
        let mut bytes = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    bytes.extend_from_slice(&c);
                    if bytes.len() as u64 > cfg.max_upload_file_bytes {
                        return Err(Refusal::new(
                            "photos",
                            format!(
                                "`{}` is larger than {} MB: upload photos of at most {} MB each (resize or re-encode it)",
                                short(&original),
                                cfg.max_upload_file_bytes / (1024 * 1024),
                                cfg.max_upload_file_bytes / (1024 * 1024)
                            ),
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(Refusal::new("photos", format!("the upload was cut off ({e}): send it again"))),
            }
        }
        let raw = tmp.join(format!("{n:04}.upload"));
        tokio::fs::write(&raw, &bytes).await.map_err(|e| Refusal::new("photos", format!("cannot store the upload: {e}")))?;
        received.push((raw, original));
    }
    if n == 0 {
        return Err(Refusal::new("photos", "no photo chosen: choose one or more JPEG, PNG or WebP files"));
    }
    // every file decoded with the CLI import's checks, once the count and sizes are known good
    for (i, (raw, original)) in received.into_iter().enumerate() {
        let r = raw.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&r).map_err(|e| format!("cannot read the upload: {e}"))?;
            decode_image(bytes, DecodeLimits::default()).map(|d| d.format)
        })
        .await
        .map_err(|e| Refusal::new("photos", format!("cannot decode: {e}")))?;
        let format = decoded.map_err(|why| Refusal::new("photos", format!("`{}` is not usable: {why}", short(&original))))?;
        tokio::fs::rename(&raw, tmp.join(stored_name(i + 1, &original, format)))
            .await
            .map_err(|e| Refusal::new("photos", format!("cannot store the upload: {e}")))?;
    }
    Ok((values, n))
}

/// POST /admin/import/upload: photos from the admin's computer, then an import job over them.
pub async fn submit_upload(State(state): State<AppState>, admin: Admin, mp: Multipart) -> Response {
    let uploads = state.admin.data_dir.join("uploads");
    let id = uuid::Uuid::new_v4();
    let tmp = uploads.join(format!(".tmp-{id}"));
    if let Err(e) = tokio::fs::create_dir_all(&tmp).await {
        return super::internal(admin.json, format!("cannot create {}: {e}", tmp.display()));
    }
    let (values, n) = match receive(&state, mp, &tmp).await {
        Ok(x) => x,
        Err(r) => {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            let html = page(&state, &admin, Some(&r), &Fields::default()).await;
            return refused(admin.json, &r, |_| html);
        }
    };
    if let Err(e) = admin.check_csrf(values.csrf()) {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return super::error_response(e, admin.json);
    }
    let dir = uploads.join(format!("photos-{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), id.simple()));
    if let Err(e) = tokio::fs::rename(&tmp, &dir).await {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return super::internal(admin.json, format!("cannot keep the upload: {e}"));
    }
    let spec = match specs::import("photos", &dir, None) {
        Ok(s) => s,
        Err(r) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let html = page(&state, &admin, Some(&r), &values).await;
            return refused(admin.json, &r, |_| html);
        }
    };
    let detail = serde_json::json!({ "dataset": "photos", "uploaded": n, "folder": dir });
    let r = specs::submit_and_answer(&state, &admin, &spec, "import upload", detail).await;
    if r.status().is_server_error() || r.status() == StatusCode::UNPROCESSABLE_ENTITY {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    r
}
