//! Metrics of session auth (`auth.session`): calls to the app, their
//! latency, cache hits, shared lookups and the circuit breaker.

use std::time::Duration;

use confab_auth::session::SessionObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `user`, `no_session`, `timeout`, `unreachable`, `status_5xx`, ...
    pub outcome: String,
}

/// Session auth's metrics (registered under `confab_gateway_session_`).
#[derive(Clone)]
pub struct SessionMetrics {
    /// Calls to the app, by outcome.
    pub calls: Family<OutcomeLabel, Counter>,
    /// Latency of calls to the app, in seconds.
    pub latency: Histogram,
    /// Verdicts taken from the cache, by verdict.
    pub cache_hits: Family<OutcomeLabel, Counter>,
    /// Lookups that joined one already running for the same session.
    pub shared: Counter,
    /// Lookups refused at once by the open breaker.
    pub breaker_rejected: Counter,
    /// Times the breaker opened.
    pub breaker_opened: Counter,
}

impl SessionMetrics {
    /// Registers the metrics in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            latency: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
            cache_hits: Family::default(),
            shared: Counter::default(),
            breaker_rejected: Counter::default(),
            breaker_opened: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("session");
        r.register(
            "calls",
            "Calls to the app's session endpoint, by outcome",
            m.calls.clone(),
        );
        r.register(
            "call_seconds",
            "Latency of calls to the app's session endpoint",
            m.latency.clone(),
        );
        r.register(
            "cache_hits",
            "Session verdicts served from the cache, by verdict",
            m.cache_hits.clone(),
        );
        r.register(
            "shared_lookups",
            "Session lookups that joined one already running for the same credentials",
            m.shared.clone(),
        );
        r.register(
            "breaker_rejections",
            "Session lookups refused at once by the open circuit breaker",
            m.breaker_rejected.clone(),
        );
        r.register(
            "breaker_opened",
            "Times the session circuit breaker opened",
            m.breaker_opened.clone(),
        );
        m
    }
}

impl SessionObserver for SessionMetrics {
    fn call(&self, outcome: &'static str, latency: Duration) {
        self.calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.latency.observe(latency.as_secs_f64());
    }
    fn cache_hit(&self, verdict: &'static str) {
        self.cache_hits
            .get_or_create(&OutcomeLabel {
                outcome: verdict.into(),
            })
            .inc();
    }
    fn shared(&self) {
        self.shared.inc();
    }
    fn breaker_rejected(&self) {
        self.breaker_rejected.inc();
    }
    fn breaker_opened(&self) {
        self.breaker_opened.inc();
    }
}
