//! The hub's dispatcher: one task reads every room feed of the gateway and
//! delivers their messages in log order across rooms.
//!
//! Why one task: a socket is in many rooms, and the offset the client keeps
//! for connection-state recovery is the sequence of the last event it got.
//! If one room's event (sequence 10) could overtake another room's (9) on
//! the way to the socket, a client that dropped in between would resume
//! after 10 and never see 9. Separate tasks per room would allow exactly
//! that.
//!
//! How the order is kept: NATS writes the stored events to this
//! connection in stream order, and the client library hands each to its
//! room's feed in arrival order. Each feed is polled with its own waker,
//! which queues the feed when something arrives. The dispatcher pulls
//! everything from every queued feed until the queue is empty: at that
//! point every event that arrived before the last one pulled has been
//! pulled too (its feed was queued earlier). Sorting that batch by sequence
//! therefore gives log order, and later batches only hold later events.
//! Events repaired after a loss (a NATS slow consumer or reconnect) arrive
//! late by nature; [`SocketRef::deliver`](crate::engine::SocketRef::deliver)
//! keeps the client's offset from moving back for those.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use confab_bus::{BusMessage, BusSubscription};
use confab_events::RoomId;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};

use super::{Feed, Hub};

/// Most messages taken from one feed before the others get a turn (the
/// feed stays queued).
const PER_FEED: usize = 256;
/// Most messages in one batch. Only an overloaded gateway fills it; the
/// batch is then delivered before every woken feed was drained.
const MAX_BATCH: usize = 16 * 1024;

#[derive(Default)]
struct ReadyQueue {
    queue: Mutex<VecDeque<u64>>,
    notify: Notify,
}

impl ReadyQueue {
    fn pop(&self) -> Option<u64> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Queues its feed (once) when the feed has something.
struct FeedWaker {
    key: u64,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for FeedWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(self.key);
            self.ready.notify.notify_one();
        }
    }
}

struct Entry {
    room: RoomId,
    sub: BusSubscription,
    waker: Arc<FeedWaker>,
}

/// Runs until the hub is dropped.
pub(super) async fn run(hub: Weak<Hub>, mut feeds: mpsc::UnboundedReceiver<Feed>) {
    let ready = Arc::new(ReadyQueue::default());
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    loop {
        if ready.is_empty() {
            tokio::select! {
                feed = feeds.recv() => match feed {
                    Some(feed) => apply(&hub, &ready, &mut entries, feed),
                    None => return,
                },
                _ = ready.notify.notified() => {}
            }
        }
        while let Ok(feed) = feeds.try_recv() {
            apply(&hub, &ready, &mut entries, feed);
        }
        // Polling our own feeds must not be cut short by tokio's budget: a
        // feed that says "pending" must really be empty.
        let batch = tokio::task::unconstrained(futures::future::poll_fn(|_| {
            Poll::Ready(drain(&ready, &mut entries))
        }))
        .await;
        let Some(hub) = hub.upgrade() else { return };
        for (room, msg) in &batch {
            hub.on_message(room, msg).await;
        }
        // Let other tasks (the connections writing these frames) run.
        tokio::task::yield_now().await;
    }
}

fn apply(hub: &Weak<Hub>, ready: &Arc<ReadyQueue>, entries: &mut HashMap<u64, Entry>, feed: Feed) {
    match feed {
        Feed::Add(key, room, sub) => {
            // The room may have emptied (or been re-created) meanwhile.
            let current = hub
                .upgrade()
                .and_then(|h| h.rooms.get(&room).map(|r| r.key));
            if current != Some(key) {
                return;
            }
            let waker = Arc::new(FeedWaker {
                key,
                queued: AtomicBool::new(false),
                ready: Arc::clone(ready),
            });
            // Poll it once: it may hold messages already.
            waker.wake_by_ref();
            entries.insert(key, Entry { room, sub, waker });
        }
        Feed::Remove(key) => {
            entries.remove(&key);
        }
    }
}

/// Pulls every message of every queued feed, then sorts them into log
/// order (volatile messages keep their place after the durable one before
/// them).
fn drain(ready: &ReadyQueue, entries: &mut HashMap<u64, Entry>) -> Vec<(RoomId, BusMessage)> {
    let mut batch: Vec<(RoomId, BusMessage)> = Vec::new();
    while batch.len() < MAX_BATCH {
        let Some(key) = ready.pop() else { break };
        let Some(entry) = entries.get_mut(&key) else {
            continue;
        };
        // Cleared before polling: an arrival during the poll queues it again.
        entry.waker.queued.store(false, Ordering::Release);
        let waker = Waker::from(Arc::clone(&entry.waker));
        let mut cx = Context::from_waker(&waker);
        let mut taken = 0;
        loop {
            match entry.sub.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(msg)) => {
                    batch.push((entry.room.clone(), msg));
                    taken += 1;
                    if taken >= PER_FEED {
                        entry.waker.wake_by_ref();
                        break;
                    }
                }
                Poll::Ready(None) => {
                    tracing::warn!(room = %entry.room, "a room feed ended: its events no longer reach local sockets");
                    entries.remove(&key);
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
    let mut last = 0;
    let mut keyed: Vec<(u64, (RoomId, BusMessage))> = batch
        .into_iter()
        .map(|item| {
            if let Some(seq) = item.1.seq {
                last = last.max(seq);
                (seq, item)
            } else {
                (last, item)
            }
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, item)| item).collect()
}
