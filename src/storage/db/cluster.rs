//! The private PostgreSQL cluster: `mmtt` runs its own server under `DATA_DIR/postgres` when no
//! `--database-url` is given, so a newcomer needs no database set-up.
//!
//! - Uses the system's binaries (`initdb`, `pg_ctl`, `postgres`): `MMTT_PG_BIN`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`.
//! - Listens on a unix socket inside `DATA_DIR/postgres/run` only (no TCP), trust authentication.
//! - PostgreSQL refuses to run as root: as root the cluster belongs to, and runs as, the `postgres`
//!   system user.
//! - Started on demand by any command; each command holds a shared `flock` on
//!   `postgres/clients.lock` while it uses the server (any number of commands and servers share
//!   it), and the last one out stops it (fast shutdown, a clean checkpoint) unless `mmtt db start`
//!   pinned it running; `mmtt db stop` stops it whatever the pin.
//! - Starting and stopping the server are serialized by a second lock, `postgres/start.lock`,
//!   held exclusively only for the moment of a start or a stop (and of joining or leaving the
//!   clients), never while a command works: so a command never waits for another to finish, and
//!   no command stops the server while another is joining it.

use anyhow::{Context, Result, bail};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DATABASE: &str = "mmtt";
const PORT: u16 = 5432;

/// State of the private cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    NotInitialized,
    Stopped,
    Running,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// Finds the directory holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MMTT_PG_BIN") {
        let p = PathBuf::from(p);
        if p.join("pg_ctl").is_file() && p.join("initdb").is_file() {
            return Ok(p);
        }
        bail!("MMTT_PG_BIN={} has no pg_ctl and initdb", p.display());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("pg_ctl").is_file() && bin.join("initdb").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("pg_ctl").is_file() && d.join("initdb").is_file() {
                return Ok(d);
            }
        }
    }
    bail!(
        "no --database-url was given, and the PostgreSQL server binaries (initdb, pg_ctl) needed for the \
         private cluster were not found in MMTT_PG_BIN, /usr/lib/postgresql/*/bin or PATH. Install them \
         (apt-get install postgresql) or pass --database-url postgres://USER@HOST:PORT/DATABASE"
    )
}

fn postgres_user() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").expect("static string");
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy the ids out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!(
            "PostgreSQL refuses to run as root and this machine has no `postgres` system user to run the \
             private cluster as: install PostgreSQL (which creates it), run mmtt as an ordinary user, or pass --database-url"
        );
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

impl Cluster {
    /// The cluster of `data_dir` (nothing is created yet).
    pub fn new(data_dir: &Path) -> Result<Self> {
        let data_dir = std::path::absolute(data_dir).with_context(|| format!("bad data directory {}", data_dir.display()))?;
        let bin = find_bin_dir()?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(postgres_user()?) } else { None };
        let c = Cluster { dir: data_dir.join("postgres"), bin, run_as };
        let sock = c.socket_dir().join(format!(".s.PGSQL.{PORT}"));
        if sock.as_os_str().len() > 100 {
            bail!(
                "the private cluster's socket path {} is too long for a unix socket (at most 100 bytes): \
                 use a shorter --data-dir, or pass --database-url",
                sock.display()
            );
        }
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
    fn pin_file(&self) -> PathBuf {
        self.dir.join("pinned")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(&self.dir).env("LC_ALL", "C.UTF-8").env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<std::process::Output> {
        let out = cmd.output().with_context(|| format!("could not run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}{}\n(see also {})",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_file().display()
            );
        }
        Ok(out)
    }

    /// As root, every ancestor of the cluster directory must be searchable by `postgres`.
    fn check_reachable(&self, uid: u32) -> Result<()> {
        for anc in self.dir.ancestors().skip(1) {
            let md = std::fs::metadata(anc).with_context(|| format!("cannot read {}", anc.display()))?;
            let mode = md.mode();
            let ok = mode & 0o001 != 0 || (md.uid() == uid && mode & 0o100 != 0);
            if !ok {
                bail!(
                    "the private PostgreSQL cluster runs as the `postgres` user, which cannot enter {}: \
                     allow it with `chmod o+x {}`, choose a --data-dir elsewhere, or pass --database-url",
                    anc.display(),
                    anc.display()
                );
            }
        }
        Ok(())
    }

    pub fn status(&self) -> Result<Status> {
        if !self.pgdata().join("PG_VERSION").is_file() {
            return Ok(Status::NotInitialized);
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(self.pgdata());
        let out = cmd.output().context("could not run pg_ctl status")?;
        Ok(if out.status.success() { Status::Running } else { Status::Stopped })
    }

    /// Creates the cluster if it does not exist yet.
    pub fn init(&self) -> Result<()> {
        if self.status()? != Status::NotInitialized {
            return Ok(());
        }
        std::fs::create_dir_all(self.socket_dir()).with_context(|| format!("cannot create {}", self.dir.display()))?;
        if let Some((uid, gid)) = self.run_as {
            self.check_reachable(uid)?;
            for p in [self.dir.clone(), self.socket_dir()] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).with_context(|| format!("cannot chown {}", p.display()))?;
            }
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(self.pgdata()).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-instructions"]);
        self.run(cmd, "initdb")?;
        Ok(())
    }

    /// Starts the server (initialising it first if needed). Returns whether this call started it.
    /// Serialized with every other start and stop of this cluster.
    pub fn start(&self) -> Result<bool> {
        let _guard = StartLock::take(self)?;
        self.start_unlocked()
    }

    fn start_unlocked(&self) -> Result<bool> {
        self.init()?;
        if self.status()? == Status::Running {
            return Ok(false);
        }
        let sock = self.socket_dir().display().to_string().replace('\'', "'\\''");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(self.pgdata())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-k '{sock}' -c listen_addresses='' -p {PORT}"));
        self.run(cmd, "pg_ctl start")?;
        Ok(true)
    }

    /// Stops the server cleanly (fast shutdown: clients disconnected, a checkpoint written).
    /// Serialized with every other start and stop of this cluster.
    pub fn stop(&self) -> Result<bool> {
        let _guard = StartLock::take(self)?;
        self.stop_unlocked()
    }

    fn stop_unlocked(&self) -> Result<bool> {
        let _ = std::fs::remove_file(self.pin_file());
        if self.status()? != Status::Running {
            return Ok(false);
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(self.pgdata()).args(["-m", "fast", "-w", "-t", "60"]);
        self.run(cmd, "pg_ctl stop")?;
        Ok(true)
    }

    /// Keeps the server running after the current command (`mmtt db start`).
    pub fn pin(&self) -> Result<()> {
        std::fs::write(self.pin_file(), b"started by `mmtt db start`; `mmtt db stop` stops it\n")?;
        Ok(())
    }

    pub fn is_pinned(&self) -> bool {
        self.pin_file().is_file()
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(self.socket_dir()).port(PORT).username("postgres").database(database)
    }

    /// Creates the `mmtt` database if it is missing.
    pub async fn ensure_database(&self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("could not connect to the private PostgreSQL cluster")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)").bind(DATABASE).fetch_one(&mut conn).await?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}"))).execute(&mut conn).await?;
        }
        Ok(())
    }
}

/// A command's use of the private cluster: started on demand, stopped by the last user out.
/// Holds a shared lock on `clients.lock` for its whole life.
pub struct ClusterLease {
    cluster: Cluster,
    clients: File,
}

fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a file descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

fn open_lock(cluster: &Cluster, name: &str) -> Result<File> {
    std::fs::create_dir_all(cluster.dir()).with_context(|| format!("cannot create {}", cluster.dir().display()))?;
    let path = cluster.dir().join(name);
    File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("cannot open {}", path.display()))
}

/// The exclusive lock that serializes starts and stops (and joining and leaving the clients);
/// released when dropped (closing the file releases the `flock`).
struct StartLock {
    _file: File,
}

impl StartLock {
    fn take(cluster: &Cluster) -> Result<Self> {
        let f = open_lock(cluster, "start.lock")?;
        if !flock(&f, libc::LOCK_EX) {
            bail!("cannot lock {}", cluster.dir().join("start.lock").display());
        }
        Ok(StartLock { _file: f })
    }
}

impl ClusterLease {
    /// Joins the cluster's users, starting the server if it is not running. Waits only for
    /// another command's start or stop in progress, never for a command that merely uses it.
    pub fn acquire(cluster: Cluster) -> Result<Self> {
        let _start = StartLock::take(&cluster)?;
        let clients = open_lock(&cluster, "clients.lock")?;
        // shared: never blocks, since an exclusive holder of clients.lock also holds start.lock
        if !flock(&clients, libc::LOCK_SH) {
            bail!("cannot lock {}", cluster.dir().join("clients.lock").display());
        }
        cluster.start_unlocked()?;
        Ok(Self { cluster, clients })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Leaves the cluster's users; stops the server if no other command uses it and it is not
    /// pinned.
    pub fn release(self) -> Result<()> {
        let _start = StartLock::take(&self.cluster)?;
        // a failed conversion may drop our shared lock: we are leaving anyway
        if flock(&self.clients, libc::LOCK_EX | libc::LOCK_NB) && !self.cluster.is_pinned() {
            self.cluster.stop_unlocked()?;
        }
        drop(self.clients);
        Ok(())
    }
}
