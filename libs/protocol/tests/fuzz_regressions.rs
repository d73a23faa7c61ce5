//! Replays the kept fuzz inputs through the fuzz targets' own oracles, so a
//! decoder regression on any of them fails the normal `cargo test`.
//!
//! Inputs: `fuzz/seeds/<target>/` (hand-written) and
//! `fuzz/regressions/<target>/` (the minimized corpus of the fuzz runs and
//! every crash reproducer, see `fuzz/README.md`).

use std::path::{Path, PathBuf};

#[path = "../fuzz/oracles/decode.rs"]
mod decode;
#[path = "../fuzz/oracles/polling.rs"]
mod polling;

/// Every file of the target's seed and regression directories.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
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
    files
}

/// Runs `check` on every input; names the inputs that panicked.
fn replay(target: &str, min: usize, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= min,
        "{target}: {} inputs, expected at least {min} (fuzz/seeds, fuzz/regressions)",
        files.len()
    );
    let failed: Vec<_> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).expect("readable input");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "{target}: oracle failed on {failed:?}");
}

#[test]
fn decode_corpus_and_crashes_replay_clean() {
    replay("decode", 40, decode::check);
}

#[test]
fn polling_corpus_and_crashes_replay_clean() {
    replay("polling", 5, polling::check);
}
