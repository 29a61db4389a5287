//! ForgeryTalker's explainer on the platform: `mmtt explain` end to end on the tiny fixture
//! checkpoints (`model/tests/fixtures/talker/`, made by its `make_fixtures.py` with
//! `transformers`), whose texts and token ids must equal `expected.json`'s for the same
//! generation settings, with the mask files checked against the fixture's mask probabilities;
//! its refusals; the explain page over HTTP on the real `mmtt serve --talker` (who may use it,
//! an upload, a stored forgery, JSON, refusals, the page without a model); `mmtt bench talker`.

mod common;

use common::admin::{add_users, client, login, multipart, serve};
use common::{Env, web::world};
use image::GenericImageView;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/talker")
}

fn fixture(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

fn expected() -> Value {
    let p = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{} ({e}): the talker fixtures are missing", p.display()));
    serde_json::from_str(&text).expect("expected.json")
}

/// The fixture's generation `name` of `case` (`hf`, `talker`: `expected.json`'s `cases`).
fn generation<'a>(exp: &'a Value, case: &str, name: &str) -> &'a Value {
    exp["cases"][case]["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("expected.json has no {case} generation named {name}"))
}

/// The command-line flags of a fixture generation's settings.
fn settings(g: &Value) -> Vec<String> {
    let n = |k: &str, d: f64| g.get(k).and_then(Value::as_f64).unwrap_or(d);
    vec![
        "--num-beams".into(),
        (n("num_beams", 1.0) as usize).to_string(),
        "--max-new-tokens".into(),
        (n("max_new_tokens", 20.0) as usize).to_string(),
        "--min-length".into(),
        (n("min_length", 0.0) as usize).to_string(),
        "--repetition-penalty".into(),
        n("repetition_penalty", 1.0).to_string(),
        "--length-penalty".into(),
        n("length_penalty", 1.0).to_string(),
    ]
}

fn mmtt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmtt")).args(args).output().expect("run mmtt")
}

/// Runs `mmtt explain ARGS --json`, asserts success, returns its JSON lines.
fn explain(args: &[String]) -> Vec<Value> {
    let mut all: Vec<&str> = vec!["explain", "--json"];
    all.extend(args.iter().map(String::as_str));
    let out = mmtt(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mmtt {all:?} failed: {}\nstdout: {stdout}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

/// Runs mmtt, asserts failure, returns stderr.
fn fails(args: &[&str]) -> (Option<i32>, String, String) {
    let out = mmtt(args);
    assert!(!out.status.success(), "mmtt {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_u64().unwrap()).collect()
}

/// One output line equals the fixture's image `i` of generation `g`.
fn assert_generation(line: &Value, g: &Value, i: usize, what: &str) {
    assert_eq!(ids(&line["token_ids"]), ids(&g["sequences"][i]), "{what}: token ids of image {i} ({})", g["name"]);
    assert_eq!(line["text"], g["texts"][i], "{what}: text of image {i} ({})", g["name"]);
}

/// The fixture's mask probabilities of the talker case, [2][64*64].
fn mask_probs() -> Vec<Vec<f32>> {
    let bytes = std::fs::read(fixtures().join("expected.safetensors")).expect("expected.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let t = st.tensor("talker.mask_probs").expect("talker.mask_probs");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let n: usize = t.shape()[1..].iter().product();
    let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    v.chunks(n).map(<[f32]>::to_vec).collect()
}

/// A written mask file: the image's size, only 0 and 255, and equal to the fixture's
/// probabilities thresholded at 0.5 and resized (nearest) to the image, except where a
/// probability lies within 1e-3 of 0.5.
fn assert_mask_file(path: &Path, image: &Path, probs: &[f32]) {
    let img = image::open(image).unwrap();
    let mask = image::open(path).unwrap_or_else(|e| panic!("mask {} ({e})", path.display())).into_luma8();
    assert_eq!(mask.dimensions(), (img.width(), img.height()), "the mask has the image's size");
    assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255), "only 0 and 255 in {}", path.display());
    let size = (probs.len() as f64).sqrt() as usize;
    let (w, h) = mask.dimensions();
    let mut differ = 0;
    for (x, y, p) in mask.enumerate_pixels() {
        let sx = (((x as f64 + 0.5) * size as f64 / w as f64).floor() as usize).min(size - 1);
        let sy = (((y as f64 + 0.5) * size as f64 / h as f64).floor() as usize).min(size - 1);
        let pr = probs[sy * size + sx];
        if (pr - 0.5).abs() > 1e-3 && (pr > 0.5) != (p[0] == 255) {
            differ += 1;
        }
    }
    assert_eq!(differ, 0, "{} differs from the fixture's mask in {differ} pixels", path.display());
    let forged = mask.pixels().filter(|p| p[0] == 255).count();
    assert!(forged > 0 && forged < (w * h) as usize, "a non-trivial mask: {forged} of {} pixels", w * h);
}

#[test]
fn plain_instructblip_with_an_instruction_equals_transformers() {
    let exp = expected();
    let instr = strings(&exp["cases"]["hf"]["instructions"]);
    let images = [fixture("img_a.png"), fixture("img_b.png")];
    for name in ["greedy", "beam"] {
        let g = generation(&exp, "hf", name);
        for (i, img) in images.iter().enumerate() {
            let mut args = vec!["--checkpoint".to_string(), fixture("hf"), "--instruction".into(), instr[i].clone()];
            args.extend(settings(g));
            args.push(img.clone());
            let lines = explain(&args);
            assert_eq!(lines.len(), 1, "one line per image: {lines:?}");
            let l = &lines[0];
            assert_generation(l, g, i, "hf");
            assert_eq!(l["image"], img.as_str());
            assert_eq!(l["instruction"], instr[i].as_str(), "the instruction is used literally");
            assert_eq!(l["regions"], serde_json::json!([]), "no regions with --instruction");
            assert_eq!(l["mask"], Value::Null, "a plain InstructBLIP predicts no mask");
        }
    }
}

#[test]
fn forgerytalker_with_its_fpn_equals_transformers_and_writes_masks() {
    let exp = expected();
    let probs = mask_probs();
    let images = [fixture("img_a.png"), fixture("img_b.png")];
    let regions: Vec<Vec<String>> = exp["cases"]["talker"]["regions"].as_array().unwrap().iter().map(strings).collect();
    let instr = strings(&exp["cases"]["talker"]["instructions"]);
    for name in ["greedy", "beam"] {
        let g = generation(&exp, "talker", name);
        let out = tempfile::tempdir().unwrap();
        let masks = out.path().join("masks");
        // both images in one batch
        let mut args = vec!["--checkpoint".to_string(), fixture("talker"), "--mask-out".into(), masks.display().to_string()];
        args.extend(settings(g));
        args.extend(images.iter().cloned());
        let lines = explain(&args);
        assert_eq!(lines.len(), 2, "one line per image: {lines:?}");
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["image"], images[i].as_str(), "the input order is kept");
            assert_generation(l, g, i, "talker");
            assert_eq!(strings(&l["regions"]), regions[i], "the FPN's regions of image {i}");
            assert_eq!(l["instruction"], instr[i].as_str(), "the release's template filled with the regions");
            let mask = PathBuf::from(l["mask"].as_str().unwrap_or_else(|| panic!("a mask path: {l}")));
            assert!(mask.starts_with(&masks), "{}", mask.display());
            assert_mask_file(&mask, Path::new(&images[i]), &probs[i]);
            let area = l["mask_area"].as_f64().unwrap();
            let want = probs[i].iter().filter(|p| **p > 0.5).count() as f64 / probs[i].len() as f64;
            assert!((area - want).abs() < 0.01, "mask_area {area} vs {want}");
        }
        let names: Vec<String> =
            std::fs::read_dir(&masks).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 2, "two masks and no temporary files: {names:?}");
        // one image per batch gives the same answers, and progress lines on stderr
        if name == "greedy" {
            let mut args =
                vec!["explain".to_string(), "--json".into(), "--checkpoint".into(), fixture("talker"), "--batch-size".into(), "1".into()];
            args.extend(settings(g));
            args.extend(images.iter().cloned());
            let out = mmtt(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let single: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            for (i, l) in single.iter().enumerate() {
                assert_generation(l, g, i, "talker, batch size 1");
                assert_eq!(l["mask"], Value::Null, "no --mask-out: no mask file");
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("1/2 images") && stderr.contains("2/2 images"), "progress per batch: {stderr}");
        }
    }
}

#[test]
fn given_regions_an_explicit_fpn_and_the_release_layout_agree_with_the_fpn() {
    let exp = expected();
    let g = generation(&exp, "talker", "greedy");
    let regions: Vec<Vec<String>> = exp["cases"]["talker"]["regions"].as_array().unwrap().iter().map(strings).collect();
    let i = regions.iter().position(|r| !r.is_empty()).expect("an image with regions");
    let img = fixture(if i == 0 { "img_a.png" } else { "img_b.png" });
    let run = |extra: &[String], checkpoint: &str| {
        let mut args = vec!["--checkpoint".to_string(), fixture(checkpoint)];
        args.extend(extra.iter().cloned());
        args.extend(settings(g));
        args.push(img.clone());
        explain(&args).remove(0)
    };
    // the same words, reversed and upper-cased: put back in label order
    let words: Vec<String> = regions[i].iter().rev().map(|w| w.to_uppercase()).collect();
    let by_regions = run(&["--regions".into(), words.join(",")], "talker");
    assert_generation(&by_regions, g, i, "--regions");
    assert_eq!(strings(&by_regions["regions"]), regions[i]);
    assert_eq!(by_regions["instruction"], exp["cases"]["talker"]["instructions"][i]);
    let by_fpn = run(&["--fpn".into(), fixture("talker/fpn")], "talker");
    assert_generation(&by_fpn, g, i, "--fpn");
    let release = run(&[], "release");
    assert_generation(&release, g, i, "the release layout");
    assert_eq!(strings(&release["regions"]), regions[i], "the release checkpoint's FPN");
}

#[test]
fn readable_output_names_the_image_text_and_regions() {
    let exp = expected();
    let g = generation(&exp, "talker", "greedy");
    let img = fixture("img_a.png");
    let mut args = vec!["explain", "--checkpoint"];
    let ck = fixture("talker");
    args.push(&ck);
    let s = settings(g);
    args.extend(s.iter().map(String::as_str));
    args.push(&img);
    let out = mmtt(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = g["texts"][0].as_str().unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with(&format!("{img}: {text}")), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loaded "), "the model is named: {stderr}");
}

#[test]
fn bad_input_is_refused_with_the_problem_and_the_fix() {
    let hf = fixture("hf");
    let img = fixture("img_a.png");
    // a missing image: named, before the model loads
    let (_, e, out) = fails(&["explain", "--checkpoint", &hf, "--instruction", "describe", "/nonexistent/face.png"]);
    assert!(e.contains("/nonexistent/face.png") && e.contains("no such file"), "{e}");
    assert!(out.is_empty());
    // a file that is not an image
    let d = tempfile::tempdir().unwrap();
    let notes = d.path().join("notes.png");
    std::fs::write(&notes, "not a picture").unwrap();
    let (_, e, _) = fails(&["explain", "--checkpoint", &hf, "--instruction", "describe", &notes.display().to_string()]);
    assert!(e.contains(&notes.display().to_string()) && e.contains("not an image") && e.contains("PNG, JPEG or WebP"), "{e}");
    // an unknown region word: named, with the 21 words
    let (_, e, _) = fails(&["explain", "--checkpoint", &fixture("talker"), "--regions", "eye,elbow", &img]);
    assert!(e.contains("`elbow` is not a region word") && e.contains("pupil") && e.contains("dimple"), "{e}");
    // conflicting prompting flags: clap's usage error (exit 2)
    for flags in [["--regions", "eye", "--instruction", "describe"], ["--fpn", &fixture("talker/fpn"), "--regions", "eye"]] {
        let mut args = vec!["explain", "--checkpoint", &hf];
        args.extend(flags);
        args.push(&img);
        let (code, e, _) = fails(&args);
        assert_eq!(code, Some(2), "{e}");
        assert!(e.contains("cannot be used with"), "{e}");
    }
    // a plain InstructBLIP without prompting: no FPN to choose the regions
    let (_, e, _) = fails(&["explain", "--checkpoint", &hf, &img]);
    assert!(e.contains("no FPN") && e.contains("--regions") && e.contains("--instruction"), "{e}");
    // a missing checkpoint folder
    let (_, e, _) = fails(&["explain", "--checkpoint", "/nonexistent/ckpt", "--instruction", "x", &img]);
    assert!(e.contains("/nonexistent/ckpt") && e.contains("no such folder"), "{e}");
    // a checkpoint folder without its weights
    let bare = d.path().join("no-weights");
    copy_dir(&fixtures().join("hf"), &bare, &|name| !name.contains(".safetensors"));
    let (_, e, out) = fails(&["explain", "--checkpoint", &bare.display().to_string(), "--instruction", "describe", &img]);
    assert!(e.contains(&bare.display().to_string()), "the error names the checkpoint: {e}");
    assert!(e.to_lowercase().contains("safetensors") || e.to_lowercase().contains("weights"), "the error names what is missing: {e}");
    assert!(out.is_empty());
    // bad generation settings
    let (_, e, _) = fails(&["explain", "--checkpoint", &hf, "--instruction", "x", "--num-beams", "0", &img]);
    assert!(e.contains("--num-beams"), "{e}");
}

fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name), keep);
        } else if keep(&name) {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Standard base64 (with padding), for `data:` URLs.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {}", c as char),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let n = chunk.iter().take(4 - pad).enumerate().fold(0u32, |n, (i, c)| n | (val(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

/// The image of a `data:image/png;base64,...` URL.
fn data_url_image(url: &str) -> image::DynamicImage {
    let b64 = url.strip_prefix("data:image/png;base64,").unwrap_or_else(|| panic!("a PNG data URL: {}", &url[..url.len().min(60)]));
    image::load_from_memory(&unbase64(b64)).expect("a PNG")
}

/// The text of the element with `id` in `html` (its first text up to the next tag), unescaped.
fn element_text(html: &str, id: &str) -> String {
    let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    unescape(&rest[open..open + close])
}

/// An attribute of the element with `id`.
fn element_attr(html: &str, id: &str, attr: &str) -> String {
    let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let tag_start = html[..start].rfind('<').unwrap();
    let tag = &html[tag_start..start + html[start..].find('>').unwrap()];
    let a = tag.find(&format!(" {attr}=\"")).unwrap_or_else(|| panic!("no {attr} in {}", &tag[..tag.len().min(80)])) + attr.len() + 3;
    unescape(&tag[a..a + tag[a..].find('"').unwrap()])
}

/// HTML entities back to characters (askama writes `&#NN;`; named ones for safety).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').map(|e| i + e).unwrap_or_else(|| panic!("an unterminated entity in {s}"));
        let ent = &rest[i + 1..end];
        let c = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ if ent.starts_with("#x") => char::from_u32(u32::from_str_radix(&ent[2..], 16).unwrap()).unwrap(),
            _ if ent.starts_with('#') => char::from_u32(ent[1..].parse().unwrap()).unwrap(),
            _ => panic!("unknown entity &{ent};"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The beam-search generation's form fields.
fn beam_fields(g: &Value) -> Vec<(&'static str, String)> {
    let n = |k: &str, d: f64| g.get(k).and_then(Value::as_f64).unwrap_or(d);
    vec![
        ("num_beams", (n("num_beams", 1.0) as usize).to_string()),
        ("max_new_tokens", (n("max_new_tokens", 20.0) as usize).to_string()),
        ("min_length", (n("min_length", 0.0) as usize).to_string()),
        ("repetition_penalty", n("repetition_penalty", 1.0).to_string()),
    ]
}

#[test]
fn the_explain_page_explains_an_upload_for_reviewers_and_admins() {
    let exp = expected();
    let g = generation(&exp, "talker", "beam");
    let probs = mask_probs();
    let env = Env::new();
    add_users(&env);
    let served = serve(&env, &["--talker", &fixture("talker")]);
    let base = served.base.clone();
    let img_a = std::fs::read(fixtures().join("img_a.png")).unwrap();
    let (aw, ah) = image::load_from_memory(&img_a).unwrap().to_rgb8().dimensions();
    common::web::rt().block_on(async {
        // who may use it
        assert_eq!(client().get(format!("{base}/explain")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let (ann, ann_csrf) = login(&base, "ann").await;
        assert_eq!(ann.get(format!("{base}/explain")).send().await.unwrap().status(), StatusCode::FORBIDDEN);
        let (ct, body) = multipart(&[("csrf", None, ann_csrf.into_bytes()), ("image", Some("img_a.png"), img_a.clone())]);
        let r = ann.post(format!("{base}/explain")).header("content-type", ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "annotators are refused");
        let (rev, csrf) = login(&base, "rev").await;
        let home = rev.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
        assert!(home.contains("href=\"/explain\""), "the home page links the explain page for reviewers");
        let page = rev.get(format!("{base}/explain")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(page.contains("Explain a face") && page.contains("loads on first use"), "{page}");
        assert!(!page.contains("id=\"not-configured\""));

        // an upload: the explanation, the regions, the instruction and the mask over the image
        let mut parts = vec![
            ("csrf", None, csrf.clone().into_bytes()),
            ("image", Some("img_a.png"), img_a.clone()),
            ("prompting", None, b"fpn".to_vec()),
        ];
        let fields = beam_fields(g);
        parts.extend(fields.iter().map(|(k, v)| (*k, None, v.clone().into_bytes())));
        let (ct, body) = multipart(&parts);
        let r = rev.post(format!("{base}/explain")).header("content-type", ct.clone()).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        assert_eq!(element_text(&html, "explanation"), g["texts"][0].as_str().unwrap(), "the page shows the model's text");
        assert_eq!(element_text(&html, "instruction"), exp["cases"]["talker"]["instructions"][0].as_str().unwrap());
        for region in strings(&exp["cases"]["talker"]["regions"][0]) {
            assert!(html.contains(&format!("<span class=\"chip\">{region}</span>")), "region {region} shown");
        }
        let shown = data_url_image(&element_attr(&html, "explained-image", "src"));
        assert_eq!(shown.dimensions(), (aw, ah), "a small upload is shown at its size");
        let over = data_url_image(&element_attr(&html, "overlay", "src")).into_rgba8();
        assert_eq!(over.dimensions(), (aw, ah), "the overlay covers the image");
        let tinted = over.pixels().filter(|p| p[3] > 0).count();
        let size = (probs[0].len() as f64).sqrt() as usize;
        let want = (0..ah)
            .flat_map(|y| (0..aw).map(move |x| (x, y)))
            .filter(|(x, y)| {
                let sx = (((*x as f64 + 0.5) * size as f64 / aw as f64).floor() as usize).min(size - 1);
                let sy = (((*y as f64 + 0.5) * size as f64 / ah as f64).floor() as usize).min(size - 1);
                probs[0][sy * size + sx] > 0.5
            })
            .count();
        assert!(
            tinted > 0 && (tinted as i64 - want as i64).abs() <= (aw * ah / 200) as i64,
            "overlay pixels {tinted} vs the fixture's mask {want}"
        );
        let model = element_text(&html, "result-model");
        assert!(!model.is_empty());

        // the same as JSON, with the binary mask at the image's size
        let r = rev
            .post(format!("{base}/explain"))
            .header("content-type", ct)
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_generation(&v, g, 0, "the page's JSON");
        assert_eq!(strings(&v["regions"]), strings(&exp["cases"]["talker"]["regions"][0]));
        assert_eq!(v["instruction"], exp["cases"]["talker"]["instructions"][0]);
        assert_eq!(v["model"], model.as_str(), "the same model named");
        assert_eq!(v["source"]["kind"], "upload");
        let mask = data_url_image(v["mask"].as_str().unwrap()).into_luma8();
        assert_eq!(mask.dimensions(), (aw, ah));
        assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
        let d = tempfile::tempdir().unwrap();
        mask.save(d.path().join("m.png")).unwrap();
        assert_mask_file(&d.path().join("m.png"), &fixtures().join("img_a.png"), &probs[0]);

        // once loaded, the page names the model; admins use it too, from their console's nav
        let page = rev.get(format!("{base}/explain")).send().await.unwrap().text().await.unwrap();
        assert_eq!(element_text(&page, "model"), model);
        let (adm, adm_csrf) = login(&base, "adm").await;
        let page = adm.get(format!("{base}/explain")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(
            page.contains("<a href=\"/explain\">Explain</a>") && page.contains("<a href=\"/admin/jobs\">Jobs</a>"),
            "the console's nav"
        );
        let console = adm.get(format!("{base}/admin/jobs")).send().await.unwrap().text().await.unwrap();
        assert!(console.contains("<a href=\"/explain\">Explain</a>"), "the console links the explain page");
        let v: Value = adm.get(format!("{base}/explain")).header("accept", "application/json").send().await.unwrap().json().await.unwrap();
        assert_eq!(v["configured"], true);
        assert_eq!(v["model"]["describe"], model.as_str());
        assert_eq!(v["regions"].as_array().unwrap().len(), 21);

        // refusals: a non-image, nothing to explain, an unknown region, a stale form
        let post = |c: &reqwest::Client, parts: Vec<common::admin::Part<'static>>| {
            let (ct, body) = multipart(&parts);
            c.post(format!("{base}/explain")).header("content-type", ct).body(body).send()
        };
        let r = post(&adm, vec![("csrf", None, adm_csrf.clone().into_bytes()), ("image", Some("notes.png"), b"just some text".to_vec())])
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let t = r.text().await.unwrap();
        assert!(t.contains("not an image") && t.contains("id=\"form-error\""), "{t}");
        let r = post(&adm, vec![("csrf", None, adm_csrf.clone().into_bytes())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("upload a face image"));
        let r = post(
            &adm,
            vec![
                ("csrf", None, adm_csrf.clone().into_bytes()),
                ("image", Some("img_a.png"), img_a.clone()),
                ("prompting", None, b"regions".to_vec()),
                ("region", None, b"elbow".to_vec()),
            ],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("`elbow` is not a region word"));
        let r = post(&adm, vec![("csrf", None, b"stale".to_vec()), ("image", Some("img_a.png"), img_a.clone())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // given regions through JSON with a bad generation setting: the field is named
        let (ct, body) = multipart(&[
            ("csrf", None, adm_csrf.clone().into_bytes()),
            ("image", Some("img_a.png"), img_a.clone()),
            ("num_beams", None, b"99".to_vec()),
        ]);
        let v: Value = adm
            .post(format!("{base}/explain"))
            .header("content-type", ct)
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["field"], "num_beams", "{v}");
    });
}

#[test]
fn the_explain_page_explains_a_stored_forgery_as_the_command_line_does() {
    let env = world();
    add_users(&env);
    let served = serve(&env, &["--talker", &fixture("talker")]);
    let base = served.base.clone();
    let (id, hash): (uuid::Uuid, String) = env.db.query(async |p| {
        sqlx::query_as("SELECT id, image_hash FROM forgeries ORDER BY created_at DESC, id LIMIT 1").fetch_one(p).await.unwrap()
    });
    let forged = env.blob_path(&hash);
    let (w, h) = image::image_dimensions(&forged).unwrap();
    common::web::rt().block_on(async {
        let (rev, csrf) = login(&base, "rev").await;
        let page = rev.get(format!("{base}/explain")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(&format!("<option value=\"{id}\"")), "the recent forgeries are offered");
        let id_s = id.to_string();
        let form = [
            ("csrf", csrf.as_str()),
            ("forgery", id_s.as_str()),
            ("num_beams", "1"),
            ("max_new_tokens", "8"),
            ("min_length", "0"),
            ("repetition_penalty", "1.0"),
        ];
        // the page: the stored image (served by /images) under the overlay
        let html = rev.post(format!("{base}/explain")).form(&form).send().await.unwrap();
        assert_eq!(html.status(), StatusCode::OK);
        let html = html.text().await.unwrap();
        assert_eq!(element_attr(&html, "explained-image", "src"), format!("/images/{id}/forged"));
        let over = data_url_image(&element_attr(&html, "overlay", "src"));
        let s = 768.0 / w.max(h) as f64;
        let want = if w.max(h) > 768 { ((w as f64 * s).round() as u32, (h as f64 * s).round() as u32) } else { (w, h) };
        assert_eq!((over.width(), over.height()), want, "the overlay at the shown size");
        let img = rev.get(format!("{base}/images/{id}/forged")).send().await.unwrap();
        assert_eq!(img.status(), StatusCode::OK, "reviewers may load the stored image");
        // JSON: the same words as `mmtt explain` on the stored file, with the same settings
        let v: Value = rev
            .post(format!("{base}/explain"))
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["source"]["kind"], "forgery");
        assert_eq!(v["source"]["forgery"], id.to_string());
        assert_eq!((v["source"]["width"].as_u64(), v["source"]["height"].as_u64()), (Some(w as u64), Some(h as u64)));
        let mask = data_url_image(v["mask"].as_str().unwrap());
        assert_eq!(mask.dimensions(), (w, h), "the mask at the forgery's size");
        let cli = explain(&[
            "--checkpoint".into(),
            fixture("talker"),
            "--num-beams".into(),
            "1".into(),
            "--max-new-tokens".into(),
            "8".into(),
            "--min-length".into(),
            "0".into(),
            "--repetition-penalty".into(),
            "1.0".into(),
            forged.display().to_string(),
        ]);
        assert_eq!(v["token_ids"], cli[0]["token_ids"]);
        assert_eq!(v["text"], cli[0]["text"]);
        assert_eq!(v["regions"], cli[0]["regions"]);
        // an unknown forgery id
        let unknown = uuid::Uuid::new_v4().to_string();
        let r =
            rev.post(format!("{base}/explain")).form(&[("csrf", csrf.as_str()), ("forgery_id", unknown.as_str())]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("no forgery has the id"));
    });
}

#[test]
fn without_a_model_the_page_says_how_to_configure_one() {
    let env = Env::new();
    add_users(&env);
    let served = serve(&env, &[]);
    let base = served.base.clone();
    common::web::rt().block_on(async {
        let (rev, csrf) = login(&base, "rev").await;
        let page = rev.get(format!("{base}/explain")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(
            page.contains("id=\"not-configured\"") && page.contains("mmtt serve --talker DIR") && page.contains("MMTT_TALKER"),
            "{page}"
        );
        let mut img = Vec::new();
        image::RgbImage::from_pixel(32, 32, image::Rgb([200, 150, 120]))
            .write_to(&mut std::io::Cursor::new(&mut img), image::ImageFormat::Png)
            .unwrap();
        let (ct, body) = multipart(&[("csrf", None, csrf.into_bytes()), ("image", Some("face.png"), img)]);
        let r = rev
            .post(format!("{base}/explain"))
            .header("content-type", ct)
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("mmtt serve --talker"), "{v}");
    });
    // a --talker folder that does not exist stops the server at once
    let out = env.mmtt(&["serve", "--bind", "127.0.0.1:0", "--talker", "/nonexistent/talker"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--talker /nonexistent/talker: no such folder"));
}

#[test]
fn bench_talker_prints_its_figures() {
    let out = mmtt(&[
        "bench",
        "talker",
        "--preset",
        "tiny",
        "--batch",
        "2",
        "--rounds",
        "1",
        "--num-beams",
        "2",
        "--max-new-tokens",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["preset"], "tiny");
    assert_eq!(v["batch"], 2);
    assert_eq!(v["num_beams"], 2);
    assert_eq!(v["images"], 2, "batch x rounds images");
    let tokens = v["new_tokens"].as_u64().unwrap();
    assert!((1..=8).contains(&tokens), "at most 4 new tokens for each of 2 images: {tokens}");
    assert!(v["params"].as_u64().unwrap() > 1000);
    for k in ["forward_s", "generate_s", "tokens_per_s", "images_per_s"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    // the table
    let out = mmtt(&["bench", "talker", "--batch", "1", "--rounds", "1", "--max-new-tokens", "3", "--num-beams", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = String::from_utf8_lossy(&out.stdout);
    for row in ["parameters", "tokens/s", "images/s", "forward pass (s)", "generation (s)"] {
        assert!(t.contains(row), "{row} in {t}");
    }
    let (_, e, _) = fails(&["bench", "talker", "--preset", "huge"]);
    assert!(e.contains("huge") && e.contains("tiny"), "{e}");
}
