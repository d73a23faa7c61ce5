//! One read shared by every caller that needs an answer read *after* it
//! asked: a burst of callers (thousands of recoveries at once) costs one
//! request to the broker per round trip instead of one each.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, watch};

/// Shares reads of a value that must be fresh: [`Fresh::get`] answers with
/// the result of a read that started after the call began, never an older
/// one. Callers arriving while a read is in flight wait for the next read,
/// which one of them performs for all.
pub(crate) struct Fresh<T> {
    /// How many reads have started; a read's epoch is its rank.
    started: AtomicU64,
    /// Held by the caller performing a read.
    reading: Mutex<()>,
    /// The latest finished read, with its epoch.
    latest: watch::Sender<Option<(u64, T)>>,
}

impl<T: Clone> Fresh<T> {
    pub(crate) fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            reading: Mutex::new(()),
            latest: watch::Sender::new(None),
        }
    }

    /// The result of a `read` that started after this call began: performed
    /// by this caller, or by another one that started it later.
    pub(crate) async fn get<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        // Any read that takes an epoch from now on starts after this call.
        let needed = self.started.load(Ordering::SeqCst) + 1;
        let fresh = |latest: &Option<(u64, T)>| match latest {
            Some((epoch, value)) if *epoch >= needed => Some(value.clone()),
            _ => None,
        };
        let mut rx = self.latest.subscribe();
        let mut read = Some(read);
        loop {
            if let Some(value) = fresh(&rx.borrow_and_update()) {
                return value;
            }
            tokio::select! {
                // A read finished: fresh enough, or wait for the next.
                changed = rx.changed() => {
                    // The sender lives as long as `self`.
                    debug_assert!(changed.is_ok());
                }
                // No read in flight (or its caller gave up): read for all.
                guard = self.reading.lock() => {
                    if let Some(value) = fresh(&self.latest.borrow()) {
                        return value;
                    }
                    let epoch = self.started.fetch_add(1, Ordering::SeqCst) + 1;
                    let read = read.take().expect("a caller reads at most once");
                    let value = read().await;
                    // Publish before unlocking: waiters see the result
                    // before one of them could start another read.
                    self.latest.send_replace(Some((epoch, value.clone())));
                    drop(guard);
                    return value;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_a_read_and_late_ones_get_a_later_read() {
        let fresh = Arc::new(Fresh::<usize>::new());
        let reads = Arc::new(AtomicUsize::new(0));
        let read = |reads: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reads.fetch_add(1, Ordering::SeqCst) + 1
        };
        // 20 callers at once: the first reads, the others find a read in
        // flight that started before them, so one more read serves them all.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (fresh, reads) = (Arc::clone(&fresh), Arc::clone(&reads));
            tasks.push(tokio::spawn(async move { fresh.get(|| read(reads)).await }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        assert!(reads.load(Ordering::SeqCst) <= 2, "{got:?}");
        // A caller arriving after those reads finished gets a new one.
        let later = fresh.get(|| read(Arc::clone(&reads))).await;
        assert!(later > *got.iter().max().unwrap());
    }

    #[tokio::test]
    async fn a_caller_never_gets_a_read_that_started_before_it() {
        let fresh = Arc::new(Fresh::<u64>::new());
        let clock = Arc::new(AtomicU64::new(0));
        // A slow read in flight...
        let first = {
            let (fresh, clock) = (Arc::clone(&fresh), Arc::clone(&clock));
            tokio::spawn(async move {
                fresh
                    .get(|| async move {
                        let at = clock.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        at
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ...then the world changes and someone asks.
        clock.store(1, Ordering::SeqCst);
        let clock2 = Arc::clone(&clock);
        let second = fresh
            .get(|| async move { clock2.load(Ordering::SeqCst) })
            .await;
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(second, 1, "the in-flight read started before the change");
    }

    #[tokio::test]
    async fn a_cancelled_reader_does_not_strand_the_waiters() {
        let fresh = Arc::new(Fresh::<u64>::new());
        let stuck = {
            let fresh = Arc::clone(&fresh);
            tokio::spawn(async move { fresh.get(std::future::pending::<u64>).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let fresh = Arc::clone(&fresh);
            tokio::spawn(async move { fresh.get(|| async { 7 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter reads once the reader is gone")
            .unwrap();
        assert_eq!(got, 7);
    }
}
