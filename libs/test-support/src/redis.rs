//! A real `redis-server` per test.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Environment variable naming a `redis-server` binary to use instead of
/// the one on `PATH` (Debian's `/usr/bin/redis-server`).
const REDIS_SERVER_ENV: &str = "CONFAB_REDIS_SERVER";

/// How long a starting server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` on a free port with its data in a temporary directory,
/// killed and cleaned up on drop. Never the shared 6379 server: tests may
/// flush, restart or kill it.
pub struct RedisServer {
    child: Option<Child>,
    aof: bool,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server (AOF off, no snapshots, as Redis' defaults minus
    /// RDB saving).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server with `appendonly yes` and `appendfsync always`:
    /// what it acked survives [`RedisServer::restart`].
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut server = Self {
            child: None,
            aof,
            port: free_port(),
            dir,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: what was not persisted is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (Redis writes and fsyncs its AOF, then
    /// exits) and waits for it (10 s, then SIGKILL).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port, with the same
    /// data directory (empty, unless persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let binary = std::env::var_os(REDIS_SERVER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install redis-server (apt-get install redis-server) or set {REDIS_SERVER_ENV}",
                    binary.display()
                )
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not open port {} in {START_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
