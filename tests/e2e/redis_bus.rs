//! Two gateways on one Redis (`bus.kind = "redis"`, no NATS): room events
//! published on one reach the sockets of the other, in order; with the
//! whole cluster on Redis (membership over HTTP, sessions in Redis), a
//! Redis restart and dropped Redis connections in the middle of traffic
//! lose no acked message and deliver none twice. (Messaging and recovery
//! on Redis: the `on_redis_*` tests of `messages.rs` and `recovery.rs`.)

use std::sync::Arc;
use std::time::Duration;

use confab_events::{RoomId, UserId};
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::membership::StaticMembership;
use confab_gateway::{App, AppHandle, Deps};
use confab_test_support::{NodeClient, RedisServer};
use serde_json::json;

use crate::cluster::{Backend, Cluster};
use crate::recovery::receive_in_order;

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

/// Sends `m{n}` from `socket` to `#general` until acked (the same
/// `clientMsgId` each time, so a retry of a send that was stored but not
/// acked is answered from the stored original); returns its sequence.
async fn send_until_acked(node: &NodeClient, socket: &str, n: usize) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ack = node
            .emit_with_ack(
                socket,
                "message:send",
                vec![json!({ "room": "channel:general", "body": format!("m{n}"), "clientMsgId": format!("c{n}") })],
                T,
            )
            .await
            .unwrap();
        if let Some(seq) = ack[0]["seq"].as_u64() {
            return seq;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "m{n} never acked: {ack:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis cluster (two gateways, membership over HTTP) with alice on
/// gateway 0 and bob on gateway 1, both in `#general`.
async fn alice_and_bob_on_redis() -> (Cluster, NodeClient) {
    let c = Cluster::start_on(Backend::Redis, 2).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    let general = RoomId::parse("channel:general").unwrap();
    eventually("bob in general", T, || {
        c.gateways[1].1.members(&general) == 1
    })
    .await;
    (c, node)
}

/// Every acked send reaches bob once, in order.
async fn bob_gets_all(node: &NodeClient, acked: &[(usize, u64)]) {
    let bodies: Vec<String> = acked.iter().map(|(n, _)| format!("m{n}")).collect();
    receive_in_order(node, "bob", &bodies, 0).await;
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;
    let seqs: Vec<u64> = acked.iter().map(|(_, s)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn a_redis_restart_in_the_middle_of_traffic_loses_no_acked_message() {
    let (mut c, node) = alice_and_bob_on_redis().await;
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push((n, send_until_acked(&node, "alice", n).await));
    }
    // SIGKILL and start again: AOF with `appendfsync always` keeps every
    // acked event, session and sequence.
    c.redis.as_mut().unwrap().restart();
    for n in 10..20 {
        acked.push((n, send_until_acked(&node, "alice", n).await));
    }
    bob_gets_all(&node, &acked).await;
}

#[tokio::test]
async fn dropped_redis_connections_in_the_middle_of_traffic_lose_no_acked_message() {
    let (c, node) = alice_and_bob_on_redis().await;
    let url = c.redis.as_ref().unwrap().url();
    // Kills every connection of a type (the killing one is skipped).
    let kill = |kind: &'static str| {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg(kind)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(killed > 0, "no {kind} connection to kill");
        }
    };
    let mut acked = Vec::new();
    for n in 0..30 {
        if n == 10 {
            kill("pubsub").await;
        }
        if n == 20 {
            kill("normal").await;
        }
        acked.push((n, send_until_acked(&node, "alice", n).await));
    }
    bob_gets_all(&node, &acked).await;
}

/// The first gateway's bus-state samples in `/metrics` (`confab_gateway_bus*`).
async fn bus_samples(c: &Cluster) -> Vec<String> {
    let (_, gateway) = both_metrics(c).await;
    gateway
        .lines()
        .filter(|l| l.starts_with("confab_gateway_bus"))
        .map(str::to_owned)
        .collect()
}

/// A Redis gateway exports the same bus series as a NATS one (their
/// values on Redis: `on_redis_the_bus_metrics_follow_dropped_connections`).
#[tokio::test]
async fn a_redis_gateway_shows_the_bus_state_series_a_nats_gateway_shows() {
    let nats = Cluster::start_on(Backend::Nats, 1).await;
    let redis = Cluster::start_on(Backend::Redis, 1).await;
    let names = |samples: Vec<String>| {
        samples
            .iter()
            .map(|s| s.split([' ', '{']).next().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let on_nats = names(bus_samples(&nats).await);
    assert!(
        on_nats.contains("confab_gateway_bus_connected"),
        "{on_nats:?}"
    );
    assert_eq!(names(bus_samples(&redis).await), on_nats);
}

/// The value of the series `name` (labels included) in a Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The membership service's and the first gateway's `/metrics`.
async fn both_metrics(c: &Cluster) -> (String, String) {
    let client = reqwest::Client::new();
    let membership = client
        .get(format!("http://{}/metrics", c.membership))
        .bearer_auth(crate::cluster::SERVICE_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gateway = client
        .get(format!("{}/metrics", c.gateway_url(0)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (membership, gateway)
}

const M_CONNECTED: &str = "confab_membership_bus_connected{bus=\"redis\"}";
const M_RECONNECTS: &str = "confab_membership_bus_reconnects_total{bus=\"redis\"}";
const G_CONNECTED: &str = "confab_gateway_bus_connected";
const G_RECONNECTS: &str = "confab_gateway_bus_reconnects_total";

/// Waits until the membership and gateway metrics satisfy `ok`.
async fn metrics_until(c: &Cluster, what: &str, ok: impl Fn(&str, &str) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let (m, g) = both_metrics(c).await;
        if ok(&m, &g) {
            return;
        }
        assert!(
            start.elapsed() < T,
            "{what}; membership:\n{m}\ngateway:\n{g}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On the Redis bus the bus series of `/metrics` (membership and gateway)
/// are true: connections killed under the processes count as reconnects,
/// a Redis that is down reads as disconnected, and back as connected; the
/// log readers' lag series are there.
#[tokio::test]
async fn on_redis_the_bus_metrics_follow_dropped_connections() {
    let mut c = Cluster::start_on(Backend::Redis, 1).await;
    let (m, g) = both_metrics(&c).await;
    assert_eq!(series(&m, M_CONNECTED), Some(1.0), "{m}");
    assert_eq!(series(&m, M_RECONNECTS), Some(0.0), "{m}");
    assert_eq!(series(&g, G_CONNECTED), Some(1.0), "{g}");
    assert_eq!(series(&g, G_RECONNECTS), Some(0.0), "{g}");
    for reader in ["history", "notifier"] {
        let name = format!("confab_membership_projection_lag_events{{projection=\"{reader}\"}}");
        metrics_until(&c, &format!("{reader} lag measured"), |m, _| {
            series(m, &name) == Some(0.0)
        })
        .await;
    }

    // Every client connection is killed (the test's own is skipped): the
    // processes reconnect and count it.
    let client = redis::Client::open(c.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for kind in ["normal", "pubsub"] {
        let _: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    metrics_until(&c, "reconnects counted, connected again", |m, g| {
        series(m, M_RECONNECTS).is_some_and(|n| n >= 1.0)
            && series(g, G_RECONNECTS).is_some_and(|n| n >= 1.0)
            && series(m, M_CONNECTED) == Some(1.0)
            && series(g, G_CONNECTED) == Some(1.0)
    })
    .await;
    let (m, g) = both_metrics(&c).await;
    let before = (
        series(&m, M_RECONNECTS).unwrap(),
        series(&g, G_RECONNECTS).unwrap(),
    );

    // Redis down: both say disconnected.
    c.redis.as_mut().unwrap().kill();
    metrics_until(&c, "disconnected while Redis is down", |m, g| {
        series(m, M_CONNECTED) == Some(0.0) && series(g, G_CONNECTED) == Some(0.0)
    })
    .await;
    // A membership command meanwhile: it is in the SQL log, but the
    // notifier cannot publish its control event: its lag shows it.
    let _ = c
        .command(
            None,
            json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
        )
        .await;
    const NOTIFIER_EVENTS: &str =
        "confab_membership_projection_lag_events{projection=\"notifier\"}";
    const NOTIFIER_SECONDS: &str =
        "confab_membership_projection_lag_seconds{projection=\"notifier\"}";
    metrics_until(&c, "the notifier lags while Redis is down", |m, _| {
        series(m, NOTIFIER_EVENTS).is_some_and(|n| n >= 1.0)
            && series(m, NOTIFIER_SECONDS).is_some_and(|s| s > 0.5)
    })
    .await;
    // Back: connected, one more reconnect each, the notifier caught up.
    c.redis.as_mut().unwrap().restart();
    metrics_until(&c, "connected again after the restart", |m, g| {
        series(m, M_CONNECTED) == Some(1.0)
            && series(g, G_CONNECTED) == Some(1.0)
            && series(m, M_RECONNECTS).is_some_and(|n| n > before.0)
            && series(g, G_RECONNECTS).is_some_and(|n| n > before.1)
            && series(m, NOTIFIER_EVENTS) == Some(0.0)
    })
    .await;
}
