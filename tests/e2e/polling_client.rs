//! The real `socket.io-client` 4.8 over long-polling: the seed app's exact
//! options (default transports: polling first, then the upgrade), and a
//! polling-only client (`transports: ["polling"]`).

use std::time::Duration;

use confab_test_support::NodeClient;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::support::*;

const T: Duration = Duration::from_secs(15);

/// The seed app's options, untouched, plus the token and an independent
/// Manager per socket.
pub fn seed(token: &str) -> Value {
    json!({
        "withCredentials": true,
        "reconnectionAttempts": 10,
        "reconnectionDelay": 1000,
        "reconnectionDelayMax": 5000,
        "auth": { "token": token },
        "forceNew": true,
    })
}

/// A polling-only client.
pub fn polling_only(token: &str) -> Value {
    json!({
        "transports": ["polling"],
        "auth": { "token": token },
        "forceNew": true,
        "reconnection": false,
    })
}

fn send(room: &str, body: &str, id: &str) -> Value {
    json!({ "room": room, "body": body, "clientMsgId": id })
}

pub async fn transport(node: &NodeClient, socket: &str) -> String {
    node.state(socket).await["transport"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Alice sends messages numbered `range` to #general; every socket in `to`
/// gets them all, in order.
pub async fn exchange(node: &NodeClient, range: std::ops::Range<usize>, to: &[&str]) {
    let mut ids = Vec::new();
    let from = range.start;
    for i in range {
        let ack = node
            .emit_with_ack(
                "alice",
                "message:send",
                vec![send(
                    "channel:general",
                    &format!("hello {i}"),
                    &format!("c{i}"),
                )],
                T,
            )
            .await
            .unwrap();
        assert!(ack[0]["id"].is_string(), "{ack:?}");
        ids.push(ack[0]["id"].clone());
    }
    for who in to {
        for (i, id) in ids.iter().enumerate() {
            let ev = node.expect(who, is_event("message:new"), T).await;
            assert_eq!(&ev["args"][0]["id"], id, "{who} #{i}");
            assert_eq!(ev["args"][0]["body"], format!("hello {}", from + i));
        }
    }
}

#[tokio::test]
async fn the_seed_options_connect_upgrade_and_exchange_events() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    node.connect("alice", &c.gateway_url(0), seed(&token("alice")))
        .await;
    node.connect("bob", &c.gateway_url(0), seed(&token("bob")))
        .await;
    node.expect("alice", is_type("connect"), T).await;
    node.expect("bob", is_type("connect"), T).await;
    // Events flow while the upgrade may still be under way ...
    exchange(&node, 0..5, &["bob", "alice"]).await;
    // ... and both end up on WebSocket.
    for who in ["alice", "bob"] {
        let start = tokio::time::Instant::now();
        while transport(&node, who).await != "websocket" {
            assert!(start.elapsed() < T, "{who} never upgraded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    exchange(&node, 5..10, &["bob", "alice"]).await;
    node.expect_none("bob", is_type("disconnect"), Duration::ZERO)
        .await;
}

/// alice starts typing in `channel:general`: her ack is `ok` and bob gets
/// the `typing` event, which is returned.
pub async fn alice_types_to_bob(node: &NodeClient) -> Value {
    let ack = node
        .emit_with_ack("alice", "typing:start", vec![json!("channel:general")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    let ev = node.expect("bob", is_event("typing"), T).await;
    assert_eq!(ev["args"][0]["userId"], "alice", "{ev}");
    ev
}

#[tokio::test]
async fn a_polling_only_client_sends_receives_types_and_gets_acks() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    node.connect("alice", &c.gateway_url(0), polling_only(&token("alice")))
        .await;
    node.connect("bob", &c.gateway_url(0), polling_only(&token("bob")))
        .await;
    node.expect("alice", is_type("connect"), T).await;
    node.expect("bob", is_type("connect"), T).await;
    assert_eq!(transport(&node, "alice").await, "polling");
    exchange(&node, 0..20, &["bob", "alice"]).await;
    // Volatile events too.
    let ev = alice_types_to_bob(&node).await;
    assert_eq!(ev["args"][0]["typing"], true);
    // Still polling, never upgraded.
    assert_eq!(transport(&node, "bob").await, "polling");
}
