//! Integration tests for `confab-auth`, against real tokens, real keys and
//! a real JWKS HTTP server.

mod common;
mod extract;
mod hs256;
mod jwks;
mod session;
