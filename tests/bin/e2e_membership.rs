//! The membership service as its own process, for end-to-end tests that
//! kill it with SIGKILL. Configured like `confab-membership` (`CONFAB_*`
//! variables); prints `listening ADDR` on stdout once bound (set
//! `CONFAB_LISTEN=127.0.0.1:0` for a free port).

use confab_membership::app::App;
use confab_membership::config::MembershipConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MembershipConfig::load(None)?.config;
    let app = App::build(config).await?;
    println!("listening {}", app.http_addr());
    app.run(confab_gateway::app::shutdown_signal()).await?;
    Ok(())
}
