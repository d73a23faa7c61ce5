//! Gap detection for one room's live feed.
//!
//! Core NATS subscriptions are at-most-once: a slow consumer or a reconnect
//! silently loses messages. Every stored room event is republished with its
//! stream sequence (`Nats-Sequence`) and the sequence of the previous event
//! on the same subject (`Nats-Last-Sequence`), so a subscriber that remembers
//! the last sequence it saw can tell when something is missing and fetch it
//! from the stream. [`GapTracker`] is that bookkeeping, free of I/O.

/// What to do with a live message, as decided by [`GapTracker::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapDecision {
    /// Deliver it: it follows the last one seen (or is the first).
    Deliver,
    /// Drop it: its sequence was already delivered (typically fetched by a
    /// repair and then also received live).
    Duplicate,
    /// Messages are missing before it: fetch the stored messages of the
    /// room with stream sequences in `from..=to`, deliver them in order,
    /// then deliver this one.
    Repair {
        /// First stream sequence to fetch (the last one seen + 1).
        from: u64,
        /// Last stream sequence to fetch (the previous message on the
        /// subject, from `Nats-Last-Sequence`).
        to: u64,
    },
}

/// Tracks the last stream sequence seen on one room subject.
///
/// The first message observed sets the baseline: nothing before it is
/// repaired.
#[derive(Debug, Clone, Default)]
pub struct GapTracker {
    last_seen: Option<u64>,
}

impl GapTracker {
    /// A tracker with no baseline yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker whose baseline is `seq`: the room's last sequence when the
    /// subscription started (0 for none), so that what is stored after it
    /// but lost before the first live message is still repaired.
    pub fn starting_after(seq: u64) -> Self {
        Self {
            last_seen: Some(seq),
        }
    }

    /// The last stream sequence delivered, if any.
    pub fn last_seen(&self) -> Option<u64> {
        self.last_seen
    }

    /// Records a live stored message with stream sequence `seq` whose
    /// previous message on the same subject was `last_seq`
    /// (`Nats-Last-Sequence`, when present) and says what to do with it.
    ///
    /// After [`GapDecision::Repair`] or [`GapDecision::Deliver`] the tracker
    /// has moved on to `seq`; a repair that fails is not retried.
    pub fn observe(&mut self, seq: u64, last_seq: Option<u64>) -> GapDecision {
        let Some(seen) = self.last_seen else {
            self.last_seen = Some(seq);
            return GapDecision::Deliver;
        };
        if seq <= seen {
            return GapDecision::Duplicate;
        }
        self.last_seen = Some(seq);
        match last_seq {
            Some(prev) if prev > seen => GapDecision::Repair {
                from: seen + 1,
                to: prev,
            },
            // `prev == seen`: contiguous. `prev < seen` means messages we
            // saw were removed from the subject (purge) or the header is
            // missing: nothing can be fetched, deliver.
            _ => GapDecision::Deliver,
        }
    }

    /// After a reconnect or a slow-consumer warning: given the stream
    /// sequence of the last stored message of the subject, returns the range
    /// to fetch (`from..=to`) when it is newer than the last one seen, and
    /// moves the tracker to it. Does nothing before the baseline is set.
    pub fn catch_up(&mut self, subject_last: u64) -> Option<(u64, u64)> {
        let seen = self.last_seen?;
        if subject_last <= seen {
            return None;
        }
        self.last_seen = Some(subject_last);
        Some((seen + 1, subject_last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_sets_the_baseline() {
        let mut t = GapTracker::new();
        assert_eq!(t.last_seen(), None);
        // Even with a huge apparent gap, nothing before the first message is
        // repaired.
        assert_eq!(t.observe(50, Some(40)), GapDecision::Deliver);
        assert_eq!(t.last_seen(), Some(50));
    }

    #[test]
    fn contiguous_messages_are_delivered() {
        let mut t = GapTracker::new();
        assert_eq!(t.observe(3, Some(0)), GapDecision::Deliver);
        // Other rooms' messages take sequences in between: 7's previous on
        // this subject is 3, so nothing is missing.
        assert_eq!(t.observe(7, Some(3)), GapDecision::Deliver);
        assert_eq!(t.observe(8, Some(7)), GapDecision::Deliver);
        assert_eq!(t.last_seen(), Some(8));
    }

    #[test]
    fn gaps_ask_for_a_repair_up_to_the_previous_message() {
        let mut t = GapTracker::new();
        t.observe(3, Some(0));
        assert_eq!(
            t.observe(20, Some(15)),
            GapDecision::Repair { from: 4, to: 15 }
        );
        assert_eq!(t.last_seen(), Some(20));
        assert_eq!(t.observe(21, Some(20)), GapDecision::Deliver);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut t = GapTracker::new();
        t.observe(10, None);
        assert_eq!(t.observe(10, Some(9)), GapDecision::Duplicate);
        assert_eq!(t.observe(4, Some(2)), GapDecision::Duplicate);
        assert_eq!(t.last_seen(), Some(10));
    }

    #[test]
    fn purged_history_or_missing_header_is_delivered() {
        let mut t = GapTracker::new();
        t.observe(10, None);
        assert_eq!(t.observe(12, Some(5)), GapDecision::Deliver);
        assert_eq!(t.observe(13, None), GapDecision::Deliver);
        assert_eq!(t.last_seen(), Some(13));
    }

    #[test]
    fn catch_up_fetches_what_is_newer() {
        let mut t = GapTracker::new();
        assert_eq!(t.catch_up(9), None, "no baseline yet");
        t.observe(5, Some(0));
        assert_eq!(t.catch_up(5), None);
        assert_eq!(t.catch_up(3), None);
        assert_eq!(t.catch_up(9), Some((6, 9)));
        assert_eq!(t.last_seen(), Some(9));
        // Messages fetched by the catch-up and then received live are
        // duplicates.
        assert_eq!(t.observe(9, Some(5)), GapDecision::Duplicate);
        assert_eq!(t.observe(11, Some(9)), GapDecision::Deliver);
    }
}
