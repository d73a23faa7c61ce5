# Confab developer commands. `just --list` shows them.
# Install just with `cargo install just` or `pip install rust-just`.

# Run the all-in-one process (gateway on the in-process bus, port 3000).
run:
    cargo run --release

# Print a token for USER: for the local cluster when it runs, else a dev
# token for the all-in-one.
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

# Start the protocol conformance server on port 3000 for the official
# Socket.IO / Engine.IO test suites.
conformance:
    cargo run --release -p confab-gateway --example conformance

# Fuzz the protocol decoder for SECONDS seconds.
fuzz SECONDS="60":
    cd libs/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time={{SECONDS}}

# Regenerate the checked-in TypeScript declarations of the socket events.
typescript:
    CONFAB_BLESS=1 cargo test -p confab-events typescript

# Start a local cluster: nats-server (JetStream), membership, two gateways.
up:
    bash deploy/local/cluster.sh up

# Stop the local cluster.
down:
    bash deploy/local/cluster.sh down

# Show what runs and the gateways' readiness.
status:
    bash deploy/local/cluster.sh status

# Follow the cluster's logs.
logs:
    bash deploy/local/cluster.sh logs
