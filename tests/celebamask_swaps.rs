//! Face swaps onto CelebAMask-HQ faces: landmarks detected at import on the aligned face (a face
//! dlib cannot find is still imported, without them, and counted), `mmtt landmarks backfill` for
//! sources stored without them (resumable, idempotent, the same points as the import), mask plans
//! untouched by either, and a `--mix paper` job on the CelebAMask-HQ fixture that gets its swap
//! third: donors from the target's split, the forgery equal to its original outside its mask, the
//! mask the spec's face region built from the annotated part masks.

mod common;

use mmtt_generators::geometry::{dilate, empty_mask, union_into};
use mmtt_generators::landmarks::Landmarks68;
use mmtt_generators::plan::SWAP_DILATION_FRACTION;
use std::collections::BTreeMap;
use std::path::Path;

/// The face region's part names (`Part::FACE_REGION`), as stored.
const FACE_REGION: [&str; 9] = ["skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip"];

/// The CelebAMask-HQ fixture from the sample faces, plus image 3: no face at all (a smooth
/// gradient), with the annotation files of image 0, so it is imported with part masks and no
/// landmarks.
fn fixture(env: &common::Env) -> String {
    let dir = env.data.path().join("celebamask");
    let mut args: Vec<String> = vec!["fixtures".into(), "celebamask".into(), "--out".into(), dir.display().to_string(), "--photos".into()];
    args.extend(common::sample_faces().iter().map(|p| p.display().to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&argv);
    let blank = image::RgbImage::from_fn(1024, 1024, |x, y| image::Rgb([(x / 8) as u8, (y / 8) as u8, 128]));
    blank.save_with_format(dir.join("CelebA-HQ-img/3.jpg"), image::ImageFormat::Jpeg).unwrap();
    let anno = dir.join("CelebAMask-HQ-mask-anno/0");
    for e in std::fs::read_dir(&anno).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(part) = name.strip_prefix("00000_") {
            std::fs::copy(anno.join(&name), anno.join(format!("00003_{part}"))).unwrap();
        }
    }
    dir.display().to_string()
}

type LandmarkRow = (String, Option<serde_json::Value>, Option<serde_json::Value>, Option<String>);

fn landmark_rows(env: &common::Env) -> BTreeMap<String, LandmarkRow> {
    let rows: Vec<LandmarkRow> = env.db.query(async |p| {
        sqlx::query_as("SELECT original_id, landmarks, face_box, detector FROM sources WHERE dataset = 'celebamask-hq'")
            .fetch_all(p)
            .await
            .unwrap()
    });
    rows.into_iter().map(|r| (r.0.clone(), r)).collect()
}

fn part_mask(env: &common::Env, original_id: &str, part: &str) -> Option<image::GrayImage> {
    let hash: Option<String> = env.db.query(async |p| {
        sqlx::query_scalar(
            "SELECT sp.mask_hash FROM source_parts sp JOIN sources s ON s.id = sp.source_id WHERE s.original_id = $1 AND sp.part = $2",
        )
        .bind(original_id)
        .bind(part)
        .fetch_optional(p)
        .await
        .unwrap()
    });
    hash.map(|h| image::open(env.blob_path(&h)).unwrap().into_luma8())
}

fn set_at(m: &image::GrayImage, p: mmtt_generators::geometry::Pt) -> bool {
    m.get_pixel(p.x.round() as u32, p.y.round() as u32).0[0] == 255
}

#[test]
fn celebamask_landmarks_at_import_and_by_a_resumable_backfill() {
    let env = common::Env::new();
    let root = fixture(&env);
    let s = env.json(&["import", "celebamask-hq", "--root", &root, "--json"]);
    assert_eq!((s["imported"].as_u64(), s["faces"].as_u64()), (Some(4), Some(4)), "{s}");
    assert_eq!(s["without_landmarks"], 1, "the blank image is imported without landmarks and counted: {s}");
    assert_eq!(s["skipped"].as_array().unwrap().len(), 0, "{s}");
    let human = env.ok(&["import", "celebamask-hq", "--root", &root]);
    assert!(human.contains("4 already present"), "{human}");

    let imported = landmark_rows(&env);
    assert_eq!(imported.len(), 4);
    for (k, (_, lm, face_box, detector)) in &imported {
        if k == "3" {
            assert_eq!((lm, face_box), (&None, &None), "no face in the blank image");
            let d = detector.as_deref().unwrap();
            assert!(["dlib-hog", "dlib-mmod"].contains(&d), "the search is recorded by its detector: {d}");
            continue;
        }
        let lm: Landmarks68 = serde_json::from_value(lm.clone().expect("landmarks of a face")).unwrap();
        assert!(face_box.is_some());
        assert!(["aligned-box", "dlib-hog", "dlib-mmod"].contains(&detector.as_deref().unwrap()), "{detector:?}");
        // the points are on this face: the eye centres inside the annotated eyes, the nose tip
        // inside the annotated nose, the interocular distance an aligned face's
        let eyes = {
            let mut m = part_mask(&env, k, "l_eye").unwrap();
            union_into(&mut m, &part_mask(&env, k, "r_eye").unwrap());
            dilate(&m, 4.0)
        };
        assert!(set_at(&eyes, lm.left_eye()) && set_at(&eyes, lm.right_eye()), "image {k}: eye centres off the eyes");
        assert!(set_at(&dilate(&part_mask(&env, k, "nose").unwrap(), 4.0), lm.0[30]), "image {k}: nose tip off the nose");
        assert!((80.0..160.0).contains(&lm.interocular()), "image {k}: interocular {}", lm.interocular());
    }
    // part masks stay the annotated ones
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM source_parts WHERE origin <> 'annotated'"), 0);

    // plans made now must survive the backfill unchanged
    let plan = env.json(&["masks", "plan", "--seed", "4", "--json"]);
    assert_eq!(plan["planned"], 4);
    let plans_sql = "SELECT string_agg(source_id::text || purpose || mask_hash || array_to_string(parts, ','), ';' ORDER BY source_id, purpose) FROM mask_plans";
    let plans_before: String = env.db.query(async |p| sqlx::query_scalar(plans_sql).fetch_one(p).await.unwrap());

    // the backfill on sources stored without landmarks (as imported before this version)
    env.db.query(async |p| sqlx::query("UPDATE sources SET landmarks = NULL, face_box = NULL, detector = NULL").execute(p).await.unwrap());
    let b = env.json(&["landmarks", "backfill", "--dataset", "celebamask-hq", "--limit", "2", "--batch", "1", "--json"]);
    assert_eq!((b["searched"].as_u64(), b["remaining"].as_u64()), (Some(2), Some(2)), "{b}");
    let written = env.db.scalar_i64("SELECT count(*) FROM sources WHERE detector IS NOT NULL");
    assert_eq!(written, 2, "each source is written as it is searched");
    let b = env.json(&["landmarks", "backfill", "--json"]);
    assert_eq!((b["searched"].as_u64(), b["remaining"].as_u64()), (Some(2), Some(0)), "resumes with the two left: {b}");
    assert_eq!((b["with_landmarks"].as_u64(), b["without_landmarks"].as_u64()), (Some(3), Some(1)), "{b}");
    let again = env.json(&["landmarks", "backfill", "--json"]);
    assert_eq!((again["searched"].as_u64(), again["found"].as_u64(), again["no_face"].as_u64()), (Some(0), Some(0), Some(0)), "{again}");
    assert_eq!(landmark_rows(&env), imported, "the backfill finds the import's points, boxes and detectors");
    let retry = env.json(&["landmarks", "backfill", "--retry-no-face", "--json"]);
    assert_eq!((retry["searched"].as_u64(), retry["no_face"].as_u64()), (Some(1), Some(1)), "{retry}");
    assert_eq!(landmark_rows(&env), imported);

    let plan = env.json(&["masks", "plan", "--seed", "4", "--json"]);
    assert_eq!((plan["planned"].as_u64(), plan["already_planned"].as_u64()), (Some(0), Some(4)));
    let plans_after: String = env.db.query(async |p| sqlx::query_scalar(plans_sql).fetch_one(p).await.unwrap());
    assert_eq!(plans_after, plans_before, "landmarks change no plan");

    // the image-path form of the command is unchanged
    let img = Path::new(&root).join("CelebA-HQ-img/0.jpg");
    let out = env.json(&["landmarks", img.to_str().unwrap(), "--json"]);
    assert_eq!(out[0]["faces"].as_array().unwrap().len(), 1, "{out}");
    env.assert_store_consistent();
}

#[test]
fn paper_mix_on_the_celebamask_fixture_produces_swaps() {
    let env = common::Env::new();
    // two splits for four faces: three have landmarks, so at least two of them share a split and
    // every swap target with a face has a donor; donors must still come from the target's split
    env.ok(&["project", "set-split", "--seed", "3", "--ratios", "1:1:0"]);
    let root = fixture(&env);
    let s = env.json(&["import", "celebamask-hq", "--root", &root, "--json"]);
    assert_eq!((s["imported"].as_u64(), s["without_landmarks"].as_u64()), (Some(4), Some(1)), "{s}");

    // 6 by the paper's proportions: 2 swaps, 2 transformer, 2 diffusion (4 sources: 2 short)
    let e = env.json(&[
        "forge",
        "--mix",
        "paper",
        "--method",
        "classic-swap,patch-inpaint,patch-inpaint",
        "--count",
        "6",
        "--seed",
        "5",
        "--wait",
        "--json",
    ]);
    assert_eq!(e["by_method"]["classic-swap"], 2, "the swap third: {e}");
    assert_eq!(e["by_method"]["patch-inpaint"], 2, "the two inpainting families' items add up: {e}");
    assert_eq!(e["queued"], 4, "{e}");
    let failed = env.db.scalar_i64("SELECT count(*) FROM forge_items WHERE method = 'classic-swap' AND status <> 'done'");
    assert_eq!(failed, 0, "every swap forged: {}", env.ok(&["jobs", "--json"]));

    type Row = (String, String, uuid::Uuid, Option<uuid::Uuid>, String, String, String, String, String);
    let rows: Vec<Row> = env.db.query(async |p| {
        sqlx::query_as(
            "SELECT f.method, t.original_id, f.target_id, f.donor_id, f.split, t.split, f.image_hash, f.mask_hash, f.original_hash \
             FROM forgeries f JOIN sources t ON t.id = f.target_id ORDER BY f.method, t.original_id",
        )
        .fetch_all(p)
        .await
        .unwrap()
    });
    let swaps: Vec<&Row> = rows.iter().filter(|r| r.0 == "classic-swap").collect();
    assert_eq!(swaps.len(), 2, "{rows:?}");
    let items = env.db.scalar_i64("SELECT count(*) FROM forge_items");
    assert_eq!(items, 4, "every source is the target of one item");
    for (method, k, target, donor, split, target_split, image, mask_hash, original) in &rows {
        let orig = image::open(env.blob_path(original)).unwrap().into_rgb8();
        let forged = image::open(env.blob_path(image)).unwrap().into_rgb8();
        let mask = image::open(env.blob_path(mask_hash)).unwrap().into_luma8();
        let (mut inside, mut changed) = (0u32, 0u32);
        for (x, y, m) in mask.enumerate_pixels() {
            let (a, b) = (orig.get_pixel(x, y), forged.get_pixel(x, y));
            if m.0[0] == 0 {
                assert_eq!(a, b, "{method} on {k} changed a pixel outside its mask at ({x},{y})");
            } else {
                inside += 1;
                changed += (a != b) as u32;
            }
        }
        assert_eq!(split, target_split);
        if method != "classic-swap" {
            // face-aware patch-inpaint takes a donor of the same split, with landmarks, where one exists
            if let Some(d) = donor {
                assert_ne!(d, target, "{method} on {k}: its own donor");
                let (donor_split, donor_lm): (String, bool) = env.db.query(async |p| {
                    sqlx::query_as("SELECT split, landmarks IS NOT NULL FROM sources WHERE id = $1").bind(*d).fetch_one(p).await.unwrap()
                });
                assert_eq!(&donor_split, target_split, "{method} on {k}: the donor is in the target's split");
                assert!(donor_lm, "{method} on {k}: the donor has landmarks");
            }
            continue;
        }
        assert!(changed as f64 > 0.5 * inside as f64, "{method} on {k}: only {changed} of {inside} masked pixels changed");
        assert_ne!(k, "3", "the face without landmarks is never a swap target");
        let donor = donor.expect("a swap has a donor");
        assert_ne!(donor, *target);
        let (donor_split, donor_k, donor_lm): (String, String, bool) = env.db.query(async |p| {
            sqlx::query_as("SELECT split, original_id, landmarks IS NOT NULL FROM sources WHERE id = $1")
                .bind(donor)
                .fetch_one(p)
                .await
                .unwrap()
        });
        assert_eq!(&donor_split, target_split, "the donor is in the target's split");
        assert!(donor_lm && donor_k != "3", "donors have landmarks");

        // the mask: the swap plan's, which is the face region of the annotated part masks, dilated
        let (plan_hash, kind, parts): (String, String, Vec<String>) = env.db.query(async |p| {
            sqlx::query_as(
                "SELECT p.mask_hash, p.kind, p.parts FROM mask_plans p JOIN forgeries f ON f.plan_id = p.id WHERE f.image_hash = $1",
            )
            .bind(image)
            .fetch_one(p)
            .await
            .unwrap()
        });
        assert_eq!((&plan_hash, kind.as_str()), (mask_hash, "swap"));
        let present: Vec<&str> = FACE_REGION.iter().copied().filter(|p| part_mask(&env, k, p).is_some()).collect();
        assert_eq!(parts, present, "the plan covers the face region's parts present, no hair, ears or neck");
        let mut region = empty_mask(512, 512);
        for p in &present {
            union_into(&mut region, &part_mask(&env, k, p).unwrap());
        }
        let expected = dilate(&region, SWAP_DILATION_FRACTION * 512.0);
        assert!(expected == mask, "{k}: the swap mask is not the dilated union of the annotated face parts");
    }
    env.assert_store_consistent();
}
