//! The `rate_limit:` section: its YAML schema and its checks (each error at its key's line),
//! compiled into [`RateLimitConfig`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ClientScope, LevelLimits, Limit, RateLimitConfig};
use crate::config::Validator;
use crate::stages::policy::Pattern;

pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRateLimit {
    backend: Option<String>,
    on_redis_error: Option<String>,
    max_buckets: Option<usize>,
    lease_tokens: Option<u32>,
    lease_ttl: Option<u64>,
    /// MCPGate's spelling: a bucket for each caller on each server (see [`Validator::rate_limit`]).
    defaults: Option<RawLimit>,
    per_client: Option<RawLimit>,
    per_client_scope: Option<String>,
    per_server: Option<RawLimit>,
    per_tool: Option<RawLimit>,
    clients: BTreeMap<String, RawLimit>,
    servers: BTreeMap<String, RawLimit>,
    tools: BTreeMap<String, RawLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimit {
    capacity: Option<f64>,
    refill_rate: Option<f64>,
}

impl Validator<'_> {
    fn limit(&mut self, path: &str, raw: RawLimit) -> Option<Limit> {
        let capacity = match raw.capacity {
            Some(c) if c >= 1.0 && c.is_finite() => Some(c),
            Some(_) => {
                self.error(
                    &format!("{path}.capacity"),
                    "must be a number of at least 1",
                );
                None
            }
            None => {
                self.missing(
                    &format!("{path}.capacity"),
                    "required: the most requests a burst may hold",
                );
                None
            }
        };
        let refill_rate = match raw.refill_rate {
            Some(r) if r >= 0.0 && r.is_finite() => Some(r),
            Some(_) => {
                self.error(
                    &format!("{path}.refill_rate"),
                    "must be a number of at least 0 (tokens per second)",
                );
                None
            }
            None => {
                self.missing(
                    &format!("{path}.refill_rate"),
                    "required: tokens added per second",
                );
                None
            }
        };
        Some(Limit {
            capacity: capacity?,
            refill_rate: refill_rate?,
        })
    }

    /// Override maps keep the file's order (first match wins for patterns).
    fn overrides(&mut self, path: &str, raw: BTreeMap<String, RawLimit>) -> Vec<(Pattern, Limit)> {
        let order: Vec<String> = self
            .node_at(path)
            .and_then(|n| n.as_mapping())
            .map(|m| m.keys().map(|k| k.as_str().to_string()).collect())
            .unwrap_or_default();
        let mut raw = raw;
        let mut out = Vec::new();
        for name in order {
            let Some(l) = raw.remove(&name) else { continue };
            let key_path = format!("{path}.{name}");
            let pattern = match Pattern::new(&name) {
                Ok(p) => p,
                Err(e) => {
                    self.error(&key_path, e);
                    continue;
                }
            };
            if let Some(limit) = self.limit(&key_path, l) {
                out.push((pattern, limit));
            }
        }
        out
    }

    /// The caller level: `per_client` and `per_client_scope`, or MCPGate's `defaults`.
    ///
    /// MCPGate's `defaults` is the bucket each caller gets on each server unless something more
    /// specific applies, which is `per_client` with `per_client_scope: route` (and `clients:`
    /// overrides, the more specific limits, are then per route too). Both spellings set the same
    /// limit, so a config that gives both is refused rather than one silently winning.
    fn per_client(
        &mut self,
        defaults: Option<RawLimit>,
        per_client: Option<RawLimit>,
        scope: Option<&str>,
    ) -> (Option<Limit>, ClientScope) {
        let scope_path = "rate_limit.per_client_scope";
        let chosen = match scope {
            None => None,
            Some("gateway") => Some(ClientScope::Gateway),
            Some("route") => Some(ClientScope::Route),
            Some(other) => {
                self.error(
                    scope_path,
                    format!("`{other}` is not `gateway` (one bucket per caller for every route) or `route` (one per caller on each route)"),
                );
                None
            }
        };
        let Some(defaults) = defaults else {
            let limit = per_client.and_then(|l| self.limit("rate_limit.per_client", l));
            return (limit, chosen.unwrap_or(ClientScope::Gateway));
        };
        if per_client.is_some() {
            self.error(
                "rate_limit.defaults",
                "`defaults` (MCPGate's spelling) and `per_client` both set the per-caller limit: keep one (`defaults` is `per_client` with `per_client_scope: route`)",
            );
        }
        if chosen == Some(ClientScope::Gateway) {
            self.error(
                scope_path,
                "`defaults` gives each caller a bucket on each route; for one bucket per caller across routes write `per_client` instead of `defaults`",
            );
        }
        (
            self.limit("rate_limit.defaults", defaults),
            ClientScope::Route,
        )
    }

    pub(crate) fn rate_limit(&mut self, raw: RawRateLimit) -> Option<RateLimitConfig> {
        // Open by default, as gateways usually are: a Redis outage should not refuse everyone.
        let (backend, on_redis_error) = self.state_backend(
            "rate_limit",
            raw.backend.as_deref(),
            raw.on_redis_error.as_deref(),
            crate::config::OnError::FailOpen,
        );
        let (per_client, per_client_scope) = self.per_client(
            raw.defaults,
            raw.per_client,
            raw.per_client_scope.as_deref(),
        );
        let per_server = raw
            .per_server
            .and_then(|l| self.limit("rate_limit.per_server", l));
        let per_tool = raw
            .per_tool
            .and_then(|l| self.limit("rate_limit.per_tool", l));
        let config = RateLimitConfig {
            per_client: LevelLimits {
                default: per_client,
                overrides: self.overrides("rate_limit.clients", raw.clients),
            },
            per_client_scope,
            per_server: LevelLimits {
                default: per_server,
                overrides: self.overrides("rate_limit.servers", raw.servers),
            },
            per_tool: LevelLimits {
                default: per_tool,
                overrides: self.overrides("rate_limit.tools", raw.tools),
            },
            max_buckets: raw.max_buckets.unwrap_or(DEFAULT_MAX_BUCKETS).max(1),
            lease_tokens: raw
                .lease_tokens
                .unwrap_or(super::lease::DEFAULT_LEASE_TOKENS),
            lease_ttl: raw.lease_ttl.map_or(
                super::lease::DEFAULT_LEASE_TTL,
                std::time::Duration::from_millis,
            ),
            backend,
            on_redis_error,
        };
        let redis = config.backend == crate::config::StateBackend::Redis;
        for (key, given) in [
            ("rate_limit.lease_tokens", raw.lease_tokens.is_some()),
            ("rate_limit.lease_ttl", raw.lease_ttl.is_some()),
        ] {
            if given && !redis {
                self.error(
                    key,
                    "only applies to `backend: redis` (memory buckets are exact)",
                );
            }
        }
        if raw.lease_ttl == Some(0) {
            self.error(
                "rate_limit.lease_ttl",
                "must be at least 1 (ms); for exact buckets set `lease_tokens: 0`",
            );
        }
        if raw
            .lease_tokens
            .is_some_and(|t| t > super::lease::MAX_LEASE_TOKENS)
        {
            self.error(
                "rate_limit.lease_tokens",
                format!(
                    "at most {} (each replica may hold this many tokens of a bucket unspent)",
                    super::lease::MAX_LEASE_TOKENS
                ),
            );
        }
        let levels = [&config.per_client, &config.per_server, &config.per_tool];
        if levels
            .iter()
            .all(|l| l.default.is_none() && l.overrides.is_empty())
            && !self.has_error_at("rate_limit")
        {
            self.error("rate_limit", "no limit configured: set per_client, per_server or per_tool (or MCPGate's `defaults`), or remove the section");
        }
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_error_at, assert_errors_at, parse};

    /// Each mistake in `rate_limit:` is reported at its key, with a line.
    #[test]
    fn rate_limit_section_errors() {
        assert_errors_at(&[
            (
                "rate_limit:\n  backend: redis\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.backend",
                "needs the `redis:` section",
            ),
            (
                "rate_limit:\n  per_client: {capacity: 0, refill_rate: 1}\n",
                "rate_limit.per_client.capacity",
                "at least 1",
            ),
            (
                "rate_limit:\n  per_client: {capacity: 5}\n",
                "rate_limit.per_client.refill_rate",
                "required",
            ),
            (
                "rate_limit:\n  per_client: {capacity: 5, refill_rate: fast}\n",
                "rate_limit.per_client.refill_rate",
                "number",
            ),
            ("rate_limit: {}\n", "rate_limit", "no limit configured"),
            (
                "rate_limit:\n  tools:\n    \"[x\": {capacity: 1, refill_rate: 1}\n",
                "rate_limit.tools.[x",
                "not a valid pattern",
            ),
            (
                "redis: {url: \"redis://h\"}\nrate_limit:\n  backend: redis\n  on_redis_error: shrug\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.on_redis_error",
                "expected `fail_closed` or `fail_open`",
            ),
            (
                "rate_limit:\n  on_redis_error: fail_open\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.on_redis_error",
                "only applies to `backend: redis`",
            ),
            (
                "rate_limit:\n  lease_tokens: 8\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.lease_tokens",
                "only applies to `backend: redis`",
            ),
            (
                "redis: {url: \"redis://h\"}\nrate_limit:\n  backend: redis\n  lease_tokens: 20000\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.lease_tokens",
                "at most 10000",
            ),
            (
                "redis: {url: \"redis://h\"}\nrate_limit:\n  backend: redis\n  lease_ttl: 0\n  per_client: {capacity: 1, refill_rate: 1}\n",
                "rate_limit.lease_ttl",
                "`lease_tokens: 0`",
            ),
        ]);
    }

    #[test]
    fn rate_limit_defaults_is_a_bucket_per_caller_on_each_route() {
        use crate::stages::ratelimit::{BucketKey, ClientScope, MemoryBackend, RateLimit};
        let up = "upstreams:\n  a:\n    url: http://x/mcp\n";
        let compile = |section: &str| {
            parse(&format!("rate_limit:\n{section}{up}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .rate_limit
                .unwrap()
        };
        let migrated = compile("  defaults: {capacity: 5, refill_rate: 1}\n");
        let native =
            compile("  per_client: {capacity: 5, refill_rate: 1}\n  per_client_scope: route\n");
        let gateway = compile("  per_client: {capacity: 5, refill_rate: 1}\n");
        assert_eq!(
            gateway.per_client_scope,
            ClientScope::Gateway,
            "the default scope"
        );
        for rl in [&migrated, &native] {
            assert_eq!(rl.per_client_scope, ClientScope::Route);
            assert_eq!(rl.per_client.default.map(|l| l.capacity), Some(5.0));
        }
        // More specific limits still apply: a `clients:` override, per route like the default.
        let with_override = compile(
            "  defaults: {capacity: 5, refill_rate: 1}\n  clients:\n    ci-*: {capacity: 50, refill_rate: 5}\n",
        );
        let stage = RateLimit::new(with_override, std::sync::Arc::new(MemoryBackend::new(100)));
        let buckets = stage.buckets(&"ci-bot".into(), &"github".into(), None);
        assert_eq!(buckets.len(), 1);
        assert_eq!(
            buckets[0].0,
            BucketKey::ClientOnServer {
                client: "ci-bot".into(),
                server: "github".into()
            }
        );
        assert_eq!(buckets[0].1.capacity, 50.0);
        let stage = RateLimit::new(gateway, std::sync::Arc::new(MemoryBackend::new(100)));
        assert_eq!(
            stage.buckets(&"ci-bot".into(), &"github".into(), None)[0].0,
            BucketKey::Client("ci-bot".into())
        );

        // Both spellings of one limit, or a scope that contradicts `defaults`: refused, not a
        // silent winner.
        let cases: &[(&str, &str, &str)] = &[
            (
                "  defaults: {capacity: 5, refill_rate: 1}\n  per_client: {capacity: 9, refill_rate: 1}\n",
                "rate_limit.defaults",
                "both set the per-caller limit",
            ),
            (
                "  defaults: {capacity: 5, refill_rate: 1}\n  per_client_scope: gateway\n",
                "rate_limit.per_client_scope",
                "write `per_client` instead of `defaults`",
            ),
            (
                "  per_client: {capacity: 5, refill_rate: 1}\n  per_client_scope: server\n",
                "rate_limit.per_client_scope",
                "is not `gateway`",
            ),
            (
                "  defaults: {capacity: 0, refill_rate: 1}\n",
                "rate_limit.defaults.capacity",
                "at least 1",
            ),
            (
                "  defaults: {capacity: 5}\n",
                "rate_limit.defaults.refill_rate",
                "required",
            ),
            (
                "  defaults: {capacity: 5, refill: 1}\n",
                "rate_limit.defaults.refill",
                "unknown key",
            ),
        ];
        for (section, path, needle) in cases {
            assert_error_at(&format!("rate_limit:\n{section}{up}"), path, needle);
        }
    }
}
