//! The WebSocket cases of the official Socket.IO v5 and Engine.IO v4
//! protocol test suites, run against the conformance server
//! (`confab_gateway::conformance`) with its prescribed settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::polling::conformance_server;
use crate::support::{RawWs, Seen, assert_open};

fn sio(addr: SocketAddr) -> String {
    format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
}

fn eio(addr: SocketAddr) -> String {
    format!("ws://{addr}/engine.io/?EIO=4&transport=websocket")
}

async fn sio_connected(addr: SocketAddr) -> RawWs {
    let mut ws = RawWs::connect(&sio(addr)).await;
    let reply = ws.socket_io_connect(None).await;
    assert!(reply.starts_with("40{"), "{reply}");
    assert_eq!(ws.text().await, r#"42["auth",{}]"#);
    ws
}

#[tokio::test]
async fn engine_io_handshake_heartbeat_close() {
    let addr = conformance_server().await;
    for base in [sio(addr), eio(addr)] {
        // Successful open.
        let mut ws = RawWs::connect(&base).await;
        assert_open(&ws.text().await, &[]);

        // Ping/pong three times.
        for _ in 0..3 {
            match ws.next(Duration::from_secs(2)).await {
                Seen::Text(t) => assert_eq!(t, "2"),
                other => panic!("expected ping, got {other:?}"),
            }
            ws.send("3").await;
        }
        // Forceful close by the client.
        ws.send("1").await;
        ws.closed(Duration::from_secs(2)).await;

        // No pong: the server closes after pingInterval + pingTimeout.
        let mut ws = RawWs::connect(&base).await;
        ws.closed(Duration::from_secs(2)).await;
    }
    // Invalid EIO or transport: the upgrade is refused.
    for path in ["socket.io", "engine.io"] {
        for q in [
            "transport=websocket",
            "EIO=abc&transport=websocket",
            "EIO=4",
            "EIO=4&transport=abc",
            "EIO=3&transport=websocket",
        ] {
            RawWs::connect_err(&format!("ws://{addr}/{path}/?{q}")).await;
        }
    }
}

#[tokio::test]
async fn engine_io_messages() {
    let addr = conformance_server().await;
    let mut ws = RawWs::connect(&eio(addr)).await;
    assert_open(&ws.text().await, &[]);
    ws.send("4hello").await;
    assert_eq!(ws.text().await, "4hello");
    ws.send_binary(&[1, 2, 3, 4]).await;
    match ws.next(Duration::from_secs(2)).await {
        Seen::Binary(b) => assert_eq!(b, vec![1, 2, 3, 4]),
        other => panic!("{other:?}"),
    }
    ws.send("abc").await;
    ws.closed(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn socket_io_connect() {
    let addr = conformance_server().await;
    let cases = [
        ("40", "40", r#"42["auth",{}]"#),
        (
            r#"40{"token":"123"}"#,
            "40",
            r#"42["auth",{"token":"123"}]"#,
        ),
        ("40/custom,", "40/custom,", r#"42/custom,["auth",{}]"#),
        (
            r#"40/custom,{"token":"abc"}"#,
            "40/custom,",
            r#"42/custom,["auth",{"token":"abc"}]"#,
        ),
    ];
    for (send, prefix, auth) in cases {
        let mut ws = RawWs::connect(&sio(addr)).await;
        ws.text().await;
        ws.send(send).await;
        let reply = ws.text().await;
        assert!(reply.starts_with(prefix), "{send}: {reply}");
        let v: Value = serde_json::from_str(&reply[prefix.len()..]).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1, "{reply}");
        assert!(v["sid"].is_string(), "{reply}");
        assert_eq!(ws.text().await, auth, "{send}");
    }

    let mut ws = RawWs::connect(&sio(addr)).await;
    ws.text().await;
    ws.send("40/random").await;
    assert_eq!(
        ws.text().await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );

    let mut ws = RawWs::connect(&sio(addr)).await;
    ws.text().await;
    ws.send("4abc").await;
    ws.closed(Duration::from_secs(2)).await;

    // No handshake within the connect timeout (1 s): closed. Pongs keep
    // the Engine.IO session itself alive meanwhile.
    let mut ws = RawWs::connect(&sio(addr)).await;
    ws.text().await;
    let start = std::time::Instant::now();
    loop {
        match ws.next(Duration::from_secs(3)).await {
            Seen::Text(t) if t == "2" => ws.send("3").await,
            Seen::Closed(_) => break,
            other => panic!("{other:?}"),
        }
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
}

#[tokio::test]
async fn socket_io_disconnect() {
    let addr = conformance_server().await;
    let mut ws = sio_connected(addr).await;
    ws.send("41").await;
    // The Engine.IO session stays: the next frame is a ping.
    match ws.next(Duration::from_secs(2)).await {
        Seen::Text(t) => assert_eq!(t, "2"),
        other => panic!("{other:?}"),
    }

    let mut ws = sio_connected(addr).await;
    ws.send("40/custom").await;
    assert!(ws.text().await.starts_with("40/custom,"));
    assert_eq!(ws.text().await, r#"42/custom,["auth",{}]"#);
    ws.send("41/custom").await;
    ws.send(r#"42["message","message to main namespace"]"#)
        .await;
    assert_eq!(
        ws.text().await,
        r#"42["message-back","message to main namespace"]"#
    );
}

#[tokio::test]
async fn socket_io_messages() {
    let addr = conformance_server().await;
    let mut ws = sio_connected(addr).await;
    ws.send(r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(ws.text().await, r#"42["message-back",1,"2",{"3":[true]}]"#);

    ws.send(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    assert_eq!(ws.text().await, r#"43456[1,"2",{"3":[false]}]"#);

    let placeholders = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}"#;
    ws.send(&format!(r#"452-["message",{placeholders}]"#)).await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.text().await,
        format!(r#"452-["message-back",{placeholders}]"#)
    );
    for expected in [vec![1u8, 2, 3], vec![4, 5, 6]] {
        match ws.next(Duration::from_secs(2)).await {
            Seen::Binary(b) => assert_eq!(b, expected),
            other => panic!("{other:?}"),
        }
    }

    ws.send(&format!(r#"452-789["message-with-ack",{placeholders}]"#))
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(ws.text().await, format!(r#"462-789[{placeholders}]"#));
    for expected in [vec![1u8, 2, 3], vec![4, 5, 6]] {
        match ws.next(Duration::from_secs(2)).await {
            Seen::Binary(b) => assert_eq!(b, expected),
            other => panic!("{other:?}"),
        }
    }

    for invalid in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
    ] {
        let mut ws = sio_connected(addr).await;
        ws.send(invalid).await;
        ws.closed(Duration::from_secs(2)).await;
    }
}
