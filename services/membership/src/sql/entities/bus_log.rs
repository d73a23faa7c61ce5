//! The in-process bus log's identity and last sequence (one row, `rooms`).

use sea_orm::entity::prelude::*;

/// One row of `bus_log`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bus_log")]
pub struct Model {
    /// The log's name (`rooms`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The log's identity, created with the row.
    pub log_id: String,
    /// A lower bound of the last stored sequence, kept when records are
    /// trimmed (the last sequence is the larger of this and the newest
    /// record's).
    pub last_seq: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
