//! Two gateways on one Redis (`bus.kind = "redis"`, no NATS): room events
//! published on one reach the sockets of the other, in order. Room events
//! only: recovery and NATS membership are not on Redis yet.

use std::sync::Arc;
use std::time::Duration;

use confab_events::{RoomId, UserId};
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::membership::StaticMembership;
use confab_gateway::{App, AppHandle, Deps};
use confab_test_support::{NodeClient, RedisServer};
use serde_json::json;

use crate::support::*;

const T: Duration = Duration::from_secs(15);

async fn gateway(redis: &RedisServer, membership: &Arc<StaticMembership>) -> (String, AppHandle) {
    let mut cfg = test_config();
    cfg.bus.kind = BusKind::Redis;
    cfg.bus.redis = confab_bus::RedisConfig::new(redis.url());
    cfg.membership.kind = MembershipKind::Static;
    cfg.recovery.enabled = false;
    cfg.validate().unwrap();
    let mut deps = Deps::connect(&cfg)
        .await
        .expect("gateway connects to Redis");
    deps.membership = Arc::clone(membership) as _;
    let app = App::build(cfg, deps).await.unwrap();
    let (addr, handle) = (app.local_addr(), app.handle());
    tokio::spawn(app.run(std::future::pending()));
    (format!("http://{addr}"), handle)
}

#[tokio::test]
async fn room_events_cross_gateways_over_redis_in_order() {
    let redis = RedisServer::start();
    let membership = Arc::new(StaticMembership::new());
    let general = RoomId::parse("channel:general").unwrap();
    membership.grant(&UserId::parse("bob").unwrap(), &general);
    let (_url_a, a) = gateway(&redis, &membership).await;
    let (url_b, b) = gateway(&redis, &membership).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob", "bob", &url_b).await;
    eventually("bob joined on B", T, || b.members(&general) == 1).await;

    for i in 0..10 {
        a.emit(&general, "message:new", &json!({ "n": i }))
            .await
            .unwrap();
    }
    // In order (no offsets: they come with recovery, not on Redis yet).
    for i in 0..10 {
        let ev = node.expect("bob", is_event("message:new"), T).await;
        assert_eq!(ev["args"], json!([{ "n": i }]));
    }
}
