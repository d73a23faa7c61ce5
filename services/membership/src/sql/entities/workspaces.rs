//! Projection: workspaces.

use sea_orm::entity::prelude::*;

/// One row of `workspaces`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workspaces")]
pub struct Model {
    /// Workspace id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Display name.
    pub name: String,
    /// The owner (who created it).
    pub owner: String,
    /// Sequence of its `workspace.created` event.
    pub created_seq: i64,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
