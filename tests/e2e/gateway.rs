//! The gateway with the official socket.io-client 4.8.

use std::time::Duration;

use confab_events::{RoomId, UserId};
use confab_test_support::NodeClient;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

const T: Duration = Duration::from_secs(10);

fn claims(user: &str, exp_offset: i64, aud: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({ "sub": user, "iss": ISSUER, "aud": aud, "iat": now, "exp": now + exp_offset })
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn connects_with_a_valid_token_and_receives_user_room_events() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    node.connect("a", &gw.url(), opts(&token("alice"))).await;
    let connected = node.expect("a", is_type("connect"), T).await;
    assert!(connected["id"].is_string(), "{connected}");

    let room = RoomId::user(&UserId::parse("alice").unwrap());
    eventually("alice in her user room", T, || {
        gw.handle.members(&room) == 1
    })
    .await;
    gw.handle
        .emit(&room, "notice", &json!({ "text": "hello alice" }))
        .await
        .unwrap();
    let ev = node.expect("a", is_event("notice"), T).await;
    // The event, then its offset for connection-state recovery.
    assert_eq!(ev["args"][0], json!({ "text": "hello alice" }));
    assert_eq!(ev["args"].as_array().unwrap().len(), 2, "{ev}");
    assert!(
        ev["args"][1].as_str().unwrap().parse::<u64>().is_ok(),
        "{ev}"
    );

    // Bob's room does not reach alice.
    let bob = RoomId::user(&UserId::parse("bob").unwrap());
    gw.handle
        .emit(&bob, "notice", &json!("for bob"))
        .await
        .unwrap();
    node.expect_none("a", is_event("notice"), Duration::from_millis(300))
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn rejected_handshakes_say_why() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    let cases = [
        ("garbage", "not-a-jwt".to_string(), "malformed"),
        (
            "expired",
            sign(Algorithm::HS256, &claims("alice", -600, AUDIENCE)),
            "expired",
        ),
        (
            "audience",
            sign(Algorithm::HS256, &claims("alice", 600, "someone-else")),
            "audience",
        ),
        (
            "algorithm",
            sign(Algorithm::HS384, &claims("alice", 600, AUDIENCE)),
            "HS384",
        ),
        (
            "signature",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims("alice", 600, AUDIENCE),
                &EncodingKey::from_secret(b"another-secret-another-secret-another"),
            )
            .unwrap(),
            "signature",
        ),
        (
            "subject",
            sign(Algorithm::HS256, &claims("al.ice", 600, AUDIENCE)),
            "sub",
        ),
    ];
    for (name, tok, needle) in cases {
        node.connect(name, &gw.url(), opts(&tok)).await;
        let err = node.expect(name, is_type("connect_error"), T).await;
        let message = err["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {needle:?} not in {message:?}"
        );
        assert!(err["data"]["code"].is_string(), "{name}: {err}");
    }
    // No token at all.
    node.connect(
        "none",
        &gw.url(),
        json!({ "transports": ["websocket"], "forceNew": true, "reconnection": false }),
    )
    .await;
    let err = node.expect("none", is_type("connect_error"), T).await;
    assert!(err["message"].as_str().unwrap().contains("token"), "{err}");
    let metrics = gw.handle.metrics().render();
    assert!(
        metrics.contains("confab_gateway_handshake_failures_total{reason="),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn token_from_bearer_header_or_cookie() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    let base = json!({ "transports": ["websocket"], "forceNew": true, "reconnection": false });

    let mut o = base.clone();
    o["extraHeaders"] = json!({ "Authorization": format!("Bearer {}", token("hdr")) });
    node.connect("h", &gw.url(), o).await;
    node.expect("h", is_type("connect"), T).await;

    let mut o = base.clone();
    o["extraHeaders"] =
        json!({ "Cookie": format!("theme=dark; confab_token={}", token("cookie")) });
    node.connect("c", &gw.url(), o).await;
    node.expect("c", is_type("connect"), T).await;

    let cookie_room = RoomId::parse("user:cookie").unwrap();
    eventually("cookie user joined", T, || {
        gw.handle.members(&cookie_room) == 1
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn room_join_and_leave_are_acked_and_authorized() {
    let gw = spawn_gateway(|_| {}).await;
    let alice = UserId::parse("alice").unwrap();
    let general = RoomId::parse("channel:general").unwrap();
    gw.membership.grant(&alice, &general);
    let node = NodeClient::spawn().await;
    connect_as(&node, "a", "alice", &gw.url()).await;
    // Rooms from membership are joined at connect.
    eventually("joined general", T, || gw.handle.members(&general) == 1).await;

    let ack = node
        .emit_with_ack("a", "room:leave", vec![json!("channel:general")], T)
        .await
        .unwrap();
    assert_eq!(ack, vec![json!({ "ok": true, "room": "channel:general" })]);
    assert_eq!(gw.handle.members(&general), 0);
    gw.handle
        .emit(&general, "message:new", &json!({"id": "m1"}))
        .await
        .unwrap();
    node.expect_none("a", is_event("message:new"), Duration::from_millis(300))
        .await;

    let ack = node
        .emit_with_ack(
            "a",
            "room:join",
            vec![json!({ "room": "channel:general" })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack, vec![json!({ "ok": true, "room": "channel:general" })]);
    gw.handle
        .emit(&general, "message:new", &json!({"id": "m2"}))
        .await
        .unwrap();
    let ev = node.expect("a", is_event("message:new"), T).await;
    assert_eq!(ev["args"][0], json!({ "id": "m2" }));
    assert_eq!(
        ev["args"].as_array().unwrap().len(),
        2,
        "{ev} (offset last)"
    );

    let ack = node
        .emit_with_ack("a", "room:join", vec![json!("channel:secret")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");

    for bad in [
        "channel:a.b",
        "channel:*",
        "channel:>",
        "channel:a b",
        "lobby",
        "",
    ] {
        let ack = node
            .emit_with_ack("a", "room:join", vec![json!(bad)], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["error"]["code"], "invalid_room", "{bad:?}: {ack:?}");
    }
    let ack = node
        .emit_with_ack("a", "room:join", vec![json!(42)], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "invalid_request", "{ack:?}");

    let ack = node
        .emit_with_ack("a", "no:such-event", vec![json!(1)], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "unknown_event", "{ack:?}");

    let ack = node
        .emit_with_ack("a", "room:leave", vec![json!("user:alice")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
    gw.stop().await;
}

#[tokio::test]
async fn clean_disconnect_and_reconnect() {
    clean_disconnect_and_reconnect_with(true).await;
    clean_disconnect_and_reconnect_with(false).await;
}

async fn clean_disconnect_and_reconnect_with(recovery: bool) {
    let gw = spawn_gateway(|cfg| cfg.recovery.enabled = recovery).await;
    let room = RoomId::parse("user:alice").unwrap();
    let node = NodeClient::spawn().await;
    let mut o = opts(&token("alice"));
    o["reconnection"] = json!(true);
    o["reconnectionDelay"] = json!(100);
    o["reconnectionDelayMax"] = json!(200);
    node.connect("a", &gw.url(), o).await;
    let first = node.expect("a", is_type("connect"), T).await;

    // The transport drops: the client reconnects by itself and gets events
    // again, in the same session when recovery is on.
    node.drop_transport("a").await;
    node.expect("a", is_type("disconnect"), T).await;
    let second = node.expect("a", is_type("connect"), T).await;
    if recovery {
        assert_eq!(first["id"], second["id"], "the session is recovered");
        assert_eq!(second["recovered"], true);
    } else {
        assert_ne!(first["id"], second["id"], "a fresh session after reconnect");
        assert_eq!(second["recovered"], false);
    }
    eventually("rejoined", T, || gw.handle.members(&room) == 1).await;
    gw.handle.emit(&room, "notice", &json!(1)).await.unwrap();
    node.expect("a", is_event("notice"), T).await;

    // A clean disconnect leaves every room.
    node.disconnect("a").await;
    let d = node.expect("a", is_type("disconnect"), T).await;
    assert_eq!(d["reason"], "io client disconnect");
    eventually("left", T, || gw.handle.members(&room) == 0).await;
    eventually("connection closed", T, || {
        gw.handle
            .metrics()
            .render()
            .contains("confab_gateway_connections 0")
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn expiring_token_disconnects_with_a_reason_unless_refreshed() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    node.connect(
        "a",
        &gw.url(),
        opts(&token_ttl("alice", Duration::from_secs(2))),
    )
    .await;
    node.connect(
        "b",
        &gw.url(),
        opts(&token_ttl("bob", Duration::from_secs(2))),
    )
    .await;
    node.expect("a", is_type("connect"), T).await;
    node.expect("b", is_type("connect"), T).await;

    // Bob refreshes in time; a token for someone else is refused.
    let ack = node
        .emit_with_ack(
            "b",
            "auth:refresh",
            vec![json!({ "token": token("alice") })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "wrong_user", "{ack:?}");
    let ack = node
        .emit_with_ack(
            "b",
            "auth:refresh",
            vec![json!({ "token": token("bob") })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    assert!(ack[0]["expiresAt"].as_u64().unwrap() > 1_000_000_000);

    let expired = node.expect("a", is_event("session:expired"), T).await;
    assert_eq!(expired["args"][0]["code"], "token_expired");
    let d = node.expect("a", is_type("disconnect"), T).await;
    assert_eq!(d["reason"], "io server disconnect");

    node.expect_none("b", is_type("disconnect"), Duration::from_secs(2))
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_socket() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    for s in ["a", "b", "c"] {
        connect_as(&node, s, s, &gw.url()).await;
    }
    let url = gw.url();
    gw.stop().await;
    for s in ["a", "b", "c"] {
        let d = node.expect(s, is_type("disconnect"), T).await;
        assert_eq!(d["reason"], "transport close", "{d}");
    }
    // Nothing listens any more.
    assert!(
        tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn membership_changes_move_every_socket_of_the_user() {
    let gw = spawn_gateway(|_| {}).await;
    let node = NodeClient::spawn().await;
    // Two tabs of alice, one of bob.
    for (s, u) in [("a1", "alice"), ("a2", "alice"), ("b", "bob")] {
        connect_as(&node, s, u, &gw.url()).await;
    }
    let alice = RoomId::parse("user:alice").unwrap();
    let general = RoomId::parse("channel:general").unwrap();
    eventually("tabs in the user room", T, || {
        gw.handle.members(&alice) == 2
    })
    .await;

    gw.handle
        .emit(&alice, "room:joined", &json!({ "room": "channel:general" }))
        .await
        .unwrap();
    for s in ["a1", "a2"] {
        let ev = node.expect(s, is_event("room:joined"), T).await;
        assert_eq!(ev["args"][0]["room"], "channel:general");
    }
    assert_eq!(gw.handle.members(&general), 2);
    gw.handle
        .emit(&general, "message:new", &json!({ "id": "m1" }))
        .await
        .unwrap();
    node.expect("a1", is_event("message:new"), T).await;
    node.expect("a2", is_event("message:new"), T).await;
    node.expect_none("b", is_event("message:new"), Duration::from_millis(300))
        .await;

    gw.handle
        .emit(
            &alice,
            "room:left",
            &json!({ "room": "channel:general", "reason": "kicked" }),
        )
        .await
        .unwrap();
    node.expect("a1", is_event("room:left"), T).await;
    node.expect("a2", is_event("room:left"), T).await;
    assert_eq!(gw.handle.members(&general), 0);
    gw.handle
        .emit(&general, "message:new", &json!({ "id": "m2" }))
        .await
        .unwrap();
    node.expect_none("a1", is_event("message:new"), Duration::from_millis(300))
        .await;
    gw.stop().await;
}
