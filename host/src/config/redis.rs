//! Schema and validation of `redis:`, the connection replicas share state through, and the
//! cross-checks of the sections that use it (`rate_limit.backend`, `plugin_runtime.kv.backend`).

use std::time::Duration;

use serde::Deserialize;

use super::{OnError, Validator};
use crate::redis::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT_MS, RedisConfig, check_url,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRedis {
    url: Option<String>,
    key_prefix: Option<String>,
    timeout: Option<u64>,
    connect_timeout: Option<u64>,
}

/// Where a section keeps its state (`rate_limit.backend`, `plugin_runtime.kv.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// In process memory: per replica (the default).
    Memory,
    /// In Redis (`redis:`): shared by every replica.
    Redis,
}

impl Validator<'_> {
    /// `<path>.backend` and `<path>.on_redis_error` (which only a Redis backend takes), with
    /// `default` when the latter is absent.
    pub(crate) fn state_backend(
        &mut self,
        path: &str,
        backend: Option<&str>,
        on_redis_error: Option<&str>,
        default: OnError,
    ) -> (StateBackend, OnError) {
        let backend = match backend {
            None | Some("memory") => StateBackend::Memory,
            Some("redis") => StateBackend::Redis,
            Some(other) => {
                self.error(
                    &format!("{path}.backend"),
                    format!("unknown backend `{other}` (expected `memory` or `redis`)"),
                );
                StateBackend::Memory
            }
        };
        let key = format!("{path}.on_redis_error");
        if on_redis_error.is_some() && backend != StateBackend::Redis {
            self.error(&key, "only applies to `backend: redis`");
        }
        (backend, self.on_error(&key, on_redis_error, default))
    }

    pub(super) fn redis(&mut self, raw: RawRedis) -> Option<RedisConfig> {
        let url = match raw.url.map(|u| u.trim().to_string()) {
            None => {
                self.missing(
                    "redis.url",
                    "required: the Redis server, e.g. redis://127.0.0.1:6379/0 (or ${REDIS_URL})",
                );
                None
            }
            Some(u) if u.is_empty() => {
                self.error("redis.url", "is empty (an unset ${VAR:-} default?)");
                None
            }
            Some(u) => match check_url(&u) {
                Ok(()) => Some(u),
                Err(e) => {
                    self.error("redis.url", e);
                    None
                }
            },
        };
        let millis = |v: &mut Self, key: &str, value: Option<u64>, default: u64| {
            let ms = value.unwrap_or(default);
            if ms == 0 || ms > 60_000 {
                v.error(
                    &format!("redis.{key}"),
                    "must be between 1 and 60000 (milliseconds)",
                );
            }
            Duration::from_millis(ms)
        };
        let timeout = millis(self, "timeout", raw.timeout, DEFAULT_TIMEOUT_MS);
        let connect_timeout = millis(
            self,
            "connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT_MS,
        );
        Some(RedisConfig {
            url: url?,
            key_prefix: raw
                .key_prefix
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string()),
            timeout,
            connect_timeout,
        })
    }

    /// A section that chose `backend: redis` needs the `redis:` section.
    pub(super) fn needs_redis(&mut self, path: &str, configured: bool) {
        if !configured && !self.sink.has_error_at("redis") {
            self.error(
                path,
                "`redis` needs the `redis:` section (redis.url) to say which server",
            );
        }
    }
}
