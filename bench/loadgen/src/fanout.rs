//! Scenario 1, fan-out: `--clients` clients in rooms of `--room-size`; the
//! first member of every room publishes `message:send` (acked) while the
//! total rate steps up through `--rates`, until delivery falls behind or
//! p99 passes `--p99-limit-ms`. Every member, the publisher included,
//! receives each `message:new` of its room.
//!
//! Per step: offered and delivered messages/s, end-to-end latency (send to
//! delivery, both stamped by this machine's clock), ack latency, CPU of
//! every watched process. At the end: lost messages (acked by the server,
//! never delivered to a member that stayed connected) and duplicates.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use crate::client::{Frame, body, classify, now_nanos, scan_body};
use crate::common::{Bits, Common, Plan, bounded, member, transport_name, watches};
use crate::proc::{CpuSnap, histogram, round1, round3, summary};

/// Histogram shards: clients record into `shard = index % SHARDS`.
const SHARDS: usize = 4;

/// Options of `fanout`.
#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Clients in all.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Members per room.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Prefix of users and rooms (as given to `setup`).
    #[arg(long, default_value = "f")]
    prefix: String,
    /// Total publish rates to step through, messages/s (each delivered to
    /// `--room-size` members).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50,100,200,400,800,1600,2500,3500,5000"
    )]
    rates: Vec<u64>,
    /// Length of a step, seconds.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// Stop after a step whose p99 passed this, ms.
    #[arg(long, default_value_t = 1000)]
    p99_limit_ms: u64,
    /// Stop after a step that delivered less than this share of the offered
    /// deliveries.
    #[arg(long, default_value_t = 0.9)]
    keep_up: f64,
    /// Wait after connecting, before the first step, seconds.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Longest wait for late deliveries after the last step, seconds.
    #[arg(long, default_value_t = 15)]
    drain_secs: u64,
    /// Padding added to every message body, bytes.
    #[arg(long, default_value_t = 32)]
    pad: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Wait,
    Step(usize),
    Drain,
    Done,
}

type Hists = Vec<Vec<Mutex<Histogram<u64>>>>;

struct Shared {
    e2e: Hists,
    ack: Hists,
    /// Deliveries while each step ran (the last entry: the drain).
    window: Vec<AtomicU64>,
    cur: AtomicUsize,
    sent: Vec<AtomicU64>,
    ok: Vec<AtomicU64>,
    refused: Vec<AtomicU64>,
    periods: Vec<Duration>,
    connected: AtomicUsize,
    failed: AtomicUsize,
    disconnected: AtomicUsize,
    /// Set before the `Done` phase: closes after it are not drops.
    done: AtomicBool,
    first_error: Mutex<Option<String>>,
}

fn hists(steps: usize) -> Hists {
    (0..steps)
        .map(|_| (0..SHARDS).map(|_| Mutex::new(histogram())).collect())
        .collect()
}

fn merged(h: &Hists, step: usize) -> Histogram<u64> {
    let mut out = histogram();
    for shard in &h[step] {
        let _ = out.add(&*shard.lock().unwrap_or_else(|e| e.into_inner()));
    }
    out
}

fn counters(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// What one client saw.
#[derive(Default)]
struct ClientOut {
    room: usize,
    connected: bool,
    dropped: bool,
    got: Bits,
    dups: u64,
    /// Publisher only: sequence numbers the server acked as stored.
    acked: Option<Bits>,
}

struct ClientSpec {
    i: usize,
    auth: String,
    room: String,
    room_idx: usize,
    publisher: bool,
    run_id: String,
    pad: usize,
}

type PhaseWait = Pin<Box<dyn Future<Output = (bool, watch::Receiver<Phase>)> + Send>>;

/// A future that resolves at the next phase change, giving the receiver
/// back.
fn wait_phase(mut rx: watch::Receiver<Phase>) -> PhaseWait {
    Box::pin(async move {
        let ok = rx.changed().await.is_ok();
        (ok, rx)
    })
}

async fn client(
    spec: ClientSpec,
    plan: Plan,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) -> ClientOut {
    let mut out = ClientOut {
        room: spec.room_idx,
        acked: spec.publisher.then(Bits::default),
        ..ClientOut::default()
    };
    let mut ws = match plan.open(spec.i, &spec.auth).await {
        Ok(s) => s,
        Err(e) => {
            shared.failed.fetch_add(1, Relaxed);
            let mut first = shared.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| format!("{e:#}"));
            return out;
        }
    };
    out.connected = true;
    shared.connected.fetch_add(1, Relaxed);
    let shard = spec.i % SHARDS;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut next = far;
    let mut step: Option<usize> = None;
    let mut period = Duration::from_secs(1);
    let mut pending: HashMap<u64, (u64, usize, u64)> = HashMap::new();
    let mut ack_id: u64 = 0;
    let mut seq: u64 = 0;
    // Created once per phase change, not once per frame.
    let mut wait = wait_phase(phase);
    loop {
        tokio::select! {
            biased;
            (ok, mut rx) = &mut wait => {
                if !ok {
                    break;
                }
                let p = *rx.borrow_and_update();
                wait = wait_phase(rx);
                match p {
                    Phase::Step(k) if spec.publisher => {
                        step = Some(k);
                        period = shared.periods[k];
                        // Spread the publishers over one period.
                        let offset = period.mul_f64((spec.room_idx % 97) as f64 / 97.0);
                        next = Instant::now() + offset;
                    }
                    Phase::Done => {
                        ws.close().await;
                        break;
                    }
                    Phase::Drain => {
                        step = None;
                        next = far;
                    }
                    _ => {}
                }
            }
            msg = ws.next_text() => {
                let text = match msg {
                    Some(Ok(t)) => t,
                    Some(Err(_)) | None => {
                        if !shared.done.load(Relaxed) {
                            out.dropped = true;
                            shared.disconnected.fetch_add(1, Relaxed);
                        }
                        break;
                    }
                };
                match classify(&text) {
                    Frame::Ping if ws.send_text("3".into()).await.is_err() => break,
                    Frame::Event(ev) if ev.starts_with(b"[\"message:new\"") => {
                        if let Some((st, sent, sq)) = scan_body(ev) {
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            if let Some(h) = shared.e2e.get(st) {
                                let _ = h[shard].lock().unwrap_or_else(|e| e.into_inner()).record(us.max(1));
                            }
                            shared.window[shared.cur.load(Relaxed)].fetch_add(1, Relaxed);
                            if out.got.set(sq) {
                                out.dups += 1;
                            }
                        }
                    }
                    Frame::Ack(id, rest) => {
                        if let Some((sent, st, sq)) = pending.remove(&id) {
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            let _ = shared.ack[st][shard].lock().unwrap_or_else(|e| e.into_inner()).record(us.max(1));
                            if memchr::memmem::find(rest, b"\"error\"").is_some() {
                                shared.refused[st].fetch_add(1, Relaxed);
                            } else {
                                shared.ok[st].fetch_add(1, Relaxed);
                                if let Some(a) = out.acked.as_mut() {
                                    a.set(sq);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ = sleep_until(next), if step.is_some() => {
                let k = step.unwrap_or(0);
                let sent = now_nanos();
                let frame = format!(
                    "42{ack_id}[\"message:send\",{{\"room\":\"{}\",\"body\":\"{}\",\"clientMsgId\":\"{}-{seq}\"}}]",
                    spec.room,
                    body(k, sent, seq, spec.pad),
                    spec.run_id,
                );
                pending.insert(ack_id, (sent, k, seq));
                ack_id += 1;
                seq += 1;
                shared.sent[k].fetch_add(1, Relaxed);
                if ws.send_text(frame).await.is_err() {
                    out.dropped = true;
                    shared.disconnected.fetch_add(1, Relaxed);
                    break;
                }
                next += period;
                let now = Instant::now();
                if next + Duration::from_secs(1) < now {
                    next = now; // far behind: do not burst forever
                }
            }
        }
    }
    out
}

/// Runs the fan-out scenario.
pub async fn run(a: FanoutArgs) -> Result<Value> {
    bounded(&a.common, run_inner(&a)).await
}

async fn run_inner(a: &FanoutArgs) -> Result<Value> {
    if a.room_size == 0 || a.clients < a.room_size || a.rates.is_empty() {
        bail!("need --clients >= --room-size > 0 and at least one rate");
    }
    let plan = Plan::new(&a.common)?;
    let watches = watches(&a.common)?;
    let rooms = a.clients / a.room_size;
    let clients = rooms * a.room_size;
    let steps = a.rates.len();
    let periods = a
        .rates
        .iter()
        .map(|&r| Duration::from_secs_f64(rooms as f64 / r.max(1) as f64))
        .collect();
    let shared = Arc::new(Shared {
        e2e: hists(steps),
        ack: hists(steps),
        window: counters(steps + 1),
        cur: AtomicUsize::new(steps),
        sent: counters(steps),
        ok: counters(steps),
        refused: counters(steps),
        periods,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        disconnected: AtomicUsize::new(0),
        done: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let run_id = format!("r{:x}", now_nanos() / 1_000_000);
    let (phase_tx, phase_rx) = watch::channel(Phase::Wait);

    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (user, room, room_idx) = member(&a.prefix, i, a.room_size);
        let auth = plan.auth(&user, std::slice::from_ref(&room))?;
        let spec = ClientSpec {
            i,
            auth,
            room,
            room_idx,
            publisher: i % a.room_size == 0,
            run_id: run_id.clone(),
            pad: a.pad,
        };
        tasks.push(tokio::spawn(client(
            spec,
            plan.clone(),
            Arc::clone(&shared),
            phase_rx.clone(),
        )));
    }
    while shared.connected.load(Relaxed) + shared.failed.load(Relaxed) < clients {
        sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = shared.connected.load(Relaxed);
    eprintln!(
        "fanout[{}]: {connected}/{clients} connected in {connect_secs:.1}s",
        a.common.label
    );
    sleep(Duration::from_secs(a.settle_secs)).await;

    let mut step_results = Vec::new();
    let mut total_cpu: Option<(CpuSnap, CpuSnap)> = None;
    let mut window_deliveries: u64 = 0;
    let mut stopped_because = "all rates ran".to_owned();
    for (k, &rate) in a.rates.iter().enumerate() {
        let before = CpuSnap::take(&watches);
        shared.cur.store(k, Relaxed);
        let _ = phase_tx.send(Phase::Step(k));
        sleep(Duration::from_secs(a.step_secs)).await;
        let after = CpuSnap::take(&watches);
        let secs = a.step_secs as f64;
        let delivered = shared.window[k].load(Relaxed);
        window_deliveries += delivered;
        let offered = rate as f64 * a.room_size as f64;
        let e2e = merged(&shared.e2e, k);
        let p99_ms = e2e.value_at_quantile(0.99) as f64 / 1000.0;
        let cpu = before.percent_until(&after, &watches);
        eprintln!(
            "fanout[{}]: step {k}: {rate} msg/s, offered {offered:.0}/s delivered {:.0}/s p99 {p99_ms:.1} ms, cpu {cpu:?}",
            a.common.label,
            delivered as f64 / secs,
        );
        step_results.push(json!({
            "rate_msgs_per_sec": rate,
            "offered_deliveries_per_sec": offered,
            "delivered_per_sec": round1(delivered as f64 / secs),
            "cpu_percent": cpu,
            "sent": shared.sent[k].load(Relaxed),
        }));
        total_cpu = Some(match total_cpu {
            None => (before, after),
            Some((first, _)) => (first, after),
        });
        if (delivered as f64) < a.keep_up * offered * secs {
            stopped_because = format!(
                "step {k} ({rate} msg/s) delivered less than {}% of the offered rate",
                a.keep_up * 100.0
            );
            break;
        }
        if p99_ms > a.p99_limit_ms as f64 {
            stopped_because = format!(
                "step {k} ({rate} msg/s) p99 {p99_ms:.0} ms passed {} ms",
                a.p99_limit_ms
            );
            break;
        }
    }

    // Drain: wait for late deliveries until nothing arrives for 2 s.
    shared.cur.store(steps, Relaxed);
    let _ = phase_tx.send(Phase::Drain);
    let drain_start = Instant::now();
    let mut last = u64::MAX;
    let mut quiet_since = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(a.drain_secs) {
        sleep(Duration::from_millis(250)).await;
        let now = shared.window[steps].load(Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(2) {
            break;
        }
    }
    shared.done.store(true, Relaxed);
    let _ = phase_tx.send(Phase::Done);

    // Results.
    let mut outs = Vec::with_capacity(clients);
    for t in tasks {
        if let Ok(o) = t.await {
            outs.push(o);
        }
    }
    let mut acked: Vec<Bits> = vec![Bits::default(); rooms];
    for o in &outs {
        if let Some(b) = &o.acked {
            acked[o.room] = b.clone();
        }
    }
    let (mut lost, mut lost_dropped, mut dups, mut expected, mut received) = (0, 0, 0, 0, 0);
    for o in outs.iter().filter(|o| o.connected) {
        let missing = acked[o.room].missing_from(&o.got);
        if o.dropped {
            lost_dropped += missing;
        } else {
            lost += missing;
        }
        expected += acked[o.room].count();
        received += o.got.count();
        dups += o.dups;
    }
    for (k, s) in step_results.iter_mut().enumerate() {
        s["e2e"] = summary(&merged(&shared.e2e, k));
        s["ack"] = summary(&merged(&shared.ack, k));
        s["acked"] = json!(shared.ok[k].load(Relaxed));
        s["refused"] = json!(shared.refused[k].load(Relaxed));
    }
    let mut cost = json!({});
    if let Some((first, last)) = &total_cpu {
        for (idx, w) in watches.iter().enumerate() {
            let secs = first.cpu_secs_until(last, idx);
            cost[&w.name] = json!(round3(secs * 1e6 / window_deliveries.max(1) as f64));
        }
    }
    Ok(json!({
        "scenario": "fanout",
        "label": a.common.label,
        "transport": transport_name(a.common.transport),
        "clients": clients,
        "room_size": a.room_size,
        "rooms": rooms,
        "publishers": rooms,
        "connected": shared.connected.load(Relaxed),
        "connect_failed": shared.failed.load(Relaxed),
        "first_connect_error": *shared.first_error.lock().unwrap_or_else(|e| e.into_inner()),
        "connect_secs": round3(connect_secs),
        "step_secs": a.step_secs,
        "steps": step_results,
        "stopped_because": stopped_because,
        "expected_deliveries": expected,
        "received_deliveries": received,
        "lost": lost,
        "lost_on_dropped_clients": lost_dropped,
        "duplicates": dups,
        "disconnected": shared.disconnected.load(Relaxed),
        "cpu_us_per_delivery": cost,
    }))
}
