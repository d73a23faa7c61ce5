//! A remote-controlled Node.js process driving the real `socket.io-client`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{tools_dir, with_file_lock, workspace_root};

/// Environment variable naming the `node` binary (default `node`).
const NODE_ENV: &str = "CONFAB_NODE";
/// Environment variable naming the `npm` binary (default `npm`).
const NPM_ENV: &str = "CONFAB_NPM";

/// How long the driver may take to print `{"type":"ready"}`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time granted past an ack's own timeout before giving up on the driver.
const ACK_GRACE: Duration = Duration::from_secs(5);
/// How many received messages a failed expectation lists.
const HISTORY_SHOWN: usize = 200;

/// The Node package driving `socket.io-client`: `<workspace>/tests/js`.
pub fn js_dir() -> PathBuf {
    workspace_root().join("tests").join("js")
}

/// Ensures `tests/js/node_modules` is installed from the committed
/// `package-lock.json` and returns its path.
///
/// `npm ci` runs at most once across concurrent test processes (under a file
/// lock) and is skipped when the installed `socket.io-client` already has the
/// version pinned in `tests/js/package.json`.
///
/// # Panics
///
/// When `npm ci` fails (set `CONFAB_NPM` to pick another `npm`).
pub fn node_modules() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = js_dir();
            let modules = dir.join("node_modules");
            let wanted = pinned_versions(&dir);
            if missing_packages(&modules, &wanted).is_empty() {
                return modules;
            }
            with_file_lock(&tools_dir().join("npm-ci.lock"), || {
                if missing_packages(&modules, &wanted).is_empty() {
                    return;
                }
                let npm = std::env::var_os(NPM_ENV).unwrap_or_else(|| OsString::from("npm"));
                let output = std::process::Command::new(&npm)
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap_or_else(|err| {
                        panic!(
                            "cannot run `{} ci` in {}: {err}",
                            npm.to_string_lossy(),
                            dir.display()
                        )
                    });
                assert!(
                    output.status.success(),
                    "`{} ci` in {} failed ({}).\nstdout:\n{}\nstderr:\n{}",
                    npm.to_string_lossy(),
                    dir.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            });
            let missing = missing_packages(&modules, &wanted);
            assert!(
                missing.is_empty(),
                "after `npm ci`, {} lacks the pinned {missing:?}",
                modules.display()
            );
            modules
        })
        .clone()
}

/// The exact `socket.io-client` version `tests/js/package.json` pins.
/// Every dependency pinned in `tests/js/package.json` (dependencies and
/// devDependencies), as (name, exact version).
fn pinned_versions(js_dir: &Path) -> Vec<(String, String)> {
    let path = js_dir.join("package.json");
    let manifest = read_json(&path).unwrap_or_else(|| panic!("cannot read {}", path.display()));
    let mut pinned = Vec::new();
    for section in ["dependencies", "devDependencies"] {
        if let Some(deps) = manifest[section].as_object() {
            for (name, version) in deps {
                pinned.push((
                    name.clone(),
                    version.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    assert!(
        pinned.iter().any(|(n, _)| n == "socket.io-client"),
        "{} has no socket.io-client dependency",
        path.display()
    );
    pinned
}

/// The pinned packages that are not installed at their pinned version.
fn missing_packages(node_modules: &Path, pinned: &[(String, String)]) -> Vec<String> {
    pinned
        .iter()
        .filter(|(name, version)| {
            let installed = read_json(&node_modules.join(name).join("package.json"));
            installed.as_ref().and_then(|m| m["version"].as_str()) != Some(version.as_str())
        })
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Messages received from the driver but not yet consumed by an expectation.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Value>,
    pending: VecDeque<Value>,
}

/// A `node tests/js/driver.mjs` process driving real `socket.io-client`
/// sockets, addressed by name.
///
/// Commands are written to the driver's stdin; everything it reports (one
/// JSON object per line, see `tests/js/driver.mjs`) is collected by a
/// background task and consumed with [`expect`](Self::expect). Reports about a
/// socket carry `"socket": "<name>"`; acks also carry the request id.
///
/// Needs a Tokio runtime. The Node process is killed when this is dropped.
///
/// ```no_run
/// # async fn demo(port: u16) {
/// use std::time::Duration;
/// use serde_json::json;
/// let node = confab_test_support::NodeClient::spawn().await;
/// node.connect("a", &format!("http://127.0.0.1:{port}"),
///     json!({"transports": ["websocket"], "forceNew": true})).await;
/// node.expect_type("a", "connect", Duration::from_secs(5)).await;
/// let reply = node.emit_with_ack("a", "ping", vec![json!(1)], Duration::from_secs(2)).await;
/// # let _ = reply;
/// # }
/// ```
pub struct NodeClient {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    inbox: tokio::sync::Mutex<Inbox>,
    /// Every message received so far, for failure reports.
    history: Arc<Mutex<Vec<Value>>>,
    next_req: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeClient {
    /// Starts the driver (running `npm ci` first if needed, see
    /// [`node_modules`]) and waits for its `ready` line.
    ///
    /// # Panics
    ///
    /// When Node cannot be started or does not become ready within 30s.
    pub async fn spawn() -> NodeClient {
        match tokio::task::spawn_blocking(node_modules).await {
            Ok(_) => {}
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("provisioning node_modules was cancelled: {err}"),
        }
        let dir = js_dir();
        let node = std::env::var_os(NODE_ENV).unwrap_or_else(|| OsString::from("node"));
        let mut child = Command::new(&node)
            .arg("driver.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start `{} driver.mjs` in {}: {err} (set {NODE_ENV} to the node binary)",
                    node.to_string_lossy(),
                    dir.display()
                )
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let history = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let reader_history = Arc::clone(&history);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let message = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"type": "raw", "line": line}));
                lock(&reader_history).push(message.clone());
                if tx.send(message).is_err() {
                    break;
                }
            }
            // Dropping `tx` tells waiting expectations that the driver is gone.
        });
        let forwarder = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[node driver] {line}");
            }
        });

        let client = NodeClient {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            inbox: tokio::sync::Mutex::new(Inbox {
                rx,
                pending: VecDeque::new(),
            }),
            history,
            next_req: AtomicU64::new(1),
            tasks: vec![reader, forwarder],
        };
        client
            .wait_for("the driver's ready line", READY_TIMEOUT, |m| {
                m["type"] == "ready"
            })
            .await;
        client
    }

    /// Sends one raw command object (see `tests/js/driver.mjs`).
    ///
    /// # Panics
    ///
    /// When the driver's stdin is closed (the process died).
    pub async fn send(&self, cmd: Value) {
        let mut line = serde_json::to_vec(&cmd).expect("a JSON value serialises");
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let result = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        if let Err(err) = result {
            panic!(
                "cannot send {cmd} to the node driver ({err}); it probably exited.\n{}",
                self.history_report()
            );
        }
    }

    /// `io(url, opts)` as socket `socket` (replacing any socket of that name).
    /// `opts` is passed through as-is, e.g.
    /// `{"transports": ["websocket"], "forceNew": true, "reconnection": false, "auth": {...}}`.
    pub async fn connect(&self, socket: &str, url: &str, opts: Value) {
        self.send(json!({"cmd": "connect", "socket": socket, "url": url, "opts": opts}))
            .await;
    }

    /// `socket.emit(event, ...args)` without an acknowledgement.
    pub async fn emit(&self, socket: &str, event: &str, args: Vec<Value>) {
        self.send(json!({"cmd": "emit", "socket": socket, "event": event, "args": args}))
            .await;
    }

    /// `socket.timeout(timeout).emit(event, ...args, callback)` and waits for
    /// the callback: `Ok(ack arguments)` or `Err(message)` (e.g.
    /// `"operation has timed out"`, or `"socket has been disconnected"`).
    ///
    /// # Panics
    ///
    /// When the driver reports neither within `timeout` plus a few seconds.
    pub async fn emit_with_ack(
        &self,
        socket: &str,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, String> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.send(json!({
            "cmd": "emit", "socket": socket, "event": event, "args": args,
            "ack": true, "timeoutMs": timeout_ms, "req": req,
        }))
        .await;
        let reply = self
            .expect(
                socket,
                |m| (m["type"] == "ack" || m["type"] == "ack_error") && m["req"] == req,
                timeout + ACK_GRACE,
            )
            .await;
        if reply["type"] == "ack" {
            Ok(reply["args"].as_array().cloned().unwrap_or_default())
        } else {
            Err(reply["message"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// `socket.disconnect()`.
    pub async fn disconnect(&self, socket: &str) {
        self.send(json!({"cmd": "disconnect", "socket": socket}))
            .await;
    }

    /// `socket.connect()` again after a [`disconnect`](Self::disconnect).
    pub async fn connect_again(&self, socket: &str) {
        self.send(json!({"cmd": "connect_again", "socket": socket}))
            .await;
    }

    /// Simulates a network drop (`socket.io.engine.close()`): the socket
    /// reports `disconnect` and, with reconnection enabled, reconnects.
    pub async fn drop_transport(&self, socket: &str) {
        self.send(json!({"cmd": "drop", "socket": socket})).await;
    }

    /// The socket's state: `{"exists", "id", "connected", "active", "recovered"}`.
    pub async fn state(&self, socket: &str) -> Value {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.send(json!({"cmd": "state", "socket": socket, "req": req}))
            .await;
        self.expect(
            socket,
            |m| m["type"] == "state" && m["req"] == req,
            Duration::from_secs(10),
        )
        .await
    }

    /// Waits for the first message about `socket` matching `pred` (already
    /// buffered ones first), removes it from the buffer and returns it.
    /// Non-matching messages stay buffered for later expectations.
    ///
    /// # Panics
    ///
    /// After `timeout`, or when the driver exits first, listing every message
    /// received so far.
    pub async fn expect(
        &self,
        socket: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let what = format!("a matching message for socket {socket:?}");
        self.wait_for(&what, timeout, |m| m["socket"] == socket && pred(m))
            .await
    }

    /// Like [`expect`](Self::expect) but for any message, whatever its socket
    /// (e.g. `{"type":"error"}` replies to malformed commands).
    pub async fn expect_any(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.wait_for("a matching message", timeout, pred).await
    }

    /// Waits for a message of type `ty` (`"connect"`, `"disconnect"`, ...)
    /// about `socket`.
    pub async fn expect_type(&self, socket: &str, ty: &str, timeout: Duration) -> Value {
        let what = format!("a {ty:?} message for socket {socket:?}");
        self.wait_for(&what, timeout, |m| m["socket"] == socket && m["type"] == ty)
            .await
    }

    /// Waits for `socket` to receive server event `event` and returns its
    /// arguments.
    pub async fn expect_event(&self, socket: &str, event: &str, timeout: Duration) -> Vec<Value> {
        let what = format!("event {event:?} on socket {socket:?}");
        let message = self
            .wait_for(&what, timeout, |m| {
                m["socket"] == socket && m["type"] == "event" && m["event"] == event
            })
            .await;
        message["args"].as_array().cloned().unwrap_or_default()
    }

    /// Asserts that no message about `socket` matching `pred` is buffered or
    /// arrives during `for_duration`. Other messages stay buffered.
    ///
    /// # Panics
    ///
    /// As soon as a matching message shows up.
    pub async fn expect_none(
        &self,
        socket: &str,
        pred: impl Fn(&Value) -> bool,
        for_duration: Duration,
    ) {
        let matches = |m: &Value| m["socket"] == socket && pred(m);
        let deadline = Instant::now() + for_duration;
        let mut inbox = self.inbox.lock().await;
        if let Some(found) = inbox.pending.iter().find(|m| matches(m)) {
            panic!(
                "expected no such message for socket {socket:?}, but got {found}\n{}",
                self.history_report()
            );
        }
        loop {
            match tokio::time::timeout_at(deadline, inbox.rx.recv()).await {
                Err(_elapsed) => return,
                // The driver exited: nothing more can arrive.
                Ok(None) => return,
                Ok(Some(message)) if matches(&message) => panic!(
                    "expected no such message for socket {socket:?} within {for_duration:?}, \
                     but got {message}\n{}",
                    self.history_report()
                ),
                Ok(Some(message)) => inbox.pending.push_back(message),
            }
        }
    }

    /// Every message received from the driver so far (consumed or not).
    pub fn received(&self) -> Vec<Value> {
        lock(&self.history).clone()
    }

    /// Asks the driver to close its sockets and exit, and waits (up to 10s)
    /// for it; kills it otherwise.
    pub async fn exit(mut self) {
        // Ignore a dead driver here: exiting is the goal anyway.
        {
            let mut stdin = self.stdin.lock().await;
            let _ = stdin.write_all(b"{\"cmd\":\"exit\"}\n").await;
            let _ = stdin.flush().await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut inbox = self.inbox.lock().await;
        if let Some(index) = inbox.pending.iter().position(&pred) {
            return inbox.pending.remove(index).expect("index is in range");
        }
        loop {
            match tokio::time::timeout_at(deadline, inbox.rx.recv()).await {
                Ok(Some(message)) if pred(&message) => return message,
                Ok(Some(message)) => inbox.pending.push_back(message),
                Ok(None) => panic!(
                    "the node driver exited while waiting for {what}\n{}",
                    self.history_report()
                ),
                Err(_elapsed) => panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.history_report()
                ),
            }
        }
    }

    fn history_report(&self) -> String {
        let history = lock(&self.history);
        let skipped = history.len().saturating_sub(HISTORY_SHOWN);
        let mut report = format!(
            "received from the node driver ({} messages, oldest first{}):",
            history.len(),
            if skipped > 0 {
                format!(", first {skipped} omitted")
            } else {
                String::new()
            }
        );
        for message in &history[skipped..] {
            report.push_str("\n  ");
            report.push_str(&message.to_string());
        }
        if history.is_empty() {
            report.push_str("\n  (nothing)");
        }
        report
    }
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("pid", &self.child.id())
            .field("received", &lock(&self.history).len())
            .finish()
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        // `kill_on_drop` also covers this; be explicit so the process is
        // signalled right now rather than when `child` is dropped.
        let _ = self.child.start_kill();
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
