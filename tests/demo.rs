//! `mmtt demo` end to end: sample faces imported, masks planned, previews written and listed,
//! forged, and the forgeries given demo captions (accepted annotations by `demo`).

mod common;

use image::GenericImageView;

#[test]
fn demo_imports_plans_and_writes_previews() {
    let env = common::Env::new();
    let out = env.ok(&["demo", "--seed", "3", "--no-serve"]);
    assert!(out.contains("import photos: 2 imported (2 faces)"), "{out}");
    let previews: Vec<&str> =
        out.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.ends_with(".png") && w.contains("/previews/")).collect();
    assert_eq!(previews.len(), 2, "{out}");
    for p in previews {
        let img = image::open(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(img.dimensions(), (1024, 512));
        // the right half shows the inpainting mask tinted red: some pixels are strongly red
        let rgb = img.into_rgb8();
        let red = (512..1024)
            .flat_map(|x| (0..512).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let p = rgb.get_pixel(x, y).0;
                p[0] as i32 - p[1] as i32 > 100
            })
            .count();
        assert!(red > 100, "{p}: no mask overlay visible");
    }
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM mask_plans WHERE seed = 3"), 4);
    // both faces forged by the three built-in generators, each with the other face as donor
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE method = 'patch-inpaint'"), 2);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE method = 'part-swap' AND donor_id IS NOT NULL"), 2);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE method = 'classic-swap'"), 2);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries WHERE donor_id = target_id"), 0);
    let shown: Vec<&str> = out.lines().map(str::trim).filter(|l| l.contains("/forgeries/") && l.ends_with(".png")).collect();
    assert_eq!(shown.len(), 6, "{out}");
    for p in shown {
        assert_eq!(image::open(p).unwrap().dimensions(), (1536, 512));
    }
    // ready accounts for the three roles, their passwords printed
    for role in ["annotator", "reviewer", "admin"] {
        assert!(out.lines().any(|l| l.trim().starts_with(role) && l.contains(&format!("demo-{role}")) && l.contains("password ")), "{out}");
    }
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM users WHERE name LIKE 'demo-%'"), 3);
    // every forgery has an accepted demo caption, said to be one
    assert!(out.contains("demo captions: 6 written by `demo`") && out.contains("NOT human explanations"), "{out}");
    assert_eq!(
        env.db.scalar_i64(
            "SELECT count(*) FROM annotations a JOIN users u ON u.id = a.annotator_id JOIN annotation_tasks t ON t.forgery_id = a.forgery_id \
             WHERE u.name = 'demo' AND a.status = 'accepted' AND t.status = 'accepted' AND cardinality(a.regions) > 0"
        ),
        6
    );
    // running the demo again adds nothing
    let again = env.ok(&["demo", "--seed", "3", "--no-serve"]);
    assert!(again.contains("0 imported (0 faces), 2 already present"), "{again}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM sources"), 2);
    assert!(again.contains("demo captions: 0 written by `demo`"), "{again}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM annotations"), 6);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM annotation_revisions"), 12);
}
