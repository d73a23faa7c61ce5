//! Ending a log tail that stopped moving while the log did not.
//!
//! A tail reads a JetStream stream through an ordered consumer. When the
//! node holding that consumer dies (a 3-node cluster losing one node) and
//! the client's own connection survives, no reconnect tells the tail; the
//! client library notices missed heartbeats and recreates the consumer
//! itself, retrying with a backoff that grows to 10 s a try (each try also
//! waits up to 5 s for the dead consumer's delete). The fault suite saw
//! history complete ~10 s after the node returned. [`end_when_stalled`]
//! notices instead: a tail that yielded nothing for two checks in a row
//! while the stream held more ends with an error, and its caller resumes
//! from its checkpoint with a consumer of its own (its retry waits ≤ 1 s).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, PollNext, Stream, StreamExt};

/// Ends `feed` with `stalled(delivered, last)` when, at two checks
/// `every` apart, it had yielded nothing new (last sequence yielded:
/// `delivered`, from `seq_of` of its items; `from_seq - 1` before the
/// first) while `last_seq()` (the stream's last sequence; `None`: cannot
/// tell) was beyond it. Two checks, so that a caller that paused for a
/// while (its consumer's next pull still in flight) is not taken for a
/// stall. The feed's items always go first; the checks run only while the
/// feed has nothing ready. The stream must hold only what the feed reads
/// (its filter is the stream's one subject), or it would look behind
/// forever.
pub fn end_when_stalled<T, E, S, L, LF>(
    feed: S,
    from_seq: u64,
    every: Duration,
    seq_of: fn(&T) -> Option<u64>,
    last_seq: L,
    stalled: fn(u64, u64) -> E,
) -> impl Stream<Item = Result<T, E>> + Send + 'static
where
    T: Send + 'static,
    E: Send + 'static,
    S: Stream<Item = Result<T, E>> + Send + 'static,
    L: Fn() -> LF + Send + Sync + 'static,
    LF: Future<Output = Option<u64>> + Send + 'static,
{
    let delivered = Arc::new(Mutex::new(from_seq.saturating_sub(1)));
    let seen = Arc::clone(&delivered);
    let feed = feed.inspect(move |item| {
        if let Ok(seq) = item.as_ref().map(seq_of)
            && let Some(seq) = seq
        {
            let mut d = seen.lock().unwrap();
            *d = (*d).max(seq);
        }
    });
    // `(delivered at the previous check, behind then)`.
    let watch = stream::unfold(
        (None::<u64>, last_seq, delivered),
        move |(mut previous, last_seq, delivered)| async move {
            loop {
                tokio::time::sleep(every).await;
                let now = *delivered.lock().unwrap();
                let behind = match last_seq().await {
                    Some(last) if last > now => Some(last),
                    _ => None,
                };
                match behind {
                    Some(last) if previous == Some(now) => {
                        return Some((Err(stalled(now, last)), (previous, last_seq, delivered)));
                    }
                    Some(_) => previous = Some(now),
                    None => previous = None,
                }
            }
        },
    );
    // The feed first: the checks are polled only while it is pending. The
    // whole ends when the feed does.
    let feed = feed.map(Some).chain(stream::once(async { None }));
    stream::select_with_strategy(feed, watch.map(Some), |_: &mut ()| PollNext::Left)
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn seq(x: &u64) -> Option<u64> {
        Some(*x)
    }

    fn stalled(at: u64, last: u64) -> String {
        format!("stalled at {at}, log at {last}")
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_feed_behind_the_log_ends() {
        let feed = stream::iter([Ok::<u64, String>(1), Ok(2)]).chain(stream::pending());
        let mut tail = Box::pin(end_when_stalled(
            feed,
            1,
            Duration::from_secs(1),
            seq,
            || async { Some(5) },
            stalled,
        ));
        assert_eq!(tail.next().await, Some(Ok(1)));
        assert_eq!(tail.next().await, Some(Ok(2)));
        let started = tokio::time::Instant::now();
        assert_eq!(
            tail.next().await,
            Some(Err("stalled at 2, log at 5".into()))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn it_ends_with_its_feed() {
        let feed = stream::iter([Ok::<u64, String>(1)]);
        let tail = end_when_stalled(
            feed,
            1,
            Duration::from_secs(1),
            seq,
            || async { Some(9) },
            stalled,
        );
        assert_eq!(tail.collect::<Vec<_>>().await, vec![Ok(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_at_the_log_end_or_moving_goes_on() {
        // At the end of the log: never ends.
        let feed = stream::iter([Ok::<u64, String>(1)]).chain(stream::pending());
        let mut tail = Box::pin(end_when_stalled(
            feed,
            1,
            Duration::from_secs(1),
            seq,
            || async { Some(1) },
            stalled,
        ));
        assert_eq!(tail.next().await, Some(Ok(1)));
        assert!(
            tokio::time::timeout(Duration::from_secs(30), tail.next())
                .await
                .is_err()
        );
        // Behind but moving (an item every 0.7 s while the log is ahead):
        // never ends.
        let last = Arc::new(AtomicU64::new(100));
        let feed = stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            Some((Ok::<u64, String>(n + 1), n + 1))
        });
        let l = Arc::clone(&last);
        let mut tail = Box::pin(end_when_stalled(
            feed,
            1,
            Duration::from_secs(1),
            seq,
            move || {
                let l = Arc::clone(&l);
                async move { Some(l.load(Ordering::Relaxed)) }
            },
            stalled,
        ));
        for n in 1..=20 {
            assert_eq!(tail.next().await, Some(Ok(n)));
        }
    }
}
