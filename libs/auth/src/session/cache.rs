//! The bounded cache of lookups, with one lookup in flight per key.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::{Lookup, Verdict};

type Key = [u8; 32];

/// A lookup everyone asking for the same key awaits.
pub(crate) type Pending = Shared<BoxFuture<'static, Lookup>>;

enum Slot {
    Ready { verdict: Verdict, until: Instant },
    Pending(Pending),
}

/// What the cache knows of a key.
pub(crate) enum Found {
    /// A remembered verdict.
    Hit(Verdict),
    /// A lookup is already running: await it.
    Running(Pending),
    /// Nothing: the caller starts a lookup.
    Miss,
}

pub(crate) struct Cache {
    capacity: usize,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `key` up; on a miss, `start` makes the lookup, which is
    /// registered before the lock is released so that concurrent callers
    /// share it. `start` returns `None` when no lookup may go out (the
    /// breaker is open).
    pub(crate) fn get_or_start(
        &self,
        key: &Key,
        start: impl FnOnce() -> Option<Pending>,
    ) -> (Found, Option<Pending>) {
        let mut slots = self.lock();
        match slots.get(key) {
            Some(Slot::Ready { verdict, until }) if Instant::now() < *until => {
                return (Found::Hit(verdict.clone()), None);
            }
            Some(Slot::Pending(p)) => return (Found::Running(p.clone()), None),
            _ => {}
        }
        let Some(pending) = start() else {
            return (Found::Miss, None);
        };
        if slots.len() >= self.capacity && !slots.contains_key(key) {
            make_room(&mut slots, self.capacity);
        }
        // When every slot holds a running lookup the new one is not
        // shared: the bound holds either way.
        if slots.len() < self.capacity || slots.contains_key(key) {
            slots.insert(*key, Slot::Pending(pending.clone()));
        }
        (Found::Miss, Some(pending))
    }

    /// Stores a finished lookup's verdict until `until`; `None` forgets the
    /// key (failures are not cached: the breaker handles them).
    pub(crate) fn finish(&self, key: &Key, stored: Option<(Verdict, Instant)>) {
        let mut slots = self.lock();
        match stored {
            Some((verdict, until)) if until > Instant::now() => {
                if slots.contains_key(key) || slots.len() < self.capacity {
                    slots.insert(*key, Slot::Ready { verdict, until });
                }
            }
            _ => {
                slots.remove(key);
            }
        }
    }

    /// Entries now (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Drops expired verdicts, then, if still full, the verdict that expires
/// first.
fn make_room(slots: &mut HashMap<Key, Slot>, capacity: usize) {
    let now = Instant::now();
    slots.retain(|_, s| !matches!(s, Slot::Ready { until, .. } if *until <= now));
    if slots.len() < capacity {
        return;
    }
    let oldest = slots
        .iter()
        .filter_map(|(k, s)| match s {
            Slot::Ready { until, .. } => Some((*until, *k)),
            Slot::Pending(_) => None,
        })
        .min()
        .map(|(_, k)| k);
    if let Some(k) = oldest {
        slots.remove(&k);
    }
}
