//! Who is calling: the service token (app backends, other Confab
//! services) or a user's JWT.
//!
//! `Authorization: Bearer <token>`: when the token equals the configured
//! service token (compared in constant time) the caller is
//! [`Caller::Service`] and may name the user it acts for (`"actor"`);
//! otherwise the token is verified as a JWT by [`confab_auth::Verifier`] and
//! the caller is that user, with exactly the rights the membership
//! authority gives that user in each workspace (its role there). No claim
//! of a JWT makes a user trusted across workspaces: a token's `"admin"`
//! claim is ignored.

use std::sync::Arc;

use confab_auth::Verifier;
use confab_contracts::{ServiceToken, bearer};
use confab_events::UserId;

use crate::domain::Actor;
use confab_contracts::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The service token.
    Service,
    /// A user, by JWT.
    User {
        /// The token's subject.
        user: UserId,
    },
}

impl Caller {
    /// The actor of a command from this caller; `requested` is the body's
    /// `"actor"`, which only the service token may set (a user may repeat
    /// their own id).
    pub fn actor(&self, requested: Option<UserId>) -> Result<Actor, ApiError> {
        match self {
            Caller::Service => Ok(Actor::Service {
                on_behalf_of: requested,
            }),
            Caller::User { user } => {
                if let Some(other) = requested.filter(|r| r != user) {
                    return Err(ApiError::forbidden(format!(
                        "\"actor\" ({other}) can only be set with the service token; you are {user}"
                    )));
                }
                Ok(Actor::User(user.clone()))
            }
        }
    }

    /// Whether the caller is the service (an app backend), which may look
    /// at any user's rooms and any room's members. Users never are.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Caller::Service)
    }

    /// The calling user, for JWT callers.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Caller::Service => None,
            Caller::User { user } => Some(user),
        }
    }
}

/// Checks `Authorization` headers.
#[derive(Clone, Default)]
pub struct Authenticator {
    service_token: ServiceToken,
    verifier: Option<Arc<Verifier>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("service_token", &self.service_token)
            .field("jwt", &self.verifier.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Accepts the service token (when set) and JWTs (when a verifier is
    /// given).
    pub fn new(service_token: Option<String>, verifier: Option<Verifier>) -> Self {
        Self {
            service_token: ServiceToken::new(service_token),
            verifier: verifier.map(Arc::new),
        }
    }

    /// Whether `token` is the service token (compared in constant time).
    pub fn is_service_token(&self, token: &str) -> bool {
        self.service_token.matches(token)
    }

    /// The service token, for the NATS endpoints (which accept nothing
    /// else).
    pub fn service_token(&self) -> &ServiceToken {
        &self.service_token
    }

    /// The caller named by an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let token = bearer(authorization)?;
        if self.is_service_token(token) {
            return Ok(Caller::Service);
        }
        let Some(verifier) = &self.verifier else {
            return Err(ApiError::unauthorized(
                "the bearer token is not the service token (JWT callers are not enabled: configure [auth])",
            ));
        };
        match verifier.verify(token).await {
            Ok(claims) => Ok(Caller::User { user: claims.user }),
            Err(e) if e.is_server_error() => {
                tracing::error!(error = %e, "cannot verify a token");
                Err(ApiError::new("unavailable", e.public_message()))
            }
            Err(e) => Err(ApiError::unauthorized(e.public_message())),
        }
    }

    /// Checks that the header carries the service token (the NATS API
    /// accepts nothing else).
    pub fn require_service(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        self.service_token.check(authorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_token_and_actor_rules() {
        let auth = Authenticator::new(Some("s3cret-s3cret-s3cret-s3cret-0000".into()), None);
        assert_eq!(
            auth.authenticate(Some("Bearer s3cret-s3cret-s3cret-s3cret-0000"))
                .await
                .unwrap(),
            Caller::Service
        );
        for bad in [
            None,
            Some("s3cret"),
            Some("Bearer "),
            Some("Bearer nope"),
            Some("Basic x"),
        ] {
            let e = auth.authenticate(bad).await.unwrap_err();
            assert_eq!(e.0.code, "unauthorized", "{bad:?}");
        }
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let user = Caller::User {
            user: alice.clone(),
        };
        assert_eq!(user.actor(None).unwrap(), Actor::User(alice.clone()));
        assert_eq!(user.actor(Some(alice.clone())).unwrap(), Actor::User(alice));
        assert_eq!(
            user.actor(Some(bob.clone())).unwrap_err().0.code,
            "forbidden"
        );
        assert_eq!(
            Caller::Service.actor(Some(bob.clone())).unwrap(),
            Actor::Service {
                on_behalf_of: Some(bob)
            }
        );
        assert!(auth.is_service_token("s3cret-s3cret-s3cret-s3cret-0000"));
        assert!(!auth.is_service_token("s3cret-s3cret-s3cret-s3cret-0001"));
        assert!(!auth.is_service_token("s3cret"));
    }
}
