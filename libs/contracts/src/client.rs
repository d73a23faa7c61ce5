//! [`ServiceClient`]: calls Confab service endpoints over NATS as a
//! service, with the service token and the W3C trace context in the
//! headers and a bounded wait.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::{Endpoint, Topic};
use crate::error::{ErrorBody, ErrorDetail};
use crate::token::AUTHORIZATION_HEADER;

/// Why a call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Nothing answered within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// NATS refused or failed (no responders, disconnected, ...).
    #[error("{0}")]
    Unavailable(String),
    /// The service answered with an error body.
    #[error("refused: {0}")]
    Refused(ErrorDetail),
    /// The request could not be encoded or the answer read.
    #[error("bad reply: {0}")]
    Decode(String),
}

/// A NATS client that calls Confab services as a service.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) -> Result<(), confab_contracts::CallError> {
/// use confab_contracts::ServiceClient;
/// use confab_contracts::membership::{RoomsOf, RoomsOfRequest};
/// let client = ServiceClient::new(nats, "the-service-token", std::time::Duration::from_secs(5));
/// let user = confab_events::UserId::parse("alice").unwrap();
/// let rooms = client.call::<RoomsOf>(&RoomsOfRequest { user }).await?.rooms;
/// # let _ = rooms; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    client: async_nats::Client,
    authorization: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client on an existing NATS connection, presenting `service_token`;
    /// calls give up after `timeout`.
    pub fn new(client: async_nats::Client, service_token: &str, timeout: Duration) -> Self {
        Self {
            client,
            authorization: Arc::from(format!("Bearer {service_token}")),
            timeout,
        }
    }

    /// The same client with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a call waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls `E` and decodes its answer: the response, or
    /// [`CallError::Refused`] with the service's error.
    pub async fn call<E: Endpoint>(&self, request: &E::Request) -> Result<E::Response, CallError> {
        let body = serde_json::to_vec(request).map_err(|e| CallError::Decode(e.to_string()))?;
        let reply = tokio::time::timeout(
            self.timeout,
            self.client
                .request_with_headers(E::SUBJECT, self.headers(), body.into()),
        )
        .await
        .map_err(|_| CallError::Timeout(self.timeout))?
        .map_err(|e| CallError::Unavailable(e.to_string()))?;
        decode_reply(&reply.payload)
    }

    /// Publishes `message` on `T`'s subject (no answer expected).
    pub async fn publish<T: Topic>(&self, message: &T::Message) -> Result<(), CallError> {
        let body = serde_json::to_vec(message).map_err(|e| CallError::Decode(e.to_string()))?;
        self.client
            .publish_with_headers(T::SUBJECT, self.headers(), body.into())
            .await
            .map_err(|e| CallError::Unavailable(e.to_string()))
    }

    /// `Authorization: Bearer <service token>` plus the current trace
    /// context.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION_HEADER, &*self.authorization);
        let mut trace: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut trace);
        for (k, v) in &trace {
            headers.insert(k.as_str(), v.as_str());
        }
        headers
    }
}

/// Decodes a reply body: the response, or [`CallError::Refused`] for an
/// [`ErrorBody`].
pub fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CallError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| CallError::Decode(e.to_string()))?;
    if value.get("error").is_some_and(|e| e.get("code").is_some()) {
        let body: ErrorBody =
            serde_json::from_value(value).map_err(|e| CallError::Decode(e.to_string()))?;
        return Err(CallError::Refused(body.error));
    }
    serde_json::from_value(value).map_err(|e| CallError::Decode(e.to_string()))
}

/// Encodes a value as JSON; a type that cannot be encoded (a map with
/// non-string keys) gives `{}`, never a panic.
pub(crate) fn to_json<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).map_or_else(|_| bytes::Bytes::from_static(b"{}"), bytes::Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::IsMemberResponse;

    #[test]
    fn replies_decode_to_values_or_errors() {
        let ok: IsMemberResponse =
            decode_reply(br#"{"user":"a","room":"channel:1","member":true}"#).unwrap();
        assert!(ok.member);
        let err = decode_reply::<IsMemberResponse>(
            br#"{"error":{"code":"unauthorized","message":"no"}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, CallError::Refused(d) if d.code == "unauthorized"));
        let err = decode_reply::<IsMemberResponse>(b"not json").unwrap_err();
        assert!(matches!(err, CallError::Decode(_)));
    }
}
