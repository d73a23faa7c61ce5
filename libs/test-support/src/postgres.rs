//! A real PostgreSQL server of its own per test: a fresh cluster
//! (`initdb`) in a temporary directory, on a free port, that a test may stop
//! and start again under a running service. Never the shared server on
//! 5432.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Environment variable naming the directory of `initdb` and `postgres`
/// (default: the newest `/usr/lib/postgresql/*/bin`).
const PG_BIN_ENV: &str = "CONFAB_PG_BIN";

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server on 127.0.0.1 with trust authentication for
/// user `postgres`, its data in a temporary directory (kept across
/// [`stop`](Self::stop) / [`start_again`](Self::start_again), deleted on
/// drop, when the server is stopped too).
///
/// Run as root (containers), the server runs as the system user
/// `postgres`, which must exist (PostgreSQL refuses to run as root).
///
/// ```no_run
/// let mut pg = confab_test_support::PostgresServer::start();
/// let url = pg.url(); // postgres://postgres@127.0.0.1:PORT/postgres
/// pg.stop();
/// pg.start_again();
/// # let _ = url;
/// ```
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    /// Holds `data/` and `server.log`.
    dir: TempDir,
    /// `(uid, gid)` to run as, when this process is root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresServer {
    /// Creates a cluster and starts it on a free port.
    ///
    /// # Panics
    ///
    /// When `initdb` or `postgres` cannot be found or run.
    pub fn start() -> PostgresServer {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("confab-pg-")
            .tempdir()
            .expect("cannot create a temporary directory for postgres");
        let run_as = run_as();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("cannot hand the temporary directory to user postgres");
        }
        let mut server = PostgresServer {
            bin,
            port: 0,
            dir,
            run_as,
            child: None,
        };
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for _ in 0..3 {
            server.port = free_port();
            if server.spawn_and_wait() {
                return server;
            }
        }
        server.fail("did not start")
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server with a fast shutdown (SIGINT: open sessions are
    /// ended, the data is kept) and waits until it exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts a [`stop`](Self::stop)ped server again on the same port with
    /// the same data.
    ///
    /// # Panics
    ///
    /// When it does not come back (its log is included).
    pub fn start_again(&mut self) {
        self.stop();
        if !self.spawn_and_wait() {
            self.fail("did not start again");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Spawns `postgres` and waits for its port; false when it exited.
    fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the postgres log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn postgres: {err}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.accepts()
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server accepts sessions (not merely its port: it
    /// refuses them while starting up).
    fn accepts(&self) -> bool {
        let isready = self.bin.join("pg_isready");
        if !isready.is_file() {
            return true;
        }
        Command::new(isready)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn fail(&mut self, what: &str) -> ! {
        self.stop();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        panic!("postgres {what} on port {}; its log:\n{log}", self.port);
    }
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("url", &self.url())
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of `initdb` and `postgres`.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no /usr/lib/postgresql/*/bin/initdb; install PostgreSQL or set {PG_BIN_ENV}")
    })
}

/// The user `postgres`'s ids when this process runs as root.
fn run_as() -> Option<(u32, u32)> {
    // The owner of /proc/self is the effective user.
    let euid = std::fs::metadata("/proc/self").ok()?.uid();
    if euid != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("cannot run `id postgres`");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("running as root needs a system user `postgres` to run PostgreSQL as")
    };
    Some((id("-u"), id("-g")))
}
