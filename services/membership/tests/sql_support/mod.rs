//! Shared by the `sql_*` tests: a fresh database per test (a temp-file
//! SQLite database, or a freshly created Postgres database dropped at the
//! end), scripted event histories and table dumps.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use confab_events::membership::{
    EventEnvelope, JoinedVia, LeftBecause, MembershipEvent, Role, SCHEMA_VERSION, Visibility,
};
use confab_events::{ChannelId, DmId, UserId, WorkspaceId};
use confab_membership::sql::{self, entities};
use confab_membership::store::EventStore;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryOrder};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A new database on the Postgres server at `DATABASE_URL`.
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an
/// `async fn name(backend: Backend)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::sql_support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::sql_support::Backend::Postgres).await;
                }
            )*
        }
    };
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The Postgres server's admin URL (`DATABASE_URL`, default the local `test`
/// database).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "confab_t_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A migrated database of its own; removed when dropped (also when the
/// test panics).
pub struct TestDb {
    /// The connection (migrations applied).
    pub db: DatabaseConnection,
    /// The URL `db` was opened with (to open a second pool, a "process").
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                let db = sql::connect(&url).await.expect("connect to sqlite");
                TestDb {
                    db,
                    url,
                    backend,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let name = unique_name();
                let conn = Database::connect(admin.as_str()).await.unwrap_or_else(|e| {
                    panic!("Postgres at {admin} (set DATABASE_URL) is unreachable: {e}")
                });
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let url = with_database(&admin, &name);
                let db = sql::connect(&url).await.expect("connect to postgres");
                TestDb {
                    db,
                    url,
                    backend,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: do the async work on a
        // thread with a runtime of its own.
        let admin = admin_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let conn = Database::connect(admin.as_str()).await?;
                conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

/// Parses an id (test data is always valid).
pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
/// Parses a workspace id.
pub fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}
/// Parses a channel id.
pub fn ch(s: &str) -> ChannelId {
    ChannelId::parse(s).unwrap()
}
/// Parses a DM id.
pub fn dm(s: &str) -> DmId {
    DmId::parse(s).unwrap()
}

/// An envelope with a fresh id.
pub fn envelope(event: MembershipEvent) -> EventEnvelope {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    EventEnvelope {
        v: SCHEMA_VERSION,
        id: format!("evt-{}-{n}", unique_name()),
        at: 1_700_000_000_000 + n,
        actor: None,
        event,
    }
}

/// Appends events in order, each against its aggregate's current last
/// sequence; returns their sequences.
pub async fn append_all(store: &dyn EventStore, events: Vec<MembershipEvent>) -> Vec<u64> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut seqs = Vec::new();
    for event in events {
        let aggregate = event.aggregate();
        let expected = match last.get(aggregate.as_str()) {
            Some(s) => *s,
            None => store.version(&aggregate).await.unwrap(),
        };
        let seq = store
            .append(&aggregate, expected, &envelope(event))
            .await
            .unwrap_or_else(|e| panic!("append to {aggregate}: {e}"));
        last.insert(aggregate.as_str().to_owned(), seq);
        seqs.push(seq);
    }
    seqs
}

/// A small organisation's history touching every event type.
///
/// Final state: workspace `acme` (alice owner, bob member, carol admin;
/// dave was removed); `general` public (alice, bob, carol), `secret`
/// private and archived (alice, carol invited by alice; bob joined and
/// left), `dm1` (alice, bob), `g1` group (alice, bob, carol, dave added).
/// A second workspace `beta` (erin owner, alice member) with channel `b1`.
pub fn scripted_history() -> Vec<MembershipEvent> {
    use MembershipEvent::*;
    vec![
        WorkspaceCreated {
            workspace: ws("acme"),
            name: "Acme".into(),
            owner: user("alice"),
        },
        WorkspaceMemberAdded {
            workspace: ws("acme"),
            user: user("bob"),
            role: Role::Member,
        },
        WorkspaceMemberAdded {
            workspace: ws("acme"),
            user: user("carol"),
            role: Role::Member,
        },
        WorkspaceMemberAdded {
            workspace: ws("acme"),
            user: user("carol"),
            role: Role::Admin,
        },
        WorkspaceMemberAdded {
            workspace: ws("acme"),
            user: user("dave"),
            role: Role::Member,
        },
        ChannelCreated {
            channel: ch("general"),
            workspace: ws("acme"),
            name: "general".into(),
            visibility: Visibility::Public,
            created_by: user("alice"),
        },
        ChannelMemberJoined {
            channel: ch("general"),
            user: user("bob"),
            via: JoinedVia::Joined,
        },
        ChannelMemberJoined {
            channel: ch("general"),
            user: user("carol"),
            via: JoinedVia::Joined,
        },
        ChannelCreated {
            channel: ch("secret"),
            workspace: ws("acme"),
            name: "secret".into(),
            visibility: Visibility::Private,
            created_by: user("alice"),
        },
        ChannelMemberJoined {
            channel: ch("secret"),
            user: user("carol"),
            via: JoinedVia::Invited { by: user("alice") },
        },
        ChannelMemberJoined {
            channel: ch("secret"),
            user: user("bob"),
            via: JoinedVia::Invited { by: user("alice") },
        },
        ChannelMemberLeft {
            channel: ch("secret"),
            user: user("bob"),
            because: LeftBecause::Left,
        },
        DmOpened {
            dm: dm("dm1"),
            workspace: ws("acme"),
            participants: vec![user("alice"), user("bob")],
            opened_by: user("alice"),
        },
        DmOpened {
            dm: dm("g1"),
            workspace: ws("acme"),
            participants: vec![user("alice"), user("bob"), user("carol")],
            opened_by: user("bob"),
        },
        DmParticipantAdded {
            dm: dm("g1"),
            user: user("dave"),
            by: user("bob"),
        },
        ChannelArchived {
            channel: ch("secret"),
            by: user("alice"),
        },
        WorkspaceMemberRemoved {
            workspace: ws("acme"),
            user: user("dave"),
        },
        WorkspaceCreated {
            workspace: ws("beta"),
            name: "Beta".into(),
            owner: user("erin"),
        },
        WorkspaceMemberAdded {
            workspace: ws("beta"),
            user: user("alice"),
            role: Role::Member,
        },
        ChannelCreated {
            channel: ch("b1"),
            workspace: ws("beta"),
            name: "b1".into(),
            visibility: Visibility::Public,
            created_by: user("erin"),
        },
    ]
}

/// Every projection table, whole, in primary-key order.
#[derive(Debug, PartialEq, Eq)]
pub struct Dump {
    /// `workspaces`.
    pub workspaces: Vec<entities::workspaces::Model>,
    /// `workspace_members`.
    pub workspace_members: Vec<entities::workspace_members::Model>,
    /// `channels`.
    pub channels: Vec<entities::channels::Model>,
    /// `channel_members`.
    pub channel_members: Vec<entities::channel_members::Model>,
    /// `dms`.
    pub dms: Vec<entities::dms::Model>,
    /// `dm_participants`.
    pub dm_participants: Vec<entities::dm_participants::Model>,
    /// `projection_checkpoints`.
    pub checkpoints: Vec<entities::projection_checkpoints::Model>,
}

/// Every row of `E`, ordered by `order`.
async fn all_by<E: EntityTrait>(
    db: &DatabaseConnection,
    order: impl IntoIterator<Item = E::Column>,
) -> Vec<E::Model> {
    let mut query = E::find();
    for column in order {
        query = query.order_by_asc(column);
    }
    query.all(db).await.unwrap()
}

/// Dumps every projection table.
pub async fn dump(db: &DatabaseConnection) -> Dump {
    use entities::*;
    Dump {
        workspaces: all_by::<workspaces::Entity>(db, [workspaces::Column::Id]).await,
        workspace_members: {
            use workspace_members::{Column, Entity};
            all_by::<Entity>(db, [Column::WorkspaceId, Column::UserId]).await
        },
        channels: all_by::<channels::Entity>(db, [channels::Column::Id]).await,
        channel_members: {
            use channel_members::{Column, Entity};
            all_by::<Entity>(db, [Column::ChannelId, Column::UserId]).await
        },
        dms: all_by::<dms::Entity>(db, [dms::Column::Id]).await,
        dm_participants: {
            use dm_participants::{Column, Entity};
            all_by::<Entity>(db, [Column::DmId, Column::UserId]).await
        },
        checkpoints: {
            use projection_checkpoints::{Column, Entity};
            all_by::<Entity>(db, [Column::Name]).await
        },
    }
}
