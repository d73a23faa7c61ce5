#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 60), one
# after the other. Behind `just fuzz` and the short fuzz step of .ci/run.
#
#   .ci/fuzz.sh [SECONDS]
#
# Targets: libs/protocol/fuzz (decode: Engine.IO/Socket.IO decoders;
# polling: a client's long-polling POST body) and libs/auth/fuzz (jwt: JWT
# header and claims through the verifier). Each starts from its committed
# inputs (seeds/<target>, regressions/<target>) and grows the git-ignored
# corpus/<target>. A crash stops the run (exit status != 0) and leaves its
# input in <fuzz dir>/artifacts/<target>/: fix it, then add the input to
# regressions/<target>/ (the normal `cargo test` replays it, see
# libs/*/tests/fuzz_regressions.rs). Builds with RUSTC_BOOTSTRAP=1 on the
# stable toolchain (cargo-fuzz needs nightly flags), into
# $CARGO_TARGET_DIR/fuzz-*; installs cargo-fuzz when it is missing.
set -euo pipefail
SECS="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_BASE="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_BASE" in /*) ;; *) TARGET_BASE="$ROOT/$TARGET_BASE" ;; esac

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

fuzz() { # dir target dict
  local dir="$1" target="$2" dict="$3"
  printf '\n--> fuzz %s/%s for %s s\n' "$dir" "$target" "$SECS"
  (
    cd "$ROOT/$dir"
    mkdir -p "corpus/$target" "regressions/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --target-dir "$TARGET_BASE/fuzz-${dir//\//-}" \
      "corpus/$target" "seeds/$target" "regressions/$target" -- \
      -dict="$dict" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  )
}

fuzz libs/protocol/fuzz decode decode.dict
fuzz libs/protocol/fuzz polling decode.dict
fuzz libs/auth/fuzz jwt jwt.dict
