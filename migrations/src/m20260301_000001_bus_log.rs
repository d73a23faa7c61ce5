//! The all-in-one's room event log (`bus_log`, `bus_log_messages`), so
//! that the in-process bus survives restarts with its sequence, and the
//! identity of the log each projection checkpoint belongs to
//! (`projection_checkpoints.log_id`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, text, text_null};

/// Creates the log tables and adds `projection_checkpoints.log_id`.
#[derive(Debug, Clone, Copy, Default, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BusLog {
    Table,
    Name,
    LogId,
    LastSeq,
}

#[derive(DeriveIden)]
enum BusLogMessages {
    Table,
    Seq,
    Room,
    Event,
    ArgsJson,
    Headers,
    MsgId,
    StoredAtMs,
}

#[derive(DeriveIden)]
enum ProjectionCheckpoints {
    Table,
    LogId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BusLog::Table)
                    .if_not_exists()
                    .col(text(BusLog::Name).primary_key())
                    .col(text(BusLog::LogId))
                    .col(big_integer(BusLog::LastSeq))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BusLogMessages::Table)
                    .if_not_exists()
                    .col(big_integer(BusLogMessages::Seq).primary_key())
                    .col(text(BusLogMessages::Room))
                    .col(text(BusLogMessages::Event))
                    .col(text(BusLogMessages::ArgsJson))
                    .col(text(BusLogMessages::Headers))
                    .col(text_null(BusLogMessages::MsgId))
                    .col(big_integer(BusLogMessages::StoredAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectionCheckpoints::Table)
                    .add_column(text_null(ProjectionCheckpoints::LogId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectionCheckpoints::Table)
                    .drop_column(ProjectionCheckpoints::LogId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(BusLogMessages::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(BusLog::Table).if_exists().to_owned())
            .await
    }
}
