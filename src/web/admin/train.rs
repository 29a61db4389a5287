//! The Train page: start a training run of ForgeryTalker's region prompter (stage 1) on the
//! project's accepted triplets (a `train` job: preset, convolution branch, steps, batch, learning
//! rate, warm-up, loss, w, seed, label source), or of stage 2, the explainer and mask decoder
//! (`POST /admin/train/talker`: preset or init checkpoint, the FPN checkpoint (the finished FPN
//! runs' are offered), regions, steps, batch, learning rate, devices, cached vision features and
//! the release's options), the list of training runs, and each run's chart (loss and validation
//! PLM, or stage 2's loss parts and CIDEr + BLEU-4, against the step, SVG; JSON: the figures)
//! that its job page shows beside the metrics.

use super::jobs::{JobRow, recent};
use super::{Admin, Fields, NAV, Refusal, fields, page_or_json, refused, short, specs};
use crate::jobs::train::talker::TalkerTrainSpec;
use crate::jobs::train::{self, FpnTrainSpec, Series, TrainModel, TrainSpec};
use crate::web::{AppState, WebError, render};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use mmtt_model::fpn::{FpnConfig, LabelSource, LossConfig, TrainConfig};
use mmtt_model::talker::train::{RegionSource, TalkerTrainConfig};
use std::path::PathBuf;

/// The loss choices of the form: (value, label).
pub const LOSSES: [(&str, &str); 4] = [
    ("bce+dice", "paper: (BCE + Dice) / 2"),
    ("bce", "paper: BCE only"),
    ("dice", "paper: Dice only"),
    ("release", "the authors' release loss (weighted BCE, focal, Dice, Jaccard)"),
];

#[derive(Template)]
#[template(path = "admin_train.html")]
struct TrainPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    csrf: &'a str,
    error: Option<&'a Refusal>,
    values: &'a Fields,
    presets: &'a [&'a str],
    losses: &'a [(&'a str, &'a str)],
    defaults: TrainConfig,
    accepted: Vec<(String, i64)>,
    jobs: Vec<JobRow>,
    /// Which form the error and `values` belong to: `fpn` or `talker`.
    form: &'a str,
    talker_presets: &'a [&'a str],
    talker_defaults: TalkerTrainConfig,
    fpn_checkpoints: Vec<FpnCheckpoint>,
}

impl TrainPage<'_> {
    /// The stage-1 form's value of `name`, else the default shown.
    fn v(&self, name: &str, default: String) -> String {
        self.fpn_values().opt(name).map(str::to_string).unwrap_or(default)
    }
    fn sel(&self, name: &str, value: &str, default: &str) -> bool {
        self.fpn_values().opt(name).unwrap_or(default) == value
    }
    fn fpn_values(&self) -> &Fields {
        if self.form == "fpn" { self.values } else { &NO_VALUES }
    }
    fn talker_values(&self) -> &Fields {
        if self.form == "talker" { self.values } else { &NO_VALUES }
    }
    /// The stage-2 form's value of `name`, else the default shown.
    fn tv(&self, name: &str, default: String) -> String {
        self.talker_values().opt(name).map(str::to_string).unwrap_or(default)
    }
    fn tsel(&self, name: &str, value: &str, default: &str) -> bool {
        self.talker_values().opt(name).unwrap_or(default) == value
    }
    /// A stage-2 checkbox: as the admin left it on a re-shown form, else its default.
    /// (`default` by reference: the template passes fields so.)
    fn tflag(&self, name: &str, default: &bool) -> bool {
        if self.talker_values().0.is_empty() { *default } else { self.talker_values().flag(name) }
    }
}

static NO_VALUES: Fields = Fields(Vec::new());

/// A finished FPN run's checkpoint, offered as stage 2's FPN.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FpnCheckpoint {
    pub dir: String,
    pub label: String,
    pub job: uuid::Uuid,
}

/// The checkpoints of the finished FPN training jobs (newest first): `best/` when validation
/// chose one, else the last; only those still on disk.
pub async fn fpn_checkpoints(pool: &sqlx::PgPool) -> Result<Vec<FpnCheckpoint>, WebError> {
    let rows: Vec<(uuid::Uuid, Option<serde_json::Value>, serde_json::Value)> = sqlx::query_as(
        "SELECT id, result, params FROM jobs WHERE kind = 'train' AND state = 'done' AND coalesce(params->>'model', 'fpn') = 'fpn' \
         ORDER BY finished_at DESC NULLS LAST LIMIT 50",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for (id, result, params) in rows {
        let Some(r) = result else { continue };
        let path = |k: &str| r.get(k).and_then(|v| v.as_str()).map(PathBuf::from).filter(|p| p.is_dir());
        let plm = r.get("best_plm").and_then(|v| v.as_f64());
        let (dir, which) = match (plm.and_then(|_| path("best_dir")), path("last_dir")) {
            (Some(b), _) => (b, format!("best, validation PLM {:.2}", 100.0 * plm.unwrap_or_default())),
            (None, Some(l)) => (l, "last checkpoint".to_string()),
            (None, None) => continue,
        };
        let preset = params.pointer("/config/preset").and_then(|v| v.as_str()).unwrap_or("?");
        let short_id = id.simple().to_string();
        out.push(FpnCheckpoint {
            dir: dir.display().to_string(),
            label: format!("FPN job {} ({preset}, {which})", &short_id[..8]),
            job: id,
        });
    }
    Ok(out)
}

/// The paper-loss discount shown by default.
fn default_w(c: &TrainConfig) -> f64 {
    match c.loss {
        LossConfig::Paper { negative_weight, .. } => negative_weight,
        LossConfig::Release => 0.2,
    }
}

/// Accepted triplets per split (what a run trains and validates on).
async fn accepted(state: &AppState) -> Result<Vec<(String, i64)>, WebError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT f.split, count(*) FROM forgeries f JOIN annotations a ON a.forgery_id = f.id WHERE a.status = 'accepted' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(rows)
}

async fn page(
    state: &AppState,
    admin: &Admin,
    form: &str,
    error: Option<&Refusal>,
    values: &Fields,
) -> Result<(Html<String>, serde_json::Value), WebError> {
    let jobs = recent(&state.pool, Some("train")).await?;
    let accepted = accepted(state).await?;
    let defaults = TrainConfig::tiny();
    let talker_defaults = TalkerTrainConfig::tiny();
    let fpn_checkpoints = fpn_checkpoints(&state.pool).await?;
    let data = serde_json::json!({
        "presets": FpnConfig::PRESETS, "defaults": defaults, "accepted": accepted, "jobs": jobs,
        "talker": { "presets": mmtt_model::talker::PRESETS, "defaults": talker_defaults, "fpn_checkpoints": fpn_checkpoints },
    });
    let html = render(&TrainPage {
        nav: &NAV,
        name: &admin.user.name,
        csrf: &admin.user.csrf,
        error,
        values,
        presets: FpnConfig::PRESETS,
        losses: &LOSSES,
        defaults,
        accepted,
        jobs,
        form,
        talker_presets: mmtt_model::talker::PRESETS,
        talker_defaults,
        fpn_checkpoints,
    })?;
    Ok((html, data))
}

/// GET /admin/train
pub async fn form(State(state): State<AppState>, admin: Admin) -> Response {
    match page(&state, &admin, "fpn", None, &Fields::default()).await {
        Ok((html, data)) => page_or_json(admin.json, &data, || Ok(html)),
        Err(e) => super::error_response(e, admin.json),
    }
}

fn f64_or(f: &Fields, name: &str, default: f64, what: &str) -> Result<f64, Refusal> {
    Ok(f.f64_opt(name, what)?.unwrap_or(default))
}

/// The spec the form asks for (checked by the job system's own validation).
fn spec_of(state: &AppState, f: &Fields) -> Result<TrainSpec, Refusal> {
    let preset = f.opt("preset").unwrap_or("tiny");
    if !FpnConfig::PRESETS.contains(&preset) {
        return Err(Refusal::new("preset", format!("unknown preset `{}`: choose {}", short(preset), FpnConfig::PRESETS.join(", "))));
    }
    // the tiny preset's short defaults, else the paper's
    let mut c = if preset == "tiny" { TrainConfig::tiny() } else { TrainConfig::paper() };
    c.preset = preset.to_string();
    c.conv_branch = match f.opt("variant").unwrap_or("fpn") {
        "fpn" => true,
        "vit" => false,
        other => {
            return Err(Refusal::new(
                "variant",
                format!("`{}` is not a variant: choose fpn (with the convolution branch) or vit", short(other)),
            ));
        }
    };
    c.steps = f.u64_or("steps", Some(c.steps), "the number of training steps, such as 200")?;
    c.batch_size = f.u64_or("batch_size", Some(c.batch_size as u64), "the batch size, such as 8")? as usize;
    c.lr = f64_or(f, "lr", c.lr, "the learning rate, such as 7.5e-3")?;
    c.warmup_steps = f.u64_or("warmup_steps", Some(c.warmup_steps), "the warm-up steps, such as 10")?;
    c.seed = f.u64_or("seed", Some(c.seed), "the seed, a whole number")?;
    c.checkpoint_every = f.u64_or("checkpoint_every", Some(c.checkpoint_every), "steps between checkpoints")?;
    c.eval_every = f.u64_or("eval_every", Some(c.eval_every), "steps between validations")?;
    let w = f64_or(f, "w", default_w(&c), "the discount w of the negatives, such as 0.2")?;
    c.loss = match f.opt("loss").unwrap_or("bce+dice") {
        "bce+dice" => LossConfig::Paper { negative_weight: w, bce: true, dice: true },
        "bce" => LossConfig::Paper { negative_weight: w, bce: true, dice: false },
        "dice" => LossConfig::Paper { negative_weight: w, bce: false, dice: true },
        "release" => LossConfig::Release,
        other => return Err(Refusal::new("loss", format!("`{}` is not a loss: choose bce+dice, bce, dice or release", short(other)))),
    };
    c.labels = match f.opt("labels").unwrap_or("extractor") {
        "extractor" => LabelSource::Extractor,
        "chips" => LabelSource::Chips,
        other => return Err(Refusal::new("labels", format!("`{}` is not a label source: choose extractor or chips", short(other)))),
    };
    c.hflip = f.flag("hflip");
    if let Some(d) = f.opt("device") {
        c.device = d.to_string();
    }
    let mut data = crate::dataset::training::TrainData { include_unreviewed: f.flag("include_unreviewed"), ..Default::default() };
    if let Some(l) = f.opt("limit") {
        data.limit = Some(l.parse().map_err(|_| {
            Refusal::new("limit", format!("`{}` is not a whole number: give at most how many samples per split, or nothing", short(l)))
        })?);
    }
    let run_dir: PathBuf = crate::jobs::cli::default_run_dir_of(&state.admin.data_dir, TrainModel::Fpn);
    specs::train(TrainSpec::Fpn(Box::new(FpnTrainSpec { config: c, run_dir, data })))
}

/// POST /admin/train: start a training run (a `train` job).
pub async fn submit(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let spec = spec_of(&state, &f)?;
        let counts = accepted(&state).await.map_err(|e| Refusal::new("preset", e.to_string()))?;
        let n = counts.iter().find(|(s, _)| s == "train").map(|(_, n)| *n).unwrap_or(0);
        if n == 0 && !spec.data().include_unreviewed {
            return Err(Refusal::new(
                "labels",
                "no accepted triplets in the train split yet: annotate and review some first (or tick \"submitted, not yet reviewed, too\")",
            ));
        }
        Ok(spec)
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, "fpn", Some(&r), &f).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok(spec) => {
            let TrainSpec::Fpn(s) = &spec else { return super::internal(admin.json, "the stage-1 form made another model's spec") };
            let c = &s.config;
            let detail = serde_json::json!({
                "model": "fpn", "preset": c.preset, "conv_branch": c.conv_branch, "steps": c.steps, "batch_size": c.batch_size,
                "lr": c.lr, "seed": c.seed, "labels": c.labels, "run_dir": s.run_dir,
            });
            specs::submit_and_answer(&state, &admin, &crate::jobs::JobSpec::Train(spec), "train fpn", detail).await
        }
    }
}

/// A stage-2 checkbox: the HTML form sends `checkboxes` beside them (an unticked box is absent);
/// a script's request without the field keeps the default.
fn flag_or(f: &Fields, name: &str, default: bool) -> bool {
    if f.opt("checkboxes").is_some() || f.opt(name).is_some() { f.flag(name) } else { default }
}

/// The stage-2 spec the form asks for (checked by the job system's own validation).
fn talker_spec_of(state: &AppState, f: &Fields) -> Result<TalkerTrainSpec, Refusal> {
    let presets = mmtt_model::talker::PRESETS;
    let preset = f.opt("preset").unwrap_or("tiny");
    if !presets.contains(&preset) {
        return Err(Refusal::new("preset", format!("unknown preset `{}`: choose {}", short(preset), presets.join(", "))));
    }
    // the tiny preset's short defaults, else the paper's
    let mut c = if preset == "tiny" { TalkerTrainConfig::tiny() } else { TalkerTrainConfig::paper() };
    c.preset = preset.to_string();
    c.init = f.opt("init").map(PathBuf::from);
    c.fpn = f.opt("fpn").map(PathBuf::from);
    c.regions = match f.opt("regions").unwrap_or(c.regions.name()) {
        "fpn" => RegionSource::Fpn,
        "gt" => RegionSource::Gt,
        "none" => RegionSource::None,
        other => {
            return Err(Refusal::new(
                "regions",
                format!(
                    "`{}` is not a region source: choose fpn (the FPN's regions, as the paper), gt (the caption's regions) or none (the plain instruction)",
                    short(other)
                ),
            ));
        }
    };
    c.steps = f.u64_or("steps", Some(c.steps), "the number of training steps, such as 200")?;
    c.batch_size = f.u64_or("batch_size", Some(c.batch_size as u64), "the batch size, such as 4")? as usize;
    c.lr = f64_or(f, "lr", c.lr, "the learning rate, such as 1e-5")?;
    c.warmup_steps = f.u64_or("warmup_steps", Some(c.warmup_steps), "the warm-up steps, such as 10")?;
    c.seed = f.u64_or("seed", Some(c.seed), "the seed, a whole number")?;
    c.checkpoint_every = f.u64_or("checkpoint_every", Some(c.checkpoint_every), "steps between checkpoints")?;
    c.eval_every = f.u64_or("eval_every", Some(c.eval_every), "steps between validations")?;
    c.eval_limit = f.u64_or("eval_limit", Some(c.eval_limit as u64), "at most how many validation samples, 0 for all")? as usize;
    if let Some(d) = f.opt("devices") {
        c.devices = d.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
    }
    c.cache_vision_features = flag_or(f, "cache_vision_features", c.cache_vision_features);
    c.augment = flag_or(f, "augment", c.augment);
    c.mask_loss.double_sigmoid = flag_or(f, "double_sigmoid", c.mask_loss.double_sigmoid);
    c.align_masks = flag_or(f, "align_masks", c.align_masks);
    c.normalize_captions = flag_or(f, "normalize_captions", c.normalize_captions);
    c.gate = flag_or(f, "gate", c.gate.is_some()).then(|| mmtt_model::talker::train::GateLoss {
        double_sigmoid: flag_or(f, "gate_double_sigmoid", false),
        ..c.gate.clone().unwrap_or_default()
    });
    let mut data = crate::dataset::training::TrainData { include_unreviewed: f.flag("include_unreviewed"), ..Default::default() };
    if let Some(l) = f.opt("limit") {
        data.limit = Some(l.parse().map_err(|_| {
            Refusal::new("limit", format!("`{}` is not a whole number: give at most how many samples per split, or nothing", short(l)))
        })?);
    }
    let run_dir = crate::jobs::cli::default_run_dir_of(&state.admin.data_dir, TrainModel::Talker);
    specs::train_talker(TalkerTrainSpec { config: c, run_dir, data })
}

/// POST /admin/train/talker: start a stage-2 training run (a `train` job of the `talker` model).
pub async fn submit_talker(State(state): State<AppState>, admin: Admin, headers: HeaderMap, body: Bytes) -> Response {
    let f = match fields(&admin, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let checked = async {
        let spec = talker_spec_of(&state, &f)?;
        let counts = accepted(&state).await.map_err(|e| Refusal::new("preset", e.to_string()))?;
        let n = counts.iter().find(|(s, _)| s == "train").map(|(_, n)| *n).unwrap_or(0);
        if n == 0 && !spec.data.include_unreviewed {
            return Err(Refusal::new(
                "include_unreviewed",
                "no accepted triplets in the train split yet: annotate and review some first (or tick \"submitted, not yet reviewed, too\")",
            ));
        }
        Ok(spec)
    }
    .await;
    match checked {
        Err(r) => {
            let html = page(&state, &admin, "talker", Some(&r), &f).await.map(|(h, _)| h);
            refused(admin.json, &r, |_| html)
        }
        Ok(spec) => {
            let c = &spec.config;
            let detail = serde_json::json!({
                "model": "talker", "preset": c.preset, "init": c.init, "fpn": c.fpn, "regions": c.regions, "steps": c.steps,
                "batch_size": c.batch_size, "lr": c.lr, "devices": c.devices, "cache_vision_features": c.cache_vision_features,
                "double_sigmoid": c.mask_loss.double_sigmoid, "align_masks": c.align_masks, "normalize_captions": c.normalize_captions,
                "gate": c.gate,
                "run_dir": spec.run_dir,
            });
            specs::submit_and_answer(
                &state,
                &admin,
                &crate::jobs::JobSpec::Train(TrainSpec::Talker(Box::new(spec))),
                "train talker",
                detail,
            )
            .await
        }
    }
}

/// The SVG chart of a training job's figures: loss against the step (top), validation PLM in %
/// (bottom); a stage-2 run's: its loss and the loss's text and mask parts (top), validation
/// CIDEr + BLEU-4 and both parts (bottom).
pub fn chart_svg(s: &Series) -> Result<String, String> {
    if s.model == TrainModel::Talker {
        return talker_chart_svg(s);
    }
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically(260);
        let max_step = s.steps.last().copied().into_iter().chain(s.val.iter().map(|v| v.0)).max().unwrap_or(1).max(1);
        let losses: Vec<f64> = s.loss.iter().copied().filter(|l| l.is_finite()).collect();
        let (lo, hi) = losses.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
        let (lo, hi) = if losses.is_empty() {
            (0.0, 1.0)
        } else if hi - lo < 1e-9 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        };
        let mut c = ChartBuilder::on(&top)
            .caption("training loss", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..max_step, lo..hi)
            .map_err(|x| e(&x))?;
        c.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|x| e(&x))?;
        let line: Vec<(u64, f64)> = s.steps.iter().copied().zip(s.loss.iter().copied()).filter(|(_, l)| l.is_finite()).collect();
        c.draw_series(std::iter::once(PathElement::new(line, RGBColor(45, 95, 168)))).map_err(|x| e(&x))?;
        let top_plm = s.val.iter().map(|v| 100.0 * v.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut c = ChartBuilder::on(&bottom)
            .caption("validation PLM (%)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..max_step, 0f64..top_plm.min(110.0))
            .map_err(|x| e(&x))?;
        c.configure_mesh().x_desc("step").y_desc("PLM").draw().map_err(|x| e(&x))?;
        let pts: Vec<(u64, f64)> = s.val.iter().map(|(st, p)| (*st, 100.0 * p)).collect();
        c.draw_series(std::iter::once(PathElement::new(pts.clone(), RGBColor(200, 90, 40)))).map_err(|x| e(&x))?;
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, RGBColor(200, 90, 40).filled()))).map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// The y range of `values` (finite ones) with a margin; (0, 1) when none.
fn y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    }
}

/// The stage-2 chart: loss, text loss and mask loss (top); validation score, CIDEr and BLEU-4
/// (bottom, a point per validation on the score).
fn talker_chart_svg(s: &Series) -> Result<String, String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically(260);
        let max_step = s.steps.last().copied().into_iter().chain(s.scores.iter().map(|v| v.step)).max().unwrap_or(1).max(1);
        let parts = |v: &[Option<f64>]| -> Vec<(u64, f64)> {
            s.steps.iter().copied().zip(v.iter().copied()).filter_map(|(st, x)| x.filter(|x| x.is_finite()).map(|x| (st, x))).collect()
        };
        let total: Vec<(u64, f64)> = s.steps.iter().copied().zip(s.loss.iter().copied()).filter(|(_, l)| l.is_finite()).collect();
        let (lm, mask) = (parts(&s.lm_loss), parts(&s.mask_loss));
        let (lo, hi) = y_range(total.iter().chain(&lm).chain(&mask).map(|p| p.1));
        let mut c = ChartBuilder::on(&top)
            .caption("training loss (text + mask)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..max_step, lo..hi)
            .map_err(|x| e(&x))?;
        c.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|x| e(&x))?;
        for (line, color, name) in
            [(total, RGBColor(45, 95, 168), "loss"), (lm, RGBColor(60, 150, 90), "text (T5)"), (mask, RGBColor(150, 80, 160), "mask")]
        {
            c.draw_series(std::iter::once(PathElement::new(line, color)))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|x| e(&x))?;
        let pts = |f: fn(&train::CaptionScores) -> f64| -> Vec<(u64, f64)> {
            s.scores.iter().map(|v| (v.step, f(v))).filter(|p| p.1.is_finite()).collect()
        };
        let (score, cider, bleu) = (pts(|v| v.score), pts(|v| v.cider), pts(|v| v.bleu4));
        let top_y = score.iter().chain(&cider).chain(&bleu).map(|p| p.1).fold(0.0f64, f64::max).max(0.01) * 1.1;
        let mut c = ChartBuilder::on(&bottom)
            .caption("validation CIDEr + BLEU-4", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..max_step, 0f64..top_y)
            .map_err(|x| e(&x))?;
        c.configure_mesh().x_desc("step").y_desc("score").draw().map_err(|x| e(&x))?;
        let orange = RGBColor(200, 90, 40);
        c.draw_series(std::iter::once(PathElement::new(score.clone(), orange)))
            .map_err(|x| e(&x))?
            .label("CIDEr + BLEU-4")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], orange));
        c.draw_series(score.iter().map(|p| Circle::new(*p, 3, orange.filled()))).map_err(|x| e(&x))?;
        for (line, color, name) in [(cider, RGBColor(120, 120, 120), "CIDEr"), (bleu, RGBColor(45, 95, 168), "BLEU-4")] {
            c.draw_series(std::iter::once(PathElement::new(line, color)))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// GET /admin/train/{id}/chart: the chart (SVG), or the figures as JSON.
pub async fn chart(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<uuid::Uuid>() else { return super::error_response(WebError::NotFound, admin.json) };
    match crate::jobs::get(&state.pool, id).await {
        Ok(Some(j)) if j.kind == crate::jobs::JobKind::Train => {}
        Ok(_) => return super::error_response(WebError::NotFound, admin.json),
        Err(e) => return super::internal(admin.json, e),
    }
    let s = match train::series(&state.pool, id, 600).await {
        Ok(s) => s,
        Err(e) => return super::internal(admin.json, e),
    };
    if admin.json {
        return axum::Json(s).into_response();
    }
    match chart_svg(&s) {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-cache")], svg).into_response(),
        Err(m) => super::internal(false, m),
    }
}

/// The figures a training job's page shows (filled in by static/admin.js as the run goes).
#[derive(Debug, Clone, Default)]
pub struct TrainPanel {
    /// `fpn` or `talker`.
    pub model: String,
    pub step: String,
    pub loss: String,
    pub lr: String,
    pub rate: String,
    pub last_plm: String,
    pub best_plm: String,
    /// Stage 2: the loss's parts and the last and best validation.
    pub lm_loss: String,
    pub mask_loss: String,
    pub cider: String,
    pub bleu4: String,
    pub last_score: String,
    pub best_score: String,
}

pub async fn panel(pool: &sqlx::PgPool, id: uuid::Uuid) -> Result<TrainPanel, WebError> {
    let s = train::series(pool, id, 10).await.map_err(|e| WebError::Internal(e.to_string()))?;
    let f = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_default();
    Ok(TrainPanel {
        model: s.model.name().to_string(),
        step: s.last_step.map(|v| v.to_string()).unwrap_or_default(),
        loss: f(s.last_loss, 4),
        lr: s.last_lr.map(|v| format!("{v:.3e}")).unwrap_or_default(),
        rate: f(s.last_images_per_s, 1),
        last_plm: f(s.last_plm.map(|p| 100.0 * p), 2),
        best_plm: f(s.best_plm.map(|p| 100.0 * p), 2),
        lm_loss: f(s.last_lm_loss, 4),
        mask_loss: f(s.last_mask_loss, 4),
        cider: f(s.last_score.map(|v| v.cider), 4),
        bleu4: f(s.last_score.map(|v| v.bleu4), 4),
        last_score: f(s.last_score.map(|v| v.score), 4),
        best_score: f(s.best_score, 4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_the_loss_and_the_plm() {
        let steps: Vec<u64> = (1..=100).collect();
        let s = Series {
            loss: steps.iter().map(|s| 1.0 / (*s as f64).sqrt()).collect(),
            lr: vec![1e-3; 100],
            images_per_s: vec![Some(50.0); 100],
            val: vec![(50, 0.3), (100, 0.45)],
            steps,
            ..Default::default()
        };
        let svg = chart_svg(&s).unwrap();
        assert!(svg.contains("training loss") && svg.contains("validation PLM"), "both panels are captioned");
        assert_eq!(svg.matches("<circle").count(), 2, "a point per validation");
        assert!(svg.matches("<polyline").count() >= 2, "the loss and PLM lines");
        if let Ok(dir) = std::env::var("MMTT_CHART_OUT") {
            std::fs::write(std::path::Path::new(&dir).join("train-chart.svg"), &svg).unwrap();
        }
        // no figures yet: empty panels, no error
        assert!(chart_svg(&Series::default()).unwrap().contains("<svg"));
    }

    #[test]
    fn the_stage_2_chart_draws_the_loss_parts_and_the_scores() {
        let steps: Vec<u64> = (1..=40).collect();
        let s = Series {
            model: TrainModel::Talker,
            loss: steps.iter().map(|s| 3.0 / (*s as f64).sqrt()).collect(),
            lm_loss: steps.iter().map(|s| Some(2.0 / (*s as f64).sqrt())).collect(),
            mask_loss: steps.iter().map(|s| Some(1.0 / (*s as f64).sqrt())).collect(),
            lr: vec![1e-4; 40],
            images_per_s: vec![Some(5.0); 40],
            scores: [10u64, 20, 30, 40]
                .iter()
                .map(|st| train::CaptionScores {
                    step: *st,
                    cider: 0.01 * *st as f64,
                    bleu4: 0.002 * *st as f64,
                    score: 0.012 * *st as f64,
                })
                .collect(),
            steps,
            ..Default::default()
        };
        let svg = chart_svg(&s).unwrap();
        assert!(svg.contains("training loss (text + mask)") && svg.contains("validation CIDEr + BLEU-4"), "both panels are captioned");
        if let Ok(dir) = std::env::var("MMTT_CHART_OUT") {
            std::fs::write(std::path::Path::new(&dir).join("talker-chart.svg"), &svg).unwrap();
        }
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>'))
            .map(|(_, rest)| rest.split('<').next().unwrap_or("").trim())
            .collect();
        for name in ["loss", "text (T5)", "mask", "CIDEr + BLEU-4", "CIDEr", "BLEU-4"] {
            assert!(texts.contains(&name), "the legend names {name}: {texts:?}");
        }
        assert_eq!(svg.matches("<circle").count(), 4, "a point per validation");
        assert!(chart_svg(&Series { model: TrainModel::Talker, ..Default::default() }).unwrap().contains("<svg"));
    }
}
