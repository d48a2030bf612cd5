//! Configuration: YAML → typed raw structs → validation → compiled, immutable [`Config`].
//!
//! - [`yaml`]: positioned parsing, `${VAR}` interpolation, error collection.
//! - this module: the schema (raw structs with `deny_unknown_fields`), the checks that need more
//!   than a type (required keys, URLs, env vars, ranges), and the runtime form the gateway uses.
//!
//! Every error names its key path and line, and all of them are reported at once.
//! Durations are milliseconds everywhere, like the seed's `upstreams.<name>.timeout`.

mod admin;
mod check;
mod federation;
mod observability;
mod pipeline;
mod plugins;
mod redis;
mod server;
mod stdio;
pub mod yaml;

pub(crate) use check::Validator;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

/// Each section's runtime type lives with the module that uses it.
pub use crate::session::SessionConfig;
pub use admin::{AdminConfig, DEFAULT_ADMIN_PORT, MIN_ADMIN_TOKEN_CHARS};
pub use federation::{DEFAULT_PREFIX, Federation, FederationMember};
pub use observability::{
    AuditConfig, AuditSink, MetricsConfig, MetricsListener, ObservabilityConfig, TracingConfig,
};
pub use plugins::{
    DEFAULT_KV_MAX_BYTES, DEFAULT_KV_MAX_ENTRIES, Grants, InstanceMode, KvConfig, OnError,
    PluginLines, PluginRuntimeConfig, PluginSpec,
};
pub use redis::StateBackend;
use server::RawServer;
pub use server::{
    Cidr, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_DISCARD_BODY_BYTES, DEFAULT_HEADER_TIMEOUT_MS,
    DEFAULT_MAX_BATCH_MESSAGES, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INSPECTED_BYTES, DEFAULT_PORT, DEFAULT_SHUTDOWN_TIMEOUT_MS,
    DEFAULT_WRITE_TIMEOUT_MS, MAX_WORKERS, OriginAllowList, ServerConfig, WebSocketConfig,
};
use yaml::Sink;
pub use yaml::{ConfigError, ConfigErrors};

pub const DEFAULT_PATH: &str = "config/mcpgate.yaml";
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_STREAM_IDLE_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_SESSION_TTL_MS: u64 = 24 * 3600 * 1000;
pub const DEFAULT_SESSION_IDLE_MS: u64 = 3600 * 1000;
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Env var read for the session key when `sessions.key` is not set.
pub const SESSION_KEY_ENV: &str = "MCPGATE_SESSION_KEY";

// ---- raw schema: what the file may say -------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    sessions: RawSessions,
    upstreams: BTreeMap<String, RawUpstream>,
    auth: Option<crate::stages::auth::config::RawAuth>,
    rate_limit: Option<crate::stages::ratelimit::config::RawRateLimit>,
    policy: Option<crate::stages::policy::config::RawPolicy>,
    plugins: BTreeMap<String, plugins::RawPlugin>,
    plugin_runtime: Option<plugins::RawPluginRuntime>,
    pipeline: Option<Vec<String>>,
    observability: Option<observability::RawObservability>,
    redis: Option<redis::RawRedis>,
    admin: Option<admin::RawAdmin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSessions {
    key: Option<String>,
    ttl: Option<u64>,
    idle_timeout: Option<u64>,
    max_active: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    /// `http` (the default) or `stdio`.
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    max_processes: Option<usize>,
    max_message_bytes: Option<usize>,
    /// stdio: a legacy session's process unused this long is stopped (ms).
    idle_timeout: Option<u64>,
    timeout: Option<u64>,
    stream_idle_timeout: Option<u64>,
    auth: Option<RawUpstreamAuth>,
    pipeline: Option<Vec<String>>,
    /// A federated route: the upstreams it serves together, and their prefix.
    members: Option<Vec<federation::RawMember>>,
    prefix: Option<String>,
    /// A federated route: how long legacy members' lists are cached (ms; 0, the default: not).
    catalog_ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstreamAuth {
    #[serde(rename = "type")]
    kind: Option<String>,
    token_env: Option<String>,
    header: Option<String>,
    value_env: Option<String>,
}

// ---- compiled runtime form -------------------------------------------------------------------

/// The validated configuration the gateway runs with. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub sessions: SessionConfig,
    /// Upstreams in name order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `auth:`; `None` = no authentication stage.
    pub auth: Option<crate::stages::auth::AuthConfig>,
    /// `rate_limit:`; `None` = no rate-limit stage.
    pub rate_limit: Option<crate::stages::ratelimit::RateLimitConfig>,
    /// `policy:`; `None` = no policy stage.
    pub policy: Option<crate::stages::policy::PolicyConfig>,
    /// `plugins:` in name order: WebAssembly stages, loaded by [`crate::plugins::Plugins::load`].
    pub plugins: Vec<PluginSpec>,
    pub plugin_runtime: PluginRuntimeConfig,
    /// The stage order for routes that do not set their own.
    pub pipeline: Vec<StageName>,
    /// `observability:` (metrics, audit log, tracing); all off when absent.
    pub observability: ObservabilityConfig,
    /// `redis:`: the server replicas share state through; `None` when absent.
    pub redis: Option<crate::redis::RedisConfig>,
    /// `admin:`: the admin API and dashboard; `None` when absent.
    pub admin: Option<AdminConfig>,
    /// The file as written, `${VAR}` references not expanded (so no secret from the
    /// environment is in it): what the admin API shows, literal secrets redacted.
    pub file: FileTree,
}

/// The config file's tree as written. Its `Debug` shows nothing of it: it may hold literal
/// secrets (the admin API redacts them before showing it).
#[derive(Clone, Default)]
pub struct FileTree(pub Arc<serde_json::Value>);

impl std::fmt::Debug for FileTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileTree(..)")
    }
}

/// A stage as named in `pipeline:` lists: a built-in one, or a plugin by its `plugins:` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StageName {
    Auth,
    RateLimit,
    Policy,
    Plugin(Arc<str>),
}

impl StageName {
    /// The built-in stages in their default order.
    pub const BUILT_IN: [StageName; 3] = [StageName::Auth, StageName::RateLimit, StageName::Policy];

    pub fn as_str(&self) -> &str {
        match self {
            StageName::Auth => "auth",
            StageName::RateLimit => "rate_limit",
            StageName::Policy => "policy",
            StageName::Plugin(name) => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: Arc<str>,
    pub url: Uri,
    /// Bound on the wait for the upstream's response to *begin* (headers).
    pub timeout: Duration,
    /// Bound on silence inside a started response stream; `None` disables it.
    pub stream_idle_timeout: Option<Duration>,
    /// The header the gateway adds with the upstream's own credentials.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// This route's stage order, when it overrides the global `pipeline:`.
    pub pipeline: Option<Vec<StageName>>,
    /// `type: stdio`: the program the gateway starts. `url` is then the bridge the gateway
    /// forwards to (a placeholder until it listens, see `crate::stdio::Bridge`).
    pub stdio: Option<crate::stdio::StdioRoute>,
    /// A federated route (`members`): `url` is then its endpoint (a placeholder until it
    /// listens, see `crate::federation::Federator`).
    pub federation: Option<Federation>,
}

impl Config {
    /// Loads and validates a config file, reading env vars from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (pass --config PATH; the mcpgate repository's config/mcpgate.yaml is a starter that runs as is, and config/mcpgate.example.yaml documents every key)"
            } else {
                ""
            };
            ConfigErrors {
                source: path.display().to_string(),
                errors: vec![ConfigError { path: String::new(), line: None, message: format!("cannot read: {e}{hint}") }],
                missing_env: Vec::new(),
            }
        })?;
        Config::parse(&text, &path.display().to_string(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses and validates config text. `env` resolves `${VAR}` and the `*_env` keys.
    pub fn parse(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut sink = Sink::default();
        let mut root = match yaml::parse(text) {
            Ok(root) => root,
            Err(e) => {
                return Err(ConfigErrors {
                    source: source.to_string(),
                    errors: vec![e],
                    missing_env: Vec::new(),
                });
            }
        };
        let file = FileTree(Arc::new(yaml::to_json(&root)));
        let from_env = yaml::interpolate(&mut root, env, &mut sink);
        let raw: RawConfig = yaml::deserialize_all(&mut root, &mut sink);
        let config = Validator {
            root: &root,
            sink: &mut sink,
            env,
            from_env: &from_env,
        }
        .config(raw, file);
        // A key that is missing is placed where its parent starts; for an empty document the
        // parser puts that past the end (found by fuzzing: "line 2" of one line).
        let last = yaml::last_line(text);
        sink.finish(source).map_err(|mut e| {
            for error in &mut e.errors {
                error.line = error.line.map(|l| l.min(last));
            }
            e
        })?;
        Ok(config)
    }

    /// The headers that carry a caller's credential: `Authorization` and, with API keys, theirs
    /// (`auth.header`). The gateway consumes them itself: they are never forwarded upstream,
    /// never shown to plugins and never written to the audit log.
    pub fn credential_headers(&self) -> Vec<HeaderName> {
        let mut names = vec![http::header::AUTHORIZATION];
        if let Some(name) = self.auth.as_ref().map(|a| a.credential_header())
            && !names.contains(&name)
        {
            names.push(name);
        }
        names
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams
            .binary_search_by(|u| u.name.as_ref().cmp(name))
            .ok()
            .map(|i| &self.upstreams[i])
    }
}

impl Validator<'_> {
    fn config(&mut self, raw: RawConfig, file: FileTree) -> Config {
        let server = self.server(raw.server);
        let sessions = self.sessions(raw.sessions);
        let redis_present = raw.redis.is_some();
        let redis = raw.redis.and_then(|r| self.redis(r));
        let auth = raw.auth.and_then(|a| self.auth(a));
        let rate_limit = raw.rate_limit.and_then(|r| self.rate_limit(r));
        if rate_limit
            .as_ref()
            .is_some_and(|r| r.backend == StateBackend::Redis)
        {
            self.needs_redis("rate_limit.backend", redis_present);
        }
        let policy = raw.policy.and_then(|p| self.policy(p));
        let explicit_budget = raw
            .plugin_runtime
            .as_ref()
            .is_some_and(|r| r.request_budget().is_some());
        let mut plugin_runtime = self.plugin_runtime(raw.plugin_runtime);
        if plugin_runtime.kv.backend == StateBackend::Redis {
            self.needs_redis("plugin_runtime.kv.backend", redis_present);
        }
        let observability = self.observability(raw.observability);
        let admin = raw.admin.and_then(|a| self.admin(a));
        if observability
            .metrics
            .as_ref()
            .is_some_and(|m| m.listener == MetricsListener::Admin)
            && admin.is_none()
        {
            self.error(
                "observability.metrics.listener",
                "`admin` serves /metrics on the admin listener: configure the `admin:` section",
            );
        }
        let plugin_names: Vec<String> = raw.plugins.keys().cloned().collect();
        let plugins = self.plugins(raw.plugins, &plugin_runtime);
        plugin_runtime.request_budget =
            self.request_budget(plugin_runtime.request_budget, explicit_budget, &plugins);
        let configured = |s: &StageName| match s {
            StageName::Auth => auth.is_some(),
            StageName::RateLimit => rate_limit.is_some(),
            StageName::Policy => policy.is_some(),
            StageName::Plugin(name) => plugin_names.iter().any(|p| p == name.as_ref()),
        };
        let pipeline = match raw.pipeline {
            Some(list) => self.pipeline("pipeline", &list, &configured),
            // Without a list: the configured built-ins in their default order, then every plugin.
            None => StageName::BUILT_IN
                .into_iter()
                .chain(
                    plugin_names
                        .iter()
                        .map(|p| StageName::Plugin(Arc::from(p.as_str()))),
                )
                .filter(|s| configured(s))
                .collect(),
        };
        if raw.upstreams.is_empty() {
            self.missing(
                "upstreams",
                "at least one upstream is required (upstreams.<name>.url)",
            );
        }
        let upstreams = raw
            .upstreams
            .into_iter()
            .filter_map(|(name, u)| {
                let own = u.pipeline.as_ref().map(|list| {
                    self.pipeline(&format!("upstreams.{name}.pipeline"), list, &configured)
                });
                self.upstream(&name, u).map(|mut up| {
                    up.pipeline = own;
                    Arc::new(up)
                })
            })
            .collect::<Vec<_>>();
        self.federation_members(&upstreams);
        Config {
            server,
            sessions,
            upstreams,
            auth,
            rate_limit,
            policy,
            plugins,
            plugin_runtime,
            pipeline,
            observability,
            redis,
            admin,
            file,
        }
    }

    fn sessions(&mut self, raw: RawSessions) -> SessionConfig {
        // An empty key (typically `${MCPGATE_SESSION_KEY:-}`) means "not set".
        let key_text = match raw.key.filter(|k| !k.trim().is_empty()) {
            Some(k) => Some(("sessions.key", k)),
            None => (self.env)(SESSION_KEY_ENV)
                .filter(|k| !k.is_empty())
                .map(|k| ("sessions.key", k)),
        };
        let key = key_text.and_then(|(path, text)| match decode_key(&text) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(path, e);
                None
            }
        });
        let ttl = raw.ttl.unwrap_or(DEFAULT_SESSION_TTL_MS);
        if ttl == 0 {
            self.error("sessions.ttl", "must be greater than 0");
        }
        let max_active = raw.max_active.unwrap_or(DEFAULT_MAX_SESSIONS);
        if max_active == 0 {
            self.error("sessions.max_active", "must be greater than 0");
        }
        SessionConfig {
            key,
            ttl: Duration::from_millis(ttl),
            idle_timeout: Duration::from_millis(
                raw.idle_timeout.unwrap_or(DEFAULT_SESSION_IDLE_MS),
            ),
            max_active,
        }
    }

    fn upstream(&mut self, name: &str, raw: RawUpstream) -> Option<Upstream> {
        let path = format!("upstreams.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.error(&path, format!("upstream name `{name}` may only use letters, digits, `-` and `_` (it becomes /servers/{name}/mcp)"));
        }
        let raw_stdio = stdio::RawStdio {
            command: raw.command,
            args: raw.args,
            env: raw.env,
            cwd: raw.cwd,
            max_processes: raw.max_processes,
            max_message_bytes: raw.max_message_bytes,
            idle_timeout: raw.idle_timeout,
        };
        let federated = matches!(raw.kind.as_deref(), Some("federated"))
            || (raw.kind.is_none() && raw.members.is_some());
        if !federated && raw.members.is_some() {
            self.error(
                &format!("{path}.members"),
                "`members` make a federated route: drop `type` (or write `type: federated`)",
            );
        }
        if !federated && raw.catalog_ttl.is_some() {
            self.error(
                &format!("{path}.catalog_ttl"),
                "only a federated route (one with `members`) caches catalogs",
            );
        }
        if !federated && raw.prefix.is_some() {
            self.error(
                &format!("{path}.prefix"),
                "only a federated route (one with `members`) has a prefix",
            );
        }
        let mut federation = None;
        let (url, stdio) = match raw.kind.as_deref() {
            _ if federated => {
                if let Some(key) = raw_stdio.any().or(raw.url.as_ref().map(|_| "url")) {
                    self.error(
                        &format!("{path}.{key}"),
                        "a federated route serves its `members`: it has no `url` or `command` of its own",
                    );
                }
                federation = self.federation(
                    &path,
                    raw.members.unwrap_or_default(),
                    raw.prefix,
                    raw.catalog_ttl,
                );
                (
                    Some(Uri::from_static(federation::FEDERATION_PLACEHOLDER_URL)),
                    None,
                )
            }
            None | Some("http") => {
                if let Some(key) = raw_stdio.any() {
                    self.error(
                        &format!("{path}.{key}"),
                        "only a `type: stdio` upstream runs a program: add `type: stdio` (and no `url`)",
                    );
                }
                (self.upstream_url(&path, raw.url), None)
            }
            Some("stdio") => {
                if raw.url.is_some() {
                    self.error(
                        &format!("{path}.url"),
                        "a `type: stdio` upstream has no URL: the gateway starts `command` and speaks to it over stdio",
                    );
                }
                let placeholder = Uri::from_static(stdio::STDIO_PLACEHOLDER_URL);
                (Some(placeholder), self.stdio(&path, name, raw_stdio))
            }
            Some(other) => {
                self.error(
                    &format!("{path}.type"),
                    format!(
                        "unknown upstream type `{other}` (expected `http`, `stdio` or `federated`)"
                    ),
                );
                (None, None)
            }
        };
        let timeout = raw.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS);
        if timeout == 0 {
            self.error(
                &format!("{path}.timeout"),
                "must be greater than 0 (milliseconds)",
            );
        }
        let idle = raw
            .stream_idle_timeout
            .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT_MS);
        let credential = raw
            .auth
            .and_then(|auth| self.upstream_auth(&format!("{path}.auth"), auth));
        Some(Upstream {
            name: Arc::from(name),
            url: url?,
            timeout: Duration::from_millis(timeout),
            stream_idle_timeout: (idle > 0).then(|| Duration::from_millis(idle)),
            credential,
            pipeline: None,
            stdio,
            federation,
        })
    }

    /// An HTTP upstream's `url`.
    fn upstream_url(&mut self, path: &str, url: Option<String>) -> Option<Uri> {
        match url {
            None => {
                self.missing(&format!("{path}.url"), "required: the upstream's Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp (or `type: stdio` with a `command`)");
                None
            }
            Some(text) => match parse_upstream_url(&text) {
                Ok(uri) => Some(uri),
                Err(e) => {
                    self.error(&format!("{path}.url"), e);
                    None
                }
            },
        }
    }

    fn upstream_auth(
        &mut self,
        path: &str,
        raw: RawUpstreamAuth,
    ) -> Option<(HeaderName, HeaderValue)> {
        let unexpected = |v: &mut Self, key: &str, present: bool, kind: &str| {
            if present {
                v.error(
                    &format!("{path}.{key}"),
                    format!("`{key}` does not apply to `type: {kind}`"),
                );
            }
        };
        match raw.kind.as_deref() {
            Some("bearer") => {
                unexpected(self, "header", raw.header.is_some(), "bearer");
                unexpected(self, "value_env", raw.value_env.is_some(), "bearer");
                let token = self.upstream_secret(path, "token_env", raw.token_env)?;
                let key = format!("{path}.token_env");
                let value = format!("Bearer {token}");
                self.upstream_header(&key, "the token", http::header::AUTHORIZATION, &value)
            }
            Some("header") => {
                unexpected(self, "token_env", raw.token_env.is_some(), "header");
                let name = match raw.header {
                    None => {
                        self.missing(
                            &format!("{path}.header"),
                            "required: the header name to send, e.g. X-API-Key",
                        );
                        None
                    }
                    Some(h) => HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| {
                            self.error(
                                &format!("{path}.header"),
                                format!("`{h}` is not a valid header name"),
                            )
                        })
                        .ok(),
                };
                let value = self.upstream_secret(path, "value_env", raw.value_env)?;
                self.upstream_header(&format!("{path}.value_env"), "the value", name?, &value)
            }
            Some(other) => {
                self.error(
                    &format!("{path}.type"),
                    format!("unknown auth type `{other}` (expected `bearer` or `header`)"),
                );
                None
            }
            None => {
                self.missing(&format!("{path}.type"), "required: `bearer` or `header`");
                None
            }
        }
    }

    /// The secret an upstream credential's `key` (`token_env`, `value_env`) names.
    fn upstream_secret(&mut self, path: &str, key: &str, var: Option<String>) -> Option<String> {
        let key_path = format!("{path}.{key}");
        let Some(var) = var else {
            self.missing(
                &key_path,
                "required: the name of the environment variable holding the secret",
            );
            return None;
        };
        self.env_secret(&key_path, &var)
    }

    /// The credential header, marked sensitive (never printed by `http`'s Debug); `what` names
    /// the secret in the error when it cannot be a header value.
    fn upstream_header(
        &mut self,
        key_path: &str,
        what: &str,
        name: HeaderName,
        value: &str,
    ) -> Option<(HeaderName, HeaderValue)> {
        match HeaderValue::from_str(value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some((name, v))
            }
            Err(_) => {
                self.error(
                    key_path,
                    format!("{what} holds characters not allowed in a header"),
                );
                None
            }
        }
    }
}

/// An upstream URL as logs and `list-servers` show it: every query value hidden (a query may
/// carry a key or a tenant's secret), the rest as configured. Credentials in the authority are
/// refused by the config, so there are none to hide there.
pub fn display_url(url: &Uri) -> String {
    let Some(query) = url.query() else {
        return url.to_string();
    };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=…"),
            None => pair.to_string(),
        })
        .collect();
    let base = url.to_string();
    let base = base.split('?').next().unwrap_or_default();
    format!("{base}?{}", hidden.join("&"))
}

pub(crate) fn parse_upstream_url(text: &str) -> Result<Uri, String> {
    let url =
        url::Url::parse(text.trim()).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}` must not carry credentials or a #fragment (use `auth:`)"
        ));
    }
    url.as_str()
        .parse::<Uri>()
        .map_err(|e| format!("`{text}` is not a valid URI: {e}"))
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| {
            "must be 32 random bytes in base64 (generate one with `mcpgate gen-key`)".to_string()
        })?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "must decode to exactly 32 bytes, found {} (generate one with `mcpgate gen-key`)",
            b.len()
        )
    })
}

#[cfg(test)]
pub(crate) mod tests;
