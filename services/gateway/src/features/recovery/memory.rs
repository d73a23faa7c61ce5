//! The session store's in-memory adapter (the all-in-one process and
//! tests). [`NatsSessions`] (`nats.rs`) keeps sessions in NATS KV for
//! clusters.
//!
//! [`NatsSessions`]: super::NatsSessions

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Expiry, SessionRecord, SessionStore, StoreError};

struct Entry {
    record: SessionRecord,
    revision: u64,
    /// When it expires ([`Expiry`]).
    expires: Instant,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Entry>,
    beats: HashMap<String, u64>,
    revision: u64,
    writes: u64,
}

/// Sessions in this process's memory, expiring as the NATS bucket's
/// entries do ([`Expiry`]). For the all-in-one process, where every gateway
/// is this process.
pub struct MemorySessions {
    state: Mutex<State>,
    expiry: Expiry,
}

impl MemorySessions {
    /// A store whose records expire `session_max_age` after they were
    /// written, those of dropped sessions once `window` has passed.
    pub fn new(window: Duration, session_max_age: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            expiry: Expiry {
                window,
                session_max_age,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, state: &mut State, pid: &str, record: &SessionRecord) -> u64 {
        state.revision += 1;
        state.writes += 1;
        // Sweep now and then so that abandoned records do not pile up.
        if state.writes.is_multiple_of(1024) {
            let now = Instant::now();
            state.sessions.retain(|_, e| e.expires > now);
        }
        let revision = state.revision;
        state.sessions.insert(
            pid.to_owned(),
            Entry {
                record: record.clone(),
                revision,
                expires: Instant::now() + self.expiry.of(record),
            },
        );
        revision
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn put(&self, pid: &str, record: &SessionRecord) -> Result<u64, StoreError> {
        let mut state = self.lock();
        Ok(self.write(&mut state, pid, record))
    }

    async fn update(
        &self,
        pid: &str,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let mut state = self.lock();
        match state.sessions.get(pid) {
            Some(e) if e.revision == revision => Ok(self.write(&mut state, pid, record)),
            _ => Err(StoreError::Conflict),
        }
    }

    async fn get(&self, pid: &str) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        let state = self.lock();
        Ok(state
            .sessions
            .get(pid)
            .filter(|e| e.expires > Instant::now())
            .map(|e| (e.record.clone(), e.revision)))
    }

    async fn delete(&self, pid: &str) -> Result<(), StoreError> {
        self.lock().sessions.remove(pid);
        Ok(())
    }

    async fn beat(&self, gateway: &str, now_ms: u64) -> Result<(), StoreError> {
        self.lock().beats.insert(gateway.to_owned(), now_ms);
        Ok(())
    }

    async fn last_beat(&self, gateway: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().beats.get(gateway).copied())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> SessionRecord {
        SessionRecord {
            v: 1,
            sid: "s1".into(),
            user: user.into(),
            gateway: "g1".into(),
            offset: 7,
            rooms: vec!["user:u1".into()],
            joined: vec![],
            left: vec![],
            disconnected_at_ms: None,
        }
    }

    #[tokio::test]
    async fn compare_and_set_and_expiry() {
        let store = MemorySessions::new(Duration::from_secs(1), Duration::from_millis(200));
        let rev = store.put("p1", &record("u1")).await.unwrap();
        let (got, got_rev) = store.get("p1").await.unwrap().unwrap();
        assert_eq!((got, got_rev), (record("u1"), rev));
        let mut changed = record("u1");
        changed.disconnected_at_ms = Some(5);
        let rev2 = store.update("p1", &changed, rev).await.unwrap();
        assert!(rev2 > rev);
        // A stale writer loses.
        assert!(matches!(
            store.update("p1", &record("u1"), rev).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(store.get("p1").await.unwrap().unwrap().0, changed);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(store.get("p1").await.unwrap().is_none());
        store.beat("g1", 42).await.unwrap();
        assert_eq!(store.last_beat("g1").await.unwrap(), Some(42));
        assert_eq!(store.last_beat("g2").await.unwrap(), None);
    }
}
