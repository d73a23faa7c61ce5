//! The membership APIs' wire contract as this service answers it. Every
//! endpoint, body and the error shape live in
//! [`confab_contracts::membership`] (the `execute` body, [`Command`], too);
//! here are only the conversions of the service's own results into them.
//!
//! # NATS request/reply
//!
//! Service `confab-membership` (NATS micro-service API: `$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS` work), queue group `q`, one endpoint per
//! subject in [`confab_contracts::membership::subjects`], served by
//! [`crate::api_nats`]. Every request carries the header `Authorization:
//! Bearer <service token>` and a JSON body; W3C `traceparent` /
//! `tracestate` headers are honoured. The reply is the response JSON, or
//! [`ErrorBody`](confab_contracts::ErrorBody) `{"error":{"code","message"}}`
//! with the headers `Nats-Service-Error` / `Nats-Service-Error-Code` (the
//! HTTP status) set. Other services call it with
//! [`confab_contracts::ServiceClient`].
//!
//! # Error codes
//!
//! [`ErrorDetail::code`](confab_contracts::ErrorDetail::code) is one of:
//! `invalid` (400), `unauthorized` (401), `forbidden`, `quota_exceeded`
//! (403), `not_found`
//! (404), `already_exists`, `archived`, `not_a_member`, `conflict` (409),
//! `payload_too_large` (413), `unavailable` (503), `internal` (500).
//! [`status_of`](confab_contracts::status_of) maps them.
//!
//! [`Command`]: confab_contracts::membership::Command

pub use confab_contracts::ApiError;
use confab_contracts::membership::ExecuteResponse;

use crate::service::{Outcome, ServiceError};

impl From<Outcome> for ExecuteResponse {
    fn from(o: Outcome) -> Self {
        Self {
            seq: o.seq,
            event: o.event,
            projected: o.projected,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e.field() {
            Some(field) => Self::invalid(field, message),
            None => Self::new(e.code(), message),
        }
    }
}

#[cfg(test)]
mod tests {
    use confab_contracts::membership::IsMemberResponse;
    use confab_contracts::{CallError, decode_reply, status_of};

    use super::*;

    #[test]
    fn service_errors_keep_their_code_and_field() {
        assert_eq!(status_of("not_a_member"), 409);
        let e = ApiError::from(ServiceError::Invalid {
            field: "event",
            message: "bad".into(),
        });
        assert_eq!(e.status(), 400);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":{"code":"invalid","message":"event: bad","field":"event"}}"#
        );
        let err = decode_reply::<IsMemberResponse>(
            br#"{"error":{"code":"unauthorized","message":"no"}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, CallError::Refused(d) if d.code == "unauthorized"));
    }
}
