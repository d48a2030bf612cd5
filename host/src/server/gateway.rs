//! The state every request shares: immutable config, sessions, observability, the upstream
//! client, each route's pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::header::HeaderName;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deps::Deps;
use crate::observability::Observability;
use crate::pipeline::Pipeline;
use crate::plugins::Plugins;
use crate::proxy::UpstreamClient;
use crate::session::Sessions;

/// Everything the request path shares: immutable config, sessions, client, pipelines.
pub struct Gateway {
    pub config: Arc<Config>,
    pub sessions: Arc<Sessions>,
    /// Metrics, audit log, spans (`observability:`).
    pub obs: Arc<Observability>,
    pub(super) client: UpstreamClient,
    pub(super) pipelines: HashMap<Arc<str>, Pipeline>,
    /// Header names that carry a caller's credential ([`Config::credential_headers`]): never
    /// forwarded, never audited.
    pub(super) credential_headers: Vec<HeaderName>,
    /// In-memory rate-limit buckets, swept in the background.
    pub(super) buckets: Option<Arc<crate::stages::ratelimit::MemoryBackend>>,
    /// Client connection limits, shared by the serving threads.
    pub connections: Arc<crate::conn::Connections>,
    /// Cancelled when the drain begins: GET streams end so their clients resume elsewhere.
    pub(super) shutdown: CancellationToken,
    pub(super) draining: AtomicBool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("pipelines", &self.pipelines)
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
        let mut built = crate::stages::build(&config, &deps.client, plugins, deps.redis.as_ref());
        for (name, pipeline) in built.pipelines.iter_mut() {
            if let Some(catalog) = obs.tool_catalog(name) {
                *pipeline = std::mem::take(pipeline).with_observer(catalog);
            }
        }
        let connections = Arc::new(crate::conn::Connections::new(&config.server, &obs.registry));
        Ok(Gateway {
            connections,
            credential_headers: config.credential_headers(),
            config: Arc::new(config),
            sessions,
            obs: Arc::new(obs),
            client: deps.client.clone(),
            pipelines: built.pipelines,
            buckets: built.buckets,
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// Replaces the pipeline of one upstream (for embedders and tests with stages of their own).
    pub fn set_pipeline(&mut self, upstream: &str, pipeline: Pipeline) {
        if let Some(u) = self.config.upstream(upstream) {
            self.pipelines.insert(u.name.clone(), pipeline);
        }
    }

    /// The pipeline of a route (empty when it has none).
    pub(super) fn pipeline(&self, upstream: &str) -> Pipeline {
        self.pipelines.get(upstream).cloned().unwrap_or_default()
    }
}
