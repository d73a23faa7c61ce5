//! The long-polling cases of the official Engine.IO v4 protocol test suite,
//! by name, run against the conformance server's `/engine.io/` echo with
//! the suite's settings (ping 300 ms / timeout 200 ms, maxPayload 1e6).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::support::{RawWs, Seen, assert_open};

const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);

/// A raw long-polling client of one Engine.IO endpoint.
pub struct Suite {
    addr: SocketAddr,
    path: &'static str,
    pub http: Client,
}

impl Suite {
    /// The conformance server's `/engine.io/` echo.
    async fn start() -> Suite {
        let addr = conformance_server().await;
        Suite::on(addr, "/engine.io/")
    }

    /// The endpoint at `path` of the server at `addr`.
    pub fn on(addr: SocketAddr, path: &'static str) -> Suite {
        Suite {
            addr,
            path,
            http: Client::new(),
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("http://{}{}?{query}", self.addr, self.path)
    }

    pub fn polling(&self, sid: &str) -> String {
        self.url(&format!("EIO=4&transport=polling&sid={sid}"))
    }

    fn ws(&self, sid: &str) -> String {
        format!(
            "ws://{}{}?EIO=4&transport=websocket&sid={sid}",
            self.addr, self.path
        )
    }

    pub async fn request(&self, method: Method, url: &str, body: &str) -> (StatusCode, String) {
        let r = self
            .http
            .request(method, url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.text().await.unwrap())
    }

    pub async fn get(&self, url: impl reqwest::IntoUrl) -> (StatusCode, String) {
        let r = self.http.get(url).send().await.unwrap();
        let status = r.status();
        (status, r.text().await.unwrap())
    }

    pub async fn post(&self, sid: &str, body: &str) -> (StatusCode, String) {
        self.request(Method::POST, &self.polling(sid), body).await
    }

    /// The suite's `initLongPollingSession`: a handshake, its sid.
    pub async fn session(&self) -> String {
        let (status, body) = self.get(&self.url("EIO=4&transport=polling")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let open: Value = serde_json::from_str(&body[1..]).unwrap();
        open["sid"].as_str().unwrap().to_owned()
    }
}

/// The conformance server on a free port.
pub async fn conformance_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(confab_gateway::conformance::serve(
        listener,
        std::future::pending(),
    ));
    addr
}

// handshake

#[tokio::test]
async fn successfully_opens_a_session() {
    let s = Suite::start().await;
    let r = s
        .http
        .get(s.url("EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; charset=UTF-8",
        "the reference server's content type"
    );
    let body = r.text().await.unwrap();
    assert_open(&body, &["websocket"]);
}

#[tokio::test]
async fn fails_with_an_invalid_eio_query_parameter() {
    let s = Suite::start().await;
    let (status, _) = s.get(&s.url("transport=polling")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = s.get(&s.url("EIO=abc&transport=polling")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        r#"{"code":5,"message":"Unsupported protocol version"}"#
    );
}

#[tokio::test]
async fn fails_with_an_invalid_transport_query_parameter() {
    let s = Suite::start().await;
    let (status, _) = s.get(&s.url("EIO=4")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = s.get(&s.url("EIO=4&transport=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, r#"{"code":0,"message":"Transport unknown"}"#);
}

#[tokio::test]
async fn fails_with_an_invalid_request_method() {
    let s = Suite::start().await;
    let url = s.url("EIO=4&transport=polling");
    let (status, body) = s.request(Method::POST, &url, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, r#"{"code":2,"message":"Bad handshake method"}"#);
    let (status, _) = s.request(Method::PUT, &url, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// message

#[tokio::test]
async fn sends_and_receives_a_payload_containing_one_plain_text_packet() {
    let s = Suite::start().await;
    let sid = s.session().await;
    assert_eq!(s.post(&sid, "4hello").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        s.get(s.polling(&sid)).await,
        (StatusCode::OK, "4hello".into())
    );
}

#[tokio::test]
async fn sends_and_receives_a_payload_containing_several_plain_text_packets() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let payload = "4test1\x1e4test2\x1e4test3";
    assert_eq!(s.post(&sid, payload).await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        s.get(s.polling(&sid)).await,
        (StatusCode::OK, payload.into())
    );
}

#[tokio::test]
async fn sends_and_receives_a_payload_containing_plain_text_and_binary_packets() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let payload = "4hello\x1ebAQIDBA==";
    assert_eq!(s.post(&sid, payload).await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        s.get(s.polling(&sid)).await,
        (StatusCode::OK, payload.into())
    );
}

#[tokio::test]
async fn closes_the_session_upon_invalid_packet_format() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let (status, _) = s.post(&sid, "abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn closes_the_session_upon_duplicate_poll_requests() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let first = s.get(s.polling(&sid));
    let second = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.get(format!("{}&t=burst", s.polling(&sid))).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first, (StatusCode::OK, "1".into()));
    assert_eq!(second.0, StatusCode::BAD_REQUEST);
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// heartbeat

#[tokio::test]
async fn sends_ping_pong_packets() {
    let s = Suite::start().await;
    let sid = s.session().await;
    for _ in 0..3 {
        assert_eq!(s.get(s.polling(&sid)).await, (StatusCode::OK, "2".into()));
        assert_eq!(s.post(&sid, "3").await, (StatusCode::OK, "ok".into()));
    }
}

#[tokio::test]
async fn closes_the_session_upon_ping_timeout() {
    let s = Suite::start().await;
    let sid = s.session().await;
    // The suite sleeps exactly pingInterval + pingTimeout; a little more
    // keeps a loaded machine from racing the server's timer.
    tokio::time::sleep(PING_INTERVAL + PING_TIMEOUT + Duration::from_millis(100)).await;
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// close

#[tokio::test]
async fn forcefully_closes_the_session() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let poll = s.get(s.polling(&sid));
    let close = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.post(&sid, "1").await
    };
    let (poll, close) = tokio::join!(poll, close);
    assert_eq!(poll, (StatusCode::OK, "6".into()));
    assert_eq!(close.0, StatusCode::OK);
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// upgrade

/// Opens the WebSocket for `sid` and completes the probe; the held GET
/// (started first) gets the noop.
async fn upgrade(s: &Suite, sid: &str) -> RawWs {
    let poll = s.get(s.polling(sid));
    let probe = async {
        let mut ws = RawWs::connect(&s.ws(sid)).await;
        ws.send("2probe").await;
        assert_eq!(ws.text().await, "3probe");
        ws
    };
    let (poll, mut ws) = tokio::join!(poll, probe);
    assert_eq!(poll, (StatusCode::OK, "6".into()));
    ws.send("5").await;
    ws
}

#[tokio::test]
async fn successfully_upgrades_from_http_long_polling_to_websocket() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let mut ws = upgrade(&s, &sid).await;
    ws.send("4hello").await;
    assert_eq!(ws.text().await, "4hello");
}

#[tokio::test]
async fn ignores_http_requests_with_same_sid_after_upgrade() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let mut ws = upgrade(&s, &sid).await;
    // The echo proves the server read `5` before the GET below.
    ws.send("4sync").await;
    assert_eq!(ws.text().await, "4sync");
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.post(&sid, "4nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    ws.send("4hello").await;
    assert_eq!(ws.text().await, "4hello");
}

#[tokio::test]
async fn ignores_websocket_connection_with_same_sid_after_upgrade() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let mut ws = upgrade(&s, &sid).await;
    ws.send("4sync").await;
    assert_eq!(ws.text().await, "4sync");
    let refused = RawWs::connect_err(&s.ws(&sid)).await;
    assert!(refused.contains("400"), "{refused}");
    // The upgraded WebSocket carries on.
    ws.send("4hello").await;
    assert_eq!(ws.text().await, "4hello");
}

// Beyond the suite: the reference server's other answers.

#[tokio::test]
async fn polling_refusals_match_the_reference_server() {
    let s = Suite::start().await;
    // Unknown sid.
    let (status, body) = s.get(s.polling("nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    // A POST over maxPayload: 413, the session lives on.
    let sid = s.session().await;
    let big = format!("4{}", "x".repeat(1_000_001));
    let (status, _) = s.post(&sid, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.post(&sid, "4still").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        s.get(s.polling(&sid)).await,
        (StatusCode::OK, "4still".into())
    );
    // An octet-stream POST (Engine.IO v3's binary): 400, the session ends.
    let r = s
        .http
        .post(s.polling(&sid))
        .header("content-type", "application/octet-stream")
        .body(vec![4u8, 1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (status, _) = s.get(s.polling(&sid)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn packets_queued_during_the_upgrade_go_out_on_the_websocket_in_order() {
    let s = Suite::start().await;
    let sid = s.session().await;
    let poll = s.get(s.polling(&sid));
    let probe = async {
        let mut ws = RawWs::connect(&s.ws(&sid)).await;
        ws.send("2probe").await;
        assert_eq!(ws.text().await, "3probe");
        ws
    };
    let (poll, mut ws) = tokio::join!(poll, probe);
    assert_eq!(poll.1, "6");
    // Upgrading: the echo's answers wait for the WebSocket.
    for i in 0..5 {
        assert_eq!(s.post(&sid, &format!("4m{i}")).await.0, StatusCode::OK);
    }
    ws.send("5").await;
    for i in 0..5 {
        assert_eq!(ws.text().await, format!("4m{i}"));
    }
    match ws.next(Duration::from_millis(100)).await {
        Seen::Timeout => {}
        Seen::Text(t) if t == "2" => {}
        other => panic!("nothing else expected, got {other:?}"),
    }
}

#[tokio::test]
async fn cors_echoes_the_origin_and_answers_preflights() {
    let s = Suite::start().await;
    let origin = "http://app.example";
    let r = s
        .http
        .request(Method::OPTIONS, s.url("EIO=4&transport=polling"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["access-control-allow-headers"], "content-type");
    let r = s
        .http
        .get(s.url("EIO=4&transport=polling"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    assert_eq!(r.headers()["vary"], "Origin");
}
