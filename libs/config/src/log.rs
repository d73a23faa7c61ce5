//! [`LogConfig`]: the `[log]` section every binary reads.

use confab_telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Logging settings (`[log]`); the level comes from `RUST_LOG`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` (default) or `json`.
    pub format: LogFormat,
}
