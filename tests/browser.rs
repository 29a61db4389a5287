//! The three roles in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against the real app on a fresh database. An annotator is refused
//! an early submission, waits out a short `--min-seconds`, writes, submits; a reviewer removes a
//! flagged false-positive region and accepts; the admin sees the counts change. A reviewer uploads
//! a face on the explain page (the tiny ForgeryTalker fixture) and sees the mask over it and the
//! text `transformers` generates. A screenshot of every page goes to `target/tmp/screenshots/`.

mod common;

use common::browser::{CHROMIUM, Driver};
use common::web::{PASSWORD, spawn_app, world};
use fantoccini::{Client, ClientBuilder, Locator};
use mmtt::web::WebConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fresh headless Chromium session with its own profile.
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1366,900",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::native().capabilities(caps).connect(&driver.url).await.expect("a chromium session")
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot {}", path.display());
}

async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Polls `script` until it returns true.
async fn wait_for(c: &Client, script: &str, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if js(c, script).await == serde_json::Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sign_in(c: &Client, base: &str, name: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(name).await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    c.find(Locator::Css("form button")).await.unwrap().click().await.unwrap();
    wait_for(c, "return !location.pathname.startsWith('/login')", "the home page", 10).await;
}

async fn dashboard_count(c: &Client, base: &str, key: &str) -> i64 {
    c.goto(&format!("{base}/admin")).await.unwrap();
    let t = c.find(Locator::Css(&format!("#total [data-k={key}]"))).await.unwrap().text().await.unwrap();
    t.trim().parse().unwrap()
}

/// Region labels with a sentence naming each (one label per sentence).
const SENTENCES: [(&str, &str); 7] = [
    ("nose", "The nose is smeared and too smooth."),
    ("eye", "The eye is blurred."),
    ("mouth", "The mouth corners are warped."),
    ("eyebrow", "The eyebrow is patchy."),
    ("skin", "The skin looks waxy."),
    ("hair", "The hair has a hard seam."),
    ("ear", "The ear looks pasted on."),
];

#[test]
fn three_roles_do_their_job_in_a_real_browser() {
    let env = world();
    let profiles = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    common::web::rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 4.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let base = app.base.clone();

        // the admin first: nothing is annotated yet
        let admin = browser(&driver, &profiles.path().join("admin")).await;
        sign_in(&admin, &base, "adm").await;
        assert_eq!(dashboard_count(&admin, &base, "in_review").await, 0);
        assert_eq!(dashboard_count(&admin, &base, "accepted").await, 0);

        // the annotator
        let ann = browser(&driver, &profiles.path().join("ann")).await;
        ann.goto(&format!("{base}/login")).await.unwrap();
        shot(&ann, "01-login").await;
        sign_in(&ann, &base, "ann").await;
        shot(&ann, "02-home").await;
        ann.find(Locator::LinkText("Next task")).await.unwrap().click().await.unwrap();
        wait_for(&ann, "return /^\\/annotate\\/[0-9a-f-]{36}$/.test(location.pathname)", "the task page", 10).await;
        let task_url = ann.current_url().await.unwrap().to_string();
        let task: uuid::Uuid = task_url.rsplit('/').next().unwrap().parse().unwrap();
        // one region the mask covers and one it does not (a false positive to flag)
        let manipulated = mmtt::dataset::annotation::manipulated_parts(&app.state.pool, app.state.store.as_ref(), task).await.unwrap();
        let covered = |l: &str| mmtt::dataset::annotation::label_parts(l).iter().any(|p| manipulated.iter().any(|m| m == p));
        let (true_label, true_sentence) = *SENTENCES.iter().find(|(l, _)| covered(l)).expect("the mask covers a named region");
        let (fp_label, fp_sentence) = *SENTENCES.iter().rev().find(|(l, _)| !covered(l)).unwrap_or_else(|| panic!("the mask covers every region: {manipulated:?}"));
        // with the shortcut keys (F, +, -, 0) inside: typing them must not trigger shortcuts
        let text = format!("{true_sentence} {fp_sentence} Off by 0-1 px, +/- f.");
        // synchronized zoom: one click zooms both images by the same transform
        ann.find(Locator::Id("zoom-in")).await.unwrap().click().await.unwrap();
        let same = js(&ann, "var s = document.querySelectorAll('.stage'); return [s[0].style.transform, s[1].style.transform];").await;
        assert_eq!(same[0], same[1]);
        assert!(same[0].as_str().unwrap().contains("scale(1.5)"), "{same}");
        // typing: the word count and the chips follow; shortcuts do not fire inside the text box
        let area = ann.find(Locator::Id("text")).await.unwrap();
        area.send_keys(&text).await.unwrap();
        assert_eq!(js(&ann, "return document.querySelectorAll('.stage')[0].style.transform").await, same[0], "typing 0/+/- in the text box must not zoom");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(js(&ann, "return document.getElementById('mask').style.opacity").await, "0.35", "typing f must not start the flicker");
        let words = mmtt::dataset::annotation::word_count(&text);
        wait_for(&ann, &format!("return document.getElementById('words').textContent === '{words}'"), "the live word count", 5).await;
        wait_for(&ann, &format!("return document.querySelector('#chips input[value={true_label}]').checked && document.querySelector('#chips input[value={fp_label}]').checked"), "chips suggested from the text", 10).await;
        wait_for(&ann, "return document.getElementById('saved').textContent === 'draft saved'", "the draft save", 10).await;
        shot(&ann, "03-annotate").await;
        // too early: refused by the server with the time still needed; the text is kept
        ann.find(Locator::Id("submit")).await.unwrap().click().await.unwrap();
        let refusal = ann.wait().for_element(Locator::Id("refusal")).await.unwrap().text().await.unwrap();
        assert!(refusal.contains("more seconds of active time are needed"), "{refusal}");
        assert_eq!(ann.find(Locator::Id("text")).await.unwrap().prop("value").await.unwrap().as_deref(), Some(text.as_str()));
        shot(&ann, "04-annotate-refused").await;
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotations").fetch_one(&app.pool).await.unwrap(), 0);
        // the draft survives a reload
        ann.goto(&task_url).await.unwrap();
        assert_eq!(ann.find(Locator::Id("text")).await.unwrap().prop("value").await.unwrap().as_deref(), Some(text.as_str()));
        // wait out --min-seconds on the server's clock (heartbeats while the page is visible and in use)
        wait_for(&ann, "document.dispatchEvent(new Event('mousemove')); return document.getElementById('timer').classList.contains('done')", "the active-time minimum", 30).await;
        ann.find(Locator::Id("submit")).await.unwrap().click().await.unwrap();
        wait_for(&ann, &format!("return location.pathname !== '/annotate/{task}'"), "the next page after submitting", 10).await;
        shot(&ann, "05-after-submit").await;
        let (stored, regions, fp): (String, Vec<String>, Vec<String>) =
            sqlx::query_as("SELECT text, regions, fp_labels FROM annotations WHERE forgery_id = $1").bind(task).fetch_one(&app.pool).await.unwrap();
        assert_eq!(stored, text);
        assert!(regions.contains(&fp_label.to_string()) && regions.contains(&true_label.to_string()), "{regions:?}");
        assert!(fp.contains(&fp_label.to_string()), "{fp_label} lies outside the mask: {fp:?}");
        let active: f64 = sqlx::query_scalar("SELECT active_seconds FROM annotations WHERE forgery_id = $1").bind(task).fetch_one(&app.pool).await.unwrap();
        assert!(active >= 4.0, "{active}");
        assert_eq!(dashboard_count(&admin, &base, "in_review").await, 1);

        // the reviewer removes the flagged region and accepts
        let rev = browser(&driver, &profiles.path().join("rev")).await;
        sign_in(&rev, &base, "rev").await;
        rev.goto(&format!("{base}/review")).await.unwrap();
        shot(&rev, "06-review-queue").await;
        rev.find(Locator::Css("a[href^='/review/']")).await.unwrap().click().await.unwrap();
        let flags = rev.wait().for_element(Locator::Id("flags")).await.unwrap().text().await.unwrap();
        assert!(flags.contains(fp_label), "{flags}");
        let marked = rev.find(Locator::Css("#flagged-text mark")).await.unwrap().text().await.unwrap();
        assert!(fp_sentence.to_lowercase().contains(&marked.trim().to_lowercase()), "{marked}");
        shot(&rev, "07-review").await;
        let area = rev.find(Locator::Id("text")).await.unwrap();
        area.clear().await.unwrap();
        area.send_keys(true_sentence).await.unwrap();
        rev.find(Locator::Css(&format!("#accept-form input[value={fp_label}]"))).await.unwrap().click().await.unwrap();
        rev.find(Locator::Id("accept")).await.unwrap().click().await.unwrap();
        wait_for(&rev, "return location.pathname === '/review'", "the queue after accepting", 10).await;
        shot(&rev, "08-review-done").await;
        let (status, stored, regions, fp): (String, String, Vec<String>, Vec<String>) =
            sqlx::query_as("SELECT status, text, regions, fp_labels FROM annotations WHERE forgery_id = $1").bind(task).fetch_one(&app.pool).await.unwrap();
        assert_eq!(status, "accepted");
        assert_eq!(stored, true_sentence);
        assert!(!regions.contains(&fp_label.to_string()) && regions.contains(&true_label.to_string()), "{regions:?}");
        assert_eq!(fp, [fp_label], "the annotator's flag stays for the dashboard's false-positive rate");

        // the admin sees the counts change
        assert_eq!(dashboard_count(&admin, &base, "accepted").await, 1);
        let fp_rate = admin.find(Locator::Css("#overall th:last-child")).await.unwrap().text().await.unwrap();
        assert_eq!(fp_rate.trim(), "100.0 %");
        assert_eq!(dashboard_count(&admin, &base, "in_review").await, 0);
        shot(&admin, "09-dashboard").await;
        admin.goto(&format!("{base}/admin/users")).await.unwrap();
        shot(&admin, "10-users").await;
        // the statistics page shows its charts (SVG images) and the caption figures
        admin.goto(&format!("{base}/admin/stats")).await.unwrap();
        let loaded = js(&admin, "var i = document.querySelectorAll('#charts img'); return [i.length, Array.prototype.every.call(i, function (x) { return x.complete && x.naturalWidth > 0; })]").await;
        assert!(loaded[0].as_u64().unwrap() >= 4 && loaded[1] == true, "charts shown: {loaded}");
        assert!(admin.find(Locator::Id("stats-text")).await.unwrap().text().await.unwrap().contains("text annotations 1"));
        shot(&admin, "11-stats").await;
        // nothing the pages loaded came from another server
        for c in [&ann, &rev, &admin] {
            let urls = js(c, "return performance.getEntriesByType('resource').map(function (e) { return e.name; })").await;
            for u in urls.as_array().unwrap() {
                assert!(u.as_str().unwrap().starts_with(&base), "a request left the server: {u}");
            }
        }
        for c in [ann, rev, admin] {
            c.close().await.unwrap();
        }
    });
}

/// The talker fixture (model/tests/fixtures/talker/): a tiny ForgeryTalker with its FPN and the
/// texts `transformers` generates for its images.
fn talker_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/talker")
}

#[test]
fn a_reviewer_explains_an_uploaded_face_in_a_real_browser() {
    let fx = talker_fixtures();
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).expect("the talker fixtures")).unwrap();
    let g = exp["cases"]["talker"]["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "beam")
        .expect("the beam generation")
        .clone();
    let want_text = g["texts"][0].as_str().unwrap().to_string();
    let want_regions: Vec<String> =
        exp["cases"]["talker"]["regions"][0].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    let (w, h) = image::image_dimensions(fx.join("img_a.png")).unwrap();
    let env = common::Env::new();
    let profiles = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    common::web::rt().block_on(async {
        let talker = mmtt::explain::TalkerConfig { checkpoint: fx.join("talker"), fpn: None, device: "cpu".into() };
        let app = common::web::spawn_app_with(&env, WebConfig::default(), Some(talker)).await;
        let base = app.base.clone();
        let rev = browser(&driver, &profiles.path().join("rev")).await;
        sign_in(&rev, &base, "rev").await;
        rev.find(Locator::LinkText("Explain a face")).await.unwrap().click().await.unwrap();
        wait_for(&rev, "return location.pathname === '/explain'", "the explain page", 10).await;
        shot(&rev, "20-explain").await;
        rev.find(Locator::Id("image")).await.unwrap().send_keys(&fx.join("img_a.png").display().to_string()).await.unwrap();
        // the release's settings, shorter: the fixture's beam search
        rev.find(Locator::Css("#explain-form summary")).await.unwrap().click().await.unwrap();
        for (id, key) in [("num_beams", "num_beams"), ("max_new_tokens", "max_new_tokens"), ("min_length", "min_length"), ("repetition_penalty", "repetition_penalty")] {
            let v = match &g[key] {
                serde_json::Value::Number(n) if key == "repetition_penalty" => n.as_f64().unwrap().to_string(),
                serde_json::Value::Number(n) => n.as_u64().unwrap().to_string(),
                other => panic!("{key}: {other}"),
            };
            let input = rev.find(Locator::Id(id)).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(&v).await.unwrap();
        }
        assert_eq!(js(&rev, "return document.getElementById('prompting-fpn').checked").await, true, "the model's FPN by default");
        rev.find(Locator::Id("explain")).await.unwrap().click().await.unwrap();
        rev.wait().at_most(Duration::from_secs(120)).for_element(Locator::Id("result")).await.unwrap();
        // the mask over the image: both loaded, the overlay as large as the picture
        wait_for(&rev, "var i = document.getElementById('explained-image'), o = document.getElementById('overlay'); return i.complete && o.complete && i.naturalWidth > 0 && o.naturalWidth > 0", "the image and its overlay", 10).await;
        let dims = js(&rev, "var i = document.getElementById('explained-image'), o = document.getElementById('overlay'); var a = i.getBoundingClientRect(), b = o.getBoundingClientRect(); return [o.naturalWidth, o.naturalHeight, Math.round(a.width), Math.round(a.height), Math.round(b.width), Math.round(b.height), Math.round(a.left - b.left), Math.round(a.top - b.top)]").await;
        let d: Vec<i64> = dims.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!((d[0], d[1]), (w as i64, h as i64), "the overlay has the image's size: {dims}");
        assert!(d[2] > 100 && (d[2] - d[4]).abs() <= 1 && (d[3] - d[5]).abs() <= 1 && d[6] == 0 && d[7] == 0, "the overlay lies exactly over the image: {dims}");
        // the text, the regions, the instruction and the model
        let text = js(&rev, "return document.getElementById('explanation').textContent").await;
        assert_eq!(text.as_str().unwrap(), want_text);
        let regions = js(&rev, "return Array.prototype.map.call(document.querySelectorAll('#regions .chip'), function (c) { return c.textContent; })").await;
        assert_eq!(regions, serde_json::json!(want_regions));
        let instruction = js(&rev, "return document.getElementById('instruction').textContent").await;
        assert_eq!(instruction, exp["cases"]["talker"]["instructions"][0]);
        let model = rev.find(Locator::Id("result-model")).await.unwrap().text().await.unwrap();
        assert!(!model.trim().is_empty());
        shot(&rev, "21-explain-result").await;
        // hiding the mask hides the overlay (CSS only)
        rev.find(Locator::Id("show-overlay")).await.unwrap().click().await.unwrap();
        assert_eq!(js(&rev, "return getComputedStyle(document.getElementById('overlay')).display").await, "none");
        // nothing the page loaded came from another server
        let urls = js(&rev, "return performance.getEntriesByType('resource').map(function (e) { return e.name; })").await;
        for u in urls.as_array().unwrap() {
            assert!(u.as_str().unwrap().starts_with(&base) || u.as_str().unwrap().starts_with("data:"), "a request left the server: {u}");
        }
        rev.close().await.unwrap();
    });
}

/// Sets the project's assistance on the Assist page, as an admin does.
async fn assist_mode(admin: &Client, base: &str, mode: &str) {
    admin.goto(&format!("{base}/admin/assist")).await.unwrap();
    admin.find(Locator::Css(&format!("#mode option[value={mode}]"))).await.unwrap().click().await.unwrap();
    admin.find(Locator::Css("#model option:nth-child(2)")).await.unwrap().click().await.unwrap();
    let h = admin.find(Locator::Id("holdout")).await.unwrap();
    h.clear().await.unwrap();
    h.send_keys("0").await.unwrap();
    admin.find(Locator::Css("#assist-settings-form button")).await.unwrap().click().await.unwrap();
    wait_for(
        admin,
        &format!("var m = document.getElementById('assist-mode'); return !!m && m.textContent === '{mode}'"),
        "the saved mode",
        10,
    )
    .await;
}

#[test]
fn model_assistance_in_a_real_browser() {
    let fx = talker_fixtures();
    let env = world();
    let profiles = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    common::web::rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 1.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let base = app.base.clone();
        // the admin registers the tiny ForgeryTalker fixture (its FPN inside) and computes suggestions
        let admin = browser(&driver, &profiles.path().join("admin")).await;
        sign_in(&admin, &base, "adm").await;
        admin.find(Locator::LinkText("Assist")).await.unwrap().click().await.unwrap();
        wait_for(&admin, "return location.pathname === '/admin/assist'", "the assist page", 10).await;
        admin.find(Locator::Id("model-name")).await.unwrap().send_keys("fixture").await.unwrap();
        admin.find(Locator::Id("checkpoint")).await.unwrap().send_keys(&fx.join("talker").display().to_string()).await.unwrap();
        admin.find(Locator::Css("#assist-register-form button")).await.unwrap().click().await.unwrap();
        wait_for(&admin, "return document.querySelectorAll('#model option').length === 2", "the registered model", 10).await;
        for (name, v) in [("num_beams", "1"), ("max_new_tokens", "12")] {
            let input = admin.find(Locator::Css(&format!("#assist-suggest-form input[name={name}]"))).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(v).await.unwrap();
        }
        admin.find(Locator::Css("#assist-suggest-form button")).await.unwrap().click().await.unwrap();
        // a worker runs the queued job, as on a server (spawn_app has none)
        tokio::task::block_in_place(|| env.ok(&["worker", "--until-empty"]));
        let model: uuid::Uuid = sqlx::query_scalar("SELECT id FROM assist_models WHERE name = 'fixture'").fetch_one(&app.pool).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM suggestions WHERE model_id = $1").bind(model).fetch_one(&app.pool).await.unwrap();
        assert_eq!(n, 2, "a suggestion for each open task");
        shot(&admin, "30-assist-admin").await;

        // prefill: the draft starts as the model's explanation; the annotator edits it
        assist_mode(&admin, &base, "prefill").await;
        let ann = browser(&driver, &profiles.path().join("ann")).await;
        sign_in(&ann, &base, "ann").await;
        ann.goto(&format!("{base}/annotate/next")).await.unwrap();
        wait_for(&ann, "return /^\\/annotate\\/[0-9a-f-]{36}$/.test(location.pathname)", "the task page", 10).await;
        let t1: uuid::Uuid = ann.current_url().await.unwrap().path().rsplit('/').next().unwrap().parse().unwrap();
        let suggestion: String = sqlx::query_scalar("SELECT text FROM suggestions WHERE forgery_id = $1 AND model_id = $2")
            .bind(t1)
            .bind(model)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(ann.find(Locator::Id("assist-note")).await.unwrap().is_displayed().await.unwrap());
        assert_eq!(ann.find(Locator::Id("text")).await.unwrap().prop("value").await.unwrap().as_deref(), Some(suggestion.as_str()));
        shot(&ann, "31-assist-prefill").await;
        let area = ann.find(Locator::Id("text")).await.unwrap();
        area.send_keys(" The chin is blurred.").await.unwrap();
        wait_for(&ann, "document.dispatchEvent(new Event('mousemove')); return document.getElementById('timer').classList.contains('done')", "the active-time minimum", 30).await;
        // the admin switches to hint meanwhile: this annotation still records the prefill it was
        // shown, and the next task (opened on submitting) gets the hint
        assist_mode(&admin, &base, "hint").await;
        ann.find(Locator::Id("submit")).await.unwrap().click().await.unwrap();
        wait_for(&ann, &format!("return location.pathname !== '/annotate/{t1}'"), "the next page after submitting", 10).await;
        let edited = format!("{suggestion} The chin is blurred.");
        let m = mmtt::dataset::assist::EditMeasure::of(&suggestion, &edited);
        let row: (String, String, Option<String>, Option<i32>) = sqlx::query_as(
            "SELECT assist_mode, text, suggestion_text, suggestion_edit_distance FROM annotations WHERE forgery_id = $1",
        )
        .bind(t1)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(row, ("prefill".into(), edited.clone(), Some(suggestion.clone()), Some(m.edit_distance as i32)));
        assert_eq!(m.edit_distance, 5, "the five appended tokens");

        // hint: the button waits for a first word, then shows the model's regions and mask
        ann.goto(&format!("{base}/annotate/next")).await.unwrap();
        wait_for(&ann, "return /^\\/annotate\\/[0-9a-f-]{36}$/.test(location.pathname)", "the task page", 10).await;
        let t2: uuid::Uuid = ann.current_url().await.unwrap().path().rsplit('/').next().unwrap().parse().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(ann.find(Locator::Id("text")).await.unwrap().prop("value").await.unwrap().as_deref(), Some(""));
        assert_eq!(js(&ann, "return document.getElementById('hint-button').disabled").await, true, "no hint before a draft");
        let own = "The nose looks smeared compared to the original.";
        ann.find(Locator::Id("text")).await.unwrap().send_keys(own).await.unwrap();
        assert_eq!(js(&ann, "return document.getElementById('hint-button').disabled").await, false);
        ann.find(Locator::Id("hint-button")).await.unwrap().click().await.unwrap();
        wait_for(&ann, "return !document.getElementById('hint-out').hidden", "the hint", 10).await;
        let (regions, mask): (Vec<String>, Option<String>) =
            sqlx::query_as("SELECT regions, mask_hash FROM suggestions WHERE forgery_id = $1 AND model_id = $2").bind(t2).bind(model).fetch_one(&app.pool).await.unwrap();
        let shown = ann.find(Locator::Id("hint-regions")).await.unwrap().text().await.unwrap();
        assert_eq!(shown, if regions.is_empty() { "(none)".to_string() } else { regions.join(", ") });
        assert!(mask.is_some(), "the model predicts a mask");
        wait_for(&ann, "var m = document.getElementById('mask'); return m.src.endsWith('/suggested-mask') && m.complete && m.naturalWidth > 0", "the model's mask over the image", 10).await;
        shot(&ann, "32-assist-hint").await;
        wait_for(&ann, "document.dispatchEvent(new Event('mousemove')); return document.getElementById('timer').classList.contains('done')", "the active-time minimum", 30).await;
        ann.find(Locator::Id("submit")).await.unwrap().click().await.unwrap();
        wait_for(&ann, &format!("return location.pathname !== '/annotate/{t2}'"), "the next page after submitting", 10).await;
        let row: (String, Option<uuid::Uuid>, Vec<String>) =
            sqlx::query_as("SELECT assist_mode, suggestion_model, suggestion_regions FROM annotations WHERE forgery_id = $1").bind(t2).fetch_one(&app.pool).await.unwrap();
        assert_eq!(row, ("hint".into(), Some(model), regions.clone()));

        // the reviewer: the riskiest first, with the check and its trigger words
        let rev = browser(&driver, &profiles.path().join("rev")).await;
        sign_in(&rev, &base, "rev").await;
        rev.goto(&format!("{base}/review")).await.unwrap();
        rev.find(Locator::Id("order-risk")).await.unwrap().click().await.unwrap();
        wait_for(&rev, "return location.search === '?order=risk'", "the risk order", 10).await;
        shot(&rev, "33-review-risk").await;
        let id2: uuid::Uuid = sqlx::query_scalar("SELECT id FROM annotations WHERE forgery_id = $1").bind(t2).fetch_one(&app.pool).await.unwrap();
        let risks = js(&rev, "return Array.prototype.map.call(document.querySelectorAll('[data-risk]'), function (e) { return parseFloat(e.dataset.risk); })").await;
        let risks: Vec<f64> = risks.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(risks.len(), 2, "both annotations in the queue");
        assert!(risks[0] >= risks[1] && risks[0] >= 3.0, "riskiest first, and the reference to the original counts: {risks:?}");
        rev.find(Locator::Css(&format!("a[href='/review/{id2}']"))).await.unwrap().click().await.unwrap();
        let check = rev.wait().for_element(Locator::Css("#check-original mark")).await.unwrap().text().await.unwrap();
        assert_eq!(check, "compared to the original");
        assert!(rev.find(Locator::Id("check-model")).await.is_ok(), "the model's regions are compared");
        shot(&rev, "34-review-checks").await;

        // the dashboard separates assisted from unassisted work
        admin.goto(&format!("{base}/admin")).await.unwrap();
        assert!(admin.find(Locator::Id("assist-section")).await.is_ok());
        shot(&admin, "35-dashboard-assist").await;
        for c in [ann, rev, admin] {
            c.close().await.unwrap();
        }
    });
}
