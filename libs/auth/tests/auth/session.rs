//! Session auth against a real HTTP server in the test that records every
//! request and answers what each test scripts.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_auth::session::{
    NoObserver, Preset, SessionAuth, SessionConfig, SessionError, SessionObserver,
};
use serde_json::json;

/// What the scripted app answers.
#[derive(Clone)]
enum Script {
    /// better-auth's answer for the user named by the cookie's value,
    /// expiring in `ttl`.
    User {
        ttl: Duration,
    },
    /// `200 null`.
    Null,
    Status(StatusCode),
    Redirect,
    Huge,
    Slow(Duration),
}

#[derive(Clone)]
struct App {
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    redirected: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl App {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

async fn session(State(app): State<App>, headers: HeaderMap) -> Response {
    app.seen.lock().unwrap().push(headers.clone());
    let delay = *app.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let script = app.script.lock().unwrap().clone();
    let user = headers
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split('=').nth(1))
        .map(|v| v.split('.').next().unwrap_or(v).to_owned())
        .unwrap_or_else(|| "bearer".into());
    match script {
        Script::User { ttl } => {
            let expires = time::OffsetDateTime::now_utc() + ttl;
            let expires = expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            axum::Json(json!({
                "session": {"id": "s", "userId": user, "expiresAt": expires},
                "user": {"id": user, "email": "x@example.com"},
            }))
            .into_response()
        }
        Script::Null => axum::Json(serde_json::Value::Null).into_response(),
        Script::Status(s) => s.into_response(),
        Script::Redirect => (StatusCode::FOUND, [("location", "/elsewhere")]).into_response(),
        Script::Huge => "x".repeat(100_000).into_response(),
        Script::Slow(d) => {
            tokio::time::sleep(d).await;
            axum::Json(serde_json::Value::Null).into_response()
        }
    }
}

async fn start(script: Script) -> (App, SocketAddr) {
    let app = App {
        script: Arc::new(Mutex::new(script)),
        seen: Arc::default(),
        redirected: Arc::default(),
        delay: Arc::default(),
    };
    let redirected = Arc::clone(&app.redirected);
    let router = axum::Router::new()
        .route("/api/auth/get-session", get(session))
        .route(
            "/elsewhere",
            get(move || {
                redirected.fetch_add(1, Ordering::SeqCst);
                async { "followed" }
            }),
        )
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, addr)
}

fn config(addr: SocketAddr) -> SessionConfig {
    SessionConfig {
        url: Some(format!("http://{addr}/api/auth/get-session")),
        ..SessionConfig::default()
    }
}

fn auth(cfg: SessionConfig) -> SessionAuth {
    SessionAuth::new(&cfg, Arc::new(NoObserver))
        .unwrap()
        .unwrap()
}

fn cookie(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        format!("theme=dark; better-auth.session_token={value}.sig; tracking=1")
            .parse()
            .unwrap(),
    );
    h
}

const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

#[tokio::test]
async fn forwards_only_the_allow_listed_headers() {
    let (app, addr) = start(Script::User {
        ttl: Duration::from_secs(3600),
    })
    .await;
    let auth = auth(config(addr));
    let mut headers = cookie("alice");
    headers.insert("authorization", "Bearer opaque-token".parse().unwrap());
    headers.insert("origin", "https://app.example".parse().unwrap());
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    headers.insert("x-custom", "secret".parse().unwrap());
    let resolved = auth.resolve(&headers, CLIENT).await.unwrap();
    assert_eq!(resolved.user.user.as_str(), "alice");

    let seen = app.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["cookie"], "better-auth.session_token=alice.sig");
    assert_eq!(seen["authorization"], "Bearer opaque-token");
    // Not trusted: the client's own X-Forwarded-For is replaced.
    assert_eq!(seen["x-forwarded-for"], "192.0.2.7");
    for name in seen.keys() {
        assert!(
            [
                "cookie",
                "authorization",
                "x-forwarded-for",
                "host",
                "user-agent",
                "accept"
            ]
            .contains(&name.as_str()),
            "{name} was forwarded"
        );
    }
}

#[tokio::test]
async fn no_credentials_are_refused_without_a_call() {
    let (app, addr) = start(Script::Null).await;
    let auth = auth(config(addr));
    let mut headers = HeaderMap::new();
    headers.insert("cookie", "theme=dark".parse().unwrap());
    let err = auth.resolve(&headers, CLIENT).await.unwrap_err();
    assert_eq!(err.code(), "no_session");
    assert!(
        err.to_string().contains("better-auth.session_token"),
        "{err}"
    );
    assert_eq!(app.calls(), 0);
}

#[tokio::test]
async fn concurrent_lookups_of_one_session_make_one_call() {
    let (app, addr) = start(Script::User {
        ttl: Duration::from_secs(3600),
    })
    .await;
    *app.delay.lock().unwrap() = Duration::from_millis(300);
    let auth = auth(config(addr));
    let lookups = (0..50).map(|i| {
        let auth = auth.clone();
        // 40 sockets of alice, 10 of bob.
        let who = if i < 40 { "alice" } else { "bob" };
        async move { auth.resolve(&cookie(who), CLIENT).await }
    });
    let results = futures::future::join_all(lookups).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(app.calls(), 2, "one call per session, not per socket");
    // Then from the cache.
    auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    assert_eq!(app.calls(), 2);
}

#[tokio::test]
async fn a_lookup_survives_its_first_caller_giving_up() {
    let (app, addr) = start(Script::User {
        ttl: Duration::from_secs(3600),
    })
    .await;
    *app.delay.lock().unwrap() = Duration::from_millis(300);
    let auth = auth(config(addr));
    let first = tokio::time::timeout(
        Duration::from_millis(50),
        auth.resolve(&cookie("alice"), CLIENT),
    )
    .await;
    assert!(first.is_err(), "the first caller gave up");
    auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    assert_eq!(
        app.calls(),
        1,
        "the second caller joined the running lookup"
    );
}

#[tokio::test]
async fn verdicts_are_cached_within_their_ttls() {
    let (app, addr) = start(Script::Null).await;
    let auth = auth(SessionConfig {
        cache_ttl: Duration::from_secs(1),
        negative_ttl: Duration::from_millis(300),
        ..config(addr)
    });
    assert_eq!(
        auth.resolve(&cookie("alice"), CLIENT).await,
        Err(SessionError::NotSignedIn)
    );
    assert_eq!(
        auth.resolve(&cookie("alice"), CLIENT).await,
        Err(SessionError::NotSignedIn)
    );
    assert_eq!(app.calls(), 1, "the negative verdict is cached");
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.set(Script::User {
        ttl: Duration::from_secs(3600),
    });
    let resolved = auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    assert_eq!(app.calls(), 2, "briefly");
    let left = resolved.recheck_at - tokio::time::Instant::now();
    assert!(
        left <= Duration::from_secs(1),
        "{left:?}: at most cache_ttl"
    );
    auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    assert_eq!(app.calls(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.set(Script::Null);
    assert_eq!(
        auth.resolve(&cookie("alice"), CLIENT).await,
        Err(SessionError::NotSignedIn),
        "asked again after the TTL: the session was revoked"
    );
    assert_eq!(app.calls(), 3);
}

#[tokio::test]
async fn a_verdict_never_outlives_the_session() {
    let (_app, addr) = start(Script::User {
        ttl: Duration::from_secs(3),
    })
    .await;
    let auth = auth(config(addr));
    let resolved = auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    let left = resolved.recheck_at - tokio::time::Instant::now();
    assert!(
        left <= Duration::from_secs(3),
        "{left:?}: the session's expiry, not the 60 s TTL"
    );
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let (app, addr) = start(Script::User {
        ttl: Duration::from_secs(3600),
    })
    .await;
    let auth = auth(SessionConfig {
        cache_capacity: 3,
        ..config(addr)
    });
    for user in ["a", "b", "c", "d", "e"] {
        auth.resolve(&cookie(user), CLIENT).await.unwrap();
    }
    assert_eq!(auth.cached(), 3);
    assert_eq!(app.calls(), 5);
}

#[tokio::test]
async fn refusals_and_failures_are_told_apart() {
    let (app, addr) = start(Script::Status(StatusCode::UNAUTHORIZED)).await;
    let auth = auth(SessionConfig {
        negative_ttl: Duration::ZERO,
        breaker_threshold: 100,
        max_response_bytes: 1024,
        timeout: Duration::from_millis(200),
        ..config(addr)
    });
    let code = |r: Result<_, SessionError>| r.map(|_| "user").unwrap_or_else(|e| e.code());
    assert_eq!(
        code(auth.resolve(&cookie("a"), CLIENT).await),
        "session_invalid"
    );
    app.set(Script::Status(StatusCode::FORBIDDEN));
    assert_eq!(
        code(auth.resolve(&cookie("a"), CLIENT).await),
        "session_invalid"
    );
    for script in [
        Script::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Script::Status(StatusCode::BAD_GATEWAY),
        Script::Status(StatusCode::TOO_MANY_REQUESTS),
        Script::Status(StatusCode::NOT_FOUND),
        Script::Redirect,
        Script::Huge,
        Script::Slow(Duration::from_secs(3)),
    ] {
        app.set(script);
        let started = std::time::Instant::now();
        let err = auth.resolve(&cookie("a"), CLIENT).await.unwrap_err();
        assert_eq!(err.code(), "auth_unavailable", "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        assert!(
            !err.public_message().contains("127.0.0.1"),
            "no internal URL for clients"
        );
    }
    assert_eq!(
        app.redirected.load(Ordering::SeqCst),
        0,
        "redirects are not followed"
    );
}

#[tokio::test]
async fn an_unreachable_app_is_unavailable() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let auth = auth(config(addr));
    let err = auth.resolve(&cookie("a"), CLIENT).await.unwrap_err();
    assert_eq!(err.code(), "auth_unavailable");
    assert!(err.to_string().contains("unavailable"), "{err}");
}

#[derive(Default)]
struct Counts {
    calls: AtomicUsize,
    rejected: AtomicUsize,
    opened: AtomicUsize,
    hits: AtomicUsize,
}

impl SessionObserver for Counts {
    fn call(&self, _: &'static str, _: Duration) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn cache_hit(&self, _: &'static str) {
        self.hits.fetch_add(1, Ordering::SeqCst);
    }
    fn breaker_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }
    fn breaker_opened(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_dead_app_is_not_hammered() {
    let (app, addr) = start(Script::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let counts = Arc::new(Counts::default());
    let cfg = SessionConfig {
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_millis(500),
        ..config(addr)
    };
    let auth = SessionAuth::new(&cfg, Arc::clone(&counts) as Arc<dyn SessionObserver>)
        .unwrap()
        .unwrap();
    for i in 0..20 {
        let err = auth
            .resolve(&cookie(&format!("u{i}")), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "auth_unavailable");
    }
    assert_eq!(app.calls(), 3, "the breaker opened after 3 failures");
    assert!(auth.is_unavailable());
    assert_eq!(counts.rejected.load(Ordering::SeqCst), 17);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);

    // After the cooldown one probe goes out; the app is back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.set(Script::User {
        ttl: Duration::from_secs(3600),
    });
    auth.resolve(&cookie("alice"), CLIENT).await.unwrap();
    assert_eq!(app.calls(), 4);
    assert!(!auth.is_unavailable());
    auth.resolve(&cookie("bob"), CLIENT).await.unwrap();
    assert_eq!(app.calls(), 5);
    assert_eq!(counts.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_generic_preset_reads_user_expiry_and_rooms() {
    let router = axum::Router::new().route(
        "/who",
        get(|| async {
            axum::Json(
                json!({"userId": "alice", "expiresAt": 4_070_908_800u64, "rooms": ["channel:7"]}),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let auth = auth(SessionConfig {
        url: Some(format!("http://{addr}/who")),
        preset: Preset::Generic,
        ..SessionConfig::default()
    });
    let r = auth.resolve(&cookie("x"), CLIENT).await.unwrap();
    assert_eq!(r.user.user.as_str(), "alice");
    assert_eq!(r.user.expires_at, 4_070_908_800);
    assert_eq!(r.user.rooms[0].to_string(), "channel:7");
}
