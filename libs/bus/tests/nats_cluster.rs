//! The NATS bus on a 3-node JetStream cluster with stream `ROOMS` at 3
//! replicas: the bus connects to the server list, and losing a node (killed,
//! or paused like a node behind a partition) loses nothing acked; replays
//! fall back to a consumer (direct gets need 1 replica) and stay complete.

use std::time::{Duration, Instant};

use confab_bus::{Bus, BusMessage, NatsBus, NatsConfig};
use confab_events::RoomId;
use confab_test_support::NatsCluster;
use serde_json::json;

fn msg(i: usize) -> BusMessage {
    BusMessage::new("message:new", &json!({ "id": format!("m{i}") })).with_msg_id(format!("m{i}"))
}

/// Publishes until acked (retries keep their msg id: no duplicates).
async fn publish(bus: &NatsBus, room: &RoomId, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), bus.publish(room, msg(i))).await {
            Ok(Ok(_)) => return,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("m{i} never acked: {other:?}"),
        }
    }
}

async fn replay_ids(bus: &NatsBus, room: &RoomId) -> (Vec<String>, Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = Instant::now();
        match bus.replay(std::slice::from_ref(room), 0, 10_000).await {
            Ok(items) => {
                let ids = items
                    .iter()
                    .map(|i| {
                        let args: serde_json::Value =
                            serde_json::from_str(&i.msg.args_json).unwrap();
                        args[0]["id"].as_str().unwrap().to_owned()
                    })
                    .collect();
                return (ids, started.elapsed());
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("replay failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("replay failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_log_survives_a_lost_node() {
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let mut config = NatsConfig::new(cluster.urls());
    config.replicas = 3;
    let bus = NatsBus::connect(config).await.unwrap();
    let room = RoomId::parse("channel:c1").unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        publish(&bus, &room, i).await;
        acked.push(format!("m{i}"));
    }
    let (ids, took) = replay_ids(&bus, &room).await;
    assert_eq!(ids, acked);
    eprintln!("replay of 50 events, 3 replicas (consumer fallback), healthy cluster: {took:?}");

    // Kill a node (whichever the bus is connected to or not), keep going.
    tokio::task::block_in_place(|| cluster.node_mut(0).kill());
    for i in 50..100 {
        publish(&bus, &room, i).await;
        acked.push(format!("m{i}"));
    }
    let (ids, took) = replay_ids(&bus, &room).await;
    assert_eq!(
        ids, acked,
        "acked events lost or duplicated with a node down"
    );
    eprintln!("replay of 100 events with a node down: {took:?}");

    // Pause another (SIGSTOP: sockets open, no answers), keep going.
    tokio::task::block_in_place(|| {
        cluster.node_mut(0).restart();
        cluster.wait_for_leader();
    });
    cluster.node(1).pause();
    for i in 100..150 {
        publish(&bus, &room, i).await;
        acked.push(format!("m{i}"));
    }
    let (ids, took) = replay_ids(&bus, &room).await;
    cluster.node(1).resume();
    assert_eq!(
        ids, acked,
        "acked events lost or duplicated with a node paused"
    );
    eprintln!("replay of 150 events with a node paused: {took:?}");
}
