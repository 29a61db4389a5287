//! Model-assisted annotation end to end, with the real `mmtt serve` (its embedded worker runs the
//! jobs), PostgreSQL and a tiny ForgeryTalker trained by the platform itself (an FPN job, then a
//! stage-2 job whose instruction the FPN fills): the admin registers the finished run on the
//! Assist page (refusals name the field), an `assist` job computes the suggestions ahead; in
//! `prefill` the annotator's draft starts as the suggestion, and the stored token counts and edit
//! distance are exact for a known edit; in `hint` the hint waits for a first draft, then gives the
//! regions and the mask; a held-out forgery is served and recorded unassisted; with assistance off
//! the stored row keeps every default. The reviewer sees the checks (a reference to the original,
//! the model's regions) and the risk-ordered queue; the dashboard separates assisted from
//! unassisted work and compares the held-out arm.

mod common;

use common::Env;
use common::admin::{add_users, count, login, serve, token, wait_job};
use mmtt::dataset::assist::{EditMeasure, tokens};
use reqwest::StatusCode;
use std::path::Path;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A finished (short, tiny) FPN run and a stage-2 run on its regions: the stage-2 job's id.
fn trained_model(env: &Env) -> String {
    let fpn_cfg = env.data.path().join("fpn.toml");
    std::fs::write(
        &fpn_cfg,
        "preset = \"tiny\"\nsteps = 20\nbatch_size = 2\nwarmup_steps = 2\ncheckpoint_every = 10\neval_every = 10\n[data]\nlimit = 8\n",
    )
    .unwrap();
    let v = env.json(&["train", "fpn", "--config", &fpn_cfg.display().to_string(), "--wait", "--json"]);
    let fpn = v["summary"]["best_dir"].as_str().expect("an FPN checkpoint").to_string();
    let cfg = env.data.path().join("talker.toml");
    std::fs::write(
        &cfg,
        format!(
            "preset = \"tiny\"\nregions = \"fpn\"\nfpn = \"{fpn}\"\nsteps = 30\nbatch_size = 2\nwarmup_steps = 2\ncheckpoint_every = 30\neval_every = 30\neval_limit = 2\n[data]\nlimit = 8\n"
        ),
    )
    .unwrap();
    let v = env.json(&["train", "talker", "--config", &cfg.display().to_string(), "--wait", "--json"]);
    assert!(Path::new(v["summary"]["best_dir"].as_str().expect("a stage-2 checkpoint")).is_dir(), "{v}");
    v["job"].as_str().or_else(|| v["id"].as_str()).expect("the job id").to_string()
}

async fn claim_next(c: &reqwest::Client, base: &str) -> String {
    let r = c.get(format!("{base}/annotate/next")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    r.headers()["location"].to_str().unwrap().trim_start_matches("/annotate/").to_string()
}

async fn submit(c: &reqwest::Client, base: &str, csrf: &str, task: &str, text: &str) {
    let r = c.post(format!("{base}/annotate/{task}/submit")).form(&[("csrf", csrf), ("text", text)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "submit {task}: {}", r.text().await.unwrap());
}

async fn settings(adm: &reqwest::Client, base: &str, csrf: &str, mode: &str, model: &str, holdout: &str) {
    let r = adm
        .post(format!("{base}/admin/assist/settings"))
        .form(&[("csrf", csrf), ("mode", mode), ("model", model), ("holdout", holdout)])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection() || r.status().is_success(), "settings {mode}: {}", r.status());
}

fn textarea(page: &str) -> String {
    let from = page.split("id=\"text\"").nth(1).unwrap();
    let body = from.split_once('>').unwrap().1;
    let raw = body.split("</textarea>").next().unwrap();
    raw.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#x27;", "'").replace("&#39;", "'")
}

#[test]
fn assistance_modes_review_checks_and_the_dashboard() {
    let env = Env::new();
    env.ok(&["seed-synthetic", "--samples", "40", "--state", "accepted"]);
    add_users(&env);
    let talker_job = trained_model(&env);
    // forgeries still to annotate
    env.ok(&["seed-synthetic", "--samples", "6", "--state", "forged", "--seed", "2"]);
    let served = serve(&env, &["--min-seconds", "0"]);
    let tok = token(&env);
    rt().block_on(async {
        let base = &served.base;
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let open = count(&pool, "SELECT count(*) FROM annotation_tasks WHERE status = 'open'").await;
        assert!(open >= 4, "{open} open tasks");
        let (adm, acsrf) = login(base, "adm").await;
        let page = adm.get(format!("{base}/admin/assist")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(&format!("<option value=\"{talker_job}\">")), "the finished stage-2 run is offered");

        // refusals name the field and store nothing
        for (form, field) in [
            (vec![("name", ""), ("talker_job", talker_job.as_str())], "name"),
            (vec![("name", "m"), ("checkpoint", "/nonexistent/best")], "checkpoint"),
            (vec![("name", "m")], "talker_job"),
        ] {
            let mut f = form.clone();
            f.push(("csrf", &acsrf));
            let r = adm.post(format!("{base}/admin/assist/models")).form(&f).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{form:?}");
            assert!(r.text().await.unwrap().contains(&format!("data-field=\"{field}\"")), "{form:?}");
        }
        assert_eq!(count(&pool, "SELECT count(*) FROM assist_models").await, 0);
        let r = adm
            .post(format!("{base}/admin/assist/models"))
            .form(&[("csrf", acsrf.as_str()), ("name", "tiny-trained"), ("talker_job", talker_job.as_str())])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "register: {}", r.status());
        let model: uuid::Uuid = sqlx::query_scalar("SELECT id FROM assist_models WHERE name = 'tiny-trained'").fetch_one(&pool).await.unwrap();
        let model_s = model.to_string();
        // a mode without a model is refused
        let r = adm.post(format!("{base}/admin/assist/settings")).form(&[("csrf", acsrf.as_str()), ("mode", "prefill")]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

        // suggestions ahead of time, as a job
        let r = reqwest::Client::new()
            .post(format!("{base}/admin/assist/suggest"))
            .bearer_auth(&tok)
            .json(&serde_json::json!({"model": model_s, "num_beams": "1", "max_new_tokens": "12"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let job = r.json::<serde_json::Value>().await.unwrap()["job"].as_str().unwrap().to_string();
        let v = wait_job(&reqwest::Client::new(), base, &tok, &job).await;
        assert_eq!(v["state"], "done", "{v}");
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM suggestions WHERE model_id = $1").bind(model).fetch_one(&pool).await.unwrap(), open);
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM suggestions s JOIN blobs b ON b.hash = s.mask_hash WHERE model_id = $1")
                .bind(model)
                .fetch_one(&pool)
                .await
                .unwrap(), open);

        let (ann, csrf) = login(base, "ann").await;
        // prefill: the draft starts as the suggestion; an edit appends five tokens
        settings(&adm, base, &acsrf, "prefill", &model_s, "0").await;
        let t1 = claim_next(&ann, base).await;
        let page = ann.get(format!("{base}/annotate/{t1}")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"assist-note\""), "the prefill note");
        let suggestion: String = sqlx::query_scalar("SELECT text FROM suggestions WHERE forgery_id = $1::uuid AND model_id = $2")
            .bind(&t1)
            .bind(model)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(textarea(&page).trim(), suggestion.trim(), "the draft is the suggestion");
        let edited = format!("{} The chin is blurred.", suggestion.trim());
        submit(&ann, base, &csrf, &t1, &edited).await;
        let row: (String, bool, Option<String>, Option<i32>, Option<i32>, Option<i32>) = sqlx::query_as("SELECT assist_mode, assist_holdout, suggestion_text, suggestion_tokens, text_tokens, suggestion_edit_distance FROM annotations WHERE forgery_id = $1::uuid").bind(&t1)
        .fetch_one(&pool)
        .await
        .unwrap();
        let n = tokens(&suggestion).len() as i32;
        assert_eq!(row, ("prefill".into(), false, Some(suggestion.clone()), Some(n), Some(n + 5), Some(5)));

        // hint: refused before a first draft, then regions and mask
        settings(&adm, base, &acsrf, "hint", &model_s, "0").await;
        let t2 = claim_next(&ann, base).await;
        let page = ann.get(format!("{base}/annotate/{t2}")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"hint-button\"") && !page.contains("id=\"assist-note\""));
        assert!(textarea(&page).trim().is_empty(), "hint mode leaves the draft empty");
        let hint = |c: &reqwest::Client| c.post(format!("{base}/annotate/{t2}/hint")).header("x-csrf-token", &csrf).send();
        assert_eq!(hint(&ann).await.unwrap().status(), StatusCode::CONFLICT);
        let own = "The nose looks smeared near the nostrils.";
        let r = ann
            .post(format!("{base}/annotate/{t2}/draft"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"text": own}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let h: serde_json::Value = hint(&ann).await.unwrap().json().await.unwrap();
        let predicted: Vec<String> = sqlx::query_scalar("SELECT regions FROM suggestions WHERE forgery_id = $1::uuid AND model_id = $2")
            .bind(&t2)
            .bind(model)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(h["regions"], serde_json::json!(predicted));
        let mask = ann.get(format!("{base}{}", h["mask_url"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(mask.status(), StatusCode::OK);
        assert!(image::load_from_memory(&mask.bytes().await.unwrap()).is_ok(), "the mask is a PNG");
        let hint_sug: String = sqlx::query_scalar("SELECT text FROM suggestions WHERE forgery_id = $1::uuid AND model_id = $2")
            .bind(&t2)
            .bind(model)
            .fetch_one(&pool)
            .await
            .unwrap();
        submit(&ann, base, &csrf, &t2, own).await;
        let m = EditMeasure::of(&hint_sug, own);
        let row: (String, Option<i32>) =
            sqlx::query_as("SELECT assist_mode, suggestion_edit_distance FROM annotations WHERE forgery_id = $1::uuid").bind(&t2).fetch_one(&pool).await.unwrap();
        assert_eq!(row, ("hint".into(), Some(m.edit_distance as i32)));

        // held out (fraction 1): served and recorded unassisted
        settings(&adm, base, &acsrf, "prefill", &model_s, "1").await;
        let t3 = claim_next(&ann, base).await;
        let page = ann.get(format!("{base}/annotate/{t3}")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("id=\"assist\"") && textarea(&page).trim().is_empty());
        let referring = "The left eye is blurred compared to the original and the nose is smeared.";
        submit(&ann, base, &csrf, &t3, referring).await;
        let row: (String, bool, Option<String>) =
            sqlx::query_as("SELECT assist_mode, assist_holdout, suggestion_text FROM annotations WHERE forgery_id = $1::uuid").bind(&t3).fetch_one(&pool).await.unwrap();
        assert_eq!(row, ("off".into(), true, None));

        // off: the page and the stored row are as before assistance existed
        settings(&adm, base, &acsrf, "off", &model_s, "0.2").await;
        let t4 = claim_next(&ann, base).await;
        let page = ann.get(format!("{base}/annotate/{t4}")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("id=\"assist\"") && !page.contains("hint-button"));
        submit(&ann, base, &csrf, &t4, "The mouth corners are smeared and the teeth are fused.").await;
        let row: (String, bool, Option<uuid::Uuid>, Option<String>, Option<i32>) = sqlx::query_as("SELECT assist_mode, assist_holdout, suggestion_model, suggestion_text, suggestion_edit_distance FROM annotations WHERE forgery_id = $1::uuid").bind(&t4)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(row, ("off".into(), false, None, None, None));
        let hint_off = ann.post(format!("{base}/annotate/{t4}/hint")).header("x-csrf-token", &csrf).send().await.unwrap();
        assert_ne!(hint_off.status(), StatusCode::OK);

        // the reviewer: checks with their trigger words, and the risk order
        settings(&adm, base, &acsrf, "hint", &model_s, "0").await;
        let (rev, _) = login(base, "rev").await;
        let id3: uuid::Uuid = sqlx::query_scalar("SELECT id FROM annotations WHERE forgery_id = $1::uuid").bind(&t3).fetch_one(&pool).await.unwrap();
        let page = rev.get(format!("{base}/review/{id3}")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"check-original\"") && page.contains("<mark class=\"trigger\">compared to the original</mark>"), "{page}");
        assert!(page.contains("id=\"check-model\""), "the model's regions are compared");
        let id4: uuid::Uuid = sqlx::query_scalar("SELECT id FROM annotations WHERE forgery_id = $1::uuid").bind(&t4).fetch_one(&pool).await.unwrap();
        let page = rev.get(format!("{base}/review/{id4}")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("id=\"check-original\""));
        let queue = rev.get(format!("{base}/review?order=risk")).send().await.unwrap().text().await.unwrap();
        let scores: Vec<f64> = queue.split("data-risk=\"").skip(1).map(|s| s.split('"').next().unwrap().parse().unwrap()).collect();
        assert_eq!(scores.len(), 4, "{queue}");
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "riskiest first: {scores:?}");
        let again = rev.get(format!("{base}/review?order=risk")).send().await.unwrap().text().await.unwrap();
        assert_eq!(queue, again, "the order is deterministic");
        let first_link = queue.split("href=\"/review/").nth(1).unwrap().split('"').next().unwrap().to_string();
        let by_age = rev.get(format!("{base}/review")).send().await.unwrap().text().await.unwrap();
        assert!(by_age.contains("id=\"order-risk\"") && !by_age.contains("data-risk"));
        assert!(queue.contains(&format!("href=\"/review/{first_link}\"")));

        // the dashboard: assisted vs unassisted, and the held-out comparison
        let j: serde_json::Value =
            reqwest::Client::new().get(format!("{base}/admin/dashboard/assist.json")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let arm = |who: Option<&str>, assisted: bool| {
            j["rows"].as_array().unwrap().iter().find(|r| r["annotator"].as_str() == who && r["assisted"] == assisted).cloned()
        };
        let assisted = arm(Some("ann"), true).expect("ann's assisted row");
        assert_eq!(assisted["figures"]["annotations"], 2);
        let unassisted = arm(Some("ann"), false).expect("ann's unassisted row");
        // two new ones plus the 40 accepted synthetic captions written by ann's seed? count from the table
        let ann_unassisted = count(&pool, "SELECT count(*) FROM annotations a JOIN users u ON u.id = a.annotator_id WHERE u.name = 'ann' AND suggestion_model IS NULL").await;
        assert_eq!(unassisted["figures"]["annotations"], ann_unassisted);
        let kept = EditMeasure::of(&suggestion, &edited).kept_share();
        let kept_hint = m.kept_share();
        let want = (kept + kept_hint) / 2.0;
        assert!((assisted["figures"]["kept_share"].as_f64().unwrap() - want).abs() < 1e-9, "{assisted}");
        let cmp = j["comparison"].as_array().unwrap();
        let arm_of = |a: &str| cmp.iter().find(|r| r["arm"] == a).cloned().unwrap();
        assert_eq!(arm_of("assisted")["annotations"], 2);
        assert_eq!(arm_of("held-out")["annotations"], 1);
        assert_eq!(arm_of("held-out")["waiting"], 1.0);
        let words = referring.split_whitespace().count() as f64;
        assert_eq!(arm_of("held-out")["mean_words"], words);
        // exports separate assisted from unassisted annotations
        let out = env.data.path().join("export-hf");
        env.ok(&["export", "--format", "hf", "--out", &out.display().to_string(), "--include-unreviewed"]);
        let mut records = std::collections::HashMap::new();
        for split in ["train", "validation", "test"] {
            for line in std::fs::read_to_string(out.join(split).join("metadata.jsonl")).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                records.insert(v["id"].as_str().unwrap().to_string(), v);
            }
        }
        let a1 = &records[&t1]["assistance"];
        assert_eq!((a1["mode"].as_str(), a1["held_out"].as_bool(), a1["edit_distance"].as_i64()), (Some("prefill"), Some(false), Some(5)), "{a1}");
        assert_eq!(a1["suggestion_model"], serde_json::json!(model_s));
        assert_eq!(records[&t3]["assistance"]["held_out"], true);
        assert!(records[&t4].get("assistance").is_none(), "assistance off: the record is as before");
        let dash = adm.get(format!("{base}/admin")).send().await.unwrap().text().await.unwrap();
        assert!(dash.contains("id=\"assist-arms\"") && dash.contains("id=\"assist-comparison\""));
        assert_eq!(dash.matches("per day, assisted and unassisted").count(), 4, "four charts");
    });
}
