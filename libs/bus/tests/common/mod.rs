//! Helpers shared by the bus test suites.
// Each test crate uses a part of these helpers.
#![allow(dead_code)]

pub mod conformance;

use confab_bus::{Bus, BusError, BusMessage};
use confab_events::RoomId;

/// A `message:new` whose argument is `{"n": i}`.
pub fn numbered(i: usize) -> BusMessage {
    BusMessage::new("message:new", &serde_json::json!({ "n": i }))
}

/// The `n` of a [`numbered`] message.
pub fn number_of(m: &BusMessage) -> usize {
    let args: serde_json::Value = serde_json::from_str(&m.args_json).unwrap();
    args[0]["n"].as_u64().unwrap() as usize
}

/// `Bus::replay`, checking that every message comes from one of `rooms`.
pub async fn replay<B: Bus + ?Sized>(
    bus: &B,
    rooms: &[RoomId],
    from: u64,
    max: usize,
) -> Result<Vec<BusMessage>, BusError> {
    let items = bus.replay(rooms, from, max).await?;
    for item in &items {
        assert!(rooms.contains(&item.room), "{} not asked for", item.room);
    }
    Ok(items.into_iter().map(|item| item.msg).collect())
}

/// Replays that find nothing: an empty room, no rooms, and no room
/// (`room` holds messages) with room for none.
pub async fn assert_nothing_to_find<B: Bus + ?Sized>(bus: &B, room: &RoomId, empty: &RoomId) {
    let empty_room = replay(bus, std::slice::from_ref(empty), 0, 100).await;
    assert!(empty_room.unwrap().is_empty());
    assert!(replay(bus, &[], 0, 100).await.unwrap().is_empty());
    let none_wanted = replay(bus, std::slice::from_ref(room), 0, 0).await;
    assert!(none_wanted.unwrap().is_empty());
}

/// `fetch` finds the message [`numbered`] 2 at
/// `sb` in `b`, and finds nothing at the other room's sequence (`sa` is
/// `a`'s) or at 0.
pub async fn assert_fetch_checks_the_room<B: Bus + ?Sized>(
    bus: &B,
    (a, sa): (&RoomId, u64),
    (b, sb): (&RoomId, u64),
) {
    assert_eq!(number_of(&bus.fetch(b, sb).await.unwrap().unwrap()), 2);
    assert!(
        bus.fetch(a, sb).await.unwrap().is_none(),
        "another room's seq"
    );
    assert!(
        bus.fetch(b, sa).await.unwrap().is_none(),
        "another room's seq"
    );
    assert!(bus.fetch(a, 0).await.unwrap().is_none());
}
