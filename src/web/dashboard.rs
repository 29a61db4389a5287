//! The admin's dashboard: samples per state and per method, per-annotator throughput, median
//! active time, words per annotation, return and false-positive rates, and the generation jobs
//! with their progress. Every figure is one aggregate query over the store, so the page stays
//! fast at dataset scale (128k samples).

use super::auth::User;
use super::{AppState, WebError, render};
use askama::Template;
use axum::extract::State;
use axum::response::Html;
use sqlx::Row;

/// Samples per state, for one method or for all.
pub struct StateRow {
    pub method: String,
    pub planned: i64,
    pub forged: i64,
    pub waiting: i64,
    pub annotating: i64,
    pub annotated: i64,
    pub in_review: i64,
    pub accepted: i64,
    pub returned: i64,
    pub skipped: i64,
    pub failed: i64,
}

/// One annotator's figures.
pub struct AnnotatorRow {
    pub name: String,
    pub annotations: i64,
    pub last_24h: i64,
    /// Annotations per hour of active time.
    pub per_active_hour: f64,
    pub median_active_s: f64,
    pub mean_words: f64,
    pub return_rate: f64,
    pub fp_rate: f64,
}

pub struct JobRow {
    pub id: String,
    pub methods: String,
    pub created: String,
    pub done: i64,
    pub failed: i64,
    pub queued: i64,
    pub running: i64,
    pub total: i64,
    pub percent: f64,
}

pub struct ExportRow {
    pub format: String,
    pub out_dir: String,
    pub status: String,
    pub started: String,
    pub done: i32,
    pub total: i32,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    exports: Vec<ExportRow>,
    name: String,
    states: Vec<StateRow>,
    total: StateRow,
    annotators: Vec<AnnotatorRow>,
    overall: AnnotatorRow,
    jobs: Vec<JobRow>,
    assist: AssistSection,
}

/// Model assistance on the dashboard: per annotator and arm, the charts over days, the
/// held-out comparison (`dataset::assist_stats`).
#[derive(serde::Serialize)]
pub struct AssistSection {
    pub rows: Vec<crate::dataset::assist_stats::ArmRow>,
    pub comparison: Vec<crate::dataset::assist_stats::ComparisonRow>,
    /// (title, data URI of the SVG)
    #[serde(skip)]
    pub charts: Vec<(String, String)>,
    pub days: Vec<crate::dataset::assist_stats::DayRow>,
    /// Whether any annotation was written with a suggestion shown or in the held-out arm.
    pub any: bool,
}

impl AssistSection {
    fn pct(v: &Option<f64>) -> String {
        v.map(|x| format!("{:.1} %", 100.0 * x)).unwrap_or_else(|| "-".into())
    }
}

pub async fn assist_section(pool: &sqlx::PgPool, charts: bool) -> Result<AssistSection, WebError> {
    use crate::dataset::assist_stats::{by_annotator, by_day, comparison, day_chart};
    let rows = by_annotator(pool).await?;
    let comparison = comparison(pool).await?;
    let days = by_day(pool).await?;
    let any = rows.iter().any(|r| r.assisted) || !comparison.is_empty();
    let mut out = Vec::new();
    if charts && any {
        type Pick = fn(&crate::dataset::assist_stats::Figures) -> Option<f64>;
        let picks: [(&str, Pick); 4] = [
            ("Agreement with the model", |f| f.model_agreement),
            ("Flag rate", |f| Some(f.flag_rate)),
            ("Annotations per active hour", |f| Some(f.per_active_hour)),
            ("Words per annotation", |f| Some(f.mean_words)),
        ];
        for (title, pick) in picks {
            let svg = day_chart(title, &days, pick).map_err(WebError::Internal)?;
            out.push((title.to_string(), svg_data_uri(&svg)));
        }
    }
    Ok(AssistSection { rows, comparison, charts: out, days, any })
}

/// GET /admin/dashboard/assist.json: the model-assistance figures for scripts.
pub async fn assist_json(State(state): State<AppState>) -> Result<axum::Json<AssistSection>, WebError> {
    Ok(axum::Json(assist_section(&state.pool, false).await?))
}

/// Samples per state and method (the last row is the total).
pub async fn state_counts(pool: &sqlx::PgPool) -> Result<Vec<StateRow>, WebError> {
    let rows = sqlx::query(
        "WITH planned AS (SELECT method, count(*) FILTER (WHERE status IN ('queued', 'running')) AS planned, \
                                 count(*) FILTER (WHERE status = 'failed') AS failed FROM forge_items GROUP BY method), \
              forged AS (SELECT f.method, count(*) AS forged, \
                 count(*) FILTER (WHERE t.status = 'open') AS waiting, \
                 count(*) FILTER (WHERE t.status = 'claimed') AS annotating, \
                 count(*) FILTER (WHERE t.status IN ('submitted', 'accepted', 'returned')) AS annotated, \
                 count(*) FILTER (WHERE t.status = 'submitted') AS in_review, \
                 count(*) FILTER (WHERE t.status = 'accepted') AS accepted, \
                 count(*) FILTER (WHERE t.status = 'returned') AS returned, \
                 count(*) FILTER (WHERE t.status = 'skipped') AS skipped \
               FROM forgeries f JOIN annotation_tasks t ON t.forgery_id = f.id GROUP BY f.method) \
         SELECT coalesce(p.method, f.method), coalesce(p.planned, 0), coalesce(f.forged, 0), coalesce(f.waiting, 0), coalesce(f.annotating, 0), \
                coalesce(f.annotated, 0), coalesce(f.in_review, 0), coalesce(f.accepted, 0), coalesce(f.returned, 0), coalesce(f.skipped, 0), \
                coalesce(p.failed, 0) \
         FROM planned p FULL JOIN forged f ON f.method = p.method ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<StateRow> = rows
        .iter()
        .map(|r| StateRow {
            method: r.get(0),
            planned: r.get(1),
            forged: r.get(2),
            waiting: r.get(3),
            annotating: r.get(4),
            annotated: r.get(5),
            in_review: r.get(6),
            accepted: r.get(7),
            returned: r.get(8),
            skipped: r.get(9),
            failed: r.get(10),
        })
        .collect();
    let mut total = StateRow {
        method: "all".into(),
        planned: 0,
        forged: 0,
        waiting: 0,
        annotating: 0,
        annotated: 0,
        in_review: 0,
        accepted: 0,
        returned: 0,
        skipped: 0,
        failed: 0,
    };
    for r in &out {
        total.planned += r.planned;
        total.forged += r.forged;
        total.waiting += r.waiting;
        total.annotating += r.annotating;
        total.annotated += r.annotated;
        total.in_review += r.in_review;
        total.accepted += r.accepted;
        total.returned += r.returned;
        total.skipped += r.skipped;
        total.failed += r.failed;
    }
    out.push(total);
    Ok(out)
}

/// Per-annotator figures, and the same over everyone (last).
pub async fn annotator_figures(pool: &sqlx::PgPool) -> Result<Vec<AnnotatorRow>, WebError> {
    let rows = sqlx::query(
        "WITH returned AS (SELECT DISTINCT annotation_id FROM annotation_revisions WHERE action = 'return') \
         SELECT coalesce(u.name, '(all)'), count(*), count(*) FILTER (WHERE a.created_at > now() - interval '24 hours'), \
           coalesce(sum(a.active_seconds), 0)::float8, \
           coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY a.active_seconds), 0)::float8, coalesce(avg(a.word_count), 0)::float8, \
           count(r.annotation_id), count(*) FILTER (WHERE cardinality(a.fp_labels) > 0) \
         FROM annotations a JOIN users u ON u.id = a.annotator_id LEFT JOIN returned r ON r.annotation_id = a.id \
         GROUP BY GROUPING SETS ((u.name), ()) ORDER BY u.name NULLS LAST",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(1);
            let active: f64 = r.get(3);
            let share = |k: i64| if n > 0 { k as f64 / n as f64 } else { 0.0 };
            AnnotatorRow {
                name: r.get(0),
                annotations: n,
                last_24h: r.get(2),
                per_active_hour: if active > 0.0 { n as f64 / (active / 3600.0) } else { 0.0 },
                median_active_s: r.get(4),
                mean_words: r.get(5),
                return_rate: share(r.get(6)),
                fp_rate: share(r.get(7)),
            }
        })
        .collect())
}

pub async fn dashboard(State(state): State<AppState>, user: User) -> Result<Html<String>, WebError> {
    let mut states = state_counts(&state.pool).await?;
    let total = states.pop().ok_or_else(|| WebError::Internal("no total row".into()))?;
    let mut annotators = annotator_figures(&state.pool).await?;
    let overall = match annotators.pop() {
        Some(o) => o,
        None => AnnotatorRow {
            name: "(all)".into(),
            annotations: 0,
            last_24h: 0,
            per_active_hour: 0.0,
            median_active_s: 0.0,
            mean_words: 0.0,
            return_rate: 0.0,
            fp_rate: 0.0,
        },
    };
    let report = crate::jobs::forge::jobs_report(&state.pool).await?;
    let jobs = report
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .rev()
        .take(20)
        .map(|j| {
            let n = |k: &str| j[k].as_i64().unwrap_or(0);
            let total = n("queued") + n("running") + n("done") + n("failed");
            JobRow {
                id: j["id"].as_str().unwrap_or_default().chars().take(8).collect(),
                methods: j["methods"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                created: j["created_at"].as_str().unwrap_or_default().chars().take(19).collect(),
                done: n("done"),
                failed: n("failed"),
                queued: n("queued"),
                running: n("running"),
                total,
                percent: if total > 0 { 100.0 * (n("done") + n("failed")) as f64 / total as f64 } else { 0.0 },
            }
        })
        .collect();
    let exports = sqlx::query_as::<_, (String, String, String, String, i32, i32)>(
        "SELECT format, out_dir, status, left(started_at::text, 19), done, total FROM exports ORDER BY started_at DESC LIMIT 10",
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|(format, out_dir, status, started, done, total)| ExportRow { format, out_dir, status, started, done, total })
    .collect();
    let assist = assist_section(&state.pool, true).await?;
    render(&DashboardPage { name: user.name.clone(), states, total, annotators, overall, jobs, exports, assist })
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    name: String,
    text: String,
    /// (title, data URI of the SVG)
    charts: Vec<(String, String)>,
    elapsed_ms: f64,
}

/// `data:` URI of an SVG (shown in `<img>`, where an SVG runs no script).
fn svg_data_uri(svg: &str) -> String {
    let mut s = String::from("data:image/svg+xml;charset=utf-8,");
    for b in svg.bytes() {
        if b.is_ascii_alphanumeric() || b" -_.~/:=,;()'".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Spec section 6 statistics with their charts (accepted captions).
pub async fn stats(State(state): State<AppState>, user: User) -> Result<Html<String>, WebError> {
    let t = std::time::Instant::now();
    let (samples, faces) = crate::dataset::stats::load(&state.pool, &crate::dataset::stats::Scope::default()).await?;
    let st = crate::dataset::stats::Stats::compute(&samples, faces);
    let charts = st.charts()?.into_iter().map(|(n, svg)| (n.trim_end_matches(".svg").to_string(), svg_data_uri(&svg))).collect();
    render(&StatsPage { name: user.name.clone(), text: st.to_text(), charts, elapsed_ms: t.elapsed().as_secs_f64() * 1e3 })
}
