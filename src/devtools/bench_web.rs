//! `mmtt bench web`: the annotator's "next task" plus the annotation page, at many concurrent
//! clients on loopback, against the real router on the command's database (fill it first with
//! `mmtt seed-synthetic`). Prints p50/p99 latency and requests/s, and the page's own weight.
//!
//! Each client signs in as its own annotator (`bench-annotator-N`, created if missing), then loops:
//! `GET /annotate/next` (a claim under `FOR UPDATE SKIP LOCKED`, answered with a redirect),
//! `GET /annotate/{task}` (the rendered page) - timed together - then skips the task (not timed)
//! so the next round claims a new one. Tasks skipped by the benchmark are reopened at the end.
//! The server and the clients share the machine's cores; the clients keep their own work small
//! (a fixed session-cookie header, the CSRF token read once per client). Before the timed rounds,
//! one untimed round of next + page by every client at once opens the connections.

use crate::app::App;
use crate::web::auth::{Role, UserName, add_user};
use crate::web::{AppState, WebConfig};
use anyhow::{Context, Result, anyhow, bail};
use std::time::{Duration, Instant};

pub struct WebBenchArgs {
    pub clients: usize,
    /// Rounds per client.
    pub rounds: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct WebBenchReport {
    pub forged_samples: i64,
    pub clients: usize,
    pub rounds: usize,
    /// "next task" + page, milliseconds.
    pub next_and_page_p50_ms: f64,
    pub next_and_page_p99_ms: f64,
    pub next_p50_ms: f64,
    pub next_p99_ms: f64,
    pub page_p50_ms: f64,
    pub page_p99_ms: f64,
    /// Timed HTTP requests (next + page) per second over the run, and rounds per second.
    pub requests_per_s: f64,
    pub rounds_per_s: f64,
    /// Bytes of the annotation page itself: HTML, CSS and JS (images excluded).
    pub page_weight_bytes: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const PASSWORD: &str = "bench password, not for people";

pub async fn run(app: &App, args: &WebBenchArgs) -> Result<WebBenchReport> {
    if args.clients == 0 || args.rounds == 0 {
        bail!("--clients and --rounds must be at least 1");
    }
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM annotation_tasks WHERE status = 'open'").fetch_one(&app.pool).await?;
    let forged: i64 = sqlx::query_scalar("SELECT count(*) FROM forgeries").fetch_one(&app.pool).await?;
    if open < (args.clients * 2) as i64 {
        bail!("only {open} open tasks: fill the database first, e.g. `mmtt seed-synthetic --samples 128303 --seed 1`");
    }
    let state = AppState::new(app.pool.clone(), app.store.clone(), &app.data_dir, WebConfig { min_seconds: 0.0, ..WebConfig::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(listener, crate::web::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
    let mut users = Vec::new();
    for i in 0..args.clients {
        let name = UserName::parse(&format!("bench-annotator-{i}")).map_err(|e| anyhow!(e))?;
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE name = $1").bind(name.as_str()).fetch_optional(&app.pool).await?;
        let id = match id {
            Some(id) => {
                let hash = crate::web::auth::hash_password(PASSWORD)?;
                sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1").bind(id).bind(hash).execute(&app.pool).await?;
                id
            }
            None => add_user(&app.pool, &name, Role::Annotator, PASSWORD).await?,
        };
        users.push((name, id));
    }
    let ids: Vec<uuid::Uuid> = users.iter().map(|(_, id)| *id).collect();
    // a previous interrupted run may have left claims behind
    release(&app.pool, &ids).await?;

    // Each client holds its session cookie as a fixed header rather than in a cookie jar, and
    // reads its CSRF token (fixed per session) once: what a client does per request is then
    // little more than HTTP, so that the shared cores go to the server being measured.
    let mut clients = Vec::new();
    let login = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    for (name, _) in &users {
        let r = login.post(format!("{base}/login")).form(&[("name", name.as_str()), ("password", PASSWORD)]).send().await?;
        if r.status() != reqwest::StatusCode::SEE_OTHER {
            bail!("bench login as {} answered {}", name.as_str(), r.status());
        }
        let cookie = r
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect::<Vec<_>>()
            .join("; ");
        if cookie.is_empty() {
            bail!("bench login as {} set no session cookie", name.as_str());
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::COOKIE, reqwest::header::HeaderValue::from_str(&cookie)?);
        let c = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()?;
        clients.push(c);
    }
    // page weight: one page, its stylesheet and script
    let weight = {
        let c = &clients[0];
        let loc = next(c, &base).await?;
        let html = c.get(format!("{base}{loc}")).send().await?.bytes().await?.len();
        let css = c.get(format!("{base}/static/app.css")).send().await?.bytes().await?.len();
        let js = c.get(format!("{base}/static/annotate.js")).send().await?.bytes().await?.len();
        html + css + js
    };
    // Warm-up, not timed: every client at once takes a task and reads its page (and its CSRF
    // token from it). This opens the server's database connections and the clients' HTTP
    // connections, so that the timed rounds measure a running server rather than 64 clients
    // queueing for a pool that is still connecting.
    let mut warm = Vec::new();
    for c in &clients {
        let (c, base) = (c.clone(), base.clone());
        warm.push(tokio::spawn(async move {
            let loc = next(&c, &base).await?;
            let body = c.get(format!("{base}{loc}")).send().await?.text().await?;
            body.split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no CSRF token on the task page"))
        }));
    }
    let mut tokens = Vec::new();
    for h in warm {
        tokens.push(h.await.context("a bench client panicked")??);
    }
    release(&app.pool, &ids).await?;

    eprintln!("bench web: {} clients x {} rounds on {forged} forged samples ({open} open tasks)", args.clients, args.rounds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for (c, csrf) in clients.into_iter().zip(tokens) {
        let base = base.clone();
        let rounds = args.rounds;
        handles.push(tokio::spawn(async move {
            let mut t = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t0 = Instant::now();
                let loc = next(&c, &base).await?;
                let t1 = Instant::now();
                let page = c.get(format!("{base}{loc}")).send().await?;
                if !page.status().is_success() {
                    bail!("the task page {loc} answered {}", page.status());
                }
                let body = page.bytes().await?;
                let t2 = Instant::now();
                if body.len() < 1000 {
                    bail!("the task page {loc} is only {} bytes", body.len());
                }
                let r =
                    c.post(format!("{base}{loc}/skip")).form(&[("csrf", csrf.as_str()), ("reason", "no_visible_forgery")]).send().await?;
                if r.status() != reqwest::StatusCode::SEE_OTHER {
                    bail!("skip answered {}", r.status());
                }
                t.push(((t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3));
            }
            Ok::<_, anyhow::Error>(t)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.context("a bench client panicked")??);
    }
    let wall = started.elapsed();
    release(&app.pool, &ids).await?;
    server.abort();
    let mut both: Vec<f64> = all.iter().map(|(a, b)| a + b).collect();
    let mut n: Vec<f64> = all.iter().map(|(a, _)| *a).collect();
    let mut p: Vec<f64> = all.iter().map(|(_, b)| *b).collect();
    for v in [&mut both, &mut n, &mut p] {
        v.sort_by(f64::total_cmp);
    }
    let secs = wall.max(Duration::from_millis(1)).as_secs_f64();
    Ok(WebBenchReport {
        forged_samples: forged,
        clients: args.clients,
        rounds: args.rounds,
        next_and_page_p50_ms: pct(&both, 50.0),
        next_and_page_p99_ms: pct(&both, 99.0),
        next_p50_ms: pct(&n, 50.0),
        next_p99_ms: pct(&n, 99.0),
        page_p50_ms: pct(&p, 50.0),
        page_p99_ms: pct(&p, 99.0),
        requests_per_s: (2 * all.len()) as f64 / secs,
        rounds_per_s: all.len() as f64 / secs,
        page_weight_bytes: weight,
    })
}

/// `GET /annotate/next`; the task page it redirects to.
async fn next(c: &reqwest::Client, base: &str) -> Result<String> {
    let r = c.get(format!("{base}/annotate/next")).send().await?;
    if r.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("next task answered {} (no task left?)", r.status());
    }
    Ok(r.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| anyhow!("redirect without a location"))?.to_string())
}

/// Reopens every task the bench annotators claimed or skipped.
async fn release(pool: &sqlx::PgPool, ids: &[uuid::Uuid]) -> Result<()> {
    sqlx::query(
        "UPDATE annotation_tasks SET status = 'open', annotator_id = NULL, lease_until = NULL, claimed_at = NULL, skip_reason = NULL, \
         active_seconds = 0, draft = NULL, draft_regions = NULL WHERE annotator_id = ANY($1) AND status IN ('claimed', 'skipped')",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}
