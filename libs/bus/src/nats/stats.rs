//! Counters of one NATS bus connection: what repairs, replays and the
//! decoder did, for metrics ([`NatsBusStats`]), plus the highest stream
//! sequence seen ([`Bus::high_water`](crate::Bus::high_water)).
//!
//! The lowest part of the bus: the others bump these counters; it uses
//! none of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the NATS bus (all subscriptions together), e.g. for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsBusStats {
    /// Gaps detected in a live feed (`Nats-Last-Sequence` mismatch) or found
    /// after a reconnect / slow-consumer warning, and repaired.
    pub repairs: u64,
    /// Stored messages delivered by repairs.
    pub repaired_messages: u64,
    /// Repairs that failed or stopped early (timeout, more than
    /// [`MAX_REPAIR_MESSAGES`](super::MAX_REPAIR_MESSAGES), broker error): some messages were lost.
    pub repair_failures: u64,
    /// Live messages dropped because a repair had already delivered them.
    pub duplicates: u64,
    /// Messages dropped because they had no `Confab-Event` header.
    pub missing_event: u64,
    /// Messages dropped because the body was not a UTF-8 JSON array.
    pub invalid_payload: u64,
    /// Replays served with batched direct gets (no consumer).
    pub direct_replays: u64,
    /// Replays read through an ordered consumer.
    pub consumer_replays: u64,
    /// Replays that tried direct gets, then fell back to a consumer (the
    /// server or stream cannot serve them, or a batch came back
    /// incomplete).
    pub direct_fallbacks: u64,
}

/// The live counters behind [`NatsBusStats`].
#[derive(Default)]
pub(super) struct Counters {
    /// The highest stream sequence seen (see
    /// [`Bus::high_water`](crate::Bus::high_water)).
    pub(super) high_water: AtomicU64,
    pub(super) repairs: AtomicU64,
    pub(super) repaired_messages: AtomicU64,
    pub(super) repair_failures: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) missing_event: AtomicU64,
    pub(super) invalid_payload: AtomicU64,
    pub(super) direct_replays: AtomicU64,
    pub(super) consumer_replays: AtomicU64,
    pub(super) direct_fallbacks: AtomicU64,
}

impl Counters {
    /// Records that the log holds sequence `seq` (never moves back).
    pub(super) fn saw(&self, seq: u64) {
        self.high_water.fetch_max(seq, Ordering::Relaxed);
    }

    /// The counters now.
    pub(super) fn snapshot(&self) -> NatsBusStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatsBusStats {
            repairs: get(&self.repairs),
            repaired_messages: get(&self.repaired_messages),
            repair_failures: get(&self.repair_failures),
            duplicates: get(&self.duplicates),
            missing_event: get(&self.missing_event),
            invalid_payload: get(&self.invalid_payload),
            direct_replays: get(&self.direct_replays),
            consumer_replays: get(&self.consumer_replays),
            direct_fallbacks: get(&self.direct_fallbacks),
        }
    }
}

/// Adds `n` to `counter`.
pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
