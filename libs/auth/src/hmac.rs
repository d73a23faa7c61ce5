//! HMAC secrets: the shortest accepted, and the public one of the dev setup.
//! Both the configuration and dev-token minting check against them.

/// Shortest HMAC secret accepted, in bytes (RFC 7518 §3.2 asks for a key at
/// least as long as the hash output: 256 bits for HS256).
pub const MIN_SECRET_LEN: usize = 32;

/// **DEVELOPMENT ONLY.** The HS256 secret of the all-in-one dev setup
/// ([`AuthConfig::dev`](crate::AuthConfig::dev)). It is public (it is in
/// this source file), so anyone can mint tokens for it: a production
/// deployment must configure its own secret or a JWKS. The verifier logs a
/// warning when it is configured.
pub const DEV_SECRET: &str = "confab-dev-secret-change-me-0123456789abcdef";
