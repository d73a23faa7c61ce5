//! Long-polling without sticky sessions: two gateways on one NATS, behind
//! a [`RoundRobin`] balancer that sends every request to the next gateway.
//! A request for a session another gateway owns is forwarded there.

use std::time::Duration;

use confab_test_support::NodeClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::polling::Suite;
use crate::polling_client::{alice_types_to_bob, exchange, polling_only, seed};
use crate::recovery::{GatewayProcess, bodies, receive_in_order, send};
use crate::round_robin::RoundRobin;
use crate::support::*;

const T: Duration = Duration::from_secs(15);

async fn balanced() -> (Cluster, RoundRobin) {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob"]).await;
    let lb = RoundRobin::start(c.gateways.iter().map(|(a, _)| *a).collect()).await;
    (c, lb)
}

#[tokio::test]
async fn polling_only_clients_behind_a_round_robin_balancer_message_and_get_acks() {
    let (_c, lb) = balanced().await;
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
    let (_c, lb) = balanced().await;
    let node = NodeClient::spawn().await;
    node.connect("alice", &lb.url(), seed(&token("alice")))
        .await;
    node.connect("bob", &lb.url(), seed(&token("bob"))).await;
    node.expect("alice", is_type("connect"), T).await;
    node.expect("bob", is_type("connect"), T).await;
    exchange(&node, 0..5, &["bob", "alice"]).await;
    // Whether an upgrade landed on the owner (WebSocket) or elsewhere
    // (refused: the client stays on polling), events keep flowing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    exchange(&node, 5..10, &["bob", "alice"]).await;
    node.expect_none("bob", is_type("disconnect"), Duration::ZERO)
        .await;
    node.expect_none("alice", is_type("disconnect"), Duration::ZERO)
        .await;
}

fn gateway(c: &Cluster, i: usize) -> Suite {
    Suite::on(c.gateways[i].0, "/socket.io/")
}

fn connect_packet(user: &str) -> String {
    format!("40{}", json!({ "token": token(user) }))
}

#[tokio::test]
async fn a_session_opened_on_one_gateway_is_served_by_the_other() {
    let c = Cluster::start(2).await;
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
    let c = Cluster::start(2).await;
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
    let c = Cluster::start(2).await;
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
    // A sid naming no gateway at all, or one unfit for a subject.
    for sid in ["gw-0000000000000000.x", "a*b.x", "x"] {
        let (status, body) = other.get(other.polling(sid)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sid}: {body}");
    }
}

#[tokio::test]
async fn a_forwarded_answer_never_acknowledged_goes_back_to_the_session() {
    use confab_contracts::gateway::{GatewayName, PollAnswer, PollRequest};
    let c = Cluster::start(1).await;
    let owner = gateway(&c, 0);
    let sid = owner.session().await;
    assert_eq!(
        owner.post(&sid, &connect_packet("alice")).await,
        (StatusCode::OK, "ok".into())
    );
    // A forwarder that gets the answer and dies before its ack.
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let name = GatewayName::parse(sid.split_once('.').unwrap().0).unwrap();
    let request = PollRequest {
        sid: sid.clone(),
        control: nats.new_inbox(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        confab_contracts::AUTHORIZATION_HEADER,
        format!("Bearer {}", crate::cluster::SERVICE_TOKEN).as_str(),
    );
    let reply = nats
        .request_with_headers(
            name.poll_subject(),
            headers,
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .unwrap();
    let answer: PollAnswer = serde_json::from_slice(&reply.payload).unwrap();
    let PollAnswer::Payload(lost) = answer else {
        panic!("{answer:?}");
    };
    assert!(lost.starts_with("40{"), "{lost}");
    drop(nats);
    // The owner put the packets back: the next GET gets them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = owner.get(owner.polling(&sid)).await;
    assert_eq!((status, body), (StatusCode::OK, lost));
}

#[tokio::test]
async fn a_forwarding_gateway_killed_mid_get_loses_nothing_acked() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&["bob"]).await;
    let mut doomed = GatewayProcess::start(&c.nats.url()).await;
    let lb = RoundRobin::start(vec![c.gateways[0].0, doomed.addr]).await;
    let node = NodeClient::spawn().await;
    let bob = json!({
        "transports": ["polling"],
        "auth": { "token": token("bob") },
        "forceNew": true,
        "reconnectionDelay": 100,
        "reconnectionDelayMax": 200,
        "randomizationFactor": 0,
    });
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
