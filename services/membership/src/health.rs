//! [`Health`]: how the background projections are doing, for readiness
//! (`/readyz`) and metrics (`/metrics`).
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

    /// The metrics in the Prometheus text format.
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
