//! The all-in-one survives a restart: its room event log lives in the
//! SQLite database next to the history checkpoint, so messages acked after
//! a restart reach history and sequences keep rising.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod common;

use confab_auth::DEV_SECRET;
use confab_test_support::NodeClient;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A running all-in-one: its addresses, token and the way to stop it.
struct Running {
    gateway: SocketAddr,
    api: SocketAddr,
    service_token: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn config() -> confab_gateway::GatewayConfig {
    let mut cfg = confab::default_config();
    cfg.auth.hs256_secret = Some(DEV_SECRET.into());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

async fn build(db: &Path) -> anyhow::Result<confab::AllInOne> {
    let embedded = confab::EmbeddedConfig {
        database_url: format!("sqlite://{}?mode=rwc", db.display()),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        emitter: Default::default(),
    };
    confab::build(config(), &embedded).await
}

async fn start(db: &Path) -> Running {
    let app = build(db).await.unwrap();
    let (gateway, api, service_token) = (
        app.gateway_addr(),
        app.api_addr(),
        app.service_token.clone(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    Running {
        gateway,
        api,
        service_token,
        stop,
        task,
    }
}

async fn command(run: &Running, actor: Option<&str>, command: Value) {
    let api = format!("http://{}", run.api);
    common::command(&api, &run.service_token, actor, command).await;
}

/// Connects socket `name` as alice and waits until it is in the channel.
async fn connect(node: &NodeClient, name: &str, run: &Running) {
    let token = confab::dev_token(&config(), "alice", Duration::from_secs(600)).unwrap();
    node.connect(
        name,
        &format!("http://{}", run.gateway),
        json!({ "transports": ["websocket"], "auth": { "token": token }, "reconnection": false }),
    )
    .await;
    node.expect(name, |m| m["type"] == "connect", Duration::from_secs(10))
        .await;
}

/// Sends messages `from..to` and returns their acks' `(id, seq)`.
async fn send(node: &NodeClient, name: &str, range: std::ops::Range<u32>) -> Vec<(String, u64)> {
    let mut acked = Vec::new();
    for i in range {
        let ack = node
            .emit_with_ack(
                name,
                "message:send",
                vec![json!({ "room": "channel:general", "body": format!("m{i}"), "clientMsgId": format!("c{i}") })],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let id = ack[0]["id"].as_str().unwrap_or_else(|| panic!("{ack:?}"));
        acked.push((id.to_owned(), ack[0]["seq"].as_u64().unwrap()));
    }
    acked
}

/// The ids in channel:general's history, waiting until `want` are there.
async fn history(node: &NodeClient, name: &str, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ack = node
            .emit_with_ack(
                name,
                "message:history",
                vec![json!({ "room": "channel:general", "limit": 100 })],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let ids: Vec<String> = ack[0]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{ack:?}"))
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.len() >= want || tokio::time::Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_message_acked_before_and_after_a_restart_is_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("confab.db");
    let node = NodeClient::spawn().await;

    let first = start(&db).await;
    command(
        &first,
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    command(
        &first,
        Some("alice"),
        json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
    )
    .await;
    connect(&node, "a", &first).await;
    let mut acked = send(&node, "a", 0..5).await;
    assert_eq!(history(&node, "a", 5).await.len(), 5);
    node.disconnect("a").await;
    first.stop().await;

    let second = start(&db).await;
    connect(&node, "b", &second).await;
    // A retry from before the restart is still a duplicate: answered with
    // the first attempt's id and sequence, stored once.
    assert_eq!(send(&node, "b", 4..5).await, acked[4..5]);
    acked.extend(send(&node, "b", 5..15).await);
    let seqs: Vec<u64> = acked.iter().map(|(_, seq)| *seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequences keep rising across the restart: {seqs:?}"
    );
    let found = history(&node, "b", acked.len()).await;
    let missing: Vec<_> = acked.iter().filter(|(id, _)| !found.contains(id)).collect();
    assert!(missing.is_empty(), "acked but not in history: {missing:?}");
    assert_eq!(found.len(), 15);
    second.stop().await;
}

#[tokio::test]
async fn a_history_checkpoint_ahead_of_the_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("confab.db");
    let app = build(&db).await.unwrap();
    drop(app);
    // The log's stored messages are gone, the projection kept: the
    // checkpoint is ahead of the log.
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let conn = confab_membership::sql::connect(&url).await.unwrap();
    use sea_orm::ConnectionTrait;
    conn.execute_unprepared(
        "INSERT INTO projection_checkpoints (name, last_seq) VALUES ('history', 40) \
         ON CONFLICT (name) DO UPDATE SET last_seq = 40",
    )
    .await
    .unwrap();
    drop(conn);
    let app = build(&db).await.unwrap();
    let err = app.run(std::future::pending()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("ahead of the bus log"), "{err}");
    assert!(err.contains("projection_checkpoints"), "{err}");
    assert!(err.contains("rebuild"), "{err}");
}
