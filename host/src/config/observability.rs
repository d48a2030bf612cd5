//! Schema and validation of `observability:`: Prometheus metrics, the audit log, tracing.
//!
//! Everything is opt-in: a missing subsection is off, a present one is on unless it says
//! `enabled: false`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::Digest as _;

use super::Validator;

pub const DEFAULT_METRICS_PATH: &str = "/metrics";
pub const DEFAULT_MAX_CLIENT_LABELS: usize = 1000;
pub const DEFAULT_MAX_UNLISTED_TOOLS: usize = 20;
pub const DEFAULT_MAX_LISTED_TOOLS: usize = 1000;
pub const DEFAULT_AUDIT_QUEUE: usize = 10_000;
pub const DEFAULT_MAX_BODY_LOG_BYTES: usize = 64 * 1024;
pub const DEFAULT_OTLP_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawObservability {
    metrics: Option<RawMetrics>,
    audit: Option<RawAudit>,
    tracing: Option<RawTracing>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    enabled: Option<bool>,
    path: Option<String>,
    listener: Option<String>,
    token_env: Option<String>,
    max_clients: Option<usize>,
    max_unlisted_tools: Option<usize>,
    max_listed_tools: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    enabled: Option<bool>,
    log_bodies: Option<bool>,
    sink: Option<String>,
    path: Option<String>,
    queue: Option<usize>,
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTracing {
    enabled: Option<bool>,
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
    honor_client_sampling: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
    timeout: Option<u64>,
}

/// `observability:` validated. `None` members are off.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityConfig {
    pub metrics: Option<MetricsConfig>,
    pub audit: Option<AuditConfig>,
    pub tracing: Option<TracingConfig>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where `/metrics` is served.
    pub path: String,
    /// Which listener serves it: the gateway's own (`public`, the default) or the admin one.
    pub listener: MetricsListener,
    /// Distinct client label values before the rest are counted as `_other`.
    pub max_clients: usize,
    /// Per server: tool names not (yet) advertised by the upstream's `tools/list` that still
    /// get their own series; later ones are counted as `_other`.
    pub max_unlisted_tools: usize,
    /// Per server: tool names learned from `tools/list` results.
    pub max_listed_tools: usize,
    /// The bearer token a scrape must present (`Authorization: Bearer <token>`), kept as its
    /// SHA-256; `None`: `/metrics` is open to whoever reaches the listener.
    pub token_sha256: Option<[u8; 32]>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            path: DEFAULT_METRICS_PATH.into(),
            listener: MetricsListener::Public,
            max_clients: DEFAULT_MAX_CLIENT_LABELS,
            max_unlisted_tools: DEFAULT_MAX_UNLISTED_TOOLS,
            max_listed_tools: DEFAULT_MAX_LISTED_TOOLS,
            token_sha256: None,
        }
    }
}

/// The listener `/metrics` is served on (`observability.metrics.listener`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListener {
    /// The gateway's own listener, beside the MCP routes.
    Public,
    /// The admin listener (`admin:`), behind its bearer token.
    Admin,
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    /// Appended to (created if missing).
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub sink: AuditSink,
    /// Include request and (JSON) response bodies, secrets redacted.
    pub log_bodies: bool,
    /// Records waiting for the writer; when full, new records are dropped and counted.
    pub queue: usize,
    /// Bodies longer than this are cut (and marked `truncated`).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// OTLP/HTTP traces endpoint (`…/v1/traces`); `None`: spans only in the gateway's logs.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Fraction of traces sampled.
    pub sample_ratio: f64,
    /// Whether a client's `traceparent` sampled flag overrides `sample_ratio` (off: a client
    /// cannot make the gateway export every one of its requests).
    pub honor_client_sampling: bool,
    /// Extra headers on export requests (collector auth).
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn observability(&mut self, raw: Option<RawObservability>) -> ObservabilityConfig {
        let Some(raw) = raw else {
            return ObservabilityConfig::default();
        };
        ObservabilityConfig {
            metrics: raw.metrics.and_then(|m| self.metrics(m)),
            audit: raw.audit.and_then(|a| self.audit(a)),
            tracing: raw.tracing.and_then(|t| self.tracing(t)),
        }
    }

    fn metrics(&mut self, raw: RawMetrics) -> Option<MetricsConfig> {
        let mut out = MetricsConfig::default();
        if let Some(path) = raw.path {
            let reserved = [
                "/servers/",
                "/healthz",
                "/readyz",
                "/.well-known/",
                "/admin/",
                "/assets/",
            ];
            if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', '{', '}']) {
                self.error(
                    "observability.metrics.path",
                    format!("`{path}` is not a plain absolute path such as /metrics"),
                );
            } else if reserved
                .iter()
                .any(|r| path.starts_with(r) || r.trim_end_matches('/') == path)
            {
                self.error(
                    "observability.metrics.path",
                    format!("`{path}` collides with a route the gateway serves itself"),
                );
            } else {
                out.path = path;
            }
        }
        out.listener = match raw.listener.as_deref() {
            None | Some("public") => MetricsListener::Public,
            Some("admin") => MetricsListener::Admin,
            Some(other) => {
                self.error(
                    "observability.metrics.listener",
                    format!("`{other}` is not a listener: use `public` or `admin`"),
                );
                MetricsListener::Public
            }
        };
        let mut bound = |key: &str, value: Option<usize>, slot: &mut usize| {
            if let Some(n) = value {
                if n > 100_000 {
                    self.error(
                        &format!("observability.metrics.{key}"),
                        "must be at most 100000 (each value is a time series)",
                    );
                } else {
                    *slot = n;
                }
            }
        };
        bound("max_clients", raw.max_clients, &mut out.max_clients);
        bound(
            "max_unlisted_tools",
            raw.max_unlisted_tools,
            &mut out.max_unlisted_tools,
        );
        bound(
            "max_listed_tools",
            raw.max_listed_tools,
            &mut out.max_listed_tools,
        );
        if let Some(var) = raw.token_env {
            out.token_sha256 = self
                .env_secret("observability.metrics.token_env", &var)
                .map(|t| sha2::Sha256::digest(t.trim().as_bytes()).into());
        }
        raw.enabled.unwrap_or(true).then_some(out)
    }

    fn audit(&mut self, raw: RawAudit) -> Option<AuditConfig> {
        let sink = match (raw.sink.as_deref(), raw.path) {
            (None | Some("stdout"), None) => AuditSink::Stdout,
            (Some("stdout"), Some(_)) => {
                self.error(
                    "observability.audit.path",
                    "`path` is only used with `sink: file`",
                );
                AuditSink::Stdout
            }
            (None | Some("file"), Some(path)) if !path.trim().is_empty() => {
                AuditSink::File(PathBuf::from(path))
            }
            (Some("file"), _) => {
                self.missing(
                    "observability.audit.path",
                    "`sink: file` needs `path` (the file records are appended to)",
                );
                AuditSink::Stdout
            }
            (Some(other), _) => {
                self.error(
                    "observability.audit.sink",
                    format!("`{other}` is not a sink: use `stdout` or `file`"),
                );
                AuditSink::Stdout
            }
            (None, Some(_)) => {
                self.error("observability.audit.path", "must not be empty");
                AuditSink::Stdout
            }
        };
        let queue = raw.queue.unwrap_or(DEFAULT_AUDIT_QUEUE);
        if queue == 0 || queue > 10_000_000 {
            self.error(
                "observability.audit.queue",
                "must be between 1 and 10000000",
            );
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_LOG_BYTES);
        if max_body_bytes == 0 {
            self.error(
                "observability.audit.max_body_bytes",
                "must be greater than 0",
            );
        }
        let out = AuditConfig {
            sink,
            log_bodies: raw.log_bodies.unwrap_or(false),
            queue: queue.clamp(1, 10_000_000),
            max_body_bytes: max_body_bytes.max(1),
        };
        raw.enabled.unwrap_or(true).then_some(out)
    }

    fn tracing(&mut self, raw: RawTracing) -> Option<TracingConfig> {
        let otlp_endpoint = raw.otlp_endpoint.filter(|e| !e.trim().is_empty()).and_then(|e| {
            match e.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                    Some(e)
                }
                _ => {
                    self.error(
                        "observability.tracing.otlp_endpoint",
                        format!(
                            "`{e}` is not an http(s) URL (for example http://127.0.0.1:4318/v1/traces)"
                        ),
                    );
                    None
                }
            }
        });
        let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_ratio) {
            self.error(
                "observability.tracing.sample_ratio",
                "must be between 0.0 and 1.0",
            );
        }
        let service_name = raw.service_name.unwrap_or_else(|| "mcpgate".into());
        if service_name.trim().is_empty() {
            self.error("observability.tracing.service_name", "must not be empty");
        }
        let headers = raw.headers.unwrap_or_default();
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                self.error(
                    &format!("observability.tracing.headers.{name}"),
                    "not a valid HTTP header name and value",
                );
            }
        }
        let timeout = raw.timeout.unwrap_or(DEFAULT_OTLP_TIMEOUT_MS);
        if timeout == 0 {
            self.error("observability.tracing.timeout", "must be greater than 0");
        }
        let out = TracingConfig {
            otlp_endpoint,
            service_name,
            sample_ratio: sample_ratio.clamp(0.0, 1.0),
            honor_client_sampling: raw.honor_client_sampling.unwrap_or(false),
            headers,
            timeout: Duration::from_millis(timeout.max(1)),
        };
        raw.enabled.unwrap_or(true).then_some(out)
    }
}
