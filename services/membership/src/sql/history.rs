//! The `messages` table: the SQL side of [`crate::history`]. Applies batches
//! of bus log items together with the checkpoint row
//! `projection_checkpoints(name = 'history')`, and answers the queries of
//! the history calls.

use confab_bus::{BusMessage, TailItem};
use confab_events::socket::{Message, MessageDeleted, names};
use confab_events::{RoomId, UserId};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use tracing::Instrument as _;

use super::entities::{channels, messages, workspace_members};
use super::{begin_write, checkpoint, from_db_seq, to_db_seq};

/// The row of `projection_checkpoints` the history projector owns.
pub const HISTORY_PROJECTION: &str = "history";

/// A projected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Bus log sequence of its `message:new`.
    pub(crate) seq: u64,
    /// Deleted: its body is cleared and pages leave it out.
    pub(crate) deleted: bool,
    /// The message as last edited.
    pub(crate) message: Message,
}

impl From<messages::Model> for StoredMessage {
    fn from(row: messages::Model) -> Self {
        Self {
            seq: from_db_seq(row.seq),
            deleted: row.deleted,
            message: Message {
                id: row.id,
                room: row.room,
                author_id: row.author,
                body: row.body,
                thread_id: row.thread_id,
                created_at: row.created_at,
                updated_at: row.updated_at,
            },
        }
    }
}

/// Whether the history projection applies this event.
pub(crate) fn is_message_event(event: &str) -> bool {
    [
        names::MESSAGE_NEW,
        names::MESSAGE_UPDATED,
        names::MESSAGE_DELETED,
    ]
    .contains(&event)
}

/// The `messages` table and its checkpoint row in one database (schema up
/// to date).
#[derive(Debug, Clone)]
pub(crate) struct MessageTable {
    db: DatabaseConnection,
}

impl MessageTable {
    /// The table in `db`.
    pub(crate) fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The checkpoint as committed (0 before the first message event).
    pub(crate) async fn checkpoint(&self) -> Result<u64, DbErr> {
        checkpoint::read(&self.db, HISTORY_PROJECTION).await
    }

    /// The checkpoint and the log it belongs to (`None` before it was
    /// bound to one).
    pub(crate) async fn binding(&self) -> Result<(u64, Option<String>), DbErr> {
        Ok(checkpoint::find_bound(&self.db, HISTORY_PROJECTION)
            .await?
            .unwrap_or((0, None)))
    }

    /// Records that the checkpoint counts sequences of log `log_id`.
    pub(crate) async fn bind(&self, log_id: &str) -> Result<(), DbErr> {
        checkpoint::bind(&self.db, HISTORY_PROJECTION, log_id).await
    }

    /// Applies stored messages, in order, in one transaction with one read
    /// and one write of the checkpoint: items at or below the checkpoint
    /// (or below an earlier item of the batch) are skipped, message events
    /// above it are applied, and the checkpoint becomes the highest
    /// sequence of the batch. Writes nothing when no item is above the
    /// checkpoint. Returns how many message events were applied.
    pub(crate) async fn apply_batch(&self, items: &[TailItem]) -> Result<usize, DbErr> {
        let txn = begin_write(&self.db).await?;
        let committed = checkpoint::lock(&txn, HISTORY_PROJECTION).await?;
        let mut last = committed;
        let mut applied = 0;
        for item in items {
            let Some(seq) = item.msg.seq else {
                continue;
            };
            if seq <= last {
                continue;
            }
            last = seq;
            let event = &*item.msg.event;
            if is_message_event(event) {
                let span = write_span(&self.db, event, &item.msg);
                apply_event(&txn, &item.room, event, &item.msg, seq)
                    .instrument(span)
                    .await?;
                applied += 1;
            }
        }
        if last == committed {
            txn.rollback().await?;
            return Ok(0);
        }
        checkpoint::write(&txn, HISTORY_PROJECTION, last).await?;
        let commit = if confab_telemetry::is_exporting() {
            tracing::info_span!(
                "db.commit",
                otel.name = "COMMIT",
                otel.kind = "client",
                db.system.name = db_system(&self.db),
                db.operation.name = "COMMIT",
            )
        } else {
            tracing::Span::none()
        };
        txn.commit().instrument(commit).await?;
        Ok(applied)
    }

    /// Up to `count` messages of `room` that are not deleted, newest first,
    /// below sequence `before` if given.
    pub(crate) async fn newest(
        &self,
        room: &RoomId,
        before: Option<u64>,
        count: u64,
    ) -> Result<Vec<StoredMessage>, DbErr> {
        let mut query = messages::Entity::find()
            .filter(messages::Column::Room.eq(room.as_str()))
            .filter(messages::Column::Deleted.eq(false));
        if let Some(before) = before {
            query = query.filter(messages::Column::Seq.lt(to_db_seq(before)));
        }
        let rows = query
            .order_by_desc(messages::Column::Seq)
            .limit(count)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(StoredMessage::from).collect())
    }

    /// Message `id` of `room`, deleted or not.
    pub(crate) async fn find(
        &self,
        room: &RoomId,
        id: &str,
    ) -> Result<Option<StoredMessage>, DbErr> {
        let row = messages::Entity::find_by_id(id.to_owned())
            .filter(messages::Column::Room.eq(room.as_str()))
            .one(&self.db)
            .await?;
        Ok(row.map(StoredMessage::from))
    }

    /// Whether `channel` is an archived (read-only) channel.
    pub(crate) async fn is_archived_channel(&self, channel: &str) -> Result<bool, DbErr> {
        let found = channels::Entity::find()
            .filter(channels::Column::Id.eq(channel))
            .filter(channels::Column::Archived.eq(true))
            .count(&self.db)
            .await?;
        Ok(found > 0)
    }

    /// Whether `user` is an owner or admin of the workspace of channel
    /// `channel` (false when there is no such channel).
    pub(crate) async fn is_workspace_admin_of(
        &self,
        channel: &str,
        user: &UserId,
    ) -> Result<bool, DbErr> {
        let Some(channel) = channels::Entity::find_by_id(channel.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        let role = workspace_members::Entity::find()
            .filter(workspace_members::Column::WorkspaceId.eq(channel.workspace_id))
            .filter(workspace_members::Column::UserId.eq(user.as_str()))
            .one(&self.db)
            .await?
            .map(|m| m.role);
        Ok(matches!(role.as_deref(), Some("owner" | "admin")))
    }
}

fn first_arg<T: serde::de::DeserializeOwned>(msg: &BusMessage) -> Option<T> {
    serde_json::from_str::<Vec<T>>(&msg.args_json)
        .ok()?
        .into_iter()
        .next()
}

/// `db.system.name` of the connection.
fn db_system(db: &DatabaseConnection) -> &'static str {
    if super::is_postgres(db) {
        "postgresql"
    } else {
        "sqlite"
    }
}

/// The span of one message event's SQL write (when spans are exported):
/// a child of the message's producer span (the trace of its `message:send`
/// or emit), linked to the batch span it runs in.
fn write_span(db: &DatabaseConnection, event: &str, msg: &BusMessage) -> tracing::Span {
    if !confab_telemetry::is_exporting() {
        return tracing::Span::none();
    }
    let (name, operation) = if event == names::MESSAGE_NEW {
        ("INSERT messages", "INSERT")
    } else {
        ("UPDATE messages", "UPDATE")
    };
    let batch = confab_telemetry::span_context(&tracing::Span::current());
    let span = tracing::info_span!(
        "db.write",
        otel.name = name,
        otel.kind = "client",
        db.system.name = db_system(db),
        db.operation.name = operation,
        db.collection.name = "messages",
        db.query.summary = name,
        confab.event = event,
        confab.seq = msg.seq,
    );
    if let Some(producer) = confab_bus::trace::producer_of(msg) {
        confab_telemetry::set_parent_span(&span, producer);
    }
    if let Some(batch) = batch {
        confab_telemetry::add_link(&span, batch);
    }
    span
}

/// Applies one message event's effect (not the checkpoint).
async fn apply_event<C: ConnectionTrait>(
    txn: &C,
    room: &RoomId,
    event: &str,
    msg: &BusMessage,
    seq: u64,
) -> Result<(), DbErr> {
    match event {
        names::MESSAGE_NEW => {
            let Some(m) = first_arg::<Message>(msg).filter(|m| m.room == room.as_str()) else {
                tracing::warn!(seq, "skipping an unreadable message:new");
                return Ok(());
            };
            insert(txn, m, seq).await
        }
        names::MESSAGE_UPDATED => {
            let Some(m) = first_arg::<Message>(msg).filter(|m| m.room == room.as_str()) else {
                tracing::warn!(seq, "skipping an unreadable message:updated");
                return Ok(());
            };
            update(txn, m).await
        }
        _ => {
            let Some(m) = first_arg::<MessageDeleted>(msg).filter(|m| m.room == room.as_str())
            else {
                tracing::warn!(seq, "skipping an unreadable message:deleted");
                return Ok(());
            };
            delete(txn, m).await
        }
    }
}

/// `message:new`: a new row, unless the id is there already.
async fn insert<C: ConnectionTrait>(txn: &C, m: Message, seq: u64) -> Result<(), DbErr> {
    messages::Entity::insert(messages::ActiveModel {
        id: Set(m.id),
        room: Set(m.room),
        seq: Set(to_db_seq(seq)),
        author: Set(m.author_id),
        body: Set(m.body),
        thread_id: Set(m.thread_id),
        created_at: Set(m.created_at),
        updated_at: Set(m.updated_at),
        deleted: Set(false),
    })
    .on_conflict(
        OnConflict::column(messages::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// `message:updated`: the new body of a message that is not deleted.
async fn update<C: ConnectionTrait>(txn: &C, m: Message) -> Result<(), DbErr> {
    messages::Entity::update_many()
        .col_expr(messages::Column::Body, Expr::value(m.body))
        .col_expr(messages::Column::UpdatedAt, Expr::value(m.updated_at))
        .filter(messages::Column::Id.eq(m.id))
        .filter(messages::Column::Room.eq(m.room))
        .filter(messages::Column::Deleted.eq(false))
        .exec(txn)
        .await?;
    Ok(())
}

/// `message:deleted`: the row stays, flagged, its body cleared.
async fn delete<C: ConnectionTrait>(txn: &C, m: MessageDeleted) -> Result<(), DbErr> {
    messages::Entity::update_many()
        .col_expr(messages::Column::Body, Expr::value(""))
        .col_expr(messages::Column::Deleted, Expr::value(true))
        .filter(messages::Column::Id.eq(m.id))
        .filter(messages::Column::Room.eq(m.room))
        .exec(txn)
        .await?;
    Ok(())
}
