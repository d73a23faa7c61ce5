//! Per-projection progress: the last applied event sequence.

use sea_orm::entity::prelude::*;

/// One row of `projection_checkpoints`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projection_checkpoints")]
pub struct Model {
    /// Projection name (`membership`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Last applied event sequence.
    pub last_seq: i64,
    /// The log the sequence belongs to ([`confab_bus::LogInfo::id`]), for
    /// projections of the bus log; `None` for the others and before the
    /// first check.
    pub log_id: Option<String>,
}

/// No relations are declared: the projections carry no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
