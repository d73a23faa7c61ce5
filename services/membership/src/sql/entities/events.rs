//! The SQL event log: one row per stored membership event.

use sea_orm::entity::prelude::*;

/// One row of `events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Global sequence in the log, from 1 (autoincrement).
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The aggregate, as a room name (`workspace:w1`, `channel:42`, `dm:7`).
    pub aggregate: String,
    /// Sequence of the aggregate's previous event, 0 for its first.
    pub prev_seq: i64,
    /// The envelope id (unique: appending it again is an idempotent retry).
    pub event_id: String,
    /// The event type, e.g. `channel.member_joined`.
    #[sea_orm(column_name = "type")]
    pub kind: String,
    /// The full envelope as JSON.
    pub envelope: String,
    /// When the command was accepted, Unix milliseconds.
    pub at: i64,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
