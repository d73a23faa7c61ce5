//! Scenario 4, durable publish: `--publishers` clients, each alone in its
//! own room (`setup --room-size 1`), keep `--window` `message:send` in
//! flight for `--secs` (closed loop). Reports acked sends per second, ack
//! latency (the send is acked once the message is stored), and the
//! end-to-end latency of each publisher's own `message:new`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Result;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Frame, Ws, body, classify, now_nanos, scan_body};
use crate::common::{Common, Plan, bounded, member, watches};
use crate::proc::{CpuSnap, histogram, round1, round3, summary};

/// Options of `publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    common: Common,
    /// Publishing clients, each in its own room.
    #[arg(long, default_value_t = 50)]
    publishers: usize,
    /// Sends in flight per publisher.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// How long to publish, seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Prefix of users and rooms (as given to `setup --room-size 1`).
    #[arg(long, default_value = "p")]
    prefix: String,
    /// Padding added to every message body, bytes.
    #[arg(long, default_value_t = 32)]
    pad: usize,
}

struct Shared {
    ack: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    refused: AtomicU64,
    connected: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn send(ws: &mut Ws, id: u64, room: &str, run_id: &str, pad: usize) -> Result<u64> {
    let sent = now_nanos();
    let frame = format!(
        "42{id}[\"message:send\",{{\"room\":\"{room}\",\"body\":\"{}\",\"clientMsgId\":\"{run_id}-{id}\"}}]",
        body(0, sent, id, pad)
    );
    ws.send(Message::text(frame)).await?;
    Ok(sent)
}

async fn publisher(
    i: usize,
    a: Arc<(String, String, String, usize, usize)>,
    plan: Plan,
    shared: Arc<Shared>,
    mut go: watch::Receiver<u8>,
) {
    let (auth, room, run_id, window, pad) = (&a.0, &a.1, &a.2, a.3, a.4);
    let mut ws = match plan.connect(i, auth).await {
        Ok(s) => s.ws,
        Err(e) => {
            shared.failed.fetch_add(1, Relaxed);
            lock(&shared.first_error).get_or_insert_with(|| format!("{e:#}"));
            return;
        }
    };
    shared.connected.fetch_add(1, Relaxed);
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut sending = false;
    loop {
        tokio::select! {
            changed = go.changed() => {
                if changed.is_err() { break; }
                let v = *go.borrow_and_update();
                match v {
                    1 => {
                        sending = true;
                        for _ in 0..window {
                            match send(&mut ws, next_id, room, run_id, pad).await {
                                Ok(t) => { pending.insert(next_id, t); next_id += 1; }
                                Err(_) => return,
                            }
                        }
                    }
                    2 => sending = false,
                    3 => break,
                    _ => {}
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                match classify(text.as_bytes()) {
                    Frame::Ping => { let _ = ws.send(Message::text("3")).await; }
                    Frame::Event(ev) if ev.starts_with(b"[\"message:new\"") => {
                        if let Some((_, sent, _)) = scan_body(ev) {
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            let _ = lock(&shared.e2e).record(us.max(1));
                        }
                    }
                    Frame::Ack(id, rest) => {
                        if let Some(sent) = pending.remove(&id) {
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            let _ = lock(&shared.ack).record(us.max(1));
                            if memchr::memmem::find(rest, b"\"error\"").is_some() {
                                shared.refused.fetch_add(1, Relaxed);
                            } else {
                                shared.ok.fetch_add(1, Relaxed);
                            }
                            if sending {
                                match send(&mut ws, next_id, room, run_id, pad).await {
                                    Ok(t) => { pending.insert(next_id, t); next_id += 1; }
                                    Err(_) => return,
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Runs the durable-publish scenario.
pub async fn run(a: PublishArgs) -> Result<Value> {
    bounded(&a.common, run_inner(&a)).await
}

async fn run_inner(a: &PublishArgs) -> Result<Value> {
    let plan = Plan::new(&a.common)?;
    let watches = watches(&a.common)?;
    let shared = Arc::new(Shared {
        ack: Mutex::new(histogram()),
        e2e: Mutex::new(histogram()),
        ok: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
    });
    let run_id = format!("p{:x}", now_nanos() / 1_000_000);
    let (go, rx) = watch::channel(0u8);
    let mut tasks = Vec::new();
    for i in 0..a.publishers {
        let (user, room, _) = member(&a.prefix, i, 1);
        let auth = plan.auth(&user, std::slice::from_ref(&room))?;
        let spec = Arc::new((auth, room, run_id.clone(), a.window.max(1), a.pad));
        tasks.push(tokio::spawn(publisher(
            i,
            spec,
            plan.clone(),
            Arc::clone(&shared),
            rx.clone(),
        )));
    }
    while shared.connected.load(Relaxed) + shared.failed.load(Relaxed) < a.publishers {
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_secs(2)).await;
    let before = CpuSnap::take(&watches);
    let t0 = Instant::now();
    let _ = go.send(1);
    sleep(Duration::from_secs(a.secs)).await;
    let ok_at_end = shared.ok.load(Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let after = CpuSnap::take(&watches);
    let _ = go.send(2);
    sleep(Duration::from_secs(2)).await;
    let _ = go.send(3);
    for t in tasks {
        let _ = t.await;
    }
    Ok(json!({
        "scenario": "publish",
        "label": a.common.label,
        "publishers": a.publishers,
        "window": a.window,
        "connected": shared.connected.load(Relaxed),
        "connect_failed": shared.failed.load(Relaxed),
        "first_connect_error": *lock(&shared.first_error),
        "secs": round3(secs),
        "acked_per_sec": round1(ok_at_end as f64 / secs),
        "acked": shared.ok.load(Relaxed),
        "refused": shared.refused.load(Relaxed),
        "ack": summary(&lock(&shared.ack)),
        "e2e_own_delivery": summary(&lock(&shared.e2e)),
        "cpu_percent": before.percent_until(&after, &watches),
    }))
}
