//! The membership service on Redis (`bus.kind = "redis"`, no NATS): the
//! SQL event log, the Redis bus, the endpoint table over HTTP
//! (`/v1/rpc/{subject}`) for gateways, presence heartbeats from the Redis
//! topic. Against a real redis-server, through the whole `App`.

mod common;

use std::time::Duration;

use common::*;
use confab_bus::{RedisBus, RedisConfig};
use confab_contracts::membership::{
    Command, Execute, ExecuteRequest, MayJoin, MayJoinRequest, RoomsOf, RoomsOfRequest,
};
use confab_contracts::presence::{Heartbeat, LocalPresence, Query, QueryRequest};
use confab_contracts::{CallError, ServiceClient};
use confab_events::socket::PresenceStatus;
use confab_membership::app::App;
use confab_membership::config::{BusKind, MembershipConfig};
use confab_test_support::RedisServer;
use serde_json::json;

struct Setup {
    client: ServiceClient,
    base: String,
    redis: RedisServer,
    _stop: tokio_util::sync::CancellationToken,
    _db: tempfile::TempDir,
}

async fn setup() -> Setup {
    let redis = RedisServer::start();
    let db = tempfile::tempdir().unwrap();
    let mut config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}?mode=rwc", db.path().join("m.db").display()),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    config.bus.kind = Some(BusKind::Redis);
    config.bus.redis = RedisConfig::new(redis.url());
    let app = App::build(config).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let client = ServiceClient::http(&base, TOKEN, Duration::from_secs(10));
    Setup {
        client,
        base,
        redis,
        _stop: stop,
        _db: db,
    }
}

async fn execute(client: &ServiceClient, actor: Option<&str>, command: serde_json::Value) {
    let command: Command = serde_json::from_value(command).unwrap();
    let request = ExecuteRequest {
        actor: actor.map(u),
        command,
    };
    client.call::<Execute>(&request).await.unwrap();
}

#[tokio::test]
async fn gateways_call_the_endpoint_table_over_http_with_the_service_token() {
    let s = setup().await;
    execute(
        &s.client,
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    execute(
        &s.client,
        Some("alice"),
        json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
    )
    .await;
    let rooms = s
        .client
        .call::<RoomsOf>(&RoomsOfRequest { user: u("alice") })
        .await
        .unwrap()
        .rooms;
    assert!(rooms.contains(&room("channel:general")), "{rooms:?}");
    let no = s
        .client
        .call::<MayJoin>(&MayJoinRequest {
            user: u("mallory"),
            room: room("channel:general"),
        })
        .await
        .unwrap();
    assert!(!no.allowed);

    // A refusal of the service comes back typed, as over NATS.
    let refused = s
        .client
        .call::<Execute>(&ExecuteRequest {
            actor: Some(u("alice")),
            command: serde_json::from_value(
                json!({ "type": "join_channel", "channel": "missing" }),
            )
            .unwrap(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, CallError::Refused(e) if e.code == "not_found"),
        "{refused:?}"
    );

    // Without the service token: refused before any endpoint runs.
    let stranger = ServiceClient::http(
        &s.base,
        "not-the-token-0123456789abcdef012345",
        Duration::from_secs(5),
    );
    let err = stranger
        .call::<RoomsOf>(&RoomsOfRequest { user: u("alice") })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused(e) if e.code == "unauthorized"),
        "{err:?}"
    );
    // An unknown subject is 404 with the error body.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/rpc/confab.nothing.v1.here", s.base))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn heartbeats_on_the_redis_topic_feed_the_tracker() {
    let s = setup().await;
    execute(
        &s.client,
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    execute(
        &s.client,
        Some("alice"),
        json!({ "type": "add_workspace_member", "workspace": "w1", "user": "bob", "role": "member" }),
    )
    .await;
    // A gateway's side: the same bus, the heartbeat topic.
    let gateway = RedisBus::connect(RedisConfig::new(s.redis.url()))
        .await
        .unwrap();
    let hb = Heartbeat::changes(
        "gw-test",
        1,
        vec![LocalPresence {
            user: u("bob"),
            status: PresenceStatus::Online,
        }],
    );
    let query = QueryRequest {
        asker: u("alice"),
        users: vec![u("bob")],
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        gateway
            .publish_topic(
                confab_membership::presence::HEARTBEAT_TOPIC,
                &serde_json::to_vec(&hb).unwrap(),
            )
            .await
            .unwrap();
        let answer = s.client.call::<Query>(&query).await.unwrap();
        if answer.presence.get("bob") == Some(&PresenceStatus::Online) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_rpc_route_is_not_served_outside_redis_mode() {
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "sqlite::memory:".into(),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::build(config).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let err = ServiceClient::http(&base, TOKEN, Duration::from_secs(5))
        .call::<RoomsOf>(&RoomsOfRequest { user: u("alice") })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused(e) if e.code == "not_found"),
        "{err:?}"
    );
    stop.cancel();
}
