//! Configuration for every Confab binary (`confab-gateway`,
//! `confab-membership`, the all-in-one `confab`).
//!
//! * [`Loader`]: defaults, then an optional TOML file (`--config FILE` or
//!   `CONFAB_CONFIG`), then `CONFAB_*` environment variables with `__`
//!   between sections (`CONFAB_ENGINE__PING_INTERVAL` sets
//!   `engine.ping_interval`). Only variables that name a key of the
//!   binary's configuration are read; the others are ignored and logged as
//!   a warning at start ([`Loaded::warn_ignored`]). Unknown keys in a file
//!   are an error.
//! * [`ConfigError`]: every problem names the key (and where the value came
//!   from) and says why.
//! * [`duration`]: the one duration grammar (`"250ms"`, `"30s"`, `"1m30s"`,
//!   `"1h"`); fields use `#[serde(with = "confab_config::duration")]`.
//! * [`Secret`]: credentials that `Debug` and `Display` never show.
//! * [`redact_url`]: URLs without their credentials, for logs and errors.
//! * [`LogConfig`]: the `[log]` section.

pub mod duration;
mod env;
mod error;
mod loader;
mod log;
mod redact;
mod secret;

pub use duration::DurationError;
pub use env::{CONFIG_FILE_ENV, ENV_PREFIX, env_name};
pub use error::ConfigError;
pub use loader::{Loaded, Loader};
pub use log::LogConfig;
pub use redact::redact_url;
pub use secret::Secret;
