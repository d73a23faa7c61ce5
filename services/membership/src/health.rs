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
        out
    }
}
