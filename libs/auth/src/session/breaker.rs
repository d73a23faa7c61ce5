//! A circuit breaker so that a dead app is not hammered: after
//! `threshold` consecutive failures, calls fail at once for `cooldown`;
//! then one probe call is let through, whose outcome closes or reopens it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe call is running; others fail at once.
    Probing,
}

/// The breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out now (an open breaker past its cooldown
    /// lets exactly one through).
    pub(crate) fn admit(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => false,
        }
    }

    /// Whether calls are refused now without asking the app.
    pub(crate) fn is_open(&self) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::Probing => true,
        }
    }

    /// The app answered (whatever the session's verdict).
    pub(crate) fn succeeded(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// The app could not be reached or failed; returns whether the breaker
    /// opened now.
    pub(crate) fn failed(&self) -> bool {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::Open { .. } | State::Probing => self.threshold,
        };
        if failures >= self.threshold {
            let reopened = !matches!(*state, State::Open { .. });
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
            reopened
        } else {
            *state = State::Closed { failures };
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_once() {
        let b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.admit());
            assert!(!b.failed());
        }
        assert!(b.admit());
        assert!(b.failed(), "the third failure opens it");
        assert!(!b.admit() && b.is_open());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admit(), "one probe after the cooldown");
        assert!(!b.admit(), "only one");
        b.failed();
        assert!(!b.admit());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admit());
        b.succeeded();
        assert!(b.admit() && b.admit() && !b.is_open());
    }
}
