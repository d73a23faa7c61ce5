//! Projection: DM and group-DM conversations.

use sea_orm::entity::prelude::*;

/// One row of `dms`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dms")]
pub struct Model {
    /// Conversation id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Its workspace.
    pub workspace_id: String,
    /// Three or more participants.
    pub is_group: bool,
    /// Who opened it.
    pub opened_by: String,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
