//! The bridge's lease: one bridge of the cluster acts on what the emitters
//! publish; the others stand by.
//!
//! The lease is a Redis key (`SET key id NX PX ttl`), renewed every third
//! of `ttl` by a script that extends it only while it still holds this
//! bridge's id. A holder acts while its own clock says the lease is valid:
//! until the start of its last successful renewal + `ttl` less a tenth
//! (clock-rate drift). A renewal that finds the key gone or another id
//! stops it at once; one that cannot reach Redis lets the validity run out.
//!
//! Nothing is acted on twice: a bridge that takes the lease waits one full
//! `ttl` before it acts. By then the previous holder's validity (which it
//! set at most `ttl` before) has run out, even when its key vanished early
//! (deleted, or lost with a Redis failover) while it still believed in it.
//! The price: what the emitters publish between the old holder's last act
//! and the new one's first is lost (Redis pub/sub is at most once anyway).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::EmitterStats;

/// Extends the lease only if it is still ours.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Gives the lease up only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// When this bridge may act.
#[derive(Debug, Default)]
struct Window {
    /// Acting starts here (a full ttl after the lease was taken).
    from: Option<Instant>,
    /// ... and ends here unless renewed.
    until: Option<Instant>,
}

/// This bridge's view of the lease, shared with the message loop.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    id: String,
    ttl: Duration,
    window: Mutex<Window>,
    stats: Arc<EmitterStats>,
    taken: std::sync::atomic::AtomicU64,
}

impl Lease {
    /// A lease on `key` for this process (a random id).
    pub(crate) fn new(key: String, ttl: Duration, stats: Arc<EmitterStats>) -> Self {
        Self {
            key,
            id: format!("{:032x}", rand::random::<u128>()),
            ttl,
            window: Mutex::new(Window::default()),
            stats,
            taken: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this bridge acts now.
    pub(crate) fn acting(&self) -> bool {
        let now = Instant::now();
        let w = self.window();
        matches!((w.from, w.until), (Some(from), Some(until)) if from <= now && now < until)
    }

    /// How many times this bridge took the lease.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn margin(&self) -> Duration {
        self.ttl / 10
    }

    fn lose(&self, why: &str) {
        let mut w = self.window();
        if w.until.is_some() {
            tracing::warn!(key = %self.key, why, "emitter bridge lease lost: standing by");
        }
        *w = Window::default();
        drop(w);
        self.stats.set_holder(false);
    }

    /// Takes or renews the lease until `stop`, then gives it up.
    pub(crate) async fn run(self: Arc<Self>, mut conn: ConnectionManager, stop: CancellationToken) {
        let renew = redis::Script::new(RENEW);
        let ttl_ms = self.ttl.as_millis().max(1) as u64;
        loop {
            let started = Instant::now();
            let held = self.window().until.is_some();
            if held {
                let answer: Result<i64, _> = renew
                    .key(&self.key)
                    .arg(&self.id)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await;
                match answer {
                    Ok(1) => {
                        self.window().until = Some(started + self.ttl - self.margin());
                    }
                    Ok(_) => self.lose("the lease key is gone or another bridge's"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the emitter bridge lease");
                        if self.window().until.is_some_and(|u| u <= Instant::now()) {
                            self.lose("not renewed in time");
                        }
                    }
                }
            } else {
                let answer: Result<Option<String>, _> = redis::cmd("SET")
                    .arg(&self.key)
                    .arg(&self.id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await;
                match answer {
                    Ok(Some(_)) => {
                        self.taken
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(key = %self.key, wait = ?self.ttl, "emitter bridge lease taken: acting after one lease period");
                        let mut w = self.window();
                        w.from = Some(started + self.ttl);
                        w.until = Some(started + self.ttl - self.margin());
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot take the emitter bridge lease"),
                }
            }
            // The first renewal after taking comes before acting starts,
            // so that `until` is past `from` by then.
            self.stats.set_holder(self.acting());
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.ttl / 3) => {}
            }
        }
        if self.window().until.is_some() {
            let _: Result<i64, _> = redis::Script::new(RELEASE)
                .key(&self.key)
                .arg(&self.id)
                .invoke_async(&mut conn)
                .await;
        }
        self.lose("shutting down");
    }
}
