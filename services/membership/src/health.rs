//! [`Health`]: how the background projections are doing, for readiness
//! (`/readyz`), and the service's metrics (`/metrics`, Prometheus text):
//! commands by outcome, projection lag, presence counts, bus state.
//!
//! A projection that stopped (a corrupt event), cannot resume (its bus log
//! was trimmed past its checkpoint) or keeps failing leaves the read model
//! frozen while queries and authorization go on answering from it: the
//! service must say so, so that an orchestrator takes it out of rotation and
//! an operator is paged.
//!
//! A projection that runs but lags (its consumer was lost and not yet
//! noticed, its database is slow) serves stale data just the same: every
//! [`LAG_SAMPLE`] [`watch_lags`] compares each log reader's position with
//! its log's last sequence, and readiness turns red while one is more than
//! [`MAX_READY_LAG`] behind. The lag in seconds is the time since the
//! service first saw the log hold the oldest event the reader has not
//! reached (so it counts from the first sample after an outage, not from
//! the event's append).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// Readiness is red while a log reader is further behind than this.
pub const MAX_READY_LAG: Duration = Duration::from_secs(1);

/// How often [`watch_lags`] measures.
pub const LAG_SAMPLE: Duration = Duration::from_millis(250);

/// Most appends a [`LagClock`] remembers (older ones are merged).
const MAX_MARKS: usize = 256;

/// How far one log reader is behind its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Lag {
    /// Events in the log it has not reached.
    pub events: u64,
    /// Since when the oldest of them was seen in the log, seconds.
    pub seconds: f64,
}

/// Remembers when the log was first seen to reach which sequence, to tell
/// how long the oldest unread event has waited.
#[derive(Debug, Default)]
pub struct LagClock {
    /// `(sequence, first seen at)`, sequences increasing.
    marks: VecDeque<(u64, Instant)>,
}

impl LagClock {
    /// The lag of a reader at `position` of a log whose last sequence is
    /// `last`, at `now`.
    pub fn observe(&mut self, last: u64, position: u64, now: Instant) -> Lag {
        while self.marks.front().is_some_and(|&(seq, _)| seq <= position) {
            self.marks.pop_front();
        }
        if last > position && self.marks.back().is_none_or(|&(seq, _)| seq < last) {
            if self.marks.len() < MAX_MARKS {
                self.marks.push_back((last, now));
            } else if let Some(newest) = self.marks.back_mut() {
                // Bounded: the newest mark stretches to `last`; the oldest
                // (which the lag is measured from) stays exact.
                newest.0 = last;
            }
        }
        Lag {
            events: last.saturating_sub(position),
            seconds: self
                .marks
                .front()
                .map_or(0.0, |&(_, at)| (now - at).as_secs_f64()),
        }
    }
}

/// Reads a log's last sequence (`None`: cannot now).
pub type LastSeq = Box<dyn Fn() -> BoxFuture<'static, Option<u64>> + Send + Sync>;

/// A log reader whose lag [`watch_lags`] measures.
pub struct LagSource {
    /// Its name in readiness and metrics.
    pub name: &'static str,
    /// The last sequence it has dealt with.
    pub position: watch::Receiver<u64>,
    /// Its log's last sequence.
    pub last: LastSeq,
}

impl std::fmt::Debug for LagSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Measures every source's lag each [`LAG_SAMPLE`] into `health` until
/// `shutdown`. A log that cannot be read (its server is down) counts with
/// the last sequence read, so a lag goes on growing through an outage.
pub async fn watch_lags(
    health: Health,
    sources: Vec<LagSource>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut state: Vec<(LagClock, u64)> = sources.iter().map(|_| Default::default()).collect();
    let mut tick = tokio::time::interval(LAG_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return,
            _ = tick.tick() => {}
        }
        for (source, (clock, last)) in sources.iter().zip(state.iter_mut()) {
            if let Ok(Some(read)) = tokio::time::timeout(LAG_SAMPLE, (source.last)()).await {
                *last = (*last).max(read);
            }
            let position = *source.position.borrow();
            let lag = clock.observe(*last, position, Instant::now());
            health.set_lag(source.name, lag);
        }
    }
}

/// What one projection is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProjectionState {
    /// Applying events (or waiting for more).
    Running,
    /// Failing and retrying; `reason` is the last failure.
    Failing {
        /// The last failure.
        reason: String,
    },
    /// Stopped for good until an operator acts; `reason` says why and what
    /// to do.
    Stopped {
        /// Why, and what to do.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Inner {
    states: Mutex<BTreeMap<&'static str, ProjectionState>>,
    lags: Mutex<BTreeMap<&'static str, Lag>>,
    trimmed: AtomicU64,
    emitter: Arc<EmitterStats>,
    /// Commands by (command, outcome): both from fixed sets (command
    /// names, error codes), so the map stays small.
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Users online, users away, gateways reporting (presence tracker).
    presence: [AtomicU64; 3],
}

/// What the `@socket.io/redis-emitter` bridge did (`emitter.rs`), by a fixed
/// set of labels (a label value never comes from the input).
#[derive(Debug, Default)]
pub struct EmitterStats {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    holder: AtomicU64,
}

impl EmitterStats {
    /// Counts one `what` (`emit`, `join`, `leave`, `disconnect`,
    /// `server_side_emit`, `request`, `room`) with `outcome` (`published`,
    /// or the reason it was refused or ignored).
    pub fn count(&self, what: &'static str, outcome: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((what, outcome))
            .or_default() += 1;
    }

    /// The count of `what` with `outcome` so far.
    pub fn get(&self, what: &'static str, outcome: &'static str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(what, outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Records whether this process holds the bridge's lease and acts.
    pub fn set_holder(&self, acting: bool) {
        self.holder.store(u64::from(acting), Ordering::Relaxed);
    }

    /// Whether this process holds the bridge's lease and acts.
    pub fn is_holder(&self) -> bool {
        self.holder.load(Ordering::Relaxed) == 1
    }

    fn write(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP confab_membership_emitter_messages_total What the @socket.io/redis-emitter bridge did with each emit, request and target room, by kind and outcome.\n\
             # TYPE confab_membership_emitter_messages_total counter\n"
        );
        for ((what, outcome), n) in self.counts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "confab_membership_emitter_messages_total{{kind=\"{what}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP confab_membership_emitter_lease_held Whether this process holds the emitter bridge's lease and acts on what the emitters publish.\n\
             # TYPE confab_membership_emitter_lease_held gauge\n\
             confab_membership_emitter_lease_held {}\n",
            self.holder.load(Ordering::Relaxed)
        );
    }
}

/// What `/metrics` asks at scrape time: the bus's state.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The bus's kind (`nats`, `in-process`, ...) and whether it is
    /// connected.
    pub bus: Option<(&'static str, bool)>,
    /// How many times the bus's connections came back after being lost
    /// ([`confab_bus::BusStatus::reconnects`]), with `bus`.
    pub bus_reconnects: Option<u64>,
}

/// The projections' states, shared by the projectors and the HTTP API.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Health {
    /// Records the state of projection `name`.
    pub fn set(&self, name: &'static str, state: ProjectionState) {
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.get(name) != Some(&state) {
            states.insert(name, state);
        }
    }

    /// Records how far log reader `name` is behind.
    pub fn set_lag(&self, name: &'static str, lag: Lag) {
        let mut lags = self.inner.lags.lock().unwrap_or_else(|p| p.into_inner());
        lags.insert(name, lag);
    }

    /// Every measured log reader's lag.
    pub fn lags(&self) -> BTreeMap<&'static str, Lag> {
        self.inner
            .lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log readers more than [`MAX_READY_LAG`] behind.
    pub fn behind(&self) -> Vec<&'static str> {
        self.lags()
            .into_iter()
            .filter(|(_, lag)| lag.seconds > MAX_READY_LAG.as_secs_f64())
            .map(|(name, _)| name)
            .collect()
    }

    /// Counts one refusal of a tail because the log was trimmed past the
    /// checkpoint.
    pub fn count_trimmed(&self) {
        self.inner.trimmed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one command by its outcome (`ok` or the error code).
    pub fn count_command(&self, command: &'static str, outcome: &'static str) {
        let mut commands = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *commands.entry((command, outcome)).or_default() += 1;
    }

    /// The presence tracker's counts: users online, users away, gateways
    /// reporting.
    pub fn set_presence(&self, online: u64, away: u64, gateways: u64) {
        for (gauge, value) in self.inner.presence.iter().zip([online, away, gateways]) {
            gauge.store(value, Ordering::Relaxed);
        }
    }

    /// Every projection's state.
    pub fn states(&self) -> BTreeMap<&'static str, ProjectionState> {
        self.inner
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether every projection runs.
    pub fn all_running(&self) -> bool {
        self.states()
            .values()
            .all(|s| *s == ProjectionState::Running)
    }

    /// The emitter bridge's counters.
    pub fn emitter_stats(&self) -> Arc<EmitterStats> {
        Arc::clone(&self.inner.emitter)
    }

    /// The metrics in the Prometheus text format, with what was read at
    /// scrape time (`scrape`).
    pub fn metrics_with(&self, scrape: &Scrape) -> String {
        let mut out = self.metrics();
        let commands = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str(
            "# HELP confab_membership_commands_total Membership commands executed, by command and outcome (ok, or the error code).\n\
             # TYPE confab_membership_commands_total counter\n",
        );
        for ((command, outcome), n) in commands {
            let _ = writeln!(
                out,
                "confab_membership_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let [online, away, gateways] = self
            .inner
            .presence
            .each_ref()
            .map(|g| g.load(Ordering::Relaxed));
        let _ = write!(
            out,
            "# HELP confab_membership_presence_users Users the presence tracker shows, by status (offline users are not counted).\n\
             # TYPE confab_membership_presence_users gauge\n\
             confab_membership_presence_users{{status=\"online\"}} {online}\n\
             confab_membership_presence_users{{status=\"away\"}} {away}\n\
             # HELP confab_membership_presence_gateways Gateways whose presence reports are live.\n\
             # TYPE confab_membership_presence_gateways gauge\n\
             confab_membership_presence_gateways {gateways}\n"
        );
        if let Some((kind, connected)) = scrape.bus {
            let _ = write!(
                out,
                "# HELP confab_membership_bus_connected Whether the bus (and, on NATS, the event log's connection) is connected.\n\
                 # TYPE confab_membership_bus_connected gauge\n\
                 confab_membership_bus_connected{{bus=\"{kind}\"}} {}\n",
                u8::from(connected)
            );
            if let Some(reconnects) = scrape.bus_reconnects {
                let _ = write!(
                    out,
                    "# HELP confab_membership_bus_reconnects_total Times a connection of the bus (NATS client; Redis command or pub/sub connection) came back after it was lost.\n\
                     # TYPE confab_membership_bus_reconnects_total counter\n\
                     confab_membership_bus_reconnects_total{{bus=\"{kind}\"}} {reconnects}\n"
                );
            }
        }
        out
    }

    /// The metrics that need nothing read at scrape time, in the
    /// Prometheus text format (see [`metrics_with`](Self::metrics_with)).
    pub fn metrics(&self) -> String {
        let mut out = String::from(
            "# HELP confab_membership_projection_up Whether the projection runs (0: failing or stopped, see /readyz).\n\
             # TYPE confab_membership_projection_up gauge\n",
        );
        for (name, state) in self.states() {
            let up = u8::from(state == ProjectionState::Running);
            let _ = writeln!(
                out,
                "confab_membership_projection_up{{projection=\"{name}\"}} {up}"
            );
        }
        let lags = self.lags();
        out.push_str(
            "# HELP confab_membership_projection_lag_events Events of its log a reader (projection, notifier) has not reached.\n\
             # TYPE confab_membership_projection_lag_events gauge\n",
        );
        for (name, lag) in &lags {
            let _ = writeln!(
                out,
                "confab_membership_projection_lag_events{{projection=\"{name}\"}} {}",
                lag.events
            );
        }
        out.push_str(
            "# HELP confab_membership_projection_lag_seconds How long the oldest event a reader has not reached has been in its log.\n\
             # TYPE confab_membership_projection_lag_seconds gauge\n",
        );
        for (name, lag) in &lags {
            let _ = writeln!(
                out,
                "confab_membership_projection_lag_seconds{{projection=\"{name}\"}} {:.3}",
                lag.seconds
            );
        }
        let _ = write!(
            out,
            "# HELP confab_membership_history_trimmed_total Tails of the room log refused because retention dropped messages the history projection had not read.\n\
             # TYPE confab_membership_history_trimmed_total counter\n\
             confab_membership_history_trimmed_total {}\n",
            self.inner.trimmed.load(Ordering::Relaxed)
        );
        self.inner.emitter.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_when_the_oldest_unread_event_was_seen() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut clock = LagClock::default();
        assert_eq!(clock.observe(5, 5, t0), Lag::default());
        // Events 6..=8 appear at t0+1; the reader is still at 5.
        assert_eq!(clock.observe(8, 5, t0 + s).seconds, 0.0);
        // Event 9 at t0+2: the oldest unread (6) has waited 1 s.
        let lag = clock.observe(9, 5, t0 + 2 * s);
        assert_eq!((lag.events, lag.seconds), (4, 1.0));
        // The reader reached 8: the oldest unread (9) was seen at t0+2.
        let lag = clock.observe(9, 8, t0 + 3 * s);
        assert_eq!((lag.events, lag.seconds), (1, 1.0));
        assert_eq!(clock.observe(9, 9, t0 + 4 * s), Lag::default());
    }

    #[test]
    fn lag_marks_are_bounded() {
        let t0 = Instant::now();
        let mut clock = LagClock::default();
        for i in 1..=10_000u64 {
            clock.observe(i, 0, t0 + Duration::from_millis(i));
        }
        assert!(clock.marks.len() <= MAX_MARKS);
        let lag = clock.observe(10_000, 0, t0 + Duration::from_secs(20));
        assert_eq!(lag.events, 10_000);
        assert!((lag.seconds - 19.999).abs() < 1e-6, "{lag:?}");
    }
}
