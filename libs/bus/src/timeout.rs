//! [`AdaptiveTimeout`]: how long a log reader waits for JetStream to set up
//! its feed.
//!
//! While a JetStream cluster moves its leaders (a node lost or back), a
//! request may go unanswered for good while one sent a moment later is
//! answered within milliseconds. A long fixed bound makes a reader sit out
//! the whole bound on a lost request before it asks again; a short one
//! would never let a busy but healthy cluster answer. So the bound starts
//! short and grows with each consecutive expiry, and an answer resets it.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A timeout of `min` × (1 + consecutive expiries), at most `max`.
#[derive(Debug)]
pub struct AdaptiveTimeout {
    min: Duration,
    max: Duration,
    expired: AtomicU32,
}

impl AdaptiveTimeout {
    /// Starts at `min`, grows by `min` per consecutive expiry up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            expired: AtomicU32::new(0),
        }
    }

    /// The bound of a log reader's setup requests (stream info, consumer
    /// creation) and of the services' log checks: 1 s, growing by 1 s per
    /// consecutive expiry, at most 5 s. While a cluster moves its leaders
    /// a request may go unanswered for the client's whole timeout (5 s)
    /// while the retry a moment later is answered at once.
    pub const fn log_setup() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// The bound for the next request.
    pub fn current(&self) -> Duration {
        let steps = self.expired.load(Ordering::Relaxed).saturating_add(1);
        self.min.saturating_mul(steps).min(self.max)
    }

    /// Runs `request` within [`current`](Self::current): `None` if it
    /// expired (the next bound is longer), its output otherwise (the next
    /// bound is `min` again).
    pub async fn run<T>(&self, request: impl Future<Output = T>) -> Option<T> {
        match tokio::time::timeout(self.current(), request).await {
            Ok(out) => {
                self.expired.store(0, Ordering::Relaxed);
                Some(out)
            }
            Err(_) => {
                self.expired.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_grows_with_expiries_and_resets_on_an_answer() {
        let t = AdaptiveTimeout::new(Duration::from_secs(1), Duration::from_secs(3));
        let never = || std::future::pending::<()>();
        for want in [1, 2, 3, 3] {
            assert_eq!(t.current(), Duration::from_secs(want));
            let started = tokio::time::Instant::now();
            assert_eq!(t.run(never()).await, None);
            assert_eq!(started.elapsed(), Duration::from_secs(want));
        }
        assert_eq!(t.run(async { 7 }).await, Some(7));
        assert_eq!(t.current(), Duration::from_secs(1));
    }
}
