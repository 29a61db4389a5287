//! The admin console over HTTP, on the real `mmtt serve` (its embedded worker runs the jobs the
//! pages submit) and a fresh database per test: only admins reach the console, every form refuses
//! bad input with a message naming the field and stores nothing, scripts use bearer tokens
//! without CSRF, and a finished export downloads as one tar that resumes with range requests.

mod common;

use common::Env;
use common::admin::{Served, accept_all, add_users, client, count, login, multipart, serve, token, wait_job};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every console route (from the route table), with a concrete URL.
fn console_routes() -> Vec<(String, String)> {
    let unknown = uuid::Uuid::new_v4().to_string();
    mmtt::web::route_table()
        .into_iter()
        .filter(|(_, p, a, _)| {
            *a == mmtt::web::Access::Admin
                && [
                    "/admin/jobs",
                    "/admin/import",
                    "/admin/masks",
                    "/admin/generate",
                    "/admin/export",
                    "/admin/eval",
                    "/admin/train",
                    "/admin/leaderboard",
                    "/admin/actions",
                ]
                .iter()
                .any(|x| p.starts_with(x))
        })
        .map(|(m, p, _, _)| (m.to_string(), p.replace("{id}", &unknown).replace("{source}", &unknown).replace("{action}", "cancel")))
        .collect()
}

fn started(env: &Env) -> Served {
    add_users(env);
    serve(env, &[])
}

#[test]
fn only_admins_reach_the_console_and_tokens_act_as_their_admin() {
    let env = Env::new();
    let served = started(&env);
    let tok = token(&env);
    rt().block_on(async {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let base = &served.base;
        let routes = console_routes();
        assert!(routes.len() >= 22, "the console's routes are in the route table: {routes:?}");
        let anon = client();
        let (ann, ann_csrf) = login(base, "ann").await;
        let (rev, rev_csrf) = login(base, "rev").await;
        let (adm, adm_csrf) = login(base, "adm").await;
        for (method, url) in &routes {
            let full = format!("{base}{url}");
            for (who, c, csrf, want) in [
                ("anonymous", &anon, "", StatusCode::UNAUTHORIZED),
                ("annotator", &ann, ann_csrf.as_str(), StatusCode::FORBIDDEN),
                ("reviewer", &rev, rev_csrf.as_str(), StatusCode::FORBIDDEN),
            ] {
                let r = if method == "GET" { c.get(&full) } else { c.post(&full).form(&[("csrf", csrf)]) };
                assert_eq!(r.send().await.unwrap().status(), want, "{method} {url} as {who}");
            }
            // the admin gets through (a page, a 404 for the unknown job, or a refusal of the empty form)
            let r = if method == "GET" { adm.get(&full) } else { adm.post(&full).form(&[("csrf", adm_csrf.as_str())]) };
            let s = r.send().await.unwrap().status();
            assert!(
                [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_REQUEST].contains(&s),
                "{method} {url} as admin: {s}"
            );
            // a script with the token: JSON
            let r = if method == "GET" { anon.get(&full) } else { anon.post(&full).json(&serde_json::json!({})) };
            let r = r.bearer_auth(&tok).send().await.unwrap();
            let s = r.status();
            assert!(s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN, "{method} {url} with a token: {s}");
            if !url.contains("/preview/") && !url.ends_with("/download") && s != StatusCode::BAD_REQUEST {
                let ct = r.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                assert!(ct.starts_with("application/json"), "{method} {url} with a token answers JSON, not {ct}");
            }
        }
        // the pages as the admin sees them, and their JSON
        for page in [
            "/admin/jobs",
            "/admin/import",
            "/admin/masks",
            "/admin/generate",
            "/admin/export",
            "/admin/eval",
            "/admin/train",
            "/admin/leaderboard",
            "/admin/actions",
        ] {
            let html = adm.get(format!("{base}{page}")).send().await.unwrap().text().await.unwrap();
            assert!(html.contains("/static/admin.js") && html.contains("href=\"/admin/jobs\""), "{page} is a console page");
            let r = adm.get(format!("{base}{page}")).header(ACCEPT, "application/json").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{page} JSON");
            let _: serde_json::Value = r.json().await.unwrap();
        }
        let board: serde_json::Value =
            anon.get(format!("{base}/admin/leaderboard")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(board["rows"].as_array().unwrap().len(), 8, "the paper's rows: {board}");
        assert_eq!(board["rows"][4]["name"], "ForgeryTalker (paper)");
        assert_eq!(board["rows"][4]["cells"][0], 21.5);

        // bad, revoked and missing tokens
        let r = anon.get(format!("{base}/admin/jobs")).bearer_auth("mmtt_not-a-token").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        count(&pool, "WITH r AS (UPDATE api_tokens SET revoked = true RETURNING 1) SELECT count(*) FROM r").await;
        let r = anon.get(format!("{base}/admin/jobs")).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a revoked token");
        // only the hash is stored
        let stored = count(&pool, &format!("SELECT count(*) FROM api_tokens WHERE token_hash = '{tok}'")).await;
        assert_eq!(stored, 0);
        // a session needs its CSRF token; a bearer request does not
        let r = adm.post(format!("{base}/admin/masks")).form(&[("seed", "1")]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    });
    // tokens are for admins only
    let out = env.mmtt(&["user", "token", "ann"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens are for admins"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.mmtt(&["user", "token", "nobody"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named `nobody`"));
}

/// What a refused request must leave untouched.
fn nothing_stored(env: &Env) {
    for t in ["jobs", "admin_actions", "sources", "mask_plans", "forge_items", "exports"] {
        assert_eq!(env.db.scalar_i64(&format!("SELECT count(*) FROM {t}")), 0, "a refused request stored a row in {t}");
    }
    for d in ["uploads", "evals", "exports"] {
        let dir = env.data.path().join(d);
        let left: Vec<_> = std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "a refused request left files in {}: {left:?}", dir.display());
    }
}

#[test]
fn every_form_refuses_bad_input_naming_the_field_and_stores_nothing() {
    let env = Env::new();
    let roots = env.data.path().join("allowed");
    std::fs::create_dir_all(roots.join("empty")).unwrap();
    std::fs::write(roots.join("a-file.txt"), "not a folder").unwrap();
    let outside = tempfile::tempdir().unwrap();
    common::copy_into(&common::sample_faces(), outside.path());
    // a model that does not match its manifest
    let models = env.data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("mat.onnx"), b"this is not an ONNX graph").unwrap();
    add_users(&env);
    let served = serve(&env, &["--import-root", &roots.display().to_string()]);
    let tok = token(&env);
    let faces = common::sample_faces();
    let good = std::fs::read(&faces[0]).unwrap();
    let jpeg = std::fs::read(&faces[1]).unwrap();
    rt().block_on(async {
        let base = &served.base;
        let c = client();
        let post = |path: &str, body: serde_json::Value| c.post(format!("{base}{path}")).bearer_auth(&tok).json(&body).send();
        let cases: Vec<(&str, serde_json::Value, &str, &str)> = vec![
            ("/admin/import", serde_json::json!({"dataset": "photos", "folder": ""}), "folder", "missing"),
            (
                "/admin/import",
                serde_json::json!({"dataset": "photos", "folder": roots.join("nope").display().to_string()}),
                "folder",
                "does not exist",
            ),
            (
                "/admin/import",
                serde_json::json!({"dataset": "photos", "folder": outside.path().display().to_string()}),
                "folder",
                "outside the allowed roots",
            ),
            (
                "/admin/import",
                serde_json::json!({"dataset": "photos", "folder": roots.join("a-file.txt").display().to_string()}),
                "folder",
                "not a folder",
            ),
            (
                "/admin/import",
                serde_json::json!({"dataset": "photos", "folder": roots.join("empty").display().to_string()}),
                "folder",
                "no images",
            ),
            ("/admin/import", serde_json::json!({"dataset": "lfw", "folder": roots.display().to_string()}), "dataset", "unknown layout"),
            ("/admin/import", serde_json::json!({"dataset": "photos", "folder": "relative/path"}), "folder", "absolute"),
            (
                "/admin/import",
                serde_json::json!({"dataset": "photos", "folder": roots.display().to_string(), "limit": "0"}),
                "limit",
                "at least 1",
            ),
            ("/admin/masks", serde_json::json!({"seed": "one"}), "seed", "not a whole number"),
            ("/admin/masks", serde_json::json!({"seed": "1"}), "dataset", "import faces first"),
            ("/admin/masks", serde_json::json!({"seed": "1", "dataset": "lfw"}), "dataset", "unknown dataset"),
            ("/admin/generate", serde_json::json!({"method": "patch-inpaint", "count": "0", "seed": "1"}), "count", "at least 1"),
            ("/admin/generate", serde_json::json!({"method": "deepfacelab", "count": "3"}), "method", "unknown method"),
            ("/admin/generate", serde_json::json!({"method": "mat", "count": "3"}), "method", "cannot run on this server"),
            ("/admin/generate", serde_json::json!({"method": "lama", "count": "3"}), "method", "missing"),
            ("/admin/generate", serde_json::json!({"method": "patch-inpaint", "count": "3", "device": "tpu"}), "device", "cpu or cuda"),
            ("/admin/generate", serde_json::json!({"method": "patch-inpaint", "count": "3", "prompt": "a face"}), "prompt", "sdxl only"),
            ("/admin/generate", serde_json::json!({"method": "sdxl", "count": "3", "strength": "1.5"}), "strength", "at most 1"),
            (
                "/admin/generate",
                serde_json::json!({"mix": "paper", "mix_swap": "mat", "mix_transformer": "mat", "mix_diffusion": "sdxl", "count": "3"}),
                "mix_swap",
                "not a face swap",
            ),
            ("/admin/export", serde_json::json!({"format": "parquet"}), "format", "unknown format"),
            (
                "/admin/export",
                serde_json::json!({"format": "hf", "resplit": "on", "split_seed": "3", "ratios": "8:1"}),
                "ratios",
                "train:validation:test",
            ),
            ("/admin/export", serde_json::json!({"format": "hf", "split_seed": "3"}), "split_seed", "only applies with re-split"),
            ("/admin/export", serde_json::json!({"format": "hf", "method": ["nope"]}), "method", "unknown method"),
            ("/admin/export", serde_json::json!({"format": "hf", "shard_mb": "-3"}), "shard_mb", "at least 1"),
        ];
        for (path, body, field, says) in &cases {
            let r = post(path, body.clone()).await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["field"], *field, "{path} {body}: {v}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.contains(says), "{path} {body}: `{msg}` should say `{says}`");
        }

        // uploads: undecodable, truncated, too many, too large, none
        let upload = |parts: Vec<common::admin::Part<'static>>| {
            let (ct, body) = multipart(&parts);
            c.post(format!("{base}/admin/import/upload")).bearer_auth(&tok).header(CONTENT_TYPE, ct).body(body).send()
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let (good, jpeg): (&'static [u8], &'static [u8]) = (leak(good), leak(jpeg));
        let upload_cases: Vec<(Vec<common::admin::Part<'static>>, &str)> = vec![
            (
                vec![("photos", Some("a.png"), good.to_vec()), ("photos", Some("notes.txt"), b"hello, not a picture".to_vec())],
                "`notes.txt` is not usable: not an image",
            ),
            (vec![("photos", Some("cut.jpg"), jpeg[..jpeg.len() / 2].to_vec())], "truncated JPEG"),
            ((0..201).map(|_| ("photos", Some("x.png"), good[..64].to_vec())).collect(), "too many files"),
            (vec![("photos", Some("huge.png"), vec![0u8; 21 * 1024 * 1024])], "larger than 20 MB"),
            (vec![("csrf", None, b"x".to_vec())], "no photo chosen"),
        ];
        for (parts, says) in upload_cases {
            let r = upload(parts).await.unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{says}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["field"], "photos");
            assert!(v["error"].as_str().unwrap().contains(says), "`{}` should say `{says}`", v["error"]);
        }

        // evaluation: no ground truth yet, a bad prediction line
        let (ct, body) =
            multipart(&[("name", None, b"my model".to_vec()), ("predictions", Some("p.jsonl"), b"{\"image_id\": \"a\"}\n".to_vec())]);
        let r = c.post(format!("{base}/admin/eval")).bearer_auth(&tok).header(CONTENT_TYPE, ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["field"], "truth", "{v}");
        let (ct, body) = multipart(&[("predictions", Some("p.jsonl"), b"x".to_vec())]);
        let r = c.post(format!("{base}/admin/eval")).bearer_auth(&tok).header(CONTENT_TYPE, ct).body(body).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["field"], "name", "{v}");

        // the page variant: 422, the message, the admin's values re-shown
        let (adm, csrf) = login(base, "adm").await;
        let bad = outside.path().display().to_string();
        let r = adm
            .post(format!("{base}/admin/import"))
            .form(&[("csrf", csrf.as_str()), ("dataset", "ffhq"), ("folder", bad.as_str()), ("limit", "5")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"form-error\"") && html.contains("outside the allowed roots"), "{html}");
        assert!(html.contains(&format!("value=\"{bad}\"")) && html.contains("value=\"5\""), "the values are re-shown");
        assert!(html.contains("<option value=\"ffhq\" selected>"), "the layout is re-selected");
        let r = adm
            .post(format!("{base}/admin/generate"))
            .form(&[("csrf", csrf.as_str()), ("method", "patch-inpaint"), ("count", "0"), ("seed", "9")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = r.text().await.unwrap();
        assert!(html.contains("count: 0 makes nothing") && html.contains("value=\"9\""), "{html}");
    });
    nothing_stored(&env);
}

#[test]
fn an_export_downloads_as_one_tar_that_resumes_with_range_requests() {
    let env = Env::new();
    let served = started(&env);
    let tok = token(&env);
    let faces = common::sample_faces();
    rt().block_on(async {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        let base = &served.base;
        let c = client();
        // upload the sample photos; the server's worker imports them
        let files: Vec<(String, Vec<u8>)> =
            faces.iter().map(|f| (f.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(f).unwrap())).collect();
        let parts: Vec<common::admin::Part<'_>> = files.iter().map(|(n, b)| ("photos", Some(n.as_str()), b.clone())).collect();
        let (ct, body) = multipart(&parts);
        let r = c.post(format!("{base}/admin/import/upload")).bearer_auth(&tok).header(CONTENT_TYPE, ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let job = r.json::<serde_json::Value>().await.unwrap()["job"].as_str().unwrap().to_string();
        let v = wait_job(&c, base, &tok, &job).await;
        assert_eq!(v["state"], "done", "{v}");
        assert_eq!(count(&pool, "SELECT count(*) FROM sources WHERE dataset = 'photos'").await, 2);

        let submit = |path: &'static str, body: serde_json::Value| {
            let c = c.clone();
            let tok = tok.clone();
            async move {
                let r = c.post(format!("{base}{path}")).bearer_auth(&tok).json(&body).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::CREATED, "{path}");
                r.json::<serde_json::Value>().await.unwrap()["job"].as_str().unwrap().to_string()
            }
        };
        let id = submit("/admin/masks", serde_json::json!({"seed": "1"})).await;
        assert_eq!(wait_job(&c, base, &tok, &id).await["state"], "done");
        let stats: serde_json::Value =
            c.get(format!("{base}/admin/masks?seed=1")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["stats"]["n"], 2, "{stats}");
        let preview = stats["previews"][0].as_str().unwrap().to_string();
        let png = c.get(format!("{base}{preview}")).bearer_auth(&tok).send().await.unwrap().bytes().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));

        let id = submit("/admin/generate", serde_json::json!({"method": "patch-inpaint", "count": "2", "seed": "1"})).await;
        let v = wait_job(&c, base, &tok, &id).await;
        assert_eq!(v["state"], "done", "{v}");
        assert_eq!(accept_all(&pool).await, 2);

        let id = submit("/admin/export", serde_json::json!({"format": "mmtt"})).await;
        let v = wait_job(&c, base, &tok, &id).await;
        assert_eq!(v["state"], "done", "{v}");
        let page: serde_json::Value =
            c.get(format!("{base}/admin/export/{id}")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert!(page["card"].as_str().unwrap().contains("Face forgery triplets"), "the dataset card: {page}");
        let files: Vec<String> = page["files"].as_array().unwrap().iter().map(|f| f[0].as_str().unwrap().to_string()).collect();
        assert!(files.contains(&"README.md".to_string()) && files.iter().any(|f| f.starts_with("masks/")), "{files:?}");

        let url = format!("{base}/admin/export/{id}/download");
        let full = c.get(&url).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()["accept-ranges"], "bytes");
        let full = full.bytes().await.unwrap().to_vec();
        assert!(full.len() > 10_000);
        // a range
        let r = c.get(&url).bearer_auth(&tok).header(RANGE, "bytes=100-1123").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes 100-1123/{}", full.len()));
        assert_eq!(r.bytes().await.unwrap().to_vec(), full[100..1124].to_vec());
        // an interrupted download resumed from where it stopped
        let cut = full.len() / 3;
        let first =
            c.get(&url).bearer_auth(&tok).header(RANGE, format!("bytes=0-{}", cut - 1)).send().await.unwrap().bytes().await.unwrap();
        let rest = c.get(&url).bearer_auth(&tok).header(RANGE, format!("bytes={cut}-")).send().await.unwrap();
        assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
        let mut resumed = first.to_vec();
        resumed.extend_from_slice(&rest.bytes().await.unwrap());
        assert_eq!(resumed, full, "the resumed download equals the whole tar");
        // an unsatisfiable range
        let r = c.get(&url).bearer_auth(&tok).header(RANGE, format!("bytes={}-", full.len() + 10)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        // the tar holds exactly the export's files, and packing is deterministic
        let mut ar = tar::Archive::new(std::io::Cursor::new(full.clone()));
        let mut names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().split_once('/').unwrap().1.to_string()).collect();
        names.sort();
        let mut want = files.clone();
        want.sort();
        assert_eq!(names, want);
        std::fs::remove_file(env.data.path().join("exports").join(format!("{id}.tar"))).unwrap();
        let again = c.get(&url).bearer_auth(&tok).send().await.unwrap().bytes().await.unwrap().to_vec();
        assert_eq!(again, full, "packing the same export again gives the same bytes");

        // evaluate the ground truth against itself: a leaderboard row
        let out = std::path::PathBuf::from(page["out"].as_str().unwrap());
        let split = ["test", "val", "train"].into_iter().find(|s| out.join(format!("{s}.json")).is_file()).unwrap();
        let gt: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(out.join(format!("{split}.json"))).unwrap()).unwrap();
        let mut preds = String::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut tar_b = tar::Builder::new(Vec::new());
        for r in &gt {
            let id = r["image_id"].as_str().unwrap();
            if seen.insert(id.to_string()) {
                let mask = r["mask_path"].as_str().unwrap();
                preds += &format!("{}\n", serde_json::json!({"image_id": id, "caption": r["caption"], "mask_path": mask}));
                tar_b.append_path_with_name(out.join(mask), mask).unwrap();
            }
        }
        let archive = tar_b.into_inner().unwrap();
        let (ct, body) = multipart(&[
            ("name", None, b"ground truth".to_vec()),
            ("truth", None, id.as_bytes().to_vec()),
            ("split", None, split.as_bytes().to_vec()),
            ("predictions", Some("pred.jsonl"), preds.into_bytes()),
            ("masks", Some("masks.tar"), archive),
        ]);
        let r = c.post(format!("{base}/admin/eval")).bearer_auth(&tok).header(CONTENT_TYPE, ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        let eval_job = r.json::<serde_json::Value>().await.unwrap()["job"].as_str().unwrap().to_string();
        let v = wait_job(&c, base, &tok, &eval_job).await;
        assert_eq!(v["state"], "done", "{v}");
        let board: serde_json::Value =
            c.get(format!("{base}/admin/leaderboard")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let rows = board["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 9, "the paper's 8 rows and ours");
        let ours = rows.iter().find(|r| r["name"] == "ground truth").expect("our row");
        assert!((ours["cells"][6].as_f64().unwrap() - 100.0).abs() < 1e-6, "IoU of the truth against itself: {ours}");

        // every action recorded: who, what, via
        let actions: serde_json::Value =
            c.get(format!("{base}/admin/actions")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        let names: Vec<&str> = actions["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
        assert_eq!(names, ["evaluate", "export", "generate", "plan masks", "import upload"]);
        assert!(actions["actions"].as_array().unwrap().iter().all(|a| a["user"] == "adm" && a["via"] == "token"));
    });
}
