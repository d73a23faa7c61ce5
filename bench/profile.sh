#!/usr/bin/env bash
# Profiles for the benchmark report (where the time and the memory go):
#
#   bench/profile.sh OUT_DIR
#
# With the benchmark cluster of bench/run.sh (started here, stopped at the
# end):
#  1. CPU: `perf record -e cpu-clock` (software clock: hardware counters are
#     not available on every VM) of gateway-1 and of the load generator during
#     a fan-out at a fixed rate (PROFILE_RATE msg/s, 10,000 clients, rooms of
#     100), and of membership (its history projection), then `perf report`:
#     perf-gateway.txt, perf-membership.txt, perf-loadgen.txt.
#  2. Memory: an extra gateway under heaptrack holding PROFILE_IDLE idle
#     connections: heaptrack-gateway.txt (peak memory by allocation site).
#
#   bench/profile.sh attach OUT_DIR SECS name=pid,name=pid,...
#
# records running processes instead (bench/run.sh does, for each system at
# its saturation step, and for Confab's handshakes, durable publish and mass
# recovery): `perf record -e cpu-clock -g` of each for SECS seconds, then
# perf-NAME.txt (the symbols above 1.5 % of its samples).
#
#   bench/profile.sh heap OUT_DIR CONNECTIONS NATS_PORT PORT
#
# is step 2 alone against a cluster that runs already (bench/run.sh's, after
# its idle scenario): a gateway on PORT under heaptrack, on the cluster's
# NATS, holding CONNECTIONS idle WebSocket connections; heaptrack-gateway.txt.
set -euo pipefail

# perf report of one recording into perf-NAME.txt; the raw data is removed.
perf_text() { # out name
  perf report -i "$1/perf-$2.data" --no-children --sort symbol --percent-limit 1.5 --stdio 2>/dev/null |
    grep -v '^$' | grep -E '^ +[0-9]' | head -n 40 >"$1/perf-$2.txt" || true
  rm -f "$1/perf-$2.data"
}

# perf (linux-perf on Debian) is installed when missing and apt-get can
# (root), as .ci/run installs its tools; otherwise the profile is skipped
# with a message saying so, and the benchmark goes on without it.
have_perf() {
  if ! command -v perf >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "profile.sh: installing perf (apt-get install linux-perf)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; } >&2 || true
  fi
  if ! command -v perf >/dev/null 2>&1; then
    echo "profile.sh: perf is not installed (apt-get install linux-perf): no CPU profile" >&2
    return 1
  fi
  # perf_event_paranoid > 1 forbids attaching to other processes for non-root users.
  if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)" -gt 1 ]; then
    echo "profile.sh: kernel.perf_event_paranoid > 1 and not root: no CPU profile (sysctl kernel.perf_event_paranoid=1)" >&2
    return 1
  fi
}

# heaptrack, installed like perf when missing.
have_heaptrack() {
  if ! command -v heaptrack >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "profile.sh: installing heaptrack (apt-get install heaptrack)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq heaptrack; } >&2 || true
  fi
  command -v heaptrack >/dev/null 2>&1 && command -v heaptrack_print >/dev/null 2>&1 || {
    echo "profile.sh: heaptrack is not installed (apt-get install heaptrack): no memory profile" >&2
    return 1
  }
}

# A gateway under heaptrack on the cluster of $RUN (NATS on nats_port),
# holding idle connections, then heaptrack-gateway.txt: the summary
# (peak heap, peak RSS) and the peak memory by allocation site.
heap_profile() { # out connections nats_port port
  local out="$1" n="$2" nats_port="$3" port="$4" f
  (
    for v in $(compgen -e); do [[ "$v" == CONFAB_* ]] && unset "$v"; done
    export CONFAB_LISTEN="127.0.0.1:$port" CONFAB_BUS__KIND=nats \
      CONFAB_BUS__NATS__URL="nats://127.0.0.1:$nats_port" CONFAB_BUS__NATS__NAME=gateway-heap \
      CONFAB_MEMBERSHIP__KIND=nats CONFAB_SERVICE_TOKEN="$(cat "$RUN/service-token")" \
      CONFAB_AUTH__HS256_SECRET="$(cat "$RUN/jwt-secret")" CONFAB_CONFIG="$BENCH/gateway.toml" \
      CONFAB_AUTH__ISSUER=confab-local CONFAB_AUTH__AUDIENCE=confab-local \
      CONFAB_BUS__NATS__USER=confab-gateway CONFAB_BUS__NATS__PASSWORD="$(cat "$RUN/nats-gateway-password")" RUST_LOG=warn
    exec heaptrack -o "$out/heaptrack-gateway" "$CARGO_TARGET_DIR/release/confab-gateway"
  ) >>"$out/profile.log" 2>&1 &
  HEAP_PID=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { say "the heaptrack gateway did not get ready"; return 1; }
    sleep 0.5
  done
  "$LOADGEN" idle --connections "$n" --hold-secs 3 --prefix h --url "ws://127.0.0.1:$port" \
    --secret-file "$RUN/jwt-secret" --label confab-heaptrack >"$out/profile-idle.json" 2>>"$out/profile.log"
  # heaptrack's wrapper runs the gateway as its child: stop the gateway itself.
  pkill -TERM -P "$HEAP_PID" 2>/dev/null || kill -TERM "$HEAP_PID"
  wait "$HEAP_PID" 2>/dev/null || true
  HEAP_PID=""
  f="$(ls "$out"/heaptrack-gateway*.zst "$out"/heaptrack-gateway*.gz 2>/dev/null | head -n 1 || true)"
  heaptrack_print -f "$f" --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
    --peak-limit 12 --sub-peak-limit 2 2>/dev/null >"$out/heaptrack-gateway.txt" || true
  # The memory held at the peak by call site (report.py's heap_sites): the
  # peak-cost stacks, summed by their nearest frames in named source files.
  heaptrack_print -f "$f" --flamegraph-cost-type peak -F "$out/heaptrack-stacks.txt" >/dev/null 2>&1 &&
    python3 "$BENCH/report.py" --heap-sites "$out/heaptrack-stacks.txt" >"$out/heaptrack-sites.txt" || true
  rm -f "$out/heaptrack-stacks.txt"
  [ -n "${PROFILE_KEEP_HEAP:-}" ] || rm -f "$f"
}

say() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADGEN="$CARGO_TARGET_DIR/release/confab-loadgen"
RUN="$ROOT/.run"
HEAP_PID=""

if [ "${1:-}" = heap ]; then
  OUT="$(mkdir -p "$2" && cd "$2" && pwd)"
  if ! have_heaptrack; then
    echo "no memory profile: heaptrack unavailable" >"$OUT/heaptrack-unavailable.txt"
    exit 0
  fi
  trap '[ -z "$HEAP_PID" ] || kill -TERM "$HEAP_PID" 2>/dev/null' EXIT
  say "memory profile: $3 idle connections to a gateway under heaptrack"
  heap_profile "$OUT" "$3" "$4" "$5"
  exit 0
fi

if [ "${1:-}" = attach ]; then
  if ! have_perf; then
    mkdir -p "$2" && echo "no CPU profile: perf unavailable (see loadgen.log)" >"$2/perf-unavailable.txt"
    exit 0
  fi
  OUT="$(mkdir -p "$2" && cd "$2" && pwd)" SECS="$3"
  NAMES=()
  IFS=, read -r -a PAIRS <<<"$4"
  for kv in "${PAIRS[@]}"; do
    name="${kv%%=*}" pid="${kv#*=}"
    kill -0 "$pid" 2>/dev/null || continue
    perf record -e cpu-clock -F 499 -g -p "$pid" -o "$OUT/perf-$name.data" -- sleep "$SECS" \
      >>"$OUT/perf.log" 2>&1 &
    NAMES+=("$name")
  done
  wait
  for name in "${NAMES[@]}"; do perf_text "$OUT" "$name"; done
  exit 0
fi

OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
RATE="${PROFILE_RATE:-400}"
IDLE="${PROFILE_IDLE:-5000}"
NATS_PORT=4350 HEAP_PORT=3357
cleanup() {
  set +e
  [ -n "$HEAP_PID" ] && kill -TERM "$HEAP_PID" 2>/dev/null
  bash "$ROOT/deploy/local/cluster.sh" down >&2
}
trap cleanup EXIT

CONFAB_NATS_PORT=$NATS_PORT CONFAB_NATS_MONITOR_PORT=8350 CONFAB_MEMBERSHIP_PORT=3350 \
  CONFAB_GATEWAY_PORTS="3351 3352" CONFAB_GATEWAY_CONFIG="$BENCH/gateway.toml" RUST_LOG=warn \
  bash "$ROOT/deploy/local/cluster.sh" up >/dev/null
GW1="$(tr -dc 0-9 <"$RUN/gateway-1.pid")"
MEMB="$(tr -dc 0-9 <"$RUN/membership.pid")"

say "CPU profile: fan-out at $RATE msg/s"
"$LOADGEN" fanout --clients 10000 --room-size 100 --rates "$RATE" --step-secs 30 --settle-secs 5 \
  --prefix f --url ws://127.0.0.1:3351,ws://127.0.0.1:3352 --secret-file "$RUN/jwt-secret" \
  --label confab-profile >"$OUT/profile-fanout.json" 2>>"$OUT/profile.log" &
LG=$!
# Connecting 10,000 clients takes a while: wait for the step to run.
until grep -q "step 0" "$OUT/profile.log" 2>/dev/null || ! kill -0 "$LG" 2>/dev/null; do
  sleep 1
  if grep -q "connected in" "$OUT/profile.log" 2>/dev/null; then break; fi
done
sleep 8 # the settle time, then into the step
perf record -e cpu-clock -F 499 -g -p "$GW1" -o "$OUT/perf-gateway.data" -- sleep 15 2>>"$OUT/profile.log" &
perf record -e cpu-clock -F 499 -g -p "$MEMB" -o "$OUT/perf-membership.data" -- sleep 15 2>>"$OUT/profile.log" &
perf record -e cpu-clock -F 499 -g -p "$LG" -o "$OUT/perf-loadgen.data" -- sleep 15 2>>"$OUT/profile.log"
sleep 1; wait "$LG" || true
for who in gateway membership loadgen; do perf_text "$OUT" "$who"; done

say "memory profile: $IDLE idle connections to a gateway under heaptrack"
have_heaptrack && heap_profile "$OUT" "$IDLE" "$NATS_PORT" "$HEAP_PORT"
say "done: $OUT"
