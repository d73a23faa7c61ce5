//! Sessions in NATS KV, shared by every gateway of a cluster.
//!
//! Two buckets: `CONFAB_SESSIONS` (one entry per pid, history 1) and
//! `CONFAB_GATEWAYS` (one liveness entry per gateway, written every
//! `recovery.heartbeat`, expiring `window + 1 min` after the last write).
//! Reads are direct gets: no consumers.
//!
//! A session record lives as [`Expiry`] says: a live socket's for the
//! bucket's `max_age` (`recovery.session_max_age`), a dropped one's for the
//! window plus [`CLOSED_GRACE`], by a per-message TTL (`Nats-TTL`, which
//! needs the stream's `allow_msg_ttl`, nats-server 2.11+: set on the bucket
//! when it is opened, also on a bucket made by an older release). A
//! deliberate disconnect purges the key's messages from the stream (a
//! JetStream purge filtered on its subject): no delete marker is left
//! behind, so closed sessions leave nothing in the bucket. On a server
//! without per-message TTLs dropped records stay `session_max_age` (a
//! warning says so at start).
//!
//! [`CLOSED_GRACE`]: super::CLOSED_GRACE

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;

use super::{Expiry, SessionRecord, SessionStore, StoreError};

/// The KV bucket of session records.
pub const SESSIONS_BUCKET: &str = "CONFAB_SESSIONS";
/// The KV bucket of gateway liveness records.
pub const GATEWAYS_BUCKET: &str = "CONFAB_GATEWAYS";

/// Session records in NATS KV.
pub struct NatsSessions {
    js: jetstream::Context,
    sessions: kv::Store,
    gateways: kv::Store,
    expiry: Expiry,
    /// The sessions stream accepts `Nats-TTL` (`allow_msg_ttl`).
    ttl: bool,
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
        let ttl = allow_message_ttl(js, &sessions).await;
        if !ttl {
            tracing::warn!(
                "the NATS server does not take per-message TTLs (nats-server 2.11+): records of dropped sessions stay recovery.session_max_age instead of the window"
            );
        }
        Ok(Self {
            js: js.clone(),
            sessions,
            gateways,
            expiry: Expiry {
                window,
                session_max_age,
            },
            ttl,
        })
    }

    fn subject(&self, pid: &str) -> String {
        let prefix = self
            .sessions
            .put_prefix
            .as_deref()
            .unwrap_or(&self.sessions.prefix);
        format!("{prefix}{pid}")
    }
}

/// Turns on per-message TTLs on the sessions stream (once: a setting that
/// cannot be turned off again). `false` when the server cannot do it.
async fn allow_message_ttl(js: &jetstream::Context, store: &kv::Store) -> bool {
    let info = match store.stream.get_info().await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "cannot read the sessions stream's configuration");
            return false;
        }
    };
    if info.config.allow_message_ttl {
        return true;
    }
    let config = jetstream::stream::Config {
        allow_message_ttl: true,
        ..info.config
    };
    match js.update_stream(&config).await {
        // A server older than 2.11 ignores the field.
        Ok(info) => info.config.allow_message_ttl,
        Err(error) => {
            tracing::warn!(%error, "cannot allow per-message TTLs on the sessions stream");
            false
        }
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
        let ttl = self.expiry.of(record);
        if !self.ttl || ttl >= self.expiry.session_max_age {
            return self
                .sessions
                .update(pid, encode(record), revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                    _ => unavailable(e),
                });
        }
        // What `kv::Store::update` publishes, plus the record's TTL (whole
        // seconds, rounded up).
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            revision.to_string().as_str(),
        );
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            secs.max(1).to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(self.subject(pid), headers, encode(record))
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
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
        // A purge of the key's subject, not a KV delete: a delete marker
        // would stay `session_max_age`, one per ended session.
        self.sessions
            .stream
            .purge()
            .filter(self.subject(pid))
            .await
            .map(|_| ())
            .map_err(unavailable)
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
