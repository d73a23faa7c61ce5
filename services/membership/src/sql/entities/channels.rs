//! Projection: channels.

use sea_orm::entity::prelude::*;

/// One row of `channels`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    /// Channel id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Its workspace.
    pub workspace_id: String,
    /// Display name.
    pub name: String,
    /// `public` or `private`.
    pub visibility: String,
    /// Archived: read-only, no new members (members are kept).
    pub archived: bool,
    /// Creator.
    pub created_by: String,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
