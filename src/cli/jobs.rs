//! `mmtt jobs`: progress of the forgery jobs and the exports.

use super::Global;
use anyhow::Result;

#[derive(clap::Args)]
pub struct JobsArgs {
    #[arg(long)]
    json: bool,
}

pub async fn run(g: &Global, a: JobsArgs) -> Result<()> {
    g.with_app(async |app| {
        let report = mmtt::jobs::forge::jobs_report(&app.pool).await?;
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for j in report.as_array().into_iter().flatten() {
                println!(
                    "job {} {}: {} done, {} queued, {} running, {} failed (of {} requested)",
                    j["id"].as_str().unwrap_or_default(),
                    j["methods"],
                    j["done"],
                    j["queued"],
                    j["running"],
                    j["failed"],
                    j["requested"]
                );
                for f in j["failures"].as_array().into_iter().flatten() {
                    println!(
                        "  failed {} ({}): {}",
                        f["item"].as_str().unwrap_or_default(),
                        f["method"].as_str().unwrap_or_default(),
                        f["reason"].as_str().unwrap_or_default()
                    );
                }
            }
            for e in mmtt::dataset::export::list_exports(&app.pool).await? {
                println!(
                    "export {} {} -> {}: {}, {}/{} samples{}",
                    e.id,
                    e.format,
                    e.out_dir,
                    e.status,
                    e.done,
                    e.total,
                    e.error.map(|e| format!(" ({e})")).unwrap_or_default()
                );
            }
        }
        Ok(())
    })
    .await
}
