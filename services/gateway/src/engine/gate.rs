//! Futures that are polled only after they asked to be.
//!
//! A connection's loop (`tokio::select!`) polls every branch each time it
//! runs, i.e. once per frame written. Two of its branches almost never
//! complete (the connection's kill switch and the server's shutdown), yet a
//! `CancellationToken` future takes a mutex on every poll. Gating them: a
//! gated future is polled again only after its own waker fired, and in
//! between a poll costs an atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// The waker shared by the futures of one [`Gate`].
#[derive(Default)]
struct Signal {
    /// Bumped by every wake-up.
    generation: AtomicU64,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.task.wake();
    }
}

/// A gate for some futures of one task (they share one wake-up flag: any
/// of them waking lets all of them be polled once).
pub(crate) struct Gate {
    signal: Arc<Signal>,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            signal: Arc::default(),
        }
    }

    /// Gates a pinned future.
    pub(crate) fn gate<'a, F: Future>(&self, inner: Pin<&'a mut F>) -> Gated<'a, F> {
        Gated {
            inner,
            signal: Arc::clone(&self.signal),
            seen: None,
        }
    }
}

/// A future polled only when its [`Gate`] was woken (or on its first poll).
pub(crate) struct Gated<'a, F> {
    inner: Pin<&'a mut F>,
    signal: Arc<Signal>,
    /// The wake-up generation of the last poll of the inner future.
    seen: Option<u64>,
}

impl<F: Future> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.signal.task.register(cx.waker());
        let generation = this.signal.generation.load(Ordering::Acquire);
        if this.seen == Some(generation) {
            return Poll::Pending;
        }
        // A wake-up during the poll below bumps the generation again, so
        // it is never lost.
        this.seen = Some(generation);
        let waker = Waker::from(Arc::clone(&this.signal));
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// Counts its polls; pending until `ready` is set, then ready.
    struct Probe<'a> {
        polls: &'a AtomicUsize,
        token: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    }

    impl Future for Probe<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.token.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn inner_future_is_polled_only_after_it_woke() {
        let polls = AtomicUsize::new(0);
        let token = CancellationToken::new();
        let probe = Probe {
            polls: &polls,
            token: Box::pin(token.clone().cancelled_owned()),
        };
        let probe = std::pin::pin!(probe);
        let gate = Gate::new();
        let mut gated = gate.gate(probe);
        // Many polls of the gated future (a busy select! loop) poll the
        // inner one once.
        for _ in 0..100 {
            assert!(futures::poll!(&mut gated).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);

        // Cancelling wakes it: it is polled again and completes, and the
        // task waiting on it is woken.
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                token.cancel();
            })
        };
        tokio::time::timeout(Duration::from_secs(2), &mut gated)
            .await
            .expect("woken by the cancellation");
        canceller.await.unwrap();
        assert!(polls.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn one_wake_opens_every_future_of_the_gate() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let fa = std::pin::pin!(a.clone().cancelled_owned());
        let fb = std::pin::pin!(b.clone().cancelled_owned());
        let gate = Gate::new();
        let (mut ga, mut gb) = (gate.gate(fa), gate.gate(fb));
        assert!(futures::poll!(&mut ga).is_pending());
        assert!(futures::poll!(&mut gb).is_pending());
        b.cancel();
        // `ga` is polled first; `gb` must still get its poll.
        assert!(futures::poll!(&mut ga).is_pending());
        assert!(futures::poll!(&mut gb).is_ready());
    }
}
