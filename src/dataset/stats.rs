//! Dataset statistics of spec section 6 (the paper's Figure 3) and the Table 1 row, computed from
//! one list of samples, so `mmtt stats`, the admin's statistics page and every export's dataset
//! card show the same numbers; and their charts as SVG (plotters).
//!
//! A sample is a forgery with its plan's parts and, when it has one, its annotation's word count
//! and the region labels its text mentions (the reference extractor, stored with the text).

use crate::dataset::annotation::REGION_LABELS;
use crate::storage::status::AnnotationStatus;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// What `count` samples alike contribute.
#[derive(Debug, Clone)]
pub struct StatSample {
    pub method: String,
    pub split: String,
    pub parts: Vec<String>,
    /// Words of its caption, when annotated.
    pub words: Option<i32>,
    pub mentions: Vec<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptionLengths {
    pub captions: u64,
    pub mean: f64,
    pub min: u32,
    pub max: u32,
    /// Words -> captions.
    pub histogram: BTreeMap<u32, u64>,
}

/// The Table 1 row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableRow {
    /// Distinct pristine faces used (targets and donors).
    pub pristine: u64,
    pub unique_fakes: u64,
    pub methods: u64,
    pub gt_types: Vec<&'static str>,
    pub text_annotations: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub samples: u64,
    pub per_method: BTreeMap<String, u64>,
    /// Method -> part -> samples whose mask covers the part.
    pub part_frequency: BTreeMap<String, BTreeMap<String, u64>>,
    /// Parts per mask -> samples.
    pub parts_per_image: BTreeMap<u32, u64>,
    pub caption_length: CaptionLengths,
    /// Region label -> captions mentioning it, in the release's label order.
    pub region_mentions: Vec<(String, u64)>,
    /// Split -> method -> samples (the method mix per split).
    pub per_split_method: BTreeMap<String, BTreeMap<String, u64>>,
    pub table1: TableRow,
}

impl Stats {
    /// The statistics of `samples`; `pristine` is the number of distinct faces they use (targets
    /// and donors).
    pub fn compute<'a>(samples: impl IntoIterator<Item = &'a StatSample>, pristine: u64) -> Stats {
        let mut s = Stats {
            samples: 0,
            per_method: BTreeMap::new(),
            part_frequency: BTreeMap::new(),
            parts_per_image: BTreeMap::new(),
            caption_length: CaptionLengths { captions: 0, mean: 0.0, min: 0, max: 0, histogram: BTreeMap::new() },
            region_mentions: Vec::new(),
            per_split_method: BTreeMap::new(),
            table1: TableRow { pristine: 0, unique_fakes: 0, methods: 0, gt_types: vec!["mask", "text"], text_annotations: 0 },
        };
        let mut mentions = [0u64; 21];
        let mut words_total = 0u64;
        for x in samples {
            let n = x.count;
            s.samples += n;
            *s.per_method.entry(x.method.clone()).or_default() += n;
            *s.per_split_method.entry(x.split.clone()).or_default().entry(x.method.clone()).or_default() += n;
            let per_part = s.part_frequency.entry(x.method.clone()).or_default();
            for p in &x.parts {
                *per_part.entry(p.clone()).or_default() += n;
            }
            *s.parts_per_image.entry(x.parts.len() as u32).or_default() += n;
            if let Some(w) = x.words {
                let w = w.max(0) as u32;
                let c = &mut s.caption_length;
                c.min = if c.captions == 0 { w } else { c.min.min(w) };
                c.max = c.max.max(w);
                c.captions += n;
                words_total += w as u64 * n;
                *c.histogram.entry(w).or_default() += n;
                for m in &x.mentions {
                    if let Some(i) = REGION_LABELS.iter().position(|(l, _)| l == m) {
                        mentions[i] += n;
                    }
                }
            }
        }
        if s.caption_length.captions > 0 {
            s.caption_length.mean = words_total as f64 / s.caption_length.captions as f64;
        }
        s.region_mentions = REGION_LABELS.iter().zip(mentions).map(|((l, _), n)| (l.to_string(), n)).collect();
        s.table1 = TableRow {
            pristine,
            unique_fakes: s.samples,
            methods: s.per_method.len() as u64,
            gt_types: vec!["mask", "text"],
            text_annotations: s.caption_length.captions,
        };
        s
    }

    /// A readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let pct = |n: u64, d: u64| if d > 0 { 100.0 * n as f64 / d as f64 } else { 0.0 };
        o += &format!(
            "Table 1: pristine {} | unique fakes {} | methods {} | GT types {} | text annotations {}\n",
            self.table1.pristine,
            self.table1.unique_fakes,
            self.table1.methods,
            self.table1.gt_types.join(" + "),
            self.table1.text_annotations
        );
        o += "\nSamples per method\n";
        for (m, n) in &self.per_method {
            o += &format!("  {m:<24} {n:>8}  {:5.1} %\n", pct(*n, self.samples));
        }
        o += "\nPart modification frequency per method\n";
        for (m, parts) in &self.part_frequency {
            let n = self.per_method.get(m).copied().unwrap_or(0);
            let mut v: Vec<_> = parts.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            o += &format!("  {m}: {}\n", v.iter().map(|(p, c)| format!("{p} {c} = {:.1}%", pct(**c, n))).collect::<Vec<_>>().join(", "));
        }
        o += "\nModified parts per image\n";
        for (k, n) in &self.parts_per_image {
            o += &format!("  {k:>2} parts {n:>8}  {:5.1} %\n", pct(*n, self.samples));
        }
        let c = &self.caption_length;
        o += &format!("\nCaption length: {} captions, mean {:.2} words, min {}, max {}\n", c.captions, c.mean, c.min, c.max);
        o += "\nRegion mentions in captions\n";
        for (l, n) in &self.region_mentions {
            o += &format!("  {l:<10} {n:>8}\n");
        }
        o += "\nMethod mix per split\n";
        for sp in crate::storage::split::Split::ALL.map(crate::storage::split::Split::name) {
            let Some(ms) = self.per_split_method.get(sp) else { continue };
            let total: u64 = ms.values().sum();
            o += &format!(
                "  {sp:<10} {total:>8}: {}\n",
                ms.iter().map(|(m, n)| format!("{m} {:.1}%", pct(*n, total))).collect::<Vec<_>>().join(", ")
            );
        }
        o
    }

    /// The charts, as (file name, SVG).
    pub fn charts(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let methods: Vec<(String, f64)> = self.per_method.iter().map(|(m, n)| (m.clone(), *n as f64)).collect();
        out.push(("methods.svg".to_string(), bar_chart("Samples per method", &methods, "samples")?));
        for (m, parts) in &self.part_frequency {
            let n = self.per_method.get(m).copied().unwrap_or(0).max(1) as f64;
            let bars: Vec<(String, f64)> = parts.iter().map(|(p, c)| (p.clone(), 100.0 * *c as f64 / n)).collect();
            let safe: String = m.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            out.push((format!("parts-{safe}.svg"), bar_chart(&format!("Modified parts, {m}"), &bars, "% of samples")?));
        }
        let k: Vec<(String, f64)> = self.parts_per_image.iter().map(|(k, n)| (k.to_string(), *n as f64)).collect();
        out.push(("parts-per-image.svg".to_string(), bar_chart("Modified parts per image", &k, "samples")?));
        // caption lengths in bins of 5 words
        let mut bins: BTreeMap<u32, u64> = BTreeMap::new();
        for (w, n) in &self.caption_length.histogram {
            *bins.entry(w / 5 * 5).or_default() += n;
        }
        let lengths: Vec<(String, f64)> = bins.iter().map(|(b, n)| (format!("{b}-{}", b + 4), *n as f64)).collect();
        out.push(("caption-length.svg".to_string(), bar_chart("Caption length (words)", &lengths, "captions")?));
        let mentions: Vec<(String, f64)> = self.region_mentions.iter().map(|(l, n)| (l.clone(), *n as f64)).collect();
        out.push(("region-mentions.svg".to_string(), bar_chart("Region mentions in captions", &mentions, "captions")?));
        Ok(out)
    }
}

/// A bar chart with one labelled bar per entry.
pub fn bar_chart(title: &str, bars: &[(String, f64)], y_label: &str) -> Result<String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let width = (160 + 48 * bars.len().max(1) as u32).clamp(420, 1100);
        let root = SVGBackend::with_string(&mut svg, (width, 360)).into_drawing_area();
        root.fill(&WHITE).context("chart background")?;
        let n = bars.len().max(1) as u32;
        let top = bars.iter().map(|(_, v)| *v).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            // a segmented range a..b has b - a + 1 slots
            .build_cartesian_2d((0u32..n.saturating_sub(1).max(1)).into_segmented(), 0f64..top)
            .context("chart axes")?;
        let labels: Vec<String> = bars.iter().map(|(l, _)| l.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_style(("sans-serif", 11))
            .y_desc(y_label)
            .draw()
            .context("chart mesh")?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let mut r = Rectangle::new(
                    [(SegmentValue::Exact(i as u32), 0.0), (SegmentValue::Exact(i as u32 + 1), *v)],
                    RGBColor(45, 95, 168).filled(),
                );
                r.set_margin(0, 0, 4, 4);
                r
            }))
            .context("chart bars")?;
        root.present().context("chart output")?;
    }
    Ok(svg)
}

/// Which samples: annotation statuses (empty: every forgery, annotated or not), methods and
/// source datasets (empty: all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    pub statuses: Vec<AnnotationStatus>,
    pub methods: Vec<String>,
    pub datasets: Vec<String>,
}

/// The samples of `scope` from the database, alike ones grouped (captions count only when
/// accepted, unless the scope names statuses), and the number of distinct faces they use. Both
/// queries run at once.
pub async fn load(pool: &sqlx::PgPool, scope: &Scope) -> Result<(Vec<StatSample>, u64)> {
    let statuses = AnnotationStatus::texts(&scope.statuses);
    let caption_statuses = if scope.statuses.is_empty() { vec![AnnotationStatus::Accepted.as_str()] } else { statuses.clone() };
    // the filters, shared by both queries ($1 statuses, $2 methods, $3 datasets)
    const FILTER: &str = "(cardinality($1::text[]) = 0 OR EXISTS (SELECT 1 FROM annotations x WHERE x.forgery_id = f.id AND x.status = ANY($1))) \
         AND (cardinality($2::text[]) = 0 OR f.method = ANY($2)) \
         AND (cardinality($3::text[]) = 0 OR EXISTS (SELECT 1 FROM sources s WHERE s.id = f.target_id AND s.dataset = ANY($3)))";
    let grouped = sqlx::query_as::<_, (String, String, Vec<String>, Option<i32>, Option<Vec<String>>, i64)>(sqlx::AssertSqlSafe(format!(
        "SELECT f.method, f.split, p.parts, CASE WHEN a.status = ANY($4) THEN a.word_count END, CASE WHEN a.status = ANY($4) THEN a.mentions END, count(*) \
         FROM forgeries f JOIN mask_plans p ON p.id = f.plan_id LEFT JOIN annotations a ON a.forgery_id = f.id \
         WHERE {FILTER} GROUP BY 1, 2, 3, 4, 5"
    )))
    .bind(&statuses)
    .bind(&scope.methods)
    .bind(&scope.datasets)
    .bind(&caption_statuses)
    .fetch_all(pool);
    let faces = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT f.target_id FROM forgeries f WHERE {FILTER} UNION SELECT f.donor_id FROM forgeries f WHERE f.donor_id IS NOT NULL AND {FILTER}) x"
    )))
    .bind(&statuses)
    .bind(&scope.methods)
    .bind(&scope.datasets)
    .fetch_one(pool);
    let (rows, faces) = tokio::try_join!(grouped, faces)?;
    let samples = rows
        .into_iter()
        .map(|(method, split, parts, words, mentions, n)| StatSample {
            method,
            split,
            parts,
            words,
            mentions: mentions.unwrap_or_default(),
            count: n as u64,
        })
        .collect();
    Ok((samples, faces as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(method: &str, parts: &[&str], words: Option<i32>, mentions: &[&str]) -> StatSample {
        StatSample {
            method: method.into(),
            split: "train".into(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
            words,
            mentions: mentions.iter().map(|p| p.to_string()).collect(),
            count: 1,
        }
    }

    #[test]
    fn counts_and_charts() {
        let v = vec![
            sample("mat", &["nose", "l_eye"], Some(10), &["nose", "eye"]),
            sample("mat", &["nose"], Some(20), &["nose"]),
            sample("sdxl", &["u_lip"], None, &[]),
        ];
        let mut v = v;
        v.push(StatSample { count: 2, ..sample("sdxl", &["u_lip", "nose"], Some(30), &["lip"]) });
        let s = Stats::compute(&v, 3);
        assert_eq!(s.samples, 5);
        assert_eq!(s.per_method["mat"], 2);
        assert_eq!(s.per_method["sdxl"], 3);
        assert_eq!(s.part_frequency["mat"]["nose"], 2);
        assert_eq!(s.part_frequency["sdxl"]["u_lip"], 3);
        assert_eq!(s.parts_per_image[&1], 2);
        assert_eq!(s.parts_per_image[&2], 3);
        assert_eq!((s.caption_length.captions, s.caption_length.min, s.caption_length.max), (4, 10, 30));
        assert!((s.caption_length.mean - 22.5).abs() < 1e-9);
        assert_eq!(s.region_mentions[2], ("lip".to_string(), 2));
        assert_eq!(s.region_mentions[0], ("eye".to_string(), 1));
        assert_eq!(s.region_mentions[4], ("nose".to_string(), 2));
        assert_eq!(s.table1.pristine, 3);
        let charts = s.charts().unwrap();
        assert!(charts.iter().any(|(n, _)| n == "region-mentions.svg"));
        for (_, svg) in &charts {
            assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{}", &svg[..svg.len().min(200)]);
        }
    }
}
