#!/usr/bin/env bash
# Ad-hoc measurement (debug binaries): the bench's publish scenario with the
# server default sync_interval and with `always`, on the just-up cluster.
set -euo pipefail
ROOT=/work/wt/fuzz
export CARGO_TARGET_DIR=/work/wt/fuzz-target CONFAB_BUILD_PROFILE=debug
OUT="${1:?out dir}"; mkdir -p "$OUT"
RUN="$(mktemp -d /tmp/confab-dur.XXXXXX)"; export CONFAB_RUN_DIR="$RUN"
LG="$CARGO_TARGET_DIR/debug/confab-loadgen"
up() {
  CONFAB_NATS_PORT=4650 CONFAB_NATS_MONITOR_PORT=8650 CONFAB_MEMBERSHIP_PORT=3650 \
    CONFAB_GATEWAY_PORTS="3651 3652" CONFAB_GATEWAY_CONFIG="$ROOT/bench/gateway.toml" RUST_LOG=warn \
    bash "$ROOT/deploy/local/cluster.sh" up >>"$OUT/cluster.log" 2>&1
}
trap 'bash "$ROOT/deploy/local/cluster.sh" down >>"$OUT/cluster.log" 2>&1; rm -rf "$RUN"' EXIT
up
"$LG" setup --api http://127.0.0.1:3650 --service-token-file "$RUN/service-token" --prefix p --rooms 50 --room-size 1 >>"$OUT/setup.log"
pub() { "$LG" publish --publishers 50 --window 4 --secs 10 --prefix p --url ws://127.0.0.1:3651 \
  --secret-file "$RUN/jwt-secret" --label "$1" 2>>"$OUT/loadgen.log" | tail -n 1 >>"$OUT/results.jsonl"; sleep 3; }
for round in 1 2; do
  pub "confab-r$round"
  bash "$ROOT/deploy/local/cluster.sh" down >>"$OUT/cluster.log" 2>&1
  CONFAB_NATS_SYNC=always up
  curl -s http://127.0.0.1:8650/varz | python3 -c 'import json,sys; print("sync_always:", json.load(sys.stdin)["jetstream"]["config"].get("sync_always"))' >>"$OUT/cluster.log"
  pub "confab-sync-always-r$round"
  bash "$ROOT/deploy/local/cluster.sh" down >>"$OUT/cluster.log" 2>&1
  up
done
