//! [`Endpoint`] ties a subject to its request and response types, so the
//! client ([`crate::ServiceClient::call`]) and the server
//! ([`crate::Routes::route`]) cannot disagree; [`Topic`] does the same for
//! publishes nobody answers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A request/reply endpoint: one subject, one request type, one response
/// type. Implemented by a unit struct per endpoint (e.g.
/// [`crate::membership::RoomsOf`]).
pub trait Endpoint: Send + Sync + 'static {
    /// The NATS subject, e.g. `confab.membership.v1.rooms_of`.
    const SUBJECT: &'static str;
    /// The request body (JSON).
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The answer body (JSON); a refusal is an [`crate::ErrorBody`] instead.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// The refusal of a body that is not a [`Self::Request`]: `invalid`
    /// naming the field `body`, unless the endpoint's callers expect
    /// another code.
    fn malformed(error: &serde_json::Error) -> ApiError {
        ApiError::invalid("body", error.to_string())
    }
}

/// A subject messages are published on without a reply (core NATS), with
/// its body type.
pub trait Topic: Send + Sync + 'static {
    /// The NATS subject.
    const SUBJECT: &'static str;
    /// The body (JSON).
    type Message: Serialize + DeserializeOwned + Send + Sync + 'static;
}
