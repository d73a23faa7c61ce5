//! Requests from the gateway to Confab services over NATS: the service
//! token and the W3C trace context in the headers, a bounded wait.
//! Shared by the membership, history and presence adapters.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

/// Why a request got no reply.
#[derive(Debug)]
pub enum RequestError {
    /// Nothing answered within the timeout.
    Timeout(Duration),
    /// NATS refused or failed (no responders, disconnected, ...).
    Failed(String),
}

/// A NATS client that speaks to Confab services as a service.
#[derive(Clone)]
pub struct ServiceClient {
    client: async_nats::Client,
    service_token: String,
    timeout: Duration,
}

impl ServiceClient {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client,
            service_token,
            timeout,
        }
    }

    /// `Authorization: Bearer <service token>` plus the current trace
    /// context.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Authorization",
            format!("Bearer {}", self.service_token).as_str(),
        );
        let mut trace: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut trace);
        for (k, v) in &trace {
            headers.insert(k.as_str(), v.as_str());
        }
        headers
    }

    /// Sends `body` as JSON to `subject` and returns the reply's payload.
    pub async fn request(
        &self,
        subject: &'static str,
        body: &impl Serialize,
    ) -> Result<Bytes, RequestError> {
        let payload = serde_json::to_vec(body).unwrap_or_default();
        match tokio::time::timeout(
            self.timeout,
            self.client
                .request_with_headers(subject, self.headers(), payload.into()),
        )
        .await
        {
            Err(_) => Err(RequestError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(RequestError::Failed(e.to_string())),
            Ok(Ok(reply)) => Ok(reply.payload),
        }
    }

    /// Publishes `body` as JSON to `subject` (no reply expected).
    pub async fn publish(
        &self,
        subject: &'static str,
        body: &impl Serialize,
    ) -> Result<(), String> {
        let payload = serde_json::to_vec(body).unwrap_or_default();
        self.client
            .publish_with_headers(subject, self.headers(), payload.into())
            .await
            .map_err(|e| e.to_string())
    }
}
