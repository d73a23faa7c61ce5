//! Rows of `projection_checkpoints`, one per consumer of a log (the
//! membership projector, the history projector, the notifier): how far each
//! got. [`SqlCheckpoint`] is the notifier's
//! [`CheckpointStore`](crate::notifier::CheckpointStore) on them.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
};

use super::entities::projection_checkpoints::{ActiveModel, Column, Entity};
use super::{from_db_seq, to_db_seq};
use crate::notifier::{CheckpointStore, NOTIFIER_CHECKPOINT};
use crate::store::StoreError;

/// The committed value of row `name`, `None` when there is no row yet.
async fn find<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<u64>, DbErr> {
    let seq: Option<i64> = Entity::find_by_id(name.to_owned())
        .select_only()
        .column(Column::LastSeq)
        .into_tuple()
        .one(db)
        .await?;
    Ok(seq.map(from_db_seq))
}

/// The committed value of row `name`, 0 when there is none.
pub(super) async fn read<C: ConnectionTrait>(db: &C, name: &str) -> Result<u64, DbErr> {
    Ok(find(db, name).await?.unwrap_or(0))
}

/// Row `name`'s value and the log it belongs to (`None` before it was
/// bound), `None` when there is no row.
pub(super) async fn find_bound<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<Option<(u64, Option<String>)>, DbErr> {
    let row: Option<(i64, Option<String>)> = Entity::find_by_id(name.to_owned())
        .select_only()
        .column(Column::LastSeq)
        .column(Column::LogId)
        .into_tuple()
        .one(db)
        .await?;
    Ok(row.map(|(seq, log)| (from_db_seq(seq), log)))
}

/// Records that row `name` counts sequences of log `log_id`, creating the
/// row (at 0) when missing.
pub(super) async fn bind<C: ConnectionTrait>(
    db: &C,
    name: &str,
    log_id: &str,
) -> Result<(), DbErr> {
    Entity::insert(ActiveModel {
        name: Set(name.to_owned()),
        last_seq: Set(0),
        log_id: Set(Some(log_id.to_owned())),
    })
    .on_conflict(
        OnConflict::column(Column::Name)
            .update_column(Column::LogId)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Creates row `name` when missing and locks it for the transaction;
/// returns its value.
pub(super) async fn lock<C: ConnectionTrait>(txn: &C, name: &str) -> Result<u64, DbErr> {
    Entity::insert(ActiveModel {
        name: Set(name.to_owned()),
        last_seq: Set(0),
        log_id: NotSet,
    })
    .on_conflict(OnConflict::column(Column::Name).do_nothing().to_owned())
    .exec_without_returning(txn)
    .await?;
    let seq: Option<i64> = Entity::find_by_id(name.to_owned())
        .select_only()
        .column(Column::LastSeq)
        .lock_exclusive()
        .into_tuple()
        .one(txn)
        .await?;
    Ok(seq.map(from_db_seq).unwrap_or(0))
}

/// Sets row `name` (locked by [`lock`]) to `seq`.
pub(super) async fn write<C: ConnectionTrait>(txn: &C, name: &str, seq: u64) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::LastSeq, Expr::value(to_db_seq(seq)))
        .filter(Column::Name.eq(name))
        .exec(txn)
        .await?;
    Ok(())
}

/// Sets row `name` to `seq`, creating it when missing.
async fn upsert<C: ConnectionTrait>(db: &C, name: &str, seq: u64) -> Result<(), DbErr> {
    Entity::insert(ActiveModel {
        name: Set(name.to_owned()),
        last_seq: Set(to_db_seq(seq)),
        log_id: NotSet,
    })
    .on_conflict(
        OnConflict::column(Column::Name)
            .update_column(Column::LastSeq)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A notifier checkpoint kept in the projections database, as a row of
/// `projection_checkpoints`.
#[derive(Debug, Clone)]
pub struct SqlCheckpoint {
    db: DatabaseConnection,
    name: String,
}

impl SqlCheckpoint {
    /// The row [`NOTIFIER_CHECKPOINT`] of `db` (migrated by
    /// [`connect`](super::connect)).
    pub fn new(db: DatabaseConnection) -> Self {
        Self::named(db, NOTIFIER_CHECKPOINT)
    }

    /// Another row, e.g. for a second notifier on the same database.
    pub fn named(db: DatabaseConnection, name: &str) -> Self {
        Self {
            db,
            name: name.to_owned(),
        }
    }
}

#[async_trait]
impl CheckpointStore for SqlCheckpoint {
    async fn load(&self) -> Result<Option<u64>, StoreError> {
        find(&self.db, &self.name).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot read the notifier checkpoint: {e}"))
        })
    }

    async fn save(&self, seq: u64) -> Result<(), StoreError> {
        upsert(&self.db, &self.name, seq).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot save the notifier checkpoint: {e}"))
        })
    }
}
