//! Projection: DM participants.

use sea_orm::entity::prelude::*;

/// One row of `dm_participants`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dm_participants")]
pub struct Model {
    /// Conversation id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub dm_id: String,
    /// Participant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
