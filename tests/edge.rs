//! Annotators on the internet: TLS in the server itself (`--tls-cert/--tls-key`, a certificate
//! made by `openssl` for the test), Secure cookies and HSTS under an https public URL, refusals
//! of bad certificate files; and TLS to PostgreSQL (`sslmode=require`) with credentials never
//! printed. The proxy/throttle rules are in tests/web.rs.

mod common;

use common::Env;
use common::web::PASSWORD;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A test CA and a server certificate for 127.0.0.1 it signed: (CA cert, server cert, key).
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mmtt test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]);
    std::fs::write(p("ext.cnf"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[test]
fn the_server_speaks_tls_itself_with_secure_cookies_and_hsts() {
    let env = Env::new();
    common::admin::add_users(&env);
    let (ca, cert, key) = certificates(env.data.path());
    // bad files are refused before anything starts, naming the option
    let out = env.mmtt(&["serve", "--tls-cert", &key.display().to_string(), "--tls-key", &key.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.mmtt(&["serve", "--tls-cert", &cert.display().to_string(), "--tls-key", &cert.display().to_string()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = env
        .command()
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--no-worker", "--public-url", "https://127.0.0.1"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "mmtt serve did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pem = std::fs::read(&ca).unwrap();
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("https://127.0.0.1:{port}");
        let r = c.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        assert!(r.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
        let r = c.post(format!("{base}/login")).form(&[("name", "ann"), ("password", PASSWORD)]).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        // plain HTTP to the TLS port gets no page
        let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/login")).send().await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());
        // a client that does not trust the certificate cannot connect
        assert!(
            reqwest::Client::builder().tls_built_in_root_certs(true).build().unwrap().get(format!("{base}/login")).send().await.is_err()
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn postgresql_over_tls_and_credentials_never_printed() {
    let env = Env::new();
    let url = format!("{}?sslmode=require", env.db.url);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = mmtt::storage::db::connect_url(&url).await.expect("PostgreSQL over TLS");
        let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await.unwrap();
        assert!(ssl, "the connection is encrypted");
    });
    // the binary on a TLS connection works; a failing one names the server, never the password
    let out = Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .arg("--data-dir")
        .arg(env.data.path())
        .args(["--database-url", &url, "jobs", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = "s3cr3t-Passw0rd";
    let bad = env.db.url.replacen("postgres@", &format!("postgres:{secret}@"), 1) + "?sslmode=verify-full";
    let out = Command::new(env!("CARGO_BIN_EXE_mmtt"))
        .arg("--data-dir")
        .arg(env.data.path())
        .args(["--database-url", &bad, "jobs"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify-full against the self-signed server certificate must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(secret), "the password was printed: {err}");
    assert!(err.contains("postgres:***@"), "{err}");
}
