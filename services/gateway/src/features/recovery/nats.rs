//! Sessions in NATS KV, shared by every gateway of a cluster.
//!
//! Two buckets: `CONFAB_SESSIONS` (one entry per pid, history 1, entries
//! expire after `recovery.session_max_age`) and `CONFAB_GATEWAYS` (one
//! liveness entry per gateway, written every `recovery.heartbeat`,
//! expiring `window + 1 min` after the last write). Reads are direct gets:
//! no consumers.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;

use super::{SessionRecord, SessionStore, StoreError};

/// The KV bucket of session records.
pub const SESSIONS_BUCKET: &str = "CONFAB_SESSIONS";
/// The KV bucket of gateway liveness records.
pub const GATEWAYS_BUCKET: &str = "CONFAB_GATEWAYS";

/// Session records in NATS KV.
pub struct NatsSessions {
    sessions: kv::Store,
    gateways: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        max_value_size: 64 * 1024,
        storage: jetstream::stream::StorageType::File,
        // As many as the room log: a session must survive what the log
        // survives (a lost node of a cluster).
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("cannot create KV bucket {name}: {e}")))
}

impl NatsSessions {
    /// Opens (creating if needed, with `replicas` replicas: the bus's
    /// `bus.nats.replicas`) the two buckets.
    pub async fn open(
        js: &jetstream::Context,
        window: Duration,
        session_max_age: Duration,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        let sessions = bucket(
            js,
            SESSIONS_BUCKET,
            "Confab: recoverable Socket.IO sessions by pid",
            session_max_age,
            replicas,
        )
        .await?;
        let gateways = bucket(
            js,
            GATEWAYS_BUCKET,
            "Confab: gateway liveness (last heartbeat, Unix ms)",
            window + Duration::from_secs(60),
            replicas,
        )
        .await?;
        Ok(Self { sessions, gateways })
    }
}

fn encode(record: &SessionRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

#[async_trait]
impl SessionStore for NatsSessions {
    async fn put(&self, pid: &str, record: &SessionRecord) -> Result<u64, StoreError> {
        self.sessions
            .put(pid, encode(record))
            .await
            .map_err(unavailable)
    }

    async fn update(
        &self,
        pid: &str,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, StoreError> {
        use kv::UpdateErrorKind;
        self.sessions
            .update(pid, encode(record), revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                _ => unavailable(e),
            })
    }

    async fn get(&self, pid: &str) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        let Some(entry) = self.sessions.entry(pid).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        match serde_json::from_slice::<SessionRecord>(&entry.value) {
            Ok(record) => Ok(Some((record, entry.revision))),
            Err(error) => {
                tracing::warn!(%error, "unreadable session record: treated as unknown");
                Ok(None)
            }
        }
    }

    async fn delete(&self, pid: &str) -> Result<(), StoreError> {
        self.sessions.delete(pid).await.map_err(unavailable)
    }

    async fn beat(&self, gateway: &str, now_ms: u64) -> Result<(), StoreError> {
        self.gateways
            .put(gateway, Bytes::from(now_ms.to_string()))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn last_beat(&self, gateway: &str) -> Result<Option<u64>, StoreError> {
        let entry = self.gateways.get(gateway).await.map_err(unavailable)?;
        Ok(entry.and_then(|v: Bytes| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    fn kind(&self) -> &'static str {
        "nats-kv"
    }
}
