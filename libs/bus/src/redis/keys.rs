//! The Redis key and channel names of the bus, all under one hash tag.
//!
//! Keys (with the default prefix `confab`):
//!
//! * `{confab}:seq`: the global sequence (a counter, `INCR`).
//! * `{confab}:log`: the global log, a stream whose entry ids are
//!   `{seq}-0`; fields `r` (room), `b` (the encoded message), `t` (Redis
//!   time when stored, Unix ms, for retention by age).
//! * `{confab}:room:{room}`: one stream per room, same ids, fields `b`.
//! * `{confab}:last`: a hash room → the room's last sequence (the previous
//!   sequence of the next live message; what a subscriber catches up to
//!   after a reconnect; the rooms the retention pass trims).
//! * `{confab}:dedup:{msg_id}`: the first sequence of a `msg_id`, expiring
//!   after the duplicate window.
//! * `{confab}:log-id`: the log's identity, set once.
//! * `{confab}:first`: the first sequence still retained (set by trims).
//! * `{confab}:trim-lease`: held by the process running this interval's
//!   retention pass.
//!
//! Live channels are `{confab}:live:{room}` (not keys: `PUBLISH` reaches
//! every node of a cluster); user rooms are received through the pattern
//! `{confab}:live:user:*`. Topics (messages nobody stores: presence
//! heartbeats) are `{confab}:topic:{name}`. The gateways' session store
//! uses `{confab}:session:{pid}`, `{confab}:session-rev` and
//! `{confab}:gateway:{id}` (see the gateway's `recovery/redis.rs`).

use confab_events::RoomId;

/// The names for one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    tag: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    pub(super) fn seq(&self) -> String {
        format!("{}:seq", self.tag)
    }

    pub(super) fn log(&self) -> String {
        format!("{}:log", self.tag)
    }

    pub(super) fn last(&self) -> String {
        format!("{}:last", self.tag)
    }

    pub(super) fn log_id(&self) -> String {
        format!("{}:log-id", self.tag)
    }

    pub(super) fn first(&self) -> String {
        format!("{}:first", self.tag)
    }

    pub(super) fn trim_lease(&self) -> String {
        format!("{}:trim-lease", self.tag)
    }

    pub(super) fn room(&self, room: &RoomId) -> String {
        format!("{}:room:{room}", self.tag)
    }

    pub(super) fn dedup(&self, msg_id: &str) -> String {
        format!("{}:dedup:{msg_id}", self.tag)
    }

    pub(super) fn channel(&self, room: &RoomId) -> String {
        format!("{}:live:{room}", self.tag)
    }

    /// The pattern of every user room's live channel (the shared
    /// user-room subscription).
    pub(super) fn user_pattern(&self) -> String {
        format!("{}:live:user:*", self.tag)
    }

    /// The room of a live channel name, if it is one of ours.
    pub(super) fn room_of_channel(&self, channel: &str) -> Option<RoomId> {
        let rest = channel.strip_prefix(&self.tag)?.strip_prefix(":live:")?;
        RoomId::parse(rest).ok()
    }
}
