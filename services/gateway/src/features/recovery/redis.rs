//! Sessions in Redis, shared by every gateway of a deployment without NATS
//! (`bus.kind = "redis"`): the Redis equivalent of the two NATS KV buckets.
//!
//! * `{prefix}:session:{pid}`: a hash `r` (revision), `v` (the record's
//!   JSON), expiring as [`Expiry`] says: a live socket's
//!   `recovery.session_max_age` after its last write (like the KV bucket's
//!   `max_age`), a dropped one's when the window has passed (plus
//!   [`CLOSED_GRACE`]); a deliberate disconnect deletes it.
//!
//! [`CLOSED_GRACE`]: super::CLOSED_GRACE
//! * `{prefix}:session-rev`: the counter revisions are taken from. One
//!   counter for all records, so a record deleted and written again never
//!   gets a revision an old writer still holds (the KV's stream sequence
//!   gives NATS the same property).
//! * `{prefix}:gateway:{id}`: a gateway's liveness (Unix ms), expiring
//!   `window + 1 min` after its last heartbeat.
//!
//! Writes are Lua scripts (atomic): `put` writes unconditionally,
//! `update` only while the record is still at the revision its writer
//! read (compare-and-set), else [`StoreError::Conflict`]. The keys share
//! the bus's hash tag (the script touches a record and the counter), so on
//! Redis Cluster sessions live on the bus's slot too.

use std::time::Duration;

use async_trait::async_trait;
use confab_bus::RedisBus;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Expiry, SessionRecord, SessionStore, StoreError};

/// `put`: KEYS = record, counter; ARGV = JSON, ttl ms. Returns the
/// revision.
const PUT: &str = r"
local r = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', r, 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return r
";

/// `update`: KEYS = record, counter; ARGV = JSON, ttl ms, expected
/// revision. Returns the new revision, or -1 when the record is gone or
/// was written since.
const UPDATE: &str = r"
local current = redis.call('HGET', KEYS[1], 'r')
if current ~= ARGV[3] then
  return -1
end
local r = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'r', r, 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return r
";

/// Session records and gateway liveness in Redis.
pub struct RedisSessions {
    bus: RedisBus,
    conn: ConnectionManager,
    put: Script,
    update: Script,
    expiry: Expiry,
    gateway_ttl_ms: u64,
}

fn unavailable(e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisSessions {
    /// A store on `bus`'s connection and key prefix: records expire as
    /// [`Expiry`] says, liveness entries `window + 1 min` after the last
    /// heartbeat.
    pub fn new(bus: &RedisBus, window: Duration, session_max_age: Duration) -> Self {
        Self {
            conn: bus.connection(),
            bus: bus.clone(),
            put: Script::new(PUT),
            update: Script::new(UPDATE),
            expiry: Expiry {
                window,
                session_max_age,
            },
            gateway_ttl_ms: (window + Duration::from_secs(60)).as_millis() as u64,
        }
    }

    fn session_key(&self, pid: &str) -> String {
        self.bus.key(&format!("session:{pid}"))
    }

    fn counter_key(&self) -> String {
        self.bus.key("session-rev")
    }

    fn gateway_key(&self, gateway: &str) -> String {
        self.bus.key(&format!("gateway:{gateway}"))
    }

    /// How long `record`, written now, is kept (ms).
    fn ttl_ms(&self, record: &SessionRecord) -> u64 {
        self.expiry.of(record).as_millis().max(1) as u64
    }
}

fn encode(record: &SessionRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn put(&self, pid: &str, record: &SessionRecord) -> Result<u64, StoreError> {
        self.put
            .key(self.session_key(pid))
            .key(self.counter_key())
            .arg(encode(record))
            .arg(self.ttl_ms(record))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn update(
        &self,
        pid: &str,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let r: i64 = self
            .update
            .key(self.session_key(pid))
            .key(self.counter_key())
            .arg(encode(record))
            .arg(self.ttl_ms(record))
            .arg(revision)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        u64::try_from(r).map_err(|_| StoreError::Conflict)
    }

    async fn get(&self, pid: &str) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        let (revision, value): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.session_key(pid))
            .arg("r")
            .arg("v")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let (Some(revision), Some(value)) = (revision, value) else {
            return Ok(None);
        };
        match serde_json::from_slice::<SessionRecord>(&value) {
            Ok(record) => Ok(Some((record, revision))),
            Err(error) => {
                tracing::warn!(%error, "unreadable session record: treated as unknown");
                Ok(None)
            }
        }
    }

    async fn delete(&self, pid: &str) -> Result<(), StoreError> {
        redis::cmd("DEL")
            .arg(self.session_key(pid))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn beat(&self, gateway: &str, now_ms: u64) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.gateway_key(gateway))
            .arg(now_ms)
            .arg("PX")
            .arg(self.gateway_ttl_ms)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn last_beat(&self, gateway: &str) -> Result<Option<u64>, StoreError> {
        redis::cmd("GET")
            .arg(self.gateway_key(gateway))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(&e))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_test_support::RedisServer;

    fn record(gateway: &str) -> SessionRecord {
        SessionRecord {
            v: 1,
            sid: "s".into(),
            user: "u1".into(),
            gateway: gateway.into(),
            offset: 7,
            rooms: vec!["channel:a".into()],
            joined: vec![],
            left: vec![],
            disconnected_at_ms: None,
        }
    }

    async fn store(redis: &RedisServer, max_age: Duration) -> RedisSessions {
        let bus = RedisBus::connect(confab_bus::RedisConfig::new(redis.url()))
            .await
            .unwrap();
        RedisSessions::new(&bus, Duration::from_secs(120), max_age)
    }

    #[tokio::test]
    async fn updates_are_compare_and_set_and_records_expire() {
        let redis = RedisServer::start();
        let store = store(&redis, Duration::from_millis(400)).await;
        assert!(store.get("p1").await.unwrap().is_none());
        let r1 = store.put("p1", &record("g1")).await.unwrap();
        let (got, rev) = store.get("p1").await.unwrap().unwrap();
        assert_eq!((got, rev), (record("g1"), r1));

        // One writer wins; the other, holding the old revision, conflicts.
        let r2 = store.update("p1", &record("g2"), r1).await.unwrap();
        assert!(r2 > r1);
        let lost = store.update("p1", &record("g3"), r1).await;
        assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
        assert_eq!(store.get("p1").await.unwrap().unwrap().0.gateway, "g2");

        // Deleted then written again: an old revision still conflicts.
        store.delete("p1").await.unwrap();
        assert!(matches!(
            store.update("p1", &record("g4"), r2).await,
            Err(StoreError::Conflict)
        ));
        let r3 = store.put("p1", &record("g5")).await.unwrap();
        assert!(r3 > r2);
        assert!(matches!(
            store.update("p1", &record("g6"), r2).await,
            Err(StoreError::Conflict)
        ));

        // Each write restarts the record's life; unwritten, it expires.
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.update("p1", &record("g7"), r3).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(store.get("p1").await.unwrap().is_some(), "rewritten");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(store.get("p1").await.unwrap().is_none(), "expired");
    }

    #[tokio::test]
    async fn gateway_liveness_is_shared_and_survives_a_redis_restart_with_aof() {
        let mut redis = RedisServer::start_persistent();
        let store = store(&redis, Duration::from_secs(60)).await;
        assert_eq!(store.last_beat("gw-a").await.unwrap(), None);
        store.beat("gw-a", 1234).await.unwrap();
        let rev = store.put("p", &record("gw-a")).await.unwrap();
        assert_eq!(store.last_beat("gw-a").await.unwrap(), Some(1234));
        redis.restart();
        // The connection manager reconnects on its own; the first command
        // after the restart may fail.
        let mut beat = None;
        for _ in 0..50 {
            if let Ok(b) = store.last_beat("gw-a").await {
                beat = b;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(beat, Some(1234));
        assert_eq!(store.get("p").await.unwrap().unwrap().1, rev);
    }
}
