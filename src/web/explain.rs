//! The explain page: a signed-in reviewer or admin uploads a face image or picks a stored forgery
//! and sees ForgeryTalker's answer: the predicted mask over the image, the regions, the
//! instruction, the explanation and the model that produced them. The model is the server's
//! [`crate::explain::TalkerService`] (`mmtt serve --talker DIR`): loaded on first use, one
//! inference at a time, in a blocking thread. Without a configured model the page says how to
//! configure one. Like the admin pages, it answers JSON when asked (`Accept: application/json`
//! or a bearer token). Access (reviewers and admins) is checked by the router; the POST checks
//! its CSRF token here.

use super::admin::{Fields, Refusal, short, tokens, wants_json};
use super::auth::{Role, User};
use super::{AppState, WebError, render};
use crate::dataset::import::decode::{DecodeLimits, decode_image};
use crate::explain::{GenerationLimits, ModelInfo, ServiceError, check_generation, fit, overlay, parse_regions, png_bytes, png_data_url};
use crate::storage::store::BlobKey;
use askama::Template;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use image::RgbImage;
use mmtt_model::fpn::LABELS;
use mmtt_model::talker::{ExplainOptions, GenerationConfig, Prompting};
use serde::Serialize;
use sqlx::Row;

/// Largest uploaded image file.
pub const MAX_IMAGE_BYTES: usize = 20 << 20;
/// The route's body limit: the image and the form's fields.
pub const MAX_BODY_BYTES: usize = MAX_IMAGE_BYTES + (1 << 20);
/// Longest instruction accepted.
pub const MAX_INSTRUCTION_CHARS: usize = 2_000;
/// Longer side of the image shown on the page (the mask is computed on the full image).
const DISPLAY_SIDE: u32 = 768;
/// Recent forgeries offered on the form.
const RECENT: i64 = 12;

/// The pictures of a result: the image shown (a `data:` URL, `None` for a stored forgery, which
/// `/images` serves), the mask (the overlay for the page, the binary mask for JSON) and the size shown.
type Pictures = (Option<String>, Option<String>, (u32, u32));

/// A stored forgery the form offers.
#[derive(Debug, Clone, Serialize)]
pub struct RecentForgery {
    pub id: String,
    pub method: String,
    pub created: String,
}

/// What the page shows of one explanation.
#[derive(Debug, Clone)]
struct ResultView {
    image_src: String,
    overlay_src: Option<String>,
    width: u32,
    height: u32,
    source: String,
    text: String,
    regions: Vec<String>,
    instruction: String,
    mask_area: Option<String>,
    tokens: usize,
    seconds: String,
    model: String,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage<'a> {
    nav: Vec<(&'static str, &'static str)>,
    name: &'a str,
    role: String,
    csrf: &'a str,
    /// The configured checkpoint folder.
    configured: Option<String>,
    not_configured: String,
    model: Option<ModelInfo>,
    recent: Vec<RecentForgery>,
    labels: &'static [&'static str],
    values: &'a Fields,
    defaults: GenerationConfig,
    error: Option<&'a Refusal>,
    result: Option<ResultView>,
}

impl ExplainPage<'_> {
    /// The form's value of `name`, else the default shown.
    fn v(&self, name: &str, default: String) -> String {
        self.values.opt(name).map(str::to_string).unwrap_or(default)
    }
    /// The prompting choice shown: the form's, else the model's FPN.
    fn mode(&self, m: &str) -> bool {
        self.values.opt("prompting").unwrap_or("fpn") == m
    }
    fn region_on(&self, label: &str) -> bool {
        self.values.has("region", label)
    }
}

/// Who asked, and how the answer goes back.
struct Caller {
    user: User,
    json: bool,
    /// A bearer token (scripts): no CSRF token needed.
    bearer: bool,
}

impl Caller {
    fn new(user: User, headers: &HeaderMap) -> Self {
        Caller { user, json: wants_json(headers), bearer: tokens::bearer(headers).is_some() }
    }
}

fn nav(role: Role) -> Vec<(&'static str, &'static str)> {
    match role {
        Role::Admin => super::admin::NAV.to_vec(),
        _ => vec![("/review", "Review queue"), ("/explain", "Explain")],
    }
}

async fn recent(state: &AppState) -> Result<Vec<RecentForgery>, WebError> {
    let rows = sqlx::query(
        "SELECT id::text, method, to_char(created_at, 'YYYY-MM-DD HH24:MI') FROM forgeries ORDER BY created_at DESC, id LIMIT $1",
    )
    .bind(RECENT)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.iter().map(|r| RecentForgery { id: r.get(0), method: r.get(1), created: r.get(2) }).collect())
}

/// The page's data as JSON (without a result).
fn page_data(state: &AppState, recent: &[RecentForgery]) -> serde_json::Value {
    let t = &state.talker;
    serde_json::json!({
        "configured": t.config().is_some(),
        "checkpoint": t.config().map(|c| c.checkpoint.display().to_string()),
        "model": t.info(),
        "how_to_configure": (t.config().is_none()).then(|| ServiceError::NotConfigured.to_string()),
        "recent_forgeries": recent,
        "regions": LABELS,
        "defaults": generation_json(&GenerationConfig::release()),
        "max_image_bytes": MAX_IMAGE_BYTES,
    })
}

fn generation_json(g: &GenerationConfig) -> serde_json::Value {
    serde_json::json!({
        "num_beams": g.num_beams, "max_new_tokens": g.max_new_tokens, "min_length": g.min_length,
        "repetition_penalty": g.repetition_penalty, "length_penalty": g.length_penalty,
    })
}

/// Renders the page (status `status`) with an optional refusal and result.
async fn page(
    state: &AppState,
    caller: &Caller,
    status: StatusCode,
    values: &Fields,
    error: Option<&Refusal>,
    result: Option<ResultView>,
) -> Response {
    let recent = match recent(state).await {
        Ok(r) => r,
        Err(e) => return super::admin::error_response(e, caller.json),
    };
    let t = &state.talker;
    let html = render(&ExplainPage {
        nav: nav(caller.user.role),
        name: &caller.user.name,
        role: caller.user.role.to_string(),
        csrf: &caller.user.csrf,
        configured: t.config().map(|c| c.checkpoint.display().to_string()),
        not_configured: ServiceError::NotConfigured.to_string(),
        model: t.info().cloned(),
        recent,
        labels: &LABELS,
        values,
        defaults: GenerationConfig::release(),
        error,
        result,
    });
    match html {
        Ok(h) => (status, h).into_response(),
        Err(e) => e.into_response(),
    }
}

/// GET /explain
pub async fn form(State(state): State<AppState>, user: User, headers: HeaderMap) -> Response {
    let caller = Caller::new(user, &headers);
    if caller.json {
        return match recent(&state).await {
            Ok(r) => axum::Json(page_data(&state, &r)).into_response(),
            Err(e) => super::admin::error_response(e, true),
        };
    }
    page(&state, &caller, StatusCode::OK, &Fields::default(), None, None).await
}

/// A refusal or failure, as the page (with the caller's values) or `{"error", "field"}`.
async fn refuse(state: &AppState, caller: &Caller, status: StatusCode, values: &Fields, r: Refusal) -> Response {
    if caller.json {
        return (status, axum::Json(serde_json::json!({ "error": r.to_string(), "field": r.field }))).into_response();
    }
    page(state, caller, status, values, Some(&r), None).await
}

/// The form's fields and the uploaded image's bytes, from a multipart body, or (scripts, a
/// stored forgery) an urlencoded or JSON one.
async fn read_form(state: &AppState, headers: &HeaderMap, req: Request) -> Result<(Fields, Option<Vec<u8>>), (StatusCode, Refusal)> {
    let unprocessable = |field: &str, m: String| (StatusCode::UNPROCESSABLE_ENTITY, Refusal::new(field, m));
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("multipart/form-data") {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|e| unprocessable("body", format!("unreadable or too large ({e}): send the form's fields")))?;
        return Fields::parse(headers, &body).map(|f| (f, None)).map_err(|r| (StatusCode::UNPROCESSABLE_ENTITY, r));
    }
    let mut mp = Multipart::from_request(req, state)
        .await
        .map_err(|e| unprocessable("image", format!("not a multipart form ({e}): send the page's form")))?;
    let mut values = Fields::default();
    let mut image = None;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::new("image", format!("the image is larger than {} MB: upload a smaller file", MAX_IMAGE_BYTES >> 20)),
        )
    };
    let cut = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            unprocessable("image", format!("the upload was cut off or malformed ({e}): send it again"))
        }
    };
    while let Some(mut field) = mp.next_field().await.map_err(cut)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "image" {
            if field.file_name().is_some_and(str::is_empty) {
                continue; // the file input left empty
            }
            let mut buf = Vec::new();
            while let Some(c) = field.chunk().await.map_err(cut)? {
                buf.extend_from_slice(&c);
                if buf.len() > MAX_IMAGE_BYTES {
                    return Err(too_large());
                }
            }
            if !buf.is_empty() {
                image = Some(buf);
            }
            continue;
        }
        let t = field.text().await.map_err(cut)?;
        if t.len() > 10_000 {
            return Err(unprocessable(&name, "too long: use at most 10,000 characters".into()));
        }
        values.0.push((name, t));
    }
    Ok((values, image))
}

/// The explanation's settings from the form; the refusal names the field.
fn options(values: &Fields) -> Result<ExplainOptions, Refusal> {
    let release = GenerationConfig::release();
    let num = |name: &str, default: usize, what: &str| -> Result<usize, Refusal> {
        values.u64_or(name, Some(default as u64), what).map(|v| v.min(usize::MAX as u64) as usize)
    };
    let generation = GenerationConfig {
        num_beams: num("num_beams", release.num_beams, "the number of beams (1: greedy)")?,
        max_new_tokens: num("max_new_tokens", release.max_new_tokens, "the most tokens to generate")?,
        min_length: num("min_length", release.min_length, "the shortest output in tokens")?,
        repetition_penalty: values
            .f64_opt("repetition_penalty", "the repetition penalty (1.0: none)")?
            .map(|v| v as f32)
            .unwrap_or(release.repetition_penalty),
        length_penalty: values.f64_opt("length_penalty", "the length penalty")?.map(|v| v as f32).unwrap_or(release.length_penalty),
    };
    check_generation(&generation, GenerationLimits::WEB, str::to_string).map_err(|(field, m)| Refusal::new(field, m))?;
    // region words: checkboxes (`region`, repeated) or, for scripts, `regions` (a list or "eye,lip")
    let words: Vec<&str> = values.all("region").into_iter().chain(values.all("regions").into_iter().flat_map(|v| v.split(','))).collect();
    let instruction = values.opt("instruction");
    let mode = values.opt("prompting").unwrap_or(if !words.is_empty() {
        "regions"
    } else if instruction.is_some() {
        "instruction"
    } else {
        "fpn"
    });
    let prompting = match mode {
        "fpn" => Prompting::Fpn,
        "regions" => Prompting::Regions(parse_regions(&words).map_err(|m| Refusal::new("region", m))?),
        "instruction" => {
            let i = instruction.ok_or_else(|| Refusal::new("instruction", "empty: write the instruction, or choose another prompting"))?;
            if i.chars().count() > MAX_INSTRUCTION_CHARS {
                return Err(Refusal::new("instruction", format!("too long: use at most {MAX_INSTRUCTION_CHARS} characters")));
            }
            Prompting::Instruction(i.to_string())
        }
        other => {
            return Err(Refusal::new("prompting", format!("`{}` is not a prompting: choose fpn, regions or instruction", short(other))));
        }
    };
    Ok(ExplainOptions { prompting, generation })
}

/// Where the image comes from.
enum Source {
    Upload(Vec<u8>),
    Forgery(uuid::Uuid),
}

/// The image's source from the form: an upload or a stored forgery (the `forgery_id` field, else
/// the `forgery` list's choice), never both.
fn source(values: &Fields, upload: Option<Vec<u8>>) -> Result<Source, Refusal> {
    let picked = values.opt("forgery_id").or_else(|| values.opt("forgery"));
    match (upload, picked) {
        (Some(_), Some(_)) => Err(Refusal::new("image", "choose one: an uploaded image or a stored forgery, not both")),
        (Some(b), None) => Ok(Source::Upload(b)),
        (None, Some(id)) => id.parse().map(Source::Forgery).map_err(|_| {
            Refusal::new("forgery_id", format!("`{}` is not a forgery id: pick one from the list or paste its id", short(id)))
        }),
        (None, None) => Err(Refusal::new("image", "upload a face image (PNG, JPEG or WebP) or choose a stored forgery")),
    }
}

/// POST /explain (multipart: csrf, image | forgery | forgery_id, prompting, region..., instruction,
/// num_beams, max_new_tokens, min_length, repetition_penalty; scripts may send JSON or urlencoded
/// fields with a stored forgery).
pub async fn submit(State(state): State<AppState>, user: User, headers: HeaderMap, req: Request) -> Response {
    let caller = Caller::new(user, &headers);
    let (values, upload) = match read_form(&state, &headers, req).await {
        Ok(v) => v,
        Err((status, r)) => return refuse(&state, &caller, status, &Fields::default(), r).await,
    };
    if !caller.bearer
        && let Err(e) = caller.user.check_csrf(values.csrf())
    {
        return super::admin::error_response(e, caller.json);
    }
    if state.talker.config().is_none() {
        let r = Refusal::new("model", ServiceError::NotConfigured.to_string());
        return refuse(&state, &caller, StatusCode::SERVICE_UNAVAILABLE, &values, r).await;
    }
    let checked = source(&values, upload).and_then(|s| options(&values).map(|o| (s, o)));
    let (src, opts) = match checked {
        Ok(v) => v,
        Err(r) => return refuse(&state, &caller, StatusCode::UNPROCESSABLE_ENTITY, &values, r).await,
    };
    // the image: decoded off the async runtime (an upload is untrusted: sniffed, size-checked)
    let (bytes, forgery) = match src {
        Source::Upload(b) => (b, None),
        Source::Forgery(id) => {
            let hash: Option<String> =
                match sqlx::query_scalar("SELECT image_hash FROM forgeries WHERE id = $1").bind(id).fetch_optional(&state.pool).await {
                    Ok(h) => h,
                    Err(e) => return super::admin::error_response(e.into(), caller.json),
                };
            let Some(hash) = hash else {
                let r = Refusal::new("forgery_id", format!("no forgery has the id {id}: pick one from the list"));
                return refuse(&state, &caller, StatusCode::UNPROCESSABLE_ENTITY, &values, r).await;
            };
            let read = hash
                .parse::<BlobKey>()
                .map_err(|_| "bad blob key".to_string())
                .and_then(|k| state.store.get(&k).map_err(|e| e.to_string()));
            match read {
                Ok(b) => (b, Some(id)),
                Err(e) => return super::admin::internal(caller.json, e),
            }
        }
    };
    let decoded = tokio::task::spawn_blocking(move || decode_image(bytes, DecodeLimits::default()).map(|d| d.rgb)).await;
    let img: RgbImage = match decoded {
        Ok(Ok(img)) => img,
        Ok(Err(m)) => {
            let m = if m.starts_with("not an image") || m.starts_with("empty file") {
                "the file is not an image: upload a PNG, JPEG or WebP face photo".to_string()
            } else {
                format!("the image cannot be used ({m}): upload a PNG, JPEG or WebP face photo")
            };
            let r = Refusal::new("image", m);
            return refuse(&state, &caller, StatusCode::UNPROCESSABLE_ENTITY, &values, r).await;
        }
        Err(e) => return super::admin::internal(caller.json, e),
    };

    // the model: loaded on first use, one inference at a time, in a blocking thread
    let talker = state.talker.clone();
    let t = std::time::Instant::now();
    let job = {
        let img = img.clone();
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || talker.explain(std::slice::from_ref(&img), &opts))
    };
    let (mut out, info) = match job.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let (status, field) = match &e {
                ServiceError::NotConfigured | ServiceError::Load { .. } => (StatusCode::SERVICE_UNAVAILABLE, "model"),
                ServiceError::Input(_) => (StatusCode::UNPROCESSABLE_ENTITY, "prompting"),
                ServiceError::Model(_) => (StatusCode::INTERNAL_SERVER_ERROR, "model"),
            };
            tracing::warn!(error = %e, "explain failed");
            return refuse(&state, &caller, status, &values, Refusal::new(field, e.to_string())).await;
        }
        Err(e) => return super::admin::internal(caller.json, e),
    };
    let seconds = t.elapsed().as_secs_f64();
    let Some(e) = out.pop() else {
        return super::admin::internal(caller.json, "the model returned no explanation");
    };
    let (w, h) = img.dimensions();

    // the pictures, off the runtime: JSON gets the binary mask at the image's size; the page a
    // display-size image (uploads only: a stored forgery is served by /images) and overlay
    let json = caller.json;
    let mask = e.mask.clone();
    let pictures = tokio::task::spawn_blocking(move || -> Result<Pictures, image::ImageError> {
        if json {
            let m = match &mask {
                Some(m) => Some(png_data_url(&png_bytes(&image::DynamicImage::ImageLuma8(m.binary_resized(w, h)))?)),
                None => None,
            };
            return Ok((None, m, (w, h)));
        }
        let shown = fit(&img, DISPLAY_SIDE);
        let (dw, dh) = shown.dimensions();
        let image = match forgery {
            Some(_) => None,
            None => Some(png_data_url(&png_bytes(&image::DynamicImage::ImageRgb8(shown))?)),
        };
        let over = match &mask {
            Some(m) => Some(png_data_url(&png_bytes(&image::DynamicImage::ImageRgba8(overlay(m, dw, dh)))?)),
            None => None,
        };
        Ok((image, over, (dw, dh)))
    })
    .await;
    let (image_src, mask_src, (dw, dh)) = match pictures {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => return super::admin::internal(caller.json, err),
        Err(err) => return super::admin::internal(caller.json, err),
    };
    let source_text = match forgery {
        Some(id) => format!("stored forgery {id}"),
        None => "uploaded image".to_string(),
    };
    let area = e.mask.as_ref().map(|m| m.area());
    if caller.json {
        let data = serde_json::json!({
            "model": info.describe,
            "model_info": info,
            "source": { "kind": if forgery.is_some() { "forgery" } else { "upload" }, "forgery": forgery.map(|f| f.to_string()), "width": w, "height": h },
            "text": e.text,
            "token_ids": e.token_ids,
            "regions": e.regions,
            "instruction": e.instruction,
            "mask": mask_src,
            "mask_area": area,
            "generation": generation_json(&opts.generation),
            "seconds": seconds,
        });
        return axum::Json(data).into_response();
    }
    let result = ResultView {
        image_src: image_src.unwrap_or_else(|| format!("/images/{}/forged", forgery.map(|f| f.to_string()).unwrap_or_default())),
        overlay_src: mask_src,
        width: dw,
        height: dh,
        source: format!("{source_text}, {w}x{h} px"),
        tokens: e.token_ids.len(),
        text: e.text,
        regions: e.regions,
        instruction: e.instruction,
        mask_area: area.map(|a| format!("{:.1} %", a * 100.0)),
        seconds: format!("{seconds:.2}"),
        model: info.describe,
    };
    page(&state, &caller, StatusCode::OK, &values, None, Some(result)).await
}
