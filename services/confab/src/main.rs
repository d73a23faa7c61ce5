//! `confab`: the all-in-one Confab process.
//!
//! * `confab` (or `confab serve`): gateway on port 3000 and the membership
//!   API on port 3100, on an in-process bus with SQLite.
//! * `confab token USER`: prints a dev token for USER on stdout.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "confab",
    version,
    about = "Confab realtime chat backend, all in one process"
)]
struct Cli {
    /// TOML config file (also: CONFAB_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print a token for USER, signed with the configured HS256 secret.
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (cfg, dev) = confab::load_config(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token { user, ttl } => {
            println!(
                "{}",
                confab::dev_token(&cfg, &user, Duration::from_secs(ttl))?
            );
            Ok(())
        }
        Command::Serve => {
            let embedded = confab::Embedded::from_env()?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(cfg, embedded, dev))
        }
    }
}

async fn serve(
    cfg: confab_gateway::GatewayConfig,
    embedded: confab::Embedded,
    dev: bool,
) -> anyhow::Result<()> {
    let _telemetry = confab_telemetry::init("confab", cfg.log.format)?;
    let path = cfg.path.clone();
    let configured_token = cfg.membership.service_token.is_some();
    let app = confab::build(cfg, &embedded).await?;
    tracing::warn!(
        "all-in-one mode: in-process bus and embedded membership; this process cannot share rooms with other gateways"
    );
    println!(
        "Confab all-in-one listening on http://{} (Socket.IO at {path}, health at /healthz, /readyz, /metrics)",
        app.gateway_addr()
    );
    if dev {
        println!(
            "Dev auth: HS256 with the public dev secret. Get a token with: cargo run --release -- token alice"
        );
    }
    println!(
        "Membership API on http://{} (database {})",
        app.api_addr(),
        embedded.database_url
    );
    if !configured_token {
        println!(
            "Membership API service token for this run: {} (set CONFAB_MEMBERSHIP__SERVICE_TOKEN to fix one)",
            app.service_token
        );
    }
    app.run(confab_gateway::app::shutdown_signal()).await
}
