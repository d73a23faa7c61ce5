//! The membership service as its own process for end-to-end tests that
//! kill it or trace it (like
//! `confab-membership`, whose binary a test of this package cannot name):
//! configured by `CONFAB_*` variables, telemetry from the standard `OTEL_*`
//! ones; prints `listening ADDR` on stdout once bound (set
//! `CONFAB_LISTEN=127.0.0.1:0` for a free port).

use confab_membership::app::App;
use confab_membership::config::MembershipConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = MembershipConfig::load(None)?;
    let _telemetry = confab_telemetry::init("confab-membership", loaded.config.log.format)?;
    let app = App::build(loaded.config).await?;
    println!("listening {}", app.http_addr());
    app.run(confab_telemetry::shutdown_signal()).await?;
    Ok(())
}
