//! Fuzz target `jwt`: the oracle in `oracles/jwt.rs` (shared with the
//! regression test `libs/auth/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../oracles/jwt.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
