//! Assisted vs unassisted work (issue 17), as aggregate queries over `annotations`, for the
//! dashboard.
//!
//! - Arms: an annotation is *assisted* when a suggestion was shown while it was written
//!   (`suggestion_model IS NOT NULL`), else *unassisted* (assistance off, the held-out arm, no
//!   prediction for the forgery, or a hint never asked for).
//! - Agreement with the model: the Jaccard index between the annotation's region chips and the
//!   current assistance model's regions for its forgery (1 when both are empty), averaged over
//!   annotations whose forgery has such a suggestion: unassisted ones included, which is what
//!   makes the two arms comparable.
//! - Flag rate: the share with a false-positive flag (`fp_labels` not empty). Throughput:
//!   annotations per hour of active time. Words: mean word count. Kept share (assisted only):
//!   1 - token edit distance / the longer of suggestion and text (`super::assist::kept_share`).
//! - The held-out comparison: annotations written while assistance was on, the held-out arm
//!   (`assist_holdout`, a randomised split by `super::assist::in_holdout`) against the assisted
//!   one: caption length (mean and median words), region agreement with the mask ((chips -
//!   false-positive chips) / chips, over annotations with at least one chip), and the review
//!   outcome: accepted as written (status accepted, its last decision `accept`), edited and
//!   accepted (last decision `edit_accept`), returned (status returned now), waiting (submitted).

use serde::Serialize;
use sqlx::{PgPool, Row};

/// The per-annotation figures every aggregate below uses (`x`: annotations joined with their
/// annotator and the current model's suggestion).
const BASE: &str = "WITH cur AS (SELECT assist_model AS m FROM project_settings WHERE id), \
    x AS (SELECT a.*, u.name AS annotator, (a.suggestion_model IS NOT NULL) AS assisted, \
      CASE WHEN s.regions IS NULL THEN NULL \
           WHEN cardinality(a.regions) + cardinality(s.regions) = 0 THEN 1.0 \
           ELSE (SELECT count(*) FROM (SELECT unnest(a.regions) INTERSECT SELECT unnest(s.regions)) i)::float8 \
              / (SELECT count(*) FROM (SELECT unnest(a.regions) UNION SELECT unnest(s.regions)) j) END AS model_agreement, \
      CASE WHEN a.suggestion_model IS NULL THEN NULL \
           WHEN greatest(a.suggestion_tokens, a.text_tokens) = 0 THEN 1.0 \
           ELSE greatest(0.0, 1.0 - a.suggestion_edit_distance::float8 / greatest(a.suggestion_tokens, a.text_tokens)) END AS kept \
      FROM annotations a JOIN users u ON u.id = a.annotator_id \
      LEFT JOIN suggestions s ON s.forgery_id = a.forgery_id AND s.model_id = (SELECT m FROM cur)) ";

const FIGURES: &str = "count(*), avg(model_agreement), avg((cardinality(fp_labels) > 0)::int::float8), \
    sum(active_seconds), avg(word_count)::float8, avg(kept)";

/// One row of figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub annotations: i64,
    /// Mean agreement with the model; `None` when no annotation's forgery has a suggestion.
    pub model_agreement: Option<f64>,
    pub flag_rate: f64,
    pub per_active_hour: f64,
    pub mean_words: f64,
    pub kept_share: Option<f64>,
}

fn figures(r: &sqlx::postgres::PgRow, at: usize) -> Figures {
    let n: i64 = r.get(at);
    let active: Option<f64> = r.get(at + 3);
    let active = active.unwrap_or(0.0);
    Figures {
        annotations: n,
        model_agreement: r.get(at + 1),
        flag_rate: r.get::<Option<f64>, _>(at + 2).unwrap_or(0.0),
        per_active_hour: if active > 0.0 { n as f64 / (active / 3600.0) } else { 0.0 },
        mean_words: r.get::<Option<f64>, _>(at + 4).unwrap_or(0.0),
        kept_share: r.get(at + 5),
    }
}

/// An annotator's (or everyone's: `annotator` None) figures in one arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmRow {
    pub annotator: Option<String>,
    pub assisted: bool,
    pub figures: Figures,
}

/// Per annotator and arm, then everyone per arm (annotator `None`), by name then arm.
pub async fn by_annotator(pool: &PgPool) -> sqlx::Result<Vec<ArmRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{BASE}SELECT annotator, assisted, {FIGURES} FROM x GROUP BY GROUPING SETS ((annotator, assisted), (assisted)) \
         ORDER BY annotator NULLS LAST, assisted DESC"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| ArmRow { annotator: r.get(0), assisted: r.get(1), figures: figures(r, 2) }).collect())
}

/// One day's figures in one arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayRow {
    pub day: chrono::NaiveDate,
    pub assisted: bool,
    pub figures: Figures,
}

/// Per day (UTC, of `created_at`) and arm, oldest first.
pub async fn by_day(pool: &PgPool) -> sqlx::Result<Vec<DayRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{BASE}SELECT (created_at AT TIME ZONE 'UTC')::date AS day, assisted, {FIGURES} FROM x GROUP BY day, assisted ORDER BY day, assisted"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| DayRow { day: r.get(0), assisted: r.get(1), figures: figures(r, 2) }).collect())
}

/// One arm of the held-out comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// `held-out` or `assisted`.
    pub arm: String,
    pub annotations: i64,
    pub mean_words: f64,
    pub median_words: f64,
    /// Mean of (chips - false-positive chips) / chips over annotations with a chip.
    pub mask_agreement: Option<f64>,
    pub accepted_as_written: f64,
    pub edited_and_accepted: f64,
    pub returned: f64,
    pub waiting: f64,
}

/// The held-out arm against the assisted one (see the module documentation); arms without
/// annotations are left out.
pub async fn comparison(pool: &PgPool) -> sqlx::Result<Vec<ComparisonRow>> {
    let rows = sqlx::query(
        "WITH x AS (SELECT a.*, CASE WHEN a.assist_holdout THEN 'held-out' ELSE 'assisted' END AS arm, \
            (SELECT r.action FROM annotation_revisions r WHERE r.annotation_id = a.id AND r.action IN ('accept', 'edit_accept', 'return') \
              ORDER BY r.id DESC LIMIT 1) AS decision \
          FROM annotations a WHERE a.assist_holdout OR a.suggestion_model IS NOT NULL) \
         SELECT arm, count(*), avg(word_count)::float8, percentile_cont(0.5) WITHIN GROUP (ORDER BY word_count), \
           avg(CASE WHEN cardinality(regions) > 0 THEN (cardinality(regions) - cardinality(fp_labels))::float8 / cardinality(regions) END), \
           avg((status = 'accepted' AND decision = 'accept')::int::float8), avg((status = 'accepted' AND decision = 'edit_accept')::int::float8), \
           avg((status = 'returned')::int::float8), avg((status = 'submitted')::int::float8) \
         FROM x GROUP BY arm ORDER BY arm DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ComparisonRow {
            arm: r.get(0),
            annotations: r.get(1),
            mean_words: r.get(2),
            median_words: r.get(3),
            mask_agreement: r.get(4),
            accepted_as_written: r.get(5),
            edited_and_accepted: r.get(6),
            returned: r.get(7),
            waiting: r.get(8),
        })
        .collect())
}

/// The chart of one figure over days: assisted and unassisted as two lines (SVG).
pub fn day_chart(title: &str, days: &[DayRow], value: impl Fn(&Figures) -> Option<f64>) -> Result<String, String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut all: Vec<chrono::NaiveDate> = days.iter().map(|d| d.day).collect();
    all.dedup();
    let series = |assisted: bool| -> Vec<(i32, f64)> {
        days.iter()
            .filter(|d| d.assisted == assisted)
            .filter_map(|d| Some((all.iter().position(|x| *x == d.day)? as i32, value(&d.figures)?)))
            .collect()
    };
    let (a, u) = (series(true), series(false));
    let hi = a.iter().chain(&u).map(|p| p.1).fold(0f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0i32..(all.len() as i32).max(1), 0f64..(hi * 1.1).max(1e-6))
            .map_err(|x| e(&x))?;
        let labels = all.clone();
        chart
            .configure_mesh()
            .x_labels(all.len().clamp(1, 8))
            .x_label_formatter(&|i| labels.get(*i as usize).map(|d| d.format("%m-%d").to_string()).unwrap_or_default())
            .draw()
            .map_err(|x| e(&x))?;
        for (pts, colour, name) in [(&a, RED, "assisted"), (&u, BLUE, "unassisted")] {
            chart
                .draw_series(std::iter::once(PathElement::new(pts.to_vec(), colour.stroke_width(2))))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(|x| e(&x))?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}
