//! Prometheus metrics of the gateway, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::EngineHooks;

mod session;

pub use session::SessionMetrics;

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Short machine code, e.g. `token_expired`.
    pub reason: String,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Rooms with at least one local socket.
    pub rooms: Gauge,
    /// Whether the bus (NATS, Redis) works now, as `/readyz` reports it:
    /// set when `/metrics` is scraped.
    pub bus_connected: Gauge,
    /// Times a connection of the bus came back after it was lost
    /// ([`confab_bus::BusStatus::reconnects`]): brought up to date when
    /// `/metrics` is scraped.
    pub bus_reconnects: Counter,
    /// Socket.IO packets received.
    pub events_in: Counter,
    /// Frames written to clients.
    pub events_out: Counter,
    /// Frames dropped, by reason.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Refused handshakes, by reason.
    pub handshake_failures: Family<ReasonLabel, Counter>,
    /// Connections closed by the server, by reason.
    pub closed: Family<ReasonLabel, Counter>,
    /// Connection-state recovery attempts, by outcome (`recovered` or the
    /// failure reason).
    pub recoveries: Family<ReasonLabel, Counter>,
    /// Events replayed to recovered sessions.
    pub replayed: Counter,
    /// Recovery replays running now (on NATS, those that read through a
    /// JetStream consumer are bounded by `recovery.max_concurrent_replays`).
    pub replays_running: Gauge,
    /// Recovery replays by how the log was read (`direct`: NATS direct
    /// gets, no consumer; `consumer`: a JetStream consumer; `log`: the
    /// in-process log).
    pub replays: Family<PathLabel, Counter>,
    /// Client events refused by their socket's event budget.
    pub rate_limited: Family<RefusedLabel, Counter>,
    /// Events the recovery replays read from the log (whether or not the
    /// recovery then succeeded).
    pub replay_reads: Counter,
    /// Socket control events of the emitter bridge applied to local
    /// sockets, by action (`join`, `leave`, `disconnect`) and outcome
    /// (`done`, `refused`: the authority did not let the user in the room,
    /// `invalid`: an unreadable control event).
    pub socket_controls: Family<ControlLabel, Counter>,
    /// Session auth (`auth.session`).
    pub session: SessionMetrics,
}

/// The labels of an applied socket control event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlLabel {
    /// `join`, `leave` or `disconnect`.
    pub action: String,
    /// `done`, `refused` or `invalid`.
    pub outcome: String,
}

/// The labels of a client event refused by the socket's event budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    /// The event's name (`other` for names the gateway does not serve).
    pub event: String,
    /// `answered` (the client asked for an ack and got `rate_limited`) or
    /// `dropped` (no ack asked: the event was dropped).
    pub outcome: String,
}

/// A `path` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// How something was done, e.g. `direct`.
    pub path: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("confab_gateway");
        let connections = Gauge::default();
        let rooms = Gauge::default();
        let bus_connected = Gauge::default();
        let bus_reconnects = Counter::default();
        let events_in = Counter::default();
        let events_out = Counter::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let handshake_failures = Family::<ReasonLabel, Counter>::default();
        let closed = Family::<ReasonLabel, Counter>::default();
        let recoveries = Family::<ReasonLabel, Counter>::default();
        let replayed = Counter::default();
        let replays_running = Gauge::default();
        let replays = Family::<PathLabel, Counter>::default();
        let rate_limited = Family::<RefusedLabel, Counter>::default();
        let replay_reads = Counter::default();
        let socket_controls = Family::<ControlLabel, Counter>::default();
        registry.register(
            "socket_controls",
            "Socket control events of the emitter bridge applied to local sockets, by action and outcome",
            socket_controls.clone(),
        );
        registry.register(
            "events_rate_limited",
            "Client events refused by their socket's event budget, by event and outcome (answered, dropped)",
            rate_limited.clone(),
        );
        registry.register(
            "replay_read_events",
            "Events read from the log by recovery replays",
            replay_reads.clone(),
        );
        registry.register(
            "recoveries",
            "Connection-state recovery attempts, by outcome",
            recoveries.clone(),
        );
        registry.register(
            "replayed_events",
            "Events replayed to recovered sessions",
            replayed.clone(),
        );
        registry.register(
            "replays_running",
            "Recovery replays running now",
            replays_running.clone(),
        );
        registry.register(
            "replays",
            "Recovery replays, by how the event log was read (direct, consumer, log)",
            replays.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register("rooms", "Rooms with local members", rooms.clone());
        registry.register(
            "bus_connected",
            "Whether the bus (NATS, Redis) works now (1) or not (0)",
            bus_connected.clone(),
        );
        registry.register(
            "bus_reconnects",
            "Times a connection of the bus (NATS client; Redis command or pub/sub connection) came back after it was lost",
            bus_reconnects.clone(),
        );
        registry.register("events_in", "Socket.IO packets received", events_in.clone());
        registry.register(
            "events_out",
            "Frames written to clients",
            events_out.clone(),
        );
        registry.register("dropped", "Frames dropped, by reason", dropped.clone());
        registry.register(
            "handshake_failures",
            "Refused handshakes, by reason",
            handshake_failures.clone(),
        );
        registry.register(
            "closed",
            "Connections closed by the server, by reason",
            closed.clone(),
        );
        let session = SessionMetrics::register(&mut registry);
        Self {
            session,
            registry,
            connections,
            rooms,
            bus_connected,
            bus_reconnects,
            events_in,
            events_out,
            dropped,
            handshake_failures,
            closed,
            recoveries,
            replayed,
            replays_running,
            replays,
            rate_limited,
            replay_reads,
            socket_controls,
        }
    }

    /// Counts a socket control applied to one local socket (and room).
    pub fn socket_control(&self, action: &str, outcome: &str) {
        self.socket_controls
            .get_or_create(&ControlLabel {
                action: action.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts a client event refused by its socket's budget.
    pub fn rate_limited(&self, event: &str, answered: bool) {
        self.rate_limited
            .get_or_create(&RefusedLabel {
                event: event.into(),
                outcome: if answered { "answered" } else { "dropped" }.into(),
            })
            .inc();
    }

    /// Counts a recovery replay by how it read the log.
    pub fn replay_path(&self, path: &str) {
        self.replays
            .get_or_create(&PathLabel { path: path.into() })
            .inc();
    }

    /// Counts a recovery attempt's outcome.
    pub fn recovery(&self, outcome: &str) {
        self.recoveries
            .get_or_create(&ReasonLabel {
                reason: outcome.into(),
            })
            .inc();
    }

    /// Counts a dropped frame.
    pub fn dropped(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl EngineHooks for Metrics {
    fn connection_opened(&self) {
        self.connections.inc();
    }
    fn connection_closed(&self) {
        self.connections.dec();
    }
    fn packet_in(&self) {
        self.events_in.inc();
    }
    fn frame_out(&self) {
        self.events_out.inc();
    }
    fn handshake_failed(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
    fn closed_for(&self, reason: &str) {
        self.closed
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}
