//! What a plugin instance can reach: the per-instance [`State`] and the host side of the WIT
//! imports (`log`, `kv`, `metrics`, `callout`). Whether a plugin may import `kv`, `metrics` or
//! `callout` at all is decided at load (`load::check_imports`); these functions only ever run
//! for granted plugins, and still re-check the grant.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::engine::bindings::mcpgate::plugin::{callout, kv, log, metrics, types};
use super::kv::{KvError, KvStore};
use crate::config::Grants;
use crate::observability::metrics::Cache;
use crate::proxy::UpstreamClient;

/// Log lines one hook call may write; the rest are dropped (and the drop is logged once).
const LOG_LINES_PER_CALL: u32 = 32;
const LOG_LINE_BYTES: usize = 2048;
/// What a plugin's stderr (panic messages) may hold per instance.
pub const STDERR_BYTES: usize = 16 * 1024;
const CALLOUT_MAX_RESPONSE: usize = 1024 * 1024;

/// Everything one plugin's instances share.
pub struct Shared {
    pub name: Arc<str>,
    pub grants: Grants,
    pub kv: Arc<dyn KvStore>,
    pub client: UpstreamClient,
    pub metrics: Arc<CustomMetrics>,
}

/// The data of one instance's store.
pub struct State {
    /// Built on first use: most calls never touch WASI.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub limiter: Limiter,
    pub stderr: MemoryOutputPipe,
    pub shared: Arc<Shared>,
    pub request_id: Arc<str>,
    pub deadline: Instant,
    logs: u32,
}

impl State {
    pub fn new(
        shared: Arc<Shared>,
        max_memory: usize,
        request_id: Arc<str>,
        deadline: Instant,
    ) -> Self {
        State {
            wasi: None,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory,
                hit: false,
            },
            stderr: MemoryOutputPipe::new(STDERR_BYTES),
            shared,
            request_id,
            deadline,
            logs: 0,
        }
    }

    /// Re-arms a reused instance for its next call.
    pub fn rearm(&mut self, request_id: Arc<str>, deadline: Instant) {
        self.request_id = request_id;
        self.deadline = deadline;
        self.logs = 0;
    }

    /// The instance's resource table: WASI's handles and the views of the call in progress.
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The remaining time of this call.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &self.stderr;
        // No preopens, no environment, no arguments, sockets denied: the defaults.
        let ctx = self
            .wasi
            .get_or_insert_with(|| WasiCtx::builder().stderr(stderr.clone()).build());
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// The memory cap of one instance. Growing past it traps the instance (and records why).
pub struct Limiter {
    max_memory: usize,
    pub hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            wasmtime::bail!(
                "plugin memory limit of {} MiB reached",
                self.max_memory >> 20
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl types::Host for State {}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) {
        self.logs += 1;
        if self.logs > LOG_LINES_PER_CALL {
            if self.logs == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.shared.name, request_id = %self.request_id, "plugin log limit reached; dropping its further lines for this call");
            }
            return;
        }
        let mut message = message;
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let (plugin, request_id) = (&self.shared.name, &self.request_id);
        match level {
            log::Level::Trace => tracing::trace!(%plugin, %request_id, "{message}"),
            log::Level::Debug => tracing::debug!(%plugin, %request_id, "{message}"),
            log::Level::Info => tracing::info!(%plugin, %request_id, "{message}"),
            log::Level::Warn => tracing::warn!(%plugin, %request_id, "{message}"),
            log::Level::Error => tracing::error!(%plugin, %request_id, "{message}"),
        }
    }
}

fn kv_error(e: KvError) -> kv::Error {
    match e {
        KvError::Unavailable(m) => kv::Error::Unavailable(m),
        KvError::Invalid(m) => kv::Error::Invalid(m),
    }
}

impl State {
    fn kv_store(&self) -> Result<Arc<dyn KvStore>, kv::Error> {
        if self.shared.grants.kv {
            Ok(self.shared.kv.clone())
        } else {
            Err(kv::Error::Unavailable(
                "the `kv` capability is not granted".into(),
            ))
        }
    }
}

impl kv::Host for State {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        let store = self.kv_store()?;
        store.get(&self.shared.name, &key).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), kv::Error> {
        let store = self.kv_store()?;
        store
            .set(
                &self.shared.name,
                &key,
                value,
                ttl_ms.map(Duration::from_millis),
            )
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        let store = self.kv_store()?;
        store
            .delete(&self.shared.name, &key)
            .await
            .map_err(kv_error)
    }

    async fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, kv::Error> {
        let store = self.kv_store()?;
        store
            .incr(
                &self.shared.name,
                &key,
                delta,
                ttl_ms.map(Duration::from_millis),
            )
            .await
            .map_err(kv_error)
    }
}

impl metrics::Host for State {
    async fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) {
        if self.shared.grants.metrics {
            self.shared
                .metrics
                .counter_add(&self.shared.name, &name, value, labels);
        }
    }

    async fn histogram_observe(&mut self, name: String, value: f64, labels: Vec<(String, String)>) {
        if self.shared.grants.metrics {
            self.shared
                .metrics
                .histogram_observe(&self.shared.name, &name, value, labels);
        }
    }
}

/// Headers a callout may not set: the connection's own, and what the client sets.
const CALLOUT_FORBIDDEN: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

impl callout::Host for State {
    async fn send(&mut self, req: callout::Request) -> Result<callout::Response, callout::Error> {
        let denied = |m: String| callout::Error::Denied(m);
        let Some(base) = self.shared.grants.callout.get(&req.target) else {
            return Err(denied(format!(
                "callout target `{}` is not granted to this plugin",
                req.target
            )));
        };
        if !req.path.starts_with('/') || req.path.contains("://") || req.path.contains('#') {
            return Err(denied(
                "`path` must be an absolute path (starting with `/`)".into(),
            ));
        }
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| denied(format!("`{}` is not an HTTP method", req.method)))?;
        let base_path = base.path().trim_end_matches('/');
        let uri = format!(
            "{}://{}{base_path}{}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map(|a| a.as_str()).unwrap_or_default(),
            req.path
        );
        let mut builder = Request::builder().method(method).uri(&uri);
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| denied(format!("`{name}` is not a header name")))?;
            if CALLOUT_FORBIDDEN.contains(&name.as_str()) {
                return Err(denied(format!("header `{name}` is set by the gateway")));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                denied(format!("the value of `{name}` is not a valid header value"))
            })?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| denied(e.to_string()))?;
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(self.remaining());
        match self
            .shared
            .client
            .fetch(request, timeout, CALLOUT_MAX_RESPONSE)
            .await
        {
            Ok((parts, body)) => Ok(callout::Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                    .collect(),
                body: body.to_vec(),
            }),
            Err(crate::proxy::FetchError::Timeout) => Err(callout::Error::Timeout),
            Err(crate::proxy::FetchError::Failed(m)) => Err(callout::Error::Failed(m)),
        }
    }
}

/// Series that plugins define through the `metrics` import, in the gateway's registry. Bounded:
/// at most [`CustomMetrics::MAX_METRICS`] names and [`CustomMetrics::MAX_SERIES`] label sets each;
/// calls past a bound are dropped.
pub struct CustomMetrics {
    registry: Registry,
    /// Definitions and admitted series: taken only for a series not seen before.
    metrics: Mutex<HashMap<String, Custom>>,
    /// Admitted series by (metric name, label values), read without a lock.
    handles: Cache<(String, Vec<String>), Handle>,
}

enum Kind {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
}

#[derive(Clone)]
enum Handle {
    Counter(prometheus::IntCounter),
    Histogram(prometheus::Histogram),
}

struct Custom {
    labels: Vec<String>,
    series: HashSet<Vec<String>>,
    kind: Kind,
}

impl CustomMetrics {
    pub const MAX_METRICS: usize = 64;
    pub const MAX_SERIES: usize = 1000;

    pub fn new(registry: Registry) -> Self {
        CustomMetrics {
            registry,
            metrics: Mutex::new(HashMap::new()),
            handles: Cache::default(),
        }
    }

    fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    /// Sorts labels by name and checks them; `None` when the call must be dropped.
    fn labels(
        plugin: &str,
        mut labels: Vec<(String, String)>,
    ) -> Option<(Vec<String>, Vec<String>)> {
        labels.sort();
        if labels.len() > 8
            || labels.iter().any(|(k, v)| {
                !Self::valid_name(k) || k == "plugin" || k.starts_with("__") || v.len() > 128
            })
            || labels.windows(2).any(|w| w[0].0 == w[1].0)
        {
            return None;
        }
        let (mut names, mut values): (Vec<String>, Vec<String>) = labels.into_iter().unzip();
        names.insert(0, "plugin".into());
        values.insert(0, plugin.into());
        Some((names, values))
    }

    fn with_metric(
        &self,
        plugin: &str,
        name: &str,
        labels: Vec<(String, String)>,
        make: impl FnOnce(&str, &[&str]) -> prometheus::Result<Kind>,
        apply: impl FnOnce(&Handle),
    ) {
        let Some((names, values)) = Self::valid_name(name)
            .then(|| Self::labels(plugin, labels))
            .flatten()
        else {
            tracing::debug!(%plugin, metric = name, "plugin metric dropped: invalid name or labels");
            return;
        };
        let key = (name.to_string(), values);
        if let Some(handle) = self.handles.get(&key) {
            return apply(&handle);
        }
        let values = &key.1;
        let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if !metrics.contains_key(name) {
            if metrics.len() >= Self::MAX_METRICS {
                return;
            }
            let label_refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let kind = match make(name, &label_refs) {
                Ok(k) => k,
                Err(e) => {
                    tracing::debug!(%plugin, metric = name, error = %e, "plugin metric dropped");
                    return;
                }
            };
            metrics.insert(
                name.to_string(),
                Custom {
                    labels: names.clone(),
                    series: HashSet::new(),
                    kind,
                },
            );
        }
        let Some(metric) = metrics.get_mut(name) else {
            return;
        };
        if metric.labels != names {
            tracing::debug!(%plugin, metric = name, "plugin metric dropped: label names differ from its first use");
            return;
        }
        if !metric.series.contains(values) {
            if metric.series.len() >= Self::MAX_SERIES {
                return;
            }
            metric.series.insert(values.clone());
        }
        let value_refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let handle = match &metric.kind {
            Kind::Counter(c) => Handle::Counter(c.with_label_values(&value_refs)),
            Kind::Histogram(h) => Handle::Histogram(h.with_label_values(&value_refs)),
        };
        let handle = self.handles.get_or_insert_with(key, |_| handle);
        apply(&handle);
    }

    pub fn counter_add(&self, plugin: &str, name: &str, value: u64, labels: Vec<(String, String)>) {
        let registry = &self.registry;
        self.with_metric(
            plugin,
            name,
            labels,
            |name, labels| {
                let c = IntCounterVec::new(
                    Opts::new(
                        format!("mcpgate_plugin_{name}_total"),
                        format!("Plugin-defined counter `{name}`"),
                    ),
                    labels,
                )?;
                registry.register(Box::new(c.clone()))?;
                Ok(Kind::Counter(c))
            },
            |handle| {
                if let Handle::Counter(c) = handle {
                    c.inc_by(value);
                }
            },
        );
    }

    pub fn histogram_observe(
        &self,
        plugin: &str,
        name: &str,
        value: f64,
        labels: Vec<(String, String)>,
    ) {
        if !value.is_finite() {
            return;
        }
        let registry = &self.registry;
        self.with_metric(
            plugin,
            name,
            labels,
            |name, labels| {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        format!("mcpgate_plugin_{name}"),
                        format!("Plugin-defined histogram `{name}`"),
                    ),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(Kind::Histogram(h))
            },
            |handle| {
                if let Handle::Histogram(h) = handle {
                    h.observe(value);
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn scrape(registry: &Registry) -> String {
        let mut out = Vec::new();
        use prometheus::Encoder as _;
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plugin_metrics_are_named_labelled_and_bounded() {
        let registry = Registry::new();
        let m = CustomMetrics::new(registry.clone());
        m.counter_add("quota", "rejections", 2, labels(&[("tools", "search_*")]));
        m.counter_add("quota", "rejections", 1, labels(&[("tools", "search_*")]));
        m.histogram_observe("redact", "matches", 3.0, labels(&[]));
        let text = scrape(&registry);
        assert!(
            text.contains(r#"mcpgate_plugin_rejections_total{plugin="quota",tools="search_*"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mcpgate_plugin_matches_count{plugin="redact"} 1"#),
            "{text}"
        );

        // Dropped: bad names, reserved or duplicate labels, other label names than first used.
        m.counter_add("quota", "Bad-Name", 1, labels(&[]));
        m.counter_add("quota", "x", 1, labels(&[("plugin", "spoof")]));
        m.counter_add("quota", "y", 1, labels(&[("a", "1"), ("a", "2")]));
        m.counter_add("quota", "rejections", 1, labels(&[("other", "v")]));
        m.histogram_observe("quota", "z", f64::NAN, labels(&[]));
        let text = scrape(&registry);
        assert!(
            !text.contains("Bad-Name") && !text.contains("spoof") && !text.contains("_y_total"),
            "{text}"
        );
        assert!(!text.contains("other="), "{text}");

        // Bounded series per metric.
        for i in 0..CustomMetrics::MAX_SERIES + 50 {
            m.counter_add("quota", "wide", 1, labels(&[("k", &i.to_string())]));
        }
        let series = scrape(&registry)
            .lines()
            .filter(|l| l.starts_with("mcpgate_plugin_wide_total{"))
            .count();
        assert_eq!(series, CustomMetrics::MAX_SERIES);
    }
}
