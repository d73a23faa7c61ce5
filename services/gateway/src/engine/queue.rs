//! A connection's bounded outbound queue.
//!
//! Many producers (the hub's dispatcher, handlers, recoveries) push encoded
//! frames; the connection's task takes them in batches and writes them.
//! Built for many mostly idle connections: an empty queue owns no heap
//! memory (a `VecDeque` allocates on first push and is given back when a
//! drained queue grew large), and a push wakes the connection's task only
//! if it is not already due to run.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// A frame waiting in a connection's outbound queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// A text frame, already encoded (Engine.IO prefix included). Cloning is
    /// a reference-count increment, so one encoding serves every recipient.
    Text(Utf8Bytes),
    /// A binary frame (an attachment of the preceding binary packet).
    Binary(Bytes),
}

/// Capacity kept by a drained queue; a queue that grew beyond it (a burst,
/// a replay) gives its memory back once empty.
const KEEP_CAPACITY: usize = 8;

/// Why a push failed.
#[derive(Debug, PartialEq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` frames already.
    Full(Outbound),
    /// The connection ended; nobody will read the queue again.
    Closed,
}

struct State {
    frames: VecDeque<Outbound>,
    closed: bool,
}

/// The bounded multi-producer, single-consumer queue of frames.
pub(crate) struct OutQueue {
    state: Mutex<State>,
    capacity: usize,
    /// The connection task's waker.
    reader: AtomicWaker,
    /// Whether a producer waits in [`OutQueue::push_wait`] for room.
    space_wanted: AtomicBool,
    space: Notify,
}

impl OutQueue {
    /// An empty queue holding at most `capacity` frames (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            reader: AtomicWaker::new(),
            space_wanted: AtomicBool::new(false),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame unless the queue is full or closed.
    pub(crate) fn push(&self, frame: Outbound) -> Result<(), PushError> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.frames.len() >= self.capacity {
                return Err(PushError::Full(frame));
            }
            state.frames.push_back(frame);
        }
        self.reader.wake();
        Ok(())
    }

    /// Queues frames that must stay together (a binary packet's text frame
    /// and its attachments: nothing may come between them) at once, unless
    /// the queue is closed or they do not fit (an empty queue takes them
    /// whatever their number). `Err(Full)` carries the first frame; the
    /// others are given back in `frames`.
    pub(crate) fn push_all(&self, frames: &mut Vec<Outbound>) -> Result<(), PushError> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if !state.frames.is_empty() && state.frames.len() + frames.len() > self.capacity {
                let first = frames.remove(0);
                return Err(PushError::Full(first));
            }
            state.frames.extend(frames.drain(..));
        }
        self.reader.wake();
        Ok(())
    }

    /// Queues a frame, waiting for room while the queue is full.
    #[cfg(test)]
    pub(crate) async fn push_wait(&self, frame: Outbound) -> Result<(), PushError> {
        self.push_wait_all(vec![frame]).await
    }

    /// Queues frames that stay together ([`OutQueue::push_all`]), waiting
    /// for room while they do not fit.
    pub(crate) async fn push_wait_all(&self, mut frames: Vec<Outbound>) -> Result<(), PushError> {
        loop {
            let notified = self.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            self.space_wanted.store(true, Ordering::SeqCst);
            match self.push_all(&mut frames) {
                Err(PushError::Full(first)) => frames.insert(0, first),
                other => return other,
            }
            notified.await;
        }
    }

    /// Moves up to `max` frames into `out`; registers the reader's waker
    /// and returns `Pending` if there are none.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Outbound>,
        max: usize,
    ) -> Poll<()> {
        if self.take(out, max) > 0 {
            return Poll::Ready(());
        }
        self.reader.register(cx.waker());
        if self.take(out, max) > 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Moves up to `max` frames into `out` without waiting; returns how many.
    pub(crate) fn take(&self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let n = {
            let mut state = self.lock();
            let n = state.frames.len().min(max);
            out.extend(state.frames.drain(..n));
            if state.frames.is_empty() && state.frames.capacity() > KEEP_CAPACITY {
                state.frames = VecDeque::new();
            }
            n
        };
        if n > 0 && self.space_wanted.swap(false, Ordering::SeqCst) {
            self.space.notify_waiters();
        }
        n
    }

    /// Closes the queue: frames queued are dropped, later pushes fail with
    /// [`PushError::Closed`], producers waiting for room are released.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.frames = VecDeque::new();
        }
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(s: &'static str) -> Outbound {
        Outbound::Text(Utf8Bytes::from_static(s))
    }

    fn text(o: &Outbound) -> &str {
        match o {
            Outbound::Text(t) => t.as_str(),
            Outbound::Binary(_) => "<binary>",
        }
    }

    #[test]
    fn keeps_order_and_bound() {
        let q = OutQueue::new(2);
        q.push(frame("a")).unwrap();
        q.push(frame("b")).unwrap();
        assert!(matches!(q.push(frame("c")), Err(PushError::Full(_))));
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out, 1), 1);
        q.push(frame("c")).unwrap();
        assert_eq!(q.take(&mut out, 10), 2);
        let got: Vec<&str> = out.iter().map(text).collect();
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn drained_queue_gives_memory_back() {
        let q = OutQueue::new(1000);
        for _ in 0..100 {
            q.push(frame("x")).unwrap();
        }
        let mut out = Vec::new();
        q.take(&mut out, 1000);
        assert_eq!(q.lock().frames.capacity(), 0);
        q.push(frame("y")).unwrap();
        q.take(&mut out, 1);
        assert!(q.lock().frames.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn closed_queue_refuses_and_drops() {
        let q = OutQueue::new(4);
        q.push(frame("a")).unwrap();
        q.close();
        assert_eq!(q.push(frame("b")), Err(PushError::Closed));
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out, 10), 0);
    }

    #[tokio::test]
    async fn reader_is_woken_by_a_push() {
        let q = Arc::new(OutQueue::new(4));
        let reader = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut out = Vec::new();
                std::future::poll_fn(|cx| q.poll_take(cx, &mut out, 10)).await;
                out.len()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.push(frame("a")).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("reader woken")
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn push_wait_waits_for_room_then_for_close() {
        let q = Arc::new(OutQueue::new(1));
        q.push(frame("a")).unwrap();
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.push_wait(frame("b")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "must wait while the queue is full");
        let mut out = Vec::new();
        q.take(&mut out, 1);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken when room was made")
            .unwrap()
            .unwrap();
        q.take(&mut out, 1);
        let got: Vec<&str> = out.iter().map(text).collect();
        assert_eq!(got, ["a", "b"]);

        q.push(frame("c")).unwrap();
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.push_wait(frame("d")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        let r = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("released by close")
            .unwrap();
        assert_eq!(r, Err(PushError::Closed));
    }
}
