//! The SQL schema of Confab, as [sea-orm-migration] migrations.
//!
//! One schema serves Postgres (production) and SQLite (the embedded,
//! all-in-one run); every migration here is written with the portable
//! sea-query schema builder, never with backend-specific SQL.
//!
//! Run them with [`Migrator::up`] (`Migrator::up(&db, None)`), which creates
//! the bookkeeping table `seaql_migrations` and applies whatever is pending.
//!
//! [sea-orm-migration]: https://docs.rs/sea-orm-migration

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

pub mod m20260101_000001_membership;
pub mod m20260201_000001_messages;
pub mod m20260301_000001_bus_log;

/// Every migration of the Confab schema, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_membership::Migration),
            Box::new(m20260201_000001_messages::Migration),
            Box::new(m20260301_000001_bus_log::Migration),
        ]
    }
}
