//! The one error body of every service call: `{"error":{"code","message",
//! "field"?}}`, its stable codes and their HTTP statuses.

use serde::{Deserialize, Serialize};

/// The stable snake_case error codes. The HTTP status of each (also sent
/// as `Nats-Service-Error-Code`) is [`status_of`].
pub mod codes {
    /// The request is malformed; `field` names the input at fault (400).
    pub const INVALID: &str = "invalid";
    /// A malformed request of the messages and presence calls, which
    /// answer with the socket-facing code (400).
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// A message body is empty or too large (400).
    pub const INVALID_BODY: &str = "invalid_body";
    /// No or a wrong credential (401).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The caller may not do this (403).
    pub const FORBIDDEN: &str = "forbidden";
    /// No such thing (404).
    pub const NOT_FOUND: &str = "not_found";
    /// The thing to create exists already (409).
    pub const ALREADY_EXISTS: &str = "already_exists";
    /// The channel is archived (409).
    pub const ARCHIVED: &str = "archived";
    /// A user who must be a member is not (409).
    pub const NOT_A_MEMBER: &str = "not_a_member";
    /// A concurrent change won; retry (409).
    pub const CONFLICT: &str = "conflict";
    /// The user already created as many workspaces or channels as their
    /// quota allows (403).
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    /// The body is larger than allowed (413).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// A dependency is down; retrying later may work (503).
    pub const UNAVAILABLE: &str = "unavailable";
    /// A bug or an unexpected failure (500).
    pub const INTERNAL: &str = "internal";
}

/// The HTTP status of an error code (also sent as `Nats-Service-Error-Code`);
/// unknown codes are 500.
pub fn status_of(code: &str) -> u16 {
    match code {
        codes::INVALID | codes::INVALID_REQUEST | codes::INVALID_BODY => 400,
        codes::UNAUTHORIZED => 401,
        codes::FORBIDDEN | codes::QUOTA_EXCEEDED => 403,
        codes::NOT_FOUND => 404,
        codes::ALREADY_EXISTS | codes::ARCHIVED | codes::NOT_A_MEMBER | codes::CONFLICT => 409,
        codes::PAYLOAD_TOO_LARGE => 413,
        codes::UNAVAILABLE => 503,
        _ => 500,
    }
}

/// The error body of every API: `{"error":{"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An API error as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorDetail {
    /// Stable machine code (see [`codes`]).
    pub code: String,
    /// What went wrong, for a developer.
    pub message: String,
    /// The input field at fault, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorDetail {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            field: None,
        }
    }
}

/// An error as a service answers it: the result type of every endpoint
/// handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0)]
pub struct ApiError(pub ErrorDetail);

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self(ErrorDetail::new(code, message))
    }

    /// `invalid`, naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self(ErrorDetail {
            field: Some(field.to_owned()),
            ..ErrorDetail::new(codes::INVALID, message)
        })
    }

    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(codes::UNAUTHORIZED, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(codes::FORBIDDEN, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        status_of(&self.0.code)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.0.clone(),
        }
    }
}

impl From<ErrorDetail> for ApiError {
    fn from(detail: ErrorDetail) -> Self {
        Self(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_statuses_are_stable() {
        assert_eq!(status_of(codes::NOT_A_MEMBER), 409);
        assert_eq!(status_of(codes::INVALID_REQUEST), 400);
        assert_eq!(status_of("something_new"), 500);
        let e = ApiError::invalid("event", "event: bad");
        assert_eq!(e.status(), 400);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":{"code":"invalid","message":"event: bad","field":"event"}}"#
        );
        assert_eq!(
            serde_json::to_string(&ApiError::unauthorized("no").body()).unwrap(),
            r#"{"error":{"code":"unauthorized","message":"no"}}"#
        );
    }
}
