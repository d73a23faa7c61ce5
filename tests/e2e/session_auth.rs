//! Session auth (`auth.session`) end to end: a real better-auth app
//! (tests/better-auth), its real session cookie, the real
//! socket.io-client, over polling then WebSocket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use confab_events::{RoomId, UserId};
use confab_test_support::{BetterAuthApp, NodeClient, SignedIn};
use serde_json::{Value, json};

use crate::support::{TestGateway, is_event, is_type, opts, spawn_gateway, token};

const WAIT: Duration = Duration::from_secs(15);

/// socket.io-client options that authenticate with the cookie alone (Node
/// has no cookie jar: the header stands for the browser's).
fn cookie_opts(cookie: &str) -> Value {
    json!({
        "extraHeaders": { "cookie": format!("theme=dark; {cookie}") },
        "forceNew": true,
        "reconnection": false,
    })
}

async fn gateway_for(app: &BetterAuthApp, ttl: Duration) -> TestGateway {
    let url = app.session_url();
    spawn_gateway(move |cfg| {
        cfg.auth.session.url = Some(url);
        cfg.auth.session.cache_ttl = ttl;
    })
    .await
}

async fn receives_in_user_room(gw: &TestGateway, node: &NodeClient, socket: &str, who: &SignedIn) {
    let user = UserId::parse(&who.user_id).unwrap();
    gw.handle
        .emit(&RoomId::user(&user), "notice", &json!({"hello": socket}))
        .await
        .unwrap();
    let args = node.expect_event(socket, "notice", WAIT).await;
    assert_eq!(args[0]["hello"], socket);
}

#[tokio::test]
async fn a_better_auth_cookie_connects_and_signing_out_ends_it() {
    let app = BetterAuthApp::start().await;
    let alice = app
        .sign_up_and_in("alice@example.com", "password-1234")
        .await;
    let gw = gateway_for(&app, Duration::from_secs(1)).await;
    let node = NodeClient::spawn().await;

    // Default transports: polling first, then the upgrade.
    node.connect("a", &gw.url(), cookie_opts(&alice.cookie))
        .await;
    node.expect("a", is_type("connect"), WAIT).await;
    let mut upgraded = false;
    for _ in 0..100 {
        if node.state("a").await["transport"] == "websocket" {
            upgraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(upgraded, "the polling session upgraded to WebSocket");
    receives_in_user_room(&gw, &node, "a", &alice).await;

    // What the app saw: the session cookie and the client's address only.
    let seen = app.session_requests().await;
    let headers = &seen[0]["headers"];
    assert_eq!(headers["cookie"], alice.cookie.as_str(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.get("origin").is_none());

    // Still signed in past the cache TTL: the recheck keeps the socket.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receives_in_user_room(&gw, &node, "a", &alice).await;
    assert!(app.session_requests().await.len() >= 2, "asked again");
    assert!(
        !node
            .received()
            .iter()
            .any(|m| m["event"] == "session:expired")
    );

    // Signed out: the connected socket is told at its recheck (the cache
    // TTL), and a new connection is refused.
    app.sign_out(&alice.cookie).await;
    let args = node.expect_event("a", "session:expired", WAIT).await;
    assert_eq!(args[0]["code"], "session_expired", "{args:?}");
    node.expect("a", is_type("disconnect"), WAIT).await;

    node.connect("b", &gw.url(), cookie_opts(&alice.cookie))
        .await;
    let refused = node.expect("b", is_type("connect_error"), WAIT).await;
    assert_eq!(refused["data"]["code"], "session_invalid", "{refused}");
    node.exit().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_mass_reconnect_asks_the_app_once_per_session() {
    let app = BetterAuthApp::start().await;
    let alice = app
        .sign_up_and_in("alice2@example.com", "password-1234")
        .await;
    let bob = app
        .sign_up_and_in("bob2@example.com", "password-1234")
        .await;
    let gw = gateway_for(&app, Duration::from_secs(60)).await;
    let node = NodeClient::spawn().await;
    for i in 0..30 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        let mut o = cookie_opts(&who.cookie);
        o["transports"] = json!(["websocket"]);
        node.connect(&format!("s{i}"), &gw.url(), o).await;
    }
    for i in 0..30 {
        node.expect(&format!("s{i}"), is_type("connect"), WAIT)
            .await;
    }
    assert_eq!(
        app.session_requests().await.len(),
        2,
        "one call per session"
    );
    let metrics = gw.handle.metrics().render();
    assert!(
        metrics.contains("confab_gateway_session_calls_total{outcome=\"user\"} 2"),
        "{metrics}"
    );
    node.exit().await;
    gw.stop().await;
}

#[tokio::test]
async fn no_cookie_a_foreign_origin_and_jwt_first() {
    let app = BetterAuthApp::start().await;
    let alice = app
        .sign_up_and_in("alice3@example.com", "password-1234")
        .await;
    let url = app.session_url();
    let gw = spawn_gateway(move |cfg| {
        cfg.auth.session.url = Some(url);
        cfg.cors.allowed_origins = vec!["https://app.example".into(), "*".into()];
    })
    .await;
    let node = NodeClient::spawn().await;

    node.connect(
        "none",
        &gw.url(),
        json!({"forceNew": true, "reconnection": false}),
    )
    .await;
    let refused = node.expect("none", is_type("connect_error"), WAIT).await;
    assert_eq!(refused["data"]["code"], "no_session", "{refused}");

    let mut foreign = cookie_opts(&alice.cookie);
    foreign["extraHeaders"]["origin"] = json!("https://evil.example");
    node.connect("foreign", &gw.url(), foreign).await;
    let refused = node.expect("foreign", is_type("connect_error"), WAIT).await;
    assert_eq!(refused["data"]["code"], "origin_not_allowed", "{refused}");

    let mut listed = cookie_opts(&alice.cookie);
    listed["extraHeaders"]["origin"] = json!("https://app.example");
    node.connect("listed", &gw.url(), listed).await;
    node.expect("listed", is_type("connect"), WAIT).await;
    let calls = app.session_requests().await.len();

    // A bearer that is not a JWT is the app's to check (this app has no
    // bearer plugin: not signed in), not a malformed JWT.
    let bearer = json!({
        "extraHeaders": { "authorization": "Bearer opaque-session-token" },
        "transports": ["websocket"], "forceNew": true, "reconnection": false,
    });
    node.connect("bearer", &gw.url(), bearer).await;
    let refused = node.expect("bearer", is_type("connect_error"), WAIT).await;
    assert_eq!(refused["data"]["code"], "session_invalid", "{refused}");
    let calls = calls + 1;
    assert_eq!(app.session_requests().await.len(), calls);

    // A JWT wins over the cookie: the app is not asked.
    let mut both = opts(&token("jwt-user"));
    both["extraHeaders"] = json!({ "cookie": alice.cookie });
    node.connect("jwt", &gw.url(), both).await;
    node.expect("jwt", is_type("connect"), WAIT).await;
    gw.handle
        .emit(
            &RoomId::user(&UserId::parse("jwt-user").unwrap()),
            "notice",
            &json!({}),
        )
        .await
        .unwrap();
    node.expect("jwt", is_event("notice"), WAIT).await;
    assert_eq!(app.session_requests().await.len(), calls);
    node.exit().await;
    gw.stop().await;
}

/// A session endpoint (generic preset) that fails until told otherwise.
async fn flaky_app(up: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> String {
    let router = axum::Router::new().route(
        "/session",
        axum::routing::get(move || {
            let up = up.load(Ordering::SeqCst);
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if up {
                    axum::Json(json!({"userId": "carol", "expiresAt": 4_070_908_800u64}))
                        .into_response()
                } else {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/session")
}

#[tokio::test]
async fn an_unavailable_backend_makes_the_client_retry_until_it_is_back() {
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_app(Arc::clone(&up), Arc::clone(&calls)).await;
    let gw = spawn_gateway(move |cfg| {
        cfg.auth.session.url = Some(url);
        cfg.auth.session.preset = confab_auth::session::Preset::Generic;
        cfg.auth.session.breaker_threshold = 2;
        cfg.auth.session.breaker_cooldown = Duration::from_millis(300);
    })
    .await;
    let node = NodeClient::spawn().await;
    let mut o = cookie_opts("better-auth.session_token=carol.sig");
    o["reconnection"] = json!(true);
    o["reconnectionDelay"] = json!(50);
    o["reconnectionDelayMax"] = json!(200);
    node.connect("c", &gw.url(), o).await;

    // The handshake is answered 503: `connect_error` (never a silent
    // accept), and the socket.io-client Manager retries on its own with
    // growing backoff.
    let refused = node.expect("c", is_type("connect_error"), WAIT).await;
    assert_eq!(refused["description"], 503, "{refused}");
    node.expect(
        "c",
        |m| m["type"] == "reconnect_attempt" && m["attempt"] == 3,
        WAIT,
    )
    .await;
    assert!(!node.received().iter().any(|m| m["type"] == "connect"));
    let during = calls.load(Ordering::SeqCst);

    up.store(true, Ordering::SeqCst);
    node.expect("c", is_type("connect"), WAIT).await;
    assert!(during >= 2, "the app was asked ({during})");
    let metrics = gw.handle.metrics().render();
    assert!(
        metrics.contains("confab_gateway_session_breaker_opened_total"),
        "{metrics}"
    );
    node.exit().await;
    gw.stop().await;
}
