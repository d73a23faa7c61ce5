//! Wiring: [`MembershipCore`] (service, projector, notifier, NATS API)
//! and [`App`] (the core plus the HTTP listener), built from a
//! [`MembershipConfig`].
//!
//! * **NATS mode** (`[nats]` configured): the event log is stream
//!   `MEMBERSHIP` ([`JetStreamEventStore`], which creates or updates it with
//!   the service's `[nats]` settings; gateways never touch it), room events
//!   go through [`NatsBus`], and the NATS request/reply API is served. The
//!   SQL database holds the projections (and the notifier's checkpoint).
//! * **Redis mode** (`bus.kind = "redis"`): the event log is the SQL
//!   `events` table (as embedded: Postgres in production), room events go
//!   through [`RedisBus`], presence heartbeats arrive on a Redis topic, and
//!   the endpoint table the NATS API would serve is answered over HTTP
//!   (`POST /v1/rpc/{subject}`, service token) for the gateways.
//! * **Embedded mode** (no `[nats]`): the event log is the SQL `events`
//!   table and the bus is in-process. The all-in-one process builds a
//!   [`MembershipCore::embedded`] with its gateway's bus, so membership
//!   notifications reach the gateway's sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use confab_auth::Verifier;
use confab_bus::{Bus, InProcessBus, InProcessLimits, NatsBus, RedisBus};
use confab_contracts::Routes;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api_http::{self, HttpSettings};
use crate::api_nats::{self, NatsApi};
use crate::auth::Authenticator;
use crate::config::{BusKind, MembershipConfig};
use crate::emitter::{EmitterBridge, EmitterConfig};
use crate::health::{LagSource, LastSeq, ProjectionState};
use crate::history::{CheckError, History, HistoryProjector};
use crate::jetstream_store::JetStreamEventStore;
use crate::notifier::Notifier;
use crate::presence::PresenceTracker;
use crate::service::{MembershipService, ServiceSettings};
use crate::sql::{
    self, PROJECTION_NAME, Projector, SqlCheckpoint, SqlEventStore, SqlLogStore, SqlReadModel,
};
use crate::store::EventStore;

/// A failure to start or run the membership service.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(String),
    /// NATS (bus, event log, API) could not be set up.
    #[error("nats: {0}")]
    Nats(String),
    /// The Redis bus could not be set up.
    #[error("redis: {0}")]
    Redis(String),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
    /// A projection refuses to start (e.g. its checkpoint belongs to
    /// another log); the message says what the operator does.
    #[error("projection: {0}")]
    Projection(String),
    /// The `@socket.io/redis-emitter` bridge cannot be set up.
    #[error(transparent)]
    Emitter(#[from] crate::emitter::EmitterError),
}

/// The membership service with its background work (projector, notifier,
/// NATS API), not bound to any HTTP listener: mount [`router`](Self::router)
/// where you like, call the [`service`](Self::service) directly, and
/// [`run`](Self::run) the background work.
pub struct MembershipCore {
    service: Arc<MembershipService>,
    auth: Arc<Authenticator>,
    store: Arc<dyn EventStore>,
    projector: Projector,
    notifier: Notifier,
    nats: Option<async_nats::Client>,
    /// Set in Redis mode: heartbeats come from its topic, and the
    /// endpoint table is served over HTTP.
    redis: Option<RedisBus>,
    presence: Arc<PresenceTracker>,
    history_projector: HistoryProjector,
    history: History,
    emitter: Option<EmitterConfig>,
}

impl std::fmt::Debug for MembershipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipCore")
            .field("nats", &self.nats.is_some())
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl MembershipCore {
    /// Embedded mode: the event log in `db` (SQL), notifications on `bus`
    /// (the all-in-one passes its gateway's bus). `db` must come from
    /// [`sql::connect`] (migrated).
    pub fn embedded(
        db: DatabaseConnection,
        bus: Arc<dyn Bus>,
        auth: Authenticator,
        settings: ServiceSettings,
    ) -> Self {
        let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::new(db.clone()));
        Self::assemble(db, store, bus, auth, settings, None)
    }

    /// NATS mode: the event log in stream `MEMBERSHIP` (created or updated
    /// here to `bus`'s settings), notifications and the request/reply API on
    /// `bus`'s connection, projections in `db`.
    pub async fn nats(
        db: DatabaseConnection,
        bus: NatsBus,
        auth: Authenticator,
        settings: ServiceSettings,
    ) -> Result<Self, AppError> {
        let store: Arc<dyn EventStore> = Arc::new(
            JetStreamEventStore::from_bus(&bus)
                .await
                .map_err(|e| AppError::Nats(e.to_string()))?,
        );
        let client = bus.client().clone();
        Ok(Self::assemble(
            db,
            store,
            Arc::new(bus),
            auth,
            settings,
            Some(client),
        ))
    }

    /// Redis mode: the event log in `db` (SQL, like embedded mode), room
    /// events and notifications on `bus`, presence heartbeats from its
    /// topic, the endpoint table over HTTP. `db` must come from
    /// [`sql::connect`] (migrated).
    pub fn redis(
        db: DatabaseConnection,
        bus: RedisBus,
        auth: Authenticator,
        settings: ServiceSettings,
    ) -> Self {
        let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::new(db.clone()));
        let mut core = Self::assemble(db, store, Arc::new(bus.clone()), auth, settings, None);
        core.redis = Some(bus);
        core
    }

    fn assemble(
        db: DatabaseConnection,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn Bus>,
        auth: Authenticator,
        settings: ServiceSettings,
        nats: Option<async_nats::Client>,
    ) -> Self {
        let projector = Projector::new(db.clone());
        let read = Arc::new(SqlReadModel::new(db.clone()).with_progress(projector.subscribe()));
        let history_projector = HistoryProjector::new(db.clone(), Arc::clone(&bus));
        let history = History::new(&history_projector, Arc::clone(&read) as _);
        let notifier = Notifier::new(
            Arc::clone(&store),
            Arc::clone(&bus),
            Arc::new(SqlCheckpoint::new(db)),
        )
        .after_projection(Arc::clone(&read) as _);
        let service = Arc::new(
            MembershipService::new(Arc::clone(&store), read, bus)
                .with_settings(settings)
                .with_announced(notifier.subscribe()),
        );
        let history_projector = history_projector.with_health(service.health().clone());
        let presence = Arc::new(PresenceTracker::new(
            Arc::clone(&service),
            crate::presence::DEFAULT_TTL,
        ));
        Self {
            presence,
            service,
            auth: Arc::new(auth),
            store,
            projector,
            notifier,
            nats,
            redis: None,
            history_projector,
            history,
            emitter: None,
        }
    }

    /// Runs the `@socket.io/redis-emitter` bridge with the background work
    /// when `config.enabled` (see [`crate::emitter`]).
    pub fn with_emitter(mut self, config: EmitterConfig) -> Self {
        self.emitter = config.enabled.then_some(config);
        self
    }

    /// Message history calls (history, edit, delete).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The service (commands and queries).
    pub fn service(&self) -> &Arc<MembershipService> {
        &self.service
    }

    /// The presence tracker (fed over NATS in NATS mode, in-process by the
    /// all-in-one).
    pub fn presence(&self) -> &Arc<PresenceTracker> {
        &self.presence
    }

    /// Sets how long a gateway's presence report lives (default
    /// [`crate::presence::DEFAULT_TTL`]).
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence = Arc::new(PresenceTracker::new(Arc::clone(&self.service), ttl));
        self
    }

    /// The HTTP API router (with `/v1/rpc/{subject}` in Redis mode).
    pub fn router(&self, settings: &HttpSettings) -> Router {
        api_http::router(
            Arc::clone(&self.service),
            Arc::clone(&self.auth),
            self.history.clone(),
            self.redis.as_ref().map(|_| self.nats_routes()),
            settings,
        )
    }

    /// Every NATS endpoint of the service: the membership API, the history
    /// calls and the presence query.
    fn nats_routes(&self) -> Routes {
        api_nats::membership_routes(Arc::clone(&self.service))
            .merge(api_nats::message_routes(self.history.clone()))
            .merge(api_nats::presence_routes(Arc::clone(&self.presence)))
    }

    /// Starts the projector, the notifier and (in NATS mode) the NATS API;
    /// they run until `shutdown` completes. When this returns, the notifier
    /// knows where it starts and the NATS API is registered, so the service
    /// may take commands. Commands wait for the projector
    /// (read-your-writes): it must run for the service to answer promptly.
    pub async fn start(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<CoreHandle, AppError> {
        self.notifier
            .prepare()
            .await
            .map_err(|e| AppError::Database(format!("notifier checkpoint: {e}")))?;
        match self.history_projector.check_log().await {
            Ok(_) => {}
            Err(CheckError::Mismatch(e)) => {
                tracing::error!(error = %e, "history projection refuses to start");
                return Err(AppError::Projection(e.to_string()));
            }
            // Retried by the projector, and reported by readiness meanwhile.
            Err(e) => tracing::warn!(error = %e, "history projection cannot start yet"),
        }
        let nats_api = match &self.nats {
            Some(client) => Some(
                NatsApi::start(
                    client.clone(),
                    self.nats_routes(),
                    self.auth.service_token().clone(),
                )
                .await
                .map_err(|e| AppError::Nats(e.to_string()))?,
            ),
            None => None,
        };
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let mut tasks = Vec::new();
        let lag_sources = self.lag_sources();
        let projector = self.projector.clone();
        let store = Arc::clone(&self.store);
        let token = stop.clone();
        let health = self.service.health().clone();
        health.set(PROJECTION_NAME, ProjectionState::Running);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = projector.run(store, token.cancelled_owned()).await {
                tracing::error!(error = %e, "membership projector stopped");
                let reason = format!(
                    "the membership projector stopped: {e}; the read model is frozen at its \
                     checkpoint. Repair or remove the event, then restart the service"
                );
                health.set(PROJECTION_NAME, ProjectionState::Stopped { reason });
            }
        }));
        tasks.push(tokio::spawn(
            self.notifier.run(stop.clone().cancelled_owned()),
        ));
        if let Some(api) = nats_api {
            tasks.push(tokio::spawn(api.serve(stop.clone().cancelled_owned())));
        }
        tasks.push(tokio::spawn(
            Arc::clone(&self.presence).run_sweeper(stop.clone().cancelled_owned()),
        ));
        if let Some(client) = &self.nats {
            let presence = Arc::clone(&self.presence);
            let (client, auth, token) = (client.clone(), Arc::clone(&self.auth), stop.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = presence
                    .serve_heartbeats(client, auth, token.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "presence heartbeat subscription failed");
                }
            }));
        }
        if let Some(config) = self.emitter.take() {
            let bridge = EmitterBridge::new(config, Arc::clone(&self.service))?;
            tasks.push(tokio::spawn(bridge.run(stop.clone())));
        }
        if let Some(bus) = &self.redis {
            let presence = Arc::clone(&self.presence);
            let (bus, token) = (bus.clone(), stop.clone());
            let heartbeats = bus
                .subscribe_topic(
                    crate::presence::HEARTBEAT_TOPIC,
                    crate::presence::HEARTBEAT_BUFFER,
                )
                .await
                .map_err(|e| AppError::Redis(e.to_string()))?;
            tasks.push(tokio::spawn(async move {
                presence
                    .serve_topic_heartbeats(heartbeats, token.cancelled_owned())
                    .await;
            }));
        }
        let history_projector = self.history_projector.clone();
        let token = stop.clone();
        tasks.push(tokio::spawn(async move {
            history_projector.run(token.cancelled_owned()).await;
        }));
        tasks.push(tokio::spawn(crate::health::watch_lags(
            self.service.health().clone(),
            lag_sources,
            stop.clone().cancelled_owned(),
        )));
        Ok(CoreHandle { stop, tasks })
    }

    /// The log readers whose lag readiness and metrics report: the
    /// membership projector and the notifier (on the membership log) and
    /// the history projector (on the room log).
    fn lag_sources(&self) -> Vec<LagSource> {
        let membership_last = |store: Arc<dyn EventStore>| -> LastSeq {
            Box::new(move || {
                let store = Arc::clone(&store);
                Box::pin(async move { store.last_seq().await.ok() })
            })
        };
        let bus = Arc::clone(self.service.bus());
        vec![
            LagSource {
                name: PROJECTION_NAME,
                position: self.projector.subscribe(),
                last: membership_last(Arc::clone(&self.store)),
            },
            LagSource {
                name: "notifier",
                position: self.notifier.subscribe(),
                last: membership_last(Arc::clone(&self.store)),
            },
            LagSource {
                name: crate::history::HISTORY_PROJECTION,
                position: self.history_projector.subscribe(),
                last: Box::new(move || {
                    let bus = Arc::clone(&bus);
                    Box::pin(async move { bus.log_info().await.ok().map(|l| l.last_seq) })
                }),
            },
        ]
    }

    /// [`start`](Self::start), then waits until everything stopped.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        self.start(shutdown).await?.stopped().await;
        Ok(())
    }
}

/// The background work of a started [`MembershipCore`].
#[derive(Debug)]
pub struct CoreHandle {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CoreHandle {
    /// Stops the background work (as the shutdown future would).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the background work stopped (after shutdown; the
    /// projector may stop early on an unreadable event, which it logs).
    pub async fn stopped(self) {
        self.stop.cancelled().await;
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "membership background task panicked");
            }
        }
    }
}

/// The membership service process: [`MembershipCore`] plus the HTTP API
/// on its own listener.
pub struct App {
    core: MembershipCore,
    listener: TcpListener,
    http_addr: SocketAddr,
    router: Router,
    grace: Duration,
    header_read_timeout: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("http_addr", &self.http_addr)
            .field("core", &self.core)
            .finish()
    }
}

impl App {
    /// Validates the configuration, opens (and migrates) the database,
    /// connects to NATS when configured, and binds the HTTP listener.
    pub async fn build(config: MembershipConfig) -> Result<App, AppError> {
        config.validate()?;
        let db = sql::connect(&config.database_url)
            .await
            .map_err(|e| AppError::Database(e.to_string()))?;
        let auth = authenticator(&config)?;
        let core = match (&config.nats, config.bus_kind()) {
            (Some(nats), _) => {
                let bus = NatsBus::connect(nats.clone())
                    .await
                    .map_err(|e| AppError::Nats(e.to_string()))?;
                MembershipCore::nats(db, bus, auth, config.service_settings()).await?
            }
            (None, BusKind::Redis) => {
                let bus = RedisBus::connect(config.bus.redis.clone())
                    .await
                    .map_err(|e| AppError::Redis(e.to_string()))?;
                MembershipCore::redis(db, bus, auth, config.service_settings())
            }
            (None, _) => {
                tracing::warn!(
                    "embedded mode: SQL event log and in-process bus; notifications reach no gateway \
                     outside this process (configure [nats] for a cluster)"
                );
                let bus = persistent_bus(&db)
                    .await
                    .map_err(|e| AppError::Database(e.to_string()))?;
                MembershipCore::embedded(db, Arc::new(bus), auth, config.service_settings())
            }
        };
        let core = core.with_presence_ttl(config.presence_ttl);
        Self::with_core(&config, core).await
    }

    /// Binds the HTTP listener of `config` in front of an existing core
    /// (e.g. an embedded one sharing the all-in-one's bus).
    pub async fn with_core(
        config: &MembershipConfig,
        core: MembershipCore,
    ) -> Result<App, AppError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.listen,
                source,
            })?;
        let http_addr = listener.local_addr()?;
        let router = core.router(&config.http_settings());
        let core = core.with_emitter(config.emitter.clone());
        Ok(App {
            core,
            listener,
            http_addr,
            router,
            grace: config.shutdown_grace,
            header_read_timeout: config.header_read_timeout,
        })
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The service (commands and queries).
    pub fn service(&self) -> &Arc<MembershipService> {
        self.core.service()
    }

    /// Serves HTTP and runs the background work until `shutdown`
    /// completes; requests in flight get the grace period to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let App {
            core,
            listener,
            router,
            grace,
            header_read_timeout,
            ..
        } = self;
        let background = core.start(stop.clone().cancelled_owned()).await?;
        let http_stop = stop.clone();
        let server = confab_http::serve(listener, router, header_read_timeout, async move {
            http_stop.cancelled().await;
        });
        let mut served = tokio::spawn(async move {
            server.await;
            Ok::<(), std::io::Error>(())
        });
        tokio::select! {
            () = stop.cancelled() => {}
            r = &mut served => {
                stop.cancel();
                background.stopped().await;
                return match r {
                    Ok(Err(e)) => Err(e.into()),
                    _ => Ok(()),
                };
            }
        }
        tracing::info!("membership shutting down");
        match tokio::time::timeout(grace, &mut served).await {
            Ok(Ok(Err(e))) => return Err(e.into()),
            Err(_) => {
                tracing::warn!("HTTP requests still running after the grace period");
                served.abort();
            }
            _ => {}
        }
        background.stopped().await;
        tracing::info!("membership stopped");
        Ok(())
    }
}

/// The in-process bus of embedded mode, its log stored in `db` (see
/// [`SqlLogStore`]) so that it survives restarts with its sequence.
pub async fn persistent_bus(db: &DatabaseConnection) -> Result<InProcessBus, confab_bus::BusError> {
    InProcessBus::persistent(
        InProcessLimits::default(),
        Arc::new(SqlLogStore::new(db.clone())),
    )
    .await
}

/// The authenticator a configuration describes.
pub fn authenticator(config: &MembershipConfig) -> Result<Authenticator, AppError> {
    let verifier = match &config.auth {
        Some(auth) => Some(Verifier::new(auth.clone()).map_err(|e| {
            AppError::Config(crate::config::ConfigError::invalid("auth", e.to_string()))
        })?),
        None => None,
    };
    Ok(Authenticator::new(config.service_token_text(), verifier))
}
