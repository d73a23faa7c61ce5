//! What every scenario shares: targets, source addresses, tokens, the
//! handshake concurrency limit, the watched processes and the time bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;

use crate::client::{self, Session, Sources, Target};
use crate::conn::{Conn, Polling, TransportKind};
use crate::proc::Watch;

/// Options common to the client scenarios.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Servers (gateways or baseline processes), comma-separated, e.g.
    /// `ws://127.0.0.1:3301,ws://127.0.0.1:3302`; clients are spread over
    /// them round-robin.
    #[arg(long)]
    pub url: String,
    /// File holding the HS256 secret the servers verify tokens with.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// How many source addresses (127.0.0.2, 127.0.0.3, ...) to rotate over.
    #[arg(long, default_value_t = 64)]
    pub sources: u32,
    /// Index of the first source address (child processes use disjoint ones).
    #[arg(long, default_value_t = 0)]
    pub source_offset: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Longest one handshake may take, seconds.
    #[arg(long, default_value_t = 60)]
    pub handshake_timeout_secs: u64,
    /// Processes to report CPU and RSS of, `name=pid`, comma-separated or
    /// repeated (this process is always reported as `loadgen`).
    #[arg(long)]
    pub watch: Vec<String>,
    /// The system under test, echoed in the result (`confab`, `baseline`).
    #[arg(long, default_value = "confab")]
    pub label: String,
    /// Upper bound on the whole run, seconds.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
    /// The clients' transport (`fanout` and `idle`): `polling` is HTTP
    /// long-polling, never upgraded.
    #[arg(long, value_enum, default_value_t = TransportKind::Websocket)]
    pub transport: TransportKind,
}

/// The connection plan: where the `i`-th client connects from and to.
#[derive(Clone)]
pub struct Plan {
    /// Servers.
    pub targets: Arc<Vec<Target>>,
    /// Source addresses.
    pub sources: Sources,
    limit: Arc<Semaphore>,
    timeout: Duration,
    secret: Arc<String>,
    /// The clients' transport.
    pub transport: TransportKind,
}

impl Plan {
    /// Builds the plan from the common options.
    pub fn new(c: &Common) -> Result<Self> {
        let secret = std::fs::read_to_string(&c.secret_file)
            .with_context(|| format!("reading {}", c.secret_file.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            targets: Arc::new(Target::parse_list(&c.url)?),
            sources: Sources {
                offset: c.source_offset,
                count: c.sources,
            },
            limit: Arc::new(Semaphore::new(c.connect_concurrency.max(1))),
            timeout: Duration::from_secs(c.handshake_timeout_secs),
            secret: Arc::new(secret),
            transport: c.transport,
        })
    }

    /// The CONNECT auth payload of `user`: a fresh HS256 token (verified by
    /// both systems) and the rooms to join (read by the baseline; Confab
    /// asks its membership service instead).
    pub fn auth(&self, user: &str, rooms: &[String]) -> Result<String> {
        // The local cluster's issuer and audience (deploy/local/cluster.sh):
        // Confab's services require them; the baseline ignores them.
        let token = confab_auth::mint_hs256(
            &self.secret,
            user,
            Duration::from_secs(6 * 3600),
            Some("confab-local"),
            Some("confab-local"),
        )?;
        let rooms = serde_json::to_string(rooms)?;
        Ok(format!("{{\"token\":\"{token}\",\"rooms\":{rooms}}}"))
    }

    /// The server of the `i`-th client.
    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }

    /// Connects the `i`-th client to its server, at most
    /// `connect_concurrency` handshakes at a time.
    pub async fn connect(&self, i: usize, auth: &str) -> Result<Session> {
        self.connect_to(self.target(i), i, auth).await
    }

    /// Connects the `i`-th client to its server over the plan's transport.
    pub async fn open(&self, i: usize, auth: &str) -> Result<Conn> {
        if self.transport == TransportKind::Websocket {
            return Ok(self.connect(i, auth).await?.into());
        }
        let _permit = self.limit.acquire().await?;
        let open = Polling::connect(self.target(i), self.sources.addr(i), auth);
        let (polling, _, _) = tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| anyhow::anyhow!("handshake timed out after {:?}", self.timeout))??;
        Ok(Conn::Polling(Box::new(polling)))
    }

    /// Connects the `i`-th client to `target`.
    pub async fn connect_to(&self, target: &Target, i: usize, auth: &str) -> Result<Session> {
        let _permit = self.limit.acquire().await?;
        client::connect(target, self.sources.addr(i), auth, self.timeout).await
    }
}

/// The transport's name in results (`websocket`, `polling`).
pub fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Websocket => "websocket",
        TransportKind::Polling => "polling",
    }
}

/// The watched processes of the common options.
pub fn watches(c: &Common) -> Result<Vec<Watch>> {
    Watch::parse_list(&c.watch)
}

/// Runs `fut`, failing after the run's time bound.
pub async fn bounded<T>(c: &Common, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(c.max_secs), fut)
        .await
        .map_err(|_| anyhow::anyhow!("the run exceeded --max-secs {}", c.max_secs))?
}

/// A growable bit set of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// Sets bit `n`; returns whether it was set already.
    pub fn set(&mut self, n: u64) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        was
    }

    /// How many bits are set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many bits of `self` are not set in `other`.
    pub fn missing_from(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// The user, room and room index of the `i`-th client when clients are
/// grouped in rooms of `room_size`: user `{prefix}{room}x{member}` in
/// `channel:{prefix}c{room}` (what `setup` creates).
pub fn member(prefix: &str, i: usize, room_size: usize) -> (String, String, usize) {
    let (r, m) = (i / room_size, i % room_size);
    (
        format!("{prefix}{r}x{m}"),
        format!("channel:{prefix}c{r}"),
        r,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_count_what_is_missing() {
        let mut sent = Bits::default();
        let mut got = Bits::default();
        for n in [0, 5, 64, 200] {
            sent.set(n);
        }
        assert!(!got.set(5));
        assert!(got.set(5));
        got.set(200);
        assert_eq!(sent.count(), 4);
        assert_eq!(sent.missing_from(&got), 2);
    }

    #[test]
    fn members_are_grouped_by_room() {
        assert_eq!(
            member("f", 205, 100),
            ("f2x5".into(), "channel:fc2".into(), 2)
        );
    }
}
