//! Fuzz target `polling`: the oracle in `oracles/polling.rs` (shared with
//! the regression test `libs/protocol/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../oracles/polling.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
