//! The JetStream event store against a real nats-server: the service's own
//! stream `MEMBERSHIP` (created or updated at start), append with
//! optimistic concurrency (including the "no message yet" case, expected
//! 0), idempotent retries, load, tail and last_seq.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::StorageType;
use confab_bus::subjects::{
    HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE, MEMBERSHIP_STREAM, ROOMS_STREAM, membership_subject,
};
use confab_bus::{NatsBus, NatsConfig};
use confab_events::membership::{EventEnvelope, MembershipEvent, Role, SCHEMA_VERSION};
use confab_events::{RoomId, UserId, WorkspaceId};
use confab_membership::jetstream_store::{JetStreamEventStore, stream_config};
use confab_membership::store::{EventStore, StoreError, Stored};
use confab_test_support::{NatsServer, stream_messages};
use futures::StreamExt;

fn env(id: &str, event: MembershipEvent) -> EventEnvelope {
    EventEnvelope {
        v: SCHEMA_VERSION,
        id: id.into(),
        at: 1,
        actor: None,
        event,
    }
}

fn created(ws: &str) -> MembershipEvent {
    MembershipEvent::WorkspaceCreated {
        workspace: WorkspaceId::parse(ws).unwrap(),
        name: ws.into(),
        owner: UserId::parse("owner").unwrap(),
    }
}

fn added(ws: &str, user: &str) -> MembershipEvent {
    MembershipEvent::WorkspaceMemberAdded {
        workspace: WorkspaceId::parse(ws).unwrap(),
        user: UserId::parse(user).unwrap(),
        role: Role::Member,
    }
}

/// Asserts `result` is a conflict: expected `expected`, found `actual`.
fn assert_conflict(result: Result<u64, StoreError>, expected: u64, actual: u64) {
    match result.unwrap_err() {
        StoreError::Conflict {
            expected: e,
            actual: a,
            ..
        } => assert_eq!((e, a), (expected, Some(actual))),
        err => panic!("not a conflict: {err:?}"),
    }
}

/// The stream of workspace `ws`.
fn aggregate(ws: &str) -> RoomId {
    RoomId::parse(&format!("workspace:{ws}")).unwrap()
}

/// A server and a store on it.
async fn started() -> (NatsServer, JetStreamEventStore) {
    let server = NatsServer::start();
    let store = store(&server).await;
    (server, store)
}

async fn store(server: &NatsServer) -> JetStreamEventStore {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamEventStore::connect(client, stream_config(&NatsConfig::default()))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_service_creates_its_stream_idempotently() {
    let server = NatsServer::start();
    // Several instances starting at once.
    let open = || async {
        let bus = NatsBus::connect(NatsConfig::new(server.url()))
            .await
            .unwrap();
        JetStreamEventStore::from_bus(&bus).await.unwrap();
        bus
    };
    let (bus, _, _) = tokio::join!(open(), open(), open());

    let membership = bus.jetstream().get_stream(MEMBERSHIP_STREAM).await.unwrap();
    let mc = &membership.cached_info().config;
    assert_eq!(mc.subjects, vec!["membership.events.>".to_owned()]);
    assert_eq!(mc.storage, StorageType::File);
    assert_eq!(
        mc.max_age,
        Duration::ZERO,
        "the membership log is permanent"
    );
    assert!(mc.republish.is_none());
    assert_eq!(mc.duplicate_window, Duration::from_secs(120));

    // An instance with other settings updates the stream.
    let other = NatsBus::connect(NatsConfig {
        duplicate_window: Duration::from_secs(60),
        ..NatsConfig::new(server.url())
    })
    .await
    .unwrap();
    JetStreamEventStore::from_bus(&other).await.unwrap();
    let membership = other
        .jetstream()
        .get_stream(MEMBERSHIP_STREAM)
        .await
        .unwrap();
    assert_eq!(
        membership.cached_info().config.duplicate_window,
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn membership_subjects_land_in_the_membership_stream() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    JetStreamEventStore::from_bus(&bus).await.unwrap();
    let subject = membership_subject(&RoomId::parse("channel:7").unwrap());
    assert_eq!(subject, "membership.events.channel.7");
    let ack = bus
        .jetstream()
        .publish(subject.clone(), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, MEMBERSHIP_STREAM);

    // Optimistic concurrency on the aggregate subject.
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    let stale = async {
        bus.jetstream()
            .publish_with_headers(subject, headers, "{}".into())
            .await?
            .await
    }
    .await;
    assert!(stale.is_err(), "a stale expected sequence must be refused");
    assert_eq!(stream_messages(bus.jetstream(), MEMBERSHIP_STREAM).await, 1);
    assert_eq!(stream_messages(bus.jetstream(), ROOMS_STREAM).await, 0);
}

#[tokio::test]
async fn append_checks_the_aggregate_version() {
    let (_server, store) = started().await;
    let a = aggregate("a");
    let b = aggregate("b");

    assert_eq!(store.last_seq().await.unwrap(), 0);
    assert_eq!(store.version(&a).await.unwrap(), 0);
    let s1 = store.append(&a, 0, &env("e1", created("a"))).await.unwrap();
    assert_eq!(s1, 1);

    // Expected 0 on an aggregate that has an event: refused (nats-server
    // 2.10+ treats 0 as "no message on the subject yet").
    let refused = store.append(&a, 0, &env("e2", created("a"))).await;
    assert_conflict(refused, 0, 1);

    // Other aggregates have their own versions.
    let s2 = store.append(&b, 0, &env("e3", created("b"))).await.unwrap();
    assert_eq!(s2, 2);
    let s3 = store
        .append(&a, s1, &env("e4", added("a", "x")))
        .await
        .unwrap();
    assert_eq!(s3, 3);

    // A stale version is a conflict naming the actual one.
    let refused = store.append(&a, s1, &env("e5", added("a", "y"))).await;
    assert_conflict(refused, 1, 3);
    assert_eq!(store.version(&a).await.unwrap(), 3);
    assert_eq!(store.version(&b).await.unwrap(), 2);
    assert_eq!(store.last_seq().await.unwrap(), 3);
}

#[tokio::test]
async fn a_retried_append_is_answered_with_the_first_sequence() {
    let (_server, store) = started().await;
    let a = aggregate("a");
    let e = env("same-id", created("a"));
    let first = store.append(&a, 0, &e).await.unwrap();
    // The retry carries the same expected version, which is stale by now:
    // the duplicate check wins, nothing is stored twice.
    let again = store.append(&a, 0, &e).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(store.last_seq().await.unwrap(), 1);
    assert_eq!(store.load(&a).await.unwrap().len(), 1);

    // Still recognised after later events on the aggregate.
    let s2 = store
        .append(&a, first, &env("next", added("a", "x")))
        .await
        .unwrap();
    assert_eq!(store.append(&a, 0, &e).await.unwrap(), first);
    assert_eq!(
        store
            .append(&a, first, &env("next", added("a", "x")))
            .await
            .unwrap(),
        s2
    );
    // A different event with a stale version is still a conflict.
    assert!(matches!(
        store
            .append(&a, first, &env("other", added("a", "y")))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.last_seq().await.unwrap(), 2);
}

#[tokio::test]
async fn load_returns_one_aggregate_in_order() {
    let (server, store) = started().await;
    let a = aggregate("a");
    let b = aggregate("b");
    assert!(store.load(&a).await.unwrap().is_empty());
    let mut va = 0;
    let mut vb = 0;
    for i in 0..10 {
        let (room, v, ev) = if i % 2 == 0 {
            (
                &a,
                &mut va,
                if i == 0 {
                    created("a")
                } else {
                    added("a", &format!("u{i}"))
                },
            )
        } else {
            (
                &b,
                &mut vb,
                if i == 1 {
                    created("b")
                } else {
                    added("b", &format!("u{i}"))
                },
            )
        };
        *v = store
            .append(room, *v, &env(&format!("e{i}"), ev))
            .await
            .unwrap();
    }
    let loaded = store.load(&a).await.unwrap();
    let seqs: Vec<u64> = loaded.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![1, 3, 5, 7, 9]);
    assert_eq!(loaded[0].envelope.event, created("a"));
    assert_eq!(loaded[4].envelope.event, added("a", "u8"));
    assert!(loaded.iter().all(|s| s.envelope.event.aggregate() == a));

    // Loads do not leave consumers behind.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js.get_stream("MEMBERSHIP").await.unwrap();
    for _ in 0..100 {
        if stream.info().await.unwrap().state.consumer_count == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the load's consumer is still there");
}

async fn next(tail: &mut EventTail) -> Stored {
    tokio::time::timeout(Duration::from_secs(5), tail.next())
        .await
        .expect("tail stalled")
        .expect("tail ended")
        .expect("tail failed")
}

type EventTail = futures::stream::BoxStream<'static, Result<Stored, StoreError>>;

#[tokio::test]
async fn tail_replays_then_follows() {
    let (_server, store) = started().await;
    let a = aggregate("a");
    let b = aggregate("b");
    let s1 = store.append(&a, 0, &env("e1", created("a"))).await.unwrap();
    store.append(&b, 0, &env("e2", created("b"))).await.unwrap();
    store
        .append(&a, s1, &env("e3", added("a", "x")))
        .await
        .unwrap();

    let mut tail = store.tail(2).await.unwrap();
    let first = next(&mut tail).await;
    assert_eq!((first.seq, first.envelope.id.as_str()), (2, "e2"));
    let second = next(&mut tail).await;
    assert_eq!((second.seq, second.envelope.id.as_str()), (3, "e3"));

    // Follows new appends.
    store
        .append(&b, 2, &env("e4", added("b", "y")))
        .await
        .unwrap();
    let live = next(&mut tail).await;
    assert_eq!((live.seq, live.envelope.id.as_str()), (4, "e4"));

    // Starting past the end waits for the next event.
    let mut later = store.tail(5).await.unwrap();
    store
        .append(&b, 4, &env("e5", added("b", "z")))
        .await
        .unwrap();
    let got = next(&mut later).await;
    assert_eq!(got.seq, 5);
}

/// A tail whose consumer is lost before it delivered anything (deleted
/// here; in a cluster, lost with its node) is recreated by the client from
/// the stream's first event: the tail must never hand out an event below
/// its start (it ends; the projector and the notifier resume from their
/// checkpoints). Before the fix it yielded event 1 again.
#[tokio::test]
async fn a_tail_recreated_before_its_first_event_never_goes_back() {
    let (server, store) = started().await;
    let a = aggregate("a");
    let s1 = store.append(&a, 0, &env("e1", created("a"))).await.unwrap();
    let s2 = store
        .append(&a, s1, &env("e2", added("a", "x")))
        .await
        .unwrap();
    let mut tail = store.tail(3).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(MEMBERSHIP_STREAM)
        .await
        .unwrap();
    let names: Vec<String> = stream.consumer_names().map(Result::unwrap).collect().await;
    assert_eq!(names.len(), 1, "the tail's consumer");
    stream.delete_consumer(&names[0]).await.unwrap();
    store
        .append(&a, s2, &env("e3", added("a", "y")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the tail yields or ends")
        .expect("an event or an error");
    if let Ok(event) = first {
        assert_eq!(event.seq, 3, "the tail went back: {}", event.envelope.id);
    }
}

#[tokio::test]
async fn events_survive_a_server_restart() {
    let mut server = NatsServer::start();
    let a = aggregate("a");
    {
        let store = store(&server).await;
        store.append(&a, 0, &env("e1", created("a"))).await.unwrap();
    }
    server.restart();
    let store = store(&server).await;
    assert_eq!(store.load(&a).await.unwrap().len(), 1);
    let err = store
        .append(&a, 0, &env("e2", created("a")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
}
