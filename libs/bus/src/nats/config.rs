//! [`NatsConfig`]: the NATS bus settings as found in a service's config
//! file (durations in the shared grammar of [`confab_config::duration`],
//! URLs shown through [`confab_config::redact_url`]).
//!
//! Kept apart from the bus so that the settings can be read, validated and
//! shown (without credentials) before anything connects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use confab_config::{Secret, redact_url};
use serde::{Deserialize, Serialize};

use crate::BusError;

/// How far back clients may ask to recover missed room events; stored room
/// events must be kept at least this long ([`NatsConfig::rooms_max_age`]).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// Settings of the NATS bus, as found in a service's config file.
///
/// Durations are strings with units, as everywhere in Confab's
/// configuration: `"500ms"`, `"90s"`, `"2m"`, `"24h"`, `"1m30s"`. Every
/// field has a default; unknown fields are refused.
///
/// ```toml
/// [bus.nats]
/// url = "nats://nats-1:4222,nats://nats-2:4222"
/// rooms_max_age = "24h"
/// duplicate_window = "2m"
/// name = "confab-gateway-1"
/// # credentials: at most one of credentials_file, user + password, token
/// credentials_file = "/etc/confab/nats/gateway.creds"
/// tls_ca_file = "/etc/confab/nats/ca.pem"
/// ```
///
/// Secrets (`password`, `token`) belong in the environment
/// (`CONFAB_BUS__NATS__PASSWORD`, `CONFAB_NATS__TOKEN`, ...) and are never
/// shown by `Debug`, in status or in logs.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    /// Credentials in the URL (`nats://user:pass@host:4222`) are used but
    /// never shown in status or logs. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long stream `ROOMS` keeps room events. At least
    /// [`RECOVERY_WINDOW`] (2 minutes). Default 24 hours.
    #[serde(with = "confab_config::duration")]
    pub rooms_max_age: Duration,
    /// JetStream de-duplication window of both streams: a second publish with
    /// the same `msg_id` within it is dropped. At most `rooms_max_age`.
    /// Default 2 minutes.
    #[serde(with = "confab_config::duration")]
    pub duplicate_window: Duration,
    /// Client connection name, shown by the server's monitoring
    /// (`/connz`). Default `confab`.
    pub name: String,
    /// Replicas in a JetStream cluster (1 to 5) of the streams (`ROOMS`;
    /// the membership service's `MEMBERSHIP`) and of the gateways' recovery
    /// KV buckets. Default 1; 3 on a 3-node cluster.
    pub replicas: usize,
    /// Messages buffered per room subscription before the client drops
    /// (and the bus later repairs) them. Default 65 536.
    pub subscription_capacity: usize,
    /// Whether user rooms (`user:{id}`, one per connected user) share one
    /// wildcard subscription, `rooms.user.*`, instead of a NATS
    /// subscription each. Shared: ~5.5 KB less per connected user, but
    /// every process receives every user room's events (membership
    /// changes, notifications), which suits their low traffic. Default
    /// `true`.
    pub shared_user_rooms: bool,
    /// Serve [`Bus::replay`](crate::Bus::replay) with batched JetStream direct gets: no consumer
    /// per replay. Needs nats-server 2.11+ and a stream `ROOMS` with one
    /// replica (direct gets may be answered by a replica that lags behind);
    /// otherwise, or with `false`, each replay reads through an ordered
    /// consumer. Default `true`.
    pub direct_replay: bool,
    /// Most replays that read through a JetStream consumer at once on this
    /// connection (later ones wait): the bound on recovery consumers. Not
    /// read from configuration files: the gateway sets it from
    /// `recovery.max_concurrent_replays`. Default 16.
    #[serde(skip)]
    pub max_replay_consumers: usize,
    /// A NATS credentials file (a user JWT and its NKey seed, as `nsc`
    /// writes it) for servers with decentralized auth. Default none.
    pub credentials_file: Option<PathBuf>,
    /// User name, with [`password`](Self::password). Default none.
    pub user: Option<String>,
    /// Password of [`user`](Self::user). Default none.
    pub password: Option<Secret>,
    /// Authentication token (the server's `authorization { token }`).
    /// Default none.
    pub token: Option<Secret>,
    /// PEM file of the CA(s) that sign the servers' certificates; set, the
    /// connection must use TLS. Default none (the system roots, and TLS
    /// only for `tls://` URLs or servers that require it).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with
    /// [`tls_key_file`](Self::tls_key_file)). Default none.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of [`tls_cert_file`](Self::tls_cert_file). Default
    /// none.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            rooms_max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            name: "confab".into(),
            replicas: 1,
            subscription_capacity: 64 * 1024,
            shared_user_rooms: true,
            direct_replay: true,
            max_replay_consumers: 16,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("rooms_max_age", &self.rooms_max_age)
            .field("duplicate_window", &self.duplicate_window)
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("shared_user_rooms", &self.shared_user_rooms)
            .field("direct_replay", &self.direct_replay)
            .field("max_replay_consumers", &self.max_replay_consumers)
            .field("credentials_file", &self.credentials_file)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

impl NatsConfig {
    /// A default configuration for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks the settings without connecting.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.url.trim().is_empty() {
            return Err(BusError::Config("nats url is empty".into()));
        }
        if self.rooms_max_age < RECOVERY_WINDOW {
            return Err(BusError::Config(format!(
                "rooms_max_age is {:?}, but room events must be kept at least {:?} (the recovery window)",
                self.rooms_max_age, RECOVERY_WINDOW
            )));
        }
        if self.duplicate_window.is_zero() || self.duplicate_window > self.rooms_max_age {
            return Err(BusError::Config(format!(
                "duplicate_window is {:?}; it must be more than zero and at most rooms_max_age ({:?})",
                self.duplicate_window, self.rooms_max_age
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(BusError::Config(format!(
                "replicas is {}; JetStream allows 1 to 5",
                self.replicas
            )));
        }
        if self.subscription_capacity == 0 {
            return Err(BusError::Config(
                "subscription_capacity must be at least 1".into(),
            ));
        }
        if self.max_replay_consumers == 0 {
            return Err(BusError::Config(
                "max_replay_consumers must be at least 1".into(),
            ));
        }
        self.validate_credentials()
    }

    /// At most one way to authenticate, each complete; TLS files paired.
    fn validate_credentials(&self) -> Result<(), BusError> {
        let empty = |s: &Option<Secret>| s.as_ref().is_some_and(Secret::is_empty);
        if empty(&self.password) || empty(&self.token) {
            return Err(BusError::Config(
                "password / token is set but empty; unset it or give the value".into(),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(BusError::Config(
                "user and password go together: set both (the password in the environment) or neither"
                    .into(),
            ));
        }
        let ways = [
            self.credentials_file.is_some(),
            self.user.is_some(),
            self.token.is_some(),
            self.url_has_credentials(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(BusError::Config(
                "more than one NATS credential is set (credentials_file, user/password, token, \
                 or credentials in url): keep exactly one"
                    .into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(BusError::Config(
                "tls_cert_file and tls_key_file go together: set both for a client certificate"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether a server URL carries user info (`nats://user:pass@host`,
    /// `nats://token@host`).
    fn url_has_credentials(&self) -> bool {
        self.url.split(',').any(|url| {
            let url = url.trim();
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let authority = rest.find(['/', '?']).map_or(rest, |end| &rest[..end]);
            authority.contains('@')
        })
    }

    /// Whether the connection must use TLS (a CA or client certificate is
    /// configured).
    pub(crate) fn requires_tls(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_with_defaults() {
        let cfg: NatsConfig = serde_json::from_str(
            r#"{"url":"nats://h:4222","rooms_max_age":"48h","duplicate_window":"60s"}"#,
        )
        .unwrap();
        assert_eq!(cfg.url, "nats://h:4222");
        assert_eq!(cfg.rooms_max_age, Duration::from_secs(48 * 3600));
        assert_eq!(cfg.duplicate_window, Duration::from_secs(60));
        assert_eq!(cfg.name, "confab");
        assert!(cfg.validate().is_ok());
        let cfg: NatsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.rooms_max_age, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.duplicate_window, Duration::from_secs(120));
        assert!(serde_json::from_str::<NatsConfig>(r#"{"rooms_max_age":"soon"}"#).is_err());
        assert!(serde_json::from_str::<NatsConfig>(r#"{"ur1":"nats://typo"}"#).is_err());
        assert!(cfg.direct_replay);
        assert_eq!(cfg.max_replay_consumers, 16);
        let off: NatsConfig = serde_json::from_str(r#"{"direct_replay":false}"#).unwrap();
        assert!(!off.direct_replay);
        // The consumer bound comes from the gateway's recovery settings,
        // never from the bus section of a file.
        assert!(serde_json::from_str::<NatsConfig>(r#"{"max_replay_consumers":3}"#).is_err());

        // Written back, it reads the same (config layering serializes
        // defaults).
        let cfg = NatsConfig {
            duplicate_window: Duration::from_millis(1500),
            ..NatsConfig::new("nats://u:p@h:1")
        };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains(r#""rooms_max_age":"24h""#), "{text}");
        assert!(text.contains(r#""duplicate_window":"1s500ms""#), "{text}");
        let back: NatsConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.url, cfg.url);
        assert_eq!(back.rooms_max_age, cfg.rooms_max_age);
        assert_eq!(back.duplicate_window, cfg.duplicate_window);
    }

    #[test]
    fn config_validation() {
        let short = NatsConfig {
            rooms_max_age: Duration::from_secs(60),
            ..NatsConfig::default()
        };
        assert!(matches!(short.validate(), Err(BusError::Config(_))));
        let window = NatsConfig {
            duplicate_window: Duration::ZERO,
            ..NatsConfig::default()
        };
        assert!(window.validate().is_err());
        let window = NatsConfig {
            rooms_max_age: RECOVERY_WINDOW,
            duplicate_window: RECOVERY_WINDOW * 2,
            ..NatsConfig::default()
        };
        assert!(window.validate().is_err());
        assert!(NatsConfig::new("").validate().is_err());
        let none = NatsConfig {
            max_replay_consumers: 0,
            ..NatsConfig::default()
        };
        assert!(none.validate().is_err());
        assert!(NatsConfig::default().validate().is_ok());
    }

    #[test]
    fn credentials_are_one_way_complete_and_never_shown() {
        let with = |f: &dyn Fn(&mut NatsConfig)| {
            let mut c = NatsConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(with(&|c| c.token = Some("t0ken-t0ken".into())).is_ok());
        assert!(
            with(&|c| {
                c.user = Some("gw".into());
                c.password = Some("pw-pw-pw".into());
            })
            .is_ok()
        );
        assert!(
            with(&|c| c.user = Some("gw".into())).is_err(),
            "no password"
        );
        assert!(
            with(&|c| c.password = Some("pw".into())).is_err(),
            "no user"
        );
        assert!(with(&|c| c.token = Some("".into())).is_err(), "empty");
        let two = with(&|c| {
            c.token = Some("t".into());
            c.credentials_file = Some("/x.creds".into());
        });
        assert!(two.unwrap_err().to_string().contains("exactly one"));
        assert!(
            with(&|c| {
                c.url = "nats://u:p@h:4222".into();
                c.token = Some("t".into());
            })
            .is_err()
        );
        assert!(
            with(&|c| {
                c.url = "nats://a:4222, nats://b:4222".into();
                c.token = Some("t".into());
            })
            .is_ok(),
            "a server list without user info is no credential"
        );
        assert!(with(&|c| c.tls_cert_file = Some("/c.pem".into())).is_err());
        assert!(
            with(&|c| {
                c.tls_cert_file = Some("/c.pem".into());
                c.tls_key_file = Some("/k.pem".into());
            })
            .is_ok()
        );

        let cfg: NatsConfig =
            serde_json::from_str(r#"{"user":"gw","password":"hunter2-secret","token":null}"#)
                .unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"gw\""), "{shown}");
        let cfg = NatsConfig {
            token: Some("s3cr3t-token".into()),
            ..NatsConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact_url("nats://tok@a:1, nats://b:2"),
            "nats://***@a:1,nats://b:2"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        let shown = format!("{:?}", NatsConfig::new("nats://u:secret@h:1"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
