//! The HTTP API over a real listener: authentication, the happy path,
//! and the mapping of every error to its status and JSON shape.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confab_bus::{Bus, InProcessBus};
use confab_membership::app::App;
use confab_membership::config::MembershipConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    bus: Arc<InProcessBus>,
    _stop: tokio_util::sync::CancellationToken,
}

fn jwt(user: &str, admin: bool) -> String {
    let mut extra = serde_json::Map::new();
    if admin {
        extra.insert("admin".into(), Value::Bool(true));
    }
    confab_auth::mint_hs256_with_claims(SECRET, user, Duration::from_secs(300), None, None, &extra)
        .unwrap()
}

async fn api() -> Api {
    api_with(confab_membership::service::ServiceSettings::default()).await
}

async fn api_with(settings: confab_membership::service::ServiceSettings) -> Api {
    let bus = Arc::new(InProcessBus::default());
    let db = confab_membership::sql::connect("sqlite::memory:")
        .await
        .unwrap();
    let core = confab_membership::app::MembershipCore::embedded(
        db,
        bus.clone(),
        authenticator(),
        settings,
    );
    let mut auth = confab_auth::AuthConfig::dev();
    auth.hs256_secret = Some(SECRET.into());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        auth: Some(auth),
        max_body_bytes: 4096,
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, core).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    Api {
        base,
        http: reqwest::Client::new(),
        bus,
        _stop: stop,
    }
}

impl Api {
    /// Sends a request with an optional bearer token and JSON body;
    /// answers the status and the JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Workspace `w` (owner `owner`, admin `adm`, members `bob`, `carol`),
/// public channel `pub` by `adm`, through the API with the service token.
async fn setup(api: &Api) {
    let (s, b) = api
        .post(
            "/v1/workspaces",
            TOKEN,
            json!({"id": "w", "name": "W", "owner": "owner"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["event"]["type"], "workspace.created");
    assert!(b["seq"].as_u64().unwrap() >= 1);
    assert_eq!(b["projected"], true);
    for (user, role) in [("adm", "admin"), ("bob", "member"), ("carol", "member")] {
        let (s, b) = api
            .post(
                "/v1/workspaces/w/members",
                TOKEN,
                json!({"user": user, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = api
        .post(
            "/v1/channels",
            TOKEN,
            json!({"id": "pub", "workspace": "w", "name": "general", "actor": "adm"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["event"]["data"]["created_by"], "adm");
    assert_eq!(b["event"]["actor"], "adm");
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let api = api().await;
    for (method, path) in [
        (Method::POST, "/v1/workspaces"),
        (Method::POST, "/v1/channels/pub/join"),
        (Method::GET, "/v1/users/bob/rooms"),
        (Method::GET, "/v1/rooms/channel:pub/members"),
        (Method::POST, "/v1/emit"),
    ] {
        let (s, b) = api.call(method.clone(), path, None, Some(json!({}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {b}");
        assert_eq!(code(&b), "unauthorized");
        assert!(b["error"]["message"].as_str().unwrap().contains("Bearer"));
        let (s, b) = api
            .call(method.clone(), path, Some("not-the-token"), Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {b}");
    }
    // A JWT signed with another secret.
    let forged = confab_auth::mint_hs256(
        "another-secret-another-secret-0000",
        "bob",
        Duration::from_secs(60),
        None,
        None,
    )
    .unwrap();
    let (s, b) = api.get("/v1/users/bob/rooms", &forged).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn the_happy_path() {
    let api = api().await;
    setup(&api).await;
    let bob = jwt("bob", false);
    let carol = jwt("carol", false);

    // Bob joins with his own token; his rooms show it at once.
    let (s, b) = api.post("/v1/channels/pub/join", &bob, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["event"]["type"], "channel.member_joined");
    assert_eq!(b["event"]["data"]["via"]["kind"], "joined");
    let (s, b) = api.get("/v1/users/bob/rooms", &bob).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"user": "bob", "rooms": ["channel:pub", "workspace:w"]})
    );

    // Members and membership checks.
    let (s, b) = api.get("/v1/rooms/channel:pub/members", &bob).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["adm", "bob"]));
    let (s, b) = api.get("/v1/rooms/channel:pub/members/carol", TOKEN).await;
    assert_eq!((s, b["member"].clone()), (StatusCode::OK, json!(false)));
    let (s, b) = api.get("/v1/rooms/channel:pub/members/carol", &carol).await;
    assert_eq!((s, b["member"].clone()), (StatusCode::OK, json!(false)));

    // Invite, DM, group DM participant, kick, archive, removal.
    let (s, b) = api
        .post("/v1/channels/pub/invite", &bob, json!({"user": "carol"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api
        .post(
            "/v1/dms",
            &carol,
            json!({"id": "g1", "workspace": "w", "participants": ["bob", "adm"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        b["event"]["data"]["participants"],
        json!(["adm", "bob", "carol"])
    );
    let (s, b) = api
        .post("/v1/dms/g1/participants", &carol, json!({"user": "owner"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api
        .post(
            "/v1/channels/pub/kick",
            TOKEN,
            json!({"user": "carol", "actor": "adm"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["event"]["data"]["because"],
        json!({"kind": "kicked", "by": "adm"})
    );
    let (s, b) = api
        .post(
            "/v1/commands",
            TOKEN,
            json!({"actor": "adm", "command": {"type": "archive_channel", "channel": "pub"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["event"]["type"], "channel.archived");
    let (s, b) = api
        .call(
            Method::DELETE,
            "/v1/workspaces/w/members/bob?actor=adm",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Out of the workspace means out of its DMs too (issue #12).
    let (_, b) = api.get("/v1/users/bob/rooms", TOKEN).await;
    assert_eq!(b["rooms"], json!([]));

    // Emit reaches the bus.
    let mut sub = api.bus.subscribe(&room("channel:pub")).await.unwrap();
    let (s, b) = api
        .post(
            "/v1/emit",
            TOKEN,
            json!({"room": "channel:pub", "event": "app:poll", "data": {"id": "m1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The in-process bus is a log too: the emit is stored with a sequence.
    assert!(b["seq"].as_u64().is_some_and(|s| s > 0), "{b}");
    assert_eq!(b["duplicate"], json!(false), "{b}");
    let m = next(&mut sub).await;
    assert_eq!((&*m.event, &*m.args_json), ("app:poll", r#"[{"id":"m1"}]"#));
}

/// The emit API cannot forge chat history, presence, or room moves: every
/// event Confab's servers emit is refused, naming the field and what to
/// do, and nothing reaches the room's log.
#[tokio::test]
async fn the_emit_api_refuses_forged_server_events() {
    let api = api().await;
    setup(&api).await;
    for event in confab_events::socket::names::SERVER_EVENTS {
        let (s, b) = api
            .post(
                "/v1/emit",
                TOKEN,
                json!({"room": "channel:pub", "event": event,
                       "data": {"id": "forged", "author": "owner", "body": "pay me"}}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{event}: {b}");
        assert_eq!(code(&b), "invalid", "{event}: {b}");
        assert_eq!(b["error"]["field"], "event", "{event}: {b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{event} is reserved")),
            "{event}: {message}"
        );
    }
    let stored = api
        .bus
        .replay(&[room("channel:pub")], 1, 1000)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|i| !i.msg.args_json.contains("forged")),
        "nothing forged stored: {:?}",
        stored.iter().map(|i| &i.msg.event).collect::<Vec<_>>()
    );
}

/// Method, path, token, body, expected status, code and field.
type Case = (
    Method,
    &'static str,
    String,
    Option<Value>,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn errors_map_to_statuses_and_name_the_field() {
    let api = api().await;
    setup(&api).await;
    let bob = jwt("bob", false);
    let root = jwt("root", true);
    let cases: Vec<Case> = vec![
        // 400: bad ids, missing / unknown / mistyped fields, bad JSON.
        (
            Method::POST,
            "/v1/channels/a.b/join",
            bob.clone(),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("channel"),
        ),
        (
            Method::POST,
            "/v1/channels/pub/invite",
            bob.clone(),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("user"),
        ),
        (
            Method::POST,
            "/v1/channels/pub/invite",
            bob.clone(),
            Some(json!({"user": "x>"})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("user"),
        ),
        (
            Method::POST,
            "/v1/channels/pub/join",
            bob.clone(),
            Some(json!({"colour": 1})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("colour"),
        ),
        (
            Method::POST,
            "/v1/channels",
            bob.clone(),
            Some(json!({"id": "c", "workspace": "w", "name": "n", "visibility": "secret"})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("visibility"),
        ),
        (
            Method::POST,
            "/v1/channels",
            bob.clone(),
            Some(json!([1])),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("body"),
        ),
        (
            Method::POST,
            "/v1/channels",
            bob.clone(),
            Some(json!({"id": "c", "workspace": "w", "name": ""})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("name"),
        ),
        (
            Method::GET,
            "/v1/rooms/room:1/members",
            TOKEN.into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("room"),
        ),
        (
            Method::POST,
            "/v1/commands",
            TOKEN.into(),
            Some(json!({"command": {"type": "join_channel", "channel": "pub"}})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("actor"),
        ),
        (
            Method::POST,
            "/v1/commands",
            TOKEN.into(),
            Some(json!({"command": {"type": "fly"}})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("command"),
        ),
        (
            Method::POST,
            "/v1/emit",
            TOKEN.into(),
            Some(json!({"room": "channel:pub", "event": "room:joined"})),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("event"),
        ),
        // 403: not allowed.
        (
            Method::POST,
            "/v1/channels/pub/kick",
            bob.clone(),
            Some(json!({"user": "adm"})),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::POST,
            "/v1/channels/pub/join",
            bob.clone(),
            Some(json!({"actor": "carol"})),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::GET,
            "/v1/users/carol/rooms",
            bob.clone(),
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::GET,
            "/v1/rooms/channel:pub/members",
            bob.clone(),
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::POST,
            "/v1/emit",
            bob.clone(),
            Some(json!({"room": "channel:pub", "event": "x"})),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::POST,
            "/v1/workspaces",
            bob.clone(),
            Some(json!({"id": "w2", "name": "W2", "owner": "carol"})),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        // 404: no such thing.
        (
            Method::POST,
            "/v1/channels/nope/join",
            bob.clone(),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            Method::POST,
            "/v1/channels/pub/dance",
            bob.clone(),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            Method::GET,
            "/v2/anything",
            bob.clone(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        // 409: the state says no.
        (
            Method::POST,
            "/v1/workspaces",
            TOKEN.into(),
            Some(json!({"id": "w", "name": "W", "owner": "x"})),
            StatusCode::CONFLICT,
            "already_exists",
            None,
        ),
        (
            Method::POST,
            "/v1/channels/pub/leave",
            bob.clone(),
            Some(json!({})),
            StatusCode::CONFLICT,
            "not_a_member",
            None,
        ),
        (
            Method::POST,
            "/v1/channels/pub/join",
            jwt("stranger", false),
            Some(json!({})),
            StatusCode::CONFLICT,
            "not_a_member",
            None,
        ),
        // Only the service bootstraps (an `admin` claim counts for
        // nothing); users create their own.
        (
            Method::POST,
            "/v1/workspaces",
            root.clone(),
            Some(json!({"id": "w3", "name": "W3", "owner": "carol"})),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            Method::POST,
            "/v1/workspaces",
            bob.clone(),
            Some(json!({"id": "w4", "name": "W4"})),
            StatusCode::CREATED,
            "",
            None,
        ),
    ];
    for (method, path, token, body, status, want_code, field) in cases {
        let (s, b) = api.call(method.clone(), path, Some(&token), body).await;
        assert_eq!(s, status, "{method} {path}: {b}");
        if !want_code.is_empty() {
            assert_eq!(code(&b), want_code, "{method} {path}: {b}");
            assert!(
                b["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert_eq!(b["error"]["field"].as_str(), field, "{method} {path}: {b}");
        }
    }

    // 413: bodies are bounded.
    let big = json!({"room": "channel:pub", "event": "x", "data": "y".repeat(10_000)});
    let (s, b) = api.post("/v1/emit", TOKEN, big).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // Not JSON at all.
    let res = api
        .http
        .post(format!("{}/v1/channels/pub/join", api.base))
        .bearer_auth(&bob)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["field"], "body");
}

/// A token with `"admin": true` of a user who administers workspace `w`
/// has no rights in workspace `wb`: the claim is not a superuser, a
/// user's rights are their role in each workspace.
#[tokio::test]
async fn an_admin_token_of_one_workspace_cannot_act_on_another() {
    let api = api().await;
    setup(&api).await;
    let (s, b) = api
        .post(
            "/v1/workspaces",
            TOKEN,
            json!({"id": "wb", "name": "B", "owner": "bowner"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .post("/v1/workspaces/wb/members", TOKEN, json!({"user": "bmem"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api
        .post(
            "/v1/channels",
            TOKEN,
            json!({"id": "bsecret", "workspace": "wb", "name": "s", "visibility": "private", "actor": "bmem"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let adm = jwt("adm", true);
    let attempts = [
        (
            Method::POST,
            "/v1/workspaces/wb/members",
            Some(json!({"user": "adm", "role": "admin"})),
        ),
        (Method::DELETE, "/v1/workspaces/wb/members/bmem", None),
        (
            Method::POST,
            "/v1/workspaces",
            Some(json!({"id": "w9", "name": "Nine", "owner": "bowner"})),
        ),
        (Method::GET, "/v1/users/bmem/rooms", None),
        (Method::GET, "/v1/rooms/channel:bsecret/members", None),
        (Method::GET, "/v1/rooms/channel:bsecret/members/bmem", None),
    ];
    for (method, path, body) in attempts {
        let (s, b) = api.call(method.clone(), path, Some(&adm), body).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {b}"
        );
    }
    let (s, b) = api.get("/v1/rooms/workspace:wb/members", TOKEN).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["bmem", "bowner"]), "{b}");

    // In the workspace the authority says they administer, they may.
    let (s, b) = api
        .post("/v1/workspaces/w/members", &adm, json!({"user": "dave"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// A client that sends its request headers a line at a time is cut off
/// after `header_read_timeout` (the listener is `confab_http`'s).
#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        header_read_timeout: Duration::from_millis(300),
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, embedded_core(bus).await)
        .await
        .unwrap();
    let addr = app.http_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let start = std::time::Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(6) {
        if tcp.write_all(b"X-Slow: a\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        if tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the membership API kept a connection dribbling headers for 6 s"
    );
    stop.cancel();
}

#[tokio::test]
async fn creations_beyond_a_users_quota_are_refused() {
    use confab_membership::service::{Quotas, ServiceSettings};
    let settings = ServiceSettings {
        quotas: Quotas {
            workspaces_per_user: 2,
            channels_per_user: 2,
        },
        ..ServiceSettings::default()
    };
    let api = api_with(settings).await;
    let workspace = |id: &str, owner: &str| json!({"id": id, "name": id, "owner": owner});
    for id in ["w1", "w2"] {
        let (s, b) = api
            .post("/v1/workspaces", TOKEN, workspace(id, "alice"))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = api
        .post("/v1/workspaces", TOKEN, workspace("w3", "alice"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(code(&b), "quota_exceeded", "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("quotas.workspaces_per_user"), "{message}");
    // The quota is per user.
    let (s, b) = api
        .post("/v1/workspaces", TOKEN, workspace("w3", "bob"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let channel = |id: &str, ws: &str| json!({"id": id, "workspace": ws, "name": id});
    let alice = jwt("alice", false);
    for (id, ws) in [("c1", "w1"), ("c2", "w2")] {
        let (s, b) = api.post("/v1/channels", &alice, channel(id, ws)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    // Archived channels still count.
    let (s, b) = api.post("/v1/channels/c1/archive", &alice, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.post("/v1/channels", &alice, channel("c3", "w1")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(code(&b), "quota_exceeded", "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quotas.channels_per_user"),
        "{b}"
    );
    let (s, b) = api
        .post("/v1/channels", &jwt("bob", false), channel("c3", "w3"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Nothing of alice's refused creations exists.
    let (s, b) = api.get("/v1/users/alice/rooms", TOKEN).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rooms = b.to_string();
    assert!(
        rooms.contains("workspace:w1") && rooms.contains("workspace:w2"),
        "{b}"
    );
    assert!(
        !rooms.contains("workspace:w3") && !rooms.contains("channel:c3"),
        "{b}"
    );
}
