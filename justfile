# Confab developer commands. `just --list` shows them.
# Install just with `cargo install just` or `pip install rust-just`.

# Run the all-in-one process (gateway on the in-process bus, port 3000).
run:
    cargo run --release

# A chat page on the all-in-one for two browser tabs: http://127.0.0.1:8080/?user=alice and ?user=bob.
demo:
    cargo build --release -p confab
    @[ -d clients/js/node_modules ] || npm ci --prefix clients/js --no-audit --no-fund
    npm run build --prefix clients/js --silent
    @[ -d clients/demo/node_modules ] || npm ci --prefix clients/demo --no-audit --no-fund
    node clients/demo/serve.mjs

# Screenshot the demo (alice and bob talking) into docs/demo.png with Debian's chromium.
demo-screenshot:
    cargo build --release -p confab
    @[ -d clients/js/node_modules ] || npm ci --prefix clients/js --no-audit --no-fund
    npm run build --prefix clients/js --silent
    @[ -d clients/demo/node_modules ] || npm ci --prefix clients/demo --no-audit --no-fund
    node clients/demo/screenshot.mjs

# Print a token for USER: the local cluster's when it has a secret, else an all-in-one dev token.
token USER:
    @if [ -s .run/jwt-secret ]; then bash deploy/local/cluster.sh token {{USER}}; else cargo run --release --quiet -- token {{USER}}; fi

# The test suite (what CI runs, after fmt and clippy).
test:
    cargo test --workspace

# Format, lint and test, exactly as CI does.
ci:
    bash .ci/run

# Format the code.
fmt:
    cargo fmt --all

# Lint with warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Lint the Containerfile, validate the Kubernetes manifests and systemd units.
deploy-check:
    bash deploy/check.sh

# Start the protocol conformance server on port 3000 for the official
# Socket.IO / Engine.IO test suites.
conformance:
    cargo run --release -p confab-gateway --example conformance

# Fuzz every target (protocol decode, polling payload, JWT) for SECONDS seconds each.
fuzz SECONDS="60":
    bash .ci/fuzz.sh {{SECONDS}}

# Regenerate the checked-in TypeScript declarations of the socket events.
typescript:
    CONFAB_BLESS=1 cargo test -p confab-events typescript

# Rewrite README.md's configuration tables from the typed configurations.
config-table:
    CONFAB_BLESS=1 cargo test -p confab --test config_table

# Builds first, starts only what is not running, waits until all is ready;
# DATABASE_URL=postgres://... keeps the membership projections in Postgres;
# CONFAB_NATS_NODES=3 runs a 3-node JetStream cluster (replicas 3).
# Start a local cluster: nats-server (JetStream), membership, two gateways.
up:
    bash deploy/local/cluster.sh up

# The fault suite (one at a time, a 3-node JetStream cluster, nats +
# gateway killed together, ...): real processes, careful clients, a
# checker; the figures are appended to REPORT (issue #16).
chaos REPORT="tests/faults/report.md":
    mkdir -p "$(dirname "{{REPORT}}")"
    CONFAB_FAULTS_REPORT="$(realpath -m "{{REPORT}}")" cargo test --workspace --test e2e faults -- --test-threads 1 --nocapture
    cargo test --workspace --test nats_restart -- --nocapture

# Stop the local cluster gracefully (logs and data stay in .run/).
down:
    bash deploy/local/cluster.sh down

# Show what runs and its readiness (exit 1 unless everything is up).
status:
    bash deploy/local/cluster.sh status

# Follow the cluster's logs: all, or one of nats, membership, gateway-N.
logs *NAME:
    bash deploy/local/cluster.sh logs {{NAME}}

# Serve the Socket.IO Admin UI on http://127.0.0.1:3300 for `just up`'s gateways
# (user admin, password in .run/admin-password; CONFAB_ADMIN_MODE=actions just up enables its actions).
admin:
    bash deploy/local/cluster.sh admin

# Print where the local cluster listens.
urls:
    bash deploy/local/cluster.sh urls

# End-to-end check of the running cluster (users on two gateways get an emitted message).
smoke:
    @[ -d tests/js/node_modules/socket.io-client ] || npm ci --prefix tests/js --no-audit --no-fund
    node deploy/local/smoke.mjs

# Benchmarks side by side with the Node.js socket.io + Redis adapter stack
# (fan-out, idle connections, durable publish, recovery); report in bench/results/.
bench:
    bash bench/run.sh full

# One hour (SECONDS) of moderate steady load with churn and recoveries on a local cluster:
# RSS of every process, lost and duplicates; results in bench/results/soak-<UTC time>/.
soak SECONDS="3600":
    bash bench/soak.sh {{SECONDS}}

# The benchmarks with small counts (about 2 minutes), for development.
bench-quick:
    bash bench/run.sh quick
