//! Creates the rooms of a scenario through the membership HTTP API: for
//! room `r`, workspace `{prefix}w{r}` owned by `{prefix}{r}x0`, public
//! channel `{prefix}c{r}`, and members `{prefix}{r}x1..` in both. Already
//! existing parts are fine, so a second run changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Options of `setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// The membership HTTP API, e.g. `http://127.0.0.1:3300`.
    #[arg(long)]
    api: String,
    /// File holding the service token.
    #[arg(long)]
    service_token_file: PathBuf,
    /// Rooms to create.
    #[arg(long)]
    rooms: usize,
    /// Members per room.
    #[arg(long)]
    room_size: usize,
    /// Prefix of users and rooms.
    #[arg(long)]
    prefix: String,
    /// Rooms set up at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

async fn command(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    actor: &str,
    command: Value,
) -> Result<()> {
    let res = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "actor": actor, "command": command }))
        .send()
        .await?;
    if res.status().is_success() {
        return Ok(());
    }
    let status = res.status();
    let body: Value = res.json().await.unwrap_or_default();
    if body.to_string().contains("already_exists") {
        return Ok(());
    }
    bail!("{command} -> {status} {body}")
}

async fn room(
    http: reqwest::Client,
    url: Arc<String>,
    token: Arc<String>,
    prefix: Arc<String>,
    r: usize,
    size: usize,
) -> Result<()> {
    let owner = format!("{prefix}{r}x0");
    let ws = format!("{prefix}w{r}");
    let ch = format!("{prefix}c{r}");
    let c = |actor: &str, v: Value| {
        let (http, url, token, actor) =
            (http.clone(), url.clone(), token.clone(), actor.to_owned());
        async move { command(&http, &url, &token, &actor, v).await }
    };
    c(
        &owner,
        json!({"type":"create_workspace","id":ws,"name":ws,"owner":owner}),
    )
    .await?;
    c(&owner, json!({"type":"create_channel","channel":ch,"workspace":ws,"name":ch,"visibility":"public"}))
        .await?;
    for m in 1..size {
        let user = format!("{prefix}{r}x{m}");
        c(
            &owner,
            json!({"type":"add_workspace_member","workspace":ws,"user":user,"role":"member"}),
        )
        .await?;
        c(&user, json!({"type":"join_channel","channel":ch})).await?;
    }
    Ok(())
}

/// Runs the setup.
pub async fn run(a: SetupArgs) -> Result<Value> {
    let token = std::fs::read_to_string(&a.service_token_file)
        .with_context(|| format!("reading {}", a.service_token_file.display()))?
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let url = Arc::new(format!("{}/v1/commands", a.api.trim_end_matches('/')));
    let (token, prefix) = (Arc::new(token), Arc::new(a.prefix.clone()));
    let limit = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..a.rooms {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let f = room(
            http.clone(),
            url.clone(),
            token.clone(),
            prefix.clone(),
            r,
            a.room_size,
        );
        tasks.push(tokio::spawn(async move {
            let out = f.await;
            drop(permit);
            out
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(json!({
        "setup": true,
        "rooms": a.rooms,
        "room_size": a.room_size,
        "prefix": a.prefix,
        "secs": (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }))
}
