//! Masks page: plan the forgery masks of every imported source with a seed (a masks job), the
//! plans' statistics (overall and per dataset) and a few previews (source with its parts and
//! landmarks, beside its planned masks).

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::app::App;
use crate::dataset::masks;
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use mmtt_generators::plan::PlanStats;
use serde::Deserialize;

pub const DATASETS: [&str; 5] = ["celebamask-hq", "ffhq", "photos", "synthetic", "mmtt-release"];

#[derive(Template)]
#[template(path = "admin_masks.html")]
struct MasksPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    datasets: &'a [&'a str],
    stats: Vec<(String, String)>,
    previews: Vec<String>,
    jobs: Vec<JobRow>,
}

/// The statistics for people, like `mmtt masks stats`.
pub fn stats_text(s: &PlanStats) -> String {
    let mut t =
        format!("inpainting masks: {} (full face {} = {:.1}%), swap masks: {}\n", s.n, s.full_face, 100.0 * s.full_face_share, s.swap);
    let parts_total: u64 = s.k_histogram.values().sum();
    for (k, v) in &s.k_histogram {
        let share = if parts_total > 0 { 100.0 * *v as f64 / parts_total as f64 } else { 0.0 };
        t += &format!("  k={k:>2}: {v:>8} ({share:5.1}%)\n");
    }
    for (p, f) in &s.part_frequency {
        t += &format!("  {p:<7} {:>8} ({:5.1}%)\n", s.part_counts.get(p).copied().unwrap_or(0), 100.0 * f);
    }
    t
}

fn app_of(state: &AppState) -> App {
    App::from_parts(state.pool.clone(), state.store.clone(), &state.admin.data_dir)
}

#[derive(Deserialize)]
pub struct SeedQuery {
    seed: Option<String>,
}

async fn page(
    state: &AppState,
    admin: &Admin,
    error: Option<&Refusal>,
    values: &Fields,
    seed: Option<u64>,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let st = masks::stats(&app_of(state), seed).await?;
    let mut stats = vec![("all".to_string(), stats_text(&st.all))];
    for (d, s) in &st.by_dataset {
        stats.push((d.clone(), stats_text(s)));
    }
    let previews: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT source_id FROM (SELECT DISTINCT ON (source_id) source_id, created_at FROM mask_plans \
         WHERE ($1::bigint IS NULL OR seed = $1) ORDER BY source_id, created_at DESC) p ORDER BY created_at DESC, source_id LIMIT 4",
    )
    .bind(seed.map(|s| s as i64))
    .fetch_all(&state.pool)
    .await?;
    let previews: Vec<String> =
        previews.iter().map(|id| format!("/admin/masks/preview/{id}{}", seed.map(|s| format!("?seed={s}")).unwrap_or_default())).collect();
    let jobs = recent(&state.pool, Some("masks")).await?;
    let data = serde_json::json!({ "stats": st, "previews": previews, "jobs": jobs });
    let html = render(&MasksPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        datasets: &DATASETS,
        stats,
        previews,
        jobs,
    })?;
    Ok((html, data))
}

fn parse_seed_query(q: &SeedQuery) -> Option<u64> {
    q.seed.as_deref().and_then(|s| s.trim().parse().ok())
}

/// GET /admin/masks[?seed=N]
pub async fn form(State(state): State<AppState>, admin: Admin, Query(q): Query<SeedQuery>) -> Response {
    let seed = parse_seed_query(&q);
    let mut values = Fields::default();
    if let Some(s) = seed {
        values.0.push(("seed".into(), s.to_string()));
    }
    match page(&state, &admin, None, &values, seed).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

/// POST /admin/masks: plan with a seed (a masks job).
pub async fn submit(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let seed = f.u64_or("seed", None, "the plan seed, a whole number such as 1")?;
        let dataset = match f.opt("dataset") {
            None | Some("all") => None,
            Some(d) if DATASETS.contains(&d) => Some(d.to_string()),
            Some(d) => {
                return Err(Refusal::new(
                    "dataset",
                    format!("unknown dataset `{}`: choose all or one of {}", short(d), DATASETS.join(", ")),
                ));
            }
        };
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sources WHERE ($1::text IS NULL OR dataset = $1)")
            .bind(&dataset)
            .fetch_one(&state.pool)
            .await
            .map_err(|e| Refusal::new("dataset", format!("cannot count the sources: {e}")))?;
        if n == 0 {
            return Err(Refusal::new(
                "dataset",
                match &dataset {
                    Some(d) => format!("no {d} sources are imported: import faces first (Import page), or choose another dataset"),
                    None => "no sources are imported yet: import faces first (Import page)".to_string(),
                },
            ));
        }
        let spec = specs::masks(seed, dataset.as_deref())?;
        Ok((spec, seed, dataset))
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, Some(&r), &f, None).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok((spec, seed, dataset)) => {
            specs::submit_and_answer(&state, &admin, &spec, "plan masks", serde_json::json!({ "seed": seed, "dataset": dataset })).await
        }
    }
}

/// GET /admin/masks/preview/{source}[?seed=N]: a PNG of the source and its planned masks.
pub async fn preview(State(state): State<AppState>, admin: Admin, Path(source): Path<String>, Query(q): Query<SeedQuery>) -> Response {
    let Ok(source) = source.parse::<uuid::Uuid>() else { return super::error_response(WebError::NotFound, admin.json) };
    match sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sources WHERE id = $1)").bind(source).fetch_one(&state.pool).await {
        Ok(true) => {}
        Ok(false) => return super::error_response(WebError::NotFound, admin.json),
        Err(e) => return super::internal(admin.json, e),
    }
    let dir = state.admin.data_dir.join("tmp");
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return super::internal(admin.json, e);
    }
    let out = dir.join(format!("preview-{}.png", uuid::Uuid::new_v4().simple()));
    let r = masks::preview(&app_of(&state), source, parse_seed_query(&q), &out).await;
    let bytes = match r {
        Ok(()) => tokio::fs::read(&out).await,
        Err(e) => return super::error_response(WebError::Unprocessable(format!("{e:#}")), admin.json),
    };
    let _ = tokio::fs::remove_file(&out).await;
    match bytes {
        Ok(b) => ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-cache")], b).into_response(),
        Err(e) => super::internal(admin.json, e),
    }
}
