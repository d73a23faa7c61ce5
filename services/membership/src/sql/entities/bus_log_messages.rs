//! The in-process bus log's retained messages.

use sea_orm::entity::prelude::*;

/// One row of `bus_log_messages`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bus_log_messages")]
pub struct Model {
    /// Log sequence.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// The room, e.g. `channel:42`.
    pub room: String,
    /// Socket.IO event name.
    pub event: String,
    /// The arguments, a JSON array.
    pub args_json: String,
    /// Extra headers, a JSON array of `[name, value]` pairs.
    pub headers: String,
    /// De-duplication id.
    pub msg_id: Option<String>,
    /// When it was stored, Unix milliseconds.
    pub stored_at_ms: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
