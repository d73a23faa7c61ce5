//! Reads of the stored log: one message, a room's range, the global log's
//! bounds and pages, and the retention pass.
//!
//! Entry ids are `{seq}-0` in the room streams and in the global log, so
//! a sequence is read with `XRANGE key {seq} {seq}`.

use std::collections::HashMap;

use confab_events::RoomId;
use redis::aio::ConnectionManager;

use super::codec;
use super::keys::Keys;
use crate::{BusError, BusMessage, TailItem};

/// One entry as `XRANGE` answers it: its id and its flat field list.
type Entry = (String, Vec<Vec<u8>>);

pub(super) fn unavailable(what: &str, e: &redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis: cannot {what}: {e}"))
}

fn seq_of_id(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

fn field<'a>(fields: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    fields
        .chunks_exact(2)
        .find(|kv| kv[0] == name.as_bytes())
        .map(|kv| kv[1].as_slice())
}

async fn xrange(
    conn: &mut ConnectionManager,
    key: &str,
    from: u64,
    to: Option<u64>,
    count: usize,
) -> Result<Vec<Entry>, BusError> {
    let end = to.map_or_else(|| "+".to_owned(), |t| t.to_string());
    redis::cmd("XRANGE")
        .arg(key)
        .arg(from)
        .arg(end)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(conn)
        .await
        .map_err(|e| unavailable("read a stream", &e))
}

/// The messages of `room` with sequences in `from..=to`, at most `max`.
pub(super) async fn room_range(
    conn: &mut ConnectionManager,
    keys: &Keys,
    room: &RoomId,
    from: u64,
    to: Option<u64>,
    max: usize,
) -> Result<Vec<BusMessage>, BusError> {
    let entries = xrange(conn, &keys.room(room), from, to, max).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| codec::decode(field(&fields, "b")?, Some(seq_of_id(&id)?)))
        .collect())
}

/// The stored message `seq` of `room`, if retained.
pub(super) async fn fetch(
    conn: &mut ConnectionManager,
    keys: &Keys,
    room: &RoomId,
    seq: u64,
) -> Result<Option<BusMessage>, BusError> {
    if seq == 0 {
        return Ok(None);
    }
    Ok(room_range(conn, keys, room, seq, Some(seq), 1)
        .await?
        .into_iter()
        .next())
}

/// The global log's bounds: `(first retained, last stored)`.
pub(super) async fn bounds(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<(u64, u64), BusError> {
    let (last, first): (Option<u64>, Option<u64>) = redis::pipe()
        .get(keys.seq())
        .get(keys.first())
        .query_async(conn)
        .await
        .map_err(|e| unavailable("read the log's bounds", &e))?;
    let last = last.unwrap_or(0);
    Ok((first.unwrap_or(1).min(last + 1).max(1), last))
}

/// Up to `max` entries of the global log from `from` on.
pub(super) async fn log_page(
    conn: &mut ConnectionManager,
    keys: &Keys,
    from: u64,
    to: Option<u64>,
    max: usize,
) -> Result<(Vec<TailItem>, Option<u64>), BusError> {
    let entries = xrange(conn, &keys.log(), from, to, max).await?;
    let last_id = entries.last().and_then(|(id, _)| seq_of_id(id));
    let items = entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let room = RoomId::parse(std::str::from_utf8(field(&fields, "r")?).ok()?).ok()?;
            let msg = codec::decode(field(&fields, "b")?, Some(seq_of_id(&id)?))?;
            Some(TailItem { room, msg })
        })
        .collect();
    Ok((items, last_id))
}

/// The stored messages of `rooms` with sequences in `from..=to`, merged by
/// sequence, at most `max`: each room's stream is read (never the whole
/// log), at most `max` per room.
pub(super) async fn replay(
    conn: &mut ConnectionManager,
    keys: &Keys,
    rooms: &[RoomId],
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<TailItem>, BusError> {
    let mut pipe = redis::pipe();
    for room in rooms {
        pipe.cmd("XRANGE")
            .arg(keys.room(room))
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(max);
    }
    let per_room: Vec<Vec<Entry>> = pipe
        .query_async(conn)
        .await
        .map_err(|e| unavailable("replay room streams", &e))?;
    let mut items: HashMap<u64, TailItem> = HashMap::new();
    for (room, entries) in rooms.iter().zip(per_room) {
        for (id, fields) in entries {
            let Some(seq) = seq_of_id(&id) else { continue };
            let Some(msg) = field(&fields, "b").and_then(|b| codec::decode(b, Some(seq))) else {
                continue;
            };
            items.insert(
                seq,
                TailItem {
                    room: room.clone(),
                    msg,
                },
            );
        }
    }
    let mut items: Vec<TailItem> = items.into_values().collect();
    items.sort_by_key(|i| i.msg.seq);
    items.truncate(max);
    Ok(items)
}

/// The first sequence stored at or after `cutoff_ms` (Unix ms), by a
/// binary search over the global log (entries carry their storage time);
/// `None` when every entry is older.
async fn first_seq_since(
    conn: &mut ConnectionManager,
    keys: &Keys,
    cutoff_ms: u64,
) -> Result<Option<u64>, BusError> {
    let (first, last) = bounds(conn, keys).await?;
    let (mut lo, mut hi) = (first, last + 1);
    // Invariant: every entry below `lo` is older than the cutoff; the
    // entry at `hi` (if any) is not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let page = xrange(conn, &keys.log(), mid, None, 1).await?;
        let Some((id, fields)) = page.into_iter().next() else {
            hi = mid;
            continue;
        };
        let seq = seq_of_id(&id).unwrap_or(mid);
        let at: u64 = field(&fields, "t")
            .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
            .unwrap_or(0);
        if at >= cutoff_ms {
            hi = mid.min(seq);
        } else {
            lo = seq + 1;
        }
    }
    Ok((lo <= last).then_some(lo))
}

/// Drops what is older than `cutoff_ms` from the global log and every room
/// stream (`XTRIM MINID`), and records the new first sequence.
pub(super) async fn trim(
    conn: &mut ConnectionManager,
    keys: &Keys,
    cutoff_ms: u64,
) -> Result<(), BusError> {
    let (first, last) = bounds(conn, keys).await?;
    // Never move the first retained sequence back (another process with a
    // slower clock may trim too).
    let min = first_seq_since(conn, keys, cutoff_ms)
        .await?
        .unwrap_or(last + 1)
        .max(first);
    let mut cursor = 0u64;
    loop {
        let (next, pairs): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(keys.last())
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await
            .map_err(|e| unavailable("list rooms to trim", &e))?;
        let mut pipe = redis::pipe();
        let mut rooms = 0;
        for room in pairs
            .chunks_exact(2)
            .filter_map(|kv| RoomId::parse(&kv[0]).ok())
        {
            pipe.cmd("XTRIM")
                .arg(keys.room(&room))
                .arg("MINID")
                .arg(min)
                .ignore();
            rooms += 1;
        }
        // HSCAN may answer a page with no entries (an empty hash, or any
        // page of a large one): an empty pipeline is an error in redis-rs.
        if rooms > 0 {
            pipe.query_async::<()>(conn)
                .await
                .map_err(|e| unavailable("trim room streams", &e))?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    redis::pipe()
        .cmd("XTRIM")
        .arg(keys.log())
        .arg("MINID")
        .arg(min)
        .ignore()
        .set(keys.first(), min)
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(|e| unavailable("trim the log", &e))
}
