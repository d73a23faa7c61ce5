//! [`Health`]: how the background projections are doing, for readiness
//! (`/readyz`), and the service's metrics (`/metrics`, Prometheus text):
//! commands by outcome, projection lag, presence counts, bus state.
//!
//! A projection that stopped (a corrupt event), cannot resume (its bus log
//! was trimmed past its checkpoint) or keeps failing leaves the read model
//! frozen while queries and authorization go on answering from it: the
//! service must say so, so that an orchestrator takes it out of rotation and
//! an operator is paged.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

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
    trimmed: AtomicU64,
    emitter: Arc<EmitterStats>,
    /// Commands by (command, outcome): both from fixed sets (command
    /// names, error codes), so the map stays small.
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Each projection's last sequence and when it last advanced.
    progress: Mutex<BTreeMap<&'static str, (u64, Instant)>>,
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

/// What `/metrics` asks at scrape time: each log's last sequence and the
/// bus's state.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The last sequence of the log each projection follows, by projection
    /// (absent: could not be read now).
    pub heads: BTreeMap<&'static str, u64>,
    /// The bus's kind (`nats`, `in-process`, ...) and whether it is
    /// connected.
    pub bus: Option<(&'static str, bool)>,
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

    /// Records that projection `name` reached sequence `seq` (of its log).
    pub fn progressed(&self, name: &'static str, seq: u64) {
        let mut progress = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = progress.entry(name).or_insert((0, Instant::now()));
        if seq > entry.0 || entry.0 == 0 {
            *entry = (seq, Instant::now());
        }
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
        let progress = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lags: Vec<(&str, u64, Duration)> = progress
            .iter()
            .filter_map(|(name, (seq, at))| {
                let head = *scrape.heads.get(name)?;
                let events = head.saturating_sub(*seq);
                let behind = if events > 0 {
                    at.elapsed()
                } else {
                    Duration::ZERO
                };
                Some((*name, events, behind))
            })
            .collect();
        out.push_str(
            "# HELP confab_membership_projection_lag_events Events of its log the projection has not applied yet.\n\
             # TYPE confab_membership_projection_lag_events gauge\n",
        );
        for (name, events, _) in &lags {
            let _ = writeln!(
                out,
                "confab_membership_projection_lag_events{{projection=\"{name}\"}} {events}"
            );
        }
        out.push_str(
            "# HELP confab_membership_projection_lag_seconds How long the projection has been behind its log without applying anything (0 when caught up).\n\
             # TYPE confab_membership_projection_lag_seconds gauge\n",
        );
        for (name, _, behind) in &lags {
            let _ = writeln!(
                out,
                "confab_membership_projection_lag_seconds{{projection=\"{name}\"}} {:.3}",
                behind.as_secs_f64()
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

    fn value(metrics: &str, series: &str) -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in:\n{metrics}"))
    }

    #[test]
    fn lag_is_the_distance_to_the_head_and_the_time_without_progress() {
        let health = Health::default();
        health.progressed("history", 5);
        std::thread::sleep(Duration::from_millis(30));
        let scrape = Scrape {
            heads: [("history", 8)].into(),
            bus: Some(("nats", true)),
        };
        let m = health.metrics_with(&scrape);
        let events = r#"confab_membership_projection_lag_events{projection="history"}"#;
        let seconds = r#"confab_membership_projection_lag_seconds{projection="history"}"#;
        assert_eq!(value(&m, events), 3.0);
        assert!(value(&m, seconds) >= 0.03, "{m}");
        assert_eq!(
            value(&m, r#"confab_membership_bus_connected{bus="nats"}"#),
            1.0
        );

        health.progressed("history", 8);
        let m = health.metrics_with(&scrape);
        assert_eq!(value(&m, events), 0.0);
        assert_eq!(value(&m, seconds), 0.0);

        // A head that could not be read leaves the lag out.
        let m = health.metrics_with(&Scrape::default());
        assert!(!m.contains("lag_events{"), "{m}");
    }
}
