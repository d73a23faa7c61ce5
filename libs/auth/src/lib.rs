//! JWT verification for the Confab gateway's Socket.IO handshake.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo(auth: Option<&serde_json::Value>, headers: &http::HeaderMap) {
//! use confab_auth::{AuthConfig, Verifier};
//!
//! let verifier = Verifier::new(AuthConfig::dev()).expect("valid auth config");
//! match verifier.authenticate(auth, headers).await {
//!     Ok((claims, _source)) => println!("hello {}", claims.user.as_str()),
//!     // `code()` for metrics labels, `public_message()` for the client,
//!     // `Display` for logs.
//!     Err(e) => eprintln!("refused [{}]: {e}", e.code()),
//! }
//! # }
//! ```
//!
//! # What is checked
//!
//! 1. **Shape**: a compact JWS (`header.payload.signature`), at most
//!    [`MAX_TOKEN_BYTES`]; a header with `crit` is refused.
//! 2. **Algorithm**: the header's `alg` must be in
//!    [`AuthConfig::algorithms`]; `none` never is. The algorithm then decides
//!    the key: HMAC algorithms use only `hs256_secret`; asymmetric ones use
//!    only public keys from the JWKS, and only a key whose type (and curve,
//!    and own `alg` if it declares one) fits. Symmetric (`oct`) JWKS entries
//!    are ignored, so an HS256 token can never be checked against a public
//!    key, and an RS256 token never against the secret.
//! 3. **Signature**, with the chosen key (by `kid`; without a `kid`, every
//!    fitting JWKS key is tried).
//! 4. **Claims**: `exp` required and in the future; `nbf` in the past if
//!    present (both with `leeway`); `iss` and `aud` when configured;
//!    `sub` must be a valid [`confab_events::UserId`].
//!
//! # JWKS cache
//!
//! Fetched on first use (or [`Verifier::refresh_jwks`]). A token whose `kid`
//! is unknown triggers one refetch, since the issuer may have rotated keys;
//! every fetch, whatever its cause, is at least `jwks_min_refetch` after the
//! previous one finished, so a flood of made-up kids costs the JWKS endpoint
//! at most one request per interval. Concurrent misses share a single
//! fetch. Once the set is older than `jwks_max_age` it is refreshed in the
//! background while the old set stays in use, and a failed refresh keeps the
//! old set. Each request times out after [`JWKS_FETCH_TIMEOUT`]; responses
//! over [`MAX_JWKS_BYTES`] are refused.
//!
//! # Token sources
//!
//! See [`extract_token`]: the Socket.IO CONNECT auth payload `{"token"}`,
//! then `Authorization: Bearer`, then the configured cookie. A token that
//! came from a cookie is sent by browsers on cross-site requests too, so the
//! gateway must check the `Origin` of such handshakes.
//!
//! # Errors
//!
//! [`AuthError::code`] returns one of [`ERROR_CODES`]: `missing_token`,
//! `malformed_token`, `token_expired`, `token_not_yet_valid`,
//! `bad_signature`, `algorithm_not_allowed`, `key_mismatch`, `wrong_issuer`,
//! `wrong_audience`, `unknown_kid`, `jwks_unavailable`, `missing_claim`,
//! `invalid_claim`, `missing_sub`, `invalid_sub`.

mod claims;
mod config;
mod error;
mod extract;
mod hmac;
mod jwks;
mod mint;
pub mod session;
mod verifier;

pub use claims::Claims;
pub use config::{AuthConfig, ConfigError, MAX_LEEWAY};
pub use error::{AuthError, ERROR_CODES};
pub use extract::{TokenSource, extract_token, extract_token_with_source};
pub use hmac::{DEV_SECRET, MIN_SECRET_LEN};
/// The JWT algorithm type used in [`AuthConfig::algorithms`] (re-exported
/// from `jsonwebtoken` so callers need not depend on it).
pub use jsonwebtoken::Algorithm;
pub use jwks::{JWKS_FETCH_TIMEOUT, MAX_JWKS_BYTES};
pub use mint::{MintError, mint_hs256, mint_hs256_with_claims};
pub use verifier::{MAX_TOKEN_BYTES, Verifier};
