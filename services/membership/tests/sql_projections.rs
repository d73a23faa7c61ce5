//! `Projector` and `SqlReadModel` against real SQLite (temp file) and
//! Postgres (`DATABASE_URL`, a fresh database per test).

#[macro_use]
mod sql_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use confab_events::membership::{EventEnvelope, JoinedVia, MembershipEvent};
use confab_events::{RoomId, UserId};
use confab_membership::read_model::{JoinDecision, QueryError, ReadModel};
use confab_membership::sql::{
    self, ProjectionError, Projector, SqlEventStore, SqlReadModel, entities,
};
use confab_membership::store::{EventStore, StoreError, Stored};
use futures::stream::BoxStream;
use sea_orm::{ActiveValue::Set, EntityTrait};
use sql_support::{Backend, TestDb, append_all, ch, dm, dump, scripted_history, user, ws};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

on_both!(
    projects_a_scripted_history,
    wait_for_reports_behind,
    restart_never_applies_twice_nor_skips,
    rebuild_gives_identical_tables,
    rebuild_while_running_converges,
    two_projectors_share_one_database,
    corrupt_event_stops_the_projector,
);

/// A running `Projector::run`, stopped by `stop`.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ProjectionError>>,
}

fn start(projector: &Projector, store: Arc<dyn EventStore>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let projector = projector.clone();
    let task = tokio::spawn(async move {
        projector
            .run(store, async {
                let _ = stopped.await;
            })
            .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("projector did not stop")
            .unwrap()
            .expect("projector failed");
    }
}

fn rooms(names: &[&str]) -> Vec<RoomId> {
    names.iter().map(|n| RoomId::parse(n).unwrap()).collect()
}

fn users(names: &[&str]) -> Vec<UserId> {
    names.iter().map(|n| user(n)).collect()
}

fn allowed() -> JoinDecision {
    JoinDecision {
        allowed: true,
        reason: None,
        read_only: false,
    }
}

/// Allowed into an archived channel, to read only.
fn read_only() -> JoinDecision {
    JoinDecision {
        read_only: true,
        ..allowed()
    }
}

fn refused(reason: &str) -> JoinDecision {
    JoinDecision {
        allowed: false,
        reason: Some(reason.to_owned()),
        read_only: false,
    }
}

/// What the read model must answer after the whole scripted history.
async fn assert_scripted_state(rm: &SqlReadModel, t: &TestDb) {
    let room = |s: &str| RoomId::parse(s).unwrap();
    assert_eq!(
        rm.rooms_of(&user("alice")).await.unwrap(),
        rooms(&[
            "channel:general",
            "channel:secret",
            "dm:dm1",
            "dm:g1",
            "workspace:acme",
            "workspace:beta"
        ])
    );
    assert_eq!(
        rm.rooms_of(&user("bob")).await.unwrap(),
        rooms(&["channel:general", "dm:dm1", "dm:g1", "workspace:acme"])
    );
    // Removal from the workspace does not cascade: projections follow
    // their own events only.
    assert_eq!(rm.rooms_of(&user("dave")).await.unwrap(), rooms(&["dm:g1"]));
    assert_eq!(
        rm.rooms_of(&user("erin")).await.unwrap(),
        rooms(&["channel:b1", "workspace:beta"])
    );
    assert!(rm.rooms_of(&user("nobody")).await.unwrap().is_empty());

    assert_eq!(
        rm.members_of(&room("workspace:acme")).await.unwrap(),
        users(&["alice", "bob", "carol"])
    );
    assert_eq!(
        rm.members_of(&room("channel:general")).await.unwrap(),
        users(&["alice", "bob", "carol"])
    );
    assert_eq!(
        rm.members_of(&room("channel:secret")).await.unwrap(),
        users(&["alice", "carol"])
    );
    assert_eq!(
        rm.members_of(&room("dm:g1")).await.unwrap(),
        users(&["alice", "bob", "carol", "dave"])
    );
    assert_eq!(
        rm.members_of(&room("dm:dm1")).await.unwrap(),
        users(&["alice", "bob"])
    );
    assert_eq!(
        rm.members_of(&room("user:zed")).await.unwrap(),
        users(&["zed"])
    );
    assert!(
        rm.members_of(&room("channel:none"))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        rm.is_member(&user("carol"), &room("channel:secret"))
            .await
            .unwrap()
    );
    assert!(
        !rm.is_member(&user("bob"), &room("channel:secret"))
            .await
            .unwrap()
    );
    assert!(
        !rm.is_member(&user("dave"), &room("workspace:acme"))
            .await
            .unwrap()
    );
    assert!(
        rm.is_member(&user("alice"), &room("user:alice"))
            .await
            .unwrap()
    );
    assert!(
        !rm.is_member(&user("alice"), &room("user:bob"))
            .await
            .unwrap()
    );

    for (who, r, decision) in [
        ("alice", "user:alice", allowed()),
        ("alice", "user:bob", refused("not a member of user:bob")),
        ("carol", "channel:secret", read_only()),
        (
            "bob",
            "channel:secret",
            refused("not a member of channel:secret"),
        ),
        ("bob", "channel:nope", refused("no such room")),
        (
            "dave",
            "workspace:acme",
            refused("not a member of workspace:acme"),
        ),
        ("dave", "dm:g1", allowed()),
        ("erin", "dm:dm1", refused("not a member of dm:dm1")),
        ("erin", "dm:nope", refused("no such room")),
        ("erin", "workspace:nope", refused("no such room")),
        ("alice", "workspace:beta", allowed()),
    ] {
        assert_eq!(
            rm.may_join(&user(who), &room(r)).await.unwrap(),
            decision,
            "may_join({who}, {r})"
        );
    }

    // The rows themselves.
    let d = dump(&t.db).await;
    let role = |w: &str, u: &str| {
        d.workspace_members
            .iter()
            .find(|m| m.workspace_id == w && m.user_id == u)
            .map(|m| m.role.as_str())
    };
    assert_eq!(role("acme", "alice"), Some("owner"));
    assert_eq!(role("acme", "carol"), Some("admin"));
    assert_eq!(role("acme", "bob"), Some("member"));
    assert_eq!(role("beta", "erin"), Some("owner"));
    assert_eq!(d.workspace_members.len(), 5);
    assert_eq!(
        d.workspaces
            .iter()
            .map(|w| (
                w.id.as_str(),
                w.name.as_str(),
                w.owner.as_str(),
                w.created_seq
            ))
            .collect::<Vec<_>>(),
        vec![("acme", "Acme", "alice", 1), ("beta", "Beta", "erin", 18)]
    );
    let secret = d.channels.iter().find(|c| c.id == "secret").unwrap();
    assert_eq!(
        (
            secret.visibility.as_str(),
            secret.archived,
            secret.workspace_id.as_str()
        ),
        ("private", true, "acme")
    );
    assert!(
        !d.channels
            .iter()
            .find(|c| c.id == "general")
            .unwrap()
            .archived
    );
    let via = |c: &str, u: &str| {
        d.channel_members
            .iter()
            .find(|m| m.channel_id == c && m.user_id == u)
            .map(|m| m.joined_via.as_str())
    };
    assert_eq!(via("general", "alice"), Some("created"));
    assert_eq!(via("general", "bob"), Some("joined"));
    assert_eq!(via("secret", "carol"), Some("invited:alice"));
    assert_eq!(d.channel_members.len(), 6);
    assert_eq!(
        d.dms
            .iter()
            .map(|m| (m.id.as_str(), m.is_group, m.opened_by.as_str()))
            .collect::<Vec<_>>(),
        vec![("dm1", false, "alice"), ("g1", true, "bob")]
    );
    assert_eq!(d.dm_participants.len(), 6);
    assert_eq!(rm.checkpoint().await.unwrap(), 20);
}

async fn projects_a_scripted_history(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    let projector = Projector::new(t.db.clone());
    let rm = SqlReadModel::new(t.db.clone()).with_progress(projector.subscribe());
    assert_eq!(rm.checkpoint().await.unwrap(), 0);
    let running = start(&projector, store.clone());

    let seqs = append_all(&*store, scripted_history()).await;
    assert_eq!(seqs.len(), 20);
    rm.wait_for(20, WAIT).await.unwrap();
    assert_scripted_state(&rm, &t).await;

    // Live: read-your-writes after a command.
    let seq = append_all(
        &*store,
        vec![MembershipEvent::ChannelMemberJoined {
            channel: ch("secret"),
            user: user("bob"),
            via: JoinedVia::Invited { by: user("carol") },
        }],
    )
    .await[0];
    rm.wait_for(seq, WAIT).await.unwrap();
    assert!(
        rm.is_member(&user("bob"), &RoomId::channel(&ch("secret")))
            .await
            .unwrap()
    );
    running.stop().await;
    assert_eq!(projector.checkpoint().await.unwrap(), seq);
}

async fn wait_for_reports_behind(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = SqlEventStore::new(t.db.clone());
    let seqs = append_all(&store, scripted_history()).await;
    let projector = Projector::new(t.db.clone());
    // Polling read model: no progress signal.
    let rm = SqlReadModel::new(t.db.clone());
    match rm.wait_for(1, Duration::from_millis(100)).await {
        Err(QueryError::Behind { at, wanted }) => assert_eq!((at, wanted), (0, 1)),
        other => panic!("not behind: {other:?}"),
    }
    for s in store.load(&RoomId::workspace(&ws("acme"))).await.unwrap() {
        if s.seq <= 3 {
            assert!(projector.apply(&s).await.unwrap());
        }
    }
    rm.wait_for(3, Duration::from_millis(100)).await.unwrap();
    rm.wait_for(0, Duration::ZERO).await.unwrap();
    match rm.wait_for(seqs[19], Duration::from_millis(100)).await {
        Err(QueryError::Behind { at, wanted }) => assert_eq!((at, wanted), (3, 20)),
        other => panic!("not behind: {other:?}"),
    }
    // A waiter is released by a projector applying in the background.
    let waiter = {
        let rm = rm.clone();
        tokio::spawn(async move { rm.wait_for(20, WAIT).await })
    };
    let running = start(&projector, Arc::new(store));
    waiter.await.unwrap().unwrap();
    running.stop().await;
}

/// Replays the log from sequence 1 whatever it is asked for: a restart
/// that forgot its position.
struct FromStart(Arc<SqlEventStore>);

#[async_trait]
impl EventStore for FromStart {
    async fn append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        self.0.append(aggregate, expected, event).await
    }
    async fn load(&self, aggregate: &RoomId) -> Result<Vec<Stored>, StoreError> {
        self.0.load(aggregate).await
    }
    async fn tail(
        &self,
        _from_seq: u64,
    ) -> Result<BoxStream<'static, Result<Stored, StoreError>>, StoreError> {
        self.0.tail(1).await
    }
    async fn last_seq(&self) -> Result<u64, StoreError> {
        self.0.last_seq().await
    }
}

async fn restart_never_applies_twice_nor_skips(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    let history = scripted_history();
    let (first, rest) = history.split_at(17);

    // A sampler asserting that the checkpoint never goes back.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (db, sampling) = (t.db.clone(), sampling.clone());
        tokio::spawn(async move {
            let rm = SqlReadModel::new(db);
            let mut last = 0;
            let mut samples = 0;
            while sampling.load(Ordering::Relaxed) {
                let now = rm.checkpoint().await.unwrap();
                assert!(now >= last, "checkpoint went back from {last} to {now}");
                last = now;
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples
        })
    };

    // First run: up to event 17 (bob left `secret`, dave left `acme`).
    let p1 = Projector::new(t.db.clone());
    let running = start(&p1, store.clone());
    append_all(&*store, first.to_vec()).await;
    let rm = SqlReadModel::new(t.db.clone()).with_progress(p1.subscribe());
    rm.wait_for(17, WAIT).await.unwrap();
    running.stop().await;
    assert_eq!(p1.checkpoint().await.unwrap(), 17);
    let before = dump(&t.db).await;

    // Offering old events again changes nothing.
    let mut tail = store.tail(1).await.unwrap();
    for _ in 0..17 {
        let s = futures::StreamExt::next(&mut tail).await.unwrap().unwrap();
        assert!(
            !p1.apply(&s).await.unwrap(),
            "event {} applied twice",
            s.seq
        );
    }
    assert_eq!(dump(&t.db).await, before);

    // More events while stopped, then a new projector (a restarted
    // process) fed from sequence 1: skips 1..=17, applies 18..=20.
    append_all(&*store, rest.to_vec()).await;
    let p2 = Projector::new(t.db.clone());
    let mut progress = p2.subscribe();
    let running = start(&p2, Arc::new(FromStart(store.clone())));
    let rm = SqlReadModel::new(t.db.clone()).with_progress(p2.subscribe());
    rm.wait_for(20, WAIT).await.unwrap();
    running.stop().await;
    assert_eq!(*progress.borrow_and_update(), 20);

    sampling.store(false, Ordering::Relaxed);
    assert!(sampler.await.unwrap() > 0);
    // Had 1..=17 been applied again, bob would be back in `secret` and dave
    // in `acme`.
    assert_scripted_state(&rm, &t).await;
}

async fn rebuild_gives_identical_tables(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    let projector = Projector::new(t.db.clone());

    // An empty log rebuilds to empty tables.
    assert_eq!(projector.rebuild(&*store).await.unwrap(), 0);
    assert!(dump(&t.db).await.workspaces.is_empty());

    append_all(&*store, scripted_history()).await;
    let running = start(&projector, store.clone());
    let rm = SqlReadModel::new(t.db.clone()).with_progress(projector.subscribe());
    rm.wait_for(20, WAIT).await.unwrap();
    running.stop().await;
    let before = dump(&t.db).await;

    assert_eq!(projector.rebuild(&*store).await.unwrap(), 20);
    assert_eq!(dump(&t.db).await, before);

    // Damage the tables; a rebuild restores them exactly.
    entities::channel_members::Entity::delete_many()
        .exec(&t.db)
        .await
        .unwrap();
    entities::workspaces::Entity::insert(entities::workspaces::ActiveModel {
        id: Set("ghost".into()),
        name: Set("Ghost".into()),
        owner: Set("nobody".into()),
        created_seq: Set(99),
    })
    .exec_without_returning(&t.db)
    .await
    .unwrap();
    assert_ne!(dump(&t.db).await, before);
    assert_eq!(projector.rebuild(&*store).await.unwrap(), 20);
    assert_eq!(dump(&t.db).await, before);
    assert_scripted_state(&rm, &t).await;
}

async fn rebuild_while_running_converges(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    let projector = Projector::new(t.db.clone());
    let running = start(&projector, store.clone());
    let rm = SqlReadModel::new(t.db.clone()).with_progress(projector.subscribe());
    let history = scripted_history();
    let (first, rest) = history.split_at(10);
    append_all(&*store, first.to_vec()).await;

    // Appends race the rebuild; the running projector carries on after it.
    let writer = {
        let (store, rest) = (store.clone(), rest.to_vec());
        tokio::spawn(async move { append_all(&*store, rest).await })
    };
    let rebuilt = projector.rebuild(&*store).await.unwrap();
    assert!(rebuilt >= 10);
    writer.await.unwrap();
    rm.wait_for(20, WAIT).await.unwrap();
    running.stop().await;
    let live = dump(&t.db).await;
    assert_eq!(projector.rebuild(&*store).await.unwrap(), 20);
    assert_eq!(dump(&t.db).await, live);
    assert_scripted_state(&rm, &t).await;
}

async fn two_projectors_share_one_database(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    // Two "processes", each with its own pool and projector.
    let other_db = sql::connect(&t.url).await.unwrap();
    let a = Projector::new(t.db.clone());
    let b = Projector::new(other_db.clone());
    let other_store = Arc::new(
        SqlEventStore::new(other_db.clone()).with_poll_interval(Duration::from_millis(20)),
    );
    let ra = start(&a, store.clone());
    let rb = start(&b, other_store);
    append_all(&*store, scripted_history()).await;
    let rm = SqlReadModel::new(t.db.clone());
    rm.wait_for(20, WAIT).await.unwrap();
    ra.stop().await;
    rb.stop().await;
    let shared = dump(&t.db).await;
    a.rebuild(&*store).await.unwrap();
    assert_eq!(dump(&t.db).await, shared);
    assert_scripted_state(&rm, &t).await;
}

async fn corrupt_event_stops_the_projector(backend: Backend) {
    let t = TestDb::new(backend).await;
    let store = Arc::new(SqlEventStore::new(t.db.clone()));
    append_all(&*store, scripted_history()[..3].to_vec()).await;
    entities::events::Entity::insert(entities::events::ActiveModel {
        aggregate: Set("channel:bad".into()),
        prev_seq: Set(0),
        event_id: Set("bad".into()),
        kind: Set("channel.created".into()),
        envelope: Set(r#"{"v":1,"type":"channel.created","data":{}}"#.into()),
        at: Set(1),
        ..Default::default()
    })
    .exec(&t.db)
    .await
    .unwrap();
    append_all(
        &*store,
        vec![MembershipEvent::DmOpened {
            dm: dm("d"),
            workspace: ws("acme"),
            participants: vec![user("alice"), user("bob")],
            opened_by: user("alice"),
        }],
    )
    .await;

    let projector = Projector::new(t.db.clone());
    let (_stop, stopped) = oneshot::channel::<()>();
    let result = tokio::time::timeout(
        WAIT,
        projector.run(store.clone(), async {
            let _ = stopped.await;
        }),
    )
    .await
    .expect("the projector kept running past a corrupt event");
    match result {
        Err(ProjectionError::Store(StoreError::Corrupt { seq, .. })) => assert_eq!(seq, 4),
        other => panic!("expected a corrupt-event error: {other:?}"),
    }
    assert_eq!(projector.checkpoint().await.unwrap(), 3);
    let before = dump(&t.db).await;
    assert!(matches!(
        projector.rebuild(&*store).await,
        Err(ProjectionError::Store(StoreError::Corrupt { seq: 4, .. }))
    ));
    assert_eq!(dump(&t.db).await, before);
}

#[tokio::test]
async fn in_memory_sqlite_projects_and_rebuilds() {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let store = Arc::new(SqlEventStore::new(db.clone()));
    let projector = Projector::new(db.clone());
    let rm = SqlReadModel::new(db.clone()).with_progress(projector.subscribe());
    let running = start(&projector, store.clone());
    append_all(&*store, scripted_history()).await;
    rm.wait_for(20, WAIT).await.unwrap();
    running.stop().await;
    let before = dump(&db).await;
    assert_eq!(projector.rebuild(&*store).await.unwrap(), 20);
    assert_eq!(dump(&db).await, before);
    assert_eq!(
        rm.members_of(&RoomId::parse("channel:secret").unwrap())
            .await
            .unwrap(),
        users(&["alice", "carol"])
    );
}

/// The presence publisher looks up the workspaces of batches of any size
/// (1 to 512 users). The lookup keeps one statement shape, so a connection
/// prepares and caches it once: an `IN` list sized to each batch cached a
/// statement per size on every connection, and the membership service's
/// memory (and the server's, on Postgres) grew as new sizes turned up.
/// Postgres lists a session's prepared statements; SQLite's cache is the
/// same code path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_lookups_prepare_one_statement_whatever_the_batch_size() {
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};
    let t = TestDb::new(Backend::Postgres).await;
    for i in 0..150 {
        let row = entities::workspace_members::ActiveModel {
            workspace_id: Set(format!("w{}", i % 3)),
            user_id: Set(format!("u{i}")),
            role: Set("member".into()),
        };
        entities::workspace_members::Entity::insert(row)
            .exec(&t.db)
            .await
            .unwrap();
    }
    // One connection: the session whose statements are listed below is the
    // one that ran the lookups.
    let mut options = ConnectOptions::new(t.url.clone());
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await.unwrap();
    let rm = SqlReadModel::new(db.clone());
    for n in 1..=150 {
        let batch: Vec<UserId> = (0..n).map(|i| user(&format!("u{i}"))).collect();
        let mut found: Vec<(String, String)> = rm
            .workspaces_of(&batch)
            .await
            .unwrap()
            .into_iter()
            .map(|(u, w)| (u.to_string(), w.to_string()))
            .collect();
        found.sort();
        let mut expected: Vec<(String, String)> = (0..n)
            .map(|i| (format!("u{i}"), format!("workspace:w{}", i % 3)))
            .collect();
        expected.sort();
        assert_eq!(found, expected, "a batch of {n}");
    }
    // The pattern is split so that this query does not list itself.
    let listed = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM pg_prepared_statements \
             WHERE statement LIKE '%' || 'workspace' || '_members%'",
        ))
        .await
        .unwrap()
        .unwrap();
    let n: i64 = listed.try_get("", "n").unwrap();
    assert_eq!(n, 1, "prepared workspace lookups on one connection");
}
