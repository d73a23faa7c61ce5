//! `message:send` across two gateways on NATS (and on Redis, `on_redis_*`),
//! with socket.io-client.

use std::time::Duration;

use confab_test_support::NodeClient;
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};
use crate::support::*;

const T: Duration = Duration::from_secs(15);

fn send(room: &str, body: &str, id: &str) -> Value {
    json!({ "room": room, "body": body, "clientMsgId": id })
}

/// `message:send` of `body` with the client id `id` to `channel:general`
/// from `socket`; answers the ack.
async fn send_general(node: &NodeClient, socket: &str, body: &str, id: &str) -> Vec<Value> {
    let request = send("channel:general", body, id);
    node.emit_with_ack(socket, "message:send", vec![request], T)
        .await
        .unwrap()
}

/// A cluster of `gateways` with `w1`'s `#general` (alice and bob), alice
/// connected to the first gateway and bob to gateway `bobs`.
async fn alice_and_bob(gateways: usize, bobs: usize) -> (Cluster, NodeClient) {
    alice_and_bob_on(Backend::Nats, gateways, bobs).await
}

async fn alice_and_bob_on(backend: Backend, gateways: usize, bobs: usize) -> (Cluster, NodeClient) {
    let c = Cluster::start_on(backend, gateways).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(bobs)).await;
    (c, node)
}

#[tokio::test]
async fn sends_are_acked_after_storage_and_delivered_in_order_everywhere() {
    acked_after_storage_and_in_order(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_sends_are_acked_after_storage_and_delivered_in_order_everywhere() {
    acked_after_storage_and_in_order(Backend::Redis).await;
}

async fn acked_after_storage_and_in_order(backend: Backend) {
    let (_c, node) = alice_and_bob_on(backend, 2, 1).await;

    let mut acks = Vec::new();
    for i in 0..20 {
        let ack = send_general(&node, "alice", &format!("hello {i}"), &format!("c{i}")).await;
        let a = &ack[0];
        assert!(
            a["id"].is_string() && a["seq"].is_u64() && a["createdAt"].is_string(),
            "{a}"
        );
        acks.push(a.clone());
    }
    // Bob (gateway B) and alice herself (gateway A) get all 20, in order,
    // with everything a client renders.
    for who in ["bob", "alice"] {
        for (i, a) in acks.iter().enumerate() {
            let ev = node.expect(who, is_event("message:new"), T).await;
            let m = &ev["args"][0];
            assert_eq!(m["id"], a["id"], "{who} #{i}");
            assert_eq!(m["body"], format!("hello {i}"));
            assert_eq!(m["room"], "channel:general");
            assert_eq!(m["authorId"], "alice");
            assert_eq!(m["createdAt"], a["createdAt"]);
        }
    }
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn a_retry_with_the_same_client_msg_id_creates_nothing_new() {
    retry_creates_nothing_new(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_retry_with_the_same_client_msg_id_creates_nothing_new() {
    retry_creates_nothing_new(Backend::Redis).await;
}

async fn retry_creates_nothing_new(backend: Backend) {
    let (_c, node) = alice_and_bob_on(backend, 1, 0).await;

    let first = send_general(&node, "alice", "once", "same").await;
    let again = send_general(&node, "alice", "once", "same").await;
    assert_eq!(first, again, "the retry gets the first ack");
    node.expect("bob", is_event("message:new"), T).await;
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;
    // Another user's identical clientMsgId is another message.
    let bobs = send_general(&node, "bob", "mine", "same").await;
    assert_ne!(bobs[0]["id"], first[0]["id"]);
}

#[tokio::test]
async fn invalid_sends_are_refused_with_a_reason_and_store_nothing() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&[]).await;
    c.ok(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "secret", "workspace": "w1", "name": "s", "visibility": "private" }),
    )
    .await;
    let node = NodeClient::spawn().await;
    // Mallory is in the workspace but not in #secret.
    c.ok(
        Some("alice"),
        json!({ "type": "add_workspace_member", "workspace": "w1", "user": "mallory", "role": "member" }),
    )
    .await;
    connect_as(&node, "m", "mallory", &c.gateway_url(0)).await;
    connect_as(&node, "a", "alice", &c.gateway_url(0)).await;

    let cases = [
        (
            json!({ "room": "channel:secret", "body": "x", "clientMsgId": "1" }),
            "forbidden",
        ),
        (
            json!({ "room": "channel:a.b", "body": "x", "clientMsgId": "1" }),
            "invalid_room",
        ),
        (
            json!({ "room": "user:alice", "body": "x", "clientMsgId": "1" }),
            "invalid_room",
        ),
        (
            json!({ "room": "channel:general", "body": "   ", "clientMsgId": "1" }),
            "forbidden",
        ),
        (
            json!({ "room": "channel:general", "body": "x" }),
            "invalid_request",
        ),
        (json!("just a string"), "invalid_request"),
    ];
    for (req, code) in cases {
        let ack = node
            .emit_with_ack("m", "message:send", vec![req.clone()], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["error"]["code"], code, "{req}: {ack:?}");
    }
    // Alice is in #general: body and id checks.
    let big = "x".repeat(9 * 1024);
    let cases = [
        (send("channel:general", "   ", "1"), "invalid_body"),
        (send("channel:general", &big, "1"), "body_too_large"),
        (send("channel:general", "x", "a b"), "invalid_client_msg_id"),
        (
            send("channel:general", "x", &"z".repeat(65)),
            "invalid_client_msg_id",
        ),
    ];
    for (req, code) in cases {
        let ack = node
            .emit_with_ack("a", "message:send", vec![req.clone()], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["error"]["code"], code, "{ack:?}");
    }
    node.expect_none("a", is_event("message:new"), Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn sending_too_fast_is_rate_limited_with_a_retry_hint() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&[]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "a", "alice", &c.gateway_url(0)).await;
    // The default connection burst is 20.
    let mut limited = None;
    for i in 0..40 {
        let ack = send_general(&node, "a", "spam", &format!("s{i}")).await;
        if ack[0]["error"]["code"] == "rate_limited" {
            limited = Some((i, ack[0].clone()));
            break;
        }
    }
    let (i, err) = limited.expect("rate limited within 40 sends");
    assert!(i >= 20, "limited after {i} sends, before the burst");
    assert!(err["error"]["retryAfterMs"].as_u64().unwrap() > 0, "{err}");
}

/// Messages stored in the ROOMS stream, from the server's monitoring.
fn stored(c: &Cluster) -> u64 {
    let jsz = c.nats().monitor_json("/jsz?streams=true");
    jsz["account_details"][0]["stream_detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ROOMS")
        .map(|s| s["state"]["messages"].as_u64().unwrap())
        .expect("stream ROOMS")
}

#[tokio::test]
async fn typing_reaches_others_across_gateways_and_is_never_stored() {
    let (c, node) = alice_and_bob(2, 1).await;
    // Let the membership notifications settle before counting.
    let mut before = stored(&c);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = stored(&c);
        if now == before {
            break;
        }
        before = now;
    }

    let room = json!("channel:general");
    let ack = node
        .emit_with_ack("bob", "typing:start", vec![room.clone()], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    let t = node.expect("alice", is_event("typing"), T).await;
    assert_eq!(t["args"][0]["userId"], "bob");
    assert_eq!(t["args"][0]["typing"], true);
    assert!(t["args"][0]["expiresInMs"].as_u64().unwrap() > 0);
    // A repeated start within the throttle is absorbed.
    node.emit_with_ack("bob", "typing:start", vec![room.clone()], T)
        .await
        .unwrap();
    node.emit_with_ack("bob", "typing:stop", vec![room.clone()], T)
        .await
        .unwrap();
    let t = node.expect("alice", is_event("typing"), T).await;
    assert_eq!(
        t["args"][0]["typing"], false,
        "the repeated start was absorbed: {t}"
    );

    // Typing in a room the socket is not in is refused.
    let ack = node
        .emit_with_ack("bob", "typing:start", vec![json!("channel:elsewhere")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");

    // A socket that goes away while typing clears its indicator.
    node.emit_with_ack("bob", "typing:start", vec![room.clone()], T)
        .await
        .unwrap();
    assert_eq!(
        node.expect("alice", is_event("typing"), T).await["args"][0]["typing"],
        true
    );
    node.disconnect("bob").await;
    let t = node.expect("alice", is_event("typing"), T).await;
    assert_eq!(t["args"][0]["typing"], false);

    assert_eq!(stored(&c), before, "typing events must never be stored");
}
