//! [`RedisConfig`]: the Redis bus settings as found in a service's config
//! file (durations in the shared grammar of [`confab_config::duration`],
//! URLs shown through [`confab_config::redact_url`]).

use std::fmt;
use std::time::Duration;

use confab_config::redact_url;
use serde::{Deserialize, Serialize};

use crate::BusError;
use crate::nats::RECOVERY_WINDOW;

/// Settings of the Redis bus, as found in a service's config file.
///
/// ```toml
/// [bus.redis]
/// url = "redis://:secret@redis-1:6379/0"
/// prefix = "confab"
/// rooms_max_age = "24h"
/// duplicate_window = "2m"
/// wait_aof = true
/// ```
///
/// Every field has a default; unknown fields are refused.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0` (`rediss://` for TLS is
    /// not built in). Credentials in the URL are used but never shown in
    /// status or logs. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// The hash tag every key of the bus lives under: keys are
    /// `{prefix}:…` (braces included), so one Lua script may touch all of
    /// them on Redis Cluster. The whole log is therefore on ONE slot (one
    /// primary): Redis Cluster gives it failover, not sharding. Two
    /// deployments sharing a Redis use two prefixes. Default `confab`.
    pub prefix: String,
    /// How long room events are kept (`XTRIM MINID` by a periodic pass).
    /// At least [`RECOVERY_WINDOW`] (2 minutes). Default 24 hours.
    #[serde(with = "confab_config::duration")]
    pub rooms_max_age: Duration,
    /// De-duplication window: a second publish with the same `msg_id`
    /// within it stores nothing and answers the first sequence. More than
    /// zero, at most `rooms_max_age`. Default 2 minutes.
    #[serde(with = "confab_config::duration")]
    pub duplicate_window: Duration,
    /// Wait, after each durable publish, until the event is fsynced to the
    /// AOF of the primary (`WAITAOF 1 0`): an ack then survives a crash of
    /// the Redis host. Needs Redis 7.2+ with `appendonly yes`; refused at
    /// connect otherwise. With `false` (default) an ack means "in Redis'
    /// memory": with AOF off, or `appendfsync everysec`, acked events can be
    /// lost on a crash (about a second's worth with `everysec`).
    pub wait_aof: bool,
    /// Live messages buffered per subscription before the bus drops (and
    /// later repairs from the room's stream) them. Default 65 536.
    pub subscription_capacity: usize,
    /// How often the retention pass trims the streams. Default 1 minute.
    #[serde(with = "confab_config::duration")]
    pub trim_interval: Duration,
    /// User rooms share one pattern subscription per process
    /// (`{prefix}:live:user:*`: every process then receives every user
    /// room's messages) instead of one channel subscription per connected
    /// user. Default true.
    pub shared_user_rooms: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "confab".into(),
            rooms_max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            wait_aof: false,
            subscription_capacity: 64 * 1024,
            trim_interval: Duration::from_secs(60),
            shared_user_rooms: true,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("rooms_max_age", &self.rooms_max_age)
            .field("duplicate_window", &self.duplicate_window)
            .field("wait_aof", &self.wait_aof)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("trim_interval", &self.trim_interval)
            .field("shared_user_rooms", &self.shared_user_rooms)
            .finish()
    }
}

impl RedisConfig {
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
            return Err(BusError::Config("redis url is empty".into()));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !prefix_ok {
            return Err(BusError::Config(format!(
                "redis prefix {:?} must be non-empty ASCII letters, digits, '-', '_', '.' or ':'",
                self.prefix
            )));
        }
        if self.rooms_max_age < RECOVERY_WINDOW {
            return Err(BusError::Config(format!(
                "rooms_max_age is {:?}, but room events must be kept at least {:?} (the recovery window)",
                self.rooms_max_age, RECOVERY_WINDOW
            )));
        }
        if self.duplicate_window.as_millis() == 0 || self.duplicate_window > self.rooms_max_age {
            return Err(BusError::Config(format!(
                "duplicate_window is {:?}; it must be at least 1ms and at most rooms_max_age ({:?})",
                self.duplicate_window, self.rooms_max_age
            )));
        }
        if self.subscription_capacity == 0 {
            return Err(BusError::Config(
                "subscription_capacity must be at least 1".into(),
            ));
        }
        if self.trim_interval.is_zero() {
            return Err(BusError::Config(
                "trim_interval must be more than zero".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_redaction() {
        let cfg: RedisConfig =
            serde_json::from_str(r#"{"url":"redis://:pw@h:1","wait_aof":true}"#).unwrap();
        assert!(cfg.wait_aof);
        assert_eq!(cfg.prefix, "confab");
        assert!(cfg.validate().is_ok());
        assert!(!format!("{cfg:?}").contains("pw"));
        assert!(serde_json::from_str::<RedisConfig>(r#"{"urll":"x"}"#).is_err());
        let bad = |f: fn(&mut RedisConfig)| {
            let mut c = RedisConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.prefix = "{x}".into()));
        assert!(bad(|c| c.rooms_max_age = Duration::from_secs(60)));
        assert!(bad(|c| c.duplicate_window = Duration::ZERO));
        assert!(bad(|c| c.url = " ".into()));
    }
}
