//! The Redis bus against a real `redis-server` of its own (never the shared
//! one): the conformance suite, then what is Redis-specific (script
//! atomicity, trims, reconnects, restarts).

use std::time::{Duration, SystemTime};

use confab_bus::{Bus, BusError, BusMessage, BusSubscription, RedisBus, RedisConfig};
use confab_events::RoomId;
use confab_test_support::RedisServer;
use futures::StreamExt;

mod common;
use common::{number_of, numbered, replay};

const WAIT: Duration = Duration::from_secs(15);

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

async fn connect(server: &RedisServer) -> RedisBus {
    RedisBus::connect(RedisConfig::new(server.url()))
        .await
        .expect("connect")
}

async fn conformance_bus(subscription_capacity: usize) -> (RedisServer, RedisBus) {
    let server = RedisServer::start();
    let cfg = RedisConfig {
        subscription_capacity,
        ..RedisConfig::new(server.url())
    };
    let bus = RedisBus::connect(cfg).await.expect("connect");
    (server, bus)
}

conformance_suite!(conformance_bus);

async fn next(sub: &mut BusSubscription) -> BusMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a bus message")
        .expect("subscription ended")
}

async fn redis_cmd(server: &RedisServer, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn a_script_that_cannot_write_leaves_nothing_half_written() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    let r = room("channel:atomic");
    assert_eq!(bus.publish(&r, numbered(1)).await.unwrap().seq, Some(1));
    // Someone clobbers the global log with a string: the script must refuse
    // before its first write (no sequence taken, no room entry).
    redis_cmd(&server, &["DEL", "{confab}:log"]).await;
    redis_cmd(&server, &["SET", "{confab}:log", "oops"]).await;
    let err = bus.publish(&r, numbered(2)).await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");
    assert_eq!(
        bus.refresh_high_water().await.unwrap(),
        1,
        "no sequence taken"
    );
    assert!(bus.fetch(&r, 2).await.unwrap().is_none());
    // Invalid messages are refused before Redis sees them.
    let bad = BusMessage::from_args_json("x", "not json".into());
    assert!(matches!(
        bus.publish(&r, bad).await,
        Err(BusError::Rejected(_))
    ));
}

#[tokio::test]
async fn the_script_is_reloaded_after_a_script_flush() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    let r = room("channel:noscript");
    bus.publish(&r, numbered(1)).await.unwrap();
    redis_cmd(&server, &["SCRIPT", "FLUSH"]).await;
    assert_eq!(bus.publish(&r, numbered(2)).await.unwrap().seq, Some(2));
}

/// A retention pass on a log with no room yet (the periodic pass of a
/// fresh deployment) succeeds: an empty page of rooms is not an error.
#[tokio::test]
async fn a_trim_with_no_room_succeeds() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    bus.trim_stored_before(SystemTime::now()).await.unwrap();
    let r = room("channel:after-empty-trim");
    assert!(bus.publish(&r, numbered(1)).await.unwrap().seq.is_some());
    bus.trim_stored_before(SystemTime::now() - Duration::from_secs(60))
        .await
        .unwrap();
    assert!(bus.fetch(&r, 1).await.unwrap().is_some(), "kept");
}

#[tokio::test]
async fn trims_drop_old_messages_and_replays_below_them_are_refused() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    let (a, b) = (room("channel:trim-a"), room("channel:trim-b"));
    for i in 0..4 {
        bus.publish(if i % 2 == 0 { &a } else { &b }, numbered(i))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 4..6 {
        bus.publish(if i % 2 == 0 { &a } else { &b }, numbered(i))
            .await
            .unwrap();
    }
    bus.trim_stored_before(cutoff).await.unwrap();
    let info = bus.log_info().await.unwrap();
    assert_eq!((info.first_seq, info.last_seq), (5, 6));
    assert!(
        bus.fetch(&a, 1).await.unwrap().is_none(),
        "trimmed from the room"
    );
    let rooms = [a.clone(), b.clone()];
    assert!(matches!(
        replay(&bus, &rooms, 2, 10).await,
        Err(BusError::Trimmed(_))
    ));
    assert!(matches!(
        bus.tail(1).await.err(),
        Some(BusError::Trimmed(_))
    ));
    let kept = replay(&bus, &rooms, 5, 10).await.unwrap();
    assert_eq!(kept.iter().map(number_of).collect::<Vec<_>>(), vec![4, 5]);
    // The log's identity survives reconnects and trims.
    let again = connect(&server).await;
    assert_eq!(again.log_info().await.unwrap().id, info.id);
}

#[tokio::test]
async fn a_dropped_pubsub_connection_is_caught_up_from_the_room_stream() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    let publisher = connect(&server).await;
    let r = room("channel:drop");
    let mut sub = bus.subscribe(&r).await.unwrap();
    let traffic = tokio::spawn(async move {
        for i in 0..200 {
            publisher.publish(&r, numbered(i)).await.unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Kill the subscriber's pub/sub connection in the middle of traffic.
    redis_cmd(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    traffic.await.unwrap();
    for i in 0..200 {
        assert_eq!(number_of(&next(&mut sub).await), i);
    }
}

#[tokio::test]
async fn a_redis_restart_in_the_middle_of_traffic_loses_no_acked_message() {
    let mut server = RedisServer::start_persistent();
    let bus = connect(&server).await;
    let r = room("channel:restart");
    let mut sub = bus.subscribe(&r).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push((i, bus.publish(&r, numbered(i)).await.unwrap().seq.unwrap()));
    }
    server.restart();
    // Publishes fail while Redis is down or the connection is re-made;
    // retry until acked, then keep going.
    for i in 10..20 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match bus
                .publish(&r, numbered(i).with_msg_id(format!("restart-{i}")))
                .await
            {
                Ok(p) => {
                    acked.push((i, p.seq.unwrap()));
                    break;
                }
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let m = next(&mut sub).await;
        got.push((number_of(&m), m.seq.unwrap()));
    }
    assert_eq!(got, acked);
}

#[tokio::test]
async fn wait_aof_is_refused_clearly_on_a_server_without_it() {
    let server = RedisServer::start();
    let cfg = RedisConfig {
        wait_aof: true,
        ..RedisConfig::new(server.url())
    };
    let err = RedisBus::connect(cfg).await.unwrap_err();
    assert!(
        matches!(err, BusError::Unsupported(ref m) if m.contains("wait_aof")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wiped_redis_is_a_new_log_and_live_feeds_follow_it() {
    let mut server = RedisServer::start();
    let bus = connect(&server).await;
    let r = room("channel:wiped");
    let mut sub = bus.subscribe(&r).await.unwrap();
    for i in 0..5 {
        bus.publish(&r, numbered(i)).await.unwrap();
        assert_eq!(number_of(&next(&mut sub).await), i);
    }
    let before = bus.log_info().await.unwrap();
    // No persistence: the restarted Redis is empty, its sequence starts
    // again at 1.
    server.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        match bus.log_info().await {
            Ok(info) => break info,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_ne!(after.id, before.id, "a wiped Redis is another log");
    // Wait until the feed resubscribed, then publish on the new log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 5..8 {
        bus.publish(&r, numbered(i)).await.unwrap();
    }
    for i in 5..8 {
        assert_eq!(number_of(&next(&mut sub).await), i);
    }
}

/// `PUBSUB NUMPAT` and the channels subscribed on the server.
async fn pubsub_state(server: &RedisServer) -> (i64, Vec<String>) {
    let numpat = match redis_cmd(server, &["PUBSUB", "NUMPAT"]).await {
        redis::Value::Int(n) => n,
        other => panic!("NUMPAT: {other:?}"),
    };
    let channels = match redis_cmd(server, &["PUBSUB", "CHANNELS"]).await {
        redis::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("channel: {other:?}"),
            })
            .collect(),
        other => panic!("CHANNELS: {other:?}"),
    };
    (numpat, channels)
}

#[tokio::test]
async fn user_rooms_share_one_pattern_subscription_and_survive_a_dropped_connection() {
    let server = RedisServer::start();
    let bus = connect(&server).await;
    let publisher = connect(&server).await;
    let (a, b, c) = (room("user:a"), room("user:b"), room("channel:c"));
    let mut sub_a = bus.subscribe(&a).await.unwrap();
    let mut sub_b = bus.subscribe(&b).await.unwrap();
    let mut sub_c = bus.subscribe(&c).await.unwrap();
    let (numpat, channels) = pubsub_state(&server).await;
    assert_eq!(numpat, 1, "one pattern for every user room");
    assert_eq!(channels, vec!["{confab}:live:channel:c".to_owned()]);

    // Each user room gets its own events only, in order, also across a
    // dropped pub/sub connection in the middle of traffic.
    let traffic = tokio::spawn({
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        async move {
            for i in 0..150 {
                publisher.publish(&a, numbered(i)).await.unwrap();
                publisher.publish(&b, numbered(1000 + i)).await.unwrap();
                if i % 50 == 0 {
                    publisher.publish(&c, numbered(i)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    redis_cmd(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    traffic.await.unwrap();
    for i in 0..150 {
        assert_eq!(number_of(&next(&mut sub_a).await), i);
        assert_eq!(number_of(&next(&mut sub_b).await), 1000 + i);
    }
    for i in [0, 50, 100] {
        assert_eq!(number_of(&next(&mut sub_c).await), i);
    }

    // The last user room going does not drop the pattern (kept for the
    // next user); the last channel subscriber unsubscribes.
    drop((sub_a, sub_b, sub_c));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (numpat, channels) = pubsub_state(&server).await;
    assert_eq!((numpat, channels.len()), (1, 0));
}

#[tokio::test]
async fn without_shared_user_rooms_each_user_room_is_a_channel() {
    let server = RedisServer::start();
    let cfg = RedisConfig {
        shared_user_rooms: false,
        ..RedisConfig::new(server.url())
    };
    let bus = RedisBus::connect(cfg).await.unwrap();
    let mut sub = bus.subscribe(&room("user:a")).await.unwrap();
    let (numpat, channels) = pubsub_state(&server).await;
    assert_eq!(numpat, 0);
    assert_eq!(channels, vec!["{confab}:live:user:a".to_owned()]);
    bus.publish(&room("user:a"), numbered(7)).await.unwrap();
    assert_eq!(number_of(&next(&mut sub).await), 7);
}
