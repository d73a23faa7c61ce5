//! [`Notifier`]: turns membership events into room events on the bus, so
//! gateways (and their browsers) react to joins, departures and archives.
//!
//! | Event | Room | Socket.IO event | Argument |
//! |---|---|---|---|
//! | `workspace.created` | `user:{owner}` | `room:joined` | `{"room":"workspace:w"}` |
//! | `workspace.member_added` | `user:{u}` | `room:joined` | `{"room":"workspace:w"}` |
//! | | `workspace:w` | `member:joined` | `{"room":"workspace:w","user":"u"}` |
//! | `workspace.member_removed` | `user:{u}` | `room:left` | `{"room":"workspace:w","reason":"removed_from_workspace"}` |
//! | | `workspace:w` | `member:left` | `{"room":"workspace:w","user":"u","reason":...}` |
//! | `channel.created` | `user:{creator}` | `room:joined` | `{"room":"channel:42"}` |
//! | `channel.member_joined` | `user:{u}` | `room:joined` | `{"room":"channel:42"}` |
//! | | `channel:42` | `member:joined` | `{"room":"channel:42","user":"u"}` |
//! | `channel.member_left` | `user:{u}` | `room:left` | `{"room":"channel:42","reason":"left"\|"kicked"\|"removed_from_workspace"}` |
//! | | `channel:42` | `member:left` | `{"room":"channel:42","user":"u","reason":...}` |
//! | `channel.archived` | `channel:42` | `channel:archived` | `{"room":"channel:42","by":"u"}` |
//! | `dm.opened` | `user:{p}` for each participant | `room:joined` | `{"room":"dm:7"}` |
//! | `dm.participant_added` | `user:{u}` | `room:joined` | `{"room":"dm:7"}` |
//! | | `dm:7` | `member:joined` | `{"room":"dm:7","user":"u"}` |
//!
//! An event is announced only once the read model applied it (when the
//! notifier has one, [`Notifier::after_projection`]): a gateway that hears
//! `room:left` and then asks `may_join` gets the new answer, never the one
//! from before the change.
//!
//! Every message carries `msg_id = "{event id}:{target room}"`: after a
//! restart the notifier re-publishes from its last saved checkpoint, and
//! the JetStream bus drops what it already stored (within its duplicate
//! window). Delivery is at least once otherwise.
//!
//! The checkpoint is a [`CheckpointStore`]:
//! [`SqlCheckpoint`](crate::sql::SqlCheckpoint) keeps it in the projections
//! database (row `membership-notifier` of
//! `projection_checkpoints`), [`MemoryCheckpoint`] in memory only (a fresh
//! process starts at the log's end: events appended while no notifier ran
//! are not announced).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use confab_bus::{Bus, BusError, BusMessage};
use confab_events::membership::{EventEnvelope, LeftBecause, MembershipEvent};
use confab_events::socket::{
    self, LeaveReason, MemberJoined, MemberLeft, RoomJoined, RoomLeft, ServerToClient,
};
use confab_events::{RoomId, UserId};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::read_model::ReadModel;
use crate::store::{EventStore, StoreError};

/// Longest wait for the read model before an event is announced anyway (a
/// stopped projection must not silence membership changes; readiness
/// reports it).
const PROJECTION_WAIT: Duration = Duration::from_secs(5);

/// Longest pause between two attempts to follow the log or to publish.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The checkpoint row name [`SqlCheckpoint`](crate::sql::SqlCheckpoint)
/// uses by default.
pub const NOTIFIER_CHECKPOINT: &str = "membership-notifier";

/// Where the notifier remembers the last event it announced.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last announced sequence, `None` before the first run.
    async fn load(&self) -> Result<Option<u64>, StoreError>;
    /// Records the last announced sequence.
    async fn save(&self, seq: u64) -> Result<(), StoreError>;
}

/// A checkpoint kept in memory: lost with the process.
#[derive(Debug, Default)]
pub struct MemoryCheckpoint {
    /// 0 = never saved.
    seq: AtomicU64,
}

impl MemoryCheckpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoint {
    async fn load(&self) -> Result<Option<u64>, StoreError> {
        Ok(match self.seq.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        })
    }

    async fn save(&self, seq: u64) -> Result<(), StoreError> {
        self.seq.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }
}

/// The room messages one membership event produces (see the [module
/// docs](self)), each with its `msg_id`.
pub fn messages_for(envelope: &EventEnvelope) -> Vec<(RoomId, BusMessage)> {
    use MembershipEvent::*;
    let room = envelope.event.aggregate();
    let mut out: Vec<(RoomId, ServerToClient)> = Vec::new();
    let joined = |out: &mut Vec<_>, user: &UserId| {
        let event = RoomJoined { room: room.clone() };
        out.push((RoomId::user(user), ServerToClient::RoomJoined(event)));
    };
    let member_joined = |out: &mut Vec<_>, user: &UserId| {
        let event = MemberJoined {
            room: room.clone(),
            user: user.clone(),
        };
        out.push((room.clone(), ServerToClient::MemberJoined(event)));
    };
    let left = |out: &mut Vec<_>, user: &UserId, reason: LeaveReason| {
        let event = RoomLeft {
            room: room.clone(),
            reason,
        };
        out.push((RoomId::user(user), ServerToClient::RoomLeft(event)));
        let event = MemberLeft {
            room: room.clone(),
            user: user.clone(),
            reason,
        };
        out.push((room.clone(), ServerToClient::MemberLeft(event)));
    };
    match &envelope.event {
        WorkspaceCreated { owner, .. } => joined(&mut out, owner),
        WorkspaceMemberAdded { user, .. }
        | ChannelMemberJoined { user, .. }
        | DmParticipantAdded { user, .. } => {
            joined(&mut out, user);
            member_joined(&mut out, user);
        }
        WorkspaceMemberRemoved { user, .. } => {
            left(&mut out, user, LeaveReason::RemovedFromWorkspace);
        }
        ChannelCreated { created_by, .. } => joined(&mut out, created_by),
        ChannelMemberLeft { user, because, .. } | DmParticipantRemoved { user, because, .. } => {
            let reason = match because {
                LeftBecause::Left => LeaveReason::Left,
                LeftBecause::Kicked { .. } => LeaveReason::Kicked,
                LeftBecause::RemovedFromWorkspace => LeaveReason::RemovedFromWorkspace,
            };
            left(&mut out, user, reason);
        }
        ChannelArchived { by, .. } => {
            let event = socket::ChannelArchived {
                room: room.clone(),
                by: by.clone(),
            };
            out.push((room.clone(), ServerToClient::ChannelArchived(event)));
        }
        DmOpened { participants, .. } => {
            for p in participants {
                joined(&mut out, p);
            }
        }
    }
    out.into_iter()
        .map(|(target, event)| {
            let msg = BusMessage::new(event.name(), &event.data())
                .with_msg_id(format!("{}:{target}", envelope.id));
            (target, msg)
        })
        .collect()
}

/// Tails the event store and announces membership changes on the bus.
pub struct Notifier {
    store: Arc<dyn EventStore>,
    bus: Arc<dyn Bus>,
    checkpoint: Arc<dyn CheckpointStore>,
    save_every: Duration,
    progress: watch::Sender<u64>,
    /// The last sequence already announced, once known.
    start: Option<u64>,
    /// Announces an event only after this read model applied it.
    projected: Option<Arc<dyn ReadModel>>,
}

impl Notifier {
    /// A notifier from `store` to `bus`, remembering its position in
    /// `checkpoint`.
    pub fn new(
        store: Arc<dyn EventStore>,
        bus: Arc<dyn Bus>,
        checkpoint: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self {
            store,
            bus,
            checkpoint,
            save_every: Duration::from_secs(1),
            progress: watch::channel(0).0,
            start: None,
            projected: None,
        }
    }

    /// Announces each event only after `read` applied it (bounded wait).
    pub fn after_projection(mut self, read: Arc<dyn ReadModel>) -> Self {
        self.projected = Some(read);
        self
    }

    /// Fixes where announcing starts: after the saved checkpoint, or, on
    /// the first run, after the log's current last event (the history is
    /// not announced) - that point is saved at once. Call it before the
    /// service takes commands, so none falls before the start; [`run`](Self::run)
    /// calls it when it was not called. Returns the last sequence
    /// considered announced.
    pub async fn prepare(&mut self) -> Result<u64, StoreError> {
        if let Some(seq) = self.start {
            return Ok(seq);
        }
        let seq = match self.checkpoint.load().await? {
            Some(seq) => seq,
            None => {
                let seq = self.store.last_seq().await?;
                self.checkpoint.save(seq).await?;
                seq
            }
        };
        self.start = Some(seq);
        self.progress.send_replace(seq);
        Ok(seq)
    }

    /// The last sequence announced, as it advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Runs until `shutdown` completes. Store and bus outages are retried
    /// with backoff; an event that cannot be read is skipped (logged).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut retry = Duration::from_millis(100);
        let mut last: Option<u64> = self.start;
        loop {
            let session = self.follow(&mut last, &mut shutdown);
            match session.await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "membership notifier interrupted; retrying");
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(retry) => {}
            }
            // Short: a failure is often a restarted server that is back a
            // moment later.
            retry = (retry * 2).min(RETRY_MAX);
        }
        if let Some(seq) = last
            && let Err(e) = self.checkpoint.save(seq).await
        {
            tracing::warn!(error = %e, "cannot save the notifier checkpoint at shutdown");
        }
    }

    /// One tailing session: `Ok` on shutdown.
    async fn follow(
        &self,
        last: &mut Option<u64>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), StoreError> {
        if last.is_none() {
            *last = match self.checkpoint.load().await? {
                Some(seq) => Some(seq),
                // First run: announce from now on, not the whole history.
                None => {
                    let seq = self.store.last_seq().await?;
                    self.checkpoint.save(seq).await?;
                    Some(seq)
                }
            };
        }
        let from = last.unwrap_or(0) + 1;
        self.progress.send_if_modified(|p| {
            let behind = *p < from - 1;
            *p = (*p).max(from - 1);
            behind
        });
        tracing::info!(from, "membership notifier following the event log");
        let mut events = self.store.tail(from).await?;
        let mut tick = tokio::time::interval(self.save_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = *last;
        loop {
            let item = tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                _ = tick.tick() => {
                    if *last != saved && let Some(seq) = *last {
                        match self.checkpoint.save(seq).await {
                            Ok(()) => saved = Some(seq),
                            Err(e) => tracing::warn!(error = %e, "cannot save the notifier checkpoint"),
                        }
                    }
                    continue;
                }
                item = events.next() => item,
            };
            match item {
                Some(Ok(stored)) => {
                    // The announcements' producer spans are children of
                    // this one: the command's trace reaches the gateways.
                    let span = stored.process_span(NOTIFIER_CHECKPOINT);
                    let announced = async {
                        if let Some(read) = &self.projected
                            && let Err(e) = read.wait_for(stored.seq, PROJECTION_WAIT).await
                        {
                            tracing::warn!(seq = stored.seq, error = %e, "announcing a membership event the read model has not applied");
                        }
                        for (room, msg) in messages_for(&stored.envelope) {
                            if !self.publish(&room, msg, shutdown).await {
                                return false;
                            }
                        }
                        true
                    }
                    .instrument(span)
                    .await;
                    if !announced {
                        return Ok(());
                    }
                    *last = Some(stored.seq);
                    self.progress.send_replace(stored.seq);
                }
                Some(Err(StoreError::Corrupt { seq, reason })) => {
                    // Resume after it.
                    tracing::error!(seq, %reason, "skipping an unreadable membership event");
                    *last = Some(seq);
                    return Err(StoreError::Corrupt { seq, reason });
                }
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Unavailable("event stream ended".into())),
            }
        }
    }

    /// Publishes one message, retrying while the bus is unavailable.
    /// Returns false when shutdown came first.
    async fn publish(
        &self,
        room: &RoomId,
        msg: BusMessage,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let mut retry = Duration::from_millis(50);
        loop {
            match self.bus.publish(room, msg.clone()).await {
                Ok(_) => return true,
                Err(e @ (BusError::Rejected(_) | BusError::Config(_))) => {
                    tracing::error!(%room, event = %msg.event, error = %e, "bus refused a membership notification; dropped");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(%room, error = %e, retry_in = ?retry, "cannot publish a membership notification; retrying");
                }
            }
            tokio::select! {
                () = shutdown.as_mut() => return false,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_events::membership::SCHEMA_VERSION;
    use confab_events::{ChannelId, UserId};

    #[test]
    fn kicks_announce_to_the_user_and_the_room() {
        let env = EventEnvelope {
            v: SCHEMA_VERSION,
            id: "e1".into(),
            at: 1,
            actor: None,
            event: MembershipEvent::ChannelMemberLeft {
                channel: ChannelId::parse("42").unwrap(),
                user: UserId::parse("bob").unwrap(),
                because: LeftBecause::Kicked {
                    by: UserId::parse("alice").unwrap(),
                },
            },
        };
        let msgs = messages_for(&env);
        let shown: Vec<(String, String, String, String)> = msgs
            .iter()
            .map(|(r, m)| {
                (
                    r.to_string(),
                    m.event.to_string(),
                    m.args_json.to_string(),
                    m.msg_id.as_deref().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "user:bob".into(),
                    "room:left".into(),
                    r#"[{"room":"channel:42","reason":"kicked"}]"#.into(),
                    "e1:user:bob".into()
                ),
                (
                    "channel:42".into(),
                    "member:left".into(),
                    r#"[{"room":"channel:42","user":"bob","reason":"kicked"}]"#.into(),
                    "e1:channel:42".into()
                ),
            ]
        );
    }

    #[test]
    fn dm_removals_announce_to_the_user_and_the_dm() {
        let env = EventEnvelope {
            v: SCHEMA_VERSION,
            id: "e2".into(),
            at: 1,
            actor: None,
            event: MembershipEvent::DmParticipantRemoved {
                dm: confab_events::DmId::parse("g1").unwrap(),
                user: UserId::parse("bob").unwrap(),
                because: LeftBecause::RemovedFromWorkspace,
            },
        };
        let shown: Vec<(String, String, String)> = messages_for(&env)
            .iter()
            .map(|(r, m)| (r.to_string(), m.event.to_string(), m.args_json.to_string()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "user:bob".into(),
                    "room:left".into(),
                    r#"[{"room":"dm:g1","reason":"removed_from_workspace"}]"#.into(),
                ),
                (
                    "dm:g1".into(),
                    "member:left".into(),
                    r#"[{"room":"dm:g1","user":"bob","reason":"removed_from_workspace"}]"#.into(),
                ),
            ]
        );
    }
}
