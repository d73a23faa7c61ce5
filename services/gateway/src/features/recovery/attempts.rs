//! How often each session was asked to be recovered lately, on this
//! gateway: a client that resumes the same session in a loop (say, always
//! from offset 0) would otherwise make the gateway read the same missed
//! events again and again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sessions whose attempts are remembered at once. Only sessions that
/// exist and belong to the asking user are counted, so this is reached
/// only by that many real recoveries within one window; past it attempts
/// are not counted (never refused for lack of room).
const MAX_TRACKED: usize = 100_000;

/// Recovery attempts per session (`pid`), at most `max` per `window`.
#[derive(Debug)]
pub(super) struct Attempts {
    max: u32,
    window: Duration,
    /// pid → (start of its window, attempts in it).
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Attempts {
    pub(super) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt to recover `pid`; `false` when it had its `max`
    /// attempts in the current window already.
    pub(super) fn allow(&self, pid: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, count)) = seen.get_mut(pid) {
            if now.saturating_duration_since(*since) >= self.window {
                *since = now;
                *count = 0;
            }
            if *count >= self.max {
                return false;
            }
            *count += 1;
            return true;
        }
        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, (since, _)| now.saturating_duration_since(*since) < window);
            if seen.len() >= MAX_TRACKED {
                return true;
            }
        }
        seen.insert(pid.to_owned(), (now, 1));
        true
    }

    /// Forgets the sessions whose window passed.
    pub(super) fn prune(&self, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        seen.retain(|_, (since, _)| now.saturating_duration_since(*since) < window);
    }

    /// Forgets `pid` (its session is gone for good).
    pub(super) fn forget(&self, pid: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_per_window() {
        let a = Attempts::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(a.allow("p", t0));
        assert!(a.allow("p", t0));
        assert!(!a.allow("p", t0 + Duration::from_secs(9)));
        assert!(a.allow("q", t0));
        assert!(a.allow("p", t0 + Duration::from_secs(10)));
        a.forget("p");
        assert!(a.allow("p", t0 + Duration::from_secs(10)));
        a.prune(t0 + Duration::from_secs(15));
        assert_eq!(a.seen.lock().unwrap().len(), 1, "q's window passed");
    }
}
