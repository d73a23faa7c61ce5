//! `confab-loadgen`: the load generator of the Confab benchmarks.
//!
//! Opens real Socket.IO v5 clients over WebSocket or HTTP long-polling
//! (Engine.IO v4, `--transport`), from
//! source addresses rotated over 127.0.0.0/8, against Confab gateways or
//! the Node.js baseline, and prints one JSON line per run. Every run is
//! bounded in count (`--clients`, `--connections`, rates and steps) and in
//! time (`--max-secs`). See `bench/README.md`.

mod client;
mod common;
mod conn;
mod fanout;
mod idle;
mod proc;
mod publish;
mod recover;
mod setup;

use clap::{Parser, Subcommand};

/// Load generator for the Confab benchmarks.
#[derive(Parser)]
#[command(name = "confab-loadgen", version, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scenario 1: clients in rooms, publishers stepping their rate up.
    Fanout(fanout::FanoutArgs),
    /// Scenario 2: idle connections; handshake rate and server RSS.
    Idle(idle::IdleArgs),
    /// Scenario 4: acked `message:send` per second through one gateway.
    Publish(publish::PublishArgs),
    /// Scenario 3: connection-state recovery (needs the recovery protocol).
    Recover(recover::RecoverArgs),
    /// Creates the workspaces, channels and members the scenarios use,
    /// through the membership HTTP API (idempotent).
    Setup(setup::SetupArgs),
}

fn main() {
    let nofile = proc::raise_nofile();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Fanout(a) => fanout::run(a).await,
            Command::Idle(a) => idle::run(a).await,
            Command::Publish(a) => publish::run(a).await,
            Command::Recover(a) => recover::run(a).await,
            Command::Setup(a) => setup::run(a).await,
        }
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "error": format!("{e:#}"), "nofile": nofile })
            );
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            std::process::exit(1);
        }
    }
    // Thousands of sockets: let the OS close them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
}
