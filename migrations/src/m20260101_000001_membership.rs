//! The membership service's tables: the SQL event store (`events`) and the
//! projections the read model queries.
//!
//! Conventions: ids are text (validated `[A-Za-z0-9_-]{1,128}` by the
//! domain), sequences and timestamps are 64-bit integers, enums are stored
//! as their snake_case names. No foreign keys: projections are rebuilt from
//! the log in event order, and the log is the only authority.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto, boolean, text};

/// Creates the event store and the membership projections.
#[derive(Debug, Clone, Copy, Default, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    Aggregate,
    PrevSeq,
    EventId,
    Type,
    Envelope,
    At,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    Owner,
    CreatedSeq,
}

#[derive(DeriveIden)]
enum WorkspaceMembers {
    Table,
    WorkspaceId,
    UserId,
    Role,
}

#[derive(DeriveIden)]
enum Channels {
    Table,
    Id,
    WorkspaceId,
    Name,
    Visibility,
    Archived,
    CreatedBy,
}

#[derive(DeriveIden)]
enum ChannelMembers {
    Table,
    ChannelId,
    UserId,
    JoinedVia,
}

#[derive(DeriveIden)]
enum Dms {
    Table,
    Id,
    WorkspaceId,
    IsGroup,
    OpenedBy,
}

#[derive(DeriveIden)]
enum DmParticipants {
    Table,
    DmId,
    UserId,
}

#[derive(DeriveIden)]
enum ProjectionCheckpoints {
    Table,
    Name,
    LastSeq,
}

fn index(name: &str, table: impl IntoIden) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(table)
        .if_not_exists()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The event log. `seq` is the global order; `prev_seq` chains the
        // events of one aggregate (0 for its first). UNIQUE(aggregate,
        // prev_seq) makes two appends decided against the same state
        // conflict; UNIQUE(event_id) makes retries idempotent.
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Events::Seq))
                    .col(text(Events::Aggregate))
                    .col(big_integer(Events::PrevSeq))
                    .col(text(Events::EventId))
                    .col(text(Events::Type))
                    .col(text(Events::Envelope))
                    .col(big_integer(Events::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ux_events_aggregate_prev_seq", Events::Table)
                    .col(Events::Aggregate)
                    .col(Events::PrevSeq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ux_events_event_id", Events::Table)
                    .col(Events::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .if_not_exists()
                    .col(text(Workspaces::Id).primary_key())
                    .col(text(Workspaces::Name))
                    .col(text(Workspaces::Owner))
                    .col(big_integer(Workspaces::CreatedSeq))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkspaceMembers::Table)
                    .if_not_exists()
                    .col(text(WorkspaceMembers::WorkspaceId))
                    .col(text(WorkspaceMembers::UserId))
                    .col(text(WorkspaceMembers::Role))
                    .primary_key(
                        Index::create()
                            .col(WorkspaceMembers::WorkspaceId)
                            .col(WorkspaceMembers::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ix_workspace_members_user_id", WorkspaceMembers::Table)
                    .col(WorkspaceMembers::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Channels::Table)
                    .if_not_exists()
                    .col(text(Channels::Id).primary_key())
                    .col(text(Channels::WorkspaceId))
                    .col(text(Channels::Name))
                    .col(text(Channels::Visibility))
                    .col(boolean(Channels::Archived).default(false))
                    .col(text(Channels::CreatedBy))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ix_channels_workspace_id", Channels::Table)
                    .col(Channels::WorkspaceId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ChannelMembers::Table)
                    .if_not_exists()
                    .col(text(ChannelMembers::ChannelId))
                    .col(text(ChannelMembers::UserId))
                    .col(text(ChannelMembers::JoinedVia))
                    .primary_key(
                        Index::create()
                            .col(ChannelMembers::ChannelId)
                            .col(ChannelMembers::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ix_channel_members_user_id", ChannelMembers::Table)
                    .col(ChannelMembers::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Dms::Table)
                    .if_not_exists()
                    .col(text(Dms::Id).primary_key())
                    .col(text(Dms::WorkspaceId))
                    .col(boolean(Dms::IsGroup))
                    .col(text(Dms::OpenedBy))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(DmParticipants::Table)
                    .if_not_exists()
                    .col(text(DmParticipants::DmId))
                    .col(text(DmParticipants::UserId))
                    .primary_key(
                        Index::create()
                            .col(DmParticipants::DmId)
                            .col(DmParticipants::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ix_dm_participants_user_id", DmParticipants::Table)
                    .col(DmParticipants::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProjectionCheckpoints::Table)
                    .if_not_exists()
                    .col(text(ProjectionCheckpoints::Name).primary_key())
                    .col(big_integer(ProjectionCheckpoints::LastSeq))
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ProjectionCheckpoints::Table.into_iden(),
            DmParticipants::Table.into_iden(),
            Dms::Table.into_iden(),
            ChannelMembers::Table.into_iden(),
            Channels::Table.into_iden(),
            WorkspaceMembers::Table.into_iden(),
            Workspaces::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
