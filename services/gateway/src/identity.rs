//! The gateway's identity: one id per process, made once at start.
//!
//! The same id names the gateway in session records and liveness
//! (recovery), in presence heartbeats (the tracker's entries), in every log
//! line (the `gateway` span field) and in `/readyz`, so that all four can
//! be matched.

use std::fmt;
use std::sync::Arc;

/// This gateway's id, `gw-` and 16 random hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GatewayId(Arc<str>);

impl GatewayId {
    /// A new random id (a restarted gateway is a new gateway: its old
    /// sessions count from its last heartbeat).
    pub(crate) fn random() -> Self {
        Self(format!("gw-{:016x}", rand::random::<u64>()).into())
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
impl From<&str> for GatewayId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let (a, b) = (GatewayId::random(), GatewayId::random());
        assert!(
            a.as_str().starts_with("gw-") && a.as_str().len() == 19,
            "{a}"
        );
        assert_ne!(a, b);
    }
}
