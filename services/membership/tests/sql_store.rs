//! `SqlEventStore` against real SQLite (temp file) and Postgres
//! (`DATABASE_URL`, a fresh database per test).

#[macro_use]
mod sql_support;

use std::sync::Arc;
use std::time::Duration;

use confab_events::RoomId;
use confab_events::membership::{EventEnvelope, JoinedVia, MembershipEvent, Role};
use confab_membership::sql::{self, SqlEventStore, entities};
use confab_membership::store::{EventStore, StoreError, Stored};
use futures::StreamExt;
use sea_orm::{ActiveValue::Set, DbErr, EntityTrait, SqlErr};
use sql_support::{Backend, TestDb, append_all, ch, envelope, scripted_history, user, ws};

const WAIT: Duration = Duration::from_secs(10);

fn joined(channel: &str, who: &str) -> MembershipEvent {
    MembershipEvent::ChannelMemberJoined {
        channel: ch(channel),
        user: user(who),
        via: JoinedVia::Joined,
    }
}

async fn next(
    stream: &mut futures::stream::BoxStream<'static, Result<Stored, StoreError>>,
) -> Stored {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("tail produced nothing in time")
        .expect("tail ended")
        .expect("tail failed")
}

on_both!(
    append_load_tail,
    tail_is_woken_by_appends_in_this_process,
    tail_polls_for_appends_of_other_processes,
    concurrent_appends_to_one_aggregate_conflict,
    stale_expected_sequences_conflict,
    retries_with_the_same_event_id_are_idempotent,
    concurrent_retries_store_one_event,
    corrupt_envelopes_are_reported,
    migrations_are_idempotent,
    unique_indexes_guard_the_log,
);

async fn append_load_tail(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let mut empty = store.tail(1).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), empty.next())
            .await
            .is_err(),
        "an empty log yields nothing"
    );

    let history = scripted_history();
    let seqs = append_all(&store, history.clone()).await;
    assert_eq!(seqs, (1..=history.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.last_seq().await.unwrap(), history.len() as u64);

    // load: one aggregate, in order, envelopes intact.
    let general = RoomId::channel(&ch("general"));
    let loaded = store.load(&general).await.unwrap();
    let expected: Vec<(u64, &MembershipEvent)> = seqs
        .iter()
        .zip(&history)
        .filter(|(_, e)| e.aggregate() == general)
        .map(|(s, e)| (*s, e))
        .collect();
    assert_eq!(
        loaded
            .iter()
            .map(|s| (s.seq, &s.envelope.event))
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        store.version(&general).await.unwrap(),
        expected.last().unwrap().0
    );
    assert_eq!(
        store
            .version(&RoomId::channel(&ch("nothing")))
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .load(&RoomId::channel(&ch("nothing")))
            .await
            .unwrap()
            .is_empty()
    );

    // tail from 1 sees everything in log order; from 5 starts at 5.
    let mut all = store.tail(1).await.unwrap();
    for (seq, event) in seqs.iter().zip(&history) {
        let s = next(&mut all).await;
        assert_eq!((s.seq, &s.envelope.event), (*seq, event));
    }
    let mut from5 = store.tail(5).await.unwrap();
    assert_eq!(next(&mut from5).await.seq, 5);

    // The stream stays open and yields new events.
    let live = store.clone();
    let appended = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let last = live.version(&general).await.unwrap();
        live.append(&general, last, &envelope(joined("general", "zed")))
            .await
            .unwrap()
    });
    let s = next(&mut all).await;
    assert_eq!(s.seq, appended.await.unwrap());
    assert_eq!(s.envelope.event, joined("general", "zed"));
}

async fn tail_is_woken_by_appends_in_this_process(backend: Backend) {
    let t = TestDb::new(backend).await;
    // Polling alone would take a minute: only the in-process signal can
    // deliver within the test's wait.
    let store = SqlEventStore::new(t.db.clone()).with_poll_interval(Duration::from_secs(60));
    let mut tail = store.tail(1).await.unwrap();
    let room = RoomId::channel(&ch("c1"));
    let writer = store.clone();
    let room2 = room.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer
            .append(&room2, 0, &envelope(joined("c1", "u1")))
            .await
            .unwrap();
    });
    let started = tokio::time::Instant::now();
    assert_eq!(next(&mut tail).await.seq, 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn tail_polls_for_appends_of_other_processes(backend: Backend) {
    let t = TestDb::new(backend).await;
    let reader = SqlEventStore::new(t.db.clone()).with_poll_interval(Duration::from_millis(50));
    // Another "process": its own pool, its own store.
    let other = SqlEventStore::new(sql::connect(&t.url).await.unwrap());
    let mut tail = reader.tail(1).await.unwrap();
    let seqs = append_all(&other, scripted_history()).await;
    for seq in seqs {
        assert_eq!(next(&mut tail).await.seq, seq);
    }
}

async fn concurrent_appends_to_one_aggregate_conflict(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));

    for (room, seeded) in [("c-new", false), ("c-old", true)] {
        let aggregate = RoomId::channel(&ch(room));
        let expected = if seeded {
            store
                .append(&aggregate, 0, &envelope(joined(room, "first")))
                .await
                .unwrap()
        } else {
            0
        };
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                let aggregate = aggregate.clone();
                let event = envelope(joined(room, &format!("u{i}")));
                tokio::spawn(async move { store.append(&aggregate, expected, &event).await })
            })
            .collect();
        let mut won = Vec::new();
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(seq) => won.push(seq),
                Err(StoreError::Conflict {
                    aggregate: a,
                    expected: e,
                    actual,
                }) => {
                    assert_eq!((a.as_str(), e), (aggregate.as_str(), expected));
                    assert_ne!(actual, Some(expected));
                    conflicts += 1;
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one append wins ({room})");
        assert_eq!(conflicts, 19);
        let events = store.load(&aggregate).await.unwrap();
        assert_eq!(events.len(), if seeded { 2 } else { 1 });
        assert_eq!(events.last().unwrap().seq, won[0]);
        assert_eq!(store.version(&aggregate).await.unwrap(), won[0]);
    }
}

async fn stale_expected_sequences_conflict(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    let a = RoomId::workspace(&ws("a"));
    let b = RoomId::workspace(&ws("b"));
    let add = |w: &str, u: &str| MembershipEvent::WorkspaceMemberAdded {
        workspace: ws(w),
        user: user(u),
        role: Role::Member,
    };
    assert_eq!(
        store
            .append(&a, 0, &envelope(add("a", "u1")))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .append(&b, 0, &envelope(add("b", "u1")))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .append(&a, 1, &envelope(add("a", "u2")))
            .await
            .unwrap(),
        3
    );

    for stale in [0, 1, 2, 7] {
        match store.append(&a, stale, &envelope(add("a", "u3"))).await {
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => assert_eq!((expected, actual), (stale, Some(3))),
            other => panic!("expected {stale} accepted: {other:?}"),
        }
    }
    assert_eq!(
        store
            .append(&a, 3, &envelope(add("a", "u3")))
            .await
            .unwrap(),
        4
    );
    assert_eq!(store.last_seq().await.unwrap(), 4);
}

async fn retries_with_the_same_event_id_are_idempotent(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    let room = RoomId::channel(&ch("c1"));
    let first = envelope(joined("c1", "u1"));
    assert_eq!(store.append(&room, 0, &first).await.unwrap(), 1);
    // The retry carries the expected sequence it was decided against,
    // which is now stale; it still gets the first append's sequence.
    assert_eq!(store.append(&room, 0, &first).await.unwrap(), 1);
    let second = envelope(joined("c1", "u2"));
    assert_eq!(store.append(&room, 1, &second).await.unwrap(), 2);
    assert_eq!(store.append(&room, 1, &second).await.unwrap(), 2);
    assert_eq!(store.append(&room, 2, &first).await.unwrap(), 1);
    assert_eq!(store.last_seq().await.unwrap(), 2);
    assert_eq!(store.load(&room).await.unwrap().len(), 2);
}

async fn concurrent_retries_store_one_event(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    let room = RoomId::channel(&ch("c1"));
    let event = envelope(joined("c1", "u1"));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, room, event) = (store.clone(), room.clone(), event.clone());
            tokio::spawn(async move { store.append(&room, 0, &event).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    assert_eq!(store.load(&room).await.unwrap().len(), 1);
}

async fn try_insert_raw(
    t: &TestDb,
    aggregate: &str,
    prev_seq: i64,
    id: &str,
    envelope: &str,
) -> Result<u64, DbErr> {
    let row = entities::events::ActiveModel {
        aggregate: Set(aggregate.to_owned()),
        prev_seq: Set(prev_seq),
        event_id: Set(id.to_owned()),
        kind: Set("channel.member_joined".to_owned()),
        envelope: Set(envelope.to_owned()),
        at: Set(1),
        ..Default::default()
    };
    let seq = entities::events::Entity::insert(row)
        .exec(&t.db)
        .await?
        .last_insert_id;
    Ok(seq as u64)
}

async fn insert_raw(t: &TestDb, aggregate: &str, prev_seq: i64, id: &str, envelope: &str) -> u64 {
    try_insert_raw(t, aggregate, prev_seq, id, envelope)
        .await
        .unwrap()
}

/// The schema itself refuses a second event with the same `prev_seq` in an
/// aggregate and a second event with the same id, whoever writes.
async fn unique_indexes_guard_the_log(backend: Backend) {
    let t = TestDb::new(backend).await;
    assert_eq!(
        try_insert_raw(&t, "channel:x", 0, "a", "{}").await.unwrap(),
        1
    );
    for (aggregate, prev_seq, id) in [("channel:x", 0, "b"), ("channel:y", 0, "a")] {
        let err = try_insert_raw(&t, aggregate, prev_seq, id, "{}")
            .await
            .unwrap_err();
        assert!(
            matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
            "{aggregate}/{prev_seq}/{id}: {err}"
        );
    }
    // A failed insert may burn a Postgres sequence value: sequences grow
    // but need not be contiguous.
    let y = try_insert_raw(&t, "channel:y", 0, "b", "{}").await.unwrap();
    let x = try_insert_raw(&t, "channel:x", 1, "c", "{}").await.unwrap();
    assert!(1 < y && y < x, "{y} {x}");
}

async fn corrupt_envelopes_are_reported(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    let room = RoomId::channel(&ch("c1"));
    assert_eq!(
        store
            .append(&room, 0, &envelope(joined("c1", "u1")))
            .await
            .unwrap(),
        1
    );
    let bad_json = insert_raw(&t, "channel:c1", 1, "bad-1", "{not json").await;
    assert_eq!(bad_json, 2);
    let mut future: EventEnvelope = envelope(joined("c1", "u3"));
    future.v = 99;
    let future_json = serde_json::to_string(&future).unwrap();
    let bad_version = insert_raw(&t, "channel:c2", 0, "bad-2", &future_json).await;
    assert_eq!(bad_version, 3);

    match store.load(&room).await {
        Err(StoreError::Corrupt { seq, .. }) => assert_eq!(seq, 2),
        other => panic!("corrupt event loaded: {other:?}"),
    }
    match store.load(&RoomId::channel(&ch("c2"))).await {
        Err(StoreError::Corrupt { seq, reason }) => {
            assert_eq!(seq, 3);
            assert!(reason.contains("99"), "{reason}");
        }
        other => panic!("unknown version loaded: {other:?}"),
    }
    // The tail yields the good event, then the error, then ends.
    let mut tail = store.tail(1).await.unwrap();
    assert_eq!(next(&mut tail).await.seq, 1);
    match tokio::time::timeout(WAIT, tail.next()).await.unwrap() {
        Some(Err(StoreError::Corrupt { seq, .. })) => assert_eq!(seq, 2),
        other => panic!("expected a corrupt event: {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, tail.next())
            .await
            .unwrap()
            .is_none()
    );
    let mut tail3 = store.tail(3).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, tail3.next()).await.unwrap(),
        Some(Err(StoreError::Corrupt { seq: 3, .. }))
    ));
}

async fn migrations_are_idempotent(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    append_all(&store, scripted_history()).await;
    // Connecting again runs the migrator again: nothing pending, data kept.
    let again = sql::connect(&t.url).await.unwrap();
    assert_eq!(
        SqlEventStore::new(again).last_seq().await.unwrap(),
        scripted_history().len() as u64
    );
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let store = SqlEventStore::new(db);
    let seqs = append_all(&store, scripted_history()).await;
    let mut tail = store.tail(1).await.unwrap();
    for seq in seqs {
        assert_eq!(next(&mut tail).await.seq, seq);
    }
}

/// The pool closes a connection whose transaction was cancelled mid-way (a
/// dropped request, a timeout) and opens another. An in-memory database
/// lives while a connection to it is open: without the anchor that
/// `sql::connect` keeps, the new connection found a new, empty database
/// (no tables, nothing committed). Fails without it ("no such table").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_survives_cancelled_transactions() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = sql::connect("sqlite::memory:").await.unwrap();
    db.execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    let (mut committed, mut cancelled) = (0u64, 0u64);
    for i in 0..2000u64 {
        let work = async {
            let txn = db.begin().await?;
            txn.execute_unprepared("INSERT INTO t VALUES (1)").await?;
            txn.execute_unprepared(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) \
                 SELECT max(x) FROM c",
            )
            .await?;
            txn.commit().await
        };
        // Cut at every point of the transaction in turn.
        let cut = Duration::from_micros(10 + (i % 60) * 15);
        match tokio::time::timeout(cut, work).await {
            Ok(done) => {
                done.unwrap();
                committed += 1;
            }
            Err(_) => cancelled += 1,
        }
    }
    assert!(cancelled > 100, "the cuts hit transactions ({cancelled})");
    let rows = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT count(*) AS n FROM t",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    // A commit cut after it reached the database counts too.
    assert!(
        rows as u64 >= committed && rows as u64 <= committed + cancelled,
        "{rows} rows, {committed} committed, {cancelled} cancelled"
    );
    assert_eq!(
        entities::events::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .len(),
        0,
        "the migrated tables are still there"
    );
}

/// A consumer that stops polling its tail in the middle of a page read and
/// then uses the database itself (the notifier's `select!` saving its
/// checkpoint when its timer fires) must get a connection. The suspended
/// read used to keep the in-memory database's only connection: the
/// consumer's own query waited for the pool's 30 s acquire timeout
/// (`http_api` failed about once in a hundred runs with "Connection pool
/// timed out").
#[tokio::test]
async fn a_tail_suspended_mid_read_holds_no_connection() {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let store = SqlEventStore::new(db);
    append_all(&store, scripted_history()).await;
    for _ in 0..20 {
        let mut events = store.tail(1).await.unwrap();
        // Polled once: the first page read starts and is left suspended,
        // the stream kept, as `select!` leaves it.
        let started = futures::poll!(events.next());
        assert!(started.is_pending(), "a read completes only after a poll");
        let last = tokio::time::timeout(Duration::from_secs(5), store.last_seq())
            .await
            .expect("another query waited behind the suspended read")
            .unwrap();
        assert_eq!(last, scripted_history().len() as u64);
        // The stream still delivers from where it was.
        assert_eq!(next(&mut events).await.seq, 1);
    }
}
