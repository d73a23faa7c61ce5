//! Presence across two gateways on NATS (and on Redis: heartbeats on a
//! Redis topic, queries over HTTP), with socket.io-client.

use std::time::{Duration, Instant};

use confab_test_support::NodeClient;
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};
use crate::support::*;

const T: Duration = Duration::from_secs(15);

async fn workspace(c: &Cluster, members: &[&str]) {
    c.ok(
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    for m in members {
        c.ok(
            Some("alice"),
            json!({ "type": "add_workspace_member", "workspace": "w1", "user": m, "role": "member" }),
        )
        .await;
    }
}

fn update_of(user: &'static str) -> impl Fn(&Value) -> bool {
    move |m| {
        m["type"] == "event" && m["event"] == "presence:update" && m["args"][0]["userId"] == user
    }
}

#[tokio::test]
async fn presence_follows_tabs_away_and_disconnects() {
    follows_tabs_away_and_disconnects(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_presence_follows_tabs_away_and_disconnects() {
    follows_tabs_away_and_disconnects(Backend::Redis).await;
}

async fn follows_tabs_away_and_disconnects(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    workspace(&c, &["bob", "carol"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;

    // Alice's first tab: online.
    connect_as(&node, "tab1", "alice", &c.gateway_url(0)).await;
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "online", "{u}");
    // A second tab, then the first closes: still online, no update.
    connect_as(&node, "tab2", "alice", &c.gateway_url(0)).await;
    node.disconnect("tab1").await;
    node.expect_none("bob", update_of("alice"), Duration::from_millis(800))
        .await;

    // Reopen a tab; both away → away.
    connect_as(&node, "tab3", "alice", &c.gateway_url(0)).await;
    for tab in ["tab2", "tab3"] {
        let ack = node
            .emit_with_ack(tab, "presence:set", vec![json!({ "status": "away" })], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["ok"], true, "{ack:?}");
    }
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "away", "{u}");

    // Queries: several users at once.
    let ack = node
        .emit_with_ack(
            "bob",
            "presence:query",
            vec![json!({ "users": ["alice", "bob", "carol"] })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        ack[0]["presence"],
        json!({ "alice": "away", "bob": "online", "carol": "offline" }),
        "{ack:?}"
    );

    // The last tabs go: offline.
    node.disconnect("tab2").await;
    node.disconnect("tab3").await;
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "offline", "{u}");
}

#[tokio::test]
async fn a_dead_gateway_s_users_go_offline_within_ttl_plus_sweep() {
    dead_gateway_s_users_go_offline(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_dead_gateway_s_users_go_offline_within_ttl_plus_sweep() {
    dead_gateway_s_users_go_offline(Backend::Redis).await;
}

async fn dead_gateway_s_users_go_offline(backend: Backend) {
    // Heartbeat 200 ms, ttl 1 s: offline within 1 s + 200 ms sweep.
    let c = Cluster::start_tweaked_on(backend, 2, Some((200, 1_000)), |_| {}).await;
    workspace(&c, &["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "online", "{u}");

    // Heartbeats keep alice online past the ttl.
    node.expect_none("bob", update_of("alice"), Duration::from_millis(1_500))
        .await;

    // Gateway A dies without a goodbye.
    c.tasks[0].abort();
    let killed = Instant::now();
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "offline", "{u}");
    // Not a functional deadline, only a sanity bound well above ttl + sweep.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn a_presence_flip_reports_only_that_user() {
    let c = Cluster::start_with(1, Some((300, 5_000))).await;
    workspace(&c, &["bob"]).await;
    let nats = async_nats::connect(c.nats().url()).await.unwrap();
    let mut heartbeats = nats
        .subscribe(confab_contracts::presence::HEARTBEAT_SUBJECT)
        .await
        .unwrap();
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob", "bob", &c.gateway_url(0)).await;
    for n in 0..20 {
        let name = format!("idle{n}");
        connect_as(&node, &name, &name, &c.gateway_url(0)).await;
    }
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    node.expect("bob", update_of("alice"), T).await;

    let ack = node
        .emit_with_ack(
            "alice",
            "presence:set",
            vec![json!({ "status": "away" })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    // The first heartbeat that carries alice's new status carries nothing
    // else: 22 users are connected, one changed.
    let deadline = tokio::time::Instant::now() + T;
    let report = loop {
        let msg = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut heartbeats))
            .await
            .expect("a heartbeat with alice away")
            .unwrap();
        let hb: Value = serde_json::from_slice(&msg.payload).unwrap();
        let users = hb["users"].as_array().unwrap();
        if users
            .iter()
            .any(|u| u["user"] == "alice" && u["status"] == "away")
        {
            break (hb, msg.payload.len());
        }
    };
    let (hb, bytes) = report;
    assert_eq!(hb["users"].as_array().unwrap().len(), 1, "{hb}");
    eprintln!("heartbeat with the flip: {bytes} bytes");
    let u = node.expect("bob", update_of("alice"), T).await;
    assert_eq!(u["args"][0]["status"], "away", "{u}");
}
