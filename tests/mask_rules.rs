//! The MMTT mask rules (spec section 3) at scale: full-face share, uniform k, non-empty masks.

mod common;

use mmtt_generators::detect::FaceFinder;
use mmtt_generators::geometry::{Pt, count_set};
use mmtt_generators::landmarks::{Landmarks68, merge_parts};
use mmtt_generators::parts::Part;
use mmtt_generators::plan::{self, MaskKind, PartSource, PlanStats, Purpose};
use std::ops::{Add, Sub};

/// chi-square critical value for 10 degrees of freedom at p = 0.001.
const CHI2_10_P001: f64 = 29.588;

fn simulate_cli(dataset: &str, n: u64, seed: u64) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .args(["masks", "simulate", "--dataset", dataset, "--n", &n.to_string(), "--seed", &seed.to_string(), "--json"])
        .output()
        .expect("run mmtt");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn chi_square(hist: &serde_json::Map<String, serde_json::Value>) -> f64 {
    let counts: Vec<f64> = (1..=11).map(|k| hist[&k.to_string()].as_f64().expect("count")).collect();
    let total: f64 = counts.iter().sum();
    let e = total / 11.0;
    counts.iter().map(|o| (o - e).powi(2) / e).sum()
}

#[test]
fn ffhq_rules_full_face_share_and_uniform_k() {
    let v = simulate_cli("ffhq", 20_000, 11);
    let share = v["full_face_share"].as_f64().unwrap();
    println!("ffhq: full-face share {share:.4}");
    assert!((share - 0.20).abs() <= 0.015, "full-face share {share}");
    assert_eq!(v["n"].as_u64(), Some(20_000));
    let chi = chi_square(v["k_histogram"].as_object().unwrap());
    println!("ffhq: chi-square of k against uniform 1..11 = {chi:.2} (critical {CHI2_10_P001} at p = 0.001)");
    assert!(chi < CHI2_10_P001, "k is not uniform: chi2 = {chi}");
    // the same seed gives the same figures, another seed other ones
    assert_eq!(simulate_cli("ffhq", 20_000, 11), v);
    assert_ne!(simulate_cli("ffhq", 20_000, 12), v);
}

#[test]
fn celebamask_rules_never_full_face_and_uniform_k() {
    let v = simulate_cli("celebamask-hq", 12_000, 5);
    assert_eq!(v["full_face"].as_u64(), Some(0));
    let chi = chi_square(v["k_histogram"].as_object().unwrap());
    println!("celebamask-hq: chi-square {chi:.2}");
    assert!(chi < CHI2_10_P001, "k is not uniform: chi2 = {chi}");
    // every facial part is drawn about equally often: E[k]/11 = 6/11
    for p in Part::FACIAL {
        let f = v["part_frequency"][p.name()].as_f64().unwrap();
        assert!((f - 6.0 / 11.0).abs() < 0.03, "{p}: {f}");
    }
    assert!(v["part_frequency"].get("hair").is_none(), "non-facial parts are never planned");
}

#[test]
fn the_uniformity_test_can_fail() {
    // a skewed histogram must be rejected by the same statistic
    let mut st = PlanStats::default();
    for k in 1..=11u8 {
        let n = if k == 11 { 1300 } else { 1000 };
        for _ in 0..n {
            st.add(&plan::PlannedMask { kind: MaskKind::Parts, parts: Part::FACIAL[..k as usize].to_vec(), k_drawn: k });
        }
    }
    assert!(st.finish().k_chi_square() > CHI2_10_P001);
}

/// 10,000 planned masks over real landmark geometry (the Debian sample faces, rotated, scaled and
/// shifted): every mask is non-empty, 512x512, binary, and covers exactly its parts' union.
#[test]
fn planned_masks_on_real_geometry_are_non_empty_and_inside() {
    let finder = FaceFinder::load().expect("dlib");
    let mut bases: Vec<Landmarks68> = Vec::new();
    for p in common::sample_faces() {
        let img = image::open(&p).expect("photo").into_rgb8();
        let face = finder.faces(&img).into_iter().next().expect("a face in the sample");
        let t = mmtt_generators::align::AlignTransform::ffhq(&face.landmarks, 512);
        bases.push(t.landmarks_to_output(&face.landmarks));
    }
    let mut geometries = Vec::new();
    for g in 0..40u32 {
        let base = &bases[g as usize % bases.len()];
        let angle = ((g as f64 * 0.37).sin()) * 0.26; // within +-15 degrees
        let scale = 0.85 + 0.3 * ((g as f64 * 0.61).cos() * 0.5 + 0.5);
        let shift = Pt::new(((g * 7) % 41) as f64 - 20.0, ((g * 13) % 41) as f64 - 20.0);
        let c = Pt::new(256.0, 256.0);
        let lm = base.map(|p| {
            let q = p.sub(c);
            let r = Pt::new(q.x * angle.cos() - q.y * angle.sin(), q.x * angle.sin() + q.y * angle.cos());
            r.scale(scale).add(c).add(shift)
        });
        geometries.push(lm.part_masks(512, 512));
    }
    let mut stats = PlanStats::default();
    for i in 0..10_000u64 {
        let parts = &geometries[(i % geometries.len() as u64) as usize];
        let available: Vec<Part> = parts.keys().copied().collect();
        assert!(available.len() >= 10, "a frontal face yields at least 10 regions, got {available:?}");
        let seed = plan::item_seed(99, &format!("geom{i}"), Purpose::Inpaint);
        let m = plan::plan_inpaint(PartSource::Landmarks, &available, seed).expect("plannable");
        stats.add(&m);
        if i % 10 == 0 {
            let raster = merge_parts(parts, &m.parts, 512, 512, 0.0);
            assert_eq!(raster.dimensions(), (512, 512));
            assert!(count_set(&raster) > 0, "empty mask for {:?}", m.parts);
            assert!(raster.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        }
    }
    let st = stats.finish();
    println!("real geometry: full-face share {:.4}, chi2 {:.2}", st.full_face_share, st.k_chi_square());
    assert!((st.full_face_share - 0.2).abs() <= 0.015);
}
