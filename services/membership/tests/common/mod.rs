//! Shared helpers of the membership integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use confab_bus::{Bus, BusMessage, BusSubscription, InProcessBus, NatsBus, NatsConfig};
use confab_events::membership::{Role, Visibility};
use confab_events::{ChannelId, DmId, RoomId, UserId, WorkspaceId};
use confab_membership::app::MembershipCore;
use confab_membership::auth::Authenticator;
use confab_membership::domain::{Actor, Command};
use confab_membership::service::{MembershipService, Outcome, ServiceSettings};
use confab_membership::sql;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The service token of the tests.
pub const TOKEN: &str = "test-service-token-0123456789abcdef";
/// The HS256 secret of the tests' JWTs.
pub const SECRET: &str = "test-jwt-secret-0123456789abcdef0123";

pub fn u(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
pub fn w(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}
pub fn c(s: &str) -> ChannelId {
    ChannelId::parse(s).unwrap()
}
pub fn d(s: &str) -> DmId {
    DmId::parse(s).unwrap()
}
pub fn room(s: &str) -> RoomId {
    RoomId::parse(s).unwrap()
}
pub fn user(s: &str) -> Actor {
    Actor::User(u(s))
}
pub fn system() -> Actor {
    Actor::Service { on_behalf_of: None }
}

/// A running core; its background work stops when this is dropped.
pub struct Running {
    pub service: Arc<MembershipService>,
    pub stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn authenticator() -> Authenticator {
    let mut auth = confab_auth::AuthConfig::dev();
    auth.hs256_secret = Some(SECRET.into());
    Authenticator::new(
        Some(TOKEN.into()),
        Some(confab_auth::Verifier::new(auth).unwrap()),
    )
}

/// Starts a core's background work.
pub async fn start(core: MembershipCore) -> Running {
    let service = Arc::clone(core.service());
    let stop = CancellationToken::new();
    core.start(stop.clone().cancelled_owned()).await.unwrap();
    Running { service, stop }
}

/// An embedded core (in-memory SQLite) on `bus`, not started.
pub async fn embedded_core(bus: Arc<dyn Bus>) -> MembershipCore {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    MembershipCore::embedded(db, bus, authenticator(), ServiceSettings::default())
}

/// A started embedded core and its in-process bus.
pub async fn embedded() -> (Running, Arc<InProcessBus>) {
    let bus = Arc::new(InProcessBus::default());
    let core = embedded_core(bus.clone()).await;
    (start(core).await, bus)
}

/// A NATS bus on `url`.
pub async fn nats_bus(url: &str) -> NatsBus {
    NatsBus::connect(NatsConfig::new(url)).await.unwrap()
}

/// A NATS-mode core (projections in in-memory SQLite), not started.
pub async fn nats_core(bus: NatsBus) -> MembershipCore {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    MembershipCore::nats(db, bus, authenticator(), ServiceSettings::default())
        .await
        .unwrap()
}

/// Workspace `w` (owner `owner`, admin `adm`, members `bob`, `carol`) with
/// the public channel `pub` (by `adm`, with `bob`) and the private channel
/// `priv` (by `adm`).
pub async fn bootstrap(service: &MembershipService) {
    let run = |cmd: Command, actor: Actor| async move {
        service.execute(cmd, &actor).await.unwrap();
    };
    run(
        Command::CreateWorkspace {
            id: w("w"),
            name: "W".into(),
            owner: u("owner"),
        },
        system(),
    )
    .await;
    for (name, role) in [
        ("adm", Role::Admin),
        ("bob", Role::Member),
        ("carol", Role::Member),
    ] {
        run(
            Command::AddWorkspaceMember {
                workspace: w("w"),
                user: u(name),
                role,
            },
            system(),
        )
        .await;
    }
    run(
        Command::CreateChannel {
            channel: c("pub"),
            workspace: w("w"),
            name: "public".into(),
            visibility: Visibility::Public,
        },
        user("adm"),
    )
    .await;
    run(Command::JoinChannel { channel: c("pub") }, user("bob")).await;
    run(
        Command::CreateChannel {
            channel: c("priv"),
            workspace: w("w"),
            name: "private".into(),
            visibility: Visibility::Private,
        },
        user("adm"),
    )
    .await;
}

/// `by` invites `who` to channel `channel`; the command must succeed.
pub async fn invite(service: &MembershipService, channel: &str, who: &str, by: &str) {
    let command = Command::Invite {
        channel: c(channel),
        user: u(who),
    };
    service.execute(command, &user(by)).await.unwrap();
}

/// `by` opens DM `dm` in workspace `w` with `participants`; the command
/// must succeed.
pub async fn open_dm(service: &MembershipService, dm: &str, participants: &[&str], by: &str) {
    let command = Command::OpenDm {
        dm: d(dm),
        workspace: w("w"),
        participants: participants.iter().map(|p| u(p)).collect(),
    };
    service.execute(command, &user(by)).await.unwrap();
}

/// `by` removes `who` from workspace `w`; the command must succeed.
pub async fn remove_member(service: &MembershipService, who: &str, by: &str) -> Outcome {
    let command = Command::RemoveWorkspaceMember {
        workspace: w("w"),
        user: u(who),
    };
    service.execute(command, &user(by)).await.unwrap()
}

/// The next message of a subscription, within 5 s.
pub async fn next(sub: &mut BusSubscription) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("no message within 5 s")
        .expect("subscription ended")
}

/// Asserts nothing arrives within `wait`.
pub async fn quiet(sub: &mut BusSubscription, wait: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("unexpected message {} {}", m.event, m.args_json);
    }
}
