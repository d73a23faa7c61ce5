//! `confab-membership`: the membership service as its own process.
//!
//! Configuration: `CONFAB_CONFIG` (a TOML file) and `CONFAB_*` variables;
//! see `confab_membership::config`. With `[nats]` it serves the NATS API and
//! keeps the event log in JetStream; without, it runs embedded (SQL log,
//! in-process bus).

use confab_membership::app::App;
use confab_membership::config::MembershipConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = MembershipConfig::load(None)?;
    let _telemetry = confab_telemetry::init("confab-membership", loaded.config.log.format)?;
    loaded.warn_ignored();
    let config = loaded.config;
    tracing::info!(?config, "starting");
    let app = App::build(config).await?;
    tracing::info!(addr = %app.http_addr(), "confab-membership listening");
    app.run(confab_telemetry::shutdown_signal()).await?;
    Ok(())
}
