//! Helpers shared by the bus test suites.

use confab_bus::{Bus, BusError, BusMessage};
use confab_events::RoomId;

/// `Bus::replay`, checking that every message comes from one of `rooms`.
pub async fn replay<B: Bus>(
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
