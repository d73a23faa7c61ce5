//! Projection: channel members.

use sea_orm::entity::prelude::*;

/// One row of `channel_members`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_members")]
pub struct Model {
    /// Channel id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel_id: String,
    /// Member.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// How they came in: `created`, `joined` or `invited:{by}`.
    pub joined_via: String,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
