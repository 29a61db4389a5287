//! The web app on a fresh database per test: `world` (sample faces imported and forged),
//! `spawn_app` (the real router on a loopback port, with an annotator, a second annotator, a
//! reviewer and an admin; `spawn_app_with`: and an explain model), and signed-in HTTP clients.

use mmtt::web::auth::{Role, UserName, add_user};
use mmtt::web::{AppState, WebConfig};
use reqwest::StatusCode;
use std::sync::Arc;

pub struct TestApp {
    pub base: String,
    pub pool: sqlx::PgPool,
    pub state: AppState,
}

pub const PASSWORD: &str = "correct horse battery";

/// Imports the Debian sample faces and forges them (2 tasks), then serves the app.
pub fn world() -> super::Env {
    let env = super::Env::new();
    let dir = env.data.path().join("photos");
    super::copy_into(&super::sample_faces(), &dir);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    env.ok(&["forge", "--method", "patch-inpaint", "--count", "2", "--seed", "1", "--wait"]);
    env
}

pub async fn spawn_app(env: &super::Env, config: WebConfig) -> TestApp {
    spawn_app_with(env, config, None).await
}

/// [`spawn_app`] with the explain page's model (`mmtt serve --talker`).
pub async fn spawn_app_with(env: &super::Env, config: WebConfig, talker: Option<mmtt::explain::TalkerConfig>) -> TestApp {
    let pool = mmtt::storage::db::connect_url(&env.db.url).await.expect("db");
    let store: mmtt::storage::store::SharedStore =
        Arc::new(mmtt::storage::store::FsBlobStore::open(env.data.path().join("blobs")).unwrap());
    let mut state = AppState::new(pool.clone(), store, env.data.path(), config);
    if let Some(t) = talker {
        state = state.with_talker(t);
    }
    let served = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, mmtt::web::router(served).into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    for (name, role) in [("ann", Role::Annotator), ("ann2", Role::Annotator), ("rev", Role::Reviewer), ("adm", Role::Admin)] {
        add_user(&pool, &UserName::parse(name).unwrap(), role, PASSWORD).await.unwrap();
    }
    TestApp { base: format!("http://{addr}"), pool, state }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in; returns the client and the session's CSRF token (read from the home page).
pub async fn login(app: &TestApp, name: &str) -> (reqwest::Client, String) {
    let c = client();
    let r = c.post(format!("{}/login", app.base)).form(&[("name", name), ("password", PASSWORD)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "login {name}");
    let home = c.get(format!("{}/", app.base)).send().await.unwrap().text().await.unwrap();
    let csrf = home.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf on the home page").to_string();
    (c, csrf)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
