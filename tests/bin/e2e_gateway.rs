//! A gateway as its own process, for end-to-end tests that kill it with
//! SIGKILL (a crash leaves nothing behind but what NATS holds). Configured
//! like `confab-gateway` (`CONFAB_*` variables); prints `listening ADDR` on
//! stdout once bound (set `CONFAB_LISTEN=127.0.0.1:0` for a free port).
//! Telemetry as in `confab-gateway`: spans exported when the standard
//! `OTEL_*` variables name an endpoint.

use confab_gateway::{App, Deps, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = GatewayConfig::load(GatewayConfig::default(), None)?.config;
    let _telemetry = confab_telemetry::init("confab-gateway", cfg.log.format)?;
    let deps = Deps::connect(&cfg).await?;
    let app = App::build(cfg, deps).await?;
    println!("listening {}", app.local_addr());
    app.run(confab_gateway::app::shutdown_signal()).await?;
    Ok(())
}
