//! `mmtt serve`, `mmtt user add` and `mmtt user token`: the web app (with its embedded worker)
//! and its accounts.

use super::Global;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Active seconds needed on a task before its annotation can be submitted.
    #[arg(long, default_value_t = 60.0)]
    min_seconds: f64,
    /// Heartbeat interval of the annotation page; each heartbeat credits at most this.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_seconds: f64,
    /// Minutes a claimed task stays with its annotator without a heartbeat.
    #[arg(long, default_value_t = 30)]
    lease_minutes: u64,
    /// Run no worker in this process (run `mmtt worker` elsewhere).
    #[arg(long)]
    no_worker: bool,
    /// A server folder the admin console may import from (repeatable; default DATA_DIR/incoming).
    #[arg(long = "import-root", env = "MMTT_IMPORT_ROOTS", value_delimiter = ':')]
    import_roots: Vec<PathBuf>,
    /// The explain page's model: a ForgeryTalker, Hugging Face InstructBLIP or release checkpoint
    /// folder (see `mmtt explain --checkpoint`); loaded on the first explanation.
    #[arg(long, env = "MMTT_TALKER")]
    talker: Option<PathBuf>,
    /// An FPN checkpoint folder that chooses the explain page's regions, instead of the model's own.
    #[arg(long, env = "MMTT_TALKER_FPN", requires = "talker")]
    talker_fpn: Option<PathBuf>,
    /// Where the explain page's model runs: cpu, or cuda:N (a build with `--features cuda`).
    #[arg(long, env = "MMTT_TALKER_DEVICE", default_value = "cpu")]
    talker_device: String,
    /// The address annotators open (such as https://mmtt.example.org): with https, session
    /// cookies are `Secure` and responses carry HSTS.
    #[arg(long, env = "MMTT_PUBLIC_URL")]
    public_url: Option<String>,
    /// A reverse proxy (address or CIDR block, repeatable) whose X-Forwarded-For header is
    /// believed for the client's address; from anyone else the header is ignored.
    #[arg(long = "trusted-proxy", env = "MMTT_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM), for teams without a reverse proxy.
    #[arg(long, env = "MMTT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "MMTT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user; prints a generated password unless --password is given.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, env = "MMTT_NEW_PASSWORD")]
        password: Option<String>,
    },
    /// Print a new API token for the admin NAME (scripts send `Authorization: Bearer TOKEN`).
    Token {
        name: String,
        /// What the token is for (shown nowhere but the database).
        #[arg(long, default_value = "")]
        label: String,
    },
}

pub async fn serve(g: &Global, a: ServeArgs) -> Result<()> {
    if a.min_seconds < 0.0 || a.heartbeat_seconds <= 0.0 {
        anyhow::bail!("--min-seconds must be >= 0 and --heartbeat-seconds > 0");
    }
    let config = mmtt::web::WebConfig {
        min_seconds: a.min_seconds,
        heartbeat_seconds: a.heartbeat_seconds,
        lease: std::time::Duration::from_secs(a.lease_minutes * 60),
        edge: mmtt::web::edge::Edge {
            public_url: a.public_url.as_deref().map(str::parse).transpose().map_err(|e: String| anyhow::anyhow!("--public-url: {e}"))?,
            trusted_proxies: a
                .trusted_proxies
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, String>>()
                .map_err(|e| anyhow::anyhow!("--trusted-proxy: {e}"))?,
        },
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let t = mmtt::web::edge::TlsFiles { cert: cert.clone(), key: key.clone() };
            // checked before anything starts
            t.server_config().map_err(|e| anyhow::anyhow!(e))?;
            Some(t)
        }
        _ => None,
    };
    let roots = a
        .import_roots
        .iter()
        .map(|r| r.canonicalize().with_context(|| format!("--import-root {} does not exist: create it or fix the path", r.display())))
        .collect::<Result<Vec<_>>>()?;
    let talker = match &a.talker {
        None => None,
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("--talker {}: no such folder: give a ForgeryTalker or InstructBLIP checkpoint folder", dir.display());
            }
            if let Some(f) = &a.talker_fpn
                && !f.exists()
            {
                anyhow::bail!("--talker-fpn {}: no such folder: give an FPN checkpoint folder", f.display());
            }
            mmtt_model::fpn::parse_device(&a.talker_device).map_err(|e| anyhow::anyhow!("--talker-device: {e}"))?;
            let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
            Some(mmtt::explain::TalkerConfig { checkpoint: abs(dir), fpn: a.talker_fpn.as_ref().map(abs), device: a.talker_device.clone() })
        }
    };
    let worker = (!a.no_worker).then(|| {
        let mut o = super::forge::worker_options(
            g,
            &super::forge::WorkerArgs::embedded(),
            mmtt_generators::forge::runtime::Device::Cpu,
            false,
            None,
        );
        o.progress = false;
        o
    });
    g.with_app(async |app| {
        let mut state = mmtt::web::AppState::new(app.pool.clone(), app.store.clone(), &app.data_dir, config.clone())
            .with_admin(mmtt::web::admin::AdminConfig::new(&app.data_dir, roots.clone()));
        if let Some(t) = &talker {
            state = state.with_talker(t.clone());
        }
        mmtt::jobs::cli::serve_with_worker(app, mmtt::web::serve(state, &a.bind, tls.as_ref()), worker.clone()).await
    })
    .await
}

pub async fn user(g: &Global, action: UserAction) -> Result<()> {
    let (name, role, password) = match action {
        UserAction::Add { name, role, password } => (name, role, password),
        UserAction::Token { name, label } => {
            let name = mmtt::web::auth::UserName::parse(&name).map_err(anyhow::Error::msg)?;
            return g
                .with_app(async |app| {
                    let token = mmtt::web::admin::tokens::create(&app.pool, &name, &label).await?;
                    println!("{token}");
                    Ok(())
                })
                .await;
        }
    };
    let name = mmtt::web::auth::UserName::parse(&name).map_err(anyhow::Error::msg)?;
    let role: mmtt::web::auth::Role = role.parse().map_err(anyhow::Error::msg)?;
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (mmtt::web::auth::random_token()[..16].to_string(), true),
    };
    g.with_app(async |app| {
        mmtt::web::auth::add_user(&app.pool, &name, role, &password).await?;
        if generated {
            println!("added {} ({role}) with password {password}", name.as_str());
        } else {
            println!("added {} ({role})", name.as_str());
        }
        Ok(())
    })
    .await
}
