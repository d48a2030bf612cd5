//! The built-in pipeline stages, and building a route's pipeline from config.
//!
//! - [`auth`]: who is calling (API keys, JWT via JWKS, OIDC discovery) and OAuth 2.1 resource
//!   server behaviour.
//! - [`ratelimit`]: token buckets per client, server and tool.
//! - [`policy`]: first-match-wins access rules and per-caller list filtering.

pub mod auth;
pub mod policy;
pub mod ratelimit;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, StageName};
use crate::pipeline::{Pipeline, Stage};
use crate::plugins::Plugins;
use crate::proxy::UpstreamClient;
use crate::redis::Redis;

/// The stages built from one config, shared by every route that lists them.
pub struct Built {
    pub pipelines: HashMap<Arc<str>, Pipeline>,
    /// The in-memory buckets, swept periodically by the server.
    pub buckets: Option<Arc<ratelimit::MemoryBackend>>,
    /// The Redis buckets' leases (`rate_limit.lease_tokens`), swept periodically by the
    /// server and given back at shutdown.
    pub leases: Option<Arc<ratelimit::lease::LeasedBackend>>,
}

/// Builds every route's pipeline: its own `pipeline:` list, else the global one. `redis` is the
/// process's connection, for `rate_limit.backend: redis`. `leases`: a reload's previous Redis
/// leases, kept when this config leases alike. `buckets`: in-memory buckets to keep
/// (a reload's previous ones), used when this config keeps its buckets in memory with the same
/// `max_buckets`. A kept bucket whose limit changed keeps its tokens, up to the new capacity
/// (a tightened limit applies at once; a loosened one refills at its new rate).
///
/// # Panics
/// If a pipeline names a plugin that `plugins` does not hold (load them with [`Plugins::load`]
/// first), or the rate limiter is set to Redis and `redis` is `None` (config validation
/// requires the `redis:` section for it).
pub fn build(
    config: &Config,
    client: &UpstreamClient,
    plugins: &Plugins,
    redis: Option<&Redis>,
    buckets: Option<&Arc<ratelimit::MemoryBackend>>,
    leases: Option<&Arc<ratelimit::lease::LeasedBackend>>,
) -> Built {
    let auth: Option<Arc<dyn Stage>> = config.auth.clone().map(|a| {
        Arc::new(auth::Auth::new(
            a,
            client.clone(),
            config.server.public_url.clone(),
            config.server.scheme(),
        )) as Arc<dyn Stage>
    });
    let kept = buckets;
    let buckets = config
        .rate_limit
        .as_ref()
        .filter(|r| r.backend == crate::config::StateBackend::Memory)
        .map(|r| match kept {
            Some(b) if b.max_buckets() == r.max_buckets => b.clone(),
            _ => Arc::new(ratelimit::MemoryBackend::new(r.max_buckets)),
        });
    let kept_leases = leases;
    let mut leases = None;
    let rate_limit: Option<Arc<dyn Stage>> = config.rate_limit.clone().map(|r| {
        let backend: Arc<dyn ratelimit::Backend> = match &buckets {
            Some(memory) => memory.clone(),
            None => {
                let redis = ratelimit::redis::RedisBackend::new(
                    redis
                        .expect("rate_limit.backend: redis without a Redis connection")
                        .clone(),
                );
                if r.lease_tokens == 0 {
                    Arc::new(redis)
                } else {
                    let leased = match kept_leases {
                        Some(l) if l.same_shape(r.lease_tokens, r.lease_ttl, r.max_buckets) => {
                            l.clone()
                        }
                        _ => Arc::new(ratelimit::lease::LeasedBackend::new(
                            redis,
                            Arc::new(ratelimit::lease::Leases::new(
                                r.lease_tokens,
                                r.lease_ttl,
                                r.max_buckets,
                            )),
                        )),
                    };
                    leases = Some(leased.clone());
                    leased
                }
            }
        };
        Arc::new(ratelimit::RateLimit::new(r, backend)) as Arc<dyn Stage>
    });
    let policy: Option<Arc<dyn Stage>> = config
        .policy
        .clone()
        .map(|p| Arc::new(policy::Policy::new(p)) as Arc<dyn Stage>);
    let stage = |name: &StageName| match name {
        StageName::Auth => auth.clone(),
        StageName::RateLimit => rate_limit.clone(),
        StageName::Policy => policy.clone(),
        StageName::Plugin(p) => Some(
            plugins
                .stage(p)
                .unwrap_or_else(|| panic!("plugin `{p}` is not loaded (Plugins::load)")),
        ),
    };
    let pipelines = config
        .upstreams
        .iter()
        .map(|u| {
            let order = u.pipeline.as_ref().unwrap_or(&config.pipeline);
            (
                u.name.clone(),
                Pipeline::new(order.iter().filter_map(stage).collect()),
            )
        })
        .collect();
    Built {
        pipelines,
        buckets,
        leases,
    }
}
