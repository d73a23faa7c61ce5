//! The NATS request/reply API against a real nats-server, through the
//! whole `App` in NATS mode: service-token auth, `rooms_of`, `may_join`,
//! the other queries, `execute`, `emit`, and the error shape.

mod common;

use std::time::Duration;

use common::*;
use confab_bus::async_nats;
use confab_bus::{Bus, NatsConfig};
use confab_contracts::membership::{
    Command, Emit, EmitRequest, EmitResponse, Execute, ExecuteRequest, ExecuteResponse, IsMember,
    IsMemberRequest, JoinDecision, MayJoin, MayJoinRequest, MembersOf, MembersOfRequest, RoomsOf,
    RoomsOfRequest, subjects,
};
use confab_contracts::{AUTHORIZATION_HEADER, CallError, ServiceClient};
use confab_events::UserId;
use confab_events::membership::Role;
use confab_membership::app::App;
use confab_membership::config::MembershipConfig;
use confab_test_support::NatsServer;
use serde_json::{Value, json};

struct Setup {
    client: ServiceClient,
    nats: async_nats::Client,
    _stop: tokio_util::sync::CancellationToken,
    _server: NatsServer,
}

async fn setup() -> Setup {
    let server = NatsServer::start();
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "sqlite::memory:".into(),
        nats: Some(NatsConfig::new(server.url())),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::build(config).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = ServiceClient::new(nats.clone(), TOKEN, Duration::from_secs(10));
    // The service registers its endpoints while starting: wait for it.
    for _ in 0..100 {
        if nats
            .request("$SRV.PING.confab-membership", "".into())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Setup {
        client,
        nats,
        _stop: stop,
        _server: server,
    }
}

async fn raw(
    nats: &async_nats::Client,
    subject: &str,
    auth: Option<&str>,
    body: &str,
) -> (Value, Option<String>) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(a) = auth {
        headers.insert(AUTHORIZATION_HEADER, a);
    }
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let reply = nats
        .request_with_headers(subject.to_owned(), headers, body.to_owned().into())
        .await
        .unwrap();
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.to_string());
    (serde_json::from_slice(&reply.payload).unwrap(), code)
}

#[tokio::test]
async fn only_the_service_token_is_accepted() {
    let s = setup().await;
    let body = r#"{"user":"bob"}"#;
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Basic abc"),
    ] {
        let (reply, status) = raw(&s.nats, subjects::ROOMS_OF, auth, body).await;
        assert_eq!(reply["error"]["code"], "unauthorized", "{auth:?}: {reply}");
        assert_eq!(status.as_deref(), Some("401"));
    }
    let bearer = format!("Bearer {TOKEN}");
    let (reply, status) = raw(&s.nats, subjects::ROOMS_OF, Some(&bearer), body).await;
    assert_eq!(reply, json!({"user": "bob", "rooms": []}));
    assert_eq!(status, None);
    // A client with the wrong token hears the refusal.
    let wrong = ServiceClient::new(s.nats.clone(), "nope", Duration::from_secs(5));
    let err = wrong
        .call::<RoomsOf>(&RoomsOfRequest { user: u("bob") })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Refused(ref d) if d.code == "unauthorized"),
        "{err:?}"
    );
}

#[tokio::test]
async fn commands_and_queries() {
    let s = setup().await;
    let m = &s.client;
    execute(
        m,
        None,
        Command::CreateWorkspace {
            id: w("w"),
            name: "W".into(),
            owner: u("owner"),
        },
    )
    .await
    .unwrap();
    execute(
        m,
        None,
        Command::AddWorkspaceMember {
            workspace: w("w"),
            user: u("bob"),
            role: Role::Member,
        },
    )
    .await
    .unwrap();
    let out = execute(
        m,
        Some(u("bob")),
        Command::CreateChannel {
            channel: c("pub"),
            workspace: w("w"),
            name: "general".into(),
            visibility: confab_events::membership::Visibility::Public,
        },
    )
    .await
    .unwrap();
    assert!(out.projected);
    assert_eq!(out.event.actor, Some(u("bob")));

    // What the gateway asks.
    assert_eq!(
        m.call::<RoomsOf>(&RoomsOfRequest { user: u("bob") })
            .await
            .unwrap()
            .rooms,
        vec![room("channel:pub"), room("workspace:w")]
    );
    let yes = may_join(m, "bob", "channel:pub").await;
    assert!(yes.allowed && yes.reason.is_none());
    let own = may_join(m, "bob", "user:bob").await;
    assert!(own.allowed);
    let no = may_join(m, "owner", "channel:pub").await;
    assert!(!no.allowed);
    assert!(no.reason.unwrap().contains("not a member"));
    let none = may_join(m, "bob", "channel:nope").await;
    assert_eq!(none.reason.as_deref(), Some("no such room"));
    assert_eq!(
        m.call::<MembersOf>(&MembersOfRequest {
            room: room("workspace:w")
        })
        .await
        .unwrap()
        .members,
        vec![u("bob"), u("owner")]
    );
    let request = IsMemberRequest {
        user: u("bob"),
        room: room("channel:pub"),
    };
    assert!(m.call::<IsMember>(&request).await.unwrap().member);

    // Refusals keep their codes.
    let err = execute(
        m,
        Some(u("stranger")),
        Command::JoinChannel { channel: c("pub") },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CallError::Refused(ref d) if d.code == "not_a_member"),
        "{err:?}"
    );
    let err = execute(m, None, Command::JoinChannel { channel: c("pub") })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Refused(ref d) if d.code == "invalid" && d.field.as_deref() == Some("actor")),
        "{err:?}"
    );
    let bearer = format!("Bearer {TOKEN}");
    let (reply, status) = raw(
        &s.nats,
        subjects::MAY_JOIN,
        Some(&bearer),
        r#"{"user":"a.b","room":"channel:1"}"#,
    )
    .await;
    assert_eq!(reply["error"]["code"], "invalid", "{reply}");
    assert_eq!(status.as_deref(), Some("400"));
    let (reply, _) = raw(&s.nats, subjects::EXECUTE, Some(&bearer), "not json").await;
    assert_eq!(reply["error"]["code"], "invalid", "{reply}");

    // Emit through the NATS bus.
    let bus = nats_bus(&s.nats_url()).await;
    let mut sub = bus.subscribe(&room("channel:pub")).await.unwrap();
    let first = emit_m1(m).await;
    assert!(first.seq.is_some() && !first.duplicate);
    let msg = next(&mut sub).await;
    assert_eq!(&*msg.event, "app:poll");
    let again = emit_m1(m).await;
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);

    // A forged `message:new` (or any event Confab's servers emit) is
    // refused, naming the field and why.
    for event in [
        "message:new",
        "message:updated",
        "message:deleted",
        "room:joined",
    ] {
        let forged = EmitRequest {
            room: room("channel:pub"),
            event: event.into(),
            data: json!({"id": "forged", "author": "owner", "body": "pay me"}),
            id: None,
        };
        let err = m.call::<Emit>(&forged).await.unwrap_err();
        assert!(
            matches!(&err, CallError::Refused(d) if d.code == "invalid"
                && d.field.as_deref() == Some("event")
                && d.message.contains(&format!("{event} is reserved"))),
            "{event}: {err}"
        );
    }
}

/// Runs `command` for `actor` through `execute`.
async fn execute(
    m: &ServiceClient,
    actor: Option<UserId>,
    command: Command,
) -> Result<ExecuteResponse, CallError> {
    m.call::<Execute>(&ExecuteRequest { actor, command }).await
}

async fn may_join(m: &ServiceClient, user: &str, to: &str) -> JoinDecision {
    let request = MayJoinRequest {
        user: u(user),
        room: room(to),
    };
    m.call::<MayJoin>(&request).await.unwrap()
}

/// Emits `app:poll` `{"id":"m1"}` to `channel:pub` with the id `m1`.
async fn emit_m1(m: &ServiceClient) -> EmitResponse {
    let request = EmitRequest {
        room: room("channel:pub"),
        event: "app:poll".into(),
        data: json!({"id": "m1"}),
        id: Some("m1".into()),
    };
    m.call::<Emit>(&request).await.unwrap()
}

impl Setup {
    fn nats_url(&self) -> String {
        self._server.url()
    }
}

const GATEWAY_PASSWORD: &str = "gw-pass-5f2a9c1e7b3d";
const MEMBERSHIP_PASSWORD: &str = "membership-pass-8e4b2a6c0d1f";
const APP_PASSWORD: &str = "app-pass-3c7e1a9b5d2f";

/// A nats-server running with the users and permissions of
/// `deploy/config/nats-authorization.conf` (the passwords put in).
fn server_with_the_deployment_permissions(dir: &std::path::Path) -> NatsServer {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/nats-authorization.conf"
    ))
    .unwrap();
    let conf = template
        .replace(
            "$CONFAB_NATS_GATEWAY_PASSWORD",
            &format!("\"{GATEWAY_PASSWORD}\""),
        )
        .replace(
            "$CONFAB_NATS_MEMBERSHIP_PASSWORD",
            &format!("\"{MEMBERSHIP_PASSWORD}\""),
        )
        .replace("$CONFAB_NATS_APP_PASSWORD", &format!("\"{APP_PASSWORD}\""));
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    NatsServer::start_with_args(&[std::ffi::OsString::from("-c"), path.into_os_string()])
}

/// A NATS connection as `user`, with the server's asynchronous errors
/// (permission violations) collected.
async fn connect_as(
    server: &NatsServer,
    user: &str,
    password: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, rx)
}

/// Waits for the server's error about `what` (e.g. `Publish to
/// "in.rooms.channel.pub"`).
async fn violation(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) {
    let wanted = format!("permissions violation for {what}").to_lowercase();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains(&wanted) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no server error about {what}");
}

/// With the deployment's NATS permissions, the membership service runs
/// as `confab-membership`, and an app backend (`confab-app`, holding the
/// service token) can use the membership API, emit included, but cannot
/// publish into the subjects whose events the gateways and the history
/// projector trust (room log, live rooms, membership log, JetStream API,
/// the message and presence APIs) nor read rooms; a gateway cannot write
/// the membership log. Nothing forged reaches the room log.
#[tokio::test]
async fn nats_permissions_keep_app_backends_out_of_the_owners_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_the_deployment_permissions(dir.path());
    let as_membership = NatsConfig {
        user: Some("confab-membership".into()),
        password: Some(MEMBERSHIP_PASSWORD.into()),
        ..NatsConfig::new(server.url())
    };
    // Nobody gets in without credentials.
    assert!(async_nats::connect(server.url()).await.is_err());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "sqlite::memory:".into(),
        nats: Some(as_membership.clone()),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::build(config).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));

    let (backend, mut errors) = connect_as(&server, "confab-app", APP_PASSWORD).await;
    let m = ServiceClient::new(backend.clone(), TOKEN, Duration::from_secs(10));
    let mut answered = false;
    for _ in 0..100 {
        if m.call::<RoomsOf>(&RoomsOfRequest { user: u("bob") })
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the membership API answers the app backend");
    let emitted = emit_m1(&m).await;
    assert!(emitted.seq.is_some());
    let forged = EmitRequest {
        room: room("channel:pub"),
        event: "message:new".into(),
        data: json!({"id": "forged"}),
        id: None,
    };
    let err = m.call::<Emit>(&forged).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Refused(d) if d.code == "invalid"),
        "{err}"
    );

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Confab-Event", "message:new");
    let body = r#"[{"id":"forged","author":"owner","body":"pay me"}]"#;
    for subject in [
        "in.rooms.channel.pub",
        "rooms.channel.pub",
        "membership.events.workspace.w",
        "$JS.API.STREAM.DELETE.ROOMS",
        "confab.messages.v1.delete",
        confab_contracts::presence::HEARTBEAT_SUBJECT,
    ] {
        backend
            .publish_with_headers(subject, headers.clone(), body.into())
            .await
            .unwrap();
        backend.flush().await.unwrap();
        violation(&mut errors, &format!("publish to \"{subject}\"")).await;
    }
    let _sub = backend.subscribe("rooms.>").await.unwrap();
    violation(&mut errors, "subscription to \"rooms.>\"").await;

    let (gateway, mut gateway_errors) =
        connect_as(&server, "confab-gateway", GATEWAY_PASSWORD).await;
    gateway
        .publish_with_headers("membership.events.workspace.w", headers, body.into())
        .await
        .unwrap();
    gateway.flush().await.unwrap();
    violation(
        &mut gateway_errors,
        "publish to \"membership.events.workspace.w\"",
    )
    .await;

    // The room log holds the app's own event only.
    let bus = confab_bus::NatsBus::connect(as_membership).await.unwrap();
    let stored = bus.replay(&[room("channel:pub")], 1, 100).await.unwrap();
    let events: Vec<&str> = stored.iter().map(|i| &*i.msg.event).collect();
    assert_eq!(events, ["app:poll"]);
    stop.cancel();
}

/// With the deployment's NATS permissions, a gateway (`confab-gateway`)
/// may publish presence heartbeats and the membership service
/// (`confab-membership`) may read them: the tracker hears the gateway.
/// Both were refused when heartbeats moved to `confab.presence.v2`, so
/// every user of a `just up` cluster stayed offline.
#[tokio::test]
async fn nats_permissions_let_gateway_presence_heartbeats_reach_the_tracker() {
    use confab_contracts::presence::{Heartbeat, Heartbeats, LocalPresence};
    use confab_events::socket::PresenceStatus;

    let dir = tempfile::tempdir().unwrap();
    let server = server_with_the_deployment_permissions(dir.path());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "sqlite::memory:".into(),
        nats: Some(NatsConfig {
            user: Some("confab-membership".into()),
            password: Some(MEMBERSHIP_PASSWORD.into()),
            ..NatsConfig::new(server.url())
        }),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::build(config).await.unwrap();
    let metrics_url = format!("http://{}/metrics", app.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));

    let (gateway, mut errors) = connect_as(&server, "confab-gateway", GATEWAY_PASSWORD).await;
    let gw = ServiceClient::new(gateway, TOKEN, Duration::from_secs(10));
    let http = reqwest::Client::new();
    let online = "confab_membership_presence_users{status=\"online\"} 1";
    let mut heard = false;
    for seq in 1..=100 {
        let report = LocalPresence {
            user: u("alice"),
            status: PresenceStatus::Online,
        };
        gw.publish::<Heartbeats>(&Heartbeat::changes("gw-perm", seq, vec![report]))
            .await
            .unwrap();
        let text = http
            .get(&metrics_url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == online) {
            heard = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused: Vec<String> = std::iter::from_fn(|| errors.try_recv().ok())
        .filter(|e| e.to_lowercase().contains("permissions violation"))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(heard, "the tracker never heard the gateway's heartbeat");
    stop.cancel();
}
