//! Confab's wire contracts between processes, used by both sides of each
//! boundary.
//!
//! * [`membership`], [`messages`], [`presence`]: every service endpoint —
//!   its subject and its typed request and response — as an [`Endpoint`]
//!   (and the presence heartbeats as a [`Topic`]).
//! * [`gateway`]: polling requests forwarded to the gateway owning the
//!   session, on subjects of its id.
//! * [`ErrorBody`] `{"error":{"code","message","field"?}}`, the one error
//!   body, with its stable [`codes`] and their statuses ([`status_of`]).
//! * [`ServiceClient`]: the typed client (`call::<E>(&request)`): service
//!   token and W3C trace context in the headers, a bounded wait.
//! * [`EndpointServer`]: serves a service's [`Routes`] over NATS: bounded
//!   concurrency, a span per request under the caller's trace, the service
//!   token checked once, one error encoding.
//!
//! The socket-facing vocabulary (what browsers send and receive, with its
//! TypeScript) stays in `confab_events::socket`.
//!
//! # Adding an endpoint
//!
//! 1. Here: a unit struct implementing [`Endpoint`] (subject, request,
//!    response) in the module of its service, with the body types.
//! 2. The server: one [`Routes::route`] with the handler in the service's
//!    endpoint table (`services/membership/src/api_nats.rs`).
//! 3. The caller: [`ServiceClient::call`] with the endpoint.
//! 4. A test: through the real server (see `tests/server.rs`).

mod client;
mod endpoint;
mod error;
pub mod gateway;
pub mod membership;
pub mod messages;
pub mod presence;
mod routes;
mod server;
pub mod sockets;
mod token;

pub use client::{CallError, RPC_PATH_PREFIX, ServiceClient, decode_reply, rpc_path};
pub use endpoint::{Endpoint, Topic};
pub use error::{ApiError, ErrorBody, ErrorDetail, codes, status_of};
pub use routes::{Handler, Routes, with_state};
pub use server::{
    DEFAULT_MAX_IN_FLIGHT, EndpointServer, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER,
    ServerError, ServerSettings, encode,
};
pub use token::{
    AUTHORIZATION_HEADER, MIN_SERVICE_TOKEN_LEN, ServiceToken, bearer, service_token_problem,
};

/// The queue group every service instance serves its endpoints in, so
/// requests are load-balanced across instances.
pub const QUEUE_GROUP: &str = "q";
