//! The bus conformance suite: the same tests for every [`Bus`]
//! implementation. A test file instantiates it with
//! `conformance_suite!(async_fn_making_a_bus)` where the maker takes a
//! live buffer size per subscription and returns `(guard, bus)` (the
//! guard keeps a server alive).

use std::time::Duration;

use confab_bus::{Bus, BusMessage, BusSubscription};
use confab_events::RoomId;
use futures::StreamExt;

use super::{number_of, numbered};

const WAIT: Duration = Duration::from_secs(10);

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

async fn next(sub: &mut BusSubscription) -> BusMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a bus message")
        .expect("subscription ended")
}

async fn seq_of<B: Bus + ?Sized>(bus: &B, r: &RoomId, msg: BusMessage) -> u64 {
    let p = bus.publish(r, msg).await.unwrap();
    assert!(!p.duplicate);
    p.seq.expect("durable messages get a sequence")
}

/// Sequences are global and increasing; a duplicate `msg_id` stores
/// nothing and answers the first sequence; `fetch` checks the room.
pub async fn publish_dedup_sequence<B: Bus + ?Sized>(bus: &B) {
    let (a, b) = (room("channel:conf-a"), room("channel:conf-b"));
    let s1 = seq_of(bus, &a, numbered(1).with_msg_id("conf-1")).await;
    let s2 = seq_of(bus, &b, numbered(2)).await;
    let again = bus
        .publish(&a, numbered(99).with_msg_id("conf-1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, Some(s1));
    let s3 = seq_of(bus, &a, numbered(3)).await;
    assert!(s1 < s2 && s2 < s3, "{s1} {s2} {s3}");
    assert_eq!(number_of(&bus.fetch(&a, s1).await.unwrap().unwrap()), 1);
    assert_eq!(number_of(&bus.fetch(&b, s2).await.unwrap().unwrap()), 2);
    assert!(
        bus.fetch(&a, s2).await.unwrap().is_none(),
        "another room's seq"
    );
    assert!(bus.fetch(&a, 0).await.unwrap().is_none());
    let info = bus.log_info().await.unwrap();
    assert_eq!(info.last_seq, s3);
    assert!(bus.high_water() >= s3);
    assert_eq!(bus.refresh_high_water().await.unwrap(), s3);
}

/// Live messages arrive in order with their sequences; volatile ones
/// arrive without; other rooms' messages do not arrive.
pub async fn live_order<B: Bus + ?Sized>(bus: &B) {
    let (a, b) = (room("channel:live-a"), room("channel:live-b"));
    let mut sub = bus.subscribe(&a).await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(seq_of(bus, &a, numbered(i)).await);
        seq_of(bus, &b, numbered(1000 + i)).await;
    }
    bus.publish(&a, numbered(20).into_volatile()).await.unwrap();
    for (i, seq) in seqs.iter().enumerate() {
        let m = next(&mut sub).await;
        assert_eq!((number_of(&m), m.seq), (i, Some(*seq)));
    }
    let v = next(&mut sub).await;
    assert_eq!((number_of(&v), v.seq), (20, None));
}

/// Replays merge the asked rooms by sequence, start at the offset, stop
/// at `max`, and find nothing past the end.
pub async fn replay_order_and_bounds<B: Bus + ?Sized>(bus: &B) {
    let rooms = [
        room("channel:rp-a"),
        room("channel:rp-b"),
        room("channel:rp-c"),
    ];
    let mut seqs = Vec::new();
    for i in 0..12 {
        seqs.push(seq_of(bus, &rooms[i % 3], numbered(i)).await);
    }
    let asked = &rooms[..2];
    let got = super::replay(bus, asked, seqs[3], 100).await.unwrap();
    let numbers: Vec<usize> = got.iter().map(number_of).collect();
    assert_eq!(numbers, vec![3, 4, 6, 7, 9, 10]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    let bounded = super::replay(bus, asked, seqs[3], 2).await.unwrap();
    assert_eq!(
        bounded.iter().map(number_of).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let past = super::replay(bus, asked, seqs[11] + 1, 100).await.unwrap();
    assert!(past.is_empty());
    super::assert_nothing_to_find(bus, &rooms[0], &room("channel:rp-empty")).await;
}

/// `tail` reads the stored log in order, then what is stored later.
pub async fn tail_then_live<B: Bus + ?Sized>(bus: &B) {
    let (a, b) = (room("channel:tail-a"), room("channel:tail-b"));
    let first = seq_of(bus, &a, numbered(0)).await;
    seq_of(bus, &b, numbered(1)).await;
    let mut tail = bus.tail(first).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let item = tokio::time::timeout(WAIT, tail.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((item.room.to_string(), number_of(&item.msg)));
    }
    // The tail waits through a quiet log longer than any client-side
    // request timeout, then gets what is stored.
    let later = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        seq_of(bus, &b, numbered(2)).await
    };
    let (item, _) = tokio::join!(tokio::time::timeout(WAIT, tail.next()), later);
    let item = item.unwrap().unwrap().unwrap();
    got.push((item.room.to_string(), number_of(&item.msg)));
    assert_eq!(
        got,
        vec![
            ("channel:tail-a".into(), 0),
            ("channel:tail-b".into(), 1),
            ("channel:tail-b".into(), 2)
        ]
    );
}

/// A subscriber that does not read while more than its buffer is
/// published (`capacity` below 50) still gets every message, in order:
/// the bus repairs what it dropped, also when nothing follows the loss.
pub async fn a_slow_subscriber_is_repaired<B: Bus + ?Sized>(bus: &B) {
    let r = room("channel:slow");
    let mut sub = bus.subscribe(&r).await.unwrap();
    // One message read first: the feed is settled (subscribed, caught up)
    // before the burst.
    seq_of(bus, &r, numbered(0)).await;
    assert_eq!(number_of(&next(&mut sub).await), 0);
    for i in 1..200 {
        seq_of(bus, &r, numbered(i)).await;
    }
    // Let the live messages reach (and overflow) the subscriber's buffer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 1..200 {
        assert_eq!(number_of(&next(&mut sub).await), i);
    }
}

/// A binary event (attachments, any bytes) is a durable event like any
/// other: a sequence, live with its attachments, stored (fetch, replay,
/// tail) with them intact.
pub async fn binary_events_are_stored_with_their_attachments<B: Bus + ?Sized>(bus: &B) {
    let r = room("channel:binary");
    let blobs: [&[u8]; 2] = [&[0, 1, 2, 255, b',', b'\n'], &[]];
    let msg = BusMessage::from_args_json(
        "app:bin",
        r#"[{"_placeholder":true,"num":0},{"f":{"_placeholder":true,"num":1}}]"#.into(),
    )
    .with_attachments(&blobs);
    let want: Vec<bytes::Bytes> = blobs
        .iter()
        .map(|b| bytes::Bytes::copy_from_slice(b))
        .collect();
    let mut sub = bus.subscribe(&r).await.unwrap();
    let seq = seq_of(bus, &r, msg.clone()).await;
    let live = next(&mut sub).await;
    assert_eq!(live.seq, Some(seq));
    assert_eq!(live.attachments().unwrap().as_ref(), Some(&want), "live");
    assert_eq!(&*live.args_json, &*msg.args_json);
    let fetched = bus.fetch(&r, seq).await.unwrap().expect("stored");
    assert_eq!(
        fetched.attachments().unwrap().as_ref(),
        Some(&want),
        "fetch"
    );
    let replayed = super::replay(bus, std::slice::from_ref(&r), seq, 10)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        replayed[0].attachments().unwrap().as_ref(),
        Some(&want),
        "replay"
    );
    let mut tail = bus.tail(seq).await.unwrap();
    let item = tokio::time::timeout(WAIT, tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(item.msg.seq, Some(seq));
    assert_eq!(
        item.msg.attachments().unwrap().as_ref(),
        Some(&want),
        "tail"
    );
}

/// One `#[tokio::test]` per conformance test for the bus `$make` builds
/// (an async fn of a subscription buffer size returning `(guard, bus)`).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        mod conformance {
            use super::*;
            #[tokio::test]
            async fn publish_dedup_sequence() {
                let (_guard, bus) = $make(1 << 16).await;
                common::conformance::publish_dedup_sequence(&bus).await;
            }
            #[tokio::test]
            async fn live_order() {
                let (_guard, bus) = $make(1 << 16).await;
                common::conformance::live_order(&bus).await;
            }
            #[tokio::test]
            async fn replay_order_and_bounds() {
                let (_guard, bus) = $make(1 << 16).await;
                common::conformance::replay_order_and_bounds(&bus).await;
            }
            #[tokio::test]
            async fn a_slow_subscriber_is_repaired() {
                let (_guard, bus) = $make(16).await;
                common::conformance::a_slow_subscriber_is_repaired(&bus).await;
            }
            #[tokio::test]
            async fn binary_events_are_stored_with_their_attachments() {
                let (_guard, bus) = $make(1 << 16).await;
                common::conformance::binary_events_are_stored_with_their_attachments(&bus).await;
            }
            #[tokio::test]
            async fn tail_then_live() {
                let (_guard, bus) = $make(1 << 16).await;
                common::conformance::tail_then_live(&bus).await;
            }
        }
    };
}
