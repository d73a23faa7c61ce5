//! Abuse and resource bounds (issue #12): what one client may cost the
//! gateway, each checked by a client that tries to cost more.

use std::time::{Duration, Instant};

use confab_events::RoomId;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::support::*;

const T: Duration = Duration::from_secs(15);

fn ws_url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
}

/// Connects `user` over a raw WebSocket; returns the socket and the
/// CONNECT reply's data.
async fn connected(url: &str, auth: Value) -> (RawWs, Value) {
    let mut ws = RawWs::connect(url).await;
    let reply = ws.socket_io_connect(Some(&auth)).await;
    let data = reply
        .strip_prefix("40")
        .unwrap_or_else(|| panic!("connected: {reply}"));
    (ws, serde_json::from_str(data).unwrap())
}

/// Every text frame `ws` receives within `within`.
async fn frames_within(ws: &mut RawWs, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next(left).await {
            Seen::Text(t) => out.push(t),
            Seen::Binary(_) => {}
            Seen::Closed(_) | Seen::Timeout => return out,
        }
    }
}

/// The value of the metric line starting with `prefix`, 0 if absent.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Alternating `typing:start` / `typing:stop` used to publish every flip to
/// the room, and every `presence:set` flip was acked and reported: both now
/// take from the socket's one event budget. Counted where it matters: the
/// typing events that reach another user's socket on another gateway.
#[tokio::test]
async fn typing_and_presence_flips_are_bounded_by_one_event_budget() {
    const RATE: f64 = 5.0;
    const BURST: u32 = 10;
    const FLIPS: usize = 300;
    let c = Cluster::start_tweaked(2, None, |cfg| {
        cfg.limits.event_rate_per_sec = RATE;
        cfg.limits.event_burst = BURST;
    })
    .await;
    c.workspace_with_general(&["bob"]).await;
    let general = RoomId::parse("channel:general").unwrap();
    let (mut alice, _) =
        connected(&ws_url(c.gateways[0].0), json!({ "token": token("alice") })).await;
    let (mut bob, _) = connected(&ws_url(c.gateways[1].0), json!({ "token": token("bob") })).await;
    eventually("both in #general", T, || {
        c.gateways[0].1.members(&general) == 1 && c.gateways[1].1.members(&general) == 1
    })
    .await;

    let start = Instant::now();
    for _ in 0..FLIPS {
        alice.send(r#"42["typing:start","channel:general"]"#).await;
        alice.send(r#"42["typing:stop","channel:general"]"#).await;
    }
    // Asked with an ack: refused, saying when to retry (read below).
    alice.send(r#"421["typing:start","channel:general"]"#).await;
    let flood = start.elapsed();

    let typing = frames_within(&mut bob, Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|f| f.starts_with(r#"42["typing""#))
        .count();
    // What the budget lets through while the flood lasted, with a second
    // to spare; the old gateway published all 600 flips.
    let allowed = f64::from(BURST) + RATE * (flood.as_secs_f64() + 1.0);
    assert!(
        typing >= 1 && (typing as f64) <= allowed,
        "{typing} typing events reached bob, at most {allowed} allowed"
    );

    let ack = loop {
        let f = alice.text().await;
        if f.starts_with("431") {
            break f;
        }
    };
    assert!(ack.contains(r#""code":"rate_limited""#), "{ack}");
    assert!(ack.contains(r#""retryAfterMs":"#), "{ack}");

    // Presence flips with acks: past the budget each is refused.
    let mut refused = 0;
    for i in 0..100u32 {
        let status = if i % 2 == 0 { "away" } else { "online" };
        alice
            .send(&format!(
                r#"42{}["presence:set",{{"status":"{status}"}}]"#,
                100 + i
            ))
            .await;
        let id = format!("43{}", 100 + i);
        let ack = loop {
            let f = alice.text().await;
            if f.starts_with(&id) {
                break f;
            }
        };
        if ack.contains(r#""code":"rate_limited""#) {
            assert!(ack.contains(r#""retryAfterMs":"#), "{ack}");
            refused += 1;
        }
    }
    let flood = start.elapsed();
    let allowed = f64::from(BURST) + RATE * (flood.as_secs_f64() + 1.0);
    assert!(
        (100 - refused) as f64 <= allowed,
        "{refused} of 100 presence flips refused"
    );

    let metrics = c.gateways[0].1.metrics().render();
    let dropped = metric(
        &metrics,
        r#"confab_gateway_events_rate_limited_total{event="typing:stop",outcome="dropped"}"#,
    );
    assert!(dropped > 0, "{metrics}");
    let answered = metric(
        &metrics,
        r#"confab_gateway_events_rate_limited_total{event="presence:set",outcome="answered"}"#,
    );
    assert_eq!(answered, refused as u64, "{metrics}");
}

/// Before its first CONNECT succeeded, a connection is read only for small
/// text packets: binary packets (whose attachments were buffered, 10 x 1 MB
/// for 45 s) and large payloads close it at once, over WebSocket and over
/// polling.
#[tokio::test]
async fn nothing_is_buffered_for_an_unauthenticated_connection() {
    let gw = spawn_gateway(|c| c.engine.max_connect_payload = 4096).await;

    // A binary event header announcing attachments, then an attachment.
    let mut ws = RawWs::connect(&gw.ws_url()).await;
    ws.text().await;
    ws.send(r#"4510-["upload",{"_placeholder":true,"num":0}]"#)
        .await;
    let close = ws
        .closed(Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(
        close.reason.contains("before a Socket.IO CONNECT"),
        "{}",
        close.reason
    );

    // Binary data first.
    let mut ws = RawWs::connect(&gw.ws_url()).await;
    ws.text().await;
    ws.send_binary(&vec![7u8; 64 * 1024]).await;
    let close = ws
        .closed(Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);

    // A CONNECT larger than the bound (the old gateway answered it).
    let mut ws = RawWs::connect(&gw.ws_url()).await;
    ws.text().await;
    let big = json!({ "token": "x".repeat(8 * 1024) });
    ws.send(&format!("40{big}")).await;
    let close = ws
        .closed(Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(close.reason.contains("at most 4096"), "{}", close.reason);

    // Over polling: the session ends at once instead of waiting.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", gw.url());
    for body in [
        r#"4510-["upload",{"_placeholder":true,"num":0}]"#.to_owned(),
        format!("4510-[\"upload\"]\u{1e}b{}", "AAAA".repeat(1000)),
    ] {
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("{base}&sid={sid}");
        let _ = http.post(&url).body(body).send().await;
        let next = http.get(&url).send().await.expect("answered, not held");
        let status = next.status().as_u16();
        let text = next.text().await.unwrap();
        assert!(
            status == 400 || text == "1",
            "the session must be over: {status} {text}"
        );
    }

    let metrics = gw.handle.metrics().render();
    assert!(
        metric(
            &metrics,
            r#"confab_gateway_closed_total{reason="unauthenticated_payload"}"#
        ) >= 5,
        "{metrics}"
    );
    // A well-behaved client still connects.
    let (_ws, data) = connected(&gw.ws_url(), json!({ "token": token("alice") })).await;
    assert!(data["sid"].is_string());
    gw.stop().await;
}

/// A client that sends its request headers a byte at a time (or none) is
/// cut off after `limits.header_read_timeout`.
#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let gw = spawn_gateway(|c| c.limits.header_read_timeout = Duration::from_millis(500)).await;
    let mut dribbler = TcpStream::connect(gw.addr).await.unwrap();
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    dribbler
        .write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(8) {
        if dribbler.write_all(b"X-Slow: a\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), dribbler.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "the gateway kept a connection dribbling headers for 8 s"
    );
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(8), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the gateway kept a silent connection for 8 s"
    );
    // Requests that come in time are served.
    let ok = reqwest::get(format!("{}/healthz", gw.url())).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    gw.stop().await;
}

/// Connections per address are refused at the handshake (HTTP 429), per
/// user at CONNECT (CONNECT_ERROR `too_many_connections`); a closed one
/// frees its place.
#[tokio::test]
async fn connections_are_limited_per_address_and_per_user() {
    let gw = spawn_gateway(|c| {
        c.limits.connections_per_ip = 4;
        c.limits.connections_per_user = 2;
    })
    .await;
    let (a1, _) = connected(&gw.ws_url(), json!({ "token": token("ann") })).await;
    let (_a2, _) = connected(&gw.ws_url(), json!({ "token": token("ann") })).await;
    // A third socket of ann: refused at CONNECT, with a code.
    let mut a3 = RawWs::connect(&gw.ws_url()).await;
    let reply = a3
        .socket_io_connect(Some(&json!({ "token": token("ann") })))
        .await;
    assert!(reply.starts_with("44"), "{reply}");
    assert!(
        reply.contains(r#""code":"too_many_connections""#),
        "{reply}"
    );
    let _b1 = connected(&gw.ws_url(), json!({ "token": token("ben") })).await;
    // Four connections from 127.0.0.1 (a3 still holds its place): a fifth
    // is refused at the handshake, WebSocket and polling alike.
    let err = RawWs::connect_err(&gw.ws_url()).await;
    assert!(err.contains("429"), "{err}");
    let resp = reqwest::get(format!("{}/socket.io/?EIO=4&transport=polling", gw.url()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    let metrics = gw.handle.metrics().render();
    assert!(
        metric(
            &metrics,
            r#"confab_gateway_handshake_failures_total{reason="too_many_connections"}"#
        ) >= 3,
        "{metrics}"
    );
    // Closing frees the places: ann's and the address's.
    drop(a1);
    drop(a3);
    let mut again = None;
    for _ in 0..100 {
        again = RawWs::try_connect(&gw.ws_url()).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("closing a connection frees its address's place");
    let reply = again
        .socket_io_connect(Some(&json!({ "token": token("ann") })))
        .await;
    assert!(reply.starts_with("40{"), "{reply}");
    gw.stop().await;
}

/// `room:join` past `limits.max_rooms_per_socket` is refused with a code;
/// rooms the membership service gives at CONNECT are all joined, and count.
#[tokio::test]
async fn rooms_per_socket_are_limited() {
    let gw = spawn_gateway(|c| c.limits.max_rooms_per_socket = 3).await;
    let alice = confab_events::UserId::parse("alice").unwrap();
    let room = |i: u32| RoomId::parse(&format!("channel:c{i}")).unwrap();
    for i in 1..=6 {
        gw.membership.grant(&alice, &room(i));
    }
    // Four rooms at CONNECT: all joined, past the limit.
    for i in 5..=6 {
        gw.membership.revoke(&alice, &room(i));
    }
    let (mut ws, _) = connected(&gw.ws_url(), json!({ "token": token("alice") })).await;
    eventually("the rooms of CONNECT", T, || {
        (1..=4).all(|i| gw.handle.members(&room(i)) == 1)
    })
    .await;
    for i in 5..=6 {
        gw.membership.grant(&alice, &room(i));
    }
    let mut ask = async |id: u32, event: &str, r: u32| -> String {
        ws.send(&format!(r#"42{id}["{event}","channel:c{r}"]"#))
            .await;
        loop {
            let f = ws.text().await;
            if f.starts_with(&format!("43{id}")) {
                return f;
            }
        }
    };
    let refused = ask(1, "room:join", 5).await;
    assert!(refused.contains(r#""code":"too_many_rooms""#), "{refused}");
    // A room it is in already is no more.
    let again = ask(2, "room:join", 1).await;
    assert!(again.contains(r#""ok":true"#), "{again}");
    for (id, r) in [(3, 1), (4, 2)] {
        let left = ask(id, "room:leave", r).await;
        assert!(left.contains(r#""ok":true"#), "{left}");
    }
    let joined = ask(5, "room:join", 5).await;
    assert!(joined.contains(r#""ok":true"#), "{joined}");
    let refused = ask(6, "room:join", 6).await;
    assert!(refused.contains(r#""code":"too_many_rooms""#), "{refused}");
    assert_eq!(gw.handle.members(&room(6)), 0);
    gw.stop().await;
}

/// Resumes `pid` of `user` from offset 0; returns the `recovery:failed`
/// reason, or `None` when the session was recovered.
async fn resume_from_zero(gw: &TestGateway, user: &str, pid: &str) -> Option<String> {
    let auth = json!({ "token": token(user), "pid": pid, "offset": "0" });
    let (mut ws, data) = connected(&gw.ws_url(), auth).await;
    let recovered = data["pid"] == pid;
    let frames = frames_within(&mut ws, Duration::from_millis(300)).await;
    // Dropped without a close: the session stays recoverable.
    drop(ws);
    let failed = frames
        .iter()
        .find(|f| f.starts_with(r#"42["recovery:failed""#));
    match (recovered, failed) {
        (true, None) => None,
        (false, Some(f)) => {
            let v: Value = serde_json::from_str(&f[2..]).unwrap();
            Some(v[1]["reason"].as_str().unwrap().to_owned())
        }
        other => panic!("recovered and failed at once? {other:?} {frames:?}"),
    }
}

/// A client that resumes from offset 0 in a loop used to make the gateway
/// read the whole missed range (up to `max_replay_events + 1`) every time.
/// Now a session that missed too much is forgotten after the first read,
/// and each session gets `recovery.max_attempts` attempts per window.
/// Counted: the events the replays read from the log.
#[tokio::test]
async fn an_offset_zero_recovery_loop_does_not_read_the_log_each_time() {
    const MAX: usize = 20;
    let gw = spawn_gateway(|c| {
        c.recovery.max_replay_events = MAX;
        c.recovery.max_attempts = 3;
    })
    .await;
    let reads = |gw: &TestGateway| {
        metric(
            &gw.handle.metrics().render(),
            "confab_gateway_replay_read_events_total",
        )
    };
    // Alice missed more than one recovery replays.
    let (ws, data) = connected(&gw.ws_url(), json!({ "token": token("alice") })).await;
    let pid = data["pid"].as_str().unwrap().to_owned();
    drop(ws);
    let alice = RoomId::parse("user:alice").unwrap();
    eventually("alice gone", T, || gw.handle.members(&alice) == 0).await;
    for i in 0..MAX + 5 {
        gw.handle
            .emit(&alice, "note", &json!({ "i": i }))
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    for _ in 0..10 {
        reasons.push(resume_from_zero(&gw, "alice", &pid).await);
    }
    let read = reads(&gw);
    assert!(read <= (MAX + 1) as u64, "10 attempts read {read} events");
    assert_eq!(
        reasons[0].as_deref(),
        Some("too_many_missed"),
        "{reasons:?}"
    );
    assert!(
        reasons[1..]
            .iter()
            .all(|r| r.as_deref() == Some("unknown_session")),
        "{reasons:?}"
    );

    // Bob missed a few: each recovery succeeds and reads them again, but
    // only `max_attempts` times per window.
    let (ws, data) = connected(&gw.ws_url(), json!({ "token": token("bob") })).await;
    let pid = data["pid"].as_str().unwrap().to_owned();
    drop(ws);
    let bob = RoomId::parse("user:bob").unwrap();
    eventually("bob gone", T, || gw.handle.members(&bob) == 0).await;
    for i in 0..5 {
        gw.handle
            .emit(&bob, "note", &json!({ "i": i }))
            .await
            .unwrap();
    }
    let before = reads(&gw);
    let mut reasons = Vec::new();
    for _ in 0..8 {
        reasons.push(resume_from_zero(&gw, "bob", &pid).await);
        eventually("bob gone", T, || gw.handle.members(&bob) == 0).await;
    }
    let read = reads(&gw) - before;
    assert!(read <= 3 * 5, "8 attempts read {read} events");
    assert_eq!(reasons[..3], [None, None, None], "{reasons:?}");
    assert!(
        reasons[3..]
            .iter()
            .all(|r| r.as_deref() == Some("rate_limited")),
        "{reasons:?}"
    );
    gw.stop().await;
}
