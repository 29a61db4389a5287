//! The web app over HTTP: the real router on a fresh database per test (`spawn_app`), every route
//! checked for every role, and the annotator's rules enforced by the server.

mod common;

use common::web::{PASSWORD, client, login, rt, spawn_app, world};
use mmtt::web::auth::{Role, UserName, add_user};
use mmtt::web::{WebConfig, route_table};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

/// Expected status for anonymous, annotator, reviewer, admin. A route missing here fails the test.
fn expectations() -> HashMap<(&'static str, &'static str), [u16; 4]> {
    HashMap::from([
        (("GET", "/login"), [200, 200, 200, 200]),
        (("POST", "/login"), [401, 401, 401, 401]),
        (("POST", "/logout"), [401, 303, 303, 303]),
        (("GET", "/"), [401, 200, 200, 200]),
        (("GET", "/static/app.css"), [200, 200, 200, 200]),
        (("GET", "/static/annotate.js"), [200, 200, 200, 200]),
        (("GET", "/annotate/next"), [401, 303, 403, 303]),
        (("GET", "/annotate/{task}"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/heartbeat"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/draft"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/submit"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/skip"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/prefetch"), [401, 404, 403, 404]),
        (("POST", "/annotate/{task}/hint"), [401, 404, 403, 404]),
        (("GET", "/images/{task}/{kind}"), [401, 404, 404, 404]),
        (("GET", "/review"), [401, 403, 200, 200]),
        (("GET", "/review/{annotation}"), [401, 403, 404, 404]),
        (("POST", "/review/{annotation}/accept"), [401, 403, 404, 404]),
        (("POST", "/review/{annotation}/return"), [401, 403, 404, 404]),
        // the explain page (tests/explain.rs covers it with a model); here no model is configured
        (("GET", "/explain"), [401, 403, 200, 200]),
        (("POST", "/explain"), [401, 403, 503, 503]),
        (("GET", "/admin"), [401, 403, 403, 200]),
        (("GET", "/admin/stats"), [401, 403, 403, 200]),
        (("GET", "/admin/dashboard/assist.json"), [401, 403, 403, 200]),
        (("GET", "/admin/users"), [401, 403, 403, 200]),
        (("POST", "/admin/users"), [401, 403, 403, 200]),
        // the admin console (tests/admin_console.rs covers its forms, tokens and downloads)
        (("GET", "/static/admin.js"), [200, 200, 200, 200]),
        (("GET", "/admin/jobs"), [401, 403, 403, 200]),
        (("GET", "/admin/jobs/{id}"), [401, 403, 403, 404]),
        (("POST", "/admin/jobs/{id}/{action}"), [401, 403, 403, 404]),
        (("GET", "/admin/import"), [401, 403, 403, 200]),
        (("POST", "/admin/import"), [401, 403, 403, 422]),
        (("POST", "/admin/import/upload"), [401, 403, 403, 400]),
        (("GET", "/admin/masks"), [401, 403, 403, 200]),
        (("POST", "/admin/masks"), [401, 403, 403, 422]),
        (("GET", "/admin/masks/preview/{source}"), [401, 403, 403, 404]),
        (("GET", "/admin/generate"), [401, 403, 403, 200]),
        (("POST", "/admin/generate"), [401, 403, 403, 422]),
        (("GET", "/admin/export"), [401, 403, 403, 200]),
        (("POST", "/admin/export"), [401, 403, 403, 422]),
        (("GET", "/admin/export/{id}"), [401, 403, 403, 404]),
        (("GET", "/admin/export/{id}/download"), [401, 403, 403, 404]),
        (("GET", "/admin/train"), [401, 403, 403, 200]),
        (("POST", "/admin/train"), [401, 403, 403, 422]),
        (("POST", "/admin/train/talker"), [401, 403, 403, 422]),
        (("GET", "/admin/train/{id}/chart"), [401, 403, 403, 404]),
        (("GET", "/admin/eval"), [401, 403, 403, 200]),
        (("POST", "/admin/eval"), [401, 403, 403, 400]),
        (("POST", "/admin/eval/table3"), [401, 403, 403, 422]),
        (("GET", "/admin/leaderboard"), [401, 403, 403, 200]),
        // model assistance (tests/assist.rs covers registration, settings and suggestion jobs)
        (("GET", "/admin/assist"), [401, 403, 403, 200]),
        (("POST", "/admin/assist/models"), [401, 403, 403, 422]),
        (("POST", "/admin/assist/settings"), [401, 403, 403, 422]),
        (("POST", "/admin/assist/suggest"), [401, 403, 403, 422]),
        (("GET", "/admin/actions"), [401, 403, 403, 200]),
    ])
}

#[test]
fn every_route_answers_every_role_as_expected() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig::default()).await;
        let exp = expectations();
        let unknown = uuid::Uuid::new_v4().to_string();
        let mut n = 0;
        for (method, path, _, _) in route_table() {
            let key = (method.as_str(), path);
            let want = exp.get(&key).unwrap_or_else(|| panic!("route {method} {path} has no expected status per role in this test"));
            for (i, who) in [None, Some("ann"), Some("rev"), Some("adm")].into_iter().enumerate() {
                let (c, csrf) = match who {
                    Some(name) => login(&app, name).await,
                    None => (client(), String::new()),
                };
                let url = format!(
                    "{}{}",
                    app.base,
                    path.replace("{task}", &unknown)
                        .replace("{kind}", "forged")
                        .replace("{annotation}", &unknown)
                        .replace("{id}", &unknown)
                        .replace("{source}", &unknown)
                        .replace("{action}", "cancel")
                );
                let req = match method.as_str() {
                    "GET" => c.get(&url),
                    _ if path.ends_with("/heartbeat")
                        || path.ends_with("/draft")
                        || path.ends_with("/prefetch")
                        || path.ends_with("/hint") =>
                    {
                        c.post(&url).header("x-csrf-token", &csrf).json(&serde_json::json!({"text": "draft"}))
                    }
                    _ if path == "/login" => c.post(&url).form(&[("name", "nobody"), ("password", "wrong password")]),
                    _ => {
                        let new_name = format!("u{}", uuid::Uuid::new_v4().simple());
                        c.post(&url).form(&[
                            ("csrf", csrf.as_str()),
                            ("text", "the eye is blurred"),
                            ("reason", "broken_image"),
                            ("comment", "more detail"),
                            ("name", &new_name),
                            ("role", "annotator"),
                            ("password", "a long password"),
                        ])
                    }
                };
                let got = req.send().await.unwrap().status().as_u16();
                assert_eq!(got, want[i], "{method} {path} as {}", who.unwrap_or("anonymous"));
                n += 1;
            }
        }
        assert_eq!(n, exp.len() * 4, "the expectations name a route that no longer exists");
    });
}

#[test]
fn the_server_enforces_the_annotation_rules() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 2.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let (c, csrf) = login(&app, "ann").await;
        let r = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let page_url = format!("{}{}", app.base, r.headers()["location"].to_str().unwrap());
        let task = page_url.rsplit('/').next().unwrap().to_string();
        let page = c.get(&page_url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Annotate only unnatural or poorly integrated facial features"));
        // reopening "next" returns the same task
        let again = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_eq!(again.headers()["location"].to_str().unwrap(), format!("/annotate/{task}"));
        // the images of a held task are served, as PNG with caching headers
        let img = c.get(format!("{}/images/{task}/forged", app.base)).send().await.unwrap();
        assert_eq!(img.status(), StatusCode::OK);
        assert_eq!(img.headers()["content-type"], "image/png");
        assert!(img.headers()["cache-control"].to_str().unwrap().contains("immutable"));

        let submit = |text: &str, token: &str| {
            c.post(format!("{}/annotate/{task}/submit", app.base)).form(&[("csrf", token), ("text", text)]).send()
        };
        // too early: refused with the time still needed, the text kept (escaped)
        let r = submit("<script>alert(1)</script> The left eye is blurred.", &csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(body.contains("more seconds of active time are needed"), "{body}");
        let kept = body.split("<textarea").nth(1).unwrap_or_default().split("</textarea>").next().unwrap_or_default().to_string();
        assert!(
            kept.contains("&lt;script&gt;alert(1)&lt;/script&gt; The left eye is blurred.")
                || kept.contains("&#60;script&#62;alert(1)&#60;/script&#62; The left eye is blurred."),
            "{kept}"
        );
        assert!(!body.contains("<script>alert(1)"));
        // empty, too long, no CSRF token, a stale token
        let r = submit("  , . ", &csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("empty"));
        let r = submit(&"word ".repeat(121), &csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("121 words"));
        assert_eq!(submit("The nose is smeared.", "").await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(submit("The nose is smeared.", "0123456789abcdef").await.unwrap().status(), StatusCode::FORBIDDEN);
        let hb = |token: &str| {
            c.post(format!("{}/annotate/{task}/heartbeat", app.base))
                .header("x-csrf-token", token.to_string())
                .json(&serde_json::json!({}))
                .send()
        };
        assert_eq!(hb("nope").await.unwrap().status(), StatusCode::FORBIDDEN);

        // drafts are kept and restored
        let d = c
            .post(format!("{}/annotate/{task}/draft", app.base))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"text": "draft: the mouth and the NOSE", "regions": ["mouth", "ear"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(d.status(), StatusCode::OK);
        // the server suggests the chips from the text (the one extractor) and counts the words
        let j: serde_json::Value = d.json().await.unwrap();
        assert_eq!(j["suggested"], serde_json::json!(["mouth", "nose"]));
        assert_eq!(j["words"], 6);
        let page = c.get(&page_url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("draft: the mouth"));
        // the chips come back as the annotator left them (ear chosen by hand, nose switched off)
        for (label, on) in [("mouth", true), ("ear", true), ("nose", false), ("eye", false)] {
            let input = page.split(&format!("value=\"{label}\"")).nth(1).unwrap().split('>').next().unwrap().to_string();
            assert_eq!(input.contains("checked"), on, "chip {label}: {input}");
        }
        // a chip that is not one of the 21 labels is refused and nothing is stored
        let d = c
            .post(format!("{}/annotate/{task}/draft", app.base))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"text": "other", "regions": ["elbow"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(d.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(d.text().await.unwrap().contains("unknown region label"));
        assert!(c.get(&page_url).send().await.unwrap().text().await.unwrap().contains("draft: the mouth"));

        // another annotator cannot touch this task
        let (c2, csrf2) = login(&app, "ann2").await;
        let r = c2
            .post(format!("{}/annotate/{task}/submit", app.base))
            .form(&[("csrf", csrf2.as_str()), ("text", "The eyes.")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(c2.get(format!("{}/images/{task}/original", app.base)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        let other = c2.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_ne!(other.headers()["location"].to_str().unwrap(), format!("/annotate/{task}"), "two annotators never hold one task");

        // active time: heartbeats credit at most one interval each; a long silence earns one interval
        let j: serde_json::Value = hb(&csrf).await.unwrap().json().await.unwrap();
        let start = j["active_seconds"].as_f64().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        let j: serde_json::Value = hb(&csrf).await.unwrap().json().await.unwrap();
        let credited = j["active_seconds"].as_f64().unwrap() - start;
        assert!(credited <= 1.0 + 1e-6 && credited > 0.9, "a 2.6 s gap credited {credited}");
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            hb(&csrf).await.unwrap();
        }
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotations").fetch_one(&app.pool).await.unwrap(),
            0,
            "nothing stored so far"
        );
        // a chip outside the 21 labels is refused, nothing stored
        let r = c
            .post(format!("{}/annotate/{task}/submit", app.base))
            .body(format!("csrf={csrf}&chips=1&region=eye&region=elbow&text=The+eye"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotations").fetch_one(&app.pool).await.unwrap(), 0);
        let r = submit("The left eye is blurred and its lashes are smeared into the skin.", &csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let (text, words, active, regions): (String, i32, f64, Vec<String>) =
            sqlx::query_as("SELECT text, word_count, active_seconds, regions FROM annotations").fetch_one(&app.pool).await.unwrap();
        assert_eq!(words, 13);
        assert!(active >= 2.0);
        assert_eq!(regions, ["eye", "skin"]);
        assert!(text.starts_with("The left eye"));
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotation_revisions").fetch_one(&app.pool).await.unwrap(), 1);
        // the submitted task is gone from the annotator's hands: a replayed form is a conflict
        let r = submit("again", &csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(r.text().await.unwrap().contains("already submitted"));
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotation_revisions").fetch_one(&app.pool).await.unwrap(),
            1,
            "the replay stored nothing"
        );
        let (text2,): (String,) = sqlx::query_as("SELECT text FROM annotations").fetch_one(&app.pool).await.unwrap();
        assert_eq!(text2, text);
    });
}

#[test]
fn logins_are_throttled_and_sessions_are_cookies_only() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig::default()).await;
        let c = client();
        let r = c.post(format!("{}/login", app.base)).form(&[("name", "ann"), ("password", PASSWORD)]).send().await.unwrap();
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        for _ in 0..5 {
            let r = c.post(format!("{}/login", app.base)).form(&[("name", "rev"), ("password", "wrong password")]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = c.post(format!("{}/login", app.base)).form(&[("name", "rev"), ("password", PASSWORD)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "throttled even with the right password");
        // the stored session is a hash, not the cookie's token
        let token = cookie.split(';').next().unwrap().split('=').nth(1).unwrap().to_string();
        let raw: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sessions WHERE token_hash = $1").bind(&token).fetch_one(&app.pool).await.unwrap();
        assert_eq!(raw, 0);
    });
}

/// Behind a trusted reverse proxy the forwarded client is throttled, not the proxy; the header
/// from anyone else is ignored; under an https public URL cookies are `Secure` and responses HSTS.
#[test]
fn the_throttle_counts_the_forwarded_client_behind_a_trusted_proxy() {
    use mmtt::web::edge::Edge;
    let env = world();
    let env2 = common::Env::new();
    rt().block_on(async {
        let fail = async |app: &common::web::TestApp, name: &str, xff: &str, password: &str| {
            client()
                .post(format!("{}/login", app.base))
                .header("x-forwarded-for", xff)
                .form(&[("name", name), ("password", password)])
                .send()
                .await
                .unwrap()
        };
        // the proxy is this loopback peer
        let edge =
            Edge { public_url: Some("https://mmtt.example.org".parse().unwrap()), trusted_proxies: vec!["127.0.0.1".parse().unwrap()] };
        let app = spawn_app(&env, WebConfig { edge, ..WebConfig::default() }).await;
        // five failures from one client, each under another (unknown) name: that client is throttled
        for i in 0..5 {
            let r = fail(&app, &format!("nobody{i}"), "198.51.100.7", "wrong password").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = fail(&app, "ann", "198.51.100.7", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the forwarded client is throttled");
        // another client behind the same proxy is not; its cookie is Secure and the response HSTS
        let r = fail(&app, "ann", "198.51.100.8", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "one client's mistakes do not lock out everyone behind the proxy");
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
        assert!(r.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
        // a client that prepends its own entry is still counted under the address the proxy saw
        let r = fail(&app, "ann", "203.0.113.1, 198.51.100.7", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT ip FROM login_failures ORDER BY 1").fetch_all(&app.pool).await.unwrap();
        assert_eq!(stored, ["198.51.100.7"]);

        // no trusted proxy (the default): the header is ignored, the peer counts; no Secure, no HSTS
        let app = spawn_app(&env2, WebConfig::default()).await;
        for i in 0..5 {
            let r = fail(&app, &format!("nobody{i}"), &format!("198.51.100.{i}"), "wrong password").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = fail(&app, "ann", "198.51.100.99", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a forged header changes nothing");
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT ip FROM login_failures ORDER BY 1").fetch_all(&app.pool).await.unwrap();
        assert_eq!(stored, ["127.0.0.1"]);
        sqlx::query("DELETE FROM login_failures").execute(&app.pool).await.unwrap();
        let r = fail(&app, "ann", "198.51.100.99", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert!(!r.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
        assert!(r.headers().get("strict-transport-security").is_none());
    });
}

#[test]
fn a_reviewer_flags_returns_and_accepts() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 0.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let (c, csrf) = login(&app, "ann").await;
        let loc = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap().headers()["location"].to_str().unwrap().to_string();
        let task = loc.rsplit('/').next().unwrap().to_string();
        // the mask covers some parts; "hair" never is: a false positive to flag
        let text = "The hair has a hard seam and the skin looks waxy.";
        let r =
            c.post(format!("{}/annotate/{task}/submit", app.base)).form(&[("csrf", csrf.as_str()), ("text", text)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM annotations").fetch_one(&app.pool).await.unwrap();

        let (rc, rcsrf) = login(&app, "rev").await;
        let q = rc.get(format!("{}/review", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(q.contains(&format!("/review/{id}")));
        let page = rc.get(format!("{}/review/{id}", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("<mark>hair </mark>") || page.contains("<mark>hair</mark>"), "{page}");
        assert!(page.contains("Possible false positives"));
        let v1 = version_on(&page);
        // a form without its version is refused
        let r =
            rc.post(format!("{}/review/{id}/return", app.base)).form(&[("csrf", rcsrf.as_str()), ("comment", "x")]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // returning needs a comment; then the same annotator gets the task back with text and comment
        let r = rc
            .post(format!("{}/review/{id}/return", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v1.as_str()), ("comment", "")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = rc
            .post(format!("{}/review/{id}/return", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v1.as_str()), ("comment", "Say which seam.")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let (c2, _) = login(&app, "ann2").await;
        let other = c2.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_ne!(
            other.headers()["location"].to_str().unwrap(),
            format!("/annotate/{task}"),
            "a returned task goes to its own annotator only"
        );
        let back = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_eq!(back.headers()["location"].to_str().unwrap(), format!("/annotate/{task}"));
        let page = c.get(format!("{}/annotate/{task}", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Say which seam.") && page.contains("The hair has a hard seam"), "{page}");
        let refined = "The hair has a hard seam above the left brow and the skin looks waxy.";
        let r = c
            .post(format!("{}/annotate/{task}/submit", app.base))
            .form(&[("csrf", csrf.as_str()), ("text", refined)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // a decision on the page of the first version is stale now
        let r = rc
            .post(format!("{}/review/{id}/accept", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v1.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(r.text().await.unwrap().contains("changed since this page was loaded"));
        let fp: Vec<String> =
            sqlx::query_scalar("SELECT fp_labels FROM annotations WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
        assert!(fp.contains(&"hair".to_string()), "flags are stored with the submission: {fp:?}");
        let page = rc.get(format!("{}/review/{id}", app.base)).send().await.unwrap().text().await.unwrap();
        let v2 = version_on(&page);
        assert_ne!(v1, v2);
        // the reviewer removes the false positive and accepts
        let edited = "The skin looks waxy.";
        let r = rc
            .post(format!("{}/review/{id}/accept", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v2.as_str()), ("text", edited), ("chips", "1"), ("region", "skin")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let (status, stored, regions, fp): (String, String, Vec<String>, Vec<String>) =
            sqlx::query_as("SELECT status, text, regions, fp_labels FROM annotations WHERE id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), stored.as_str()), ("accepted", edited));
        assert_eq!(regions, ["skin"]);
        assert!(fp.contains(&"hair".to_string()), "the annotator's flags stay for the dashboard: {fp:?}");
        let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM annotation_revisions WHERE annotation_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
        assert_eq!(actions, ["submit", "return", "submit", "edit_accept"], "every version is kept");
        // a decided annotation cannot be decided again (a replayed form)
        let r = rc
            .post(format!("{}/review/{id}/accept", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v2.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM annotation_revisions WHERE annotation_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(n, 4, "the replay stored nothing");
    });
}

/// The `version` hidden field of a review page.
fn version_on(page: &str) -> String {
    page.split("name=\"version\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("a version field").to_string()
}

#[test]
fn fifty_annotators_claim_and_submit_in_parallel() {
    let env = common::Env::new();
    let out = env.ok(&["seed-synthetic", "--samples", "60", "--seed", "4"]);
    assert!(out.contains("seeded 60"), "{out}");
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM annotation_tasks WHERE status = 'open'"), 60);
    rt().block_on(async {
        let app = Arc::new(spawn_app(&env, WebConfig { min_seconds: 1.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await);
        for k in 0..50 {
            add_user(&app.pool, &UserName::parse(&format!("a{k}")).unwrap(), Role::Annotator, PASSWORD).await.unwrap();
        }
        let mut handles = Vec::new();
        for k in 0..50 {
            let app = app.clone();
            handles.push(tokio::spawn(async move {
                let (c, csrf) = login(&app, &format!("a{k}")).await;
                let r = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::SEE_OTHER);
                let task = r.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
                for _ in 0..3 {
                    let hb = c
                        .post(format!("{}/annotate/{task}/heartbeat", app.base))
                        .header("x-csrf-token", &csrf)
                        .json(&serde_json::json!({}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(hb.status(), StatusCode::OK);
                    tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
                }
                let hb = c
                    .post(format!("{}/annotate/{task}/heartbeat", app.base))
                    .header("x-csrf-token", &csrf)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(hb.status(), StatusCode::OK);
                let text = format!("Annotator {k}: the nose is smeared.");
                let r = c
                    .post(format!("{}/annotate/{task}/submit", app.base))
                    .form(&[("csrf", csrf.as_str()), ("text", text.as_str())])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::SEE_OTHER, "annotator {k}");
                task
            }));
        }
        let mut tasks = Vec::new();
        for h in handles {
            tasks.push(h.await.unwrap());
        }
        let distinct: std::collections::HashSet<&String> = tasks.iter().collect();
        assert_eq!(distinct.len(), 50, "no task was held twice");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM annotations").fetch_one(&app.pool).await.unwrap();
        assert_eq!(n, 50, "no submission lost");
        let short: i64 =
            sqlx::query_scalar("SELECT count(*) FROM annotations WHERE active_seconds < 1.0").fetch_one(&app.pool).await.unwrap();
        assert_eq!(short, 0);
        let authors: i64 = sqlx::query_scalar("SELECT count(DISTINCT annotator_id) FROM annotations").fetch_one(&app.pool).await.unwrap();
        assert_eq!(authors, 50);
    });
}

#[test]
fn seed_synthetic_refuses_real_data_and_fills_accepted_samples() {
    let env = common::Env::new();
    let dir = env.data.path().join("photos");
    common::copy_into(&common::sample_faces()[..1], &dir);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    let out = env.mmtt(&["seed-synthetic", "--samples", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds 1 real sources"));
    env.ok(&["seed-synthetic", "--samples", "12", "--state", "accepted", "--force", "--seed", "2"]);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM annotations WHERE status = 'accepted'"), 12);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM annotation_tasks WHERE status = 'accepted'"), 12);
    assert_eq!(env.db.scalar_i64("SELECT count(*) FROM forgeries"), 12);
    env.assert_store_consistent();
}

#[test]
fn prefetch_claims_one_task_ahead_and_the_dashboard_counts() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 0.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let (c, csrf) = login(&app, "ann").await;
        let loc = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap().headers()["location"].to_str().unwrap().to_string();
        let a = loc.rsplit('/').next().unwrap().to_string();
        let pf = |t: String| {
            c.post(format!("{}/annotate/{t}/prefetch", app.base)).header("x-csrf-token", &csrf).json(&serde_json::json!({})).send()
        };
        let j: serde_json::Value = pf(a.clone()).await.unwrap().json().await.unwrap();
        let b = j["next"].as_str().expect("a task ahead").to_string();
        assert_ne!(a, b);
        assert_eq!(j["images"].as_array().unwrap().len(), 3);
        // asking again does not claim a third task
        let j2: serde_json::Value = pf(a.clone()).await.unwrap().json().await.unwrap();
        assert_eq!(j2["next"].as_str(), Some(b.as_str()));
        // the prefetched images are the annotator's, not anyone else's
        for u in j["images"].as_array().unwrap() {
            let r = c.get(format!("{}{}", app.base, u.as_str().unwrap())).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let (c2, _) = login(&app, "ann2").await;
        assert_eq!(c2.get(format!("{}/images/{b}/forged", app.base)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(
            c2.get(format!("{}/annotate/next", app.base)).send().await.unwrap().status(),
            StatusCode::OK,
            "both tasks are held: none left"
        );
        // "next" keeps the current task first; after submitting, the prefetched one
        assert_eq!(c.get(format!("{}/annotate/next", app.base)).send().await.unwrap().headers()["location"].to_str().unwrap(), loc);

        // the page's own weight (HTML, CSS, JS) stays small and nothing is loaded from elsewhere
        let html = c.get(format!("{}{loc}", app.base)).send().await.unwrap().text().await.unwrap();
        let css = c.get(format!("{}/static/app.css", app.base)).send().await.unwrap().bytes().await.unwrap().len();
        let js = c.get(format!("{}/static/annotate.js", app.base)).send().await.unwrap().bytes().await.unwrap().len();
        assert!(html.len() + css + js < 300_000, "page weight {} bytes", html.len() + css + js);
        let external = regex_lite::Regex::new(r#"(src|href|action)\s*=\s*"(https?:)?//"#).unwrap();
        assert!(!external.is_match(&html), "the page loads nothing from another server");

        let r = c
            .post(format!("{}/annotate/{a}/submit", app.base))
            .form(&[("csrf", csrf.as_str()), ("text", "The nose is smeared.")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let then = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap();
        assert_eq!(then.headers()["location"].to_str().unwrap(), format!("/annotate/{b}"));

        let (ac, _) = login(&app, "adm").await;
        let dash = ac.get(format!("{}/admin", app.base)).send().await.unwrap().text().await.unwrap();
        let count = |k: &str| -> i64 {
            dash.split(&format!("data-k=\"{k}\">")).nth(1).and_then(|s| s.split('<').next()).and_then(|s| s.parse().ok()).unwrap_or(-1)
        };
        assert_eq!(count("forged"), 2);
        assert_eq!(count("in_review"), 1);
        assert_eq!(count("annotated"), 1);
        assert_eq!(count("annotating"), 1);
        assert_eq!(count("accepted"), 0);
        assert!(dash.contains("<td>ann</td>"), "per-annotator row");
        assert!(dash.contains("patch-inpaint"), "per-method row and the job");
    });
}

/// The text of a page's textarea named `name`.
fn textarea(page: &str, name: &str) -> String {
    page.split(&format!("<textarea name=\"{name}\""))
        .nth(1)
        .and_then(|s| s.split_once('>'))
        .map(|(_, s)| s)
        .unwrap_or_default()
        .split("</textarea>")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Bad input to every stored text field (over-long, a NUL byte, an unknown region, an absurd login
/// name) is refused with a message, the text kept, nothing stored, and no database error shown.
#[test]
fn bad_text_is_refused_kept_and_never_stored() {
    let env = world();
    rt().block_on(async {
        let app = spawn_app(&env, WebConfig { min_seconds: 0.0, heartbeat_seconds: 1.0, ..WebConfig::default() }).await;
        let (c, csrf) = login(&app, "ann").await;
        let loc = c.get(format!("{}/annotate/next", app.base)).send().await.unwrap().headers()["location"].to_str().unwrap().to_string();
        let task = loc.rsplit('/').next().unwrap().to_string();
        let submit = |fields: Vec<(&'static str, String)>| {
            let mut form = vec![("csrf", csrf.clone())];
            form.extend(fields);
            c.post(format!("{}/annotate/{task}/submit", app.base)).form(&form).send()
        };
        let stored = async || -> i64 { sqlx::query_scalar("SELECT count(*) FROM annotations").fetch_one(&app.pool).await.unwrap() };
        let no_db_error = |body: &str| {
            for leak in ["invalid byte sequence", "error returned from database", "sqlx", "index row", "0x00"] {
                assert!(!body.contains(leak), "a database error reached the page: {body}");
            }
        };

        // a 1,000,018-character explanation: refused with the limit, nothing stored
        let huge = format!("The eye is odd. {}", "x".repeat(1_000_002));
        let r = submit(vec![("text", huge)]).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(body.contains("at most 2000 are allowed"), "{}", &body[..body.len().min(2000)]);
        assert_eq!(stored().await, 0);

        // a NUL byte: 422 with the text kept and the reason, not a 500 with the database's words
        let nul = "The nose is\0 smeared.";
        let r = submit(vec![("text", nul.to_string())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(body.contains("NUL character"), "{body}");
        assert!(textarea(&body, "text").contains("The nose is"), "the text is kept: {body}");
        no_db_error(&body);
        assert_eq!(stored().await, 0);

        // an unknown region: refused like every other rule, with the text and the valid chips kept
        let r = submit(vec![
            ("text", "The left eye is blurred.".into()),
            ("chips", "1".into()),
            ("region", "eye".into()),
            ("region", "elbow".into()),
        ])
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(body.contains("unknown region label `elbow`"), "{body}");
        assert_eq!(textarea(&body, "text"), "The left eye is blurred.");
        assert!(body.contains("value=\"eye\" checked"), "the valid chip stays on");
        assert_eq!(stored().await, 0);

        // drafts: over 20,000 bytes or with a NUL byte are refused and leave the stored draft as it was
        let draft = |text: String| {
            c.post(format!("{}/annotate/{task}/draft", app.base)).header("x-csrf-token", &csrf).json(&serde_json::json!({"text": text})).send()
        };
        assert_eq!(draft("kept draft".into()).await.unwrap().status(), StatusCode::OK);
        for bad in ["y".repeat(20_001), "a draft with \0 inside".to_string()] {
            let r = draft(bad).await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let body = r.text().await.unwrap();
            assert!(body.contains("at most 20000 are allowed") || body.contains("NUL character"), "{body}");
            no_db_error(&body);
        }
        let kept: Option<String> =
            sqlx::query_scalar("SELECT draft FROM annotation_tasks WHERE forgery_id = $1::uuid").bind(&task).fetch_one(&app.pool).await.unwrap();
        assert_eq!(kept.as_deref(), Some("kept draft"));

        // a good submission, then the reviewer's edits and comments are bounded the same way
        let r = submit(vec![("text", "The hair has a hard seam.".into())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM annotations").fetch_one(&app.pool).await.unwrap();
        let (rc, rcsrf) = login(&app, "rev").await;
        let page = rc.get(format!("{}/review/{id}", app.base)).send().await.unwrap().text().await.unwrap();
        let v = version_on(&page);
        let accept = |text: String, comment: String| {
            rc.post(format!("{}/review/{id}/accept", app.base))
                .form(&[("csrf", rcsrf.as_str()), ("version", v.as_str()), ("text", text.as_str()), ("comment", comment.as_str())])
                .send()
        };
        let r = accept("The hair has\0 a seam.".into(), String::new()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(body.contains("NUL character") && textarea(&body, "text").contains("The hair has"), "{body}");
        no_db_error(&body);
        let r = accept("The hair has a seam.".into(), "c".repeat(2_001)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("the comment has 2001 characters"));
        let r = rc
            .post(format!("{}/review/{id}/return", app.base))
            .form(&[("csrf", rcsrf.as_str()), ("version", v.as_str()), ("comment", &format!("Say which seam.{}", "!".repeat(2_000)))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.text().await.unwrap();
        assert!(textarea(&body, "comment").starts_with("Say which seam."), "the comment is kept");
        let (status, revisions): (String, i64) = sqlx::query_as(
            "SELECT a.status, (SELECT count(*) FROM annotation_revisions r WHERE r.annotation_id = a.id) FROM annotations a WHERE a.id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!((status.as_str(), revisions), ("submitted", 1), "nothing stored by the refused reviews");

        // an admin adding a user with an absurd name gets a bounded message, not a 500
        let (ac, acsrf) = login(&app, "adm").await;
        let long_name = "n".repeat(10_000);
        let r = ac
            .post(format!("{}/admin/users", app.base))
            .form(&[("csrf", acsrf.as_str()), ("name", long_name.as_str()), ("role", "annotator"), ("password", "a long password")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().len() < 10_000, "the message does not echo the whole name");

        // login names of 10,000 random characters: refused, counted, and throttled like any failure
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures").fetch_one(&app.pool).await.unwrap();
        let anon = client();
        for k in 0..5 {
            let name: String = (0..10_000).map(|i| char::from_u32(0x4e00 + ((i * 7919 + k * 104_729) % 20_000) as u32).unwrap()).collect();
            let r = anon.post(format!("{}/login", app.base)).form(&[("name", name.as_str()), ("password", "whatever it is")]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {k}");
        }
        let after: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures").fetch_one(&app.pool).await.unwrap();
        assert_eq!(after - before, 5, "every attempt is counted");
        let r = anon.post(format!("{}/login", app.base)).form(&[("name", "ann"), ("password", PASSWORD)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the address is throttled");
    });
}
