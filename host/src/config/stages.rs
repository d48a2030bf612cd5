//! Schema and validation of the built-in stages' sections: `auth`, `rate_limit`, `policy`,
//! `pipeline`. Compiles each into the stage's own runtime config.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{StageName, Validator};
use crate::stages::auth::{ApiKey, AuthConfig, JwtConfig, KeySource};
use crate::stages::policy::{Effect, Pattern, PolicyConfig, Rule};
use crate::stages::ratelimit::{ClientScope, LevelLimits, Limit, RateLimitConfig};

pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;
pub const DEFAULT_LEEWAY_MS: u64 = 30_000;
pub const DEFAULT_JWKS_MIN_REFETCH_MS: u64 = 30_000;
pub const DEFAULT_JWKS_TTL_MS: u64 = 3_600_000;
pub const DEFAULT_JWKS_FETCH_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    #[serde(rename = "type")]
    kind: Option<String>,
    // api-key
    header: Option<String>,
    keys: Option<Vec<RawApiKey>>,
    // jwt / oidc
    jwks_uri: Option<String>,
    issuer: Option<String>,
    audience: Option<OneOrMany>,
    algorithms: Option<Vec<String>>,
    client_id_claim: Option<String>,
    leeway: Option<u64>,
    scopes: Option<Vec<String>>,
    authorization_servers: Option<Vec<String>>,
    jwks_min_refetch: Option<u64>,
    jwks_ttl: Option<u64>,
    jwks_fetch_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApiKey {
    id: Option<String>,
    key_env: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimit {
    backend: Option<String>,
    on_redis_error: Option<String>,
    max_buckets: Option<usize>,
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
pub(super) struct RawLimit {
    capacity: Option<f64>,
    refill_rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPolicy {
    default: Option<String>,
    rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRule {
    name: Option<String>,
    clients: Option<Vec<String>>,
    servers: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    prompts: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    decision: Option<String>,
    reason: Option<String>,
}

const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Validator<'_> {
    /// An absolute http(s) URL with a host, or an error at `path`.
    fn http_url(&mut self, path: &str, text: &str) -> Option<url::Url> {
        match url::Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.error(
                    path,
                    format!("`{text}` is not an http(s) URL (e.g. https://mcp.example.com)"),
                );
                None
            }
        }
    }

    pub(super) fn public_url(&mut self, text: &str) -> Option<String> {
        self.http_url("server.public_url", text)
            .map(|u| u.as_str().trim_end_matches('/').to_string())
    }

    pub(super) fn pipeline(
        &mut self,
        path: &str,
        list: &[String],
        configured: &dyn Fn(&StageName) -> bool,
    ) -> Vec<StageName> {
        let mut out = Vec::new();
        for (i, name) in list.iter().enumerate() {
            let item = format!("{path}[{i}]");
            let stage = StageName::BUILT_IN
                .into_iter()
                .find(|s| s.as_str() == name)
                .unwrap_or_else(|| StageName::Plugin(Arc::from(name.as_str())));
            if !configured(&stage) {
                let message = match stage {
                    StageName::Plugin(_) => format!(
                        "unknown stage `{name}` (built-in stages: auth, rate_limit, policy; plugins are declared under `plugins:`)"
                    ),
                    _ => format!(
                        "stage `{name}` is listed but its `{name}:` section is not configured"
                    ),
                };
                self.error(&item, message);
            } else if out.contains(&stage) {
                self.error(&item, format!("stage `{name}` is listed twice"));
            } else {
                out.push(stage);
            }
        }
        out
    }

    fn patterns(&mut self, path: &str, list: Option<Vec<String>>) -> Option<Vec<Pattern>> {
        let list = list?;
        let mut out = Vec::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            match Pattern::new(p) {
                Ok(p) => out.push(p),
                Err(e) => self.error(&format!("{path}[{i}]"), e),
            }
        }
        Some(out)
    }

    fn effect(&mut self, path: &str, text: &str) -> Option<Effect> {
        match text {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            other => {
                self.error(path, format!("`{other}` is not `allow` or `deny`"));
                None
            }
        }
    }

    pub(super) fn policy(&mut self, raw: RawPolicy) -> Option<PolicyConfig> {
        let default = match raw.default {
            None => Effect::Allow,
            Some(text) => self
                .effect("policy.default", &text)
                .unwrap_or(Effect::Allow),
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let path = format!("policy.rules[{i}]");
            let effect = match r.decision {
                Some(text) => match self.effect(&format!("{path}.decision"), &text) {
                    Some(e) => e,
                    None => continue,
                },
                None => {
                    self.missing(&format!("{path}.decision"), "required: `allow` or `deny`");
                    continue;
                }
            };
            rules.push(Rule {
                label: r.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                clients: self.patterns(&format!("{path}.clients"), r.clients),
                servers: self.patterns(&format!("{path}.servers"), r.servers),
                methods: self.patterns(&format!("{path}.methods"), r.methods),
                tools: self.patterns(&format!("{path}.tools"), r.tools),
                prompts: self.patterns(&format!("{path}.prompts"), r.prompts),
                resources: self.patterns(&format!("{path}.resources"), r.resources),
                effect,
                reason: r.reason,
            });
        }
        Some(PolicyConfig { default, rules })
    }

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
        let order: Vec<String> = super::yaml::node_at(self.root, path)
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

    pub(super) fn rate_limit(&mut self, raw: RawRateLimit) -> Option<RateLimitConfig> {
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
            backend,
            on_redis_error,
        };
        let levels = [&config.per_client, &config.per_server, &config.per_tool];
        if levels
            .iter()
            .all(|l| l.default.is_none() && l.overrides.is_empty())
            && !self.sink.has_error_at("rate_limit")
        {
            self.error("rate_limit", "no limit configured: set per_client, per_server or per_tool (or MCPGate's `defaults`), or remove the section");
        }
        Some(config)
    }

    pub(super) fn auth(&mut self, raw: RawAuth) -> Option<AuthConfig> {
        let kind = raw.kind.clone();
        match kind.as_deref() {
            Some("api-key") => self.api_key(raw),
            Some(t @ ("jwt" | "oidc")) => self.jwt(t == "oidc", raw),
            Some(other) => {
                self.error(
                    "auth.type",
                    format!("unknown auth type `{other}` (expected `api-key`, `jwt` or `oidc`)"),
                );
                None
            }
            None => {
                self.missing("auth.type", "required: `api-key`, `jwt` or `oidc`");
                None
            }
        }
    }

    fn not_for(&mut self, key: &str, present: bool, kind: &str) {
        if present {
            self.error(
                &format!("auth.{key}"),
                format!("`{key}` does not apply to `type: {kind}`"),
            );
        }
    }

    fn api_key(&mut self, raw: RawAuth) -> Option<AuthConfig> {
        for (key, present) in [
            ("jwks_uri", raw.jwks_uri.is_some()),
            ("issuer", raw.issuer.is_some()),
            ("audience", raw.audience.is_some()),
            ("algorithms", raw.algorithms.is_some()),
            ("scopes", raw.scopes.is_some()),
        ] {
            self.not_for(key, present, "api-key");
        }
        let header_text = raw
            .header
            .unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_string());
        let header = http::HeaderName::from_bytes(header_text.trim().as_bytes())
            .map_err(|_| {
                self.error(
                    "auth.header",
                    format!("`{header_text}` is not a valid header name"),
                )
            })
            .ok();
        let Some(keys) = raw.keys.filter(|k| !k.is_empty()) else {
            self.missing(
                "auth.keys",
                "required: a list of keys, each with an `id` and `key_env: VAR`, `key: ${VAR}` or `key: sha256:<hex>`",
            );
            return None;
        };
        let mut out: Vec<ApiKey> = Vec::with_capacity(keys.len());
        // Where each accepted key came from, to name both places when two keys are the same.
        let mut sources: Vec<String> = Vec::with_capacity(keys.len());
        for (i, k) in keys.into_iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            let Some(id) = k.id.filter(|id| !id.trim().is_empty()) else {
                self.missing(
                    &format!("{path}.id"),
                    "required: the caller's identity for this key",
                );
                continue;
            };
            if out.iter().any(|o| *o.id == *id) {
                self.error(
                    &format!("{path}.id"),
                    format!("id `{id}` is used by another key"),
                );
            }
            let (source, digest) = match (k.key_env, k.key) {
                (Some(var), None) => {
                    let source = format!("{path}.key_env");
                    let digest = self
                        .env_secret(&source, &var)
                        .and_then(|v| self.key_digest(&source, &v));
                    (source, digest)
                }
                (None, Some(text)) => {
                    let source = format!("{path}.key");
                    let digest = self.file_key(&source, &text);
                    (source, digest)
                }
                (Some(_), Some(_)) => {
                    self.error(
                        &format!("{path}.key"),
                        "give either `key_env` or `key`, not both",
                    );
                    continue;
                }
                // A `key: ${VAR}` whose variable is unset was reported (and removed) already.
                (None, None) if self.sink.has_error_at(&format!("{path}.key")) => continue,
                (None, None) => {
                    self.missing(
                        &format!("{path}.key_env"),
                        "required: `key_env: VAR`, `key: ${VAR}` or `key: sha256:<hex>`",
                    );
                    continue;
                }
            };
            let Some(digest) = digest else { continue };
            if let Some(j) = out.iter().position(|o| o.digest == digest) {
                self.error(
                    &source,
                    format!(
                        "the same key as {} (id `{}`): every caller needs a key of its own, or the gateway cannot tell them apart",
                        sources[j], out[j].id
                    ),
                );
                continue;
            }
            sources.push(source);
            out.push(ApiKey {
                id: Arc::from(id),
                digest,
            });
        }
        Some(AuthConfig::ApiKey {
            header: header?,
            keys: out,
        })
    }

    /// `auth.keys[].key`: a `sha256:` digest (written in the file or not), or a key that came
    /// wholly from the environment (`key: ${VAR}`, MCPGate's spelling), hashed here like a
    /// `key_env` one. A plain-text key written in the file is refused: the file would hold the
    /// secret.
    fn file_key(&mut self, path: &str, text: &str) -> Option<[u8; 32]> {
        let result = if text.trim().starts_with("sha256:") || !self.from_env.contains(path) {
            parse_sha256(text)
        } else {
            return self.key_digest(path, text);
        };
        result.map_err(|e| self.error(path, e)).ok()
    }

    /// The stored digest of a plain key (from the environment). Clients' keys are compared
    /// trimmed (a header value cannot carry surrounding whitespace), so the stored one is too:
    /// a trailing newline from `$(cat keyfile)` must not make a key unusable.
    fn key_digest(&mut self, path: &str, key: &str) -> Option<[u8; 32]> {
        let key = key.trim();
        if key.is_empty() {
            self.error(
                path,
                "the environment variable holds only whitespace, which no client can send as a key",
            );
            return None;
        }
        if key.bytes().any(|b| b.is_ascii_control()) {
            // Never echo the value: it is a secret.
            self.error(
                path,
                "the key holds control characters, which no client can send in a header",
            );
            return None;
        }
        Some(Sha256::digest(key.as_bytes()).into())
    }

    fn jwt(&mut self, oidc: bool, raw: RawAuth) -> Option<AuthConfig> {
        let kind = if oidc { "oidc" } else { "jwt" };
        self.not_for("keys", raw.keys.is_some(), kind);
        self.not_for("header", raw.header.is_some(), kind);
        let issuer = raw.issuer.as_deref().and_then(|i| {
            self.http_url("auth.issuer", i)
                .map(|_| i.trim().to_string())
        });
        let source = if oidc {
            self.not_for("jwks_uri", raw.jwks_uri.is_some(), "oidc");
            if raw.issuer.is_none() {
                self.missing("auth.issuer", "required: the OpenID provider's issuer URL (discovery reads <issuer>/.well-known/openid-configuration)");
            }
            issuer.clone().map(KeySource::Oidc)
        } else {
            match &raw.jwks_uri {
                Some(u) => self
                    .http_url("auth.jwks_uri", u)
                    .map(|_| KeySource::Jwks(u.trim().to_string())),
                None => {
                    self.missing(
                        "auth.jwks_uri",
                        "required: where the signing keys (JWKS) are published",
                    );
                    None
                }
            }
        };
        let audience = raw.audience.map(OneOrMany::into_vec).unwrap_or_default();
        if audience.is_empty() {
            self.missing(
                "auth.audience",
                "required: the audience tokens must be issued for (usually this gateway's URL)",
            );
        }
        let algorithms = match raw.algorithms {
            None => vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256,
            ],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let parsed = ALGORITHMS
                        .contains(&a.as_str())
                        .then(|| a.parse::<jsonwebtoken::Algorithm>().ok())
                        .flatten();
                    if parsed.is_none() {
                        self.error(
                            &format!("auth.algorithms[{i}]"),
                            format!(
                                "`{a}` is not allowed (choose from {})",
                                ALGORITHMS.join(", ")
                            ),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let authorization_servers = raw
            .authorization_servers
            .unwrap_or_else(|| issuer.iter().cloned().collect());
        if authorization_servers.is_empty() {
            self.missing("auth.authorization_servers", "required when `issuer` is not set: where clients obtain tokens (for OAuth resource metadata)");
        }
        Some(AuthConfig::Jwt(Box::new(JwtConfig {
            source: source?,
            issuer,
            audience,
            algorithms,
            client_id_claim: raw.client_id_claim.unwrap_or_else(|| "sub".to_string()),
            leeway: Duration::from_millis(raw.leeway.unwrap_or(DEFAULT_LEEWAY_MS)),
            scopes: raw.scopes.unwrap_or_default(),
            authorization_servers,
            jwks_min_refetch: Duration::from_millis(
                raw.jwks_min_refetch.unwrap_or(DEFAULT_JWKS_MIN_REFETCH_MS),
            ),
            jwks_ttl: Duration::from_millis(raw.jwks_ttl.unwrap_or(DEFAULT_JWKS_TTL_MS)),
            jwks_fetch_timeout: self.positive_ms(
                "auth.jwks_fetch_timeout",
                raw.jwks_fetch_timeout,
                DEFAULT_JWKS_FETCH_TIMEOUT_MS,
            ),
        })))
    }
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex = text.trim().strip_prefix("sha256:").ok_or_else(|| {
        "keys written in the file must be hashes, `sha256:<64 hex digits>` (printf %s KEY | sha256sum); or take the key from the environment with `key: ${VAR}` or `key_env: VAR`".to_string()
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("`sha256:` must be followed by 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
