//! Fuzz target `decode`: the oracle in `oracles/decode.rs` (shared with the
//! regression test `libs/protocol/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../oracles/decode.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
