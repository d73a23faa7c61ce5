//! Limits, refusals and the operational endpoints, with raw clients.

use std::time::Duration;

use confab_events::RoomId;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn polling_and_bad_handshakes_get_the_protocol_json_error() {
    let gw = spawn_gateway(|_| {}).await;
    let http = reqwest::Client::new();
    // Issue #13: a polling handshake is served now (it used to be refused
    // with "Transport unknown"); an unknown transport still is.
    let open = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert!(open.text().await.unwrap().starts_with("0{"));
    let cases = [
        ("EIO=4&transport=abc", 400, 0, "Transport unknown"),
        (
            "EIO=3&transport=websocket",
            400,
            5,
            "Unsupported protocol version",
        ),
        (
            "transport=websocket",
            400,
            5,
            "Unsupported protocol version",
        ),
    ];
    for (q, status, code, message) in cases {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/socket.io/?{q}", gw.url())).send(),
        )
        .await
        .expect("answered, not hung")
        .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({ "code": code, "message": message }), "{q}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn origin_allow_list_is_enforced() {
    let gw =
        spawn_gateway(|c| c.cors.allowed_origins = vec!["https://chat.example.com".into()]).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/socket.io/?EIO=4&transport=websocket", gw.url()))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "code": 4, "message": "Forbidden" })
    );
    // The allowed origin upgrades.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = gw.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://chat.example.com".parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("allowed origin upgrades");
    assert!(gw.handle.metrics().render().contains("origin_not_allowed"));
    gw.stop().await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009_and_malformed_packets_with_1002() {
    let gw = spawn_gateway(|c| {
        c.engine.max_payload = 4096;
        c.messages.max_body_bytes = 1024;
    })
    .await;
    let auth = json!({ "token": token("alice") });

    let mut ws = RawWs::connect(&gw.ws_url()).await;
    let open = ws.text().await;
    assert!(open.contains("\"maxPayload\":4096"), "{open}");
    ws.send(&format!("40{auth}")).await;
    assert!(ws.text().await.starts_with("40{"));
    ws.send(&format!("42[\"room:join\",\"{}\"]", "x".repeat(5000)))
        .await;
    let close = ws
        .closed(Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("maxPayload"), "{}", close.reason);

    for junk in [
        "9", "4abc", "42{}", "4\u{1}", "42[\"x\"", "40[1,2]", "45-[]", "43[]",
    ] {
        let mut ws = RawWs::connect(&gw.ws_url()).await;
        ws.text().await;
        ws.send(&format!("40{auth}")).await;
        assert!(ws.text().await.starts_with("40{"));
        ws.send(junk).await;
        let close = ws.closed(Duration::from_secs(5)).await;
        if let Some(c) = close {
            assert_eq!(u16::from(c.code), 1002, "{junk:?}: {}", c.reason);
        }
    }
    // A binary frame nobody waits for.
    let mut ws = RawWs::connect(&gw.ws_url()).await;
    ws.text().await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.closed(Duration::from_secs(5)).await;

    // The gateway still serves.
    let mut ws = RawWs::connect(&gw.ws_url()).await;
    assert!(ws.socket_io_connect(Some(&auth)).await.starts_with("40{"));
    gw.stop().await;
}

#[tokio::test]
async fn slow_consumers_are_disconnected_not_waited_for() {
    let gw = spawn_gateway(|c| {
        c.engine.outbound_queue = 8;
        c.engine.write_timeout = Duration::from_millis(500);
    })
    .await;
    let auth = json!({ "token": token("slow") });
    let mut slow = RawWs::connect(&gw.ws_url()).await;
    assert!(slow.socket_io_connect(Some(&auth)).await.starts_with("40{"));
    let mut fast = RawWs::connect(&gw.ws_url()).await;
    assert!(
        fast.socket_io_connect(Some(&json!({ "token": token("fast") })))
            .await
            .starts_with("40{")
    );
    let slow_room = RoomId::parse("user:slow").unwrap();
    let fast_room = RoomId::parse("user:fast").unwrap();
    eventually("both joined", Duration::from_secs(5), || {
        gw.handle.members(&slow_room) == 1 && gw.handle.members(&fast_room) == 1
    })
    .await;

    // The slow client never reads; 64 KiB events pile up behind its socket.
    let big = json!("y".repeat(64 * 1024));
    for _ in 0..400 {
        gw.handle.emit(&slow_room, "bulk", &big).await.unwrap();
        if gw.handle.members(&slow_room) == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    eventually("slow consumer dropped", Duration::from_secs(10), || {
        gw.handle.members(&slow_room) == 0
    })
    .await;
    let metrics = gw.handle.metrics().render();
    assert!(
        metrics.contains("confab_gateway_dropped_total{reason=\"slow_consumer\"}"),
        "{metrics}"
    );

    // The other client was never held up.
    gw.handle.emit(&fast_room, "ping", &json!(1)).await.unwrap();
    let ping = fast.text().await;
    assert!(
        ping.starts_with(r#"42["ping",1,""#) && ping.ends_with(r#""]"#),
        "the event with its offset: {ping}"
    );
    drop(slow);
    gw.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let gw = spawn_gateway(|_| {}).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = http
        .get(format!("{}/readyz", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["bus"]["kind"], "in-process");
    assert_eq!(body["bus"]["shared"], false);

    let mut ws = RawWs::connect(&gw.ws_url()).await;
    ws.socket_io_connect(Some(&json!({ "token": token("m") })))
        .await;
    let text = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "confab_gateway_connections 1",
        "confab_gateway_events_in_total",
        "confab_gateway_events_out_total",
        "confab_gateway_rooms",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    gw.stop().await;
}
