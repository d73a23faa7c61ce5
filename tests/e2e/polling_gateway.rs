//! Socket.IO over raw long-polling: binary attachments on the conformance
//! server, and the real gateway's CORS and graceful shutdown.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::polling::{Suite, conformance_server};
use crate::support::*;

/// GETs until the joined payloads contain `want`; returns them.
async fn poll_until(s: &Suite, sid: &str, want: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {want:?} in {seen:?}"
        );
        let (status, body) = s.get(s.polling(sid)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.push_str(&body);
        seen.push('\u{1e}');
    }
    seen
}

#[tokio::test]
async fn socket_io_over_polling_carries_binary_attachments_both_ways() {
    let s = Suite::on(conformance_server().await, "/socket.io/");
    let sid = s.session().await;
    assert_eq!(s.post(&sid, "40").await.0, StatusCode::OK);
    poll_until(&s, &sid, r#"42["auth",{}]"#).await;
    let event = "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQIDBA==";
    assert_eq!(s.post(&sid, event).await, (StatusCode::OK, "ok".into()));
    let back = "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQIDBA==";
    poll_until(&s, &sid, back).await;
    // An ack with an attachment.
    let ack = "451-0[\"message-with-ack\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID";
    assert_eq!(s.post(&sid, ack).await.0, StatusCode::OK);
    poll_until(
        &s,
        &sid,
        "461-0[{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID",
    )
    .await;
}

#[tokio::test]
async fn a_graceful_shutdown_answers_held_gets_so_clients_reconnect() {
    let gw = spawn_gateway(|_| {}).await;
    let s = Suite::on(gw.addr, "/socket.io/");
    let sid = s.session().await;
    assert!(
        confab_gateway_sid_names_a_gateway(&sid),
        "the sid names its gateway: {sid}"
    );
    let connect = format!(r#"40{{"token":"{}"}}"#, token("alice"));
    assert_eq!(s.post(&sid, &connect).await.0, StatusCode::OK);
    poll_until(&s, &sid, "40{").await;
    // Drain what the connect produced, then hold a GET across the shutdown.
    let held = async {
        loop {
            let (status, body) = s.get(s.polling(&sid)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body.split('\u{1e}').any(|p| p == "1") {
                return body;
            }
        }
    };
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gw.stop().await;
    };
    let (last, ()) = tokio::join!(held, stop);
    assert!(
        last.ends_with('1'),
        "the held GET ends with a close: {last:?}"
    );
}

/// Gateway sids are `{gateway id}.{random}` (for a later forwarder).
fn confab_gateway_sid_names_a_gateway(sid: &str) -> bool {
    sid.split_once('.')
        .is_some_and(|(gw, rest)| gw.starts_with("gw-") && !rest.is_empty())
}

#[tokio::test]
async fn the_gateway_echoes_configured_origins_and_refuses_others() {
    let origin = "http://app.example";
    let gw = spawn_gateway(|c| c.cors.allowed_origins = vec![origin.into()]).await;
    let s = Suite::on(gw.addr, "/socket.io/");
    let url = s.url("EIO=4&transport=polling");
    let pre = s
        .http
        .request(Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(pre.headers()["access-control-allow-origin"], origin);
    assert_eq!(pre.headers()["access-control-allow-credentials"], "true");
    let r = s
        .http
        .get(&url)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["vary"], "Origin");
    let r = s
        .http
        .get(&url)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"code":4,"message":"Forbidden"}"#
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_polling_client_that_stops_polling_is_dropped_as_a_slow_consumer() {
    let gw = spawn_gateway(|c| {
        c.engine.outbound_queue = 8;
        c.engine.write_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let s = Suite::on(gw.addr, "/socket.io/");
    let sid = s.session().await;
    let connect = format!(r#"40{{"token":"{}"}}"#, token("slow"));
    assert_eq!(s.post(&sid, &connect).await.0, StatusCode::OK);
    poll_until(&s, &sid, "40{").await;
    let room = confab_events::RoomId::parse("user:slow").unwrap();
    eventually("joined", Duration::from_secs(5), || {
        gw.handle.members(&room) == 1
    })
    .await;
    // No more GETs: the session's queue and the connection's fill up.
    let big = serde_json::json!("y".repeat(64 * 1024));
    for _ in 0..400 {
        gw.handle.emit(&room, "bulk", &big).await.unwrap();
        if gw.handle.members(&room) == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    eventually("slow consumer dropped", Duration::from_secs(10), || {
        gw.handle.members(&room) == 0
    })
    .await;
    // The session is gone: what was queued never grows without bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = s.get(s.polling(&sid)).await;
        if status == StatusCode::BAD_REQUEST {
            break;
        }
        assert!(
            status == StatusCode::OK && body.len() <= 1_000_000 + 64 * 1024,
            "a GET answers at most about maxPayload: {status} {}",
            body.len()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "session still alive"
        );
    }
    gw.stop().await;
}
