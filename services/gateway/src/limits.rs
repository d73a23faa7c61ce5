//! Counted limits on what a client may hold at once: connections per
//! address (the engine, at the HTTP handshake) and per user (the handler, at
//! CONNECT).
//!
//! A [`Counter`] keeps one entry per key with at least one holder; a
//! [`Held`] gives its place back when dropped and the entry goes away with
//! its last holder, so the map never holds more keys than there are live
//! connections.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// How many holders each key has, at most `limit` each (0: no limit, only
/// counted).
pub(crate) struct Counter<K: Eq + Hash + Clone> {
    limit: usize,
    held: DashMap<K, usize>,
}

impl<K: Eq + Hash + Clone + fmt::Debug> fmt::Debug for Counter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("limit", &self.limit)
            .field("keys", &self.held.len())
            .finish()
    }
}

/// One place taken in a [`Counter`]; given back on drop.
pub(crate) struct Held<K: Eq + Hash + Clone> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> fmt::Debug for Held<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Held")
    }
}

impl<K: Eq + Hash + Clone> Counter<K> {
    /// A counter allowing `limit` holders per key (0: unlimited).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: DashMap::new(),
        })
    }

    /// The limit per key (0: none).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a place for `key`, or `None` when the key is at its limit.
    pub(crate) fn acquire(self: &Arc<Self>, key: K) -> Option<Held<K>> {
        match self.held.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                if self.limit != 0 && *e.get() >= self.limit {
                    return None;
                }
                *e.get_mut() += 1;
            }
            Entry::Vacant(e) => {
                e.insert(1);
            }
        }
        Some(Held {
            counter: Arc::clone(self),
            key,
        })
    }

    /// How many keys have holders now.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.held.len()
    }

    fn release(&self, key: &K) {
        if let Entry::Occupied(mut e) = self.held.entry(key.clone()) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        self.counter.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_and_forgets_keys_at_zero() {
        let c = Counter::new(2);
        let a1 = c.acquire("a").unwrap();
        let a2 = c.acquire("a").unwrap();
        assert!(c.acquire("a").is_none());
        let b = c.acquire("b").unwrap();
        assert_eq!(c.keys(), 2);
        drop(a1);
        let a3 = c.acquire("a").unwrap();
        drop((a2, a3, b));
        assert_eq!(c.keys(), 0, "entries go with their last holder");
        let unlimited = Counter::new(0);
        let all: Vec<_> = (0..100).map(|_| unlimited.acquire(1).unwrap()).collect();
        assert_eq!(unlimited.keys(), 1);
        drop(all);
        assert_eq!(unlimited.keys(), 0);
    }
}
