//! `confab`: the all-in-one Confab process.
//!
//! * `confab` (or `confab serve`): gateway on port 3000 and the membership
//!   API on port 3100, on an in-process bus with SQLite.
//! * `confab token USER`: prints a dev token for USER on stdout.
//! * `confab admin-hash`: reads a password on stdin, prints its bcrypt hash
//!   (for `admin.password_hash`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use confab_config::{Loaded, redact_url};

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
    /// Read a password on stdin (one line), print its bcrypt hash for
    /// `admin.password_hash` (the Admin UI operator's password). Read from
    /// stdin so that it never shows in `ps`.
    AdminHash {
        /// bcrypt cost (4 to 31).
        #[arg(long, default_value_t = 12)]
        cost: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::AdminHash { cost }) = &cli.command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "no password on stdin");
        println!("{}", bcrypt::hash(password, *cost)?);
        return Ok(());
    }
    let loaded = confab::load_config(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token { user, ttl } => {
            println!(
                "{}",
                confab::dev_token(&loaded.config.gateway, &user, Duration::from_secs(ttl))?
            );
            Ok(())
        }
        Command::AdminHash { .. } => Ok(()),
        Command::Serve => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(loaded))
        }
    }
}

async fn serve(loaded: Loaded<confab::Config>) -> anyhow::Result<()> {
    let _telemetry = confab_telemetry::init("confab", loaded.config.gateway.log.format)?;
    loaded.warn_ignored();
    let confab::Config {
        gateway: cfg,
        embedded,
        dev_secret: dev,
    } = loaded.config;
    let path = cfg.path.clone();
    let configured_token = cfg.service_token.is_some();
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
        redact_url(&embedded.database_url)
    );
    if !configured_token && dev {
        // Dev setup only (every listener on loopback): a generated secret
        // is shown to the developer, never to a deployment's logs.
        println!(
            "Membership API service token for this run: {} (set CONFAB_SERVICE_TOKEN to fix one)",
            app.service_token
        );
    } else if !configured_token {
        println!(
            "Membership API: user tokens only (set CONFAB_SERVICE_TOKEN, at least 32 characters, for app backends)"
        );
    }
    app.run(confab_gateway::app::shutdown_signal()).await
}
