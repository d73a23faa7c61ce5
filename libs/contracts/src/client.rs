//! [`ServiceClient`]: calls Confab service endpoints as a service, over
//! NATS request/reply or over HTTP (`POST {base}/v1/rpc/{subject}`, the
//! membership service's endpoint table on a deployment without NATS), with
//! the service token and the W3C trace context in the headers and a
//! bounded wait.

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
    /// NATS or HTTP refused or failed (no responders, disconnected, a
    /// server error without an error body, ...).
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
    transport: Transport,
    authorization: Arc<str>,
    timeout: Duration,
}

/// Where calls go.
#[derive(Clone)]
enum Transport {
    Nats(async_nats::Client),
    /// `base` without a trailing `/`, e.g. `http://membership:3100`.
    Http {
        client: reqwest::Client,
        base: Arc<str>,
    },
}

/// The HTTP path of endpoint `subject` on a service that serves its
/// endpoint table over HTTP: `/v1/rpc/{subject}`.
pub fn rpc_path(subject: &str) -> String {
    format!("{RPC_PATH_PREFIX}{subject}")
}

/// The prefix of [`rpc_path`].
pub const RPC_PATH_PREFIX: &str = "/v1/rpc/";

/// Largest HTTP answer a call reads (a bigger one is refused, never
/// buffered whole).
const MAX_HTTP_REPLY: usize = 8 * 1024 * 1024;

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
            transport: Transport::Nats(client),
            authorization: Arc::from(format!("Bearer {service_token}")),
            timeout,
        }
    }

    /// A client calling the service at `base_url` (e.g.
    /// `http://127.0.0.1:3100`) over HTTP: each call is `POST
    /// {base_url}/v1/rpc/{subject}` with the request as its JSON body
    /// ([`rpc_path`]). Topics cannot be published over HTTP.
    pub fn http(base_url: &str, service_token: &str, timeout: Duration) -> Self {
        Self {
            transport: Transport::Http {
                client: reqwest::Client::builder()
                    .connect_timeout(timeout)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_default(),
                base: Arc::from(base_url.trim_end_matches('/')),
            },
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
        let client = match &self.transport {
            Transport::Nats(client) => client,
            Transport::Http { client, base } => {
                let url = format!("{base}{}", rpc_path(E::SUBJECT));
                let payload = tokio::time::timeout(self.timeout, self.post(client, &url, body))
                    .await
                    .map_err(|_| CallError::Timeout(self.timeout))??;
                return decode_reply(&payload);
            }
        };
        let reply = tokio::time::timeout(
            self.timeout,
            client.request_with_headers(E::SUBJECT, self.headers(), body.into()),
        )
        .await
        .map_err(|_| CallError::Timeout(self.timeout))?
        .map_err(|e| CallError::Unavailable(e.to_string()))?;
        decode_reply(&reply.payload)
    }

    /// One HTTP call: the answer's body (at most [`MAX_HTTP_REPLY`]
    /// bytes). A refusal comes as an error body with a 4xx/5xx status and
    /// is decoded like any answer; a body that is not JSON with a failure
    /// status is `Unavailable`.
    async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let mut trace: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut trace);
        let mut request = client
            .post(url)
            .header(AUTHORIZATION_HEADER, &*self.authorization)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in &trace {
            request = request.header(k.as_str(), v.as_str());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| CallError::Unavailable(format!("{url}: {}", e.without_url())))?;
        let status = response.status();
        let mut payload = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallError::Unavailable(format!("{url}: {}", e.without_url())))?
        {
            if payload.len() + chunk.len() > MAX_HTTP_REPLY {
                return Err(CallError::Decode(format!(
                    "{url}: answer larger than {MAX_HTTP_REPLY} bytes"
                )));
            }
            payload.extend_from_slice(&chunk);
        }
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok();
        if !status.is_success() && !is_json {
            return Err(CallError::Unavailable(format!("{url}: HTTP {status}")));
        }
        Ok(payload)
    }

    /// Publishes `message` on `T`'s subject (no answer expected); NATS
    /// only.
    pub async fn publish<T: Topic>(&self, message: &T::Message) -> Result<(), CallError> {
        let body = serde_json::to_vec(message).map_err(|e| CallError::Decode(e.to_string()))?;
        let Transport::Nats(client) = &self.transport else {
            return Err(CallError::Unavailable(format!(
                "{} is a topic: it cannot be published over HTTP",
                T::SUBJECT
            )));
        };
        client
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
