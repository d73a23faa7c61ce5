//! Scenario 3, connection-state recovery (Confab issue #5), with the
//! protocol of that issue: the CONNECT ack carries `{"sid","pid"}`, every
//! durable event carries its offset as a last string argument, and a client
//! recovers by reconnecting with `{"token","pid","offset"}` in its CONNECT;
//! success keeps the `pid` and replays the missed events, failure answers a
//! new `pid` and a `recovery:failed` event.
//!
//! * `--mode replay`: one session misses `--missed` events while it is
//!   disconnected; time from its reconnect to the last replayed event.
//! * `--mode mass`: `--sessions` sessions on the gateway `--url` while
//!   publishers on `--publish-url` keep sending; the gateway `--kill-pid`
//!   is killed (SIGKILL) and every session reconnects at once to
//!   `--reconnect-url`: time until all are recovered, JetStream consumers
//!   used (from the NATS monitor), lost events.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Frame, Target, Ws, body, classify, now_nanos, scan_body, trailing_offset};
use crate::common::{Bits, Common, Plan, bounded, member};
use crate::proc::{round1, round3};

/// Which recovery measurement.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One session, `--missed` events replayed.
    Replay,
    /// Many sessions reconnecting at once after their gateway is killed.
    Mass,
}

/// Options of `recover`.
#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    #[command(flatten)]
    common: Common,
    /// What to measure.
    #[arg(long, value_enum, default_value = "replay")]
    mode: Mode,
    /// Replay: events missed while disconnected.
    #[arg(long, default_value_t = 1000)]
    missed: u64,
    /// Mass: sessions (clients other than the publishers).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Members per room (setup with the same prefix and room size); member
    /// 0 of every room publishes.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Prefix of users and rooms.
    #[arg(long, default_value = "r")]
    prefix: String,
    /// Where publishers connect (mass; replay: default `--url`).
    #[arg(long)]
    publish_url: Option<String>,
    /// Where sessions reconnect (default `--url`).
    #[arg(long)]
    reconnect_url: Option<String>,
    /// Mass: pid of the gateway to kill.
    #[arg(long)]
    kill_pid: Option<u32>,
    /// Mass: total publish rate, messages/s.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Mass: publishing time before the kill, seconds.
    #[arg(long, default_value_t = 3)]
    before_secs: u64,
    /// Mass: longest wait for every session to recover, seconds.
    #[arg(long, default_value_t = 60)]
    recover_timeout_secs: u64,
    /// Mass: publishing time after all recovered, seconds.
    #[arg(long, default_value_t = 3)]
    after_secs: u64,
    /// NATS monitoring URL, to count JetStream consumers (mass).
    #[arg(long)]
    nats_monitor: Option<String>,
}

/// Runs the recovery scenario.
pub async fn run(a: RecoverArgs) -> Result<Value> {
    bounded(&a.common, async {
        match a.mode {
            Mode::Replay => replay(&a).await,
            Mode::Mass => mass(&a).await,
        }
    })
    .await
}

fn recover_auth(plan: &Plan, user: &str, room: &str, pid: &str, offset: u64) -> Result<String> {
    let base = plan.auth(user, &[room.to_owned()])?;
    let base = base.strip_suffix('}').unwrap_or(&base);
    Ok(format!(
        "{base},\"pid\":{},\"offset\":\"{offset}\"}}",
        serde_json::to_string(pid)?
    ))
}

async fn send_msg(ws: &mut Ws, id: u64, room: &str, run_id: &str) -> Result<()> {
    let frame = format!(
        "42{id}[\"message:send\",{{\"room\":\"{room}\",\"body\":\"{}\",\"clientMsgId\":\"{run_id}-{id}\"}}]",
        body(0, now_nanos(), id, 8)
    );
    ws.send(Message::text(frame)).await?;
    Ok(())
}

/// Reads frames until `n` acks arrived (answering pings).
async fn await_acks(ws: &mut Ws, n: u64) -> Result<u64> {
    let mut ok = 0;
    let mut got = 0;
    while got < n {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match classify(t.as_bytes()) {
                Frame::Ping => ws.send(Message::text("3")).await?,
                Frame::Ack(_, rest) => {
                    got += 1;
                    if memchr::memmem::find(rest, b"\"error\"").is_none() {
                        ok += 1;
                    }
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => bail!("publisher connection closed"),
        }
    }
    Ok(ok)
}

async fn replay(a: &RecoverArgs) -> Result<Value> {
    let plan = Plan::new(&a.common)?;
    let (pub_user, room, _) = member(&a.prefix, 0, a.room_size.max(2));
    let (user, _, _) = member(&a.prefix, 1, a.room_size.max(2));
    let pub_target = Target::parse(a.publish_url.as_deref().unwrap_or(&a.common.url))?;
    let rec_target = Target::parse(a.reconnect_url.as_deref().unwrap_or(&a.common.url))?;
    let run_id = format!("v{:x}", now_nanos() / 1_000_000);
    let mut publ = plan
        .connect_to(
            &pub_target,
            0,
            &plan.auth(&pub_user, std::slice::from_ref(&room))?,
        )
        .await?
        .ws;
    let session = plan
        .connect(1, &plan.auth(&user, std::slice::from_ref(&room))?)
        .await?;
    let pid = session
        .pid
        .clone()
        .ok_or_else(|| anyhow!("the CONNECT ack has no pid: the server does not offer recovery"))?;
    let sid = session.sid.clone();
    let mut ws = session.ws;
    // One event to learn an offset.
    send_msg(&mut publ, 0, &room, &run_id).await?;
    await_acks(&mut publ, 1).await?;
    let offset = loop {
        let t = crate::client::next_text(&mut ws).await?;
        if t == "2" {
            ws.send(Message::text("3")).await?;
        } else if t.starts_with("42[\"message:new\"") {
            break trailing_offset(t.as_bytes())
                .ok_or_else(|| anyhow!("message:new carries no offset: {t}"))?;
        }
    };
    // Disconnect without a Socket.IO DISCONNECT (a lost transport).
    drop(ws);
    for id in 1..=a.missed {
        send_msg(&mut publ, id, &room, &run_id).await?;
    }
    let stored = await_acks(&mut publ, a.missed).await?;
    let t0 = Instant::now();
    let s2 = plan
        .connect_to(
            &rec_target,
            1,
            &recover_auth(&plan, &user, &room, &pid, offset)?,
        )
        .await?;
    let connect_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let same_pid = s2.pid.as_deref() == Some(pid.as_str());
    let mut ws = s2.ws;
    let mut replayed = 0u64;
    let mut failure = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replayed < stored && failure.is_none() {
        let t = tokio::time::timeout_at(deadline, crate::client::next_text(&mut ws))
            .await
            .map_err(|_| anyhow!("only {replayed} of {stored} events replayed after 30 s"))??;
        if t == "2" {
            ws.send(Message::text("3")).await?;
        } else if t.starts_with("42[\"message:new\"") {
            replayed += 1;
        } else if t.starts_with("42[\"recovery:failed\"") {
            failure = Some(t);
        }
    }
    let replay_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok(json!({
        "scenario": "recover-replay",
        "label": a.common.label,
        "missed": stored,
        "replayed": replayed,
        "recovered": same_pid && failure.is_none(),
        "same_sid": s2.sid == sid,
        "failure": failure,
        "connect_ms": round3(connect_ms),
        "replay_ms": round3(replay_ms),
    }))
}

struct MassShared {
    connected: AtomicUsize,
    failed: AtomicUsize,
    recovered: AtomicUsize,
    recovery_failed: AtomicUsize,
    reconnect_errors: AtomicUsize,
    last_recovered_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// `recovery:failed` reasons and how often each came.
    reasons: Mutex<std::collections::BTreeMap<String, u64>>,
}

#[derive(Default)]
struct SessionOut {
    room: usize,
    connected: bool,
    recovered: bool,
    got: Bits,
    acked: Option<Bits>,
}

#[allow(clippy::too_many_arguments)]
async fn mass_session(
    i: usize,
    user: String,
    room: String,
    room_idx: usize,
    plan: Plan,
    reconnect: Arc<Target>,
    shared: Arc<MassShared>,
    mut done: watch::Receiver<bool>,
) -> SessionOut {
    let mut out = SessionOut {
        room: room_idx,
        ..SessionOut::default()
    };
    let Ok(auth) = plan.auth(&user, std::slice::from_ref(&room)) else {
        return out;
    };
    let s = match plan.connect(i, &auth).await {
        Ok(s) => s,
        Err(e) => {
            shared.failed.fetch_add(1, Relaxed);
            shared
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| format!("{e:#}"));
            return out;
        }
    };
    out.connected = true;
    shared.connected.fetch_add(1, Relaxed);
    let pid = s.pid.clone().unwrap_or_default();
    let mut ws = s.ws;
    let mut offset = 0u64;
    let mut reconnected = false;
    loop {
        let closed = loop {
            tokio::select! {
                _ = done.changed() => return out,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => match classify(t.as_bytes()) {
                        Frame::Ping => { let _ = ws.send(Message::text("3")).await; }
                        Frame::Event(ev) if ev.starts_with(b"[\"message:new\"") => {
                            if let Some(o) = trailing_offset(ev) { offset = offset.max(o); }
                            if let Some((_, _, sq)) = scan_body(ev) { out.got.set(sq); }
                        }
                        Frame::Event(ev) if ev.starts_with(b"[\"recovery:failed\"") => {
                            // Counted once, at the reconnect (the pid changed).
                            out.recovered = false;
                            let text = String::from_utf8_lossy(ev);
                            let reason = text
                                .split("\"reason\":\"")
                                .nth(1)
                                .and_then(|r| r.split('"').next())
                                .unwrap_or("?")
                                .to_owned();
                            *shared.reasons.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    _ => break true,
                }
            }
        };
        if !closed || reconnected {
            return out; // one reconnect per run
        }
        reconnected = true;
        let Ok(auth) = recover_auth(&plan, &user, &room, &pid, offset) else {
            return out;
        };
        match plan.connect_to(&reconnect, i, &auth).await {
            Ok(s2) => {
                if s2.pid.as_deref() == Some(pid.as_str()) {
                    out.recovered = true;
                    shared.recovered.fetch_add(1, Relaxed);
                    shared.last_recovered_ns.fetch_max(now_nanos(), Relaxed);
                } else {
                    shared.recovery_failed.fetch_add(1, Relaxed);
                }
                ws = s2.ws;
            }
            Err(_) => {
                shared.reconnect_errors.fetch_add(1, Relaxed);
                return out;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn mass_publisher(
    i: usize,
    user: String,
    room: String,
    room_idx: usize,
    plan: Plan,
    target: Arc<Target>,
    period: Duration,
    mut stop: watch::Receiver<u8>,
) -> SessionOut {
    let mut out = SessionOut {
        room: room_idx,
        acked: Some(Bits::default()),
        ..SessionOut::default()
    };
    let run_id = format!("m{:x}", now_nanos() / 1_000_000);
    let Ok(auth) = plan.auth(&user, std::slice::from_ref(&room)) else {
        return out;
    };
    let Ok(s) = plan.connect_to(&target, i, &auth).await else {
        return out;
    };
    out.connected = true;
    let mut ws = s.ws;
    let mut next = Instant::now() + period.mul_f64((room_idx % 97) as f64 / 97.0);
    let mut seq = 0u64;
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut sending = true;
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() { break; }
                match *stop.borrow_and_update() { 1 => sending = false, 2 => break, _ => {} }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => match classify(t.as_bytes()) {
                    Frame::Ping => { let _ = ws.send(Message::text("3")).await; }
                    Frame::Ack(id, rest) => {
                        if let Some(sq) = pending.remove(&id)
                            && memchr::memmem::find(rest, b"\"error\"").is_none()
                            && let Some(b) = out.acked.as_mut()
                        {
                            b.set(sq);
                        }
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = sleep_until(next), if sending => {
                if send_msg(&mut ws, seq, &room, &run_id).await.is_err() { break; }
                pending.insert(seq, seq);
                seq += 1;
                next += period;
            }
        }
    }
    out
}

async fn consumers(monitor: Option<&str>) -> Option<u64> {
    let url = format!("{}/jsz", monitor?.trim_end_matches('/'));
    let v: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    v["consumers"].as_u64()
}

async fn mass(a: &RecoverArgs) -> Result<Value> {
    let plan = Plan::new(&a.common)?;
    let kill_pid = a.kill_pid.context("--mode mass needs --kill-pid")?;
    let size = a.room_size.max(2);
    let rooms = a.sessions.div_ceil(size - 1);
    let pub_target = Arc::new(Target::parse(
        a.publish_url
            .as_deref()
            .context("--mode mass needs --publish-url")?,
    )?);
    let rec_target = Arc::new(Target::parse(
        a.reconnect_url.as_deref().unwrap_or(&a.common.url),
    )?);
    let shared = Arc::new(MassShared {
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        recovered: AtomicUsize::new(0),
        recovery_failed: AtomicUsize::new(0),
        reconnect_errors: AtomicUsize::new(0),
        last_recovered_ns: AtomicU64::new(0),
        first_error: Mutex::new(None),
        reasons: Mutex::new(Default::default()),
    });
    let (done_tx, done_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(0u8);
    let mut sessions = Vec::new();
    let mut n = 0;
    for i in 0..rooms * size {
        let (user, room, r) = member(&a.prefix, i, size);
        if i % size == 0 || n >= a.sessions {
            continue;
        }
        n += 1;
        sessions.push(tokio::spawn(mass_session(
            i,
            user,
            room,
            r,
            plan.clone(),
            Arc::clone(&rec_target),
            Arc::clone(&shared),
            done_rx.clone(),
        )));
    }
    while shared.connected.load(Relaxed) + shared.failed.load(Relaxed) < n {
        sleep(Duration::from_millis(100)).await;
    }
    let period = Duration::from_secs_f64(rooms as f64 / a.rate.max(1) as f64);
    let mut publishers = Vec::new();
    for r in 0..rooms {
        let (user, room, _) = member(&a.prefix, r * size, size);
        publishers.push(tokio::spawn(mass_publisher(
            r * size,
            user,
            room,
            r,
            plan.clone(),
            Arc::clone(&pub_target),
            period,
            stop_rx.clone(),
        )));
    }
    let consumers_before = consumers(a.nats_monitor.as_deref()).await;
    sleep(Duration::from_secs(a.before_secs)).await;
    let kill_ns = now_nanos();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(kill_pid as i32).context("invalid --kill-pid")?,
        rustix::process::Signal::KILL,
    )
    .with_context(|| format!("killing {kill_pid}"))?;
    let connected = shared.connected.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(a.recover_timeout_secs);
    let mut consumers_peak = consumers_before;
    while Instant::now() < deadline {
        let settled = shared.recovered.load(Relaxed)
            + shared.recovery_failed.load(Relaxed)
            + shared.reconnect_errors.load(Relaxed);
        if let Some(c) = consumers(a.nats_monitor.as_deref()).await {
            consumers_peak = Some(consumers_peak.unwrap_or(0).max(c));
        }
        if settled >= connected {
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    sleep(Duration::from_secs(a.after_secs)).await;
    let _ = stop_tx.send(1);
    sleep(Duration::from_secs(3)).await;
    let _ = done_tx.send(true);
    let _ = stop_tx.send(2);
    let mut outs = Vec::new();
    for t in sessions.into_iter().chain(publishers) {
        if let Ok(o) = t.await {
            outs.push(o);
        }
    }
    let mut acked = vec![Bits::default(); rooms];
    for o in &outs {
        if let Some(b) = &o.acked {
            acked[o.room] = b.clone();
        }
    }
    let lost: u64 = outs
        .iter()
        .filter(|o| o.acked.is_none() && o.connected)
        .map(|o| acked[o.room].missing_from(&o.got))
        .sum();
    let last = shared.last_recovered_ns.load(Relaxed);
    Ok(json!({
        "scenario": "recover-mass",
        "label": a.common.label,
        "sessions": connected,
        "connect_failed": shared.failed.load(Relaxed),
        "recovered": shared.recovered.load(Relaxed),
        "recovery_failed": shared.recovery_failed.load(Relaxed),
        "failure_reasons": *shared.reasons.lock().unwrap_or_else(|p| p.into_inner()),
        "reconnect_errors": shared.reconnect_errors.load(Relaxed),
        "all_recovered_secs": (last > kill_ns).then(|| round3((last - kill_ns) as f64 / 1e9)),
        "published_acked": acked.iter().map(Bits::count).sum::<u64>(),
        "lost": lost,
        "consumers_before": consumers_before,
        "consumers_peak": consumers_peak,
        "consumers_after": consumers(a.nats_monitor.as_deref()).await,
        "publish_rate": round1(a.rate as f64),
    }))
}
