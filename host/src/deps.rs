//! The resources one process builds once from its config and lends to every part that needs
//! them: the Prometheus registry (the gateway's series and the plugins'), the upstream HTTP
//! client (forwarding, JWKS and OIDC fetches, plugin callouts), the one Redis connection
//! (`redis:`: rate-limit buckets, plugin kv) and the store behind plugins' `kv`.

use std::sync::Arc;

use prometheus::Registry;

use crate::config::{Config, StateBackend};
use crate::plugins::kv::{self, KvStore, MemoryKv};
use crate::proxy::UpstreamClient;
use crate::redis::Redis;

#[derive(Clone)]
pub struct Deps {
    pub registry: Registry,
    pub client: UpstreamClient,
    pub redis: Option<Redis>,
    pub kv: Arc<dyn KvStore>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

/// No Redis, an in-memory kv with the default bounds, a registry of its own.
impl Default for Deps {
    fn default() -> Self {
        Deps {
            registry: Registry::new(),
            client: UpstreamClient::new(),
            redis: None,
            kv: Arc::new(MemoryKv::default()),
        }
    }
}

impl Deps {
    /// What `config` asks for: one Redis connection for everything `redis:` serves, and the
    /// `kv` store `plugin_runtime.kv` names. Must run inside a tokio runtime (the connection is
    /// made on first use).
    pub fn for_config(config: &Config) -> Result<Deps, String> {
        let registry = Registry::new();
        let redis = config
            .redis
            .as_ref()
            .map(|r| Redis::new(r, &registry))
            .transpose()?;
        let kv_config = &config.plugin_runtime.kv;
        let kv: Arc<dyn KvStore> = match (&redis, kv_config.backend) {
            (Some(redis), StateBackend::Redis) => Arc::new(kv::redis::RedisKv::new(
                redis.clone(),
                kv_config.on_redis_error,
            )),
            (None, StateBackend::Redis) => {
                return Err("plugin_runtime.kv.backend: redis needs the `redis:` section".into());
            }
            (_, StateBackend::Memory) => {
                Arc::new(MemoryKv::new(kv_config.max_entries, kv_config.max_bytes))
            }
        };
        Ok(Deps {
            registry,
            client: UpstreamClient::new(),
            redis,
            kv,
        })
    }
}
