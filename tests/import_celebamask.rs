//! A CelebAMask-HQ-layout fixture, built by `mmtt fixtures celebamask` from the Debian sample
//! faces, imports correctly: parts present and absent, sizes, merged part masks, re-import no-op.

mod common;

use image::GenericImageView;
use std::collections::BTreeSet;

#[test]
fn celebamask_fixture_imports_parts_sizes_and_masks() {
    let env = common::Env::new();
    let fixture = env.data.path().join("celebamask");
    let photos = common::sample_faces();
    let mut args: Vec<String> =
        vec!["fixtures".into(), "celebamask".into(), "--out".into(), fixture.display().to_string(), "--photos".into()];
    args.extend(photos.iter().map(|p| p.display().to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let manifest: serde_json::Value = env.json(&argv);
    let manifest = manifest.as_array().expect("manifest").clone();
    assert_eq!(manifest.len(), 3);
    // the layout of the spec
    assert_eq!(image::open(fixture.join("CelebA-HQ-img/0.jpg")).unwrap().dimensions(), (1024, 1024));
    assert!(fixture.join("CelebAMask-HQ-mask-anno/0/00000_skin.png").is_file());
    assert!(fixture.join("CelebAMask-HQ-mask-anno/1/02001_skin.png").is_file());
    assert!(fixture.join("CelebAMask-HQ-mask-anno/0/00000_hat.png").is_file(), "an all-zero part file exists");
    assert!(!fixture.join("CelebAMask-HQ-mask-anno/0/00001_l_ear.png").exists());
    // garbage in the image folder is reported, not imported
    std::fs::write(fixture.join("CelebA-HQ-img/notes.txt"), "not an image").unwrap();

    let root = fixture.display().to_string();
    let s = env.json(&["import", "celebamask-hq", "--root", &root, "--limit", "2", "--json"]);
    assert_eq!(s["imported"], 2, "{s}");
    let s = env.json(&["import", "celebamask-hq", "--root", &root, "--json"]);
    assert_eq!(s["imported"], 1, "resumes after the first two: {s}");
    assert_eq!(s["already_present"], 2);
    assert_eq!(s["faces"], 1);
    let skipped = s["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("notes.txt"));

    let sources = env.json(&["sources", "list", "--json"]);
    let sources = sources.as_array().unwrap();
    assert_eq!(sources.len(), 3);
    for entry in &manifest {
        let k = entry["k"].as_u64().unwrap().to_string();
        let src = sources.iter().find(|s| s["original_id"] == k.as_str()).expect("imported");
        let stored: BTreeSet<String> = src["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        let expected: BTreeSet<String> = entry["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert_eq!(stored, expected, "parts of {k}");
        assert!(!stored.contains("hat"), "an all-zero mask file means the part is absent");
        assert!(stored.contains("neck"));
        let img = image::open(src["image"].as_str().unwrap()).unwrap();
        assert_eq!(img.dimensions(), (512, 512), "images are resized to 512x512");
        assert_eq!(src["dataset"], "celebamask-hq");
        assert!(["train", "validation", "test"].contains(&src["split"].as_str().unwrap()));
    }
    let k1 = sources.iter().find(|s| s["original_id"] == "1").unwrap();
    assert!(!k1["parts"].as_array().unwrap().iter().any(|p| p == "l_ear" || p == "r_ear"), "ear files absent for k=1");

    // the stored part masks are the fixture's files, binarised on channel 0
    let rows: Vec<(String, String, String, i32)> = env.db.query(async |p| {
        sqlx::query_as("SELECT s.original_id, sp.part, sp.mask_hash, sp.pixels FROM source_parts sp JOIN sources s ON s.id = sp.source_id")
            .fetch_all(p)
            .await
            .unwrap()
    });
    assert!(rows.len() >= 30);
    for (k, part, hash, pixels) in rows {
        let k: u32 = k.parse().unwrap();
        let file = fixture.join(format!("CelebAMask-HQ-mask-anno/{}/{k:05}_{part}.png", k / 2000));
        let want = image::open(&file).unwrap().into_rgb8();
        let stored = image::open(env.blob_path(&hash)).unwrap();
        assert_eq!(stored.color(), image::ColorType::L8, "masks are single-channel");
        let stored = stored.into_luma8();
        assert_eq!(stored.dimensions(), (512, 512));
        let mut n = 0;
        for (x, y, p) in stored.enumerate_pixels() {
            let expect = if want.get_pixel(x, y).0[0] > 0 { 255 } else { 0 };
            assert_eq!(p.0[0], expect, "{} at ({x},{y})", file.display());
            n += (expect > 0) as i32;
        }
        assert_eq!(n, pixels);
    }

    // re-import adds nothing
    let before = env.db.scalar_i64("SELECT (SELECT count(*) FROM sources) * 1000 + (SELECT count(*) FROM source_parts)");
    let s = env.json(&["import", "celebamask-hq", "--root", &root, "--json"]);
    assert_eq!((s["imported"].as_u64(), s["already_present"].as_u64()), (Some(0), Some(3)));
    assert_eq!(env.db.scalar_i64("SELECT (SELECT count(*) FROM sources) * 1000 + (SELECT count(*) FROM source_parts)"), before);

    // planning: one inpainting and one swap mask per source, only facial parts, merged exactly
    let plan = env.json(&["masks", "plan", "--seed", "4", "--json"]);
    assert_eq!(plan["planned"], 3);
    let again = env.json(&["masks", "plan", "--seed", "4", "--json"]);
    assert_eq!((again["planned"].as_u64(), again["already_planned"].as_u64()), (Some(0), Some(3)));
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM mask_plans WHERE seed = 4"), 6);
    assert_eq!(
        env.db.scalar_i64("SELECT count(*) FROM mask_plans WHERE kind = 'full_face'"),
        0,
        "CelebAMask-HQ never gets full-face masks"
    );
    let facial = ["skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip"];
    let plans: Vec<(uuid::Uuid, Vec<String>, String, i32)> = env.db.query(async |p| {
        sqlx::query_as("SELECT source_id, parts, mask_hash, pixels FROM mask_plans WHERE purpose = 'inpaint'").fetch_all(p).await.unwrap()
    });
    for (source, parts, hash, pixels) in plans {
        assert!(parts.iter().all(|p| facial.contains(&p.as_str())), "{parts:?}");
        let union: i64 = env.db.query(async |p| {
            sqlx::query_scalar("SELECT count(*)::bigint FROM source_parts WHERE source_id = $1 AND part = ANY($2)")
                .bind(source)
                .bind(&parts)
                .fetch_one(p)
                .await
                .unwrap()
        });
        assert_eq!(union as usize, parts.len(), "every planned part is present");
        assert!(pixels > 0);
        let m = image::open(env.blob_path(&hash)).unwrap().into_luma8();
        assert_eq!(m.pixels().filter(|p| p.0[0] == 255).count() as i32, pixels);
    }
    env.assert_store_consistent();
}
