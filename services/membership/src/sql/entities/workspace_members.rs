//! Projection: who belongs to which workspace, with which role.

use sea_orm::entity::prelude::*;

/// One row of `workspace_members`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workspace_members")]
pub struct Model {
    /// Workspace id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    /// Member.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
