//! [`Projector`]: folds membership events into the projection tables.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use confab_events::membership::{JoinedVia, MembershipEvent, Role, Visibility};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use tokio::sync::{Mutex, watch};

use super::entities::{
    channel_members, channels, dm_participants, dms, workspace_members, workspaces,
};
use super::{begin_write, checkpoint, to_db_seq};
use crate::store::{EventStore, StoreError, Stored};

/// The row of `projection_checkpoints` this projector owns.
pub const PROJECTION_NAME: &str = "membership";

/// First and longest pause before [`Projector::run`] retries after a
/// database or store failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Short: a failure is often a lost consumer or a restarted server that is
/// back a moment later, and a retry costs one query.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A projector failure.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event store failed (or holds an event that cannot be read).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection database failed.
    #[error("projection database error: {0}")]
    Db(#[from] DbErr),
}

/// Applies stored membership events to the projection tables
/// (`workspaces`, `workspace_members`, `channels`, `channel_members`, `dms`,
/// `dm_participants`).
///
/// Each event is applied in one transaction together with the checkpoint
/// row `projection_checkpoints(name = 'membership')`; events at or below
/// the checkpoint are skipped, so a restart never applies an event twice and
/// never skips one. The checkpoint row is locked for the transaction
/// (`SELECT ... FOR UPDATE` on Postgres, the write lock on SQLite), so even
/// two projector processes on one database stay correct.
///
/// The tables are a pure function of the events: `workspace.member_removed`
/// touches only `workspace_members` (the command side emits explicit
/// `channel.member_left` events when a removal must cascade).
///
/// Cheap to clone; clones share the progress signal and serialise
/// [`apply`](Self::apply) against [`rebuild`](Self::rebuild).
#[derive(Clone)]
pub struct Projector {
    db: DatabaseConnection,
    progress: Arc<watch::Sender<u64>>,
    /// Held by each apply and for a whole rebuild.
    exclusive: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("backend", &self.db.get_database_backend())
            .field("progress", &*self.progress.borrow())
            .finish()
    }
}

impl Projector {
    /// A projector on a connection whose schema is up to date (see
    /// [`connect`](super::connect)).
    pub fn new(db: DatabaseConnection) -> Self {
        let (progress, _) = watch::channel(0);
        Self {
            db,
            progress: Arc::new(progress),
            exclusive: Arc::new(Mutex::new(())),
        }
    }

    /// A signal carrying the last sequence this projector committed; give it
    /// to [`SqlReadModel::with_progress`](super::SqlReadModel::with_progress)
    /// so `wait_for` wakes as soon as an event is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The last applied sequence, from the database (0 before the first).
    pub async fn checkpoint(&self) -> Result<u64, ProjectionError> {
        Ok(checkpoint::read(&self.db, PROJECTION_NAME).await?)
    }

    /// Applies one event unless its sequence is at or below the checkpoint.
    /// Returns whether it was applied.
    pub async fn apply(&self, stored: &Stored) -> Result<bool, ProjectionError> {
        let _exclusive = self.exclusive.lock().await;
        let txn = begin_write(&self.db).await?;
        let checkpoint = checkpoint::lock(&txn, PROJECTION_NAME).await?;
        if stored.seq <= checkpoint {
            txn.rollback().await?;
            return Ok(false);
        }
        apply_event(&txn, stored).await?;
        checkpoint::write(&txn, PROJECTION_NAME, stored.seq).await?;
        txn.commit().await?;
        self.signal(stored.seq);
        Ok(true)
    }

    /// Tails `store` from the checkpoint + 1 and applies every event, until
    /// `shutdown` completes (then returns `Ok`). Database and store outages
    /// are retried with backoff, resuming from the checkpoint; an event that
    /// cannot be decoded ([`StoreError::Corrupt`]) stops the projector with
    /// an error, since skipping it would leave the tables wrong.
    pub async fn run(
        &self,
        store: Arc<dyn EventStore>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut retry = RETRY_MIN;
        loop {
            let before = *self.progress.borrow();
            match self.follow(&*store, &mut shutdown).await {
                Ok(()) => return Ok(()),
                Err(ProjectionError::Store(e @ StoreError::Corrupt { .. })) => {
                    tracing::error!(error = %e, "membership projector stopped on a corrupt event");
                    return Err(e.into());
                }
                Err(e) => {
                    if *self.progress.borrow() > before {
                        // It had been working: this is a fresh failure.
                        retry = RETRY_MIN;
                    }
                    tracing::warn!(error = %e, retry_in = ?retry, "membership projector failed; retrying");
                }
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// One tailing session: returns `Ok` on shutdown, `Err` on a failure.
    async fn follow(
        &self,
        store: &dyn EventStore,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), ProjectionError> {
        let from = self.checkpoint().await? + 1;
        // Known progress from the start (lag is measured against it).
        self.signal(from - 1);
        let mut events = store.tail(from).await?;
        loop {
            let item = tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                item = events.next() => item,
            };
            match item {
                Some(Ok(stored)) => {
                    // Not raced against shutdown: an event is applied whole.
                    let span = stored.process_span(PROJECTION_NAME);
                    self.apply(&stored).instrument(span).await?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(StoreError::Unavailable("event stream ended".into()).into());
                }
            }
        }
    }

    /// Rebuilds the projections from scratch: deletes every projection row,
    /// resets the checkpoint, and replays the log from sequence 1 up to the
    /// store's last sequence when the rebuild began. All of it happens in
    /// one transaction, so readers see the old tables until the new ones
    /// are complete, and a running [`run`](Self::run) (in this process or
    /// another) simply resumes after the rebuilt checkpoint. The events are
    /// read into memory first (the whole log: fine for membership-sized
    /// logs). Returns the new checkpoint.
    pub async fn rebuild(&self, store: &dyn EventStore) -> Result<u64, ProjectionError> {
        let _exclusive = self.exclusive.lock().await;
        loop {
            let last = store.last_seq().await?;
            let history = read_history(store, last).await?;
            let txn = begin_write(&self.db).await?;
            // Locked from here on: no other projector can move it.
            let current = checkpoint::lock(&txn, PROJECTION_NAME).await?;
            if current > last {
                // Another process applied events appended after `last` was
                // read: start again with a longer history rather than lose
                // them.
                txn.rollback().await?;
                continue;
            }
            workspaces::Entity::delete_many().exec(&txn).await?;
            workspace_members::Entity::delete_many().exec(&txn).await?;
            channels::Entity::delete_many().exec(&txn).await?;
            channel_members::Entity::delete_many().exec(&txn).await?;
            dms::Entity::delete_many().exec(&txn).await?;
            dm_participants::Entity::delete_many().exec(&txn).await?;
            let mut checkpoint = 0;
            for stored in &history {
                apply_event(&txn, stored).await?;
                checkpoint = stored.seq;
            }
            // The checkpoint row is updated in place, never deleted, so a
            // concurrent projector blocked on it re-reads the final value.
            checkpoint::write(&txn, PROJECTION_NAME, checkpoint).await?;
            txn.commit().await?;
            self.signal(checkpoint);
            return Ok(checkpoint);
        }
    }

    fn signal(&self, seq: u64) {
        self.progress.send_if_modified(|last| {
            let newer = seq > *last;
            if newer {
                *last = seq;
            }
            newer
        });
    }
}

/// Every event of the log up to `last` (inclusive), in order.
async fn read_history(store: &dyn EventStore, last: u64) -> Result<Vec<Stored>, StoreError> {
    let mut history = Vec::new();
    if last == 0 {
        return Ok(history);
    }
    let mut events = store.tail(1).await?;
    while let Some(item) = events.next().await {
        let stored = item?;
        let seq = stored.seq;
        if seq > last {
            break;
        }
        history.push(stored);
        if seq == last {
            break;
        }
    }
    Ok(history)
}

/// The stored text of a role.
pub(super) fn role_text(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn visibility_text(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn joined_via_text(via: &JoinedVia) -> String {
    match via {
        JoinedVia::Created => "created".to_owned(),
        JoinedVia::Joined => "joined".to_owned(),
        JoinedVia::Invited { by } => format!("invited:{by}"),
    }
}

/// Applies one event's effect (not the checkpoint).
async fn apply_event<C: ConnectionTrait>(txn: &C, stored: &Stored) -> Result<(), DbErr> {
    use MembershipEvent::*;
    match &stored.envelope.event {
        WorkspaceCreated {
            workspace,
            name,
            owner,
        } => {
            workspaces::Entity::insert(workspaces::ActiveModel {
                id: Set(workspace.to_string()),
                name: Set(name.clone()),
                owner: Set(owner.to_string()),
                created_seq: Set(to_db_seq(stored.seq)),
            })
            .on_conflict(
                OnConflict::column(workspaces::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
            upsert_workspace_member(txn, workspace.as_str(), owner.as_str(), Role::Owner).await
        }
        WorkspaceMemberAdded {
            workspace,
            user,
            role,
        } => upsert_workspace_member(txn, workspace.as_str(), user.as_str(), *role).await,
        WorkspaceMemberRemoved { workspace, user } => {
            workspace_members::Entity::delete_many()
                .filter(workspace_members::Column::WorkspaceId.eq(workspace.as_str()))
                .filter(workspace_members::Column::UserId.eq(user.as_str()))
                .exec(txn)
                .await?;
            Ok(())
        }
        ChannelCreated {
            channel,
            workspace,
            name,
            visibility,
            created_by,
        } => {
            channels::Entity::insert(channels::ActiveModel {
                id: Set(channel.to_string()),
                workspace_id: Set(workspace.to_string()),
                name: Set(name.clone()),
                visibility: Set(visibility_text(*visibility).to_owned()),
                archived: Set(false),
                created_by: Set(created_by.to_string()),
            })
            .on_conflict(
                OnConflict::column(channels::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
            insert_channel_member(
                txn,
                channel.as_str(),
                created_by.as_str(),
                &JoinedVia::Created,
            )
            .await
        }
        ChannelMemberJoined { channel, user, via } => {
            insert_channel_member(txn, channel.as_str(), user.as_str(), via).await
        }
        ChannelMemberLeft { channel, user, .. } => {
            channel_members::Entity::delete_many()
                .filter(channel_members::Column::ChannelId.eq(channel.as_str()))
                .filter(channel_members::Column::UserId.eq(user.as_str()))
                .exec(txn)
                .await?;
            Ok(())
        }
        ChannelArchived { channel, .. } => {
            channels::Entity::update_many()
                .col_expr(channels::Column::Archived, Expr::value(true))
                .filter(channels::Column::Id.eq(channel.as_str()))
                .exec(txn)
                .await?;
            Ok(())
        }
        DmOpened {
            dm,
            workspace,
            participants,
            opened_by,
        } => {
            let mut distinct: Vec<&str> = participants.iter().map(|u| u.as_str()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            dms::Entity::insert(dms::ActiveModel {
                id: Set(dm.to_string()),
                workspace_id: Set(workspace.to_string()),
                is_group: Set(distinct.len() > 2),
                opened_by: Set(opened_by.to_string()),
            })
            .on_conflict(OnConflict::column(dms::Column::Id).do_nothing().to_owned())
            .exec_without_returning(txn)
            .await?;
            for user in distinct {
                insert_dm_participant(txn, dm.as_str(), user).await?;
            }
            Ok(())
        }
        DmParticipantAdded { dm, user, .. } => {
            insert_dm_participant(txn, dm.as_str(), user.as_str()).await?;
            let count = dm_participants::Entity::find()
                .filter(dm_participants::Column::DmId.eq(dm.as_str()))
                .count(txn)
                .await?;
            if count > 2 {
                dms::Entity::update_many()
                    .col_expr(dms::Column::IsGroup, Expr::value(true))
                    .filter(dms::Column::Id.eq(dm.as_str()))
                    .exec(txn)
                    .await?;
            }
            Ok(())
        }
        DmParticipantRemoved { dm, user, .. } => {
            dm_participants::Entity::delete_many()
                .filter(dm_participants::Column::DmId.eq(dm.as_str()))
                .filter(dm_participants::Column::UserId.eq(user.as_str()))
                .exec(txn)
                .await?;
            Ok(())
        }
    }
}

/// Adds a workspace member, or sets the role of an existing one (the role
/// is current state: the latest event wins).
async fn upsert_workspace_member<C: ConnectionTrait>(
    txn: &C,
    workspace: &str,
    user: &str,
    role: Role,
) -> Result<(), DbErr> {
    workspace_members::Entity::insert(workspace_members::ActiveModel {
        workspace_id: Set(workspace.to_owned()),
        user_id: Set(user.to_owned()),
        role: Set(role_text(role).to_owned()),
    })
    .on_conflict(
        OnConflict::columns([
            workspace_members::Column::WorkspaceId,
            workspace_members::Column::UserId,
        ])
        .update_column(workspace_members::Column::Role)
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// Adds a channel member; an existing member keeps how they first came in.
async fn insert_channel_member<C: ConnectionTrait>(
    txn: &C,
    channel: &str,
    user: &str,
    via: &JoinedVia,
) -> Result<(), DbErr> {
    channel_members::Entity::insert(channel_members::ActiveModel {
        channel_id: Set(channel.to_owned()),
        user_id: Set(user.to_owned()),
        joined_via: Set(joined_via_text(via)),
    })
    .on_conflict(
        OnConflict::columns([
            channel_members::Column::ChannelId,
            channel_members::Column::UserId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

async fn insert_dm_participant<C: ConnectionTrait>(
    txn: &C,
    dm: &str,
    user: &str,
) -> Result<(), DbErr> {
    dm_participants::Entity::insert(dm_participants::ActiveModel {
        dm_id: Set(dm.to_owned()),
        user_id: Set(user.to_owned()),
    })
    .on_conflict(
        OnConflict::columns([
            dm_participants::Column::DmId,
            dm_participants::Column::UserId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}
