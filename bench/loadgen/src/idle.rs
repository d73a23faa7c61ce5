//! Scenario 2, idle connections: opens `--connections` clients (users
//! `{prefix}{i}` with no room but their own), measures the handshake rate
//! (JWT verification included) and, once all are connected, the RSS of the
//! watched server processes; then holds them `--hold-secs`.
//!
//! A process may hold at most 20,000 open files here, so above
//! `--max-per-process` connections the run splits itself into child
//! processes (`--child`), each with its own source addresses, and merges
//! what they report.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio::time::sleep;

use crate::client::{Frame, classify, now_nanos};
use crate::common::{Common, Plan, bounded, transport_name, watches};
use crate::conn::TransportKind;
use crate::proc::{Watch, round1, round3, rss_kib, rss_map};

/// Options of `idle`.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections in all.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Prefix of the users.
    #[arg(long, default_value = "i")]
    prefix: String,
    /// How long to hold the connections once all are open, seconds.
    #[arg(long, default_value_t = 10)]
    hold_secs: u64,
    /// Wait between the last handshake and the RSS reading, seconds.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Most connections one process opens (each needs a file descriptor;
    /// a polling client two, so half as many of them).
    #[arg(long, default_value_t = 19_000)]
    max_per_process: usize,
    /// Watched processes whose names start with this count toward the
    /// server RSS per connection.
    #[arg(long, default_value = "gateway")]
    server_prefix: String,
    /// Internal: index of the first user of this process.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Internal: run as a child of a split run (report readiness on stdout,
    /// close when stdin closes).
    #[arg(long)]
    child: bool,
}

struct Worker {
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    start_ns: u64,
    end_ns: u64,
    dropped: Arc<AtomicUsize>,
    phase: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens this process's share of connections and returns once every
/// handshake finished.
async fn open(a: &IdleArgs) -> Result<Worker> {
    let plan = Plan::new(&a.common)?;
    let n = a.connections;
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let end_ns = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (phase, rx) = watch::channel(false);
    let start_ns = now_nanos();
    let mut tasks = Vec::with_capacity(n);
    for j in 0..n {
        let i = a.first + j;
        let auth = plan.auth(&format!("{}{i}", a.prefix), &[])?;
        let (plan, connected, failed, dropped, end_ns, first_error, mut rx) = (
            plan.clone(),
            Arc::clone(&connected),
            Arc::clone(&failed),
            Arc::clone(&dropped),
            Arc::clone(&end_ns),
            Arc::clone(&first_error),
            rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ws = match plan.open(i, &auth).await {
                Ok(c) => c,
                Err(e) => {
                    failed.fetch_add(1, Relaxed);
                    let mut f = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    f.get_or_insert_with(|| format!("{e:#}"));
                    return;
                }
            };
            end_ns.fetch_max(now_nanos(), Relaxed);
            connected.fetch_add(1, Relaxed);
            loop {
                tokio::select! {
                    _ = rx.changed() => {
                        ws.close().await;
                        break;
                    }
                    m = ws.next_text() => match m {
                        Some(Ok(t)) => {
                            if classify(&t) == Frame::Ping && ws.send_text("3".into()).await.is_err() {
                                dropped.fetch_add(1, Relaxed);
                                break;
                            }
                        }
                        _ => {
                            dropped.fetch_add(1, Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }
    while connected.load(Relaxed) + failed.load(Relaxed) < n {
        sleep(Duration::from_millis(50)).await;
    }
    let first_error = first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Worker {
        connected: connected.load(Relaxed),
        failed: failed.load(Relaxed),
        first_error,
        start_ns,
        end_ns: end_ns.load(Relaxed),
        dropped,
        phase,
        tasks,
    })
}

impl Worker {
    fn ready_json(&self) -> Value {
        json!({
            "ready": true,
            "connected": self.connected,
            "failed": self.failed,
            "first_error": self.first_error,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "rss_kib": rss_kib(std::process::id()),
        })
    }

    async fn close(self) -> usize {
        let _ = self.phase.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.dropped.load(Relaxed)
    }
}

/// Runs the idle-connections scenario (or one child's share of it).
pub async fn run(a: IdleArgs) -> Result<Value> {
    bounded(&a.common, run_inner(&a)).await
}

async fn run_inner(a: &IdleArgs) -> Result<Value> {
    if a.child {
        let w = open(a).await?;
        println!("{}", w.ready_json());
        // Hold until the parent closes our stdin (or twice the hold time).
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(a.hold_secs * 2 + 60),
            tokio::io::stdin().read_to_end(&mut sink),
        )
        .await;
        let dropped = w.close().await;
        return Ok(json!({ "done": true, "dropped": dropped }));
    }

    let watches = watches(&a.common)?;
    let before = rss_map(&watches);
    // A polling client holds two sockets (GETs and POSTs).
    let per_process = match a.common.transport {
        TransportKind::Websocket => a.max_per_process,
        TransportKind::Polling => a.max_per_process / 2,
    };
    let parts = a.connections.div_ceil(per_process.max(1));
    let mut readies: Vec<Value> = Vec::new();
    let mut local = None;
    let mut children = Vec::new();
    if parts <= 1 {
        let w = open(a).await?;
        readies.push(w.ready_json());
        local = Some(w);
    } else {
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let per = a.connections.div_ceil(parts);
        for p in 0..parts {
            let first = a.first + p * per;
            let n = per.min(a.connections - p * per);
            let mut child = tokio::process::Command::new(&exe)
                .args(&args)
                .args(["--child", "--connections", &n.to_string()])
                .args(["--first", &first.to_string()])
                .args([
                    "--source-offset",
                    &(a.common.source_offset + p as u32 * a.common.sources).to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a child load generator")?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            children.push((child, BufReader::new(stdout).lines()));
        }
        for (i, (_, lines)) in children.iter_mut().enumerate() {
            let line = lines
                .next_line()
                .await?
                .ok_or_else(|| anyhow!("child {i} exited before it was ready"))?;
            let v: Value = serde_json::from_str(&line)?;
            if v.get("error").is_some() {
                bail!("child {i} failed: {v}");
            }
            readies.push(v);
        }
    }
    let connected: u64 = readies.iter().filter_map(|r| r["connected"].as_u64()).sum();
    let failed: u64 = readies.iter().filter_map(|r| r["failed"].as_u64()).sum();
    let start = readies
        .iter()
        .filter_map(|r| r["start_ns"].as_u64())
        .min()
        .unwrap_or(0);
    let end = readies
        .iter()
        .filter_map(|r| r["end_ns"].as_u64())
        .max()
        .unwrap_or(0);
    let handshake_secs = end.saturating_sub(start) as f64 / 1e9;
    eprintln!(
        "idle[{}]: {connected}/{} connected in {handshake_secs:.1}s",
        a.common.label, a.connections
    );
    sleep(Duration::from_secs(a.settle_secs)).await;
    let mut all = watches.clone();
    for (i, (c, _)) in children.iter().enumerate() {
        if let Some(pid) = c.id() {
            all.push(Watch {
                name: format!("loadgen-child-{i}"),
                pid,
            });
        }
    }
    let after = rss_map(&all);
    let server_delta: i64 = watches
        .iter()
        .filter(|w| w.name.starts_with(&a.server_prefix))
        .map(|w| {
            after.get(&w.name).copied().unwrap_or(0) as i64
                - before.get(&w.name).copied().unwrap_or(0) as i64
        })
        .sum();
    let loadgen_kib: u64 = all
        .iter()
        .filter(|w| w.name.starts_with("loadgen"))
        .filter_map(|w| after.get(&w.name))
        .sum();
    sleep(Duration::from_secs(a.hold_secs)).await;

    let mut dropped = 0;
    if let Some(w) = local {
        dropped += w.close().await as u64;
    }
    for (mut c, mut lines) in children {
        drop(c.stdin.take());
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await
            && let Ok(v) = serde_json::from_str::<Value>(&line)
        {
            dropped += v["dropped"].as_u64().unwrap_or(0);
        }
        let _ = c.wait().await;
    }
    let per_conn = server_delta as f64 * 1024.0 / connected.max(1) as f64;
    Ok(json!({
        "scenario": "idle",
        "label": a.common.label,
        "transport": transport_name(a.common.transport),
        "connections": a.connections,
        "connected": connected,
        "failed": failed,
        "first_error": readies.iter().find_map(|r| r["first_error"].as_str()),
        "processes": readies.len(),
        "targets": a.common.url.split(',').count(),
        "handshake_secs": round3(handshake_secs),
        "handshakes_per_sec": round1(connected as f64 / handshake_secs.max(1e-9)),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "server_rss_delta_kib": server_delta,
        "server_rss_bytes_per_conn": round1(per_conn),
        "loadgen_rss_kib": loadgen_kib,
        "dropped_while_idle": dropped,
        "hold_secs": a.hold_secs,
    }))
}
