//! The message history projection (`messages`), fed from the room events
//! (`message:new`, `message:updated`, `message:deleted`) of the bus log.
//! Its checkpoint is the row `history` of `projection_checkpoints`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, boolean, text, text_null};

/// Creates the `messages` table and its `(room, seq)` index.
#[derive(Debug, Clone, Copy, Default, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    Room,
    Seq,
    Author,
    Body,
    ThreadId,
    CreatedAt,
    UpdatedAt,
    Deleted,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(text(Messages::Id).primary_key())
                    .col(text(Messages::Room))
                    .col(big_integer(Messages::Seq).unique_key())
                    .col(text(Messages::Author))
                    .col(text(Messages::Body))
                    .col(text_null(Messages::ThreadId))
                    .col(text(Messages::CreatedAt))
                    .col(text_null(Messages::UpdatedAt))
                    .col(boolean(Messages::Deleted))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_room_seq")
                    .table(Messages::Table)
                    .col(Messages::Room)
                    .col(Messages::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Messages::Table).if_exists().to_owned())
            .await
    }
}
