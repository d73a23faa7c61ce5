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
    assert_eq!(&*msg.event, "message:new");
    let again = emit_m1(m).await;
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
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

/// Emits `message:new` `{"id":"m1"}` to `channel:pub` with the id `m1`.
async fn emit_m1(m: &ServiceClient) -> EmitResponse {
    let request = EmitRequest {
        room: room("channel:pub"),
        event: "message:new".into(),
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
