//! The state every request shares. What lives as long as the process (sessions, observability,
//! the upstream client, connection limits, upstream health) is here; what one config builds
//! (the config itself, each route's pipeline, the plugins, the TLS acceptor) is a
//! [`Generation`], swapped whole by a reload (`reload.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::header::HeaderName;
use tokio_util::sync::CancellationToken;

use super::health::UpstreamHealth;
use super::reload::Reloads;
use crate::config::Config;
use crate::deps::Deps;
use crate::observability::Observability;
use crate::pipeline::Pipeline;
use crate::plugins::Plugins;
use crate::proxy::UpstreamClient;
use crate::session::Sessions;
use crate::stages::ratelimit::MemoryBackend;

/// One loaded config and everything built from it. A request takes the current generation when
/// it starts and keeps it until its response has ended: a reload never changes the stages of a
/// request (or a stream) already under way.
pub struct Generation {
    /// 1 for the config the process started with, one more for every reload that applied.
    pub number: u64,
    pub config: Arc<Config>,
    /// When this generation began serving.
    pub loaded_at: SystemTime,
    pub(crate) plugins: Plugins,
    pub(super) pipelines: HashMap<Arc<str>, Pipeline>,
    /// Header names that carry a caller's credential ([`Config::credential_headers`]): never
    /// forwarded, never audited.
    pub(super) credential_headers: Vec<HeaderName>,
    /// In-memory rate-limit buckets, swept in the background; kept across reloads.
    pub(crate) buckets: Option<Arc<MemoryBackend>>,
    /// Leases of Redis rate-limit buckets, swept in the background; kept across reloads.
    pub(crate) leases: Option<Arc<crate::stages::ratelimit::lease::LeasedBackend>>,
    /// `server.tls`, ready to accept connections with.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("number", &self.number)
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Builds a generation's stages from `config` and its loaded `plugins`. `previous`: the
    /// generation it replaces, whose in-memory buckets are reused when this config keeps them
    /// in memory with the same bound (buckets whose limit changed start afresh, see
    /// [`MemoryBackend`]), and whose Redis leases are kept when this config leases alike.
    pub(super) fn build(
        number: u64,
        config: Config,
        plugins: Plugins,
        obs: &Observability,
        previous: Option<&Generation>,
    ) -> Generation {
        let deps = plugins.deps();
        obs.add_routes(&config.upstreams);
        let mut built = crate::stages::build(
            &config,
            &deps.client,
            &plugins,
            deps.redis.as_ref(),
            previous.and_then(|p| p.buckets.as_ref()),
            previous.and_then(|p| p.leases.as_ref()),
        );
        for (name, pipeline) in built.pipelines.iter_mut() {
            if let Some(catalog) = obs.tool_catalog(name) {
                *pipeline = std::mem::take(pipeline).with_observer(catalog);
            }
        }
        let tls = config
            .server
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        Generation {
            number,
            credential_headers: config.credential_headers(),
            config: Arc::new(config),
            loaded_at: SystemTime::now(),
            plugins,
            pipelines: built.pipelines,
            buckets: built.buckets,
            leases: built.leases,
            tls,
        }
    }

    /// The pipeline of a route (empty when it has none).
    pub(super) fn pipeline(&self, upstream: &str) -> Pipeline {
        self.pipelines.get(upstream).cloned().unwrap_or_default()
    }

    /// The loaded plugins of this generation.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }
}

/// Everything the request path shares.
pub struct Gateway {
    /// The generation new requests start on.
    current: ArcSwap<Generation>,
    pub sessions: Arc<Sessions>,
    /// Metrics, audit log, spans (`observability:`).
    pub obs: Arc<Observability>,
    pub(super) client: UpstreamClient,
    /// Client connection limits, shared by the serving threads.
    pub connections: Arc<crate::conn::Connections>,
    /// Reachability, last error and latency of each upstream, from the traffic it served.
    pub health: UpstreamHealth,
    /// Reloads: where the config comes from, the last outcome, their metrics.
    pub reloads: Reloads,
    /// The bridges of stdio routes (their processes), kept across reloads.
    pub bridges: Arc<crate::stdio::Bridges>,
    /// The endpoints of federated routes, kept across reloads.
    pub federations: Arc<crate::federation::Federations>,
    /// WebSocket clients on the MCP routes (the drain waits for them).
    pub websockets: super::websocket::WebSockets,
    /// Cancelled when the drain begins: GET streams end so their clients resume elsewhere.
    pub(super) shutdown: CancellationToken,
    pub(super) draining: AtomicBool,
    pub(super) started: SystemTime,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway from a validated config without plugins (see [`Gateway::with_plugins`]).
    ///
    /// # Panics
    /// When the config's shared resources ([`Deps::for_config`]) or the gateway cannot be built.
    pub fn new(config: Config) -> Gateway {
        let deps = Deps::for_config(&config).unwrap_or_else(|e| panic!("{e}"));
        Gateway::with_plugins(config, &Plugins::none(deps))
    }

    /// Builds the gateway from a validated config and its loaded plugins.
    ///
    /// # Panics
    /// When [`Gateway::build`] fails (the audit log cannot be opened).
    pub fn with_plugins(config: Config, plugins: &Plugins) -> Gateway {
        Gateway::build(config, plugins).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds the gateway from a validated config and its loaded plugins, with the resources
    /// they were loaded with ([`Plugins::deps`]): its metrics join their registry, its rate
    /// limiter their Redis connection. Fails when the audit sink cannot be opened. Warns when
    /// the session key was generated.
    pub fn build(config: Config, plugins: &Plugins) -> Result<Gateway, String> {
        let deps = plugins.deps();
        let (sessions, generated) = Sessions::new(&config.sessions);
        let sessions = Arc::new(sessions);
        if generated {
            tracing::warn!(
                "no session key configured (sessions.key or {}): generated one for this process; \
                 sessions will not survive a restart, and replicas behind one load balancer need a shared key",
                crate::config::SESSION_KEY_ENV
            );
        }
        let obs = Observability::new(&config, deps.registry.clone(), sessions.clone())?;
        let connections = Arc::new(crate::conn::Connections::new(&config.server, &obs.registry));
        let health = UpstreamHealth::new(&config.upstreams);
        let reloads = Reloads::new(&obs.registry);
        let websockets = super::websocket::WebSockets::new(&obs.registry);
        let client = deps.client.clone();
        let bridges = Arc::new(crate::stdio::Bridges::default());
        bridges.register_metrics(&obs.registry);
        let mut config = config;
        bridges
            .attach(&mut config)
            .map_err(|e| format!("cannot start a stdio route's bridge: {e}"))?
            .stop();
        let federations = Arc::new(crate::federation::Federations::default());
        federations.register_metrics(&obs.registry);
        federations
            .attach(&mut config, &client)
            .map_err(|e| format!("cannot start a federated route's endpoint: {e}"))?
            .stop();
        let generation = Generation::build(1, config, plugins.clone(), &obs, None);
        Ok(Gateway {
            bridges,
            federations,
            websockets,
            current: ArcSwap::from_pointee(generation),
            sessions,
            obs: Arc::new(obs),
            client,
            connections,
            health,
            reloads,
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
            started: SystemTime::now(),
        })
    }

    /// The generation new requests start on.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The config new requests start on.
    pub fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }

    /// Makes `generation` the one new requests start on.
    pub(super) fn install(&self, generation: Generation) {
        self.health.add_routes(&generation.config.upstreams);
        self.current.store(Arc::new(generation));
    }

    /// Replaces the pipeline of one upstream (for embedders and tests with stages of their own).
    pub fn set_pipeline(&self, upstream: &str, pipeline: Pipeline) {
        let current = self.current.load_full();
        let Some(u) = current.config.upstream(upstream) else {
            return;
        };
        let mut pipelines = current.pipelines.clone();
        pipelines.insert(u.name.clone(), pipeline);
        self.current.store(Arc::new(Generation {
            number: current.number,
            config: current.config.clone(),
            loaded_at: current.loaded_at,
            plugins: current.plugins.clone(),
            pipelines,
            credential_headers: current.credential_headers.clone(),
            buckets: current.buckets.clone(),
            leases: current.leases.clone(),
            tls: current.tls.clone(),
        }));
    }

    /// When the gateway was built.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Cancelled when the drain begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether the gateway is draining (shutting down).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}
