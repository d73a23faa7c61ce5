//! The service on the embedded stack (SQL log, SQL projections,
//! in-process bus): read-your-writes, the workspace-removal cascade,
//! several instances on one log, emit.

mod common;

use std::sync::Arc;

use common::*;
use confab_bus::Bus;
use confab_events::membership::{LeftBecause, MembershipEvent};
use confab_membership::domain::{AggregateState, Command};
use confab_membership::service::{MembershipService, ServiceError};
use confab_membership::store::EventStore;

#[tokio::test]
async fn commands_are_visible_to_queries_at_once() {
    let (running, _bus) = embedded().await;
    let svc = &running.service;
    bootstrap(svc).await;
    // Every command waited for the projections: no sleeping needed.
    assert_eq!(
        svc.rooms_of(&u("bob")).await.unwrap(),
        vec![room("channel:pub"), room("workspace:w")]
    );
    assert_eq!(
        svc.members_of(&room("channel:pub")).await.unwrap(),
        vec![u("adm"), u("bob")]
    );
    let out = svc
        .execute(Command::JoinChannel { channel: c("pub") }, &user("carol"))
        .await
        .unwrap();
    assert!(out.projected);
    assert_eq!(out.event.actor, Some(u("carol")));
    assert_eq!(out.event.id.len(), 32);
    assert!(
        svc.is_member(&u("carol"), &room("channel:pub"))
            .await
            .unwrap()
    );
    let decision = svc
        .may_join(&u("carol"), &room("channel:priv"))
        .await
        .unwrap();
    assert!(!decision.allowed);

    let err = svc
        .execute(Command::JoinChannel { channel: c("priv") }, &user("carol"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    let err = svc
        .execute(Command::JoinChannel { channel: c("nope") }, &user("carol"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn removing_a_workspace_member_takes_them_out_of_its_channels() {
    let (running, _bus) = embedded().await;
    let svc = &running.service;
    bootstrap(svc).await;
    invite(svc, "priv", "bob", "adm").await;
    open_dm(svc, "d1", &["carol"], "bob").await;
    let before = svc.store().last_seq().await.unwrap();

    let out = remove_member(svc, "bob", "adm").await;
    assert!(out.projected);
    // Queries already show the cascade (issue #12: DMs included).
    assert_eq!(svc.rooms_of(&u("bob")).await.unwrap(), vec![]);
    for ch in ["pub", "priv"] {
        let events = svc
            .store()
            .load(&room(&format!("channel:{ch}")))
            .await
            .unwrap();
        let last = events.last().unwrap();
        assert!(last.seq > before);
        assert_eq!(
            last.envelope.event,
            MembershipEvent::ChannelMemberLeft {
                channel: c(ch),
                user: u("bob"),
                because: LeftBecause::RemovedFromWorkspace,
            }
        );
        assert_eq!(last.envelope.actor, Some(u("adm")));
    }
    // Bob cannot come back in without being re-added to the workspace.
    let err = svc
        .execute(Command::JoinChannel { channel: c("pub") }, &user("bob"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_a_member");
}

#[tokio::test]
async fn removing_a_workspace_member_takes_them_out_of_its_dms() {
    let (running, _bus) = embedded().await;
    let svc = &running.service;
    bootstrap(svc).await;
    open_dm(svc, "d1", &["carol"], "bob").await;
    open_dm(svc, "g1", &["carol", "adm"], "bob").await;
    open_dm(svc, "g2", &["carol", "adm"], "carol").await;
    let before = svc.store().last_seq().await.unwrap();

    let out = remove_member(svc, "bob", "adm").await;
    assert!(out.projected);
    assert!(svc.rooms_of(&u("bob")).await.unwrap().is_empty());
    for dm in ["d1", "g1"] {
        let dm_room = room(&format!("dm:{dm}"));
        let events = svc.store().load(&dm_room).await.unwrap();
        let last = events.last().unwrap();
        assert!(last.seq > before);
        assert_eq!(
            last.envelope.event,
            MembershipEvent::DmParticipantRemoved {
                dm: d(dm),
                user: u("bob"),
                because: LeftBecause::RemovedFromWorkspace,
            }
        );
        assert_eq!(last.envelope.actor, Some(u("adm")));
        assert!(!svc.is_member(&u("bob"), &dm_room).await.unwrap());
        let AggregateState::Dm(state) = svc.state(&dm_room).await.unwrap().0 else {
            panic!("{dm} is a DM");
        };
        assert!(!state.participants.contains(&u("bob")));
    }
    assert_eq!(
        svc.members_of(&room("dm:g1")).await.unwrap(),
        vec![u("adm"), u("carol")]
    );
    // A DM bob was never in is untouched.
    let g2 = svc.store().load(&room("dm:g2")).await.unwrap();
    assert!(g2.last().unwrap().seq <= before);
    // Nobody can bring him back into the group while he is out.
    let err = svc
        .execute(
            Command::AddDmParticipant {
                dm: d("g1"),
                user: u("bob"),
            },
            &user("carol"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_a_member");
}

#[tokio::test]
async fn instances_sharing_a_log_see_each_others_changes() {
    let (running, _bus) = embedded().await;
    let a = &running.service;
    bootstrap(a).await;
    // A second instance on the same log and projections, with its own cache.
    let b = Arc::new(MembershipService::new(
        Arc::clone(a.store()),
        Arc::clone(a.read_model()),
        Arc::clone(a.bus()),
    ));
    // b caches `channel:new` as missing.
    let err = b
        .execute(Command::JoinChannel { channel: c("new") }, &user("bob"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    // a creates it; b's stale "missing" is re-checked, not trusted.
    a.execute(
        Command::CreateChannel {
            channel: c("new"),
            workspace: w("w"),
            name: "new".into(),
            visibility: confab_events::membership::Visibility::Public,
        },
        &user("carol"),
    )
    .await
    .unwrap();
    b.execute(Command::JoinChannel { channel: c("new") }, &user("bob"))
        .await
        .unwrap();
    // a's cached state of `channel:new` is now stale: its next command
    // conflicts, reloads and succeeds.
    invite(a, "new", "adm", "bob").await;
    let (state, _) = b.state(&room("channel:new")).await.unwrap();
    let AggregateState::Channel(ch) = state else {
        panic!("not a channel")
    };
    // b's cache is stale too, but its next refusal would be re-checked; a
    // fresh load has all three.
    let fresh = MembershipService::new(
        Arc::clone(a.store()),
        Arc::clone(a.read_model()),
        Arc::clone(a.bus()),
    );
    let (state, _) = fresh.state(&room("channel:new")).await.unwrap();
    let AggregateState::Channel(fresh_ch) = state else {
        panic!("not a channel")
    };
    assert!(fresh_ch.members.contains(&u("adm")));
    assert!(fresh_ch.members.contains(&u("bob")));
    assert!(fresh_ch.members.contains(&u("carol")));
    assert!(ch.members.contains(&u("bob")));
}

#[tokio::test]
async fn emit_publishes_through_the_bus() {
    let (running, bus) = embedded().await;
    let svc = &running.service;
    let mut sub = bus.subscribe(&room("channel:42")).await.unwrap();
    svc.emit(
        &room("channel:42"),
        "app:message:new",
        &serde_json::json!({"id": "m1", "body": "hi"}),
        Some("m1"),
    )
    .await
    .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(&*m.event, "app:message:new");
    assert_eq!(&*m.args_json, r#"[{"id":"m1","body":"hi"}]"#);
    assert_eq!(m.msg_id.as_deref(), Some("app:m1"));

    for (event, field) in [("room:joined", "event"), ("", "event"), ("a b", "event")] {
        let err = svc
            .emit(&room("channel:42"), event, &serde_json::json!(null), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::Invalid { .. }), "{err:?}");
        assert_eq!(err.field(), Some(field));
    }
}

/// An event store that, right before the first event bringing `carol`
/// into a channel or DM is appended, removes her from the workspace through another
/// instance: the join was decided while she was a member.
struct RaceStore {
    inner: Arc<dyn EventStore>,
    other: std::sync::OnceLock<Arc<MembershipService>>,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl EventStore for RaceStore {
    async fn append(
        &self,
        aggregate: &confab_events::RoomId,
        expected: u64,
        event: &confab_events::membership::EventEnvelope,
    ) -> Result<u64, confab_membership::store::StoreError> {
        let carol = u("carol");
        let brings_carol = match &event.event {
            MembershipEvent::ChannelMemberJoined { user, .. }
            | MembershipEvent::DmParticipantAdded { user, .. } => *user == carol,
            MembershipEvent::DmOpened { participants, .. } => participants.contains(&carol),
            _ => false,
        };
        if brings_carol && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let other = self.other.get().unwrap();
            remove_member(other, "carol", "adm").await;
        }
        self.inner.append(aggregate, expected, event).await
    }
    async fn load(
        &self,
        aggregate: &confab_events::RoomId,
    ) -> Result<Vec<confab_membership::store::Stored>, confab_membership::store::StoreError> {
        self.inner.load(aggregate).await
    }
    async fn tail(
        &self,
        from_seq: u64,
    ) -> Result<
        futures::stream::BoxStream<
            'static,
            Result<confab_membership::store::Stored, confab_membership::store::StoreError>,
        >,
        confab_membership::store::StoreError,
    > {
        self.inner.tail(from_seq).await
    }
    async fn last_seq(&self) -> Result<u64, confab_membership::store::StoreError> {
        self.inner.last_seq().await
    }
    async fn version(
        &self,
        aggregate: &confab_events::RoomId,
    ) -> Result<u64, confab_membership::store::StoreError> {
        self.inner.version(aggregate).await
    }
}

#[tokio::test]
async fn a_join_racing_a_workspace_removal_is_undone() {
    let (running, _bus) = embedded().await;
    let a = &running.service;
    bootstrap(a).await;
    let (b, race) = racing(a);
    // b decides the join while carol is a workspace member; the removal
    // lands before the join's append.
    let out = b
        .execute(Command::JoinChannel { channel: c("pub") }, &user("carol"))
        .await
        .unwrap();
    assert!(race.fired.load(std::sync::atomic::Ordering::SeqCst));
    assert!(out.projected);
    let events = a.store().load(&room("channel:pub")).await.unwrap();
    let last = &events.last().unwrap().envelope.event;
    assert_eq!(
        last,
        &MembershipEvent::ChannelMemberLeft {
            channel: c("pub"),
            user: u("carol"),
            because: LeftBecause::RemovedFromWorkspace,
        }
    );
    assert!(
        !a.is_member(&u("carol"), &room("channel:pub"))
            .await
            .unwrap()
    );
}

/// Service `b`, whose store removes carol from the workspace (through
/// `a`) right before b appends the first event that brings her into a
/// channel or DM; and that store.
fn racing(a: &Arc<MembershipService>) -> (MembershipService, Arc<RaceStore>) {
    let race = Arc::new(RaceStore {
        inner: Arc::clone(a.store()),
        other: std::sync::OnceLock::new(),
        fired: false.into(),
    });
    race.other.set(Arc::clone(a)).unwrap();
    let b = MembershipService::new(
        race.clone(),
        Arc::clone(a.read_model()),
        Arc::clone(a.bus()),
    );
    (b, race)
}

#[tokio::test]
async fn a_dm_opened_or_a_participant_added_racing_a_workspace_removal_is_undone() {
    for add in [false, true] {
        let (running, _bus) = embedded().await;
        let a = &running.service;
        bootstrap(a).await;
        if add {
            let open = Command::OpenDm {
                dm: confab_events::DmId::parse("d1").unwrap(),
                workspace: w("w"),
                participants: vec![u("bob"), u("adm"), u("owner")],
            };
            a.execute(open, &user("bob")).await.unwrap();
        }
        let (b, race) = racing(a);
        let command = if add {
            Command::AddDmParticipant {
                dm: confab_events::DmId::parse("d1").unwrap(),
                user: u("carol"),
            }
        } else {
            Command::OpenDm {
                dm: confab_events::DmId::parse("d1").unwrap(),
                workspace: w("w"),
                participants: vec![u("bob"), u("carol")],
            }
        };
        // b decides while carol is a workspace member; the removal lands
        // before b's append.
        let out = b.execute(command, &user("bob")).await.unwrap();
        assert!(race.fired.load(std::sync::atomic::Ordering::SeqCst));
        assert!(out.projected);
        let events = a.store().load(&room("dm:d1")).await.unwrap();
        let last = &events.last().unwrap().envelope.event;
        assert!(
            matches!(last, MembershipEvent::DmParticipantRemoved { user, because: LeftBecause::RemovedFromWorkspace, .. } if *user == u("carol")),
            "add: {add}, last: {last:?}"
        );
        assert!(
            !a.is_member(&u("carol"), &room("dm:d1")).await.unwrap(),
            "add: {add}"
        );
        assert!(
            !a.rooms_of(&u("carol"))
                .await
                .unwrap()
                .contains(&room("dm:d1"))
        );
    }
}

#[tokio::test]
async fn presence_queries_reveal_only_workspace_co_members() {
    use confab_contracts::presence::{Heartbeat, LocalPresence};
    use confab_events::socket::PresenceStatus;
    use confab_membership::presence::PresenceTracker;
    let (running, _bus) = embedded().await;
    let svc = &running.service;
    bootstrap(svc).await;
    let other = Command::CreateWorkspace {
        id: w("x"),
        name: "X".into(),
        owner: u("eve"),
    };
    svc.execute(other, &system()).await.unwrap();
    let tracker = PresenceTracker::new(Arc::clone(svc), std::time::Duration::from_secs(30));
    let online = |name: &str| LocalPresence {
        user: u(name),
        status: PresenceStatus::Online,
    };
    let hb = Heartbeat::changes("gw", 1, vec![online("bob"), online("carol"), online("eve")]);
    tracker.heartbeat(&hb).await;
    let asked = [u("carol"), u("eve")];
    let seen = |answer: std::collections::BTreeMap<String, PresenceStatus>| {
        answer.into_values().collect::<Vec<_>>()
    };
    use PresenceStatus::{Offline, Online};
    assert_eq!(
        seen(tracker.query(&u("bob"), &asked).await),
        [Online, Offline]
    );
    assert_eq!(
        seen(tracker.query(&u("eve"), &asked).await),
        [Offline, Online]
    );
    // Removed from the workspace: a stranger now.
    remove_member(svc, "bob", "adm").await;
    assert_eq!(
        seen(tracker.query(&u("bob"), &asked).await),
        [Offline, Offline]
    );
}
