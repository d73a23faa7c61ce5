//! The in-process bus as a log: sequences, de-duplication, retention,
//! fetch, replay and repair of lagged subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use confab_bus::{
    Bus, BusError, BusMessage, BusSubscription, InProcessBus, InProcessLimits, Published,
};
use confab_events::RoomId;
use futures::StreamExt;

mod common;
use common::{assert_fetch_checks_the_room, assert_nothing_to_find, number_of, numbered, replay};

const WAIT: Duration = Duration::from_secs(5);

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

async fn next(sub: &mut BusSubscription) -> BusMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a bus message")
        .expect("subscription ended")
}

async fn assert_quiet(sub: &mut BusSubscription) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
        panic!("expected nothing, got {m:?}");
    }
}

async fn seq_of(bus: &InProcessBus, r: &RoomId, msg: BusMessage) -> u64 {
    let p = bus.publish(r, msg).await.unwrap();
    assert!(!p.duplicate);
    p.seq.expect("durable messages get a sequence")
}

#[tokio::test]
async fn sequences_are_global_and_monotonic_across_rooms() {
    let bus = InProcessBus::default();
    let (a, b) = (room("channel:a"), room("channel:b"));
    let mut sa = bus.subscribe(&a).await.unwrap();
    let mut sb = bus.subscribe(&b).await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 { &a } else { &b };
        seqs.push(seq_of(&bus, r, numbered(i)).await);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    for (i, expected) in [(0, 1), (2, 3), (4, 5)] {
        let m = next(&mut sa).await;
        assert_eq!((number_of(&m), m.seq), (i, Some(expected)));
    }
    for (i, expected) in [(1, 2), (3, 4), (5, 6)] {
        let m = next(&mut sb).await;
        assert_eq!((number_of(&m), m.seq), (i, Some(expected)));
    }
    assert_eq!(bus.stored_messages(), 6);
}

#[tokio::test]
async fn duplicates_within_the_window_are_dropped_and_accepted_after_it() {
    let window = Duration::from_millis(200);
    let bus = InProcessBus::with_limits(InProcessLimits {
        duplicate_window: window,
        ..InProcessLimits::default()
    });
    let r = room("channel:dedup");
    let mut sub = bus.subscribe(&r).await.unwrap();

    let first = bus
        .publish(&r, numbered(1).with_msg_id("m-1"))
        .await
        .unwrap();
    assert_eq!(
        first,
        Published {
            seq: Some(1),
            duplicate: false
        }
    );
    // Another message in between, so "first seq" is not just "last seq".
    seq_of(&bus, &r, numbered(2)).await;
    let again = bus
        .publish(&r, numbered(99).with_msg_id("m-1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Published {
            seq: Some(1),
            duplicate: true
        }
    );
    let m = next(&mut sub).await;
    assert_eq!(
        (number_of(&m), m.seq, m.msg_id.as_deref()),
        (1, Some(1), Some("m-1"))
    );
    assert_eq!(number_of(&next(&mut sub).await), 2);
    assert_quiet(&mut sub).await;
    assert_eq!(bus.stored_messages(), 2);

    // Volatile messages are not de-duplicated (nor stored).
    for _ in 0..2 {
        let p = bus
            .publish(&r, numbered(7).with_msg_id("m-1").into_volatile())
            .await
            .unwrap();
        assert_eq!(p, Published::default());
        assert_eq!(next(&mut sub).await.seq, None);
    }

    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let later = bus
        .publish(&r, numbered(3).with_msg_id("m-1"))
        .await
        .unwrap();
    assert_eq!(
        later,
        Published {
            seq: Some(3),
            duplicate: false
        }
    );
    let m = next(&mut sub).await;
    assert_eq!((number_of(&m), m.seq), (3, Some(3)));
    // The new one de-duplicates from now on.
    let dup = bus
        .publish(&r, numbered(4).with_msg_id("m-1"))
        .await
        .unwrap();
    assert_eq!(
        dup,
        Published {
            seq: Some(3),
            duplicate: true
        }
    );
}

#[tokio::test]
async fn retention_drops_the_oldest_beyond_the_count() {
    let bus = InProcessBus::with_limits(InProcessLimits {
        max_messages: 3,
        ..InProcessLimits::default()
    });
    let (a, b) = (room("channel:a"), room("channel:b"));
    for i in 1..=5 {
        let r = if i % 2 == 0 { &a } else { &b };
        assert_eq!(seq_of(&bus, r, numbered(i)).await, i as u64);
    }
    assert_eq!(bus.stored_messages(), 3);
    assert!(bus.fetch(&b, 1).await.unwrap().is_none());
    assert!(bus.fetch(&a, 2).await.unwrap().is_none());
    assert_eq!(number_of(&bus.fetch(&b, 3).await.unwrap().unwrap()), 3);
    // A replay from before what is retained says so rather than skip.
    for from in [0, 1, 2] {
        assert!(matches!(
            replay(&bus, &[a.clone(), b.clone()], from, 100).await,
            Err(BusError::Trimmed(_))
        ));
    }
    let all = replay(&bus, &[a, b], 3, 100).await.unwrap();
    let seqs: Vec<_> = all.iter().map(|m| m.seq.unwrap()).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
}

#[tokio::test]
async fn retention_drops_messages_older_than_max_age() {
    let bus = InProcessBus::with_limits(InProcessLimits {
        max_age: Duration::from_millis(150),
        ..InProcessLimits::default()
    });
    let r = room("channel:age");
    seq_of(&bus, &r, numbered(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    seq_of(&bus, &r, numbered(2)).await;
    assert!(bus.fetch(&r, 1).await.unwrap().is_none());
    assert!(bus.fetch(&r, 2).await.unwrap().is_some());
    assert_eq!(bus.stored_messages(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        replay(&bus, std::slice::from_ref(&r), 1, 10).await,
        Err(BusError::Trimmed(_))
    ));
    assert!(replay(&bus, &[r], 3, 10).await.unwrap().is_empty());
    assert_eq!(bus.stored_messages(), 0);
}

#[tokio::test]
async fn volatile_messages_are_delivered_but_not_stored() {
    let bus = InProcessBus::default();
    let r = room("channel:v");
    let mut sub = bus.subscribe(&r).await.unwrap();
    let p = bus.publish(&r, numbered(1).into_volatile()).await.unwrap();
    assert_eq!(p, Published::default());
    let m = next(&mut sub).await;
    assert!(m.volatile && m.seq.is_none());
    assert_eq!(bus.stored_messages(), 0);
    // The next durable message still gets sequence 1.
    assert_eq!(seq_of(&bus, &r, numbered(2)).await, 1);
    assert_eq!(replay(&bus, &[r], 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn fetch_checks_the_room_and_the_sequence() {
    let bus = InProcessBus::default();
    let (a, b) = (room("channel:a"), room("dm:b"));
    let sa = seq_of(&bus, &a, numbered(1).with_msg_id("x-1")).await;
    let sb = seq_of(&bus, &b, numbered(2)).await;

    let m = bus.fetch(&a, sa).await.unwrap().expect("stored");
    assert_eq!(
        (
            &*m.event,
            number_of(&m),
            m.seq,
            m.msg_id.as_deref(),
            m.volatile
        ),
        ("message:new", 1, Some(sa), Some("x-1"), false)
    );
    assert_fetch_checks_the_room(&bus, (&a, sa), (&b, sb)).await;
    assert!(bus.fetch(&a, 99).await.unwrap().is_none());
    assert!(bus.fetch(&a, u64::MAX).await.unwrap().is_none());
}

#[tokio::test]
async fn replay_returns_the_rooms_messages_from_a_sequence_in_order() {
    let bus = InProcessBus::default();
    let (a, b, c, empty) = (
        room("channel:a"),
        room("channel:b"),
        room("channel:c"),
        room("channel:empty"),
    );
    // seq 1..=9: a, b, c, a, b, c, ...
    for i in 1..=9usize {
        let r = [&a, &b, &c][(i - 1) % 3];
        seq_of(&bus, r, numbered(i)).await;
    }
    let seqs = |v: Vec<BusMessage>| v.iter().map(|m| m.seq.unwrap()).collect::<Vec<_>>();

    let got = replay(&bus, &[b.clone(), a.clone(), empty.clone()], 3, 100)
        .await
        .unwrap();
    assert_eq!(seqs(got.clone()), vec![4, 5, 7, 8]);
    assert!(got.iter().all(|m| number_of(m) == m.seq.unwrap() as usize));

    assert_eq!(
        seqs(replay(&bus, &[a.clone(), b.clone()], 0, 3).await.unwrap()),
        vec![1, 2, 4]
    );
    assert_eq!(
        seqs(replay(&bus, &[c.clone(), c.clone()], 1, 100).await.unwrap()),
        vec![3, 6, 9]
    );
    assert_nothing_to_find(&bus, &a, &empty).await;
    assert!(
        replay(&bus, std::slice::from_ref(&a), 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_lagged_subscriber_is_repaired_from_the_log() {
    let skipped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&skipped);
    let bus = InProcessBus::new(
        4,
        Arc::new(move |n| {
            counter.fetch_add(n, Ordering::Relaxed);
        }),
    );
    let (r, other) = (room("channel:lag"), room("channel:other"));
    // Stored before subscribing: not delivered.
    seq_of(&bus, &r, numbered(0)).await;
    let mut sub = bus.subscribe(&r).await.unwrap();
    // Far more than the live buffer, interleaved with another room's and
    // with volatile messages.
    for i in 1..=3000 {
        seq_of(&bus, &r, numbered(i)).await;
        seq_of(&bus, &other, numbered(100_000 + i)).await;
        if i % 500 == 0 {
            bus.publish(&r, numbered(0).into_volatile()).await.unwrap();
        }
    }
    let mut durable = Vec::new();
    while durable.len() < 3000 {
        let m = next(&mut sub).await;
        // Volatile ones are delivered only if still in the live buffer.
        if !m.volatile {
            durable.push(m);
        }
    }
    let numbers: Vec<_> = durable.iter().map(number_of).collect();
    assert_eq!(
        numbers,
        (1..=3000).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert!(durable.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(skipped.load(Ordering::Relaxed) > 0, "lag was reported");

    // Nothing twice, and live delivery goes on.
    let seq = seq_of(&bus, &r, numbered(3001)).await;
    let tail = loop {
        let m = next(&mut sub).await;
        if !m.volatile {
            break m;
        }
    };
    assert_eq!((number_of(&tail), tail.seq), (3001, Some(seq)));
    assert_quiet(&mut sub).await;
}

async fn conformance_bus(capacity: usize) -> ((), InProcessBus) {
    let limits = InProcessLimits {
        capacity,
        ..InProcessLimits::default()
    };
    ((), InProcessBus::with_limits(limits))
}

conformance_suite!(conformance_bus);

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Every connected user has a subscription of their own `user:{id}` room,
/// so an idle subscription must cost little: a broadcast channel per room
/// allocated its whole live buffer (4,096 messages, ~450 KiB) up front,
/// 900 MiB for these 2,000. A subscription dropped leaves nothing behind,
/// even in a room nobody publishes to again.
#[tokio::test]
async fn idle_subscriptions_are_small_and_leave_nothing_behind() {
    let bus = InProcessBus::default();
    assert_eq!(bus.limits().capacity, 4096);
    let before = rss_kib();
    let mut subs = Vec::new();
    for i in 0..2000 {
        subs.push(
            bus.subscribe(&room(&format!("user:idle-{i}")))
                .await
                .unwrap(),
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "2,000 idle subscriptions took {grown} KiB"
    );
    assert_eq!(bus.subscribed_rooms(), 2000);
    // Still live: a publish reaches its room's subscriber.
    let r = room("user:idle-7");
    let seq = seq_of(&bus, &r, numbered(7)).await;
    assert_eq!(next(&mut subs[7]).await.seq, Some(seq));
    drop(subs);
    assert_eq!(bus.subscribed_rooms(), 0);
}
