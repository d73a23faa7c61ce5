#!/usr/bin/env bash
# The soak (issue #16): the local cluster (deploy/local/cluster.sh: nats-server
# with JetStream, membership, two gateways) under steady moderate traffic for
# a long time, to show that memory stays flat and nothing is lost.
# Behind `just soak`.
#
#   bench/soak.sh [SECONDS]        (default 3600)
#
# Traffic, all from the benchmark load generator (bench/loadgen):
#   - `fanout` for the whole run: SOAK_CLIENTS (400) WebSocket clients in
#     rooms of SOAK_ROOM_SIZE (20) over both gateways, SOAK_RATE (40) msg/s in
#     all (800 deliveries/s); at the end it counts lost (acked, never
#     delivered to a member that stayed connected) and duplicate deliveries;
#   - every SOAK_CHURN_SECS (30): SOAK_CHURN (200) connections opened, held
#     5 s and closed, alternately over WebSocket and long-polling, on
#     alternate gateways (connect/disconnect churn);
#   - every second churn round: a connection-state recovery (`recover --mode
#     replay`: a session misses 50 events, reconnects, must get all 50).
# Every SOAK_SAMPLE_SECS (10) the RSS of every cluster process (and the
# fan-out load generator) goes to rss.csv and nats-server's Go heap figures
# (runtime.MemStats) to nats-heap.csv; every minute the JetStream
# streams' message counts to streams.csv. At the end soak-report.py writes
# summary.md / summary.json: memory per process (first vs last quarter, the
# last 30 minutes' slope: "flat"), lost, duplicates, recoveries.
#
# Results: bench/results/soak-<UTC time>/ (SOAK_OUT). The cluster's state
# goes to a temporary run directory, removed at the end. Ports (away from
# `just up`, `just bench` and the tests): NATS SOAK_NATS_PORT (4450),
# monitor 8450, Go profiles 6450, membership 3450, gateways 3451 3452. Release binaries, built
# by cluster.sh into CARGO_TARGET_DIR (SOAK_PROFILE=debug: debug binaries). Everything started here is stopped on
# exit, also on failure.
set -euo pipefail

SECS="${1:-3600}"
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 60 ] || { echo "usage: $0 [SECONDS>=60]" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac
# SOAK_PROFILE: release (default) or debug binaries (cluster.sh's
# CONFAB_CLUSTER_PROFILE), for a machine too busy for a release build.
PROFILE="${SOAK_PROFILE:-release}"
case "$PROFILE" in release | debug) ;; *) echo "SOAK_PROFILE must be release or debug" >&2; exit 2 ;; esac
LOADGEN="$CARGO_TARGET_DIR/$PROFILE/confab-loadgen"

NATS_PORT="${SOAK_NATS_PORT:-4450}"
NATS_MONITOR_PORT=$((NATS_PORT + 4000))
NATS_PROF_PORT=$((NATS_PORT + 2000))
MEMBERSHIP_PORT="${SOAK_MEMBERSHIP_PORT:-3450}"
GW1=$((MEMBERSHIP_PORT + 1)) GW2=$((MEMBERSHIP_PORT + 2))
CLIENTS="${SOAK_CLIENTS:-400}"
ROOM_SIZE="${SOAK_ROOM_SIZE:-20}"
RATE="${SOAK_RATE:-40}"
CHURN="${SOAK_CHURN:-200}"
CHURN_SECS="${SOAK_CHURN_SECS:-30}"
SAMPLE_SECS="${SOAK_SAMPLE_SECS:-10}"
# How long the room log keeps events (bus.*.rooms_max_age, default 24 h).
# An hour never reaches the steady state of a 24 h retention: the log, and
# nats-server's memory with it, grow for a day. 10 minutes (at least the
# 2-minute recovery window) lets the log level off early in the run; the
# report measures growth from then on (its warm-up).
ROOMS_MAX_AGE="${SOAK_ROOMS_MAX_AGE:-10m}"
case "$ROOMS_MAX_AGE" in
  *m) MAX_AGE_SECS=$((${ROOMS_MAX_AGE%m} * 60)) ;;
  *h) MAX_AGE_SECS=$((${ROOMS_MAX_AGE%h} * 3600)) ;;
  *) echo "SOAK_ROOMS_MAX_AGE must be minutes or hours, e.g. 10m or 24h" >&2; exit 2 ;;
esac

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${SOAK_OUT:-$BENCH/results/soak-$STAMP}"
mkdir -p "$OUT/logs"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/confab-soak.XXXXXX")"
export CONFAB_RUN_DIR="$RUN"

say() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

PIDS=() # background jobs of this script
cleanup() {
  local rc=$?
  set +e
  say "stopping what the soak started"
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  bash "$ROOT/deploy/local/cluster.sh" down >&2
  cp -a "$RUN/logs/." "$OUT/logs/" 2>/dev/null
  rm -rf "$RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "$SECS s, results in $OUT"
RELEASE=(--release)
[ "$PROFILE" = release ] || RELEASE=()
(cd "$ROOT" && nice -n 10 cargo build ${RELEASE[@]+"${RELEASE[@]}"} --quiet -p confab-loadgen)
CONFAB_NATS_PORT="$NATS_PORT" CONFAB_NATS_MONITOR_PORT="$NATS_MONITOR_PORT" \
  CONFAB_MEMBERSHIP_PORT="$MEMBERSHIP_PORT" CONFAB_GATEWAY_PORTS="$GW1 $GW2" \
  CONFAB_GATEWAY_CONFIG="$BENCH/gateway.toml" RUST_LOG="${RUST_LOG:-warn}" \
  CONFAB_ROOMS_MAX_AGE="$ROOMS_MAX_AGE" CONFAB_NATS_PROF_PORT="$NATS_PROF_PORT" \
  CONFAB_CLUSTER_PROFILE="$PROFILE" bash "$ROOT/deploy/local/cluster.sh" up >&2

pid_of() { tr -dc '0-9' <"$RUN/$1.pid"; }
WATCH="nats=$(pid_of nats),membership=$(pid_of membership),gateway-1=$(pid_of gateway-1),gateway-2=$(pid_of gateway-2)"
URLS="ws://127.0.0.1:$GW1,ws://127.0.0.1:$GW2"
API="http://127.0.0.1:$MEMBERSHIP_PORT"
LG=(--secret-file "$RUN/jwt-secret")

say "creating the rooms"
"$LOADGEN" setup --api "$API" --service-token-file "$RUN/service-token" \
  --prefix s --rooms $(((CLIENTS + ROOM_SIZE - 1) / ROOM_SIZE)) --room-size "$ROOM_SIZE" >>"$OUT/logs/setup.log"
"$LOADGEN" setup --api "$API" --service-token-file "$RUN/service-token" \
  --prefix v --rooms 1 --room-size 2 >>"$OUT/logs/setup.log"

{
  printf '{"stamp":"%s","secs":%s,"clients":%s,"room_size":%s,"rate":%s,' "$STAMP" "$SECS" "$CLIENTS" "$ROOM_SIZE" "$RATE"
  printf '"churn":%s,"churn_secs":%s,"sample_secs":%s,"cpus":%s,' "$CHURN" "$CHURN_SECS" "$SAMPLE_SECS" "$(nproc)"
  printf '"rooms_max_age":"%s","rooms_max_age_secs":%s,' "$ROOMS_MAX_AGE" "$MAX_AGE_SECS"
  printf '"profile":"%s","commit":"%s","load_average_start":"%s"}\n' \
    "$PROFILE" "$(git -C "$ROOT" rev-parse --short HEAD)" "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/meta.json"

say "fan-out: $CLIENTS clients, rooms of $ROOM_SIZE, $RATE msg/s for $SECS s"
"$LOADGEN" fanout --clients "$CLIENTS" --room-size "$ROOM_SIZE" --prefix s \
  --rates "$RATE" --step-secs "$SECS" --p99-limit-ms 600000 --keep-up 0 \
  --url "$URLS" --watch "$WATCH" --max-secs $((SECS + 300)) --label soak "${LG[@]}" \
  >"$OUT/fanout.json" 2>>"$OUT/logs/loadgen.log" &
FANOUT=$!
PIDS+=("$FANOUT")

# Stream sampler: every JetStream stream's messages and bytes each minute
# (from the monitor's /jsz), to see whether the session bucket and the room
# log level off; and the JetStream API's request and error counts (api.csv),
# to tell when in the run API errors happen.
(
  echo "elapsed_s,stream,messages,bytes"
  echo "elapsed_s,api_total,api_errors" >"$OUT/api.csv"
  start=$SECONDS
  while kill -0 "$FANOUT" 2>/dev/null; do
    jsz="$(curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/jsz?streams=true" 2>/dev/null || true)"
    if [ -n "$jsz" ]; then
      jq -r --arg t "$((SECONDS - start))" \
        '.account_details[]?.stream_detail[]? | [$t, .name, .state.messages, .state.bytes] | @csv' \
        <<<"$jsz" | tr -d '"' || true
      jq -r --arg t "$((SECONDS - start))" '[$t, .api.total, .api.errors] | @csv' <<<"$jsz" |
        tr -d '"' >>"$OUT/api.csv" || true
    fi
    sleep 60
  done
) >"$OUT/streams.csv" &
PIDS+=("$!")

# RSS sampler: every cluster process and the fan-out load generator.
(
  echo "elapsed_s,process,pid,rss_kib"
  start=$SECONDS
  while kill -0 "$FANOUT" 2>/dev/null; do
    for entry in ${WATCH//,/ } "loadgen=$FANOUT"; do
      name="${entry%%=*}" pid="${entry#*=}"
      rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
      echo "$((SECONDS - start)),$name,$pid,${rss:-0}"
    done
    sleep "$SAMPLE_SECS"
  done
) >"$OUT/rss.csv" &
PIDS+=("$!")

# Go heap sampler: nats-server's runtime.MemStats (from its profiling
# port) beside its RSS, to tell live heap (HeapAlloc) from memory the Go
# runtime holds (HeapIdle not yet released) when RSS moves.
(
  echo "elapsed_s,heap_alloc,heap_inuse,heap_idle,heap_released,sys"
  start=$SECONDS
  while kill -0 "$FANOUT" 2>/dev/null; do
    curl -fsS "http://127.0.0.1:$NATS_PROF_PORT/debug/pprof/heap?debug=1" 2>/dev/null |
      awk -v t="$((SECONDS - start))" '
        $1 == "#" && $3 == "=" { m[$2] = $4 }
        END { if ("HeapAlloc" in m) printf "%s,%s,%s,%s,%s,%s\n", t, m["HeapAlloc"], m["HeapInuse"], m["HeapIdle"], m["HeapReleased"], m["Sys"] }' || true
    sleep "$SAMPLE_SECS"
  done
) >"$OUT/nats-heap.csv" &
PIDS+=("$!")

# Churn and recoveries until the fan-out ends.
: >"$OUT/churn.jsonl"
round=0
while kill -0 "$FANOUT" 2>/dev/null; do
  sleep "$CHURN_SECS"
  kill -0 "$FANOUT" 2>/dev/null || break
  round=$((round + 1))
  port=$([ $((round % 2)) = 0 ] && echo "$GW1" || echo "$GW2")
  transport=$([ $(((round / 2) % 2)) = 0 ] && echo websocket || echo polling)
  nice -n 5 "$LOADGEN" idle --transport "$transport" --connections "$CHURN" --hold-secs 5 \
    --settle-secs 1 --prefix c --url "ws://127.0.0.1:$port" --max-secs 120 \
    --label "churn-$round" "${LG[@]}" 2>>"$OUT/logs/loadgen.log" | tail -n 1 >>"$OUT/churn.jsonl" || true
  if [ $((round % 2)) = 0 ]; then
    nice -n 5 "$LOADGEN" recover --mode replay --missed 50 --prefix v --room-size 2 \
      --url "ws://127.0.0.1:$port" --publish-url "ws://127.0.0.1:$([ "$port" = "$GW1" ] && echo "$GW2" || echo "$GW1")" \
      --max-secs 120 --label "recover-$round" "${LG[@]}" 2>>"$OUT/logs/loadgen.log" | tail -n 1 >>"$OUT/churn.jsonl" || true
  fi
done
wait "$FANOUT" || say "the fan-out exited with an error (see fanout.json)"

curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/jsz?streams=true" >"$OUT/jsz.json" 2>/dev/null || true
python3 "$BENCH/soak-report.py" "$OUT"
say "done: $OUT/summary.md"
