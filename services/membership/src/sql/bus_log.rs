//! [`SqlLogStore`]: the in-process bus's [`LogStore`] in the membership
//! database (tables `bus_log` and `bus_log_messages`), so that the
//! all-in-one's room event log survives restarts with its sequence and its
//! identity.

use async_trait::async_trait;
use confab_bus::{BusError, LoadedLog, LogRecord, LogStore};
use confab_events::RoomId;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{bus_log, bus_log_messages};
use super::history::HISTORY_PROJECTION;
use super::{begin_write, checkpoint, from_db_seq, to_db_seq};

/// The one row of `bus_log`.
const LOG_NAME: &str = "rooms";

/// The in-process bus's log in a SQL database (migrated by
/// [`connect`](super::connect)).
#[derive(Debug, Clone)]
pub struct SqlLogStore {
    db: DatabaseConnection,
}

impl SqlLogStore {
    /// The log in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn open_log(&self, since_ms: u64, max: usize) -> Result<LoadedLog, DbErr> {
        let txn = begin_write(&self.db).await?;
        let row = match bus_log::Entity::find_by_id(LOG_NAME.to_owned())
            .one(&txn)
            .await?
        {
            Some(row) => row,
            None => {
                // A database from before the log was stored: its history
                // checkpoint counts sequences of logs that are gone. The new
                // log starts after it, so the checkpoint stays behind the
                // log and new messages are projected.
                let base = checkpoint::read(&txn, HISTORY_PROJECTION).await?;
                let bytes: [u8; 16] = rand::random();
                let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let row = bus_log::Model {
                    name: LOG_NAME.to_owned(),
                    log_id: format!("sql:{id}"),
                    last_seq: to_db_seq(base),
                };
                bus_log::Entity::insert(bus_log::ActiveModel {
                    name: Set(row.name.clone()),
                    log_id: Set(row.log_id.clone()),
                    last_seq: Set(row.last_seq),
                })
                .exec_without_returning(&txn)
                .await?;
                row
            }
        };
        let mut rows = bus_log_messages::Entity::find()
            .order_by_desc(bus_log_messages::Column::Seq)
            .limit(u64::try_from(max).unwrap_or(u64::MAX))
            .all(&txn)
            .await?;
        rows.reverse();
        let last_seq = from_db_seq(row.last_seq).max(rows.last().map_or(0, |r| from_db_seq(r.seq)));
        // Retention by age drops a prefix: once one record is young enough,
        // the later ones are kept even if the clock went back.
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let keep_from = rows
            .iter()
            .position(|r| r.stored_at_ms >= since)
            .unwrap_or(rows.len());
        let rows = rows.split_off(keep_from);
        let first_kept = rows.first().map_or(last_seq + 1, |r| from_db_seq(r.seq));
        trim_rows(&txn, first_kept).await?;
        txn.commit().await?;
        let records = rows.into_iter().filter_map(record_of).collect();
        Ok(LoadedLog {
            log_id: row.log_id,
            last_seq,
            records,
        })
    }
}

/// Drops the records below `first_seq`, keeping their last sequence in
/// `bus_log.last_seq`.
async fn trim_rows<C: sea_orm::ConnectionTrait>(txn: &C, first_seq: u64) -> Result<(), DbErr> {
    let last_trimmed = to_db_seq(first_seq.saturating_sub(1));
    bus_log::Entity::update_many()
        .col_expr(bus_log::Column::LastSeq, Expr::value(last_trimmed))
        .filter(bus_log::Column::Name.eq(LOG_NAME))
        .filter(bus_log::Column::LastSeq.lt(last_trimmed))
        .exec(txn)
        .await?;
    bus_log_messages::Entity::delete_many()
        .filter(bus_log_messages::Column::Seq.lt(to_db_seq(first_seq)))
        .exec(txn)
        .await?;
    Ok(())
}

/// A stored row as the bus sees it; `None` (skipped, logged) for a row
/// whose room is not a valid room name.
fn record_of(row: bus_log_messages::Model) -> Option<LogRecord> {
    let Ok(room) = RoomId::parse(&row.room) else {
        tracing::error!(seq = row.seq, room = %row.room, "stored bus log record with an invalid room");
        return None;
    };
    Some(LogRecord {
        seq: from_db_seq(row.seq),
        room,
        event: row.event,
        args_json: row.args_json,
        headers: serde_json::from_str(&row.headers).unwrap_or_default(),
        msg_id: row.msg_id,
        stored_at_ms: u64::try_from(row.stored_at_ms).unwrap_or(0),
    })
}

fn unavailable(what: &str, e: &DbErr) -> BusError {
    BusError::Unavailable(format!("cannot {what} the stored room event log: {e}"))
}

#[async_trait]
impl LogStore for SqlLogStore {
    async fn open(&self, since_ms: u64, max: usize) -> Result<LoadedLog, BusError> {
        self.open_log(since_ms, max)
            .await
            .map_err(|e| unavailable("open", &e))
    }

    async fn append(&self, record: &LogRecord) -> Result<(), BusError> {
        bus_log_messages::Entity::insert(bus_log_messages::ActiveModel {
            seq: Set(to_db_seq(record.seq)),
            room: Set(record.room.as_str().to_owned()),
            event: Set(record.event.clone()),
            args_json: Set(record.args_json.clone()),
            headers: Set(serde_json::to_string(&record.headers).unwrap_or_else(|_| "[]".into())),
            msg_id: Set(record.msg_id.clone()),
            stored_at_ms: Set(i64::try_from(record.stored_at_ms).unwrap_or(i64::MAX)),
        })
        .exec_without_returning(&self.db)
        .await
        .map_err(|e| unavailable("append to", &e))?;
        Ok(())
    }

    async fn trim(&self, first_seq: u64) -> Result<(), BusError> {
        let result = async {
            let txn = begin_write(&self.db).await?;
            trim_rows(&txn, first_seq).await?;
            txn.commit().await
        }
        .await;
        result.map_err(|e| unavailable("trim", &e))
    }
}
