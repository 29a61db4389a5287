//! Generate page: a forgery job (one method or the paper's mix, count, seeds, device, the SDXL
//! options), and before starting, which generators can run now: built in, or their model files
//! present and matching their manifests on this server (checked by loading them once per file
//! version), and the live workers that offer each method and whether any has CUDA.

use super::jobs::{JobRow, recent, workers};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use mmtt_generators::forge::runtime::Device;
use mmtt_generators::registry::{Family, Method};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What this server knows about one generator.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorStatus {
    pub method: String,
    pub family: String,
    /// Ready on this server: built in, or its models present and matching their manifest.
    pub ready: bool,
    pub detail: String,
    /// Live workers that announce the method.
    pub workers: Vec<String>,
}

/// Where a method's model files are (`None`: built in).
fn model_path(models: &Path, method: Method) -> Option<PathBuf> {
    method.model_path().map(|p| models.join(p))
}

/// Sizes and modification times of the files under `p`: the cache key of a check.
fn signature(p: &Path) -> Option<String> {
    if !p.exists() {
        return None;
    }
    let mut s = String::new();
    for e in walkdir::WalkDir::new(p).sort_by_file_name().into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
        if let Ok(m) = e.metadata() {
            let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
            s += &format!("{}:{}:{t};", e.path().display(), m.len());
        }
    }
    Some(s)
}

/// (method, file signature) -> the check's outcome.
type CheckCache = HashMap<(String, String), Result<String, String>>;

static CHECKS: Mutex<Option<CheckCache>> = Mutex::new(None);

/// Loads the method's models on the CPU and checks them against their manifest (cached per file
/// version). SDXL's five graphs are only checked for presence here (loading them takes gigabytes);
/// a worker checks them against the manifest when it loads them.
fn check_models(models: &Path, method: Method) -> Result<String, String> {
    let Some(path) = model_path(models, method) else { return Ok("built in".into()) };
    let Some(sig) = signature(&path) else {
        return Err(format!(
            "model files missing: {} does not exist (put the export described in generators/manifests/{method}.json there)",
            path.display()
        ));
    };
    let key = (method.to_string(), sig);
    if let Some(r) = CHECKS.lock().ok().and_then(|m| m.as_ref().and_then(|m| m.get(&key).cloned())) {
        return r;
    }
    let r = match method {
        Method::Sdxl => {
            let missing: Vec<&str> = [
                "text_encoder/model.onnx",
                "text_encoder_2/model.onnx",
                "unet/model.onnx",
                "vae_encoder/model.onnx",
                "vae_decoder/model.onnx",
            ]
            .into_iter()
            .filter(|f| !path.join(f).is_file())
            .collect();
            if missing.is_empty() {
                Ok(format!("{} has its five graphs (checked against the manifest when a worker loads them)", path.display()))
            } else {
                Err(format!("{} lacks {}: export SDXL inpainting there (see generators/EXPORT.md)", path.display(), missing.join(", ")))
            }
        }
        _ => method.load(models, Device::Cpu, 1).map(|_| format!("{} matches its manifest", path.display())).map_err(|e| format!("{e}")),
    };
    if let Ok(mut m) = CHECKS.lock() {
        m.get_or_insert_with(HashMap::new).insert(key, r.clone());
    }
    r
}

/// Every method's status, with the live workers' announcements.
pub async fn generators(state: &AppState) -> Result<(Vec<GeneratorStatus>, bool), WebError> {
    let (_, wv) = workers(&state.pool).await?;
    let cuda = wv.iter().any(|w| w.get("devices").and_then(|d| d.as_array()).is_some_and(|a| a.iter().any(|x| x.as_str() == Some("cuda"))));
    let models = state.admin.models_dir.clone();
    let checks = tokio::task::spawn_blocking(move || Method::ALL.iter().map(|&m| (m, check_models(&models, m))).collect::<Vec<_>>())
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let out = checks
        .into_iter()
        .map(|(m, r)| GeneratorStatus {
            method: m.to_string(),
            family: m.family().to_string(),
            ready: r.is_ok(),
            detail: r.unwrap_or_else(|e| e),
            workers: wv
                .iter()
                .filter(|w| w.get("methods").and_then(|d| d.as_array()).is_some_and(|a| a.iter().any(|x| x.as_str() == Some(m.as_str()))))
                .map(|w| w.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_string())
                .collect(),
        })
        .collect();
    Ok((out, cuda))
}

#[derive(Template)]
#[template(path = "admin_generate.html")]
struct GeneratePage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    generators: Vec<GeneratorStatus>,
    cuda: bool,
    methods: Vec<&'static str>,
    jobs: Vec<JobRow>,
}

async fn page(
    state: &AppState,
    admin: &Admin,
    error: Option<&Refusal>,
    values: &Fields,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let (generators, cuda) = generators(state).await?;
    let jobs = recent(&state.pool, Some("forge")).await?;
    let data = serde_json::json!({ "generators": generators, "cuda_worker": cuda, "jobs": jobs });
    let html = render(&GeneratePage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        generators,
        cuda,
        methods: Method::ALL.iter().map(|m| m.as_str()).collect(),
        jobs,
    })?;
    Ok((html, data))
}

pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    let mut values = Fields::default();
    values.0.push(("count".into(), "10".into()));
    values.0.push(("seed".into(), "1".into()));
    for (k, v) in [("mix_swap", "e4s"), ("mix_transformer", "mat"), ("mix_diffusion", "sdxl")] {
        values.0.push((k.into(), v.into()));
    }
    match page(&state, &admin, None, &values).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

fn known_method(field: &str, m: &str) -> Result<Method, Refusal> {
    m.parse::<Method>().map_err(|_| {
        Refusal::new(
            field,
            format!(
                "unknown method `{}`: choose one of {}",
                short(m),
                Method::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// The SDXL options of the form, as the job's generator settings.
fn sdxl_params(f: &Fields) -> Result<serde_json::Value, Refusal> {
    let mut p = serde_json::Map::new();
    for k in ["prompt", "negative_prompt"] {
        if let Some(v) = f.opt(k) {
            if v.chars().count() > 2000 {
                return Err(Refusal::new(k, "too long: use at most 2,000 characters"));
            }
            p.insert(k.into(), v.into());
        }
    }
    if let Some(v) = f.opt("steps") {
        match v.parse::<u32>() {
            Ok(n) if (1..=200).contains(&n) => p.insert("steps".into(), n.into()),
            _ => return Err(Refusal::new("steps", format!("`{}` is not a step count: give a whole number from 1 to 200", short(v)))),
        };
    }
    if let Some(g) = f.f64_opt("guidance", "a guidance scale such as 7.5")? {
        if !(0.0..=50.0).contains(&g) {
            return Err(Refusal::new("guidance", "out of range: give a scale from 0 to 50 (7.5 is the default)"));
        }
        p.insert("guidance".into(), g.into());
    }
    if let Some(s) = f.f64_opt("strength", "a strength in (0, 1], such as 0.99")? {
        if !(s > 0.0 && s <= 1.0) {
            return Err(Refusal::new("strength", "out of range: give a strength above 0 and at most 1 (0.99 is the default)"));
        }
        p.insert("strength".into(), s.into());
    }
    if let Some(s) = f.opt("scheduler") {
        if !matches!(s, "euler" | "dpm++2m") {
            return Err(Refusal::new("scheduler", format!("unknown scheduler `{}`: choose euler or dpm++2m", short(s))));
        }
        p.insert("scheduler".into(), s.into());
    }
    Ok(serde_json::Value::Object(p))
}

/// POST /admin/generate: a forgery job.
pub async fn submit(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let mix_paper = match f.opt("mix") {
            None | Some("none") => false,
            Some("paper") => true,
            Some(o) => return Err(Refusal::new("mix", format!("unknown mix `{}`: choose none or paper", short(o)))),
        };
        let methods: Vec<(&str, &str)> = if mix_paper {
            let v =
                [("mix_swap", f.val("mix_swap")), ("mix_transformer", f.val("mix_transformer")), ("mix_diffusion", f.val("mix_diffusion"))];
            for (field, m) in v {
                if m.is_empty() {
                    return Err(Refusal::new(field, "missing: choose the method standing for this family in the paper's mix"));
                }
                known_method(field, m)?;
            }
            if known_method("mix_swap", v[0].1)?.family() != Family::Swap {
                return Err(Refusal::new("mix_swap", format!("`{}` is not a face swap: choose classic-swap or e4s", v[0].1)));
            }
            for (field, m) in &v[1..] {
                if known_method(field, m)?.family() == Family::Swap {
                    return Err(Refusal::new(
                        field,
                        format!("`{m}` is a face swap: choose an inpainting method (mat, lama, sdxl, patch-inpaint, part-swap)"),
                    ));
                }
            }
            v.to_vec()
        } else {
            let m = f.val("method");
            if m.is_empty() {
                return Err(Refusal::new("method", "missing: choose a method, or the paper's mix"));
            }
            known_method("method", m)?;
            vec![("method", m)]
        };
        let count = f.u64_or("count", None, "how many forgeries to make (at least 1)")?;
        if count == 0 {
            return Err(Refusal::new("count", "0 makes nothing: give at least 1"));
        }
        if count > 1_000_000 {
            return Err(Refusal::new("count", "more than 1,000,000 in one job: split it over several jobs"));
        }
        let seed = f.u64_or("seed", Some(0), "a whole number such as 1")?;
        let plan_seed = f.u64_or("plan_seed", Some(seed), "the mask plan seed, a whole number (empty: the forge seed)")?;
        let device = match f.opt("device").unwrap_or("cpu") {
            d @ ("cpu" | "cuda") => d,
            other => return Err(Refusal::new("device", format!("unknown device `{}`: choose cpu or cuda", short(other)))),
        };
        let params = sdxl_params(&f)?;
        if params.as_object().is_some_and(|p| !p.is_empty()) && !methods.iter().any(|(_, m)| *m == "sdxl") {
            return Err(Refusal::new("prompt", "the SDXL options apply to sdxl only: choose sdxl, or leave them empty"));
        }
        let models = state.admin.models_dir.clone();
        let names: Vec<(String, String)> = methods.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
        let checks = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|(f, m)| {
                    let r = m.parse::<Method>().map_err(|e| e.to_string()).and_then(|method| check_models(&models, method));
                    (f, m, r)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Refusal::new("method", format!("cannot check the models: {e}")))?;
        for (field, m, r) in checks {
            if let Err(why) = r {
                return Err(Refusal::new(&field, format!("`{m}` cannot run on this server: {why}")));
            }
        }
        let spec = specs::forge(&specs::Forge {
            methods: methods.iter().map(|(_, m)| *m).collect(),
            mix_paper,
            count,
            seed,
            plan_seed,
            device,
            params,
        })?;
        let detail = serde_json::json!({ "methods": methods.iter().map(|(_, m)| *m).collect::<Vec<_>>(), "mix_paper": mix_paper,
                                         "count": count, "seed": seed, "device": device });
        Ok((spec, detail))
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, Some(&r), &f).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok((spec, detail)) => specs::submit_and_answer(&state, &admin, &spec, "generate", detail).await,
    }
}
