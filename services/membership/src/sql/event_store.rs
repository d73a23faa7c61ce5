//! [`SqlEventStore`]: the membership event log in the `events` table.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use confab_events::RoomId;
use confab_events::membership::EventEnvelope;
use futures::stream::{self, BoxStream, StreamExt};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};
use tokio::sync::watch;

use super::entities::events;
use super::{begin_write, from_db_seq, is_postgres, to_db_seq};
use crate::store::{EventStore, StoreError, Stored};

/// Rows read per query while tailing.
const DEFAULT_PAGE_SIZE: u64 = 256;

/// How often a caught-up tail looks for rows appended by other processes.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The membership event log in SQL (table `events`), for the embedded /
/// all-in-one run.
///
/// - Optimistic concurrency: an append stores `prev_seq = expected` and the
///   unique index on `(aggregate, prev_seq)` lets only one of two appends
///   decided against the same state in; the append transaction also checks
///   the aggregate's actual last sequence, so a stale `expected` that is not
///   the aggregate's last event is refused too.
/// - Idempotency: `event_id` is unique; appending an envelope id again
///   returns the first append's sequence and stores nothing.
/// - Order: on Postgres the append transaction holds `LOCK TABLE events IN
///   EXCLUSIVE MODE` (readers are not blocked), and on SQLite the write lock
///   (`BEGIN IMMEDIATE`), so sequences become visible in increasing order
///   and a tail never skips a row committed late.
/// - Tail: pages through `seq >= from`, then waits for appends made
///   through this store (an in-process signal) or polls every
///   [`poll_interval`](Self::with_poll_interval) for other processes' rows.
///
/// Cheap to clone; clones share the append signal.
#[derive(Clone)]
pub struct SqlEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Highest sequence appended through this store; wakes the tails.
    appended: watch::Sender<u64>,
    poll_interval: Duration,
    page_size: u64,
}

impl std::fmt::Debug for SqlEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEventStore")
            .field("backend", &self.inner.db.get_database_backend())
            .field("poll_interval", &self.inner.poll_interval)
            .field("page_size", &self.inner.page_size)
            .finish()
    }
}

impl SqlEventStore {
    /// A store on a connection whose schema is up to date (see
    /// [`connect`](super::connect)).
    pub fn new(db: DatabaseConnection) -> Self {
        Self::build(db, DEFAULT_POLL_INTERVAL, DEFAULT_PAGE_SIZE)
    }

    /// Sets how often a caught-up tail polls for rows appended by other
    /// processes (default 500 ms; appends through this store wake tails at
    /// once).
    pub fn with_poll_interval(self, poll_interval: Duration) -> Self {
        let page_size = self.inner.page_size;
        Self::build(self.inner.db.clone(), poll_interval, page_size)
    }

    /// Sets how many rows a tail reads per query (default 256, at least 1).
    pub fn with_page_size(self, page_size: u64) -> Self {
        let poll_interval = self.inner.poll_interval;
        Self::build(self.inner.db.clone(), poll_interval, page_size.max(1))
    }

    fn build(db: DatabaseConnection, poll_interval: Duration, page_size: u64) -> Self {
        let (appended, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                db,
                appended,
                poll_interval,
                page_size,
            }),
        }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    async fn try_append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
        envelope: String,
    ) -> Result<Result<u64, StoreError>, DbErr> {
        let db = &self.inner.db;
        let txn = begin_write(db).await?;
        if is_postgres(db) {
            // Serialise appends so that sequences commit in order.
            txn.execute_unprepared("LOCK TABLE events IN EXCLUSIVE MODE")
                .await?;
        }
        if let Some(seq) = seq_of_event_id(&txn, &event.id).await? {
            txn.rollback().await?;
            return Ok(Ok(seq));
        }
        let actual = last_of(&txn, aggregate).await?;
        if actual != expected {
            txn.rollback().await?;
            return Ok(Err(conflict(aggregate, expected, Some(actual))));
        }
        let row = events::ActiveModel {
            seq: NotSet,
            aggregate: Set(aggregate.as_str().to_owned()),
            prev_seq: Set(to_db_seq(expected)),
            event_id: Set(event.id.clone()),
            kind: Set(event.event.type_name().to_owned()),
            envelope: Set(envelope),
            at: Set(to_db_seq(event.at)),
        };
        let seq = events::Entity::insert(row).exec(&txn).await?.last_insert_id;
        txn.commit().await?;
        Ok(Ok(from_db_seq(seq)))
    }

    /// After a unique violation: the same event id already stored (a retry
    /// that raced its first attempt), or a concurrent append to the
    /// aggregate.
    async fn resolve_violation(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        if let Some(seq) = seq_of_event_id(db, &event.id).await.map_err(unavailable)? {
            return Ok(seq);
        }
        let actual = last_of(db, aggregate).await.ok();
        Err(conflict(aggregate, expected, actual))
    }
}

#[async_trait]
impl EventStore for SqlEventStore {
    async fn append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        let envelope = serde_json::to_string(event)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode event: {e}")))?;
        match self.try_append(aggregate, expected, event, envelope).await {
            Ok(Ok(seq)) => {
                self.inner.appended.send_if_modified(|last| {
                    let newer = seq > *last;
                    if newer {
                        *last = seq;
                    }
                    newer
                });
                Ok(seq)
            }
            Ok(Err(e)) => Err(e),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                self.resolve_violation(aggregate, expected, event).await
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn load(&self, aggregate: &RoomId) -> Result<Vec<Stored>, StoreError> {
        events::Entity::find()
            .filter(events::Column::Aggregate.eq(aggregate.as_str()))
            .order_by_asc(events::Column::Seq)
            .all(&self.inner.db)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(decode)
            .collect()
    }

    async fn tail(
        &self,
        from_seq: u64,
    ) -> Result<BoxStream<'static, Result<Stored, StoreError>>, StoreError> {
        let state = Tail {
            db: self.inner.db.clone(),
            next: from_seq.max(1),
            buffer: VecDeque::new(),
            wake: self.inner.appended.subscribe(),
            poll_interval: self.inner.poll_interval,
            page_size: self.inner.page_size,
            done: false,
        };
        Ok(stream::unfold(state, Tail::next_item).boxed())
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        let max: Option<Option<i64>> = events::Entity::find()
            .select_only()
            .column_as(events::Column::Seq.max(), "max_seq")
            .into_tuple()
            .one(&self.inner.db)
            .await
            .map_err(unavailable)?;
        Ok(max.flatten().map(from_db_seq).unwrap_or(0))
    }

    async fn version(&self, aggregate: &RoomId) -> Result<u64, StoreError> {
        last_of(&self.inner.db, aggregate)
            .await
            .map_err(unavailable)
    }
}

/// The state of one tail stream.
struct Tail {
    db: DatabaseConnection,
    /// The next sequence to read (inclusive).
    next: u64,
    buffer: VecDeque<events::Model>,
    wake: watch::Receiver<u64>,
    poll_interval: Duration,
    page_size: u64,
    /// Ended after an error.
    done: bool,
}

impl Tail {
    async fn next_item(mut self) -> Option<(Result<Stored, StoreError>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(row) = self.buffer.pop_front() {
                self.next = from_db_seq(row.seq).saturating_add(1);
                let item = decode(row);
                // A corrupt event ends the stream: skipping it would let a
                // consumer silently miss an event.
                self.done = item.is_err();
                return Some((item, self));
            }
            // Mark the signal seen before reading, so an append that commits
            // after the read still wakes the wait below.
            self.wake.borrow_and_update();
            match self.read_page().await {
                Ok(rows) if !rows.is_empty() => self.buffer.extend(rows),
                Ok(_) => {
                    let woken = tokio::time::timeout(self.poll_interval, self.wake.changed()).await;
                    if let Ok(Err(_)) = woken {
                        // The store is gone: only polling is left.
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
            }
        }
    }

    /// The next page of events from `next` on, read in a task of its own.
    ///
    /// A consumer may stop polling the stream in the middle of a read: a
    /// `select!` that takes another branch keeps the stream, with the read
    /// suspended inside it. Read in place, the suspended read kept its
    /// pooled connection checked out, and a consumer that then used the
    /// database itself (the notifier saving its checkpoint on a timer)
    /// waited for a connection it held: with the in-memory database's one
    /// connection, everything stalled for the pool's 30 s acquire timeout.
    /// The task finishes the read and gives the connection back whether or
    /// not the stream is polled.
    async fn read_page(&self) -> Result<Vec<events::Model>, StoreError> {
        let db = self.db.clone();
        let (from, limit) = (to_db_seq(self.next), self.page_size);
        let read = tokio::spawn(async move {
            events::Entity::find()
                .filter(events::Column::Seq.gte(from))
                .order_by_asc(events::Column::Seq)
                .limit(limit)
                .all(&db)
                .await
        });
        match read.await {
            Ok(page) => page.map_err(unavailable),
            Err(e) => Err(StoreError::Unavailable(format!(
                "event log read failed: {e}"
            ))),
        }
    }
}

/// Decodes a row's envelope.
fn decode(row: events::Model) -> Result<Stored, StoreError> {
    let seq = from_db_seq(row.seq);
    let envelope: EventEnvelope =
        serde_json::from_str(&row.envelope).map_err(|e| StoreError::Corrupt {
            seq,
            reason: e.to_string(),
        })?;
    if envelope.v == 0 || envelope.v > confab_events::membership::SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            seq,
            reason: format!("unknown schema version {}", envelope.v),
        });
    }
    Ok(Stored {
        seq,
        envelope,
        traceparent: None,
    })
}

/// The sequence of the stored event with this envelope id, if any.
async fn seq_of_event_id<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<u64>, DbErr> {
    let seq: Option<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::Seq)
        .filter(events::Column::EventId.eq(id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(seq.map(from_db_seq))
}

/// The aggregate's last sequence, 0 when it has no events. The last event
/// has the largest `prev_seq`, which the unique index finds directly.
async fn last_of<C: ConnectionTrait>(db: &C, aggregate: &RoomId) -> Result<u64, DbErr> {
    let seq: Option<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::Seq)
        .filter(events::Column::Aggregate.eq(aggregate.as_str()))
        .order_by_desc(events::Column::PrevSeq)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(seq.map(from_db_seq).unwrap_or(0))
}

fn conflict(aggregate: &RoomId, expected: u64, actual: Option<u64>) -> StoreError {
    StoreError::Conflict {
        aggregate: aggregate.as_str().to_owned(),
        expected,
        actual,
    }
}

fn unavailable(e: DbErr) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
