//! `confab-gateway`: the connection gateway as its own process.
//!
//! Configuration comes from `CONFAB_CONFIG` (a TOML file) and `CONFAB_*`
//! variables. By default it joins a cluster: the NATS bus
//! (`CONFAB_BUS__NATS__URL`) and the membership service over NATS
//! (`CONFAB_SERVICE_TOKEN`). There is no dev secret: configure
//! `auth.hs256_secret` or `auth.jwks_url`.

use confab_gateway::{App, Deps, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = GatewayConfig::load(GatewayConfig::default(), None)?;
    let _telemetry = confab_telemetry::init("confab-gateway", loaded.config.log.format)?;
    loaded.warn_ignored();
    let cfg = loaded.config;
    let deps = Deps::connect(&cfg).await?;
    let status = deps.bus.status();
    if !status.shared {
        tracing::warn!(
            bus = status.kind,
            "this gateway's bus is not shared: it cannot serve rooms together with other gateways"
        );
    }
    let app = App::build(cfg, deps).await?;
    tracing::info!(addr = %app.local_addr(), bus = status.kind, "confab-gateway listening");
    app.run(confab_gateway::app::shutdown_signal()).await?;
    Ok(())
}
