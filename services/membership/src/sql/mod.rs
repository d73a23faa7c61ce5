//! The SQL side of the membership service, on sea-orm (Postgres or SQLite):
//!
//! - [`SqlEventStore`]: the event log for the embedded / all-in-one run
//!   (table `events`), implementing [`EventStore`](crate::store::EventStore);
//! - [`Projector`]: folds stored events into the projection tables, one
//!   transaction per event together with its checkpoint;
//! - [`SqlReadModel`]: answers [`ReadModel`](crate::read_model::ReadModel)
//!   queries from those tables;
//! - the `messages` table of [`crate::history`] (its projection in batches
//!   and its queries), in `history.rs`;
//! - [`SqlLogStore`]: the all-in-one's room event log (the in-process bus's
//!   [`LogStore`](confab_bus::LogStore)), in `bus_log.rs`;
//! - [`SqlCheckpoint`]: the notifier's checkpoint; every consumer's
//!   checkpoint is a row of `projection_checkpoints` (`checkpoint.rs`);
//! - [`connect`]: opens a database and brings its schema up to date
//!   (the schema lives in the `confab-migrations` crate).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use confab_membership::sql::{self, Projector, SqlEventStore, SqlReadModel};
//!
//! let db = sql::connect("sqlite::memory:").await?;
//! let store = Arc::new(SqlEventStore::new(db.clone()));
//! let projector = Projector::new(db.clone());
//! let read_model = SqlReadModel::new(db).with_progress(projector.subscribe());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn({
//!     let projector = projector.clone();
//!     async move { projector.run(store, async { let _ = stopped.await; }).await }
//! });
//! // ... serve queries with `read_model` ...
//! # let _ = read_model;
//! let _ = stop.send(());
//! task.await??;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use confab_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

mod bus_log;
mod checkpoint;
pub mod entities;
mod event_store;
mod history;
mod projector;
mod read_model;

pub use bus_log::SqlLogStore;
pub use checkpoint::SqlCheckpoint;
pub use event_store::SqlEventStore;
pub use history::HISTORY_PROJECTION;
pub(crate) use history::{MessageTable, StoredMessage, is_message_event};
pub use projector::{PROJECTION_NAME, ProjectionError, Projector};
pub use read_model::SqlReadModel;

/// Connections kept by the pool of a file-backed SQLite database.
const SQLITE_FILE_CONNECTIONS: u32 = 4;

/// How long a SQLite connection waits for another one's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a query waits for a pooled Postgres connection. The pool keeps
/// trying to connect meanwhile; with the default 30 s, every call during a
/// Postgres outage held its request slot that long after its caller (a
/// gateway, 2 s) had given up.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the database at `database_url` and applies every pending migration.
///
/// Accepted URLs: `postgres://user@host:port/db`, `sqlite::memory:` (one
/// private in-memory database, one pooled connection) and
/// `sqlite://path/to/file.db?mode=rwc` (created when missing; WAL journal,
/// `synchronous=NORMAL`, foreign keys off, a 10 s busy timeout and a small
/// pool). Every write transaction of this module starts with
/// `BEGIN IMMEDIATE` on SQLite, so concurrent writers queue instead of
/// failing with `SQLITE_BUSY`.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection, DbErr> {
    let in_memory = database_url.starts_with("sqlite:")
        && (database_url.contains(":memory:") || database_url.contains("mode=memory"));
    let db = if in_memory {
        connect_in_memory(database_url).await?
    } else {
        Database::connect(pool_options(database_url)).await?
    };
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// The pool of a SQLite file or a Postgres database.
fn pool_options(database_url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(database_url.to_owned());
    options.sqlx_logging(false);
    if database_url.starts_with("sqlite:") {
        options.max_connections(SQLITE_FILE_CONNECTIONS);
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(false)
        });
        // A SQLite connection is a file handle with its page cache:
        // recycling it only drops the cache.
        options.idle_timeout(None).max_lifetime(None);
    } else {
        options.acquire_timeout(PG_ACQUIRE_TIMEOUT);
    }
    options
}

/// An in-memory SQLite database (`sqlite::memory:`): one pooled
/// connection, and an anchor connection that keeps the database alive.
///
/// Every connection to a shared-cache in-memory database would contend on
/// table locks that the busy timeout does not cover, so one connection
/// serialises everything. An in-memory database lives while a connection
/// to it is open, and the pool closes a connection whose transaction was
/// cancelled mid-way (a dropped request, a timeout) and opens another:
/// without the anchor, that one found a new, empty database, without even
/// its tables. The anchor runs no query (so it takes no lock) and lives as
/// long as the process: an in-memory database is for tests and trials.
async fn connect_in_memory(database_url: &str) -> Result<DatabaseConnection, DbErr> {
    use sea_orm::sqlx::ConnectOptions as _;
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let sqlx_err = |e: sea_orm::sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()));
    // `sqlite::memory:` names the database (a shared cache,
    // `file:sqlx-in-memory-N`, unique in the process): the pool's
    // connections and the anchor open the same one.
    let options = database_url
        .parse::<SqliteConnectOptions>()
        .map_err(sqlx_err)?
        .foreign_keys(false)
        .disable_statement_logging();
    let anchor = options.connect().await.map_err(sqlx_err)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(sqlx_err)?;
    std::mem::forget(anchor);
    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Starts a transaction that will write: `BEGIN IMMEDIATE` on SQLite (the
/// write lock is taken up front, so a read-then-write transaction never
/// fails to upgrade), a plain `BEGIN` (read committed) on Postgres.
async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    })
    .await
}

/// Whether the connection talks to Postgres.
fn is_postgres(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// A sequence as stored (SQL `bigint`).
fn to_db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored sequence as the ports see it (never negative in practice).
fn from_db_seq(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}
