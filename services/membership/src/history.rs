//! Message history: the `messages` projection of the room events of the
//! bus log ([`HistoryProjector`]) and the calls on it ([`History`]:
//! paginated history for members, edit and delete by those allowed).
//!
//! The projector tails the bus ([`Bus::tail`]) from its checkpoint + 1 and
//! applies `message:new` (insert), `message:updated` (body, `updated_at`)
//! and `message:deleted` (`deleted`, body cleared). It applies them in
//! batches (the events the tail has ready, up to [`MAX_BATCH_ITEMS`]; while
//! events keep coming, also those arriving within [`LINGER`]), each
//! batch in one transaction together with the checkpoint row
//! `projection_checkpoints(name = 'history')`, so a restart never applies
//! an event twice. Other events have no effect; they only move the
//! checkpoint along with the message events of their batch.
//!
//! The SQL (the table, its checkpoint row, the queries) lives in
//! [`crate::sql`] (`sql/history.rs`).
//!
//! **Log identity.** A checkpoint is a sequence of one log. The checkpoint
//! row records which ([`LogInfo::id`]: stream `ROOMS`'s creation time on
//! NATS, the stored log's id in the all-in-one), and before every tail
//! [`HistoryProjector::check_log`] refuses a checkpoint of another log (a
//! NATS store wiped under a kept read model) or one ahead of the log's last
//! sequence ([`LogMismatch`]): tailing from it would take new messages for
//! already projected ones and drop them. The operator rebuilds the
//! projection (see [`LogMismatch`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_bus::{AdaptiveTimeout, Bus, BusError, BusMessage, BusTail, LogInfo, TailItem};
use confab_events::socket::{MessageDeleted, names};
use confab_events::{RoomId, RoomKind, UserId};
use futures::{FutureExt, StreamExt};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::health::{Health, ProjectionState};
use crate::read_model::ReadModel;
pub use crate::sql::HISTORY_PROJECTION;
use crate::sql::{MessageTable, StoredMessage, is_message_event};

/// Most messages in one history page.
pub const MAX_PAGE: u64 = 100;

/// Longest message body, bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// How long an edit or delete waits for a not yet projected message.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// Most producer links of one batch span (the SDK's default span limit).
const MAX_LINKS: usize = 128;

/// Most items [`HistoryProjector::run`] applies in one transaction.
pub const MAX_BATCH_ITEMS: usize = 256;

/// [`HistoryProjector::run`] takes no more items into a batch once their
/// arguments (JSON) add up to this many bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// While the projector is busy (its last batch was applied less than
/// [`BUSY`] ago), a batch waits up to this long for more events before it
/// is applied. Each transaction costs a fixed set of statements (begin,
/// checkpoint read and write, commit) and, on SQLite, a hand-off to the
/// driver's worker thread for each: at a few hundred messages a second,
/// arriving one by one, that fixed cost was most of the projector's CPU
/// (issue #18). An idle projector applies an event at once.
pub const LINGER: Duration = Duration::from_millis(5);

/// How recent the last batch must be for the next one to linger.
const BUSY: Duration = Duration::from_millis(50);

const RETRY_MIN: Duration = Duration::from_millis(100);
/// Short: a failure is often a lost consumer or a restarted server that is
/// back a moment later, and a retry costs one query.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A failure of a history call; [`code`](Self::code) is the wire code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// No such message in that room (or not projected yet: retry).
    #[error(
        "no message {0} in this room (a message sent a moment ago may not be projected yet; retry)"
    )]
    NotFound(String),
    /// The user may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The new body is empty or too large.
    #[error("{0}")]
    InvalidBody(String),
    /// The request is malformed (room, cursor, limit).
    #[error("{0}")]
    Invalid(String),
    /// The room is an archived channel: read-only.
    #[error("{0} is archived: it is read-only (no sends, edits or deletes)")]
    Archived(String),
    /// The database, read model or bus failed; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl HistoryError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::InvalidBody(_) => "invalid_body",
            Self::Invalid(_) => "invalid_request",
            Self::Archived(_) => "archived",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<DbErr> for HistoryError {
    fn from(e: DbErr) -> Self {
        Self::Unavailable(format!("history database: {e}"))
    }
}

/// What an operator does about a [`LogMismatch`].
const REBUILD: &str = "rebuild the history projection: stop the membership service, delete \
     every row of table `messages` and the row `history` of `projection_checkpoints`, and \
     start it again (it projects the log from its first retained message)";

/// Why the history projection refuses to tail the bus log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogMismatch {
    /// The checkpoint counts sequences of another log.
    #[error(
        "the history projection's checkpoint (row `history` of projection_checkpoints, at \
         {checkpoint}) belongs to log {checkpoint_log}, but the bus log is {log}: {REBUILD}"
    )]
    OtherLog {
        /// The checkpoint.
        checkpoint: u64,
        /// The log it belongs to.
        checkpoint_log: String,
        /// The bus's log.
        log: String,
    },
    /// The checkpoint is past the log's last sequence.
    #[error(
        "the history projection's checkpoint (row `history` of projection_checkpoints, at \
         {checkpoint}) is ahead of the bus log {log}, whose last sequence is {last}; the log was \
         reset or replaced: {REBUILD}"
    )]
    Ahead {
        /// The checkpoint.
        checkpoint: u64,
        /// The bus's log.
        log: String,
        /// The log's last sequence.
        last: u64,
    },
}

impl LogMismatch {
    /// Checks checkpoint `checkpoint` of log `checkpoint_log` (`None`: not
    /// bound yet) against `log`.
    pub fn check(
        checkpoint: u64,
        checkpoint_log: Option<&str>,
        log: &LogInfo,
    ) -> Result<(), LogMismatch> {
        if let Some(other) = checkpoint_log.filter(|id| *id != log.id) {
            return Err(LogMismatch::OtherLog {
                checkpoint,
                checkpoint_log: other.to_owned(),
                log: log.id.clone(),
            });
        }
        if checkpoint > log.last_seq {
            return Err(LogMismatch::Ahead {
                checkpoint,
                log: log.id.clone(),
                last: log.last_seq,
            });
        }
        Ok(())
    }
}

/// Why [`HistoryProjector::check_log`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// The checkpoint does not belong to the bus log: the projection must
    /// not run until rebuilt.
    #[error(transparent)]
    Mismatch(#[from] LogMismatch),
    /// The log no longer holds messages after the checkpoint: they were
    /// dropped by retention before they were projected.
    #[error("{0}")]
    Trimmed(String),
    /// The database or the bus could not be read; retrying may work.
    #[error("{0}")]
    Unavailable(String),
}

/// The reason of a [`CheckError::Trimmed`]: what was lost, and what the
/// operator does.
fn trimmed_reason(checkpoint: u64, what: &str) -> String {
    format!(
        "the history projection (checkpoint `history` at {checkpoint}) cannot resume: {what}; \
         those messages are missing from history. Restore the log from a backup, or accept the \
         loss: set the `history` row of projection_checkpoints to the log's first sequence - 1 \
         (see README, \"Operations\")"
    )
}

pub use confab_contracts::messages::{
    ChangeAck, DeleteRequest, EditRequest, HistoryPage, HistoryRequest, subjects,
};

/// Applies message events of the bus log to the `messages` table.
/// Cheap to clone; clones share the progress signal.
#[derive(Clone)]
pub struct HistoryProjector {
    table: MessageTable,
    bus: Arc<dyn Bus>,
    progress: Arc<watch::Sender<u64>>,
    health: Health,
    log_info_timeout: Arc<AdaptiveTimeout>,
}

impl std::fmt::Debug for HistoryProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryProjector")
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl HistoryProjector {
    /// A projector of `bus`'s log into `db` (schema up to date).
    pub fn new(db: DatabaseConnection, bus: Arc<dyn Bus>) -> Self {
        Self {
            table: MessageTable::new(db),
            bus,
            progress: Arc::new(watch::channel(0).0),
            health: Health::default(),
            log_info_timeout: Arc::new(AdaptiveTimeout::log_setup()),
        }
    }

    /// Reports the projector's state ([`HISTORY_PROJECTION`]) to `health`.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// The last bus sequence this projector has seen (applied or skipped).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The checkpoint as committed (0 before the first message event).
    pub async fn checkpoint(&self) -> Result<u64, DbErr> {
        self.table.checkpoint().await
    }

    /// Checks that the checkpoint belongs to the bus's log and is not ahead
    /// of it ([`LogMismatch`]), binding a checkpoint not yet bound to the
    /// log. Returns the checkpoint. Buses without a log are not checked.
    pub async fn check_log(&self) -> Result<u64, CheckError> {
        let unavailable = |e: &dyn std::fmt::Display| CheckError::Unavailable(e.to_string());
        let (checkpoint, bound) = self.table.binding().await.map_err(|e| unavailable(&e))?;
        let wait = self.log_info_timeout.current();
        let log = self
            .log_info_timeout
            .run(self.bus.log_info())
            .await
            .unwrap_or_else(|| {
                Err(BusError::Unavailable(format!(
                    "no answer about the bus log within {wait:?}"
                )))
            });
        let log = match log {
            Ok(log) => log,
            Err(BusError::Unsupported(_)) => return Ok(checkpoint),
            Err(e) => return Err(unavailable(&e)),
        };
        LogMismatch::check(checkpoint, bound.as_deref(), &log)?;
        if checkpoint + 1 < log.first_seq && checkpoint < log.last_seq {
            return Err(CheckError::Trimmed(trimmed_reason(
                checkpoint,
                &format!(
                    "the bus log {} starts at {}: messages {} to {} were dropped by retention",
                    log.id,
                    log.first_seq,
                    checkpoint + 1,
                    log.first_seq - 1
                ),
            )));
        }
        if bound.is_none() {
            self.table
                .bind(&log.id)
                .await
                .map_err(|e| unavailable(&e))?;
            tracing::info!(log = %log.id, checkpoint, "history projection bound to the bus log");
        }
        Ok(checkpoint)
    }

    /// Applies one stored message unless it is at or below the checkpoint
    /// or not a message event. Returns whether it was applied. The same as
    /// [`apply_batch`](Self::apply_batch) of that one item.
    pub async fn apply(&self, item: &TailItem) -> Result<bool, DbErr> {
        Ok(self.apply_batch(std::slice::from_ref(item)).await? > 0)
    }

    /// Applies stored messages, in order, in one transaction with one read
    /// and one write of the checkpoint: items at or below the checkpoint
    /// (or below an earlier item of the batch) are skipped, message events
    /// above it are applied, and the checkpoint becomes the highest
    /// sequence of the batch (non-message events included). The effects
    /// are those of applying the items one by one; on a failure nothing of
    /// the batch is committed. A batch without a message event writes
    /// nothing (it only advances [`subscribe`](Self::subscribe)). Returns
    /// how many message events were applied.
    pub async fn apply_batch(&self, items: &[TailItem]) -> Result<usize, DbErr> {
        let Some(highest) = items.iter().filter_map(|i| i.msg.seq).max() else {
            return Ok(0);
        };
        if !items
            .iter()
            .any(|i| i.msg.seq.is_some() && is_message_event(&i.msg.event))
        {
            self.signal(highest);
            return Ok(0);
        }
        let span = self.batch_span(items);
        let applied = self.table.apply_batch(items).instrument(span).await?;
        self.signal(highest);
        Ok(applied)
    }

    /// The consumer span of one batch (`process in.rooms`, when spans are
    /// exported): linked to the producer span of each message event in it
    /// (at most [`MAX_LINKS`]); each row's SQL write is a child of its
    /// message's producer span and links back to this span
    /// (`sql/history.rs`), so the trace of a `message:send` reaches the
    /// row while the batch's transaction and commit stay one span.
    fn batch_span(&self, items: &[TailItem]) -> tracing::Span {
        if !confab_telemetry::is_exporting() {
            return tracing::Span::none();
        }
        let system = match self.bus.status().kind {
            "nats" => confab_bus::trace::SYSTEM_NATS,
            "redis" => confab_bus::trace::SYSTEM_REDIS,
            _ => confab_bus::trace::SYSTEM_IN_PROCESS,
        };
        let span = tracing::info_span!(
            "history.process",
            otel.name = "process in.rooms",
            otel.kind = "consumer",
            messaging.system = system,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = "in.rooms",
            messaging.consumer.group.name = HISTORY_PROJECTION,
            messaging.batch.message_count = items.len(),
        );
        items
            .iter()
            .filter(|i| is_message_event(&i.msg.event))
            .filter_map(|i| confab_bus::trace::producer_of(&i.msg))
            .take(MAX_LINKS)
            .for_each(|producer| confab_telemetry::add_link(&span, producer));
        span
    }

    fn signal(&self, seq: u64) {
        self.progress.send_if_modified(|p| {
            let newer = seq > *p;
            if newer {
                *p = seq;
            }
            newer
        });
    }

    /// Tails the bus from the checkpoint + 1 and applies every message
    /// event until `shutdown` completes, in batches: each waits for one
    /// item, then takes what the tail already has ready (at most
    /// [`MAX_BATCH_ITEMS`] items, and no more once [`MAX_BATCH_BYTES`] of
    /// arguments are reached) and applies them with
    /// [`apply_batch`](Self::apply_batch). Failures are retried with
    /// backoff, resuming from the checkpoint.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut retry = RETRY_MIN;
        let mut batch = Vec::with_capacity(MAX_BATCH_ITEMS);
        let mut last_batch: Option<tokio::time::Instant> = None;
        loop {
            let result = async {
                let from = self.check_log().await? + 1;
                // Known progress from the start (lag is measured against it).
                self.signal(from - 1);
                let mut tail = self.bus.tail(from).await.map_err(|e| match e {
                    BusError::Trimmed(what) => CheckError::Trimmed(trimmed_reason(from - 1, &what)),
                    e => CheckError::Unavailable(e.to_string()),
                })?;
                self.health
                    .set(HISTORY_PROJECTION, ProjectionState::Running);
                loop {
                    let item = tokio::select! {
                        () = shutdown.as_mut() => return Ok(()),
                        item = tail.next() => item,
                    };
                    let now = tokio::time::Instant::now();
                    let linger = last_batch
                        .is_some_and(|t| now.duration_since(t) < BUSY)
                        .then(|| now + LINGER);
                    // Not raced against shutdown (a batch is applied whole;
                    // the linger is bounded). Items received before a tail
                    // failure are applied first.
                    let end = fill_batch(&mut tail, item, &mut batch, linger).await;
                    self.apply_batch(&batch)
                        .await
                        .map_err(|e| CheckError::Unavailable(e.to_string()))?;
                    last_batch = Some(tokio::time::Instant::now());
                    if let Some(error) = end {
                        return Err(CheckError::Unavailable(error));
                    }
                    self.health
                        .set(HISTORY_PROJECTION, ProjectionState::Running);
                    retry = RETRY_MIN;
                }
            }
            .await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    let reason = error.to_string();
                    let state = match error {
                        CheckError::Mismatch(_) => {
                            tracing::error!(%error, "history projection refuses to run");
                            ProjectionState::Stopped { reason }
                        }
                        CheckError::Trimmed(_) => {
                            tracing::error!(%error, "history projection cannot resume");
                            self.health.count_trimmed();
                            ProjectionState::Stopped { reason }
                        }
                        CheckError::Unavailable(_) => {
                            tracing::warn!(%error, retry_in = ?retry, "history projector failed; retrying");
                            ProjectionState::Failing { reason }
                        }
                    };
                    self.health.set(HISTORY_PROJECTION, state);
                }
            }
            tokio::select! {
                () = shutdown.as_mut() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

/// Replaces `batch` with `first` and the items `tail` has ready, up to
/// [`MAX_BATCH_ITEMS`] / [`MAX_BATCH_BYTES`]; with `linger`, also the items
/// that arrive before that instant. Returns the tail's failure (or end)
/// when it came before the batch was full; the items before it are in
/// `batch`.
async fn fill_batch(
    tail: &mut BusTail,
    first: Option<Result<TailItem, BusError>>,
    batch: &mut Vec<TailItem>,
    linger: Option<tokio::time::Instant>,
) -> Option<String> {
    batch.clear();
    let mut bytes = 0;
    let mut next = first;
    loop {
        match next {
            Some(Ok(item)) => {
                bytes += item.msg.args_json.len();
                batch.push(item);
            }
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("bus tail ended".to_owned()),
        }
        if batch.len() >= MAX_BATCH_ITEMS || bytes >= MAX_BATCH_BYTES {
            return None;
        }
        // Ready now, or by the linger's end, or not part of this batch.
        // (`next` is cancel-safe: the run loop races it against shutdown too.)
        next = match tail.next().now_or_never() {
            Some(ready) => ready,
            None => tokio::time::timeout_at(linger?, tail.next()).await.ok()?,
        };
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The history calls: queries on the projection, edits and deletes
/// published to the room through the bus.
#[derive(Clone)]
pub struct History {
    table: MessageTable,
    bus: Arc<dyn Bus>,
    read: Arc<dyn ReadModel>,
    progress: watch::Receiver<u64>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

impl History {
    /// Calls on `projector`'s table, with `read` for membership.
    pub fn new(projector: &HistoryProjector, read: Arc<dyn ReadModel>) -> Self {
        Self {
            table: projector.table.clone(),
            bus: Arc::clone(&projector.bus),
            read,
            progress: projector.subscribe(),
        }
    }

    fn parse(user: &str, room: &str) -> Result<(UserId, RoomId), HistoryError> {
        let user =
            UserId::parse(user).map_err(|e| HistoryError::Invalid(format!("invalid user: {e}")))?;
        let room =
            RoomId::parse(room).map_err(|e| HistoryError::Invalid(format!("invalid room: {e}")))?;
        if !matches!(room.kind(), RoomKind::Channel | RoomKind::Dm) {
            return Err(HistoryError::Invalid(format!(
                "messages live in channel: or dm: rooms, not {room}"
            )));
        }
        Ok((user, room))
    }

    async fn member(&self, user: &UserId, room: &RoomId) -> Result<(), HistoryError> {
        match self.read.is_member(user, room).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(HistoryError::Forbidden(format!(
                "{user} is not a member of {room}"
            ))),
            Err(e) => Err(HistoryError::Unavailable(e.to_string())),
        }
    }

    /// A page of `room`'s messages, newest first, older than `before`, for
    /// a member of the room only.
    pub async fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, HistoryError> {
        let (user, room) = Self::parse(&req.user, &req.room)?;
        let limit = req.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(HistoryError::Invalid(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        let before = match &req.before {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                HistoryError::Invalid("before must be a nextCursor of a previous page".into())
            })?),
        };
        self.member(&user, &room).await?;
        let mut rows = self.table.newest(&room, before, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| r.seq.to_string())
        } else {
            None
        };
        Ok(HistoryPage {
            messages: rows.into_iter().map(|r| r.message).collect(),
            next_cursor,
        })
    }

    /// The projected message `id` of `room`, waiting a little for the
    /// projection when it is not there yet.
    async fn lookup(&self, room: &RoomId, id: &str) -> Result<StoredMessage, HistoryError> {
        let mut progress = self.progress.clone();
        let deadline = tokio::time::Instant::now() + LOOKUP_WAIT;
        loop {
            progress.borrow_and_update();
            let row = self.table.find(room, id).await?;
            match row {
                Some(row) if row.deleted => return Err(HistoryError::NotFound(id.to_owned())),
                Some(row) => return Ok(row),
                None => {}
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(HistoryError::NotFound(id.to_owned())),
            }
        }
    }

    /// Refuses a change in an archived channel: the archive is read-only.
    async fn writable(&self, room: &RoomId) -> Result<(), HistoryError> {
        if room.kind() == RoomKind::Channel && self.table.is_archived_channel(room.id()).await? {
            return Err(HistoryError::Archived(room.to_string()));
        }
        Ok(())
    }

    /// Whether `user` is an owner or admin of the workspace of channel
    /// `room`.
    async fn is_channel_admin(&self, user: &UserId, room: &RoomId) -> Result<bool, HistoryError> {
        if room.kind() != RoomKind::Channel {
            return Ok(false);
        }
        Ok(self.table.is_workspace_admin_of(room.id(), user).await?)
    }

    /// Waits (at most [`LOOKUP_WAIT`]) until the projection got past `seq`.
    async fn projected(&self, seq: u64) {
        let mut progress = self.progress.clone();
        let _ = tokio::time::timeout(LOOKUP_WAIT, progress.wait_for(|p| *p >= seq)).await;
    }

    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<u64, HistoryError> {
        let published = self
            .bus
            .publish(room, msg)
            .await
            .map_err(|e| HistoryError::Unavailable(format!("not stored ({e}); retry")))?;
        published
            .seq
            .ok_or_else(|| HistoryError::Unavailable("the bus did not store the event".into()))
    }

    /// Edits a message: only its author, with a valid body. Publishes
    /// `message:updated` to the room and answers once it is stored and projected (or stored, after two seconds).
    pub async fn edit(&self, req: &EditRequest) -> Result<ChangeAck, HistoryError> {
        let (user, room) = Self::parse(&req.user, &req.room)?;
        if req.body.trim().is_empty() {
            return Err(HistoryError::InvalidBody("body is empty".into()));
        }
        if req.body.len() > MAX_BODY_BYTES {
            return Err(HistoryError::InvalidBody(format!(
                "body is {} bytes; the limit is {MAX_BODY_BYTES}",
                req.body.len()
            )));
        }
        self.writable(&room).await?;
        let row = self.lookup(&room, &req.id).await?;
        if row.message.author_id != user.as_str() {
            return Err(HistoryError::Forbidden(
                "only the author may edit a message".into(),
            ));
        }
        // An author who left (or was kicked) no longer speaks in the room.
        self.member(&user, &room).await?;
        // The de-duplication id names this change of this version of the
        // message (its text and edit time as projected, and the new text):
        // a retry of the same edit is a duplicate, an edit back to an
        // earlier text is not, since the version it edits moved on.
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            row.message.body.hash(&mut h);
            row.message.updated_at.hash(&mut h);
            req.body.hash(&mut h);
            h.finish()
        };
        let mut message = row.message;
        message.body.clone_from(&req.body);
        message.updated_at = Some(now_rfc3339());
        let data = serde_json::to_value(&message).unwrap_or_default();
        let msg = BusMessage::new(names::MESSAGE_UPDATED, &data)
            .with_msg_id(format!("edit:{}:{digest:016x}", message.id));
        let seq = self.publish(&room, msg).await?;
        // Read-your-writes: the next edit of this author starts from this
        // version, so it never collides with this one's id.
        self.projected(seq).await;
        Ok(ChangeAck { ok: true, seq })
    }

    /// Deletes a message: its author, or an owner or admin of the
    /// channel's workspace. Publishes `message:deleted` to the room and
    /// answers once it is stored.
    pub async fn delete(&self, req: &DeleteRequest) -> Result<ChangeAck, HistoryError> {
        let (user, room) = Self::parse(&req.user, &req.room)?;
        self.writable(&room).await?;
        let row = self.lookup(&room, &req.id).await?;
        if !self.is_channel_admin(&user, &room).await? {
            if row.message.author_id != user.as_str() {
                return Err(HistoryError::Forbidden(
                    "only the author or a workspace owner or admin may delete a message".into(),
                ));
            }
            // An author who left (or was kicked) no longer speaks in the room.
            self.member(&user, &room).await?;
        }
        let data = serde_json::to_value(MessageDeleted {
            id: row.message.id.clone(),
            room: room.to_string(),
        })
        .unwrap_or_default();
        let msg = BusMessage::new(names::MESSAGE_DELETED, &data)
            .with_msg_id(format!("del:{}", row.message.id));
        let seq = self.publish(&room, msg).await?;
        Ok(ChangeAck { ok: true, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    fn item(seq: u64) -> Result<TailItem, BusError> {
        let mut msg = BusMessage::new("message:new", &serde_json::json!({ "seq": seq }));
        msg.seq = Some(seq);
        Ok(TailItem {
            room: RoomId::parse("channel:c1").expect("room"),
            msg,
        })
    }

    fn tail() -> (mpsc::UnboundedSender<Result<TailItem, BusError>>, BusTail) {
        let (tx, rx) = mpsc::unbounded();
        (tx, Box::pin(rx))
    }

    fn seqs(batch: &[TailItem]) -> Vec<u64> {
        batch.iter().filter_map(|i| i.msg.seq).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_without_linger_takes_only_what_is_ready() {
        let (tx, mut tail) = tail();
        tx.unbounded_send(item(2)).unwrap();
        let mut batch = Vec::new();
        assert_eq!(
            fill_batch(&mut tail, Some(item(1)), &mut batch, None).await,
            None
        );
        assert_eq!(seqs(&batch), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_takes_what_arrives_before_its_end_and_no_more() {
        let (tx, mut tail) = tail();
        let start = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            tx.unbounded_send(item(2)).unwrap();
            tokio::time::sleep(LINGER).await;
            tx.unbounded_send(item(3)).unwrap();
            tx
        });
        let mut batch = Vec::new();
        let end = fill_batch(&mut tail, Some(item(1)), &mut batch, Some(start + LINGER)).await;
        assert_eq!(end, None);
        assert_eq!(
            seqs(&batch),
            [1, 2],
            "the item after the linger's end waits"
        );
        assert!(start.elapsed() <= LINGER, "took {:?}", start.elapsed());
        let _tx = sender.await.unwrap();
        let first = tail.next().await;
        fill_batch(&mut tail, first, &mut batch, None).await;
        assert_eq!(seqs(&batch), [3], "the next batch starts with it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_stops_at_its_size_limit_and_at_a_tail_failure() {
        let (tx, mut tail) = tail();
        for seq in 2..=MAX_BATCH_ITEMS as u64 + 1 {
            tx.unbounded_send(item(seq)).unwrap();
        }
        let mut batch = Vec::new();
        let until = tokio::time::Instant::now() + LINGER;
        assert_eq!(
            fill_batch(&mut tail, Some(item(1)), &mut batch, Some(until)).await,
            None
        );
        assert_eq!(batch.len(), MAX_BATCH_ITEMS);
        tx.unbounded_send(Err(BusError::Unavailable("gone".into())))
            .unwrap();
        let first = tail.next().await;
        let end = fill_batch(&mut tail, first, &mut batch, Some(until)).await;
        assert_eq!(seqs(&batch), [MAX_BATCH_ITEMS as u64 + 1]);
        assert!(end.is_some_and(|e| e.contains("gone")));
    }
}
