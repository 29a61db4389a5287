//! FFHQ import (aligned faces: landmarks from the known face position, detection only as a
//! fallback) and the private PostgreSQL cluster.

mod common;

use image::GenericImageView;
use mmtt_generators::detect::FaceFinder;
use mmtt_generators::landmarks::Landmarks68;

#[test]
fn ffhq_import_uses_the_aligned_box_and_falls_back_to_detection() {
    let env = common::Env::new();
    let root = env.data.path().join("ffhq");
    let photos: Vec<String> = common::sample_faces().iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["fixtures", "ffhq", "--out"];
    let root_s = root.display().to_string();
    args.push(&root_s);
    args.push("--photos");
    args.extend(photos.iter().map(String::as_str));
    env.ok(&args);
    assert_eq!(image::open(root.join("00000/00000.png")).unwrap().dimensions(), (1024, 1024));
    // an unaligned face (the raw astronaut photo, face off-centre) and a picture without a face
    std::fs::copy(&photos[0], root.join("00000/00002.png")).unwrap();
    image::RgbImage::from_fn(512, 512, |x, _| image::Rgb([x as u8, 90, 200])).save(root.join("00000/00003.png")).unwrap();

    let s = env.json(&["import", "ffhq", "--root", &root_s, "--json"]);
    assert_eq!((s["imported"].as_u64(), s["faces"].as_u64()), (Some(3), Some(3)), "{s}");
    assert_eq!(s["skipped"].as_array().unwrap().len(), 1);
    assert!(s["skipped"][0]["reason"].as_str().unwrap().contains("no face found"));

    let rows: Vec<(String, String, serde_json::Value, String)> = env.db.query(async |p| {
        sqlx::query_as("SELECT original_id, detector, landmarks, image_hash FROM sources ORDER BY original_id").fetch_all(p).await.unwrap()
    });
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["00000", "00001", "00002"]);
    assert_eq!(rows[0].1, "aligned-box");
    assert_eq!(rows[1].1, "aligned-box");
    assert_eq!(rows[2].1, "dlib-hog", "the unaligned face was detected");
    // the landmarks agree with the reference: the ones found on the original photo, carried
    // through the same alignment (the fixture's crop is that alignment at 1024 px)
    let finder = FaceFinder::load().unwrap();
    for ((id, _, lm, hash), photo) in rows[..2].iter().zip(&photos) {
        let lm: Landmarks68 = serde_json::from_value(lm.clone()).unwrap();
        let img = image::open(env.blob_path(hash)).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (512, 512));
        let original = image::open(photo).unwrap().into_rgb8();
        let face = &finder.faces(&original)[0];
        let reference = mmtt_generators::align::AlignTransform::ffhq(&face.landmarks, 512).landmarks_to_output(&face.landmarks);
        let err = lm.mean_error(&reference) / reference.interocular();
        let redetected = lm.mean_error(&finder.faces(&img)[0].landmarks) / reference.interocular();
        println!(
            "{id}: mean landmark error {:.2}% of the interocular distance (full re-detection: {:.2}%)",
            100.0 * err,
            100.0 * redetected
        );
        // the cheap path (known position, no upsampling) is as accurate as full detection, and
        // both are within 6% of the interocular distance of the reference (the predictor's own
        // variation between a 186 px and a 300 px face is about 4.6% on Grace Hopper)
        assert!(err < redetected + 0.01, "{id}: {err} vs {redetected}");
        assert!(err < 0.06, "{id}: {err}");
    }
    let again = env.json(&["import", "ffhq", "--root", &root_s, "--json"]);
    assert_eq!((again["imported"].as_u64(), again["already_present"].as_u64()), (Some(0), Some(3)));
    let limited = common::Env::new();
    let s = limited.json(&["import", "ffhq", "--root", &root_s, "--limit", "1", "--json"]);
    assert_eq!(s["imported"], 1);
}

#[test]
fn bad_roots_are_refused_with_the_fix() {
    let env = common::Env::new();
    let out = env.mmtt(&["import", "celebamask-hq", "--root", &env.data.path().display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected CelebA-HQ-img/ and CelebAMask-HQ-mask-anno/"), "{err}");
    let out = env.mmtt(&["import", "photos", "--root", "/nonexistent/folder"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none", "sources", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not connect to PostgreSQL"));
    // no server binaries for the private cluster: said clearly, with the fix
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .args(["--data-dir", &env.data.path().display().to_string(), "db", "status"])
        .env("MMTT_PG_BIN", "/nonexistent/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MMTT_PG_BIN=/nonexistent/bin has no pg_ctl and initdb"));
    // a broken CNN detector model is refused by name, not silently ignored
    let bad = env.data.path().join("mmod.dat");
    std::fs::write(&bad, b"not a dlib model").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .args(["landmarks", "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"])
        .env("MMTT_DLIB_MMOD", &bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not load the dlib model"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The private cluster: initialised and started on demand under the data directory, stopped by
/// the last command using it, kept running by `db start` until `db stop`.
#[test]
fn private_cluster_lifecycle() {
    let data = tempfile::Builder::new().prefix("mmtt-pg").tempdir_in("/tmp").unwrap();
    // as root the cluster runs as `postgres`, which must be able to enter the data directory
    std::fs::set_permissions(data.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mmtt = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = mmtt(&["db", "status"]);
    assert!(ok && out.contains("not initialized"), "{out}");
    // a command with no URL starts the cluster and stops it afterwards
    let (ok, out) = mmtt(&["project", "show"]);
    assert!(ok && out.contains("split seed"), "{out}");
    assert!(data.path().join("postgres/data/PG_VERSION").is_file());
    let (_, out) = mmtt(&["db", "status"]);
    assert!(out.starts_with("stopped"), "{out}");
    // db start keeps it running across commands, with the data kept
    let (ok, out) = mmtt(&["db", "start"]);
    assert!(ok && out.contains("started"), "{out}");
    let photos = data.path().join("in");
    common::copy_into(&common::sample_faces()[..1], &photos);
    let (ok, out) = mmtt(&["import", "photos", "--root", &photos.display().to_string(), "--json"]);
    assert!(ok && out.contains("\"faces\":1"), "{out}");
    let (_, out) = mmtt(&["db", "status"]);
    assert!(out.starts_with("running"), "{out}");
    let (ok, out) = mmtt(&["db", "stop"]);
    assert!(ok && out.contains("stopped"), "{out}");
    let (_, out) = mmtt(&["db", "status"]);
    assert!(out.starts_with("stopped"), "{out}");
    // the data survived the restart
    let (ok, out) = mmtt(&["sources", "list", "--json"]);
    assert!(ok && out.contains("\"dataset\":\"photos\""), "{out}");
    let (_, out) = mmtt(&["db", "status"]);
    assert!(out.starts_with("stopped"), "{out}");
}

/// Waits for a child at most `limit` (a hang guard, not a speed check): a command blocked on the
/// cluster's locks would otherwise hang the test suite.
fn wait_or_kill(mut child: std::process::Child, limit: std::time::Duration, what: &str) -> std::process::Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`{what}` still had not finished after {limit:?} beside a running server: it hangs on the cluster lock\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Any number of commands and servers share the private cluster: while `mmtt serve` runs, a
/// second server and other commands start, work and finish; the last one out stops the server.
#[test]
fn commands_and_servers_share_the_private_cluster() {
    use std::io::BufRead;
    let data = tempfile::Builder::new().prefix("mmtt-pg").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(data.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spawn_with = |args: &[&str], stderr: std::process::Stdio| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mmtt"))
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    };
    let spawn = |args: &[&str]| spawn_with(args, std::process::Stdio::piped());
    let limit = std::time::Duration::from_secs(120);
    // a server, serving: its address is on its first line (a server that cannot start within the
    // limit fails the test instead of hanging it)
    let serve = |args: &[&str]| -> (std::process::Child, String) {
        // the server's log goes to the test's output, so a full pipe never blocks it
        let mut child = spawn_with(args, std::process::Stdio::inherit());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(limit) {
            Ok(line) if line.starts_with("serving on http://") => (child, line.trim().trim_start_matches("serving on ").to_string()),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a server beside the running one did not start within {limit:?} (it hangs on the cluster lock): {other:?}");
            }
        }
    };
    let (mut first, url) = serve(&["serve", "--bind", "127.0.0.1:0"]);
    // commands beside it, at the same time as each other
    let add = spawn(&["user", "add", "alice", "--role", "annotator", "--password", "correct horse battery"]);
    let jobs = spawn(&["jobs", "--json"]);
    for (child, what) in [(add, "user add"), (jobs, "jobs --json")] {
        let out = wait_or_kill(child, limit, what);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // and a second server
    let (mut second, url2) = serve(&["serve", "--bind", "127.0.0.1:0"]);
    // both servers see the new user
    for u in [&url, &url2] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let status = rt.block_on(async {
            let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
            c.post(format!("{u}/login")).form(&[("name", "alice"), ("password", "correct horse battery")]).send().await.unwrap().status()
        });
        assert_eq!(status, reqwest::StatusCode::SEE_OTHER, "signing in on {u}");
    }
    let status = || {
        let out = wait_or_kill(spawn(&["db", "status"]), limit, "db status");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // the first server leaves: the second still uses the cluster, so it keeps running
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    assert!(first.wait().unwrap().success());
    assert!(status().starts_with("running"), "{}", status());
    // the last one out stops it
    unsafe { libc::kill(second.id() as i32, libc::SIGINT) };
    assert!(second.wait().unwrap().success());
    assert!(status().starts_with("stopped"), "{}", status());
}
