//! The message history projection: one row per chat message.

use sea_orm::entity::prelude::*;

/// One row of `messages`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// Message id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Room name, e.g. `channel:42`.
    pub room: String,
    /// Bus log sequence of its `message:new` (the history cursor).
    #[sea_orm(unique)]
    pub seq: i64,
    /// Author's user id.
    pub author: String,
    /// Text (empty once deleted).
    pub body: String,
    /// Thread root message id, for replies.
    pub thread_id: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last edit time, RFC 3339.
    pub updated_at: Option<String>,
    /// Whether the message was deleted.
    pub deleted: bool,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
