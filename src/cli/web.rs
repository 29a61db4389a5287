//! `mmtt serve` and `mmtt user add`: the web app and its accounts.

use super::Global;
use anyhow::Result;
use clap::Subcommand;

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
}

pub async fn serve(g: &Global, a: ServeArgs) -> Result<()> {
    if a.min_seconds < 0.0 || a.heartbeat_seconds <= 0.0 {
        anyhow::bail!("--min-seconds must be >= 0 and --heartbeat-seconds > 0");
    }
    let config = mmtt::web::WebConfig {
        min_seconds: a.min_seconds,
        heartbeat_seconds: a.heartbeat_seconds,
        lease: std::time::Duration::from_secs(a.lease_minutes * 60),
    };
    g.with_app(async |app| {
        let state = mmtt::web::AppState::new(app.pool.clone(), app.store.clone(), config.clone());
        mmtt::web::serve(state, &a.bind).await
    })
    .await
}

pub async fn user(g: &Global, action: UserAction) -> Result<()> {
    let UserAction::Add { name, role, password } = action;
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
