//! Two hosts without a shared disk: the web server, PostgreSQL and SeaweedFS on this side; a
//! forge worker in its own network namespace (a veth pair, `common::netns`) with its own empty
//! data directory, reaching the database and the object store only over TCP to this side's veth
//! address. The server enqueues a forge job and runs no worker; the worker in the namespace
//! forges; the annotation page on this side shows the forgeries, read from SeaweedFS.

mod common;

use common::Env;
use common::netns::{NetNs, relay};
use common::s3::SeaweedFs;

#[test]
fn a_worker_in_another_namespace_forges_into_object_storage() {
    let ns = NetNs::new();
    let sw = SeaweedFs::start_on(&ns.host_ip, None);
    sw.ready("mmtt-test");
    let mut env = Env::new();
    env.store = Some("s3://mmtt-test/hosts".into());
    env.vars = sw.env();
    let photos = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &photos);
    env.ok(&["import", "photos", "--root", &photos.display().to_string()]);
    let job = env.json(&["forge", "--method", "patch-inpaint", "--count", "2", "--seed", "1", "--json"]);
    eprintln!("enqueued {job}");

    // the worker's host: its own data directory, the database through a relay on the veth address
    let pg = common::server_url();
    let pg_hostport = pg.rsplit('@').next().unwrap().to_string();
    let port = relay(&ns.host_ip, &pg_hostport);
    let worker_url = format!("postgres://postgres@{}:{port}/{}", ns.host_ip, env.db.name);
    let worker_dir = tempfile::tempdir().unwrap();
    let out = ns
        .command(std::path::Path::new(env!("CARGO_BIN_EXE_mmtt")))
        .arg("--data-dir")
        .arg(worker_dir.path())
        .args(["--database-url", &worker_url, "--store", "s3://mmtt-test/hosts"])
        .envs(sw.env())
        .args(["worker", "--until-empty", "--name", "ns-worker"])
        .output()
        .unwrap();
    assert!(out.status.success(), "the worker: {}", String::from_utf8_lossy(&out.stderr));
    // a namespace without that route reaches nothing on this side: the relay was the way in
    let direct = ns.command(std::path::Path::new("/bin/sh")).args(["-c", "exec 3<>/dev/tcp/127.0.0.1/5432"]).output().unwrap();
    assert!(!direct.status.success(), "the namespace must not see this side's loopback");

    let (done, by_ns): (i64, i64) = env.db.query(async |p| {
        sqlx::query_as("SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE worker = 'ns-worker') FROM forge_items")
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert_eq!((done, by_ns), (2, 2), "the namespace's worker forged both");
    // its disk holds only its read-through cache: no blob store of its own
    let cache = worker_dir.path().join("cache").display().to_string();
    let files = walk(worker_dir.path());
    assert!(files.iter().all(|f| !f.ends_with(".png") || f.starts_with(&cache)), "images outside the cache: {files:?}");
    assert!(!worker_dir.path().join("blobs").exists(), "the worker has no local blob store");
    assert!(!env.data.path().join("blobs").exists() || walk(&env.data.path().join("blobs")).is_empty());

    // the annotation page on this side shows them, from SeaweedFS
    common::admin::add_users(&env);
    let served = common::admin::serve(&env, &["--min-seconds", "0", "--no-worker"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(common::admin::forged_image_is_served(&env, &served.base));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                v.extend(walk(&e.path()));
            } else {
                v.push(e.path().display().to_string());
            }
        }
    }
    v
}
