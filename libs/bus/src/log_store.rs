//! The [`LogStore`] port: where the in-process bus keeps its durable log so
//! that it survives a restart of the process, sequence included.
//!
//! The all-in-one's log has to outlive the process because its projections
//! (message history) keep their checkpoints in a database that does: a log
//! that restarted at sequence 1 would make every new message look already
//! projected. The port keeps `confab-bus` free of any database; the SQL
//! adapter lives with the membership service's SQL (`sql/bus_log.rs`).

use async_trait::async_trait;
use confab_events::RoomId;

use crate::BusError;

/// One durable message as a [`LogStore`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its sequence in the log.
    pub seq: u64,
    /// The room it was published to.
    pub room: RoomId,
    /// Socket.IO event name.
    pub event: String,
    /// The arguments, a JSON array.
    pub args_json: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// De-duplication id, if any.
    pub msg_id: Option<String>,
    /// When it was stored, Unix milliseconds (for retention by age and the
    /// de-duplication window after a restart).
    pub stored_at_ms: u64,
}

/// What [`LogStore::open`] finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedLog {
    /// The log's identity, created by the first open and kept from then on.
    pub log_id: String,
    /// The last sequence ever stored (also when its record was trimmed
    /// since); the next message gets `last_seq + 1`.
    pub last_seq: u64,
    /// The retained records, oldest first, with consecutive sequences
    /// ending at `last_seq` (or none).
    pub records: Vec<LogRecord>,
}

/// Durable storage of the in-process bus's log.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Opens the log (creating it, with a new identity, when there is none):
    /// its identity, last sequence and the records stored at or after
    /// `since_ms` (Unix ms), at most the newest `max`.
    async fn open(&self, since_ms: u64, max: usize) -> Result<LoadedLog, BusError>;
    /// Stores one record durably; the bus delivers it only after this
    /// returned `Ok`.
    async fn append(&self, record: &LogRecord) -> Result<(), BusError>;
    /// Drops the records below sequence `first_seq` (retention); the last
    /// sequence stays known.
    async fn trim(&self, first_seq: u64) -> Result<(), BusError>;
}
