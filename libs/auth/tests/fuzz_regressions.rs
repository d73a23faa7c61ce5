//! Replays the kept fuzz inputs of the `jwt` target through its own oracle
//! (`fuzz/oracles/jwt.rs`), so a regression in JWT header or claims
//! handling on any of them fails the normal `cargo test`.
//!
//! Inputs: `fuzz/seeds/jwt/` (hand-written) and `fuzz/regressions/jwt/`
//! (the minimized corpus of the fuzz runs and every crash reproducer).

use std::path::Path;

#[path = "../fuzz/oracles/jwt.rs"]
mod jwt;

#[test]
fn jwt_corpus_and_crashes_replay_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("jwt")) else {
            continue;
        };
        for e in entries {
            let path = e.expect("readable directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 8, "only {} jwt inputs", files.len());
    let failed: Vec<_> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).expect("readable input");
            std::panic::catch_unwind(|| jwt::check(&data)).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "oracle failed on {failed:?}");
}

/// The oracle is not vacuous: the valid seed is accepted, so the accepted
/// branch (claims equal the signed document, forged signature refused) runs.
#[test]
fn the_valid_seed_passes_verification() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/jwt/valid-hs256");
    let data = std::fs::read(seed).expect("seed");
    let i = data
        .iter()
        .position(|&b| b == 0)
        .expect("header NUL claims");
    assert!(jwt::accepted(&data[..i], &data[i + 1..]));
}
