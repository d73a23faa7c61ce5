//! Gateway to gateway: the polling requests one gateway forwards to the
//! gateway that owns the session (no sticky sessions behind a load
//! balancer).
//!
//! Every gateway answers on subjects of its own id, outside any queue
//! group: `confab.gateway.v1.{gateway}.poll` (a GET) and
//! `confab.gateway.v1.{gateway}.post` (a POST). The id comes from a sid
//! a client sent, so it is checked by [`GatewayName::parse`] before it
//! becomes a subject token. Requests carry `Authorization: Bearer <service
//! token>` when one is configured.
//!
//! A forwarded GET is confirmed: the request names a `control` subject
//! (the forwarder's inbox) on which the forwarder publishes [`ACK`] once
//! it has the reply, or [`CANCEL`] when its client went away. The owner
//! keeps the packets it answered with until [`ACK`] arrives and puts them
//! back for the next GET otherwise (core NATS is at-most-once).

use serde::{Deserialize, Serialize};

/// The subject prefix of gateway-to-gateway requests.
pub const PREFIX: &str = "confab.gateway.v1";

/// The forwarder has the reply to a forwarded GET: the owner may drop
/// the packets it sent.
pub const ACK: &[u8] = b"ack";

/// The forwarder's client went away: the owner releases its held GET (or
/// puts back the packets it answered with).
pub const CANCEL: &[u8] = b"cancel";

/// A gateway id fit to be a subject token: 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayName<'a>(&'a str);

impl<'a> GatewayName<'a> {
    /// The id, when it is fit to be a subject token.
    pub fn parse(id: &'a str) -> Option<Self> {
        let fits = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        fits.then_some(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Where this gateway answers forwarded GETs.
    pub fn poll_subject(&self) -> String {
        format!("{PREFIX}.{}.poll", self.0)
    }

    /// Where this gateway answers forwarded POSTs.
    pub fn post_subject(&self) -> String {
        format!("{PREFIX}.{}.post", self.0)
    }
}

/// Whether `subject` may be a [`PollRequest::control`]: an inbox-like
/// subject without wildcards or spaces.
pub fn valid_control(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 256
        && subject
            .split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">")
        && !subject
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'*' || b == b'>')
}

/// A forwarded GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    /// The session.
    pub sid: String,
    /// Where the forwarder publishes [`ACK`] or [`CANCEL`].
    pub control: String,
}

/// A forwarded POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRequest {
    /// The session.
    pub sid: String,
    /// The POST body (an Engine.IO v4 payload is text).
    pub body: String,
}

/// Why the owner refused a forwarded request (its HTTP answer follows
/// from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No such session.
    UnknownSid,
    /// The session moved to WebSocket, or the request does not fit it.
    BadRequest,
    /// A second GET while one was held: the session ended.
    Overlap,
    /// A POST body over `maxPayload`.
    TooLarge,
    /// A POST body that is not a valid payload: the session ended.
    Malformed,
    /// The service token was missing or wrong.
    Unauthorized,
}

/// The owner's answer to a forwarded GET or POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollAnswer {
    /// A GET's payload (to be confirmed with [`ACK`]).
    Payload(String),
    /// A POST's packets reached the connection.
    Ok,
    /// Refused.
    Refused(Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_become_subject_tokens() {
        let gw = GatewayName::parse("gw-00ff").unwrap();
        assert_eq!(gw.poll_subject(), "confab.gateway.v1.gw-00ff.poll");
        assert_eq!(gw.post_subject(), "confab.gateway.v1.gw-00ff.post");
        for bad in ["", "a.b", "*", ">", "a b", "gw\n", &"x".repeat(65)] {
            assert!(GatewayName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn control_subjects_have_no_wildcards() {
        assert!(valid_control("_INBOX.abc.def"));
        for bad in ["", "_INBOX.*", "_INBOX.>", "a..b", "a b"] {
            assert!(!valid_control(bad), "{bad:?}");
        }
    }

    #[test]
    fn answers_round_trip() {
        for a in [
            PollAnswer::Payload("4hi".into()),
            PollAnswer::Ok,
            PollAnswer::Refused(Refusal::UnknownSid),
        ] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<PollAnswer>(&json).unwrap(), a);
        }
    }
}
