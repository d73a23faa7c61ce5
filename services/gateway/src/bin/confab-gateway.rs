//! `confab-gateway`: the connection gateway as its own process.
//!
//! Configuration comes from `CONFAB_CONFIG` (a TOML file) and `CONFAB_*`
//! variables; there is no dev secret here: configure `auth.hs256_secret` or
//! `auth.jwks_url`.

use std::sync::Arc;

use confab_bus::InProcessBus;
use confab_gateway::membership::StaticMembership;
use confab_gateway::{App, Deps, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = GatewayConfig::load(GatewayConfig::default(), None)?;
    let _telemetry = confab_telemetry::init("confab-gateway", cfg.log.format)?;
    // Until the NATS bus lands this gateway runs on the in-process bus:
    // readiness reports `shared: false` so nobody mistakes it for a cluster.
    tracing::warn!("bus: in-process; this gateway cannot share rooms with other gateways");
    let deps = Deps {
        bus: Arc::new(InProcessBus::default()),
        membership: Arc::new(StaticMembership::new()),
    };
    let app = App::build(cfg, deps).await?;
    tracing::info!(addr = %app.local_addr(), "confab-gateway listening");
    app.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
