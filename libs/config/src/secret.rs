//! [`Secret`]: a configured credential that never shows up in logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A credential from the configuration (a token, a signing secret).
///
/// `Debug` and `Display` print `[redacted]`, so a configuration can be
/// logged whole. The value is read with [`Secret::expose`]. Serde reads
/// and writes the plain string: layered loading writes the defaults back
/// before the file and the environment are laid over them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (validation messages may say it; the value never).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown_but_serialized_as_is() {
        let s = Secret::from("hunter2-hunter2");
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(s.expose(), "hunter2-hunter2");
        assert_eq!(s.len(), 15);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2-hunter2\"");
        let back: Secret = serde_json::from_str("\"hunter2-hunter2\"").unwrap();
        assert_eq!(back, s);
    }
}
