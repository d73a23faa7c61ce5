#!/usr/bin/env bash
# The Confab benchmarks (issue #6), side by side with the Node.js stack
# Confab replaces (socket.io 4.8 + @socket.io/redis-adapter 8.3 + Redis).
# Behind `just bench` and `just bench-quick`.
#
#   bench/run.sh [full|quick]
#
# Builds the release binaries, starts the Confab cluster (deploy/local/
# cluster.sh: nats-server, membership, two gateways, with bench/gateway.toml)
# and the baseline (two Node processes on the local Redis), creates the
# benchmark rooms, runs every scenario against both with the same load
# generator (bench/loadgen), then writes bench/results/<UTC time>/:
# results.jsonl (one line per run), results.json, report.md and PNG plots.
# The fan-out scenario also runs against a third system, `ceiling`
# (confab-bench-ceiling, bench/loadgen/src/bin/ceiling.rs): one minimal Rust
# process doing only the baseline's hot path, i.e. the most this machine
# delivers with this load generator. It also runs against the Rust peers
# (bench/peers, issue #18): socketioxide in one process (`socketioxide`)
# and socketioxide + socketioxide-redis in two processes on the Redis
# (`socketioxide-redis`, channels under a prefix of this run's own).
# After each system's fan-out, a profile of its server processes at its
# saturation step (bench/profile.sh attach): <run>/profile/<system>/.
# The `pinned` scenario runs the fan-out of every system again with its
# server processes on core 0 and the load generator on core 1 (taskset;
# BENCH_SERVER_CPUS / BENCH_LOADGEN_CPUS), labelled `<system>-pinned`.
# Confab on Redis (issue #15), `confab-redis`: a second cluster
# (cluster.sh with CONFAB_BUS=redis: its own redis-server with AOF, membership
# on SQLite, two gateways, no NATS; state in BENCH_REDIS_RUN_DIR, wiped at
# the start) started only for its runs (fan-out, pinned, publish, recovery)
# and stopped after them, while the NATS cluster and the Node processes sit
# idle, as every other system's runs leave the rest idle. It runs with
# `appendfsync everysec` (acked before the fsync, like JetStream's default
# sync_interval); the publish scenario adds `confab-redis-always`
# (`appendfsync always`, like `confab-sync-always`).
# Everything it started is stopped at the end, also on failure.
#
# Ports (chosen away from the defaults of `just up` and the tests):
#   BENCH_NATS_PORT (4350), BENCH_NATS_MONITOR_PORT (8350),
#   BENCH_MEMBERSHIP_PORT (3350), gateways 3351-3356 (BENCH_GATEWAY_BASE),
#   baseline 3361-3366 (BENCH_BASELINE_BASE), ceiling 3370
#   (BENCH_CEILING_PORT), Rust peers 3371-3373 (BENCH_PEER_BASE). Redis: BENCH_REDIS_URL
#   (redis://127.0.0.1:6379, must run already). Confab on Redis: membership
#   3374 (BENCH_REDIS_MEMBERSHIP_PORT), gateways 3375-3376
#   (BENCH_REDIS_GATEWAY_BASE), its redis-server 6390 (BENCH_REDIS_PORT).
# BENCH_SCENARIOS picks scenarios (default "fanout pinned publish idle
# polling recovery"), e.g. BENCH_SCENARIOS=recovery bench/run.sh full. `polling`
# runs idle sessions and the fan-out again with HTTP long-polling clients
# (the load generator's --transport polling), Confab and baseline.
set -euo pipefail

MODE="${1:-full}"
case "$MODE" in full | quick) ;; *) echo "usage: $0 [full|quick]" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac
LOADGEN="$CARGO_TARGET_DIR/release/confab-loadgen"
RUN="$ROOT/.run"

NATS_PORT="${BENCH_NATS_PORT:-4350}"
NATS_MONITOR_PORT="${BENCH_NATS_MONITOR_PORT:-8350}"
MEMBERSHIP_PORT="${BENCH_MEMBERSHIP_PORT:-3350}"
GW_BASE="${BENCH_GATEWAY_BASE:-3351}"
NODE_BASE="${BENCH_BASELINE_BASE:-3361}"
CEILING_PORT="${BENCH_CEILING_PORT:-3370}"
PEER_BASE="${BENCH_PEER_BASE:-3371}"
SERVER_CPUS="${BENCH_SERVER_CPUS:-0}" LOADGEN_CPUS="${BENCH_LOADGEN_CPUS:-1}"
PROFILE="${BENCH_PROFILE:-1}" # 0: no profile at the saturation step
PEER="$CARGO_TARGET_DIR/peers/release/confab-bench-peer"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
SCENARIOS=" ${BENCH_SCENARIOS:-fanout pinned publish idle polling recovery} "
# Confab on Redis: its own cluster and state directory.
RRUN="${BENCH_REDIS_RUN_DIR:-$ROOT/.run-bench-redis}"
case "$RRUN" in /*) ;; *) RRUN="$ROOT/$RRUN" ;; esac
RMEMB_PORT="${BENCH_REDIS_MEMBERSHIP_PORT:-3374}"
RGW_BASE="${BENCH_REDIS_GATEWAY_BASE:-3375}"
RGW=("$RGW_BASE" "$((RGW_BASE + 1))")
RREDIS_PORT="${BENCH_REDIS_PORT:-6390}"
REDIS_UP=0
want() { [[ "$SCENARIOS" == *" $1 "* ]]; }
GW=() NODE=()
for i in 0 1 2 3 4 5; do GW+=($((GW_BASE + i))); NODE+=($((NODE_BASE + i))); done

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${BENCH_OUT:-$BENCH/results/$STAMP-$MODE}"
mkdir -p "$OUT/logs"
JSONL="$OUT/results.jsonl"
: >"$JSONL"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- sizes ------------------------------------------------------------------
if [ "$MODE" = full ]; then
  FAN_CLIENTS=10000 FAN_ROOMS=100 ROOM_SIZE=100
  FAN_RATES="50,100,200,400,600,800,1200,1600,2000,2500,3000,3500,5000" STEP_SECS=10
  IDLE_SIZES="10000 19000" IDLE_BIG=100000 MAX_PER_PROC=19000 HOLD=10
  PROFILE_SECS=15
  PUB_N=50 PUB_SECS=10
  REC_SESSIONS=10000 REC_MISSED=1000
  POLL_IDLE=10000
else
  FAN_CLIENTS=1000 FAN_ROOMS=10 ROOM_SIZE=100
  FAN_RATES="20,50,100" STEP_SECS=3
  IDLE_SIZES="1000" IDLE_BIG=3000 MAX_PER_PROC=1000 HOLD=2
  PROFILE_SECS=5
  PUB_N=10 PUB_SECS=3
  REC_SESSIONS=500 REC_MISSED=1000
  POLL_IDLE=1000
fi

# --- the expected duration --------------------------------------------------
# An upper bound per scenario from the sizes above (printed at the start):
# a fan-out run connects (~1,500 clients/s), settles 5 s, runs every step
# (a system that falls behind stops earlier), drains (up to 15 s) and
# pauses 3 s; a profile is one more step of PROFILE_SECS + 4 s; a cluster
# start ~10 s; handshakes ~1,000/s (the baseline's rate at 100,000). The
# figures the builds take come on top (nothing when the binaries are fresh).
# Six fan-out systems: confab, confab-redis, baseline, ceiling,
# socketioxide, socketioxide-redis.
estimate() {
  local nsteps fan prof idle=0 n t total=0 line=""
  nsteps=$(($(tr -cd , <<<"$FAN_RATES" | wc -c) + 1))
  fan=$((FAN_CLIENTS / 1500 + 5 + nsteps * STEP_SECS + 15 + 3))
  prof=$((FAN_CLIENTS / 1500 + 2 + PROFILE_SECS + 4 + 3 + 3 + 4))
  [ "$PROFILE" = 1 ] || prof=0
  for n in $IDLE_SIZES; do idle=$((idle + 10 + 2 * (n / 1000 + HOLD + 6))); done
  idle=$((idle + 20 + 2 * (IDLE_BIG / 1000 + HOLD + 6)))
  # The profiles of handshakes, publish and recovery repeat those runs; the
  # heaptrack gateway connects at about 500/s.
  local first="${IDLE_SIZES%% *}" pub_prof=0 rec_prof=0
  if [ "$PROFILE" = 1 ]; then
    idle=$((idle + first / 1000 + 5 + first / 500 + 20))
    pub_prof=$((PUB_SECS + 6)) rec_prof=$((2 * (10 + REC_SESSIONS / 1000 + 3 + 10 + 3 + 6 + 3)))
  fi
  for sc in fanout pinned publish idle polling recovery; do
    want "$sc" || continue
    case "$sc" in
      fanout) t=$((6 * (fan + prof) + 2 * 10)) ;;
      pinned) t=$((6 * fan + 2 * 10)) ;;
      publish) t=$((5 * (PUB_SECS + 6) + 2 * 15 + 4 * 10 + pub_prof)) ;;
      idle) t=$idle ;;
      polling) t=$((10 + 2 * (POLL_IDLE / 1000 + HOLD + 6) + 2 * fan)) ;;
      recovery) t=$((2 * (10 + REC_SESSIONS / 1000 + 3 + 10 + 3 + 6 + 3) + 20 + rec_prof)) ;;
    esac
    total=$((total + t))
    line+="${line:+, }$sc ${t}s"
  done
  echo "at most ~$(((total + 59) / 60)) min ($line; builds not counted)"
}

# --- processes --------------------------------------------------------------
EXTRA_PIDS=() # extra gateways, baseline and ceiling processes started here

cleanup() {
  local rc=$?
  set +e
  say "stopping what the benchmark started"
  local p
  for p in "${EXTRA_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${EXTRA_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  bash "$ROOT/deploy/local/cluster.sh" down >&2
  [ "$REDIS_UP" = 0 ] || CONFAB_RUN_DIR="$RRUN" bash "$ROOT/deploy/local/cluster.sh" down >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS --max-time 2 "$1" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { say "timeout waiting for $1"; return 1; }
    sleep 0.2
  done
}

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { say "timeout waiting for port $1"; return 1; }
    sleep 0.2
  done
}

pid_of() { tr -dc '0-9' <"$RUN/$1.pid"; }

# An extra gateway (scenario 2 spreads connections over six) on the
# cluster's NATS and membership, with the same settings as cluster.sh's.
start_gateway() { # n port
  local n="$1" port="$2"
  (
    for v in $(compgen -e); do [[ "$v" == CONFAB_* ]] && unset "$v"; done
    export CONFAB_LISTEN="127.0.0.1:$port" CONFAB_BUS__KIND=nats \
      CONFAB_BUS__NATS__URL="nats://127.0.0.1:$NATS_PORT" CONFAB_BUS__NATS__NAME="gateway-$n" \
      CONFAB_MEMBERSHIP__KIND=nats CONFAB_SERVICE_TOKEN="$(cat "$RUN/service-token")" \
      CONFAB_AUTH__HS256_SECRET="$(cat "$RUN/jwt-secret")" CONFAB_CONFIG="$BENCH/gateway.toml" \
      CONFAB_AUTH__ISSUER=confab-local CONFAB_AUTH__AUDIENCE=confab-local \
      CONFAB_BUS__NATS__USER=confab-gateway CONFAB_BUS__NATS__PASSWORD="$(cat "$RUN/nats-gateway-password")" \
      RUST_LOG="${RUST_LOG:-warn}"
    exec "$CARGO_TARGET_DIR/release/confab-gateway"
  ) </dev/null >>"$OUT/logs/gateway-$n.log" 2>&1 &
  EXTRA_PIDS+=($!)
  eval "PID_GW$n=$!"
  wait_http "http://127.0.0.1:$port/readyz" 30
}

start_node() { # n port
  local n="$1" port="$2"
  PORT="$port" SECRET_FILE="$RUN/jwt-secret" REDIS_URL="$REDIS_URL" NODE_ENV=production \
    node "$BENCH/baseline/server.js" </dev/null >>"$OUT/logs/node-$n.log" 2>&1 &
  EXTRA_PIDS+=($!)
  eval "PID_NODE$n=$!"
  wait_port "$port" 30
}

# The fan-out ceiling: one confab-bench-ceiling process.
start_ceiling() {
  $PIN_SERVER "$CARGO_TARGET_DIR/release/confab-bench-ceiling" --listen "127.0.0.1:$CEILING_PORT" \
    --secret-file "$RUN/jwt-secret" </dev/null >>"$OUT/logs/ceiling.log" 2>&1 &
  EXTRA_PIDS+=($!)
  PID_CEILING=$!
  wait_port "$CEILING_PORT" 30
}

# A Rust peer (bench/peers): socketioxide alone, or with --redis.
start_peer() { # name port [redis args...]
  local name="$1" port="$2"; shift 2
  $PIN_SERVER "$PEER" --listen "127.0.0.1:$port" --secret-file "$RUN/jwt-secret" "$@" \
    </dev/null >>"$OUT/logs/$name.log" 2>&1 &
  EXTRA_PIDS+=($!)
  LAST_PID=$!
  wait_port "$port" 30
}

stop_pid() { # pid
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

urls() { # port...
  local out="" p
  for p in "$@"; do out+="${out:+,}ws://127.0.0.1:$p"; done
  echo "$out"
}

# Runs the load generator and appends its JSON line to results.jsonl.
lg() { # label scenario args...
  local label="$1"; shift
  say "run: $label $*"
  local line
  line="$($PIN_LOADGEN nice -n 0 "$LOADGEN" "$@" --label "$label" --secret-file "$RUN/jwt-secret" 2>>"$OUT/logs/loadgen.log" | tail -n 1)" || true
  [ -n "$line" ] || line="{\"error\":\"no output\",\"label\":\"$label\",\"scenario\":\"$1\"}"
  printf '%s\n' "$line" >>"$JSONL"
  say "  -> ${line:0:300}"
  sleep 3 # let disconnects settle before the next run
}

# `taskset` prefixes of the pinned pass (empty otherwise).
PIN_SERVER="" PIN_LOADGEN=""
pin() { # cpus pid... : every thread of running processes
  local cpus="$1" p; shift
  for p in "$@"; do taskset -a -p -c "$cpus" "$p" >/dev/null || say "taskset $cpus $p failed"; done
}

# The step to profile in a fan-out result line: the first that fell
# behind (< 90 % of its offer, or p99 > 1 s), else the last one run.
saturation_rate() { # json line
  python3 -c '
import json, sys
steps = json.loads(sys.argv[1]).get("steps") or []
bad = [s for s in steps if s["delivered_per_sec"] < 0.9 * s["offered_deliveries_per_sec"]
       or (s.get("e2e", {}).get("p99_ms") or 0) > 1000]
s = (bad or steps or [None])[0] if bad else (steps[-1] if steps else None)
print(s["rate_msgs_per_sec"] if s else "")' "$1"
}

# A CPU profile of processes during a repeat of one load generator run
# (issue #18: where the time goes): <run>/profile/<name>/, with the
# repeat's own output (run.json; perf slows what it records, so the
# report's figures are the unprofiled run's). START says when to record:
# SECS after the load generator starts; connected+SECS, that long after
# its clients are connected; exit:PID, once that process has gone (the
# gateway a mass recovery kills). A WATCH ending in ",loadgen" records the
# load generator too.
profile_during() { # name start secs watch loadgen-args...
  [ "$PROFILE" = 1 ] || return 0
  local name="$1" start="$2" secs="$3" watch="$4" dir lgpid; shift 4
  dir="$OUT/profile/$name"; mkdir -p "$dir"
  say "profile: $name ($*)"
  "$LOADGEN" "$@" --secret-file "$RUN/jwt-secret" --label "$name-profile" >"$dir/run.json" 2>"$dir/loadgen.log" &
  lgpid=$!
  case "$start" in
    exit:*) while kill -0 "${start#exit:}" 2>/dev/null && kill -0 "$lgpid" 2>/dev/null; do sleep 0.05; done ;;
    connected+*)
      until grep -q "connected in" "$dir/loadgen.log" 2>/dev/null || ! kill -0 "$lgpid" 2>/dev/null; do sleep 0.5; done
      sleep "${start#connected+}" ;;
    *) sleep "$start" ;;
  esac
  kill -0 "$lgpid" 2>/dev/null &&
    bash "$BENCH/profile.sh" attach "$dir" "$secs" "${watch/%,loadgen/,loadgen=$lgpid}" 2>>"$dir/loadgen.log"
  wait "$lgpid" || true
  sleep 3
}

# A CPU profile of a system's server processes and the load generator at
# the system's saturation step: the fan-out again at that one rate,
# recorded once the step runs (after the 2 s settle).
profile_at_saturation() { # system url watch
  local sys="$1" url="$2" watch="$3" rate
  rate="$(saturation_rate "$(tail -n 1 "$JSONL")")"
  [ -n "$rate" ] || { say "no fan-out steps for $sys: no profile"; return 0; }
  profile_during "$sys" connected+4 "$PROFILE_SECS" "$watch,loadgen" fanout --clients "$FAN_CLIENTS" \
    --room-size "$ROOM_SIZE" --rates "$rate" --step-secs "$((PROFILE_SECS + 4))" --settle-secs 2 \
    --drain-secs 3 --prefix f --url "$url"
}

# The fan-out of every system: Confab, the baseline, the ceiling, the two
# Rust peers. SUFFIX "-pinned": servers on SERVER_CPUS, the load generator
# on LOADGEN_CPUS, no profiles.
fanout_all() { # suffix
  local sfx="$1" prof=1
  local FAN=(fanout --clients "$FAN_CLIENTS" --room-size "$ROOM_SIZE" --rates "$FAN_RATES" --step-secs "$STEP_SECS" --prefix f)
  if [ -n "$sfx" ]; then
    prof=0 PIN_SERVER="taskset -c $SERVER_CPUS" PIN_LOADGEN="taskset -c $LOADGEN_CPUS"
    pin "$SERVER_CPUS" "$PID_NATS" "$PID_MEMB" "$PID_GW1" "$PID_GW2" "$PID_NODE1" "$PID_NODE2"
  fi
  lg "confab$sfx" "${FAN[@]}" --url "$(urls "${GW[0]}" "${GW[1]}")" --watch "$CONFAB_WATCH"
  [ "$prof" = 0 ] || profile_at_saturation confab "$(urls "${GW[0]}" "${GW[1]}")" "$CONFAB_WATCH"
  redis_up everysec
  [ -z "$sfx" ] || pin "$SERVER_CPUS" "$PID_RREDIS" "$PID_RMEMB" "$PID_RGW1" "$PID_RGW2"
  lg "confab-redis$sfx" "${FAN[@]}" --url "$(urls "${RGW[@]}")" --watch "$RCONFAB_WATCH"
  [ "$prof" = 0 ] || profile_at_saturation confab-redis "$(urls "${RGW[@]}")" "$RCONFAB_WATCH"
  redis_down
  lg "baseline$sfx" "${FAN[@]}" --url "$(urls "${NODE[0]}" "${NODE[1]}")" --watch "$NODE_WATCH"
  [ "$prof" = 0 ] || profile_at_saturation baseline "$(urls "${NODE[0]}" "${NODE[1]}")" "$NODE_WATCH"
  say "starting the fan-out ceiling (confab-bench-ceiling on $CEILING_PORT)"
  start_ceiling
  lg "ceiling$sfx" "${FAN[@]}" --url "$(urls "$CEILING_PORT")" --watch "ceiling=$PID_CEILING"
  [ "$prof" = 0 ] || profile_at_saturation ceiling "$(urls "$CEILING_PORT")" "ceiling=$PID_CEILING"
  stop_pid "$PID_CEILING"
  say "starting the Rust peer: socketioxide, one process on $PEER_BASE"
  start_peer socketioxide "$PEER_BASE"
  local p1="$LAST_PID" p2
  lg "socketioxide$sfx" "${FAN[@]}" --url "$(urls "$PEER_BASE")" --watch "socketioxide=$p1"
  [ "$prof" = 0 ] || profile_at_saturation socketioxide "$(urls "$PEER_BASE")" "socketioxide=$p1"
  stop_pid "$p1"
  say "starting the Rust peer: socketioxide + socketioxide-redis, two processes on $((PEER_BASE + 1))-$((PEER_BASE + 2))"
  local redis_args=(--redis "$REDIS_URL" --prefix "confab-bench-$STAMP-$$")
  start_peer socketioxide-redis-1 "$((PEER_BASE + 1))" "${redis_args[@]}"; p1="$LAST_PID"
  start_peer socketioxide-redis-2 "$((PEER_BASE + 2))" "${redis_args[@]}"; p2="$LAST_PID"
  local watch="socketioxide-1=$p1,socketioxide-2=$p2${PID_REDIS:+,redis=$PID_REDIS}"
  lg "socketioxide-redis$sfx" "${FAN[@]}" --url "$(urls "$((PEER_BASE + 1))" "$((PEER_BASE + 2))")" --watch "$watch"
  [ "$prof" = 0 ] || profile_at_saturation socketioxide-redis "$(urls "$((PEER_BASE + 1))" "$((PEER_BASE + 2))")" "$watch"
  stop_pid "$p1"; stop_pid "$p2"
  if [ -n "$sfx" ]; then
    local all; all="0-$(($(nproc) - 1))"
    pin "$all" "$PID_NATS" "$PID_MEMB" "$PID_GW1" "$PID_GW2" "$PID_NODE1" "$PID_NODE2"
    PIN_SERVER="" PIN_LOADGEN=""
  fi
}

# --- build and start --------------------------------------------------------
say "mode $MODE, results in $OUT"
say "expected duration: $(estimate)"
say "building release binaries"
# Two builds, not one: the cluster's package set is the one cluster.sh
# builds (features unify per build; one combined build would rebuild all).
(cd "$ROOT" && nice -n 10 cargo build --release --quiet -p confab -p confab-gateway -p confab-membership)
(cd "$ROOT" && nice -n 10 cargo build --release --quiet -p confab-loadgen)
# The Rust peers: their own Cargo project and lock file (bench/peers).
(cd "$BENCH/peers" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/peers" nice -n 10 cargo build --release --locked --quiet)

[ -d "$BENCH/baseline/node_modules/socket.io" ] ||
  (cd "$BENCH/baseline" && npm ci --no-audit --no-fund >&2)
PYDIR="$CARGO_TARGET_DIR/bench-py"
PYTHONPATH="$PYDIR" python3 -c 'import matplotlib' 2>/dev/null ||
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --disable-pip-version-check --quiet --target "$PYDIR" 'matplotlib>=3.8' >&2 ||
  say "matplotlib could not be installed: the report will have no plots"
redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || { say "Redis does not answer at $REDIS_URL"; exit 1; }

# Starts what of the cluster is not running (all of it the first time).
cluster_up() {
  CONFAB_NATS_PORT="$NATS_PORT" CONFAB_NATS_MONITOR_PORT="$NATS_MONITOR_PORT" \
    CONFAB_MEMBERSHIP_PORT="$MEMBERSHIP_PORT" CONFAB_GATEWAY_PORTS="${GW[0]} ${GW[1]}" \
    CONFAB_GATEWAY_CONFIG="$BENCH/gateway.toml" RUST_LOG="${RUST_LOG:-warn}" \
    bash "$ROOT/deploy/local/cluster.sh" up >&2
  PID_NATS="$(pid_of nats)" PID_MEMB="$(pid_of membership)"
  PID_GW1="$(pid_of gateway-1)" PID_GW2="$(pid_of gateway-2)"
  CONFAB_WATCH="nats=$PID_NATS,membership=$PID_MEMB,gateway-1=$PID_GW1,gateway-2=$PID_GW2"
}

# Fresh server processes, so that an RSS measurement starts from a process
# that never held connections (freed memory is kept by the allocators).
restart_servers() {
  say "restarting gateways 1-2 and Node processes 1-2 (fresh memory)"
  stop_pid "$PID_GW1"; stop_pid "$PID_GW2"
  cluster_up >/dev/null
  stop_pid "$PID_NODE1"; stop_pid "$PID_NODE2"
  start_node 1 "${NODE[0]}"
  start_node 2 "${NODE[1]}"
  NODE_WATCH="node-1=$PID_NODE1,node-2=$PID_NODE2${PID_REDIS:+,redis=$PID_REDIS}"
}

# --- Confab on Redis (issue #15) --------------------------------------------
# Its own cluster (cluster.sh, CONFAB_BUS=redis, state in RRUN), started for
# its runs and stopped after them. It uses the NATS cluster's JWT secret
# (copied before its first `up`) so that one token file serves both; its
# rooms are created in its own membership service (SQLite: DATABASE_URL is
# not passed, the NATS cluster's database is not shared).
rpid_of() { tr -dc '0-9' <"$RRUN/$1.pid"; }
RSETUP=0
redis_up() { # appendfsync: everysec | always
  [ -e "$RRUN/jwt-secret" ] || (umask 077 && mkdir -p "$RRUN" && cp "$RUN/jwt-secret" "$RRUN/jwt-secret")
  say "starting Confab on Redis (appendfsync $1; redis-server $RREDIS_PORT, membership $RMEMB_PORT, gateways ${RGW[*]})"
  REDIS_UP=1
  env -u DATABASE_URL CONFAB_RUN_DIR="$RRUN" CONFAB_BUS=redis CONFAB_REDIS_PORT="$RREDIS_PORT" \
    CONFAB_REDIS_APPENDFSYNC="$1" CONFAB_MEMBERSHIP_PORT="$RMEMB_PORT" \
    CONFAB_GATEWAY_PORTS="${RGW[0]} ${RGW[1]}" CONFAB_GATEWAY_CONFIG="$BENCH/gateway.toml" \
    RUST_LOG="${RUST_LOG:-warn}" bash "$ROOT/deploy/local/cluster.sh" up >&2
  PID_RREDIS="$(rpid_of redis)" PID_RMEMB="$(rpid_of membership)"
  PID_RGW1="$(rpid_of gateway-1)" PID_RGW2="$(rpid_of gateway-2)"
  RCONFAB_WATCH="redis=$PID_RREDIS,membership=$PID_RMEMB,gateway-1=$PID_RGW1,gateway-2=$PID_RGW2"
  if [ "$RSETUP" = 0 ]; then
    setup_rooms "http://127.0.0.1:$RMEMB_PORT" "$RRUN/service-token"
    RSETUP=1
  fi
}
redis_down() {
  CONFAB_RUN_DIR="$RRUN" bash "$ROOT/deploy/local/cluster.sh" down >&2
  REDIS_UP=0
}

# The rooms of the fan-out (f), publish (p) and replay (v) scenarios.
setup_rooms() { # api service-token-file
  "$LOADGEN" setup --api "$1" --service-token-file "$2" \
    --prefix f --rooms "$FAN_ROOMS" --room-size "$ROOM_SIZE" >>"$OUT/logs/setup.log"
  "$LOADGEN" setup --api "$1" --service-token-file "$2" \
    --prefix p --rooms "$PUB_N" --room-size 1 >>"$OUT/logs/setup.log"
  "$LOADGEN" setup --api "$1" --service-token-file "$2" \
    --prefix v --rooms 1 --room-size 2 >>"$OUT/logs/setup.log"
}
# The rooms of the mass recovery (r).
REC_ROOMS=$(((REC_SESSIONS + ROOM_SIZE - 2) / (ROOM_SIZE - 1)))

# A fresh Redis cluster state for every run (its Redis keeps every event in
# memory: an old run's streams would weigh on this one).
CONFAB_RUN_DIR="$RRUN" bash "$ROOT/deploy/local/cluster.sh" down >/dev/null 2>&1 || true
rm -rf "$RRUN"

say "starting the Confab cluster"
cluster_up

say "starting the baseline (2 Node processes on $REDIS_URL)"
start_node 1 "${NODE[0]}"
start_node 2 "${NODE[1]}"
# The baseline's Redis by its own answer (several redis-servers may run:
# Confab on Redis starts one of its own), when it is a local process.
PID_REDIS="$(redis-cli -u "$REDIS_URL" info server 2>/dev/null | awk -F: '/^process_id/ {print $2}' | tr -dc '0-9')"
[ -n "$PID_REDIS" ] && [ -e "/proc/$PID_REDIS" ] || PID_REDIS=""

# The machine and versions, for the report.
{
  printf '{"stamp":"%s","mode":"%s",' "$STAMP" "$MODE"
  printf '"cpus":%s,"mem_kib":%s,' "$(nproc)" "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  printf '"cpu_model":"%s",' "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | tr -d '"')"
  printf '"kernel":"%s","nofile":%s,' "$(uname -r)" "$(ulimit -n)"
  printf '"node":"%s","socket_io":"%s","redis_adapter":"%s","redis_server":"%s",' \
    "$(node --version)" \
    "$(node -p 'require("'"$BENCH"'/baseline/node_modules/socket.io/package.json").version')" \
    "$(node -p 'require("'"$BENCH"'/baseline/node_modules/@socket.io/redis-adapter/package.json").version')" \
    "$(redis-cli -u "$REDIS_URL" info server | awk -F: '/redis_version/ {print $2}' | tr -d '\r')"
  printf '"nats_server":"%s","commit":"%s","command":"%s"}\n' \
    "$("$(sed -nE 's/^NATS_BIN_S=(.*)/\1/p' "$RUN/cluster.env")" --version 2>/dev/null | head -n 1)" \
    "$(git -C "$ROOT" rev-parse --short HEAD)" \
    "$([ "$MODE" = full ] && echo 'just bench' || echo 'just bench-quick')"
} >"$OUT/meta.json"

NODE_WATCH="node-1=$PID_NODE1,node-2=$PID_NODE2${PID_REDIS:+,redis=$PID_REDIS}"

say "creating the benchmark rooms (idempotent)"
API="http://127.0.0.1:$MEMBERSHIP_PORT"
setup_rooms "$API" "$RUN/service-token"

# --- scenario 1: fan-out ----------------------------------------------------
want fanout && fanout_all ""
want pinned && fanout_all -pinned

# --- scenario 4: durable publish through one gateway ------------------------
if want publish; then
PUB=(publish --publishers "$PUB_N" --window 4 --secs "$PUB_SECS" --prefix p)
lg confab "${PUB[@]}" --url "$(urls "${GW[0]}")" --watch "$CONFAB_WATCH"
profile_during publish 2 "$((PUB_SECS > 6 ? PUB_SECS - 4 : 2))" "$CONFAB_WATCH" "${PUB[@]}" --url "$(urls "${GW[0]}")"
lg baseline "${PUB[@]}" --url "$(urls "${NODE[0]}")" --watch "$NODE_WATCH"
# Again with JetStream fsyncing every write before its ack (README
# "Durability"): the cost of `sync_interval: always`. sync_interval is a
# server setting, so the cluster restarts with it, and once more without.
say "restarting the Confab cluster with CONFAB_NATS_SYNC=always"
bash "$ROOT/deploy/local/cluster.sh" down >&2
export CONFAB_NATS_SYNC=always
cluster_up
unset CONFAB_NATS_SYNC
lg confab-sync-always "${PUB[@]}" --url "$(urls "${GW[0]}")" --watch "$CONFAB_WATCH"
bash "$ROOT/deploy/local/cluster.sh" down >&2
cluster_up
# Confab on Redis, with `appendfsync everysec` (acked once Redis wrote the
# AOF, fsynced within a second) and `appendfsync always` (fsynced before
# Redis answers the publish script).
redis_up everysec
lg confab-redis "${PUB[@]}" --url "$(urls "${RGW[0]}")" --watch "$RCONFAB_WATCH"
redis_down
redis_up always
lg confab-redis-always "${PUB[@]}" --url "$(urls "${RGW[0]}")" --watch "$RCONFAB_WATCH"
redis_down
fi

# --- scenario 2: idle connections -------------------------------------------
if want idle; then
for n in $IDLE_SIZES; do
  restart_servers
  IDLE=(idle --connections "$n" --hold-secs "$HOLD" --max-per-process "$MAX_PER_PROC" --prefix i)
  lg confab "${IDLE[@]}" --url "$(urls "${GW[0]}")" --watch "$CONFAB_WATCH" --server-prefix gateway-1
  lg baseline "${IDLE[@]}" --url "$(urls "${NODE[0]}")" --watch "$NODE_WATCH" --server-prefix node-1
done
# Where the handshakes' time goes (gateway, membership, NATS while the
# first size connects) and where an idle connection's memory goes (a
# gateway under heaptrack holding the first size's connections).
n="${IDLE_SIZES%% *}"
profile_during handshake 0.3 "$((n / 4000 + 2))" "gateway-1=$PID_GW1,membership=$PID_MEMB,nats=$PID_NATS" \
  idle --connections "$n" --hold-secs 2 --max-per-process "$MAX_PER_PROC" --prefix i --url "$(urls "${GW[0]}")"
[ "$PROFILE" = 0 ] || bash "$BENCH/profile.sh" heap "$OUT/profile/idle-memory" "$n" "$NATS_PORT" "$((GW_BASE + 6))" ||
  say "no memory profile (see profile/idle-memory/profile.log)"

restart_servers
say "starting four more gateways and four more Node processes for $IDLE_BIG connections"
for i in 3 4 5 6; do start_gateway "$i" "${GW[$((i - 1))]}"; done
for i in 3 4 5 6; do start_node "$i" "${NODE[$((i - 1))]}"; done
GW6_WATCH="nats=$PID_NATS,membership=$PID_MEMB"
NODE6_WATCH="${PID_REDIS:+redis=$PID_REDIS}"
for i in 1 2 3 4 5 6; do
  eval "GW6_WATCH+=\",gateway-$i=\$PID_GW$i\""
  eval "NODE6_WATCH+=\",node-$i=\$PID_NODE$i\""
done
BIG=(idle --connections "$IDLE_BIG" --hold-secs "$HOLD" --max-per-process "$MAX_PER_PROC" --prefix j --sources 32)
lg confab "${BIG[@]}" --url "$(urls "${GW[@]}")" --watch "$GW6_WATCH" --server-prefix gateway
lg baseline "${BIG[@]}" --url "$(urls "${NODE[@]}")" --watch "${NODE6_WATCH#,}" --server-prefix node
for i in 3 4 5 6; do eval "stop_pid \$PID_GW$i; stop_pid \$PID_NODE$i"; done
fi

# --- scenario 5: long-polling (issue #13) -----------------------------------
# The same load generator with raw Engine.IO polling clients (a held GET
# each, POSTs on a second connection, never upgraded): memory per idle
# polling session next to the WebSocket rows of scenario 2, and the fan-out
# over polling. Both systems serve polling from each process (no
# stickiness is needed: every client talks to one process).
if want polling; then
  restart_servers
  IDLE=(idle --transport polling --connections "$POLL_IDLE" --hold-secs "$HOLD" --max-per-process "$MAX_PER_PROC" --prefix i)
  lg confab "${IDLE[@]}" --url "$(urls "${GW[0]}")" --watch "$CONFAB_WATCH" --server-prefix gateway-1
  lg baseline "${IDLE[@]}" --url "$(urls "${NODE[0]}")" --watch "$NODE_WATCH" --server-prefix node-1
  FAN=(fanout --transport polling --clients "$FAN_CLIENTS" --room-size "$ROOM_SIZE" --rates "$FAN_RATES" --step-secs "$STEP_SECS" --prefix f)
  lg confab "${FAN[@]}" --url "$(urls "${GW[0]}" "${GW[1]}")" --watch "$CONFAB_WATCH"
  lg baseline "${FAN[@]}" --url "$(urls "${NODE[0]}" "${NODE[1]}")" --watch "$NODE_WATCH"
fi

# --- scenario 3: recovery (issue #5) ----------------------------------------
if want recovery; then
  "$LOADGEN" setup --api "$API" --service-token-file "$RUN/service-token" \
    --prefix r --rooms "$REC_ROOMS" --room-size "$ROOM_SIZE" >>"$OUT/logs/setup.log"
  lg confab recover --mode replay --missed "$REC_MISSED" --prefix v --room-size 2 \
    --url "$(urls "${GW[0]}")" --publish-url "$(urls "${GW[1]}")"
  lg confab recover --mode mass --sessions "$REC_SESSIONS" --prefix r --room-size "$ROOM_SIZE" \
    --url "$(urls "${GW[0]}")" --publish-url "$(urls "${GW[1]}")" --reconnect-url "$(urls "${GW[1]}")" \
    --kill-pid "$PID_GW1" --nats-monitor "http://127.0.0.1:$NATS_MONITOR_PORT"
  # Where the reconnects' time goes: the same again (gateway 1 restarted),
  # recorded on the surviving gateway, membership and NATS from the kill.
  cluster_up >/dev/null
  profile_during recovery "exit:$PID_GW1" 12 "gateway-2=$PID_GW2,membership=$PID_MEMB,nats=$PID_NATS" \
    recover --mode mass --sessions "$REC_SESSIONS" --prefix r --room-size "$ROOM_SIZE" \
    --url "$(urls "${GW[0]}")" --publish-url "$(urls "${GW[1]}")" --reconnect-url "$(urls "${GW[1]}")" \
    --kill-pid "$PID_GW1"
  # The same on Redis: no JetStream consumers to count (no --nats-monitor:
  # the consumer figures are null and the report says why).
  redis_up everysec
  "$LOADGEN" setup --api "http://127.0.0.1:$RMEMB_PORT" --service-token-file "$RRUN/service-token" \
    --prefix r --rooms "$REC_ROOMS" --room-size "$ROOM_SIZE" >>"$OUT/logs/setup.log"
  lg confab-redis recover --mode replay --missed "$REC_MISSED" --prefix v --room-size 2 \
    --url "$(urls "${RGW[0]}")" --publish-url "$(urls "${RGW[1]}")"
  lg confab-redis recover --mode mass --sessions "$REC_SESSIONS" --prefix r --room-size "$ROOM_SIZE" \
    --url "$(urls "${RGW[0]}")" --publish-url "$(urls "${RGW[1]}")" --reconnect-url "$(urls "${RGW[1]}")" \
    --kill-pid "$PID_RGW1"
  redis_up everysec
  profile_during recovery-redis "exit:$PID_RGW1" 8 "gateway-2=$PID_RGW2,membership=$PID_RMEMB,redis=$PID_RREDIS" \
    recover --mode mass --sessions "$REC_SESSIONS" --prefix r --room-size "$ROOM_SIZE" \
    --url "$(urls "${RGW[0]}")" --publish-url "$(urls "${RGW[1]}")" --reconnect-url "$(urls "${RGW[1]}")" \
    --kill-pid "$PID_RGW1"
  redis_down
else
  say "scenario 3 (recovery) not asked for (BENCH_SCENARIOS)"
fi

# --- report -----------------------------------------------------------------
say "writing the report"
# A full run also rewrites the README's benchmark summary from the same
# figures (BENCH_README=0: not).
README_ARGS=()
[ "$MODE" = full ] && [ "${BENCH_README:-1}" = 1 ] && README_ARGS=(--readme "$ROOT/README.md")
PYTHONPATH="$PYDIR${PYTHONPATH:+:$PYTHONPATH}" python3 "$BENCH/report.py" "$OUT" "${README_ARGS[@]}" ||
  say "report.py failed (results.jsonl is kept)"
say "done: $OUT/report.md"
