//! The admin console in a real browser (Debian's headless Chromium over WebDriver) against the
//! real `mmtt serve` and its embedded worker, from an empty project to a downloaded export: an
//! admin uploads the sample photos through the upload form, plans masks, starts a generation job
//! and watches its progress bar reach 100 % without a reload, exports, downloads the tar through
//! the page's link and reads it. A screenshot of every page goes to `target/screenshots/admin/`.

mod common;

use common::Env;
use common::admin::{PASSWORD, accept_all, add_users, count, serve};
use common::browser::{CHROMIUM, Driver};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A headless Chromium that saves downloads into `downloads`.
async fn browser(driver: &Driver, profile: &Path, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1366,1000",
                     format!("--user-data-dir={}", profile.display())],
            "prefs": {"download.default_directory": downloads.display().to_string(), "download.prompt_for_download": false,
                      "download.directory_upgrade": true, "safebrowsing.enabled": false},
        }),
    );
    ClientBuilder::native().capabilities(caps).connect(&driver.url).await.expect("a chromium session")
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../screenshots/admin");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot {}", path.display());
}

async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn wait_for(c: &Client, script: &str, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if js(c, script).await == serde_json::Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {}", js(c, "return document.body.innerText").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On a job's page: waits for `done` without a reload (a marker set on the page survives), and
/// returns the progress values the bar showed on the way.
async fn watch_job(c: &Client, what: &str) -> Vec<i64> {
    wait_for(c, "return /^\\/admin\\/jobs\\/[0-9a-f-]{36}$/.test(location.pathname)", &format!("the {what} job's page"), 20).await;
    js(c, "window.__sameDocument = true; return true").await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = js(c, "return [document.querySelector('#job .state').textContent, document.getElementById('progress').value, window.__sameDocument === true]").await;
        let state = v[0].as_str().unwrap().to_string();
        let p = v[1].as_f64().unwrap() as i64;
        assert_eq!(v[2], true, "the {what} page reloaded");
        if seen.last() != Some(&p) {
            seen.push(p);
        }
        assert!(state != "failed" && state != "cancelled", "the {what} job {state}: {}", js(c, "return document.body.innerText").await);
        if state == "done" && p == 100 {
            let pct = c.find(Locator::Css("#job .pct")).await.unwrap().text().await.unwrap();
            assert_eq!(pct, "100");
            return seen;
        }
        assert!(Instant::now() < deadline, "the {what} job did not finish: {state} {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_admin_goes_from_an_empty_project_to_a_downloaded_export_in_a_browser() {
    let env = Env::new();
    add_users(&env);
    let served = serve(&env, &[]);
    let base = served.base.clone();
    let profiles = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    // the photos to upload: the sample faces (and MMTT_FACES_DIR's when set)
    let mut photos: Vec<PathBuf> = common::sample_faces();
    if let Some(d) = common::faces_dir() {
        let mut more: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_string_lossy().to_lowercase().as_str())))
            .collect();
        more.sort();
        photos.extend(more.into_iter().take(2));
    }
    common::web::rt().block_on(async {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let c = browser(&driver, profiles.path(), downloads.path()).await;
        c.goto(&format!("{base}/login")).await.unwrap();
        c.find(Locator::Css("input[name=name]")).await.unwrap().send_keys("adm").await.unwrap();
        c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        c.find(Locator::Css("form button")).await.unwrap().click().await.unwrap();
        wait_for(&c, "return !location.pathname.startsWith('/login')", "the home page", 10).await;

        // import: the upload form; first a refused file, then the photos
        c.goto(&format!("{base}/admin/import")).await.unwrap();
        shot(&c, "01-import").await;
        let bad = env.data.path().join("notes.png");
        std::fs::write(&bad, b"not really a picture").unwrap();
        c.find(Locator::Id("photos")).await.unwrap().send_keys(&bad.display().to_string()).await.unwrap();
        c.find(Locator::Id("upload")).await.unwrap().click().await.unwrap();
        let refusal = c.wait().for_element(Locator::Id("form-error")).await.unwrap().text().await.unwrap();
        assert!(refusal.contains("photos:") && refusal.contains("notes.png") && refusal.contains("not an image"), "{refusal}");
        shot(&c, "02-import-refused").await;
        assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 0);
        let list = photos.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n");
        c.find(Locator::Id("photos")).await.unwrap().send_keys(&list).await.unwrap();
        c.find(Locator::Id("upload")).await.unwrap().click().await.unwrap();
        watch_job(&c, "import").await;
        shot(&c, "03-import-job").await;
        assert!(count(&pool, "SELECT count(*) FROM sources WHERE dataset = 'photos'").await >= 2);

        // masks
        c.goto(&format!("{base}/admin/masks")).await.unwrap();
        c.find(Locator::Id("seed")).await.unwrap().send_keys("1").await.unwrap();
        c.find(Locator::Css("#masks-form button")).await.unwrap().click().await.unwrap();
        watch_job(&c, "masks").await;
        c.goto(&format!("{base}/admin/masks?seed=1")).await.unwrap();
        wait_for(&c, "var i = document.querySelectorAll('#previews img'); return i.length >= 2 && Array.prototype.every.call(i, function (x) { return x.complete && x.naturalWidth > 0; })", "the mask previews", 30).await;
        let stats = c.find(Locator::Id("mask-stats")).await.unwrap().text().await.unwrap();
        assert!(stats.contains("inpainting masks: "), "{stats}");
        shot(&c, "04-masks").await;

        // generate: the generators' state is shown first; the progress bar reaches 100 % live
        c.goto(&format!("{base}/admin/generate")).await.unwrap();
        let ready = js(&c, "return document.querySelector('#generators tr[data-method=\"patch-inpaint\"]').className").await;
        assert_eq!(ready, "ready");
        shot(&c, "05-generate").await;
        c.find(Locator::Css("#method option[value='patch-inpaint']")).await.unwrap().click().await.unwrap();
        let count_input = c.find(Locator::Id("count")).await.unwrap();
        count_input.clear().await.unwrap();
        count_input.send_keys("4").await.unwrap();
        c.find(Locator::Id("start-generate")).await.unwrap().click().await.unwrap();
        let seen = watch_job(&c, "generation").await;
        eprintln!("generation progress seen: {seen:?}");
        assert_eq!(seen.last(), Some(&100));
        shot(&c, "06-generate-job").await;
        let forged = count(&pool, "SELECT count(*) FROM forgeries").await;
        assert!(forged >= 2, "{forged} forgeries");
        c.goto(&format!("{base}/admin/jobs")).await.unwrap();
        shot(&c, "07-jobs").await;

        // the reviewers' part, outside the console
        assert_eq!(accept_all(&pool).await, forged);

        // export, then the download through the page's link
        c.goto(&format!("{base}/admin/export")).await.unwrap();
        c.find(Locator::Css("#format option[value='mmtt']")).await.unwrap().click().await.unwrap();
        shot(&c, "08-export").await;
        c.find(Locator::Id("start-export")).await.unwrap().click().await.unwrap();
        watch_job(&c, "export").await;
        c.find(Locator::Id("export-link")).await.unwrap().click().await.unwrap();
        let card = c.wait().for_element(Locator::Id("card")).await.unwrap().text().await.unwrap();
        assert!(card.contains("Face forgery triplets"), "{card}");
        shot(&c, "09-export-card").await;
        let files: Vec<String> = js(&c, "return Array.prototype.map.call(document.querySelectorAll('#files code'), function (x) { return x.textContent; })")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        c.find(Locator::Id("download")).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let tar_path = loop {
            let done: Vec<PathBuf> = std::fs::read_dir(downloads.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "tar"))
                .collect();
            if let Some(p) = done.into_iter().next() {
                break p;
            }
            assert!(Instant::now() < deadline, "the download did not arrive in {}", downloads.path().display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let bytes = std::fs::read(&tar_path).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::io::Cursor::new(bytes))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().split_once('/').unwrap().1.to_string())
            .collect();
        names.sort();
        let mut want = files.clone();
        want.sort();
        assert_eq!(names, want, "the downloaded tar holds the export's files");
        assert!(names.iter().any(|n| n.starts_with("images/")) && names.contains(&"README.md".to_string()));
        let released: Vec<serde_json::Value> = {
            let mut ar = tar::Archive::new(std::io::Cursor::new(std::fs::read(&tar_path).unwrap()));
            let mut recs = Vec::new();
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                if ["train.json", "val.json", "test.json"].iter().any(|s| p.ends_with(&format!("/{s}"))) {
                    let v: Vec<serde_json::Value> = serde_json::from_reader(&mut e).unwrap();
                    recs.extend(v);
                }
            }
            recs
        };
        assert_eq!(released.len() as i64, forged, "every accepted sample is in the tar's release files");

        // the other pages
        for (path, name) in [("/admin/eval", "10-eval"), ("/admin/leaderboard", "11-leaderboard"), ("/admin/actions", "12-actions")] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            shot(&c, name).await;
        }
        let actions = c.find(Locator::Id("actions")).await.unwrap().text().await.unwrap();
        for a in ["import upload", "plan masks", "generate", "export"] {
            assert!(actions.contains(a), "{a} recorded: {actions}");
        }
        let urls = js(&c, "return performance.getEntriesByType('resource').map(function (e) { return e.name; })").await;
        for u in urls.as_array().unwrap() {
            assert!(u.as_str().unwrap().starts_with(&base), "a request left the server: {u}");
        }
        c.close().await.unwrap();
    });
    drop(served);
}
