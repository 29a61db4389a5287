//! `mmtt eval`: parity with the real pycocoevalcap 1.2 (Java PTBTokenizer, Bleu(4), Rouge, Cider,
//! Meteor 1.5) over thousands of generated forgery explanations with edge cases, Meteor's
//! normalizer and stemmer against the jar's own classes, mask and label metrics against
//! independent computations, and clear errors on bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::python;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/captions_reference.py")
}

fn mmtt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmtt")).args(args).output().expect("run mmtt")
}

fn reference(refs: &Path, preds: &Path) -> serde_json::Value {
    let out = Command::new(python()).arg(script()).arg("score").arg(refs).arg(preds).output().expect("python");
    assert!(out.status.success(), "pycocoevalcap: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

fn ours(refs: &Path, preds: &Path) -> serde_json::Value {
    let out = mmtt(&["eval", "captions", "--refs", refs.to_str().unwrap(), "--preds", preds.to_str().unwrap()]);
    assert!(out.status.success(), "mmtt eval captions: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("our JSON")
}

fn meteor_dir() -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib/python3.11/site-packages/pycocoevalcap/meteor");
    assert!(d.join("meteor-1.5.jar").is_file(), "run scripts/setup.sh first: pycocoevalcap ships Meteor's data");
    d
}

fn compare(want: &serde_json::Value, got: &serde_json::Value) {
    for k in ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"] {
        let (w, g) = (want[k].as_f64().unwrap(), got[k].as_f64().unwrap());
        assert!((w - g).abs() < 1e-6, "{k}: pycocoevalcap {w}, mmtt {g}");
    }
}

#[test]
fn captions_equal_pycocoevalcap_on_thousands_of_generated_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python()).arg(script()).args(["gen", "3000", "11"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (refs, preds) = (dir.path().join("refs.json"), dir.path().join("preds.json"));
    let want = reference(&refs, &preds);
    // the tokenizer first, caption by caption: the first differences are the useful message
    let tok = &want["tokenized"];
    let mut bad = Vec::new();
    let r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&refs).unwrap()).unwrap();
    let p: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&preds).unwrap()).unwrap();
    let mut n = 0;
    for (id, list) in &r {
        for (i, c) in list.as_array().unwrap().iter().enumerate() {
            n += 1;
            let mine = mmtt_model::eval::tokenize::tokenize(c.as_str().unwrap());
            let theirs = tok["refs"][id][i].as_str().unwrap();
            if mine != theirs {
                bad.push(format!("{c}\n  java: {theirs}\n  mmtt: {mine}"));
            }
        }
        n += 1;
        let mine = mmtt_model::eval::tokenize::tokenize(p[id].as_str().unwrap());
        let theirs = tok["preds"][id].as_str().unwrap();
        if mine != theirs {
            bad.push(format!("{}\n  java: {theirs}\n  mmtt: {mine}", p[id]));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {n} captions tokenize differently, e.g.\n{}",
        bad.len(),
        bad.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
    compare(&want, &ours(&refs, &preds));
    // METEOR segment by segment (each against its best reference), from the same tokenized text
    let per = want["meteor_per_image"].as_object().unwrap();
    let ids: Vec<&String> = per.keys().collect();
    let items: Vec<(String, Vec<String>)> = ids
        .iter()
        .map(|id| {
            (
                tok["preds"][id.as_str()].as_str().unwrap().to_string(),
                tok["refs"][id.as_str()].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();
    let data = mmtt_model::eval::meteor::MeteorData::at(&meteor_dir()).unwrap();
    let (corpus, mine) = mmtt_model::eval::meteor::score(&data, &items).unwrap();
    assert!((corpus - want["METEOR"].as_f64().unwrap()).abs() < 1e-9);
    let off: Vec<String> = ids
        .iter()
        .zip(&mine)
        .filter(|(id, m)| (per[id.as_str()].as_f64().unwrap() - **m).abs() > 1e-9)
        .map(|(id, m)| {
            format!("{id}: java {} mmtt {m}\n  hyp: {}\n  refs: {}", per[id.as_str()], tok["preds"][id.as_str()], tok["refs"][id.as_str()])
        })
        .collect();
    assert!(
        off.is_empty(),
        "{} of {} METEOR segment scores differ, e.g.\n{}",
        off.len(),
        ids.len(),
        off.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    // the generator exercises every module: some segments score between exact-only and 1
    assert!(mine.iter().filter(|&&m| m > 0.0 && m < 1.0).count() > ids.len() / 4);
}

/// Meteor's `-norm` normalizer against `edu.cmu.meteor.util.Normalizer` itself, on raw captions
/// (more punctuation than pycocoevalcap ever hands it) and on their tokenization (what it gets),
/// Unicode included, and the stem module's stemmer against the
/// jar's Snowball stemmer on every word of Meteor's WordNet vocabulary.
#[test]
fn meteor_normalizer_and_stemmer_equal_the_jar() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python()).arg(script()).args(["gen", "400", "5"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("refs.json")).unwrap()).unwrap();
    let mut lines: Vec<String> = r.values().flatten().cloned().collect();
    lines.extend(
        [
            "U.S. style, e.g. the No. 5 and No. x -- Mr. Smith's 3.5mm 'chin'... ok?!",
            "a\u{a0}b \u{201c}c\u{201d} d\u{2013}e f--g 1,000 a,b 1,b a,1",
            "it's 90's ''quoted'' `tick' Dr. x. Y.",
        ]
        .map(String::from),
    );
    // Unicode as captions have it (the generator's typographic punctuation, other scripts, emoji,
    // combining marks, bars), raw and as the tokenizer hands it to Meteor
    lines.extend(
        [
            "“Quoted” ‘single’ — dash – en … ellipsis don’t ’90s «guillemets» „low“",
            "Ærø straße İstanbul ΣΣ лицо 脸部 얼굴 وجه चेहरा e\u{301} 😀 👍🏽 ❤\u{fe0f} a\u{a0}b ||| | ¿qué? € ½ ™",
        ]
        .map(String::from),
    );
    let tokenized: Vec<String> = lines.iter().map(|l| mmtt_model::eval::tokenize::tokenize(l)).collect();
    lines.extend(tokenized);
    let lines: Vec<String> = lines.into_iter().map(|l| l.replace(['\n', '\r'], " ")).collect();
    let jar = meteor_dir().join("meteor-1.5.jar");
    let run = |class_or_file: &str, input: String| -> Vec<String> {
        use std::io::Write;
        let mut c = Command::new("java");
        c.arg("-cp").arg(&jar);
        if class_or_file.ends_with(".java") {
            c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(class_or_file));
        } else {
            c.args([class_or_file, "en", "true"]);
        }
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("java (scripts/setup.sh installs it)");
        let mut stdin = child.stdin.take().unwrap();
        let t = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let out = child.wait_with_output().unwrap();
        t.join().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
    };
    let data = mmtt_model::eval::meteor::MeteorData::at(&meteor_dir()).unwrap();
    let norm = data.normalizer().unwrap();
    let java = run("edu.cmu.meteor.util.Normalizer", lines.join("\n") + "\n");
    assert_eq!(java.len(), lines.len());
    for (l, j) in lines.iter().zip(&java) {
        assert_eq!(&norm.normalize(l), j, "normalizing {l:?}");
    }
    // the stemmer over the synonym vocabulary (147,306 words)
    let out = Command::new(python())
        .args(["-c", "import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read('synonym/english.synsets').decode())"])
        .arg(&jar)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = text.lines().step_by(2).collect();
    assert!(words.len() > 100_000);
    let java = run("scripts/MeteorStem.java", words.join("\n") + "\n");
    let bad: Vec<String> = words
        .iter()
        .zip(&java)
        .filter(|(w, j)| mmtt_model::eval::meteor::stem(w) != **j)
        .map(|(w, j)| format!("{w}: java {j}, mmtt {}", mmtt_model::eval::meteor::stem(w)))
        .collect();
    assert_eq!(java.len(), words.len());
    assert!(bad.is_empty(), "{} stems differ: {:?}", bad.len(), &bad[..bad.len().min(10)]);
}

#[test]
fn meteor_without_its_data_is_an_error_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = (dir.path().join("r.json"), dir.path().join("p.json"));
    std::fs::write(&r, r#"{"a": ["the left eye is blurred"]}"#).unwrap();
    std::fs::write(&p, r#"{"a": "the left eye looks blurry"}"#).unwrap();
    let args = ["eval", "captions", "--refs", r.to_str().unwrap(), "--preds", p.to_str().unwrap()];
    // found: a real value (stem and synonym matches count)
    let v: serde_json::Value = serde_json::from_slice(&mmtt(&args).stdout).unwrap();
    let m = v["METEOR"].as_f64().expect("METEOR computed with pycocoevalcap installed");
    assert!(m > 0.3 && m < 1.0, "{m}");
    // not found (an empty MMTT_METEOR_DATA: look nowhere) while all metrics are asked for: an
    // error saying how to install it or skip METEOR, never a silent null
    let out = Command::new(env!("CARGO_BIN_EXE_mmtt")).args(args).env("MMTT_METEOR_DATA", "").output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["MMTT_METEOR_DATA is set and empty", "pycocoevalcap==1.2", "scripts/setup.sh", "--meteor-data", "--metrics ngram"] {
        assert!(err.contains(want), "{want} not in: {err}");
    }
    // ... and the same for the Table 2 report
    let out = Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .args(["eval", "report", "--gt", "x", "--pred", "y", "--gt-mask-base", "x", "--pred-mask-base", "y"])
        .env("MMTT_METEOR_DATA", "")
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--metrics ngram"));
    // a search that finds nothing lists the places it looked
    let empty = tempfile::tempdir().unwrap();
    let exe = empty.path().join("mmtt");
    std::fs::copy(env!("CARGO_BIN_EXE_mmtt"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(args)
        .env_remove("MMTT_METEOR_DATA")
        .env_remove("VIRTUAL_ENV")
        .env("HOME", empty.path())
        .current_dir(empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let system_wide = ["/usr/lib", "/usr/local/lib"].iter().any(|r| {
        std::fs::read_dir(r)
            .into_iter()
            .flatten()
            .flatten()
            .any(|py| ["site-packages", "dist-packages"].iter().any(|sp| py.path().join(sp).join("pycocoevalcap/meteor").is_dir()))
    });
    if !system_wide {
        assert!(!out.status.success(), "found Meteor's data outside the test's folders: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains(&format!("{}/.venv/lib/python*", empty.path().display())) && err.contains("/usr/lib/python*"), "{err}");
    }
    // --metrics ngram skips METEOR (null) and needs no data
    let out =
        Command::new(env!("CARGO_BIN_EXE_mmtt")).args(args).args(["--metrics", "ngram"]).env("MMTT_METEOR_DATA", "").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["METEOR"].is_null() && v["BLEU-1"].as_f64().is_some());
    // a folder without the data: refused, naming the missing file and the fix
    let out = Command::new(env!("CARGO_BIN_EXE_mmtt")).args(args).args(["--meteor-data", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meteor-1.5.jar is missing") && err.contains("--meteor-data"), "{err}");
    // --metrics meteor prints METEOR alone, the same value
    let mut a = args.to_vec();
    a.extend(["--metrics", "meteor"]);
    let v: serde_json::Value = serde_json::from_slice(&mmtt(&a).stdout).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert_eq!(v["METEOR"].as_f64(), Some(m));
}

/// The shared sample of reference values (CI: `MMTT_FACES_DIR=../shared/faces`, so
/// `../shared/metrics-samples` beside it).
#[test]
fn the_shared_reference_sample_matches() {
    let Ok(faces) = std::env::var("MMTT_FACES_DIR") else {
        eprintln!("MMTT_FACES_DIR unset: the shared metrics sample is checked in CI");
        return;
    };
    let dir = Path::new(&faces).parent().unwrap().join("metrics-samples/captions_small");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let got = ours(&dir.join("refs.json"), &dir.join("preds.json"));
    compare(&want, &got);
    let tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected_tokenized.json")).unwrap()).unwrap();
    let refs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    for (id, list) in refs.as_object().unwrap() {
        for (i, c) in list.as_array().unwrap().iter().enumerate() {
            assert_eq!(mmtt_model::eval::tokenize::tokenize(c.as_str().unwrap()), tok["refs"][id][i].as_str().unwrap(), "{c}");
        }
    }
}

#[test]
fn caption_input_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = (dir.path().join("r.json"), dir.path().join("p.json"));
    std::fs::write(&r, r#"{"a": ["the eye"], "b": ["the nose"]}"#).unwrap();
    std::fs::write(&p, r#"{"a": "the eye", "c": "the mouth"}"#).unwrap();
    let out = mmtt(&["eval", "captions", "--refs", r.to_str().unwrap(), "--preds", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only in the references [b]") && err.contains("only in the predictions [c]"), "{err}");
}

/// Writes a PNG mask.
fn png(path: &Path, img: image::DynamicImage) {
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

#[test]
fn mask_metrics_follow_the_reference_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let mut s = 7u64;
    let mut rnd = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    for i in 0..24 {
        let (w, h) = (40 + rnd() % 30, 30 + rnd() % 30);
        let (cx, cy, r) = (rnd() % w, rnd() % h, 5 + rnd() % 15);
        let g = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2) < (r * r) as i64 { 255 } else { 0 }])
        });
        png(&gt.join(format!("m{i:02}.png")), image::DynamicImage::ImageLuma8(g));
        // predictions: other sizes (nearest resize), RGB with colours around the threshold, empty ones
        let (pw, ph) = if i % 3 == 0 { (w * 2 + 1, h + 3) } else { (w, h) };
        let (qx, qy) = (cx * pw / w + rnd() % 5, cy * ph / h);
        let p = image::RgbImage::from_fn(pw, ph, |x, y| {
            let inside = (x as i64 - qx as i64).pow(2) + (y as i64 - qy as i64).pow(2) < ((r * pw / w) * (r * pw / w)) as i64;
            if i % 8 == 5 || !inside {
                image::Rgb([0, 0, 0])
            } else if i % 2 == 0 {
                image::Rgb([200, 160, 50])
            } else {
                image::Rgb([120, 130, 140])
            }
        });
        png(&pred.join(format!("m{i:02}.png")), image::DynamicImage::ImageRgb8(p));
    }
    // the reference rules, in Pillow (spec section 10)
    let code = r#"
import os, sys, json
import numpy as np
from PIL import Image
gt, pr = sys.argv[1], sys.argv[2]
ious, ps, rs, I, U = [], [], [], 0, 0
for n in sorted(os.listdir(gt)):
    g = np.array(Image.open(os.path.join(gt, n)).convert('L')) > 127
    pi = Image.open(os.path.join(pr, n)).convert('L').resize((g.shape[1], g.shape[0]), Image.NEAREST)
    p = np.array(pi) > 127
    i, u = (g & p).sum(), (g | p).sum()
    I += i; U += u
    ious.append(1.0 if u == 0 else i / u)
    ps.append((1.0 if g.sum() == 0 else 0.0) if p.sum() == 0 else i / p.sum())
    rs.append((1.0 if p.sum() == 0 else 0.0) if g.sum() == 0 else i / g.sum())
print(json.dumps({"mIoU": float(np.mean(ious)), "cIoU": float(I / U), "precision": float(np.mean(ps)), "recall": float(np.mean(rs)), "n": len(ious)}))
"#;
    let out = Command::new(python()).arg("-c").arg(code).arg(&gt).arg(&pred).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = mmtt(&["eval", "masks", "--gt", gt.to_str().unwrap(), "--pred", pred.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mIoU", "cIoU", "precision", "recall"] {
        assert!((want[k].as_f64().unwrap() - got[k].as_f64().unwrap()).abs() < 1e-12, "{k}: Pillow {} mmtt {}", want[k], got[k]);
    }
    assert_eq!(got["n"], 24);
    // a 0/1-encoded mask is refused with the file and the fix; missing counterparts are listed
    png(&pred.join("m03.png"), image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(10, 10, |x, _| image::Luma([(x % 2) as u8]))));
    let out = mmtt(&["eval", "masks", "--gt", gt.to_str().unwrap(), "--pred", pred.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("m03.png") && err.contains("--threshold 0"), "{err}");
    std::fs::remove_file(pred.join("m07.png")).unwrap();
    std::fs::write(pred.join("extra.png"), b"").unwrap();
    let out = mmtt(&["eval", "masks", "--gt", gt.to_str().unwrap(), "--pred", pred.to_str().unwrap(), "--threshold", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("m07.png") && err.contains("extra.png"), "{err}");
}

#[test]
fn label_metrics_and_the_region_extractor() {
    let dir = tempfile::tempdir().unwrap();
    let (g, p) = (dir.path().join("g.json"), dir.path().join("p.json"));
    std::fs::write(&g, r#"{"a": ["eye", "nose"], "b": ["lip"], "c": []}"#).unwrap();
    let mut v = vec![0u8; 21];
    v[0] = 1; // eye
    v[2] = 1; // lip
    std::fs::write(&p, serde_json::json!({"a": ["eye"], "b": v, "c": []}).to_string()).unwrap();
    let out = mmtt(&["eval", "labels", "--gt", g.to_str().unwrap(), "--pred", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // a: 1/2, b: 1/2 (eye is extra), c: empty = 1 -> PLM 2/3
    assert!((s["PLM"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12, "{s}");
    // micro: tp 2 (eye in a, lip in b), fp 1 (eye in b), fn 1 (nose in a)
    assert!((s["micro_avg"]["precision"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s["micro_avg"]["recall"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s["per_label"]["eye"]["precision"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    assert_eq!(s["per_label"]["nose"]["recall"], 0.0);
    // the extractor: whole words, case-insensitive, "brow" not inside "eyebrow"
    let out = mmtt(&["regions", "The EYEBROW and the nostrils; facial hair near the brow."]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"["nose","forehead","eyebrow","beard","hair"]"#);
}

#[test]
fn report_prints_a_table2_row_for_a_prediction_set_made_here() {
    let env = common::Env::new();
    env.ok(&["seed-synthetic", "--samples", "30", "--seed", "12", "--state", "accepted"]);
    let rel = env.data.path().join("release");
    env.ok(&["export", "--format", "mmtt", "--out", rel.to_str().unwrap()]);
    // the ground truth: every split's records in one file, as the authors' evaluator takes it
    let mut gt: Vec<serde_json::Value> = Vec::new();
    for f in ["train.json", "val.json", "test.json"] {
        if let Ok(t) = std::fs::read_to_string(rel.join(f)) {
            gt.extend(serde_json::from_str::<Vec<serde_json::Value>>(&t).unwrap());
        }
    }
    assert_eq!(gt.len(), 30);
    let gt_path = env.data.path().join("MMTT.json");
    std::fs::write(&gt_path, serde_json::to_string(&gt).unwrap()).unwrap();
    // predictions: captions with a word changed, masks shifted by a few pixels
    let pred_dir = env.data.path().join("pred");
    std::fs::create_dir_all(pred_dir.join("masks")).unwrap();
    let (mut lines, mut refs, mut preds) = (String::new(), serde_json::Map::new(), serde_json::Map::new());
    let (cmp_gt, cmp_pred) = (env.data.path().join("cmp-gt"), env.data.path().join("cmp-pred"));
    std::fs::create_dir_all(&cmp_gt).unwrap();
    std::fs::create_dir_all(&cmp_pred).unwrap();
    for (i, r) in gt.iter().enumerate() {
        let id = r["image_id"].as_str().unwrap();
        let caption = r["caption"].as_str().unwrap().replacen("the", if i % 2 == 0 { "a" } else { "the" }, 1);
        let m = image::open(rel.join(r["mask_path"].as_str().unwrap())).unwrap().to_luma8();
        let shifted = image::GrayImage::from_fn(m.width(), m.height(), |x, y| *m.get_pixel(x.saturating_sub(3 + i as u32 % 5), y));
        let name = format!("masks/{id}.png");
        shifted.save(pred_dir.join(&name)).unwrap();
        std::fs::copy(rel.join(r["mask_path"].as_str().unwrap()), cmp_gt.join(format!("{id}.png"))).unwrap();
        shifted.save(cmp_pred.join(format!("{id}.png"))).unwrap();
        lines += &serde_json::json!({"image_id": id, "caption": caption, "mask_path": name}).to_string();
        lines.push('\n');
        refs.insert(id.to_string(), serde_json::json!([r["caption"]]));
        preds.insert(id.to_string(), serde_json::json!(caption));
    }
    let pred_path = env.data.path().join("PRED.jsonl");
    std::fs::write(&pred_path, lines).unwrap();
    let out = mmtt(&[
        "eval",
        "report",
        "--gt",
        gt_path.to_str().unwrap(),
        "--pred",
        pred_path.to_str().unwrap(),
        "--gt-mask-base",
        rel.to_str().unwrap(),
        "--pred-mask-base",
        pred_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(table.contains("| method | CIDEr | B-1 | B-2 | B-3 | B-4 | ROUGE-L | IoU | Prec. | Rec. |"), "{table}");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // the same numbers as the separate evaluators on the same inputs
    let (rf, pf) = (env.data.path().join("refs.json"), env.data.path().join("preds.json"));
    std::fs::write(&rf, serde_json::Value::Object(refs).to_string()).unwrap();
    std::fs::write(&pf, serde_json::Value::Object(preds).to_string()).unwrap();
    let caps = ours(&rf, &pf);
    let masks: serde_json::Value =
        serde_json::from_slice(&mmtt(&["eval", "masks", "--gt", cmp_gt.to_str().unwrap(), "--pred", cmp_pred.to_str().unwrap()]).stdout)
            .unwrap();
    let row = &rep["table2_row"];
    assert!((row["CIDEr"].as_f64().unwrap() - 100.0 * caps["CIDEr"].as_f64().unwrap()).abs() < 1e-9);
    assert!((row["B-4"].as_f64().unwrap() - 100.0 * caps["BLEU-4"].as_f64().unwrap()).abs() < 1e-9);
    assert!((row["IoU"].as_f64().unwrap() - 100.0 * masks["mIoU"].as_f64().unwrap()).abs() < 1e-9);
    assert!((row["Rec."].as_f64().unwrap() - 100.0 * masks["recall"].as_f64().unwrap()).abs() < 1e-9);
    let iou = row["IoU"].as_f64().unwrap();
    assert!(iou > 50.0 && iou < 100.0, "shifted masks overlap partly: {iou}");
    let b1 = row["B-1"].as_f64().unwrap();
    assert!(b1 > 80.0 && b1 < 100.0, "one word changed in half the captions: {b1}");
    eprintln!("{table}");
}
