//! One NATS subscription shared by many rooms of a kind.
//!
//! Every connected user has a room of their own (`user:{id}`), so a gateway
//! holds about as many user rooms as connections. A core NATS subscription
//! per room costs ~5.5 KB in the client (its channel) whatever the traffic,
//! and user rooms carry little (membership changes, notifications). The bus
//! therefore subscribes once to `rooms.user.*` and routes each message to
//! the local subscriptions of its subject; a message for a room nobody here
//! subscribed to is dropped. The price: every gateway receives every user
//! room's events, which is why only low-traffic kinds are shared
//! ([`NatsConfig::shared_user_rooms`](crate::NatsConfig::shared_user_rooms)).
//!
//! Per subscription this costs a [`Slot`]: a queue that allocates only
//! while messages wait. Order is the subscription's arrival order; the
//! queue is bounded like a NATS subscription, and an overflow is reported
//! to the feed, which then repairs from the stream as after a NATS slow
//! consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::StreamExt;
use futures::task::AtomicWaker;
use tokio::sync::OnceCell;

/// What a [`Slot`] hands its feed.
pub(super) enum SlotEvent {
    /// The next message of the room.
    Message(async_nats::Message),
    /// Messages were dropped (the queue was full): look for what was missed.
    Overflowed,
    /// The shared subscription ended (the client closed).
    Closed,
}

/// One room subscription's queue.
pub(super) struct Slot {
    queue: Mutex<VecDeque<async_nats::Message>>,
    capacity: usize,
    waker: AtomicWaker,
    overflowed: AtomicBool,
    closed: AtomicBool,
}

impl Slot {
    fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            waker: AtomicWaker::new(),
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn push(&self, m: async_nats::Message) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= self.capacity {
                self.overflowed.store(true, Ordering::Release);
            } else {
                q.push_back(m);
            }
        }
        self.waker.wake();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn try_next(&self) -> Option<SlotEvent> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = q.pop_front() {
            if q.is_empty() && q.capacity() > 16 {
                *q = VecDeque::new();
            }
            return Some(SlotEvent::Message(m));
        }
        drop(q);
        if self.overflowed.swap(false, Ordering::AcqRel) {
            return Some(SlotEvent::Overflowed);
        }
        if self.closed.load(Ordering::Acquire) {
            return Some(SlotEvent::Closed);
        }
        None
    }

    /// The next event of this room.
    pub(super) async fn next(&self) -> SlotEvent {
        std::future::poll_fn(|cx| {
            if let Some(e) = self.try_next() {
                return Poll::Ready(e);
            }
            self.waker.register(cx.waker());
            match self.try_next() {
                Some(e) => Poll::Ready(e),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// The routing table of one shared subscription.
type Routes = Mutex<HashMap<String, Vec<Arc<Slot>>>>;

/// A wildcard subscription (e.g. `rooms.user.*`) and the local room
/// subscriptions it feeds.
pub(super) struct SharedFeed {
    wildcard: String,
    capacity: usize,
    routes: Arc<Routes>,
    started: OnceCell<()>,
}

/// A room's registration in a [`SharedFeed`]; unregisters on drop.
pub(super) struct SlotHandle {
    subject: String,
    slot: Arc<Slot>,
    routes: Arc<Routes>,
}

impl SlotHandle {
    /// The next event of the room.
    pub(super) async fn next(&self) -> SlotEvent {
        self.slot.next().await
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slots) = routes.get_mut(&self.subject) {
            slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if slots.is_empty() {
                routes.remove(&self.subject);
            }
        }
    }
}

impl SharedFeed {
    /// A feed for `wildcard` (not subscribed until the first room);
    /// `capacity` bounds each room's queue.
    pub(super) fn new(wildcard: impl Into<String>, capacity: usize) -> Self {
        Self {
            wildcard: wildcard.into(),
            capacity,
            routes: Arc::default(),
            started: OnceCell::new(),
        }
    }

    /// Registers a room (its live subject). The first call subscribes to
    /// the wildcard and waits until the server has the subscription
    /// (`confirm`); once this returns, every message published to
    /// `subject` reaches the handle.
    pub(super) async fn register<F, Fut>(
        &self,
        client: &async_nats::Client,
        subject: &str,
        confirm: F,
    ) -> Result<SlotHandle, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        self.started
            .get_or_try_init(|| async {
                let sub = client
                    .subscribe(self.wildcard.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                confirm().await?;
                tokio::spawn(route(sub, Arc::clone(&self.routes)));
                Ok::<(), String>(())
            })
            .await?;
        let slot = Arc::new(Slot::new(self.capacity));
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(subject.to_owned())
            .or_default()
            .push(Arc::clone(&slot));
        Ok(SlotHandle {
            subject: subject.to_owned(),
            slot,
            routes: Arc::clone(&self.routes),
        })
    }
}

/// Hands every message of the wildcard subscription to the slots of its
/// subject, until the subscription ends; then closes every slot.
async fn route(mut sub: async_nats::Subscriber, routes: Arc<Routes>) {
    while let Some(m) = sub.next().await {
        let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slots) = routes.get(m.subject.as_str()) {
            if let [only] = slots.as_slice() {
                only.push(m);
            } else {
                for s in slots {
                    s.push(m.clone());
                }
            }
        }
    }
    let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
    for s in routes.values().flatten() {
        s.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, payload: &'static str) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload.as_bytes()),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn payload(e: Option<SlotEvent>) -> String {
        match e {
            Some(SlotEvent::Message(m)) => String::from_utf8(m.payload.to_vec()).unwrap(),
            Some(SlotEvent::Overflowed) => "<overflowed>".into(),
            Some(SlotEvent::Closed) => "<closed>".into(),
            None => "<none>".into(),
        }
    }

    #[test]
    fn slot_keeps_order_reports_overflow_and_frees_memory() {
        let slot = Slot::new(2);
        slot.push(msg("rooms.user.1", "a"));
        slot.push(msg("rooms.user.1", "b"));
        slot.push(msg("rooms.user.1", "c")); // over capacity: dropped
        assert_eq!(payload(slot.try_next()), "a");
        assert_eq!(payload(slot.try_next()), "b");
        assert_eq!(payload(slot.try_next()), "<overflowed>");
        assert_eq!(payload(slot.try_next()), "<none>");
        slot.close();
        assert_eq!(payload(slot.try_next()), "<closed>");

        let big = Slot::new(1000);
        for _ in 0..100 {
            big.push(msg("rooms.user.1", "x"));
        }
        while let Some(SlotEvent::Message(_)) = big.try_next() {}
        assert_eq!(big.queue.lock().unwrap().capacity(), 0);
    }
}
