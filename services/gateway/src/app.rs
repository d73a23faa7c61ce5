//! The gateway application: binds its listener, wires engine, hub and
//! handler, serves HTTP, and shuts down in one place.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use confab_auth::Verifier;
use confab_auth::session::{SessionAuth, SessionError};
use confab_events::RoomId;
use confab_protocol::engineio::HandshakeError;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::{Admin, Operate};
use crate::config::{BusKind, GatewayConfig, MembershipKind};
use crate::cors;
use crate::engine::{Engine, EngineHooks};
use crate::features::history::{MessageCalls, NatsHistory, NoHistory};
use crate::features::membership::{CacheLimits, Membership, NatsMembership, StaticMembership};
use crate::features::presence::{LocalPresence, NatsPresence, NoPresence, Presence, RedisPresence};
use crate::features::recovery::{
    MemorySessions, NatsSessions, Recovery, RedisSessions, SessionStore,
};
use crate::forwarding::redis::RedisTransport;
use crate::forwarding::transport::NatsTransport;
use crate::forwarding::{self, Wire, WireForwarder};
use crate::handler::{ConfabHandler, HandlerDeps};
use crate::hub::Hub;
use crate::identity::GatewayId;
use crate::metrics::Metrics;
use confab_bus::{Bus, BusError, BusMessage, InProcessBus, NatsBus, RedisBus};

/// A failure to start or run the gateway.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The auth configuration was refused.
    #[error("auth: {0}")]
    Auth(String),
    /// The bus could not be set up.
    #[error("bus: {0}")]
    Bus(String),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
}

/// The ports the gateway talks through.
#[derive(Clone)]
pub struct Deps {
    /// Where room events travel.
    pub bus: Arc<dyn Bus>,
    /// Who belongs where.
    pub membership: Arc<dyn Membership>,
    /// Where presence is tracked ([`NoPresence`] without a membership
    /// service).
    pub presence: Arc<dyn Presence>,
    /// Where message history, edits and deletes are answered
    /// ([`NoHistory`] without a membership service).
    pub history: Arc<dyn MessageCalls>,
    /// Where recoverable sessions are kept. `None`: in this process's memory,
    /// which is refused on a bus shared by several gateways (a client that
    /// reconnects elsewhere must find its session).
    pub sessions: Option<Arc<dyn SessionStore>>,
    /// Where polling requests for another gateway's session are forwarded
    /// and this gateway's are answered (no sticky sessions needed). `None`:
    /// this gateway answers only its own sessions (one process).
    pub forwarding: Option<Forwarding>,
}

/// The message system polling forwarding runs on (the cluster's bus).
#[derive(Clone)]
pub enum Forwarding {
    /// NATS core request/reply (also the Admin UI's cluster view).
    Nats(async_nats::Client),
    /// Redis pub/sub, one topic per gateway.
    Redis(RedisBus),
}

impl Deps {
    /// Connects the ports the configuration names. A NATS bus that cannot
    /// be reached, or a server older than 2.10, is an error (a Redis bus
    /// that cannot be reached, or older than 7.0, too): there is no silent
    /// fallback to the in-process bus.
    pub async fn connect(config: &GatewayConfig) -> Result<Deps, AppError> {
        let mut nats_client = None;
        let mut redis_bus = None;
        let mut forwarding = None;
        let mut sessions: Option<Arc<dyn SessionStore>> = None;
        let bus: Arc<dyn Bus> = match config.bus.kind {
            BusKind::InProcess => Arc::new(InProcessBus::default()),
            // Sessions, liveness and polling forwarding in Redis.
            BusKind::Redis => {
                let bus = RedisBus::connect(config.bus.redis.clone())
                    .await
                    .map_err(|e| AppError::Bus(e.to_string()))?;
                let r = &config.recovery;
                if r.enabled {
                    sessions = Some(Arc::new(RedisSessions::new(
                        &bus,
                        r.window,
                        r.session_max_age,
                    )));
                }
                redis_bus = Some(bus.clone());
                forwarding = Some(Forwarding::Redis(bus.clone()));
                Arc::new(bus)
            }
            BusKind::Nats => {
                let r = &config.recovery;
                // Replays that need a JetStream consumer are bounded in the
                // bus.
                let nats = confab_bus::NatsConfig {
                    max_replay_consumers: r.max_concurrent_replays,
                    ..config.bus.nats.clone()
                };
                let bus = NatsBus::connect(nats)
                    .await
                    .map_err(|e| AppError::Bus(e.to_string()))?;
                nats_client = Some(bus.client().clone());
                forwarding = nats_client.clone().map(Forwarding::Nats);
                if r.enabled {
                    let store = NatsSessions::open(
                        bus.jetstream(),
                        r.window,
                        r.session_max_age,
                        bus.config().replicas,
                    )
                    .await
                    .map_err(|e| AppError::Bus(e.to_string()))?;
                    sessions = Some(Arc::new(store));
                }
                Arc::new(bus)
            }
        };
        let http_client = (config.membership.kind == MembershipKind::Http).then(|| {
            confab_contracts::ServiceClient::http(
                &config.membership.url,
                &config.service_token_or_empty(),
                config.membership.request_timeout,
            )
        });
        let history: Arc<dyn MessageCalls> = match (&nats_client, &http_client) {
            (Some(client), _) if config.membership.kind == MembershipKind::Nats => {
                Arc::new(NatsHistory::new(
                    client.clone(),
                    config.service_token_or_empty(),
                    config.membership.request_timeout,
                ))
            }
            (_, Some(http)) => Arc::new(NatsHistory::with_client(http.clone())),
            _ => Arc::new(NoHistory),
        };
        let (membership, presence): (Arc<dyn Membership>, Arc<dyn Presence>) =
            match (config.membership.kind, nats_client) {
                (MembershipKind::Static, _) => {
                    (Arc::new(StaticMembership::new()), Arc::new(NoPresence))
                }
                (MembershipKind::Http, _) => {
                    let (Some(http), Some(redis)) = (http_client, redis_bus) else {
                        return Err(AppError::Bus(
                            "membership.kind = \"http\" needs bus.kind = \"redis\"".into(),
                        ));
                    };
                    (
                        Arc::new(NatsMembership::with_client(http.clone())),
                        Arc::new(RedisPresence::new(redis, http)),
                    )
                }
                (MembershipKind::Nats, Some(client)) => {
                    let token = config.service_token_or_empty();
                    let timeout = config.membership.request_timeout;
                    (
                        Arc::new(NatsMembership::new(client.clone(), token.clone(), timeout)),
                        Arc::new(NatsPresence::new(client, token, timeout)),
                    )
                }
                (MembershipKind::Nats, None) => {
                    return Err(AppError::Bus(
                        "membership.kind = \"nats\" needs bus.kind = \"nats\"".into(),
                    ));
                }
            };
        Ok(Deps {
            bus,
            membership,
            presence,
            history,
            sessions,
            forwarding,
        })
    }
}

#[derive(Clone)]
struct AppState {
    gateway: GatewayId,
    /// Every log line of this gateway is inside this span (field
    /// `gateway`).
    span: tracing::Span,
    engine: Arc<Engine<ConfabHandler>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    presence: Arc<LocalPresence>,
    recovery: Option<Arc<Recovery>>,
    /// The Admin UI's namespace, when on.
    admin: Option<Arc<Admin>>,
    /// Session auth, when on (its breaker answers new handshakes).
    session: Option<SessionAuth>,
    config: Arc<GatewayConfig>,
    shutting_down: Arc<AtomicBool>,
}

/// A built gateway, listening but not yet serving.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
}

/// A handle to a running gateway: emit to rooms, read metrics, stop it.
#[derive(Clone)]
pub struct AppHandle {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    local_addr: SocketAddr,
}

impl AppHandle {
    /// Publishes an event with one argument to a room, on every gateway
    /// sharing the bus.
    pub async fn emit(&self, room: &RoomId, event: &str, data: &Value) -> Result<(), BusError> {
        self.hub
            .publish(room, BusMessage::new(event, data))
            .await
            .map(|_| ())
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How many local sockets are in a room.
    pub fn members(&self, room: &RoomId) -> usize {
        self.hub.members(room)
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Where the gateway listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl App {
    /// Binds the listener (port 0 picks a free one) and wires everything.
    pub async fn build(config: GatewayConfig, deps: Deps) -> Result<App, AppError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let gateway = GatewayId::random();
        // Log context only: not exported, or every trace of the process
        // would be one endless trace under it.
        let span = tracing::info_span!(target: confab_telemetry::LOG_CONTEXT, "gateway", gateway = %gateway);
        let metrics = Arc::new(Metrics::new());
        let verifier =
            Verifier::new(config.auth.clone()).map_err(|e| AppError::Auth(e.to_string()))?;
        let session = SessionAuth::new(&config.auth.session, Arc::new(metrics.session.clone()))
            .map_err(|e| AppError::Auth(e.to_string()))?;
        let r = &config.recovery;
        // The hub's dispatcher task logs inside the gateway's span.
        let hub = span
            .in_scope(|| Hub::with_offsets(Arc::clone(&deps.bus), Arc::clone(&metrics), r.enabled));
        let recovery = if r.enabled {
            let sessions = match deps.sessions {
                Some(store) => store,
                None if deps.bus.status().shared => {
                    return Err(AppError::Bus(
                        "connection-state recovery needs a session store shared by every gateway (NATS KV or Redis) on a shared bus; keeping sessions in one gateway's memory would break recovery on another gateway".into(),
                    ));
                }
                None => Arc::new(MemorySessions::new(r.window, r.session_max_age)),
            };
            Some(Recovery::new(
                r,
                sessions,
                Arc::clone(&deps.bus),
                Arc::clone(&metrics),
                gateway.clone(),
            ))
        } else {
            None
        };
        let presence = LocalPresence::new(
            deps.presence,
            config.presence.heartbeat,
            config.presence.full_sync_every,
            gateway.clone(),
        );
        // The cluster's NATS connection, when there is one: every gateway
        // then shows in the Admin UI.
        let admin = Admin::new(
            &config.admin,
            gateway.clone(),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            match &deps.forwarding {
                Some(Forwarding::Nats(client)) => Some(client.clone()),
                _ => None,
            },
        );
        let handler = Arc::new(ConfabHandler::new(HandlerDeps {
            verifier,
            session: session.clone(),
            cors: config.cors.clone(),
            membership: deps.membership,
            access: CacheLimits {
                ttl: config.membership.cache_ttl,
                rooms_per_user: config.membership.cache_rooms_per_user,
                max_users: config.membership.cache_users,
            },
            hub: Arc::clone(&hub),
            metrics: Arc::clone(&metrics),
            messages: config.messages.clone(),
            presence: Arc::clone(&presence),
            history: deps.history,
            recovery: recovery.clone(),
            limits: config.limits.clone(),
            admin: admin.clone(),
        }));
        let operate: std::sync::Weak<dyn Operate> = {
            let strong: Arc<dyn Operate> = handler.clone();
            Arc::downgrade(&strong)
        };
        let mut engine_config = config.engine.to_engine_config();
        engine_config.shutdown_spread = config.shutdown_spread;
        engine_config.connections_per_ip = config.limits.connections_per_ip;
        let shutdown = CancellationToken::new();
        // Polling sids name this gateway: a later forwarder finds the owner.
        let engine = Engine::new_owned(
            engine_config,
            handler,
            shutdown.clone(),
            Arc::clone(&metrics) as Arc<dyn EngineHooks>,
            gateway.as_str(),
        );
        if let Some(admin) = &admin {
            admin.wire(Arc::clone(engine.polling()), operate);
        }
        if let Some(on) = deps.forwarding {
            let wire: Wire = match on {
                Forwarding::Nats(client) => Arc::new(NatsTransport(client)),
                Forwarding::Redis(bus) => Arc::new(
                    RedisTransport::start(bus, gateway.as_str())
                        .instrument(span.clone())
                        .await
                        .map_err(|e| AppError::Bus(e.to_string()))?,
                ),
            };
            let token = config.service_token_or_empty();
            let ping = engine.config().ping_interval;
            let write = engine.config().write_timeout;
            let hold = forwarding::hold_limit(ping);
            let forwarder = WireForwarder::new(Arc::clone(&wire), &token, hold, write);
            engine.polling().set_forwarder(Arc::new(forwarder));
            let sessions = Arc::clone(engine.polling());
            let served = forwarding::serve(
                wire,
                gateway.as_str(),
                &token,
                sessions,
                ping,
                write,
                shutdown.clone(),
            );
            served
                .instrument(span.clone())
                .await
                .map_err(|e| AppError::Bus(e.to_string()))?;
        }
        let state = AppState {
            gateway,
            span,
            engine,
            hub,
            metrics,
            presence,
            recovery,
            admin,
            session,
            config: Arc::new(config),
            shutting_down: Arc::new(AtomicBool::new(false)),
        };
        let path = state.config.path.clone();
        let trimmed = path.trim_end_matches('/').to_string();
        let router = Router::new()
            .route(&path, any(socket_io))
            .route(&trimmed, any(socket_io))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(state.clone());
        Ok(App {
            listener,
            local_addr,
            router,
            state,
            shutdown,
        })
    }

    /// Where the gateway listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for emitting, metrics and shutdown.
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            hub: Arc::clone(&self.state.hub),
            metrics: Arc::clone(&self.state.metrics),
            shutdown: self.shutdown.clone(),
            local_addr: self.local_addr,
        }
    }

    /// Serves until `signal` resolves or [`AppHandle::shutdown`] is called,
    /// then shuts down: readiness turns false, no new connections are
    /// accepted, every socket gets a close frame (1001), and connection
    /// tasks are awaited up to the grace period.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let span = self.state.span.clone();
        self.serve(signal).instrument(span).await
    }

    async fn serve(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let App {
            listener,
            router,
            state,
            shutdown,
            ..
        } = self;
        let token = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal => token.cancel(),
                _ = token.cancelled() => {}
            }
        });
        let flag = Arc::clone(&state.shutting_down);
        let stop = shutdown.clone();
        let serve = confab_http::serve(
            listener,
            router,
            state.config.limits.header_read_timeout,
            async move {
                stop.cancelled().await;
                flag.store(true, Ordering::SeqCst);
                tracing::info!("shutting down: closing sockets");
            },
        );
        // Heartbeats run inside this future: a gateway whose `run` is gone
        // stops reporting, and the tracker expires its users.
        let liveness = {
            let recovery = state.recovery.clone();
            let shutdown = shutdown.clone();
            async move {
                if let Some(r) = recovery {
                    r.run(shutdown).await;
                }
            }
        };
        let admin = {
            let admin = state.admin.clone();
            let shutdown = shutdown.clone();
            async move {
                if let Some(a) = admin {
                    a.run(shutdown).await;
                }
            }
        };
        tokio::join!(serve, state.presence.run(shutdown.clone()), liveness, admin);
        let grace = state.config.shutdown_grace;
        if !state.engine.drain(grace).await {
            tracing::warn!(
                remaining = state.engine.connections(),
                "connections still open after the grace period"
            );
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

async fn socket_io(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if !cors::permitted(&state.config.cors, origin.as_ref()) {
        state.metrics.handshake_failed("origin_not_allowed");
        let e = HandshakeError::Forbidden;
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            e.to_json(),
        )
            .into_response();
    }
    if req.method() == Method::OPTIONS {
        return cors::preflight(origin.as_ref(), req.headers());
    }
    let trust_xff = state.config.auth.session.trust_forwarded_for;
    let kept = connect_headers(req.headers(), trust_xff);
    let query = req.uri().query().map(str::to_owned);
    if let Some(mut refused) = session_unavailable(&state, query.as_deref(), &kept, remote)
        .instrument(state.span.clone())
        .await
    {
        cors::allow(origin.as_ref(), refused.headers_mut());
        return refused;
    }
    // The connection task starts inside the gateway's span.
    let mut response = state
        .engine
        .serve(req, kept, Some(remote))
        .instrument(state.span.clone())
        .await;
    cors::allow(origin.as_ref(), response.headers_mut());
    response
}

/// A new handshake with a session credential is looked up at once (the
/// CONNECT that follows then finds the verdict in the cache): when the app
/// is unavailable the handshake is answered `503`. The client sees
/// `connect_error` and its Manager retries with growing backoff; a
/// CONNECT_ERROR would end the socket for good, and a transport closed
/// after the handshake is retried at the shortest delay only.
async fn session_unavailable(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    remote: SocketAddr,
) -> Option<Response> {
    let session = state.session.as_ref()?;
    let fresh = !query
        .unwrap_or_default()
        .split('&')
        .any(|p| p.starts_with("sid="));
    if !fresh || !session.has_credentials(headers) {
        return None;
    }
    let Err(SessionError::Unavailable { .. }) = session.resolve(headers, Some(remote.ip())).await
    else {
        return None;
    };
    state.metrics.handshake_failed("auth_unavailable");
    let body = json!({
        "code": "auth_unavailable",
        "message": "the auth backend is unavailable; retry with backoff",
    });
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(body),
        )
            .into_response(),
    )
}

/// The upgrade request's headers that CONNECT handling reads (the origin,
/// the cookie and bearer credentials, and `X-Forwarded-For` when a trusted
/// proxy sets it): a connection keeps these for its whole life, not the
/// whole request.
fn connect_headers(all: &HeaderMap, trust_xff: bool) -> HeaderMap {
    let mut kept = HeaderMap::new();
    let xff = header::HeaderName::from_static("x-forwarded-for");
    let names = [header::ORIGIN, header::COOKIE, header::AUTHORIZATION, xff];
    let names = if trust_xff { &names[..] } else { &names[..3] };
    for name in names {
        for value in all.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let bus = state.hub.bus().status();
    let shutting_down = state.shutting_down.load(Ordering::SeqCst);
    let ready = bus.connected && !shutting_down;
    let body = json!({
        "ready": ready,
        "gateway": state.gateway.as_str(),
        "shutting_down": shutting_down,
        "bus": bus,
        "connections": state.engine.connections(),
        "polling_sessions": state.engine.polling().len(),
        "rooms": state.hub.room_count(),
        "recovery": state.recovery.as_ref().map(|r| json!({
            "gateway": r.gateway().as_str(),
            "sessions": r.store_kind(),
            "window_ms": u64::try_from(state.config.recovery.window.as_millis()).unwrap_or(u64::MAX),
        })),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let bus = state.hub.bus().status();
    state.metrics.bus_connected.set(i64::from(bus.connected));
    // The bus counts; the counter follows it (never down, whatever the
    // order of concurrent scrapes).
    state
        .metrics
        .bus_reconnects
        .inner()
        .fetch_max(bus.reconnects, Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Resolves on SIGINT or SIGTERM: the signal for [`App::run`] in binaries.
pub use confab_telemetry::shutdown_signal;
