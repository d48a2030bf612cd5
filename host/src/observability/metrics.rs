//! Prometheus metrics: the families, bounded label values, and recording without locks.
//!
//! Every handle a request records into is resolved ahead of time or cached in a map that is read
//! lock-free ([`Cache`], an `ArcSwap`ped `HashMap`): the request path does an atomic load, a hash
//! lookup and an atomic add. A mutex is taken only the first time a label combination appears,
//! which happens a bounded number of times because every label value is bounded:
//!
//! - `server`: a configured upstream, or `_unknown` for requests to unconfigured routes;
//! - `method`: one of [`METHODS`] (the MCP methods of every revision), `GET` / `DELETE` for the
//!   stream and session-end requests, `batch`, `response` (a client's answer to a server
//!   request), else `_other`;
//! - `status`: the HTTP status code;
//! - `tool`: a name the upstream advertised in a `tools/list` result seen by this process (up to
//!   `max_listed_tools` per server), or one of the first `max_unlisted_tools` other names seen
//!   for the server; anything else is `_other`;
//! - `client`: one of the first `max_clients` caller ids (or `ip:` keys when unauthenticated),
//!   else `_other`.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::config::{MetricsConfig, Upstream};
use crate::session::Sessions;

/// The label value for anything past a bound.
pub const OTHER: &str = "_other";
/// The `server` label of requests to routes that are not configured.
pub const UNKNOWN_SERVER: &str = "_unknown";

/// Method label values, by index. Requests with other methods count as `_other`.
pub const METHODS: &[&str] = &[
    OTHER,
    "GET",
    "DELETE",
    "batch",
    "response",
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/message",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// The method label index of a JSON-RPC method name.
pub fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .skip(5)
        .position(|m| *m == method)
        .map_or(0, |i| i + 5)
}

/// Index of `GET`, `DELETE`, `batch`, `response` in [`METHODS`].
pub const METHOD_GET: usize = 1;
pub const METHOD_DELETE: usize = 2;
pub const METHOD_BATCH: usize = 3;
pub const METHOD_RESPONSE: usize = 4;

/// Why an upstream exchange failed, for `mcpgate_upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Connection refused, reset, DNS, TLS: no response.
    Unavailable,
    /// No response headers within the route's `timeout`.
    Timeout,
    /// The upstream answered 5xx.
    Status5xx,
    /// A started response went silent past `stream_idle_timeout`.
    StreamIdle,
    /// A started response broke off.
    StreamBroken,
    /// An answer a stage asked to inspect could not be (too large, unreadable).
    Uninspectable,
    /// The upstream answered 401/403: the gateway's credential for it does not work.
    CredentialRefused,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 7] = [
        UpstreamErrorKind::Unavailable,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Status5xx,
        UpstreamErrorKind::StreamIdle,
        UpstreamErrorKind::StreamBroken,
        UpstreamErrorKind::Uninspectable,
        UpstreamErrorKind::CredentialRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Unavailable => "unavailable",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Status5xx => "status_5xx",
            UpstreamErrorKind::StreamIdle => "stream_idle",
            UpstreamErrorKind::StreamBroken => "stream_broken",
            UpstreamErrorKind::Uninspectable => "uninspectable",
            UpstreamErrorKind::CredentialRefused => "credential_refused",
        }
    }
}

/// A map read without locks; writers (new keys only) serialise on a mutex and publish a copy.
pub(crate) struct Cache<K, V> {
    map: ArcSwap<HashMap<K, V>>,
    write: Mutex<()>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// The value for `key`, if present (lock-free). Used by plugins' metric handles.
    #[cfg_attr(not(feature = "plugins"), allow(dead_code))]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.load().get(key).cloned()
    }

    /// The value for `key`, made (once) by `make` when missing.
    pub(crate) fn get_or_insert_with(&self, key: K, make: impl FnOnce(&K) -> V) -> V {
        if let Some(v) = self.map.load().get(&key) {
            return v.clone();
        }
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(v) = current.get(&key) {
            return v.clone();
        }
        let value = make(&key);
        let mut next = HashMap::clone(&current);
        next.insert(key, value.clone());
        self.map.store(Arc::new(next));
        value
    }
}

/// A bounded set of label values: names are admitted until a bound, then map to `_other`.
pub(crate) struct LabelSet {
    names: ArcSwap<HashSet<Arc<str>>>,
    counts: Mutex<(usize, usize)>,
    max_listed: usize,
    max_unlisted: usize,
    /// Set once no unlisted name can be admitted any more: misses skip the mutex.
    unlisted_full: AtomicBool,
    other: Arc<str>,
}

/// Longer names are never label values.
const MAX_LABEL_LEN: usize = 128;

impl LabelSet {
    pub(crate) fn new(max_listed: usize, max_unlisted: usize) -> Self {
        LabelSet {
            names: ArcSwap::from_pointee(HashSet::new()),
            counts: Mutex::new((0, 0)),
            max_listed,
            max_unlisted,
            unlisted_full: AtomicBool::new(max_unlisted == 0),
            other: Arc::from(OTHER),
        }
    }

    /// The label value for a name a client sent: itself if admitted (or admissible), else `_other`.
    pub(crate) fn label(&self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.load().get(name) {
            return n.clone();
        }
        if self.unlisted_full.load(Ordering::Relaxed) || name.len() > MAX_LABEL_LEN {
            return self.other.clone();
        }
        self.admit(name, false)
            .unwrap_or_else(|| self.other.clone())
    }

    /// Admits a name the upstream advertised (up to the listed bound).
    pub(crate) fn admit_listed(&self, name: &str) {
        if name.len() <= MAX_LABEL_LEN && !self.names.load().contains(name) {
            self.admit(name, true);
        }
    }

    fn admit(&self, name: &str, listed: bool) -> Option<Arc<str>> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.names.load_full();
        if let Some(n) = current.get(name) {
            return Some(n.clone());
        }
        let (slot, max) = if listed {
            (&mut counts.0, self.max_listed)
        } else {
            (&mut counts.1, self.max_unlisted)
        };
        if *slot >= max {
            return None;
        }
        *slot += 1;
        if !listed && *slot >= max {
            self.unlisted_full.store(true, Ordering::Relaxed);
        }
        let name: Arc<str> = Arc::from(name);
        let mut next = HashSet::clone(&current);
        next.insert(name.clone());
        self.names.store(Arc::new(next));
        Some(name)
    }
}

/// The metric families (vectors) every route's handles come from.
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    tool_calls: IntCounterVec,
    rate_limited: IntCounterVec,
    denials: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    sse_streams: IntGaugeVec,
}

/// One route's pre-resolved handles and caches.
pub struct RouteMetrics {
    pub name: Arc<str>,
    families: Arc<Families>,
    requests: Cache<(u16, u16), IntCounter>,
    /// Per method; resolved on first use so that unused methods export no series.
    duration: Vec<OnceLock<Histogram>>,
    tools: LabelSet,
    tool_calls: Cache<Arc<str>, IntCounter>,
    rate_limited: Cache<Arc<str>, IntCounter>,
    denials: Cache<(Arc<str>, Arc<str>), IntCounter>,
    upstream_duration: OnceLock<Histogram>,
    upstream_errors: Vec<OnceLock<IntCounter>>,
    sse_streams: OnceLock<IntGauge>,
}

impl RouteMetrics {
    fn new(name: Arc<str>, families: Arc<Families>, cfg: &MetricsConfig) -> Self {
        RouteMetrics {
            upstream_duration: OnceLock::new(),
            sse_streams: OnceLock::new(),
            duration: METHODS.iter().map(|_| OnceLock::new()).collect(),
            upstream_errors: UpstreamErrorKind::ALL
                .iter()
                .map(|_| OnceLock::new())
                .collect(),
            requests: Cache::default(),
            tools: LabelSet::new(cfg.max_listed_tools, cfg.max_unlisted_tools),
            tool_calls: Cache::default(),
            rate_limited: Cache::default(),
            denials: Cache::default(),
            families,
            name,
        }
    }

    /// One finished request.
    pub fn request(&self, method: usize, status: u16, seconds: Option<f64>) {
        self.requests
            .get_or_insert_with((method as u16, status), |(m, s)| {
                let status = s.to_string();
                self.families.requests.with_label_values(&[
                    self.name.as_ref(),
                    METHODS[*m as usize],
                    status.as_str(),
                ])
            })
            .inc();
        if let Some(s) = seconds {
            self.duration[method]
                .get_or_init(|| {
                    self.families
                        .duration
                        .with_label_values(&[self.name.as_ref(), METHODS[method]])
                })
                .observe(s);
        }
    }

    /// The `tool` label value for a name from a client's request.
    pub fn tool_label(&self, tool: &str) -> Arc<str> {
        self.tools.label(tool)
    }

    /// Tool names the upstream advertised (from a `tools/list` result).
    pub fn learn_tools<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.tools.admit_listed(name);
        }
    }

    pub fn tool_call(&self, tool: &Arc<str>) {
        self.tool_calls
            .get_or_insert_with(tool.clone(), |t| {
                self.families
                    .tool_calls
                    .with_label_values(&[self.name.as_ref(), t.as_ref()])
            })
            .inc();
    }

    pub fn rate_limited(&self, client: &Arc<str>) {
        self.rate_limited
            .get_or_insert_with(client.clone(), |c| {
                self.families
                    .rate_limited
                    .with_label_values(&[c.as_ref(), self.name.as_ref()])
            })
            .inc();
    }

    /// A policy denial; `tool` is empty for methods that name no tool.
    pub fn denied(&self, client: &Arc<str>, tool: &Arc<str>) {
        self.denials
            .get_or_insert_with((client.clone(), tool.clone()), |(c, t)| {
                self.families.denials.with_label_values(&[
                    c.as_ref(),
                    self.name.as_ref(),
                    t.as_ref(),
                ])
            })
            .inc();
    }

    pub fn upstream_answered(&self, seconds: f64) {
        self.upstream_duration
            .get_or_init(|| {
                self.families
                    .upstream_duration
                    .with_label_values(&[self.name.as_ref()])
            })
            .observe(seconds);
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        let i = UpstreamErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.upstream_errors[i]
            .get_or_init(|| {
                self.families
                    .upstream_errors
                    .with_label_values(&[self.name.as_ref(), kind.as_str()])
            })
            .inc();
    }

    /// The active-SSE-streams gauge of this route.
    pub fn sse_streams(&self) -> &IntGauge {
        self.sse_streams.get_or_init(|| {
            self.families
                .sse_streams
                .with_label_values(&[self.name.as_ref()])
        })
    }
}

/// The gateway's metrics: families registered once, per-route handles, bounded label sets.
pub struct Metrics {
    /// Per configured route; a reload that adds routes adds theirs ([`Metrics::add_routes`]).
    routes: ArcSwap<HashMap<Arc<str>, Arc<RouteMetrics>>>,
    families: Arc<Families>,
    config: MetricsConfig,
    /// The routes `mcpgate_active_sessions` reports (zero included).
    session_routes: Arc<ArcSwap<Vec<Arc<str>>>>,
    unknown: Arc<RouteMetrics>,
    clients: LabelSet,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("routes", &self.routes.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Seconds buckets for whole requests (tool calls can run for minutes).
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Registers `c`, or explains why not (a name clash in a shared registry) and goes on without.
impl Families {
    /// The request-path families, registered in `registry`.
    fn register(registry: &Registry) -> prometheus::Result<Families> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map(|c| register(registry, c))
        };
        let seconds = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(REQUEST_BUCKETS.to_vec());
            HistogramVec::new(opts, labels).map(|h| register(registry, h))
        };
        Ok(Families {
            requests: counter(
                "mcpgate_requests_total",
                "Requests on MCP routes by server, JSON-RPC method and HTTP status",
                &["server", "method", "status"],
            )?,
            duration: seconds(
                "mcpgate_request_duration_seconds",
                "Time from a request's arrival until its response ended (GET streams excluded)",
                &["server", "method"],
            )?,
            tool_calls: counter(
                "mcpgate_tool_calls_total",
                "tools/call requests forwarded to the upstream, by server and tool",
                &["server", "tool"],
            )?,
            rate_limited: counter(
                "mcpgate_rate_limit_rejections_total",
                "Requests refused by the rate limit (HTTP 429), by client and server",
                &["client", "server"],
            )?,
            denials: counter(
                "mcpgate_policy_denials_total",
                "Requests denied by the access policy, by client, server and tool (empty for methods naming no tool)",
                &["client", "server", "tool"],
            )?,
            upstream_duration: seconds(
                "mcpgate_upstream_response_seconds",
                "Time until the upstream's response headers arrived",
                &["server"],
            )?,
            upstream_errors: counter(
                "mcpgate_upstream_errors_total",
                "Failed upstream exchanges by server and kind (unavailable, timeout, status_5xx, stream_idle, stream_broken, uninspectable, credential_refused)",
                &["server", "kind"],
            )?,
            sse_streams: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "mcpgate_active_sse_streams",
                        "SSE responses (POST streams and GET streams) being relayed now",
                    ),
                    &["server"],
                )?,
            ),
        })
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "metric family not registered");
    }
    c
}

/// Registers a collector that a second gateway in the same registry (tests, embedders) may
/// have registered already: that is fine; any other refusal is logged.
pub fn register_shared(registry: &Registry, collector: Box<dyn Collector>) {
    if let Err(e) = registry.register(collector)
        && !matches!(e, prometheus::Error::AlreadyReg)
    {
        tracing::warn!(error = %e, "metric not registered");
    }
}

impl Metrics {
    /// Registers every family in `registry` and resolves the handles of each configured route.
    pub fn new(
        registry: &Registry,
        cfg: &MetricsConfig,
        upstreams: &[Arc<Upstream>],
        sessions: Arc<Sessions>,
    ) -> prometheus::Result<Metrics> {
        let families = Arc::new(Families::register(registry)?);
        let build_info = register(
            registry,
            IntGaugeVec::new(
                Opts::new("mcpgate_build_info", "The running mcpgate build (always 1)"),
                &["version"],
            )?,
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let gauge = SessionGauge::new(sessions, upstreams)?;
        let session_routes = gauge.upstreams.clone();
        register(registry, gauge);
        register(registry, TaskGauge::new()?);

        let routes = upstreams
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    Arc::new(RouteMetrics::new(u.name.clone(), families.clone(), cfg)),
                )
            })
            .collect();
        Ok(Metrics {
            routes: ArcSwap::from_pointee(routes),
            unknown: Arc::new(RouteMetrics::new(
                Arc::from(UNKNOWN_SERVER),
                families.clone(),
                &MetricsConfig {
                    max_listed_tools: 0,
                    max_unlisted_tools: 0,
                    ..cfg.clone()
                },
            )),
            families,
            config: cfg.clone(),
            session_routes,
            clients: LabelSet::new(0, cfg.max_clients),
        })
    }

    /// Resolves the handles of routes not seen before (a reload added them). Routes a reload
    /// removed keep theirs: their series stay until the process ends, like any counter's.
    pub fn add_routes(&self, upstreams: &[Arc<Upstream>]) {
        let names = upstreams.iter().map(|u| u.name.clone());
        let added = add_missing(&self.routes, names, |name| {
            Arc::new(RouteMetrics::new(
                name.clone(),
                self.families.clone(),
                &self.config,
            ))
        });
        if added {
            let mut names: Vec<Arc<str>> = self.routes.load().keys().cloned().collect();
            names.sort();
            self.session_routes.store(Arc::new(names));
        }
    }

    /// The handles of route `name` (`_unknown` for routes that are not configured).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        self.routes
            .load()
            .get(name)
            .unwrap_or(&self.unknown)
            .clone()
    }

    /// The `client` label value for a client key.
    pub fn client_label(&self, client: &str) -> Arc<str> {
        self.clients.label(client)
    }
}

/// `mcpgate_active_sessions{server}`: read from the session table when scraped, so the request
/// path pays nothing for it.
#[derive(Clone)]
struct SessionGauge {
    sessions: Arc<Sessions>,
    upstreams: Arc<ArcSwap<Vec<Arc<str>>>>,
    gauge: IntGaugeVec,
}

impl SessionGauge {
    fn new(sessions: Arc<Sessions>, upstreams: &[Arc<Upstream>]) -> prometheus::Result<Self> {
        Ok(SessionGauge {
            sessions,
            upstreams: Arc::new(ArcSwap::from_pointee(
                upstreams.iter().map(|u| u.name.clone()).collect(),
            )),
            gauge: IntGaugeVec::new(
                Opts::new(
                    "mcpgate_active_sessions",
                    "Legacy-era sessions this replica has seen and not yet ended or reaped",
                ),
                &["server"],
            )?,
        })
    }
}

impl Collector for SessionGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counts = self.sessions.counts();
        for name in self.upstreams.load().iter() {
            let n = counts.get(name.as_ref()).copied().unwrap_or(0);
            self.gauge
                .with_label_values(&[name.as_ref()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.gauge.collect()
    }
}

/// The tokio runtimes serving this process (each worker's, the control runtime), by a key of
/// their own: what `mcpgate_runtime_tasks` adds up when scraped.
static RUNTIMES: std::sync::Mutex<Vec<(u64, tokio::runtime::Handle)>> =
    std::sync::Mutex::new(Vec::new());

/// Counts the current runtime's tasks in `mcpgate_runtime_tasks` until dropped.
#[derive(Debug)]
pub struct TrackedRuntime(u64);

/// Starts counting the tasks of the runtime this is called on (see [`TrackedRuntime`]).
pub fn track_runtime() -> Option<TrackedRuntime> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RUNTIMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((key, handle));
    Some(TrackedRuntime(key))
}

impl Drop for TrackedRuntime {
    fn drop(&mut self) {
        RUNTIMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(key, _)| *key != self.0);
    }
}

/// `mcpgate_runtime_tasks`: tasks alive in the process's runtimes, read when scraped. A count
/// that keeps growing under steady load is a leak (the soak watches it).
#[derive(Clone)]
struct TaskGauge {
    gauge: prometheus::IntGauge,
}

impl TaskGauge {
    fn new() -> prometheus::Result<Self> {
        Ok(TaskGauge {
            gauge: prometheus::IntGauge::new(
                "mcpgate_runtime_tasks",
                "Tasks alive in the gateway's async runtimes (serving workers and control)",
            )?,
        })
    }
}

impl Collector for TaskGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let alive: usize = RUNTIMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, h)| h.metrics().num_alive_tasks())
            .sum();
        self.gauge.set(i64::try_from(alive).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

/// Histograms of the same buckets added together, for percentiles across label values (the
/// admin API's and dashboard's p50/p99).
#[derive(Debug, Default)]
pub struct MergedHistogram {
    /// (upper bound, cumulative count) per bucket.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl MergedHistogram {
    pub fn add(&mut self, h: &prometheus::proto::Histogram) {
        self.count += h.get_sample_count();
        for (i, b) in h.get_bucket().iter().enumerate() {
            match self.buckets.get_mut(i) {
                Some(slot) => slot.1 += b.cumulative_count(),
                None => self.buckets.push((b.upper_bound(), b.cumulative_count())),
            }
        }
    }

    /// The upper bound of the bucket holding quantile `q` (infinity past the last bucket);
    /// `None` before any sample.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        (self.count > 0).then(|| {
            self.buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= rank)
                .map_or(f64::INFINITY, |(bound, _)| *bound)
        })
    }
}

/// Adds to a map read lock-free an entry, made by `make`, for each name it does not hold yet
/// (routes a reload added). Entries of names no longer configured stay.
pub fn add_missing<V>(
    map: &ArcSwap<HashMap<Arc<str>, V>>,
    names: impl Iterator<Item = Arc<str>> + Clone,
    mut make: impl FnMut(&Arc<str>) -> V,
) -> bool
where
    V: Clone,
{
    let current = map.load();
    if names.clone().all(|n| current.contains_key(&n)) {
        return false;
    }
    let mut next = HashMap::clone(&current);
    for n in names {
        if let std::collections::hash_map::Entry::Vacant(slot) = next.entry(n) {
            let v = make(slot.key());
            slot.insert(v);
        }
    }
    map.store(Arc::new(next));
    true
}

/// The registry as Prometheus text (exposition format 0.0.4).
pub fn encode(registry: &Registry) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "could not encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_bounded_labels() {
        assert_eq!(METHODS[method_index("tools/call")], "tools/call");
        assert_eq!(METHODS[method_index("initialize")], "initialize");
        assert_eq!(METHODS[method_index("server/discover")], "server/discover");
        // Pseudo-methods are never matched by a client's method name.
        assert_eq!(method_index("GET"), 0);
        assert_eq!(method_index("batch"), 0);
        assert_eq!(method_index("x/made-up"), 0);
    }

    #[test]
    fn label_sets_are_bounded() {
        let set = LabelSet::new(3, 2);
        assert_eq!(&*set.label("a"), "a");
        assert_eq!(&*set.label("b"), "b");
        // Unlisted names past the bound are `_other`, however many there are.
        for i in 0..1000 {
            assert_eq!(&*set.label(&format!("junk{i}")), OTHER);
        }
        assert_eq!(&*set.label("a"), "a");
        // Advertised names have their own bound and are admitted even when unlisted ones are full.
        set.admit_listed("listed1");
        set.admit_listed("listed2");
        set.admit_listed("listed3");
        set.admit_listed("listed4");
        assert_eq!(&*set.label("listed3"), "listed3");
        assert_eq!(&*set.label("listed4"), OTHER);
        assert_eq!(&*set.label(&"x".repeat(200)), OTHER);
        assert_eq!(set.names.load().len(), 5);
    }

    #[test]
    fn merged_histograms_give_percentiles_across_label_values() {
        let opts = HistogramOpts::new("h", "h").buckets(vec![0.001, 0.01, 0.1]);
        let h = HistogramVec::new(opts, &["route"]).unwrap();
        let mut merged = MergedHistogram::default();
        assert_eq!(merged.quantile(0.5), None);
        for _ in 0..90 {
            h.with_label_values(&["a"]).observe(0.0005);
        }
        for _ in 0..9 {
            h.with_label_values(&["b"]).observe(0.05);
        }
        h.with_label_values(&["b"]).observe(5.0);
        for m in Collector::collect(&h)[0].get_metric() {
            merged.add(m.get_histogram());
        }
        assert_eq!(merged.quantile(0.5), Some(0.001));
        assert_eq!(merged.quantile(0.95), Some(0.1));
        // The slowest sample is past the last bucket.
        assert_eq!(merged.quantile(1.0), Some(f64::INFINITY));
    }

    #[test]
    fn cache_makes_each_value_once() {
        let cache: Cache<u32, Arc<u32>> = Cache::default();
        let mut made = 0;
        for _ in 0..3 {
            cache.get_or_insert_with(7, |k| {
                made += 1;
                Arc::new(*k)
            });
        }
        assert_eq!(made, 1);
        assert_eq!(*cache.get_or_insert_with(8, |k| Arc::new(*k)), 8);
        assert_eq!(made, 1);
    }
}
