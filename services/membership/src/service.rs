//! [`MembershipService`]: runs commands (load, decide, append with
//! optimistic concurrency, wait for the projections) and answers queries.
//!
//! # Commands
//!
//! 1. The command's aggregate state comes from an in-memory cache (state
//!    and last sequence per aggregate), loaded from the store on a miss.
//!    The state of the workspace a channel or DM command depends on is
//!    checked against the store's version of it first ([`EventStore::version`]),
//!    since another instance may have changed it.
//! 2. [`decide`] answers the event or a refusal. A refusal decided on a
//!    cached state is double-checked against the store's version (another
//!    instance may have created the channel a moment ago).
//! 3. The event is appended with `expected` = the state's sequence.
//!    Commands on one aggregate take turns within an instance (a lock per
//!    aggregate), so conflicts only come from other instances. On
//!    [`StoreError::Conflict`] the state is reloaded and the command decided
//!    again, up to [`ServiceSettings::max_attempts`] times with a jittered
//!    pause; then [`ServiceError::Conflict`].
//! 4. The answer waits until the read model has applied the event
//!    (read-your-writes), up to [`ServiceSettings::read_your_writes`];
//!    [`Outcome::projected`] says whether it did. With a notifier
//!    ([`MembershipService::with_announced`]) it also waits, within the
//!    same bound, until the event's room events (`room:left`, ...) are
//!    stored on the bus: once a kick answers, every gateway's feed has the
//!    `room:left` that refuses the kicked user's sends.
//!
//! Removing a workspace member also takes them out of the workspace's
//! channels, DMs and group DMs: one `channel.member_left {because:
//! removed_from_workspace}` (`dm.participant_removed`) per room, each its
//! own append. A join, invite, channel creation, DM opening or added DM
//! participant that raced with such a removal (decided before it, appended
//! after it) is undone the same way right after its append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_bus::{Bus, BusError, BusMessage, Published};
use confab_events::membership::{EventEnvelope, MembershipEvent, SCHEMA_VERSION};
use confab_events::socket::names;
use confab_events::{RoomId, RoomKind, UserId, WorkspaceId};
use tracing::Instrument;

use crate::domain::{
    Actor, AggregateState, Command, CommandError, Facts, decide, decide_removed_from_workspace,
};
use crate::health::Health;
use crate::read_model::{JoinDecision, QueryError, ReadModel};
use crate::store::{EventStore, StoreError, Stored};

/// The users an event brings into a channel or DM: what a concurrent
/// workspace removal may have to undo.
fn joined_by(event: &MembershipEvent) -> Vec<&UserId> {
    match event {
        MembershipEvent::ChannelMemberJoined { user, .. }
        | MembershipEvent::DmParticipantAdded { user, .. } => vec![user],
        MembershipEvent::ChannelCreated { created_by, .. } => vec![created_by],
        MembershipEvent::DmOpened { participants, .. } => participants.iter().collect(),
        _ => Vec::new(),
    }
}

/// Tunables of [`MembershipService`].
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Attempts per command before a conflict is reported (at least 1).
    pub max_attempts: u32,
    /// How long a command waits for the read model to apply its event.
    pub read_your_writes: Duration,
    /// Aggregates kept in the state cache; beyond it, the cache is cleared.
    pub cache_capacity: usize,
    /// How many workspaces and channels one user may create.
    pub quotas: Quotas,
}

/// How many workspaces and channels one user may create (`[quotas]` of the
/// membership configuration). Refused beyond with `quota_exceeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Workspaces a user may own (`create_workspace` names the owner).
    pub workspaces_per_user: u64,
    /// Channels a user may create, archived ones included.
    pub channels_per_user: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            workspaces_per_user: 100,
            channels_per_user: 1_000,
        }
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            read_your_writes: Duration::from_secs(5),
            cache_capacity: 50_000,
            quotas: Quotas::default(),
        }
    }
}

/// A command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The event's sequence in the log.
    pub seq: u64,
    /// The stored event.
    pub event: EventEnvelope,
    /// Whether the read model had applied it (and any follow-up events,
    /// such as a removal's channel departures) when the answer was given.
    pub projected: bool,
}

/// Why a command or query failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The command was refused by the rules.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// Other commands kept changing the aggregate; retrying may work.
    #[error(
        "{aggregate} kept changing under concurrent commands ({attempts} attempts); retry the command"
    )]
    Conflict {
        /// The aggregate.
        aggregate: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The event store, read model or bus failed; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The user already created as many workspaces or channels as the
    /// quota allows.
    #[error(
        "{user} already has {limit} {what}, the most one user may create; archive or remove one, or ask an operator to raise quotas.{what}_per_user"
    )]
    QuotaExceeded {
        /// The user the quota counts for.
        user: UserId,
        /// `workspaces` or `channels`.
        what: &'static str,
        /// The quota.
        limit: u64,
    },
    /// Input outside the command rules (an emit's event name, ...).
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl ServiceError {
    /// The stable code: a [`CommandError::code`], `conflict`,
    /// `unavailable`, `quota_exceeded` or `invalid`.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Rejected(e) => e.code(),
            ServiceError::Conflict { .. } => "conflict",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::QuotaExceeded { .. } => "quota_exceeded",
            ServiceError::Invalid { .. } => "invalid",
        }
    }

    /// The input field at fault, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServiceError::Rejected(e) => e.field(),
            ServiceError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<QueryError> for ServiceError {
    fn from(e: QueryError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<BusError> for ServiceError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Rejected(m) => ServiceError::Invalid {
                field: "data",
                message: m,
            },
            other => ServiceError::Unavailable(other.to_string()),
        }
    }
}

/// Socket.IO event names Confab's servers emit (chat history, typing,
/// presence, room moves, session notices); apps cannot emit them through
/// [`MembershipService::emit`], so an app backend cannot forge them.
pub const RESERVED_EVENTS: &[&str] = names::SERVER_EVENTS;

/// Longest event name accepted by [`MembershipService::emit`].
pub const MAX_EVENT_NAME: usize = 64;

/// An aggregate's state and the sequence of its last event.
#[derive(Debug, Clone)]
struct Entry {
    state: AggregateState,
    version: u64,
}

/// The membership service. Share it with `Arc`.
pub struct MembershipService {
    store: Arc<dyn EventStore>,
    read: Arc<dyn ReadModel>,
    bus: Arc<dyn Bus>,
    cache: Mutex<HashMap<RoomId, Arc<Entry>>>,
    /// One lock per aggregate with commands in flight: commands on one
    /// aggregate take turns inside this instance instead of conflicting.
    locks: Mutex<HashMap<RoomId, Weak<tokio::sync::Mutex<()>>>>,
    settings: ServiceSettings,
    conflicts: AtomicU64,
    health: Health,
    /// The notifier's progress: the last sequence whose room events are on
    /// the bus.
    announced: Option<tokio::sync::watch::Receiver<u64>>,
}

impl std::fmt::Debug for MembershipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What one decision step produced.
enum Step {
    /// Appended at this sequence.
    Appended(Box<Outcome>, Option<(WorkspaceId, u64)>),
    /// Nothing to do (a follow-up that no longer applies).
    Nothing,
}

impl MembershipService {
    /// A service on these ports, with default settings.
    pub fn new(store: Arc<dyn EventStore>, read: Arc<dyn ReadModel>, bus: Arc<dyn Bus>) -> Self {
        Self {
            store,
            read,
            bus,
            cache: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            settings: ServiceSettings::default(),
            conflicts: AtomicU64::new(0),
            health: Health::default(),
            announced: None,
        }
    }

    /// The states of the projections behind this service's answers, for
    /// readiness and metrics.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Replaces the settings.
    pub fn with_settings(mut self, settings: ServiceSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Commands also wait (within [`ServiceSettings::read_your_writes`])
    /// until the notifier whose progress this is announced their events.
    pub fn with_announced(mut self, announced: tokio::sync::watch::Receiver<u64>) -> Self {
        self.announced = Some(announced);
        self
    }

    /// Appends refused with a conflict so far (each was retried).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The read model.
    pub fn read_model(&self) -> &Arc<dyn ReadModel> {
        &self.read
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Runs a command for `actor`; see the [module docs](self).
    pub async fn execute(&self, cmd: Command, actor: &Actor) -> Result<Outcome, ServiceError> {
        let command = cmd.name();
        let result = self.execute_counted(cmd, actor).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.health.count_command(command, outcome);
        result
    }

    async fn execute_counted(&self, cmd: Command, actor: &Actor) -> Result<Outcome, ServiceError> {
        let aggregate = cmd.aggregate();
        let span = tracing::info_span!(
            "membership.execute",
            command = cmd.name(),
            aggregate = %aggregate,
            seq = tracing::field::Empty,
        );
        async {
            // Creations by one user take turns, so the count stays exact.
            let creator = self.creator(&cmd, actor);
            let lock = creator.map(|(user, _)| self.lock_for(&RoomId::user(user)));
            let _turn = match &lock {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            if let Some((user, what)) = creator {
                self.check_quota(user, what).await?;
            }
            let id = new_event_id();
            let step = self
                .step(&aggregate, &id, actor, cmd.workspace_hint(), |facts| {
                    decide(facts, &cmd, actor).map(Some)
                })
                .await?;
            let Step::Appended(outcome, decided_on) = step else {
                return Err(ServiceError::Unavailable(
                    "internal: the command produced no event".into(),
                ));
            };
            let mut outcome = *outcome;
            tracing::Span::current().record("seq", outcome.seq);
            let mut last = outcome.seq;
            match (&cmd, &outcome.event.event) {
                (Command::RemoveWorkspaceMember { workspace, user }, _) => {
                    last = last.max(
                        self.cascade_removal(workspace, user, outcome.seq, actor)
                            .await,
                    );
                }
                (_, event) => {
                    if let Some((ws, version)) = decided_on {
                        for user in joined_by(event) {
                            if let Some(seq) = self
                                .undo_raced_join(&aggregate, &ws, version, user, actor)
                                .await
                            {
                                last = last.max(seq);
                            }
                        }
                    }
                }
            }
            // One read-your-writes bound for both waits: while the
            // projection is down, the notifier waits for it too, and the
            // two waits in a row made a command answer only after twice it.
            let deadline = tokio::time::Instant::now() + self.settings.read_your_writes;
            outcome.projected = self.wait_projected(last).await;
            self.wait_announced(last, deadline).await;
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// The current state and version of an aggregate, as the service sees
    /// it (cached, loaded on a miss).
    pub async fn state(&self, aggregate: &RoomId) -> Result<(AggregateState, u64), ServiceError> {
        let e = self.entry(aggregate).await?;
        Ok((e.state.clone(), e.version))
    }

    /// Rooms the user belongs to (read model).
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, ServiceError> {
        Ok(self.read.rooms_of(user).await?)
    }

    /// The workspaces of each of `users`, as (user, `workspace:` room)
    /// pairs, in one query (read model).
    pub async fn workspaces_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, RoomId)>, ServiceError> {
        Ok(self.read.workspaces_of(users).await?)
    }

    /// Members of a room (read model).
    pub async fn members_of(&self, room: &RoomId) -> Result<Vec<UserId>, ServiceError> {
        Ok(self.read.members_of(room).await?)
    }

    /// Whether the user is a member of the room (read model).
    pub async fn is_member(&self, user: &UserId, room: &RoomId) -> Result<bool, ServiceError> {
        Ok(self.read.is_member(user, room).await?)
    }

    /// Whether the user may put a socket in the room (read model).
    pub async fn may_join(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<JoinDecision, ServiceError> {
        Ok(self.read.may_join(user, room).await?)
    }

    /// Publishes an app event to a room through the bus (durable). `id`,
    /// when given, makes retries idempotent (the bus drops a second publish
    /// with the same id within its duplicate window). The current trace
    /// context travels in the message headers.
    pub async fn emit(
        &self,
        room: &RoomId,
        event: &str,
        data: &serde_json::Value,
        id: Option<&str>,
    ) -> Result<Published, ServiceError> {
        check_event_name(event)?;
        let mut msg = BusMessage::new(event, data);
        if let Some(id) = id {
            if id.is_empty()
                || id.len() > 128
                || id.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ServiceError::Invalid {
                    field: "id",
                    message: "must be 1 to 128 characters without whitespace".into(),
                });
            }
            msg = msg.with_msg_id(format!("app:{id}"));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut headers);
        if !headers.is_empty() {
            msg = msg.with_headers(headers);
        }
        Ok(self.bus.publish(room, msg).await?)
    }

    /// Publishes an app event built elsewhere (the `@socket.io/redis-emitter`
    /// bridge: several arguments, addressing headers, volatile or not) after
    /// the same event-name check as [`MembershipService::emit`]: reserved
    /// names are refused before anything is published.
    pub async fn publish_app_event(
        &self,
        room: &RoomId,
        msg: BusMessage,
    ) -> Result<Published, ServiceError> {
        check_event_name(&msg.event)?;
        Ok(self.bus.publish(room, msg).await?)
    }

    /// Publishes a control event of Confab's own (e.g. `sockets:join`) to a
    /// room, volatile; its name must be one of [`RESERVED_EVENTS`].
    pub async fn publish_control(
        &self,
        room: &RoomId,
        msg: BusMessage,
    ) -> Result<Published, ServiceError> {
        if !RESERVED_EVENTS.contains(&&*msg.event) {
            return Err(ServiceError::Invalid {
                field: "event",
                message: format!("{} is not a control event", msg.event),
            });
        }
        Ok(self.bus.publish(room, msg.into_volatile()).await?)
    }

    /// One load-decide-append cycle with retries. `hint` names the
    /// workspace for commands that create a channel or DM. Returns the
    /// outcome and, for channel and DM commands, the workspace version the
    /// decision relied on.
    async fn step(
        &self,
        aggregate: &RoomId,
        id: &str,
        actor: &Actor,
        hint: Option<&WorkspaceId>,
        decide_fn: impl Fn(&Facts<'_>) -> Result<Option<MembershipEvent>, CommandError>,
    ) -> Result<Step, ServiceError> {
        let lock = self.lock_for(aggregate);
        let _turn = lock.lock().await;
        let max = self.settings.max_attempts.max(1);
        let mut double_checked = false;
        let mut attempt = 0;
        while attempt < max {
            attempt += 1;
            let target = self.entry(aggregate).await?;
            let ws_id = if aggregate.kind() == RoomKind::Workspace {
                None
            } else {
                hint.or(target.state.workspace_id()).cloned()
            };
            let ws_entry = match &ws_id {
                Some(ws) => Some(self.current_entry(&RoomId::workspace(ws)).await?),
                None => None,
            };
            let workspace = ws_entry.as_deref().and_then(|e| match &e.state {
                AggregateState::Workspace(w) => Some(w),
                _ => None,
            });
            let facts = Facts {
                target: &target.state,
                workspace,
            };
            let decided = tracing::info_span!(
                "membership.decide",
                aggregate = %aggregate,
                version = target.version,
                attempt,
            )
            .in_scope(|| decide_fn(&facts));
            let event = match decided {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(Step::Nothing),
                Err(refusal) => {
                    // A refusal from a cached state may be stale: check the
                    // store's version once, and decide again if it moved.
                    if !double_checked {
                        double_checked = true;
                        let version = self.store.version(aggregate).await?;
                        if version != target.version {
                            self.forget(aggregate, target.version);
                            attempt -= 1;
                            continue;
                        }
                    }
                    return Err(refusal.into());
                }
            };
            let expected = target.version;
            drop(target);
            let envelope = EventEnvelope {
                v: SCHEMA_VERSION,
                id: id.to_owned(),
                at: now_ms(),
                actor: actor.user().cloned(),
                event,
            };
            match self.append(aggregate, expected, &envelope).await {
                Ok(seq) => {
                    self.applied(aggregate, expected, seq, &envelope.event);
                    let decided_on = ws_id.zip(ws_entry.map(|e| e.version));
                    return Ok(Step::Appended(
                        Box::new(Outcome {
                            seq,
                            event: envelope,
                            projected: false,
                        }),
                        decided_on,
                    ));
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%aggregate, expected, ?actual, attempt, "append conflict; reloading");
                    self.forget(aggregate, expected);
                    if attempt < max {
                        tokio::time::sleep(jitter(attempt)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict {
            aggregate: aggregate.to_string(),
            attempts: max,
        })
    }

    /// Appends, retrying the same envelope twice on an unavailable store
    /// (the store answers a repeat of a stored envelope with its sequence).
    async fn append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        envelope: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        // The producer span of the append: its context travels with the
        // event (JetStream headers) to the projections and the notifier.
        let span = if confab_telemetry::is_exporting() {
            tracing::info_span!(
                "membership.append",
                otel.name = "send membership.events.{kind}.{id}",
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.operation.type = "send",
                messaging.operation.name = "publish",
                messaging.destination.template = "membership.events.{kind}.{id}",
                messaging.destination.name = %confab_bus::subjects::membership_subject(aggregate),
                messaging.message.id = envelope.id.as_str(),
                confab.event = envelope.event.type_name(),
                confab.expected_seq = expected,
            )
        } else {
            tracing::Span::none()
        };
        self.append_traced(aggregate, expected, envelope)
            .instrument(span)
            .await
    }

    async fn append_traced(
        &self,
        aggregate: &RoomId,
        expected: u64,
        envelope: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        let mut tries = 0;
        loop {
            match self.store.append(aggregate, expected, envelope).await {
                Err(StoreError::Unavailable(reason)) if tries < 2 => {
                    tries += 1;
                    tracing::warn!(%aggregate, %reason, "append failed; retrying the same event");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Takes a removed workspace member out of the workspace's channels,
    /// DMs and group DMs.
    /// Returns the last sequence appended (or `after`). Failures are logged:
    /// the removal itself stands.
    async fn cascade_removal(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
        after: u64,
        actor: &Actor,
    ) -> u64 {
        let mut last = after;
        // The read model knows the user's channels once it has caught up
        // with the removal; channels joined later are undone by the join.
        if let Err(e) = self
            .read
            .wait_for(after, self.settings.read_your_writes)
            .await
        {
            tracing::warn!(error = %e, "read model behind; channel cleanup may be incomplete");
        }
        let rooms = match self.read.rooms_of(user).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::error!(%workspace, %user, error = %e, "cannot list the removed member's channels");
                return last;
            }
        };
        let scoped = |r: &RoomId| matches!(r.kind(), RoomKind::Channel | RoomKind::Dm);
        for room in rooms.into_iter().filter(scoped) {
            if let Some(seq) = self
                .remove_from_channel(&room, workspace, user, actor)
                .await
            {
                last = last.max(seq);
            }
        }
        last
    }

    /// Appends `channel.member_left {removed_from_workspace}` (or
    /// `dm.participant_removed`) when `user` is in `channel` (a channel or
    /// DM) of `workspace`. Returns its sequence.
    async fn remove_from_channel(
        &self,
        channel: &RoomId,
        workspace: &WorkspaceId,
        user: &UserId,
        actor: &Actor,
    ) -> Option<u64> {
        let id = new_event_id();
        let step = self
            .step(channel, &id, actor, None, |facts| match facts.target {
                AggregateState::Channel(_) | AggregateState::Dm(_)
                    if facts.target.workspace_id() == Some(workspace) =>
                {
                    // Still a workspace member (re-added meanwhile)? Keep them.
                    if facts.workspace.is_some_and(|w| w.is_member(user)) {
                        return Ok(None);
                    }
                    Ok(decide_removed_from_workspace(facts.target, user))
                }
                _ => Ok(None),
            })
            .await;
        match step {
            Ok(Step::Appended(o, _)) => Some(o.seq),
            Ok(Step::Nothing) => None,
            Err(e) => {
                tracing::error!(%channel, %user, error = %e, "cannot remove a removed workspace member from a channel");
                None
            }
        }
    }

    /// After a join or invite decided on workspace version `version`: if
    /// the workspace changed since and the user is no longer a member (a
    /// concurrent removal), take them out again.
    async fn undo_raced_join(
        &self,
        channel: &RoomId,
        workspace: &WorkspaceId,
        version: u64,
        user: &UserId,
        actor: &Actor,
    ) -> Option<u64> {
        let ws_room = RoomId::workspace(workspace);
        match self.store.version(&ws_room).await {
            Ok(v) if v == version => None,
            Ok(_) => {
                tracing::info!(%channel, %user, "workspace changed during a join; re-checking membership");
                self.remove_from_channel(channel, workspace, user, actor)
                    .await
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "cannot re-check the workspace after a join");
                None
            }
        }
    }

    /// The user a creation counts for, and what it creates.
    fn creator<'a>(
        &self,
        cmd: &'a Command,
        actor: &'a Actor,
    ) -> Option<(&'a UserId, &'static str)> {
        match cmd {
            Command::CreateWorkspace { owner, .. } => Some((owner, "workspaces")),
            Command::CreateChannel { .. } => actor.user().map(|u| (u, "channels")),
            _ => None,
        }
    }

    /// Refuses a creation beyond the user's quota (counted on the read
    /// model, which the previous creation of this user waited for).
    async fn check_quota(&self, user: &UserId, what: &'static str) -> Result<(), ServiceError> {
        let created = self.read.created_by(user).await?;
        let quotas = self.settings.quotas;
        let (count, limit) = match what {
            "workspaces" => (created.workspaces, quotas.workspaces_per_user),
            _ => (created.channels, quotas.channels_per_user),
        };
        if count >= limit {
            return Err(ServiceError::QuotaExceeded {
                user: user.clone(),
                what,
                limit,
            });
        }
        Ok(())
    }

    /// Waits until the notifier announced `seq` (bounded; logged when it
    /// did not: the command stands, gateways hear of it later).
    async fn wait_announced(&self, seq: u64, deadline: tokio::time::Instant) {
        let Some(mut announced) = self.announced.clone() else {
            return;
        };
        let wait = announced.wait_for(|at| *at >= seq);
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(
                    seq,
                    "answering before the notifier announced the change to gateways"
                );
            }
        }
    }

    async fn wait_projected(&self, seq: u64) -> bool {
        match self
            .read
            .wait_for(seq, self.settings.read_your_writes)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(seq, error = %e, "answering before the read model caught up");
                false
            }
        }
    }

    /// The cached entry, loaded on a miss.
    async fn entry(&self, aggregate: &RoomId) -> Result<Arc<Entry>, ServiceError> {
        if let Some(e) = self.cached(aggregate) {
            return Ok(e);
        }
        self.load(aggregate).await
    }

    /// The entry, checked against the store's current version.
    async fn current_entry(&self, aggregate: &RoomId) -> Result<Arc<Entry>, ServiceError> {
        let version = self.store.version(aggregate).await?;
        match self.cached(aggregate) {
            Some(e) if e.version == version => Ok(e),
            _ => self.load(aggregate).await,
        }
    }

    fn cached(&self, aggregate: &RoomId) -> Option<Arc<Entry>> {
        self.lock_cache().get(aggregate).cloned()
    }

    async fn load(&self, aggregate: &RoomId) -> Result<Arc<Entry>, ServiceError> {
        let events: Vec<Stored> = self.store.load(aggregate).await?;
        let entry = Arc::new(Entry {
            state: AggregateState::fold(events.iter().map(|s| &s.envelope.event)),
            version: events.last().map_or(0, |s| s.seq),
        });
        let mut cache = self.lock_cache();
        if cache.len() >= self.settings.cache_capacity.max(1) && !cache.contains_key(aggregate) {
            cache.clear();
        }
        match cache.get(aggregate) {
            // Someone loaded or applied something newer meanwhile.
            Some(existing) if existing.version > entry.version => Ok(Arc::clone(existing)),
            _ => {
                cache.insert(aggregate.clone(), Arc::clone(&entry));
                Ok(entry)
            }
        }
    }

    /// Folds an event we appended into the cached state, if the cache still
    /// holds the state it was decided on.
    fn applied(&self, aggregate: &RoomId, expected: u64, seq: u64, event: &MembershipEvent) {
        let mut cache = self.lock_cache();
        let Some(entry) = cache.get_mut(aggregate) else {
            return;
        };
        if entry.version == expected {
            let e = Arc::make_mut(entry);
            e.state.apply(event);
            e.version = seq;
        } else if entry.version < seq {
            cache.remove(aggregate);
        }
    }

    /// Drops the cached entry if it is still at `version` (or older).
    fn forget(&self, aggregate: &RoomId, version: u64) {
        let mut cache = self.lock_cache();
        if cache.get(aggregate).is_some_and(|e| e.version <= version) {
            cache.remove(aggregate);
        }
    }

    /// The lock of an aggregate (created on demand, dropped when unused).
    fn lock_for(&self, aggregate: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(aggregate).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(aggregate.clone(), Arc::downgrade(&lock));
        lock
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Arc<Entry>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks an app event's name: 1 to [`MAX_EVENT_NAME`] ASCII letters,
/// digits and `: _ - .`, not one of [`RESERVED_EVENTS`].
pub fn check_event_name(event: &str) -> Result<(), ServiceError> {
    let invalid = |message: String| {
        Err(ServiceError::Invalid {
            field: "event",
            message,
        })
    };
    if event.is_empty() || event.len() > MAX_EVENT_NAME {
        return invalid(format!("must be 1 to {MAX_EVENT_NAME} characters"));
    }
    if let Some(c) = event
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.')))
    {
        return invalid(format!(
            "contains {c:?}; use ASCII letters, digits and : _ - ."
        ));
    }
    if RESERVED_EVENTS.contains(&event) {
        return invalid(format!(
            "{event} is reserved: only Confab's own services emit it (apps cannot forge chat \
             history, presence or room changes); emit an event name of your own, e.g. \"app:{event}\""
        ));
    }
    Ok(())
}

/// A fresh event id: 128 random bits as 32 hex digits.
pub fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random pause before the next attempt: up to 2^attempt ms, capped.
fn jitter(attempt: u32) -> Duration {
    let cap = 1u64 << attempt.min(6);
    Duration::from_micros(rand::random_range(0..cap * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_hex() {
        let a = new_event_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_event_id());
    }

    #[test]
    fn event_names_are_checked() {
        assert!(check_event_name("app:message:new").is_ok());
        for reserved in [
            "message:new",
            "message:updated",
            "message:deleted",
            "typing",
        ] {
            let e = check_event_name(reserved).unwrap_err();
            assert!(e.to_string().contains("reserved"), "{e}");
        }
        assert!(check_event_name("").is_err());
        assert!(check_event_name("a b").is_err());
        assert!(check_event_name("room:joined").is_err());
        assert!(check_event_name(&"x".repeat(65)).is_err());
    }
}
