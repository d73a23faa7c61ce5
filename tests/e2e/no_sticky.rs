//! Long-polling without sticky sessions: two gateways on one NATS (or one
//! Redis: every test runs on both, the `on_redis_` ones on Redis), behind
//! a [`RoundRobin`] balancer that sends every request to the next gateway.
//! A request for a session another gateway owns is forwarded there; a
//! WebSocket upgrade for it is relayed.

use std::time::Duration;

use confab_test_support::NodeClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};
use crate::polling::Suite;
use crate::polling_client::{alice_types_to_bob, exchange, polling_only, seed, transport};
use crate::recovery::{GatewayProcess, bodies, receive_in_order, send};
use crate::round_robin::RoundRobin;
use crate::support::*;

const T: Duration = Duration::from_secs(15);

async fn balanced(backend: Backend) -> (Cluster, RoundRobin) {
    let c = Cluster::start_on(backend, 2).await;
    c.workspace_with_general(&["bob"]).await;
    let lb = RoundRobin::start(c.gateways.iter().map(|(a, _)| *a).collect()).await;
    (c, lb)
}

#[tokio::test]
async fn polling_only_clients_behind_a_round_robin_balancer_message_and_get_acks() {
    polling_only_behind_a_balancer(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_polling_only_clients_behind_a_round_robin_balancer_message_and_get_acks() {
    polling_only_behind_a_balancer(Backend::Redis).await;
}

async fn polling_only_behind_a_balancer(backend: Backend) {
    let (_c, lb) = balanced(backend).await;
    let node = NodeClient::spawn().await;
    node.connect("alice", &lb.url(), polling_only(&token("alice")))
        .await;
    node.connect("bob", &lb.url(), polling_only(&token("bob")))
        .await;
    node.expect("alice", is_type("connect"), T).await;
    node.expect("bob", is_type("connect"), T).await;
    exchange(&node, 0..20, &["bob", "alice"]).await;
    alice_types_to_bob(&node).await;
    node.expect_none("bob", is_type("disconnect"), Duration::ZERO)
        .await;
    // Both gateways answered requests of the same sessions.
    assert!(
        lb.requests.load(std::sync::atomic::Ordering::SeqCst) > 20,
        "the balancer carried the traffic"
    );
}

#[tokio::test]
async fn the_seed_options_behind_a_round_robin_balancer_connect_and_exchange_events() {
    seed_options_behind_a_balancer(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_the_seed_options_behind_a_round_robin_balancer_connect_and_exchange_events() {
    seed_options_behind_a_balancer(Backend::Redis).await;
}

async fn seed_options_behind_a_balancer(backend: Backend) {
    let (_c, lb) = balanced(backend).await;
    let node = NodeClient::spawn().await;
    node.connect("alice", &lb.url(), seed(&token("alice")))
        .await;
    node.connect("bob", &lb.url(), seed(&token("bob"))).await;
    node.expect("alice", is_type("connect"), T).await;
    node.expect("bob", is_type("connect"), T).await;
    exchange(&node, 0..5, &["bob", "alice"]).await;
    // Whether an upgrade landed on the owner or on the other gateway
    // (relayed), both end up on WebSocket and events keep flowing.
    for who in ["alice", "bob"] {
        on_websocket(&node, who).await;
    }
    exchange(&node, 5..10, &["bob", "alice"]).await;
    node.expect_none("bob", is_type("disconnect"), Duration::ZERO)
        .await;
    node.expect_none("alice", is_type("disconnect"), Duration::ZERO)
        .await;
}

/// Waits until `who`'s Engine.IO transport is the WebSocket.
async fn on_websocket(node: &NodeClient, who: &str) {
    let start = tokio::time::Instant::now();
    while transport(node, who).await != "websocket" {
        assert!(start.elapsed() < T, "{who} never upgraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The polling sessions gateway `i` owns (upgraded ones included).
async fn polling_sessions(c: &Cluster, i: usize) -> u64 {
    let ready: Value = reqwest::get(format!("{}/readyz", c.gateway_url(i)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["polling_sessions"].as_u64().unwrap()
}

/// `who` sends `body` to #general and gets its ack.
async fn say(node: &NodeClient, who: &str, body: &str, id: &str) {
    let msg = json!({ "room": "channel:general", "body": body, "clientMsgId": id });
    let ack = node
        .emit_with_ack(who, "message:send", vec![msg], T)
        .await
        .unwrap();
    assert!(ack[0]["id"].is_string(), "{ack:?}");
}

#[tokio::test]
async fn an_upgrade_landing_on_a_gateway_that_does_not_own_the_session_is_relayed() {
    upgrade_on_the_non_owner(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_an_upgrade_landing_on_a_gateway_that_does_not_own_the_session_is_relayed() {
    upgrade_on_the_non_owner(Backend::Redis).await;
}

async fn upgrade_on_the_non_owner(backend: Backend) {
    let (c, lb) = balanced(backend).await;
    // Every WebSocket goes to gateway 1; bob's handshake, the balancer's
    // first request, to gateway 0: his upgrade is relayed.
    lb.websockets_to(Some(c.gateways[1].0));
    let node = NodeClient::spawn().await;
    node.connect("bob", &lb.url(), seed(&token("bob"))).await;
    node.expect("bob", is_type("connect"), T).await;
    // alice sends at once, while bob's upgrade may be under way.
    connect_as(&node, "alice", "alice", &c.gateway_url(1)).await;
    exchange(&node, 0..5, &["bob", "alice"]).await;
    on_websocket(&node, "bob").await;
    assert_eq!(
        polling_sessions(&c, 0).await,
        1,
        "gateway 0 owns bob's session"
    );
    assert_eq!(polling_sessions(&c, 1).await, 0);
    // Both ways, in order, with a user of the other gateway (alice's send
    // rate limit allows a burst of 20).
    exchange(&node, 5..15, &["bob", "alice"]).await;
    for i in 0..10 {
        say(&node, "bob", &format!("from bob {i}"), &format!("b{i}")).await;
    }
    for who in ["alice", "bob"] {
        for i in 0..10 {
            let ev = node.expect(who, is_event("message:new"), T).await;
            assert_eq!(ev["args"][0]["body"], format!("from bob {i}"), "{who}");
        }
    }
    alice_types_to_bob(&node).await;
    assert_eq!(transport(&node, "bob").await, "websocket");
    node.expect_none("bob", is_type("disconnect"), Duration::ZERO)
        .await;
}

#[tokio::test]
async fn a_relaying_gateway_killed_ends_the_session_and_the_client_recovers() {
    relaying_gateway_killed(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_relaying_gateway_killed_ends_the_session_and_the_client_recovers() {
    relaying_gateway_killed(Backend::Redis).await;
}

async fn relaying_gateway_killed(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    c.workspace_with_general(&["bob"]).await;
    let mut doomed = GatewayProcess::start_in(&c).await;
    let lb = RoundRobin::start(vec![c.gateways[0].0, doomed.addr]).await;
    lb.websockets_to(Some(doomed.addr));
    let node = NodeClient::spawn().await;
    node.connect("bob", &lb.url(), seed(&token("bob"))).await;
    node.expect("bob", is_type("connect"), T).await;
    on_websocket(&node, "bob").await;
    assert_eq!(
        polling_sessions(&c, 0).await,
        1,
        "gateway 0 owns bob's session"
    );
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    for i in 0..=2 {
        send(&node, "alice", i).await;
    }
    let last = receive_in_order(&node, "bob", &bodies(0..=2), 0).await;
    doomed.kill().await;
    lb.set_targets(vec![c.gateways[0].0]);
    lb.websockets_to(None);
    for i in 3..=6 {
        send(&node, "alice", i).await;
    }
    // The owner's session ended with the relay; bob reconnects, recovers,
    // and gets every acked message once, in order.
    node.expect("bob", is_type("disconnect"), T).await;
    let back = node.expect("bob", is_type("connect"), T).await;
    assert_eq!(back["recovered"], true, "{back}");
    receive_in_order(&node, "bob", &bodies(3..=6), last).await;
    let start = tokio::time::Instant::now();
    while polling_sessions(&c, 0).await > 1 {
        assert!(start.elapsed() < T, "the relayed session never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_get_answer_near_max_payload_is_forwarded_whole() {
    near_max_payload_forwarded_whole(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_get_answer_near_max_payload_is_forwarded_whole() {
    near_max_payload_forwarded_whole(Backend::Redis).await;
}

async fn near_max_payload_forwarded_whole(backend: Backend) {
    let c = Cluster::start_tweaked_on(backend, 2, None, |cfg| {
        cfg.messages.max_body_bytes = cfg.engine.max_payload;
    })
    .await;
    c.workspace_with_general(&["bob"]).await;
    let (owner, other) = (gateway(&c, 0), gateway(&c, 1));
    let sid = owner.session().await;
    assert_eq!(
        owner.post(&sid, &connect_packet("bob")).await.0,
        StatusCode::OK
    );
    let (status, body) = other.get(other.polling(&sid)).await;
    assert!(
        status == StatusCode::OK && body.starts_with("40{"),
        "{body}"
    );
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    // Every quote is escaped once in the Socket.IO packet: ~960 kB, just
    // under maxPayload; escaped again into JSON it would be ~1.9 MB.
    let big = "\"".repeat(480_000);
    say(&node, "alice", &big, "big").await;
    let mut seen = String::new();
    while !seen.contains("message:new") {
        let (status, body) = other.get(other.polling(&sid)).await;
        assert_eq!(status, StatusCode::OK, "{}", &body[..body.len().min(200)]);
        seen = body;
    }
    assert!(seen.len() > 960_000, "{}", seen.len());
    let packet = seen
        .split('\u{1e}')
        .find(|p| p.contains("message:new"))
        .unwrap();
    let event: Value = serde_json::from_str(packet.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(event[1]["body"].as_str().unwrap().len(), big.len());
}

fn gateway(c: &Cluster, i: usize) -> Suite {
    Suite::on(c.gateways[i].0, "/socket.io/")
}

fn connect_packet(user: &str) -> String {
    format!("40{}", json!({ "token": token(user) }))
}

#[tokio::test]
async fn a_session_opened_on_one_gateway_is_served_by_the_other() {
    served_by_the_other(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_session_opened_on_one_gateway_is_served_by_the_other() {
    served_by_the_other(Backend::Redis).await;
}

async fn served_by_the_other(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    let (owner, other) = (gateway(&c, 0), gateway(&c, 1));
    let sid = owner.session().await;
    assert_eq!(
        other.post(&sid, &connect_packet("alice")).await,
        (StatusCode::OK, "ok".into())
    );
    let (status, body) = other.get(other.polling(&sid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("40{"), "{body}");
}

#[tokio::test]
async fn a_dropped_forwarded_get_releases_the_owners_hold() {
    dropped_get_releases_the_hold(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_dropped_forwarded_get_releases_the_owners_hold() {
    dropped_get_releases_the_hold(Backend::Redis).await;
}

async fn dropped_get_releases_the_hold(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    let (owner, other) = (gateway(&c, 0), gateway(&c, 1));
    let sid = owner.session().await;
    // A GET through the other gateway, given up by its client.
    let held = other.http.get(other.polling(&sid)).send();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), held)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The owner's hold is gone: the next GET is not an overlap.
    let next = tokio::spawn({
        let url = owner.polling(&sid);
        let http = owner.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        owner.post(&sid, &connect_packet("alice")).await,
        (StatusCode::OK, "ok".into())
    );
    let (status, body) = tokio::time::timeout(T, next).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("40{"), "{body}");
}

#[tokio::test]
async fn a_session_of_a_gone_gateway_is_unknown_at_once() {
    gone_gateway_unknown_at_once(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_session_of_a_gone_gateway_is_unknown_at_once() {
    gone_gateway_unknown_at_once(Backend::Redis).await;
}

async fn gone_gateway_unknown_at_once(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    let (owner, other) = (gateway(&c, 0), gateway(&c, 1));
    let sid = owner.session().await;
    c.gateways[0].1.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = tokio::time::Instant::now();
    let (status, body) = other.get(other.polling(&sid)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error, json!({ "code": 1, "message": "Session ID unknown" }));
    // An owner SIGKILLed: nothing of it answers any more.
    let mut doomed = GatewayProcess::start_in(&c).await;
    let sid = Suite::on(doomed.addr, "/socket.io/").session().await;
    doomed.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = tokio::time::Instant::now();
    let (status, body) = other.get(other.polling(&sid)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A sid naming no gateway at all, or one unfit for a subject.
    for sid in ["gw-0000000000000000.x", "a*b.x", "x"] {
        let (status, body) = other.get(other.polling(sid)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sid}: {body}");
    }
}

#[tokio::test]
async fn a_forwarded_answer_never_acknowledged_goes_back_to_the_session() {
    unacknowledged_answer_goes_back(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_forwarded_answer_never_acknowledged_goes_back_to_the_session() {
    unacknowledged_answer_goes_back(Backend::Redis).await;
}

async fn unacknowledged_answer_goes_back(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    let owner = gateway(&c, 0);
    let sid = owner.session().await;
    assert_eq!(
        owner.post(&sid, &connect_packet("alice")).await,
        (StatusCode::OK, "ok".into())
    );
    // A forwarder that gets the answer and dies before its ack.
    let mut forwarder = RawForwarder::connect(&c).await;
    let (lost, _control) = forwarder.get(&sid).await;
    assert!(lost.starts_with("40{"), "{lost}");
    drop(forwarder);
    // The owner put the packets back: the next GET gets them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = owner.get(owner.polling(&sid)).await;
    assert_eq!((status, body), (StatusCode::OK, lost));
}

/// A forwarding gateway played by the test itself, on the cluster's
/// NATS or Redis.
enum RawForwarder {
    Nats(async_nats::Client),
    /// The Redis bus, and the topic of the gateway the test plays (its
    /// inboxes' messages arrive there).
    Redis(confab_bus::RedisBus, confab_bus::TopicSubscription),
}

/// The gateway id the test plays on Redis.
const RAW_FORWARDER: &str = "test-forwarder";

impl RawForwarder {
    async fn connect(c: &Cluster) -> RawForwarder {
        use confab_contracts::gateway::GatewayName;
        match c.backend {
            Backend::Nats => Self::Nats(async_nats::connect(c.nats().url()).await.unwrap()),
            Backend::Redis => {
                let url = c.redis.as_ref().unwrap().url();
                let bus = confab_bus::RedisBus::connect(confab_bus::RedisConfig::new(url))
                    .await
                    .unwrap();
                let topic = GatewayName::parse(RAW_FORWARDER).unwrap().topic();
                let inbox = bus.subscribe_topic(&topic, 16).await.unwrap();
                Self::Redis(bus, inbox)
            }
        }
    }

    /// A forwarded GET for `sid`, as a forwarding gateway makes it: the
    /// owner's answer and the control subject to confirm it on.
    async fn get(&mut self, sid: &str) -> (String, String) {
        use confab_contracts::gateway::envelope::Envelope;
        use confab_contracts::gateway::{GatewayName, PollAnswer, PollRequest};
        let name = GatewayName::parse(sid.split_once('.').unwrap().0).unwrap();
        let control = match self {
            Self::Nats(nats) => nats.new_inbox(),
            Self::Redis(..) => format!("{}control", name.inbox_prefix()),
        };
        let request = PollRequest {
            sid: sid.to_owned(),
            control: control.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            confab_contracts::AUTHORIZATION_HEADER,
            format!("Bearer {}", crate::cluster::SERVICE_TOKEN).as_str(),
        );
        let body = serde_json::to_vec(&request).unwrap();
        let (headers, payload) = match self {
            Self::Nats(nats) => {
                let reply = nats
                    .request_with_headers(name.poll_subject(), headers, body.into())
                    .await
                    .unwrap();
                (reply.headers, reply.payload)
            }
            Self::Redis(bus, inbox) => {
                let me = GatewayName::parse(RAW_FORWARDER).unwrap();
                let request = Envelope {
                    subject: name.poll_subject(),
                    reply: Some(format!("{}answer", me.inbox_prefix())),
                    headers,
                    body: body.into(),
                };
                let received = bus
                    .publish_topic_counted(&name.topic(), &request.encode().unwrap())
                    .await
                    .unwrap();
                assert_eq!(received, 1, "the owner listens on its topic");
                let answer = tokio::time::timeout(T, inbox.next())
                    .await
                    .unwrap()
                    .unwrap();
                let answer = Envelope::decode(answer).unwrap();
                (Some(answer.headers), answer.body)
            }
        };
        let answer = PollAnswer::decode(headers.as_ref(), payload).unwrap();
        let PollAnswer::Payload(payload) = answer else {
            panic!("{answer:?}");
        };
        (String::from_utf8(payload.to_vec()).unwrap(), control)
    }

    /// Confirms a forwarded GET's answer on its `control` subject.
    async fn ack(&self, control: &str) {
        use confab_contracts::gateway::envelope::Envelope;
        use confab_contracts::gateway::{ACK, GatewayName};
        match self {
            Self::Nats(nats) => {
                nats.publish(control.to_owned(), ACK.into()).await.unwrap();
                nats.flush().await.unwrap();
            }
            Self::Redis(bus, _) => {
                let owner = GatewayName::of_subject(control).unwrap();
                let ack = Envelope {
                    subject: control.to_owned(),
                    reply: None,
                    headers: async_nats::HeaderMap::new(),
                    body: ACK.into(),
                };
                bus.publish_topic_counted(&owner.topic(), &ack.encode().unwrap())
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_get_during_the_owners_ack_wait_is_the_clients_next_get() {
    get_during_the_ack_wait(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_get_during_the_owners_ack_wait_is_the_clients_next_get() {
    get_during_the_ack_wait(Backend::Redis).await;
}

async fn get_during_the_ack_wait(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    let owner = gateway(&c, 0);
    let sid = owner.session().await;
    assert_eq!(
        owner.post(&sid, &connect_packet("alice")).await,
        (StatusCode::OK, "ok".into())
    );
    let mut forwarder = RawForwarder::connect(&c).await;
    let (answer, control) = forwarder.get(&sid).await;
    assert!(answer.starts_with("40{"), "{answer}");
    // The client saw that answer; its next GET reaches the owner before
    // the forwarder's ack does.
    let next = tokio::spawn({
        let url = owner.polling(&sid);
        let http = owner.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "no overlap: it waits for the ack");
    forwarder.ack(&control).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "the acked packets are gone");
    // The client closes: the held GET ends with a noop, the session was
    // never ended by an overlap.
    assert_eq!(owner.post(&sid, "1").await, (StatusCode::OK, "ok".into()));
    let (status, body) = tokio::time::timeout(T, next).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "6"));
}

#[tokio::test]
async fn a_forwarding_gateway_killed_mid_get_loses_nothing_acked() {
    forwarding_gateway_killed(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_forwarding_gateway_killed_mid_get_loses_nothing_acked() {
    forwarding_gateway_killed(Backend::Redis).await;
}

async fn forwarding_gateway_killed(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    c.workspace_with_general(&["bob"]).await;
    let mut doomed = GatewayProcess::start_in(&c).await;
    let lb = RoundRobin::start(vec![c.gateways[0].0, doomed.addr]).await;
    let node = NodeClient::spawn().await;
    let bob = reconnecting_polling(&token("bob"));
    node.connect("bob", &lb.url(), bob).await;
    node.expect("bob", is_type("connect"), T).await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    for i in 0..=2 {
        send(&node, "alice", i).await;
    }
    let last = receive_in_order(&node, "bob", &bodies(0..=2), 0).await;
    // Bob's GETs alternate between the gateways: one is likely held by
    // the doomed one now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.kill().await;
    lb.set_targets(vec![c.gateways[0].0]);
    for i in 3..=6 {
        send(&node, "alice", i).await;
    }
    // Whether bob's session lived on the killed gateway (he recovers) or
    // only a forwarded GET did, every acked message reaches him, in order.
    receive_in_order(&node, "bob", &bodies(3..=6), last).await;
}

#[tokio::test]
async fn an_owner_killed_mid_session_its_polling_client_reconnects_and_recovers() {
    owner_killed_mid_session(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_an_owner_killed_mid_session_its_polling_client_reconnects_and_recovers() {
    owner_killed_mid_session(Backend::Redis).await;
}

async fn owner_killed_mid_session(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    c.workspace_with_general(&["bob"]).await;
    // Short pings: the client notices a dead owner within 0.5 s, even
    // while its GET is held by the other gateway for the owner.
    let mut doomed = GatewayProcess::start_in_with(
        &c,
        &[
            ("CONFAB_ENGINE__PING_INTERVAL", "300ms"),
            ("CONFAB_ENGINE__PING_TIMEOUT", "200ms"),
        ],
    )
    .await;
    // The balancer's first request, bob's handshake, goes to the doomed
    // gateway: it owns his session; his requests then alternate, every
    // other one forwarded by gateway 0.
    let lb = RoundRobin::start(vec![doomed.addr, c.gateways[0].0]).await;
    let node = NodeClient::spawn().await;
    let bob = reconnecting_polling(&token("bob"));
    node.connect("bob", &lb.url(), bob).await;
    node.expect("bob", is_type("connect"), T).await;
    assert_eq!(polling_sessions(&c, 0).await, 0, "not gateway 0's session");
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    for i in 0..=2 {
        send(&node, "alice", i).await;
    }
    let last = receive_in_order(&node, "bob", &bodies(0..=2), 0).await;
    let served = lb.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(served > 4, "bob polled through the balancer ({served})");
    doomed.kill().await;
    lb.set_targets(vec![c.gateways[0].0]);
    for i in 3..=6 {
        send(&node, "alice", i).await;
    }
    // The session died with its owner: bob reconnects through the
    // survivor, recovers it, and gets every acked message once, in order.
    node.expect("bob", is_type("disconnect"), T).await;
    let back = node.expect("bob", is_type("connect"), T).await;
    assert_eq!(back["recovered"], true, "{back}");
    receive_in_order(&node, "bob", &bodies(3..=6), last).await;
    assert_eq!(polling_sessions(&c, 0).await, 1, "gateway 0 owns it now");
}

/// [`polling_only`] that reconnects, within 0.1-0.2 s (and recovers its
/// session, as by default).
fn reconnecting_polling(token: &str) -> serde_json::Value {
    let mut options = polling_only(token);
    options["reconnection"] = json!(true);
    options["reconnectionDelay"] = json!(100);
    options["reconnectionDelayMax"] = json!(200);
    options["randomizationFactor"] = json!(0);
    options
}
