//! [`EndpointServer`]: serves [`Routes`] as a NATS micro-service (`$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS` answer), every endpoint in [`QUEUE_GROUP`] so
//! instances share the load.
//!
//! Each request: its W3C trace context (`traceparent` / `tracestate`)
//! becomes the parent of a `nats.endpoint` span; the service token is
//! checked ([`ServiceToken::check`]); the handler runs, at most
//! [`ServerSettings::max_in_flight`] at once (more wait in the
//! subscription's buffer). The reply is the response JSON, or an
//! [`ErrorBody`](crate::ErrorBody) with the headers `Nats-Service-Error`
//! (the message) and `Nats-Service-Error-Code` (the HTTP status).

use std::future::Future;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::QUEUE_GROUP;
use crate::client::to_json;
use crate::error::ApiError;
use crate::routes::{Route, Routes};
use crate::token::{AUTHORIZATION_HEADER, ServiceToken};

/// Requests a server handles at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// The header naming a refusal (its message).
pub const SERVICE_ERROR_HEADER: &str = "Nats-Service-Error";
/// The header carrying a refusal's HTTP status.
pub const SERVICE_ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// A failure to start an [`EndpointServer`].
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// NATS refused the service or one of its endpoints.
    #[error("cannot register {what}: {reason}")]
    Register {
        /// The service or endpoint.
        what: String,
        /// What NATS said.
        reason: String,
    },
    /// Two routes claim the same subject.
    #[error("two endpoints on {0}")]
    Duplicate(&'static str),
}

/// How a server presents itself and how much it takes at once.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    name: String,
    version: String,
    description: String,
    max_in_flight: usize,
}

impl ServerSettings {
    /// A micro-service `name` at `version`, [`DEFAULT_MAX_IN_FLIGHT`].
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Sets the description `$SRV.INFO` shows.
    pub fn description(mut self, description: &str) -> Self {
        description.clone_into(&mut self.description);
        self
    }

    /// Sets how many requests are handled at once (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

/// A registered server, answering once [`serve`](Self::serve) runs.
pub struct EndpointServer {
    service: async_nats::service::Service,
    requests: SelectAll<BoxStream<'static, (Arc<Route>, Request)>>,
    token: ServiceToken,
    max_in_flight: usize,
}

impl std::fmt::Debug for EndpointServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointServer")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl EndpointServer {
    /// Registers the service and every route on `client`; callers must
    /// present `token`. When this returns, requests are queued for
    /// [`serve`](Self::serve).
    pub async fn start(
        client: async_nats::Client,
        settings: ServerSettings,
        token: ServiceToken,
        routes: Routes,
    ) -> Result<Self, ServerError> {
        if let Some(subject) = routes.duplicate() {
            return Err(ServerError::Duplicate(subject));
        }
        let service = client
            .service_builder()
            .description(&settings.description)
            .queue_group(QUEUE_GROUP)
            .start(&settings.name, &settings.version)
            .await
            .map_err(|e| ServerError::Register {
                what: format!("service {}", settings.name),
                reason: e.to_string(),
            })?;
        let mut requests = SelectAll::new();
        for route in routes.into_routes() {
            let endpoint =
                service
                    .endpoint(route.subject)
                    .await
                    .map_err(|e| ServerError::Register {
                        what: format!("endpoint {}", route.subject),
                        reason: e.to_string(),
                    })?;
            let route = Arc::new(route);
            requests.push(
                endpoint
                    .map(move |request| (Arc::clone(&route), request))
                    .boxed(),
            );
        }
        Ok(Self {
            service,
            requests,
            token,
            max_in_flight: settings.max_in_flight,
        })
    }

    /// Serves requests until `shutdown` completes, then stops the service
    /// and lets the requests being handled answer.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) {
        let limit = Arc::new(Semaphore::new(self.max_in_flight));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let next = tokio::select! {
                () = &mut shutdown => break,
                next = self.requests.next() => next,
            };
            let Some((route, request)) = next else {
                tracing::warn!("NATS endpoints closed");
                break;
            };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            let token = self.token.clone();
            tokio::spawn(async move {
                handle(&route, request, &token).await;
                drop(permit);
            });
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "cannot stop the NATS service cleanly");
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ = limit.acquire_many(all).await;
    }
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

async fn handle(route: &Route, request: Request, token: &ServiceToken) {
    let headers = request.message.headers.as_ref();
    let span = tracing::info_span!(
        "nats.endpoint",
        otel.kind = "server",
        endpoint = route.subject,
        error.code = tracing::field::Empty,
    );
    let trace: Vec<(String, String)> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| header(headers, k).map(|v| ((*k).to_owned(), v.to_owned())))
        .collect();
    confab_telemetry::set_parent_from(&span, &trace);
    async {
        let result = match token.check(header(headers, AUTHORIZATION_HEADER)) {
            Ok(()) => route.run(&request.message.payload).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::Span::current().record("error.code", e.0.code.as_str());
        }
        let (body, headers) = encode(result);
        if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
            tracing::warn!(error = %e, "cannot send a NATS reply");
        }
    }
    .instrument(span)
    .await
}

/// The one reply encoding: the response as it is, or the error body with
/// the two error headers.
pub fn encode(result: Result<Bytes, ApiError>) -> (Bytes, HeaderMap) {
    match result {
        Ok(body) => (body, HeaderMap::new()),
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(SERVICE_ERROR_HEADER, header_safe(&e.0.message).as_str());
            h.insert(SERVICE_ERROR_CODE_HEADER, e.status().to_string().as_str());
            (to_json(&e.body()), h)
        }
    }
}

/// A header value: no control characters, at most 200 characters.
fn header_safe(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_body_and_both_headers() {
        let (body, headers) = encode(Err(ApiError::unauthorized("bad\ntoken")));
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"unauthorized","message":"bad\ntoken"}}"#
        );
        assert_eq!(
            headers.get(SERVICE_ERROR_HEADER).map(|v| v.as_str()),
            Some("bad token")
        );
        assert_eq!(
            headers.get(SERVICE_ERROR_CODE_HEADER).map(|v| v.as_str()),
            Some("401")
        );
        let (body, headers) = encode(Ok(Bytes::from_static(b"{}")));
        assert_eq!(&body[..], b"{}");
        assert!(headers.is_empty());
        assert_eq!(header_safe(&"x".repeat(300)).len(), 200);
    }
}
