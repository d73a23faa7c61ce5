//! [`ConfigError`]: why a configuration cannot be used, naming the key.

use std::path::PathBuf;

/// A configuration that cannot be used. Every message names the key to fix
/// (or the file) and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file does not exist or is not valid TOML.
    #[error("configuration: file {}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A key has a value of the wrong form, or a file names an unknown key.
    #[error("configuration: {key}: {problem} ({origin})")]
    Value {
        /// The key, e.g. `engine.ping_interval`.
        key: String,
        /// Where the value came from: `in /etc/confab/gateway.toml`,
        /// `environment variable CONFAB_ENGINE__PING_INTERVAL`, `defaults`.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("configuration: {key}: {problem}")]
    Invalid {
        /// The key, e.g. `recovery.window`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    /// A value out of range or inconsistent: `key` and what is wrong.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The key the error is about (`None` for a file that cannot be read).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::File { .. } => None,
            Self::Value { key, .. } | Self::Invalid { key, .. } => Some(key),
        }
    }
}
