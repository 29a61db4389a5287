//! The admin console's test helpers: the real `mmtt serve` (with its embedded worker, so jobs
//! submitted from the pages run) on a free port, users, API tokens, signed-in clients, a
//! hand-built multipart body, and waiting for a job to finish.

use super::Env;
use reqwest::StatusCode;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "correct horse battery";

/// `mmtt serve` as a child process, killed on drop.
pub struct Served {
    pub base: String,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds the users `ann` (annotator), `rev` (reviewer) and `adm` (admin).
pub fn add_users(env: &Env) {
    for (name, role) in [("ann", "annotator"), ("rev", "reviewer"), ("adm", "admin")] {
        env.ok(&["user", "add", name, "--role", role, "--password", PASSWORD]);
    }
}

/// Starts `mmtt serve` on the test's database and data directory; waits until it listens.
pub fn serve(env: &Env, extra: &[&str]) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(env.data.path().join("serve.log")).unwrap();
    let child = env
        .command()
        .args(["serve", "--bind", &bind])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start mmtt serve");
    let mut served = Served { base: format!("http://{bind}"), child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("mmtt serve exited ({status}): {}", std::fs::read_to_string(env.data.path().join("serve.log")).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "mmtt serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    served
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in; returns the client and the session's CSRF token.
pub async fn login(base: &str, name: &str) -> (reqwest::Client, String) {
    let c = client();
    let r = c.post(format!("{base}/login")).form(&[("name", name), ("password", PASSWORD)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "login {name}");
    let home = c.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    let csrf = home.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf on the home page").to_string();
    (c, csrf)
}

/// A new API token of `adm` (`mmtt user token`).
pub fn token(env: &Env) -> String {
    let out = env.ok(&["user", "token", "adm"]);
    let t = out.trim().to_string();
    assert!(t.starts_with("mmtt_") && t.len() > 40, "a token: {t}");
    t
}

/// One part of a multipart body: (field, file name, bytes); `None` file name for text fields.
pub type Part<'a> = (&'a str, Option<&'a str>, Vec<u8>);

/// A `multipart/form-data` body and its content type.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("mmtt-test-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Polls the job's JSON until it is done, failed or cancelled; returns its view.
pub async fn wait_job(c: &reqwest::Client, base: &str, token: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v: serde_json::Value = c.get(format!("{base}/admin/jobs/{id}")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        let state = v["state"].as_str().unwrap_or_default().to_string();
        if matches!(state.as_str(), "done" | "failed" | "cancelled") {
            return v;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One number from SQL (inside async tests, where `TestDb::scalar_i64` cannot block).
pub async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(pool).await.unwrap()
}

/// Accepted annotations for every forgery (the reviewers' work, which the console does not do).
pub async fn accept_all(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "WITH a AS (INSERT INTO annotations (id, forgery_id, annotator_id, text, regions, word_count, active_seconds, elapsed_seconds, status, mentions) \
               SELECT gen_random_uuid(), f.id, u.id, 'The skin of the nose is smoother than the cheeks.', '{nose}', 10, 70, 80, 'accepted', '{nose}' \
               FROM forgeries f, users u WHERE u.name = 'ann' RETURNING 1) \
         SELECT count(*) FROM a",
    )
    .await
}

/// An annotator opens the next task's page on `base`, and its forged image is served byte for
/// byte as stored (`forgeries.image_hash`); returns the task.
pub async fn forged_image_is_served(env: &Env, base: &str) -> String {
    let (ann, _) = login(base, "ann").await;
    let r = ann.get(format!("{base}/annotate/next")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let task = r.headers()["location"].to_str().unwrap().trim_start_matches("/annotate/").to_string();
    let page = ann.get(format!("{base}/annotate/{task}")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("/images/{task}/forged")));
    let img = ann.get(format!("{base}/images/{task}/forged")).send().await.unwrap();
    assert_eq!(img.status(), StatusCode::OK);
    let bytes = img.bytes().await.unwrap();
    let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT image_hash FROM forgeries WHERE id = $1::uuid").bind(&task).fetch_one(&pool).await.unwrap();
    assert_eq!(mmtt::storage::store::BlobKey::of(&bytes).as_str(), hash, "the stored forgery, byte for byte");
    task
}
