//! [`SqlReadModel`]: membership queries over the projection tables.

use std::time::Duration;

use async_trait::async_trait;
use confab_events::{RoomId, RoomKind, UserId};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checkpoint;
use super::entities::{
    channel_members, channels, dm_participants, dms, workspace_members, workspaces,
};
use super::projector::PROJECTION_NAME;
use crate::read_model::{Created, JoinDecision, QueryError, ReadModel};

/// How often `wait_for` re-reads the checkpoint when nothing signals
/// progress (no projector in this process).
const POLL_UNSIGNALLED: Duration = Duration::from_millis(20);

/// How often `wait_for` re-reads the checkpoint while also listening to a
/// projector's progress signal.
const POLL_SIGNALLED: Duration = Duration::from_millis(250);

/// Users per workspace lookup ([`ReadModel::workspaces_of`]): every query
/// binds exactly this many ids. The driver caches a prepared statement per
/// distinct SQL text on each connection (sqlx: 100 per connection), and an
/// `IN` list sized to each batch made up to 512 texts of up to 512
/// parameters: the membership service's memory grew for as long as new
/// batch sizes turned up (5 MiB/h in the soak), and a Postgres server's
/// with it.
const LOOKUP_IDS: usize = 64;

/// [`ReadModel`] over the SQL projections written by
/// [`Projector`](super::Projector).
///
/// `wait_for` reads the checkpoint from the database; with
/// [`with_progress`](Self::with_progress) it also wakes as soon as a
/// projector in this process commits, otherwise it polls every 20 ms.
#[derive(Clone)]
pub struct SqlReadModel {
    db: DatabaseConnection,
    progress: Option<watch::Receiver<u64>>,
}

impl std::fmt::Debug for SqlReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlReadModel")
            .field("backend", &self.db.get_database_backend())
            .field("signalled", &self.progress.is_some())
            .finish()
    }
}

impl SqlReadModel {
    /// A read model on a connection whose schema is up to date (see
    /// [`connect`](super::connect)).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db, progress: None }
    }

    /// Wakes `wait_for` on the progress signal of a projector
    /// ([`Projector::subscribe`](super::Projector::subscribe)).
    pub fn with_progress(mut self, progress: watch::Receiver<u64>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Whether the room exists in the projections (`user:` rooms always do).
    async fn exists(&self, room: &RoomId) -> Result<bool, DbErr> {
        let id = room.id();
        let count = match room.kind() {
            RoomKind::User => return Ok(true),
            RoomKind::Workspace => {
                count::<workspaces::Entity>(&self.db, [(workspaces::Column::Id, id)]).await?
            }
            RoomKind::Channel => {
                count::<channels::Entity>(&self.db, [(channels::Column::Id, id)]).await?
            }
            RoomKind::Dm => count::<dms::Entity>(&self.db, [(dms::Column::Id, id)]).await?,
        };
        Ok(count > 0)
    }

    /// Whether `room` is an archived (read-only) channel.
    async fn archived(&self, room: &RoomId) -> Result<bool, DbErr> {
        if room.kind() != RoomKind::Channel {
            return Ok(false);
        }
        let found = channels::Entity::find()
            .filter(channels::Column::Id.eq(room.id()))
            .filter(channels::Column::Archived.eq(true))
            .count(&self.db)
            .await?;
        Ok(found > 0)
    }

    async fn member(&self, user: &UserId, room: &RoomId) -> Result<bool, DbErr> {
        let (id, user) = (room.id(), user.as_str());
        match room.kind() {
            RoomKind::User => Ok(id == user),
            RoomKind::Workspace => is_in::<workspace_members::Entity>(&self.db, id, user).await,
            RoomKind::Channel => is_in::<channel_members::Entity>(&self.db, id, user).await,
            RoomKind::Dm => is_in::<dm_participants::Entity>(&self.db, id, user).await,
        }
    }
}

/// A table of who belongs to which room of one kind.
trait MemberTable: EntityTrait<Model: Sync> {
    /// The column naming the room (without its kind).
    const ROOM: Self::Column;
    /// The column naming the member.
    const USER: Self::Column;
}

impl MemberTable for workspace_members::Entity {
    const ROOM: Self::Column = workspace_members::Column::WorkspaceId;
    const USER: Self::Column = workspace_members::Column::UserId;
}

impl MemberTable for channel_members::Entity {
    const ROOM: Self::Column = channel_members::Column::ChannelId;
    const USER: Self::Column = channel_members::Column::UserId;
}

impl MemberTable for dm_participants::Entity {
    const ROOM: Self::Column = dm_participants::Column::DmId;
    const USER: Self::Column = dm_participants::Column::UserId;
}

/// How many rows of `E` match every `(column, value)` of `filters`.
async fn count<E: EntityTrait<Model: Sync>>(
    db: &DatabaseConnection,
    filters: impl IntoIterator<Item = (E::Column, &str)>,
) -> Result<u64, DbErr> {
    let mut query = E::find();
    for (column, value) in filters {
        query = query.filter(column.eq(value));
    }
    query.count(db).await
}

/// Whether `user` is in room `room` of `T`.
async fn is_in<T: MemberTable>(
    db: &DatabaseConnection,
    room: &str,
    user: &str,
) -> Result<bool, DbErr> {
    Ok(count::<T>(db, [(T::ROOM, room), (T::USER, user)]).await? > 0)
}

/// The `select` column of the rows of `T` whose `by` column is `value`.
async fn column_where<T: MemberTable>(
    db: &DatabaseConnection,
    select: T::Column,
    by: T::Column,
    value: &str,
) -> Result<Vec<String>, QueryError> {
    T::find()
        .select_only()
        .column(select)
        .filter(by.eq(value))
        .into_tuple()
        .all(db)
        .await
        .map_err(unavailable)
}

/// The rooms of `T` that `user` is in.
async fn rooms_in<T: MemberTable>(
    db: &DatabaseConnection,
    user: &str,
) -> Result<Vec<String>, QueryError> {
    column_where::<T>(db, T::ROOM, T::USER, user).await
}

/// The members of room `room` of `T`.
async fn members_in<T: MemberTable>(
    db: &DatabaseConnection,
    room: &str,
) -> Result<Vec<String>, QueryError> {
    column_where::<T>(db, T::USER, T::ROOM, room).await
}

#[async_trait]
impl ReadModel for SqlReadModel {
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, QueryError> {
        let uid = user.as_str();
        let workspace_ids = rooms_in::<workspace_members::Entity>(&self.db, uid).await?;
        let channel_ids = rooms_in::<channel_members::Entity>(&self.db, uid).await?;
        let dm_ids = rooms_in::<dm_participants::Entity>(&self.db, uid).await?;
        let mut rooms = Vec::with_capacity(workspace_ids.len() + channel_ids.len() + dm_ids.len());
        for (kind, ids) in [
            (RoomKind::Workspace, workspace_ids),
            (RoomKind::Channel, channel_ids),
            (RoomKind::Dm, dm_ids),
        ] {
            for id in ids {
                rooms.push(room(kind, &id)?);
            }
        }
        rooms.sort();
        Ok(rooms)
    }

    async fn members_of(&self, room: &RoomId) -> Result<Vec<UserId>, QueryError> {
        let id = room.id();
        let users: Vec<String> = match room.kind() {
            RoomKind::User => vec![id.to_owned()],
            RoomKind::Workspace => members_in::<workspace_members::Entity>(&self.db, id).await?,
            RoomKind::Channel => members_in::<channel_members::Entity>(&self.db, id).await?,
            RoomKind::Dm => members_in::<dm_participants::Entity>(&self.db, id).await?,
        };
        let mut users = users
            .iter()
            .map(|u| {
                UserId::parse(u).map_err(|e| {
                    QueryError::Unavailable(format!("bad user id {u:?} in {room}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Byte order, whatever the database collation.
        users.sort();
        Ok(users)
    }

    async fn is_member(&self, user: &UserId, room: &RoomId) -> Result<bool, QueryError> {
        self.member(user, room).await.map_err(unavailable)
    }

    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<JoinDecision, QueryError> {
        if self.member(user, room).await.map_err(unavailable)? {
            return Ok(JoinDecision {
                allowed: true,
                reason: None,
                read_only: self.archived(room).await.map_err(unavailable)?,
            });
        }
        let reason = if self.exists(room).await.map_err(unavailable)? {
            format!("not a member of {room}")
        } else {
            "no such room".to_owned()
        };
        Ok(JoinDecision {
            allowed: false,
            reason: Some(reason),
            read_only: false,
        })
    }

    async fn workspaces_of(&self, users: &[UserId]) -> Result<Vec<(UserId, RoomId)>, QueryError> {
        let mut rows: Vec<(String, String)> = Vec::new();
        for chunk in users.chunks(LOOKUP_IDS) {
            let mut ids: Vec<&str> = chunk.iter().map(UserId::as_str).collect();
            // A short chunk repeats its last id (`IN` ignores repeats): the
            // statement keeps one shape, so each connection prepares and
            // caches it once instead of once per batch size.
            let last = ids[ids.len() - 1];
            ids.resize(LOOKUP_IDS, last);
            let found: Vec<(String, String)> = workspace_members::Entity::find()
                .select_only()
                .column(workspace_members::Column::UserId)
                .column(workspace_members::Column::WorkspaceId)
                .filter(workspace_members::Column::UserId.is_in(ids))
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(unavailable)?;
            rows.extend(found);
        }
        rows.into_iter()
            .map(|(user, ws)| {
                let user = UserId::parse(&user)
                    .map_err(|e| QueryError::Unavailable(format!("bad user id {user:?}: {e}")))?;
                Ok((user, room(RoomKind::Workspace, &ws)?))
            })
            .collect()
    }

    async fn created_by(&self, user: &UserId) -> Result<Created, QueryError> {
        let workspaces = workspaces::Entity::find()
            .filter(workspaces::Column::Owner.eq(user.as_str()))
            .count(&self.db)
            .await
            .map_err(unavailable)?;
        let channels = channels::Entity::find()
            .filter(channels::Column::CreatedBy.eq(user.as_str()))
            .count(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(Created {
            workspaces,
            channels,
        })
    }

    async fn checkpoint(&self) -> Result<u64, QueryError> {
        checkpoint::read(&self.db, PROJECTION_NAME)
            .await
            .map_err(unavailable)
    }

    async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), QueryError> {
        let deadline = Instant::now() + timeout;
        let mut progress = self.progress.clone();
        loop {
            if let Some(rx) = progress.as_mut() {
                // Seen before reading, so a commit after the read wakes us.
                rx.borrow_and_update();
            }
            let at = self.checkpoint().await?;
            if at >= seq {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(QueryError::Behind { at, wanted: seq });
            }
            let remaining = deadline - now;
            match progress.as_mut() {
                Some(rx) => {
                    let pause = remaining.min(POLL_SIGNALLED);
                    match tokio::time::timeout(pause, rx.changed()).await {
                        Ok(Ok(())) | Err(_) => {}
                        // The projector is gone: fall back to polling.
                        Ok(Err(_)) => progress = None,
                    }
                }
                None => tokio::time::sleep(remaining.min(POLL_UNSIGNALLED)).await,
            }
        }
    }
}

fn room(kind: RoomKind, id: &str) -> Result<RoomId, QueryError> {
    RoomId::new(kind, id).map_err(|e| {
        QueryError::Unavailable(format!(
            "bad {} id {id:?} in the projections: {e}",
            kind.as_str()
        ))
    })
}

fn unavailable(e: DbErr) -> QueryError {
    QueryError::Unavailable(e.to_string())
}
