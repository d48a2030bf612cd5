//! WebAssembly plugin stages: the sandbox, loading, and the per-call instance lifecycle.
//!
//! ```text
//!  load (start / validate):  read file → compile (cached) → check imports against grants
//!                            → link → pre-instantiate → init(config) once → registration
//!  each hook call:           slot (pooling allocator) → fresh instance (or a reused one)
//!                            → init → on-request / on-response, under a deadline and a
//!                            memory cap → a trapped instance is dropped, never reused
//! ```
//!
//! One wasmtime [`Engine`] per process: pooling allocator, epoch interruption (a ticker thread;
//! a running plugin yields to tokio every tick and is interrupted past its deadline), and an
//! on-disk compilation cache. The streaming body path never enters the sandbox.

pub mod host_api;
pub mod kv;
mod stage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    Trap, UpdateDeadline,
};

use crate::config::StateBackend;
use crate::config::{
    Config, ConfigError, ConfigErrors, InstanceMode, PluginRuntimeConfig, PluginSpec,
};
use crate::proxy::UpstreamClient;
use crate::redis::Redis;
pub use host_api::CustomMetrics;
use host_api::{Shared, State};
pub use kv::{KvStore, MemoryKv};
pub use stage::PluginStage;

pub type BoxFuture<'a, T> = crate::pipeline::BoxFuture<'a, T>;

/// Bindings generated from `wit/mcpgate-plugin.wit`.
#[allow(unsafe_code, clippy::all, missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The contract version this gateway implements (`package mcpgate:plugin@…`).
pub const CONTRACT_VERSION: &str = "0.1.0";
/// How often the epoch ticks: the granularity of deadlines, and how often a busy plugin yields.
const TICK: Duration = Duration::from_millis(2);
/// Reused instances kept idle per plugin (`instances: reuse`).
const MAX_IDLE: usize = 16;

/// WASI interfaces a plugin may import without a grant: streams for its own stderr (panic
/// messages), clocks and randomness. No filesystem or sockets are ever provided.
///
/// `wasi:cli/environment` is on the list because Rust's standard library imports it in every
/// component (its panic handler reads `RUST_BACKTRACE`): plugins get it with nothing in it, no
/// variables, no arguments, no working directory.
const WASI_ALLOWED: [&str; 18] = [
    "wasi:cli/environment",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/exit",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// What the gateway lends the plugins: the HTTP client for callouts, the store behind `kv`, the
/// registry their metrics go to, and the process's Redis connection (when `redis:` is
/// configured; the gateway's rate limiter shares it).
#[derive(Clone)]
pub struct PluginDeps {
    pub client: UpstreamClient,
    pub kv: Arc<dyn KvStore>,
    pub registry: Registry,
    pub redis: Option<Redis>,
}

impl Default for PluginDeps {
    fn default() -> Self {
        PluginDeps {
            client: UpstreamClient::new(),
            kv: Arc::new(MemoryKv::default()),
            registry: Registry::new(),
            redis: None,
        }
    }
}

impl PluginDeps {
    /// What `mcpgate start` lends: the `kv` store `plugin_runtime.kv` names, and one Redis
    /// connection for everything `redis:` serves. Must run inside a tokio runtime (the
    /// connection is made on first use).
    pub fn for_config(config: &Config) -> Result<PluginDeps, String> {
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
        Ok(PluginDeps {
            client: UpstreamClient::new(),
            kv,
            registry,
            redis,
        })
    }
}

/// The loaded plugins of one config, by name.
#[derive(Default)]
pub struct Plugins {
    stages: HashMap<Arc<str>, Arc<PluginStage>>,
    /// The registry their series went to (`PluginDeps::registry`): the gateway's `/metrics`.
    registry: Registry,
    /// `PluginDeps::redis`, handed on to the gateway's stages.
    redis: Option<Redis>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.stages.keys()).finish()
    }
}

impl Plugins {
    /// Loads every plugin of `config`: compiles, checks imports against grants, and runs `init`
    /// with its config. All problems are reported together, each at its key's line.
    pub async fn load(config: &Config, deps: PluginDeps) -> Result<Plugins, ConfigErrors> {
        if config.plugins.is_empty() {
            return Ok(Plugins {
                stages: HashMap::new(),
                registry: deps.registry,
                redis: deps.redis,
            });
        }
        let fail = |errors| ConfigErrors {
            source: "plugins".into(),
            errors,
            missing_env: Vec::new(),
        };
        let runtime = Runtime::new(
            &config.plugin_runtime,
            config
                .plugins
                .iter()
                .map(|p| p.max_memory)
                .max()
                .unwrap_or(0),
            &deps.registry,
        )
        .map_err(|e| {
            fail(vec![ConfigError {
                path: "plugin_runtime".into(),
                line: None,
                message: format!("cannot start the WebAssembly runtime: {e:#}"),
            }])
        })?;
        let metrics = Arc::new(CustomMetrics::new(deps.registry.clone()));
        let mut stages = HashMap::new();
        let mut errors = Vec::new();
        for spec in &config.plugins {
            match runtime.load(spec, &deps, &metrics).await {
                Ok(mut stage) => {
                    // The gateway's own credential headers are as hidden as Authorization.
                    let hidden: Vec<_> =
                        config.auth.iter().map(|a| a.credential_header()).collect();
                    stage.hide_headers(&hidden);
                    stages.insert(spec.name.clone(), Arc::new(stage));
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Plugins {
                stages,
                registry: deps.registry,
                redis: deps.redis,
            })
        } else {
            Err(fail(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<PluginStage>> {
        self.stages.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The registry the plugins' series are in; the gateway adds its own and serves it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Redis connection the plugins were loaded with (`PluginDeps::redis`).
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }
}

/// The process's wasm engine and what all plugins share.
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    /// One permit per pooling-allocator slot: a call waits for a slot (up to its deadline)
    /// instead of failing when every slot is busy.
    slots: Arc<Semaphore>,
    pub(crate) stats: Stats,
    /// `plugin_runtime.request_budget`: plugin time one request may use in all.
    pub(crate) request_budget: Duration,
    _ticker: Ticker,
}

/// The gateway's own series about plugin calls.
#[derive(Clone)]
pub(crate) struct Stats {
    calls: IntCounterVec,
    duration: HistogramVec,
}

impl Stats {
    fn new(registry: &Registry) -> prometheus::Result<Stats> {
        let calls = IntCounterVec::new(
            Opts::new(
                "mcpgate_plugin_calls_total",
                "Plugin hook calls by plugin, hook and outcome (continue, modify, reject, respond, replace, or the failure kind)",
            ),
            &["plugin", "hook", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcpgate_plugin_call_duration_seconds",
                "Time of one plugin hook call, instantiation included",
            )
            .buckets(vec![
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1, 1.0,
            ]),
            &["plugin", "hook"],
        )?;
        // A second gateway in the same process (tests) shares the first one's series.
        let calls = match registry.register(Box::new(calls.clone())) {
            Err(prometheus::Error::AlreadyReg) | Ok(()) => calls,
            Err(e) => return Err(e),
        };
        let duration = match registry.register(Box::new(duration.clone())) {
            Err(prometheus::Error::AlreadyReg) | Ok(()) => duration,
            Err(e) => return Err(e),
        };
        Ok(Stats { calls, duration })
    }

    /// One plugin's handles, resolved once so that recording a call takes no lock.
    pub(crate) fn series(&self, plugin: &str) -> PluginSeries {
        let mut calls = HashMap::new();
        for hook in HOOKS {
            for outcome in OUTCOMES {
                calls.insert(
                    (hook, outcome),
                    self.calls.with_label_values(&[plugin, hook, outcome]),
                );
            }
        }
        PluginSeries {
            calls,
            duration: HOOKS.map(|h| self.duration.with_label_values(&[plugin, h])),
        }
    }
}

const HOOKS: [&str; 2] = ["request", "response"];
/// Every outcome of a hook call: the plugin's answer, or the kind of failure.
const OUTCOMES: [&str; 11] = [
    "continue", "modify", "reject", "respond", "replace", "timeout", "memory", "trap", "invalid",
    "rejected", "busy",
];

/// A plugin's call counters and duration histograms (see [`Stats::series`]).
pub(crate) struct PluginSeries {
    calls: HashMap<(&'static str, &'static str), prometheus::IntCounter>,
    duration: [prometheus::Histogram; 2],
}

impl PluginSeries {
    pub(crate) fn record(&self, hook: &str, outcome: &str, took: Duration) {
        if let Some(c) = self.calls.get(&(hook, outcome)) {
            c.inc();
        }
        let i = usize::from(hook != HOOKS[0]);
        self.duration[i].observe(took.as_secs_f64());
    }

    /// Calls counted so far (for tests and the CLI).
    pub(crate) fn count(&self, hook: &str, outcome: &str) -> u64 {
        self.calls.get(&(hook, outcome)).map_or(0, |c| c.get())
    }
}

/// Increments the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("mcpgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    fn new(
        cfg: &PluginRuntimeConfig,
        max_memory: usize,
        registry: &Registry,
    ) -> wasmtime::Result<Arc<Runtime>> {
        let mut config = EngineConfig::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(512 * 1024);
        config.async_stack_size(2 << 20);
        let slots = cfg.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_memory_size(max_memory.max(1 << 20))
            // Pages kept mapped (and zeroed with memset) between uses of a slot: a plugin's
            // shadow stack, data and first heap pages live there, so a fresh instance does not
            // page-fault them in again on every call (measured: init 20 µs → 5 µs).
            .linear_memory_keep_resident(256 * 1024)
            .table_keep_resident(16 * 1024)
            // Return freed slots' pages to the OS in batches: one madvise sweep (and one TLB
            // shootdown) per batch instead of per instance.
            .decommit_batch_size(32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Reserve only what the largest cap needs (plus a guard): bounds checks stay explicit,
        // but a thousand slots do not reserve a terabyte of address space.
        config.memory_reservation(max_memory.max(1 << 20) as u64);
        config.memory_guard_size(64 * 1024);
        if let Some(dir) = &cfg.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<State>::new(&engine);
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let stats = Stats::new(registry)?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            slots: Arc::new(Semaphore::new(slots as usize)),
            stats,
            request_budget: cfg.request_budget,
            _ticker: ticker,
        }))
    }

    /// Loads one plugin; the error names the key to fix.
    async fn load(
        self: &Arc<Self>,
        spec: &PluginSpec,
        deps: &PluginDeps,
        metrics: &Arc<CustomMetrics>,
    ) -> Result<PluginStage, ConfigError> {
        let at = |key: &str, line: Option<usize>, message: String| ConfigError {
            path: format!("plugins.{}{key}", spec.name),
            line,
            message,
        };
        let file = spec.file.clone();
        let bytes = std::fs::read(&file).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (build the example plugins with scripts/build-plugins.sh, or check plugin_runtime.dir)"
            } else {
                ""
            };
            at(".file", spec.lines.file, format!("cannot read `{}`: {e}{hint}", file.display()))
        })?;
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| at(".file", spec.lines.file, e.to_string()))?
            .map_err(|e| {
                at(
                    ".file",
                    spec.lines.file,
                    format!(
                        "`{}` is not a loadable WebAssembly component: {e:#}",
                        file.display()
                    ),
                )
            })?;
        check_imports(&self.engine, &component, spec)
            .map_err(|m| at(".grants", spec.lines.grants, m))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(|e| {
                at(
                    ".file",
                    spec.lines.file,
                    format!(
                        "`{}` does not implement the mcpgate:plugin@{CONTRACT_VERSION} `plugin` world: {e:#}",
                        file.display()
                    ),
                )
            })?;
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            grants: spec.grants.clone(),
            kv: deps.kv.clone(),
            client: deps.client.clone(),
            metrics: metrics.clone(),
        });
        let plugin = Loaded {
            runtime: self.clone(),
            spec: spec.clone(),
            pre,
            shared,
            idle: Mutex::new(Vec::new()),
        };
        // Run init once now: a config the plugin rejects fails `validate` and `start`.
        let deadline = Instant::now() + spec.timeout.max(Duration::from_secs(5));
        let registration = match plugin.instance("load".into(), deadline).await {
            Ok((live, reg)) => {
                plugin.release(live);
                reg
            }
            Err(f) if f.kind == FailureKind::Rejected => {
                return Err(at(
                    ".config",
                    spec.lines.config,
                    format!("plugin `{}` rejected its config: {}", spec.name, f.detail),
                ));
            }
            Err(f) => {
                return Err(at(
                    ".file",
                    spec.lines.file,
                    format!("plugin `{}` failed in init: {f}", spec.name),
                ));
            }
        };
        let patterns = |methods: &[String]| {
            globs(methods).map_err(|e| {
                at(
                    ".file",
                    spec.lines.file,
                    format!(
                        "plugin `{}` registered an invalid method pattern: {e}",
                        spec.name
                    ),
                )
            })
        };
        let requests = patterns(&registration.request_methods)?;
        let responses = patterns(&registration.response_methods)?;
        Ok(PluginStage::new(plugin, requests, responses))
    }
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>, globset::Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        // `*` matches across `/` too: `*` means every method.
        set.add(Glob::new(p)?);
    }
    set.build().map(Some)
}

/// Refuses a component that imports anything its grants do not cover, naming every such import.
fn check_imports(engine: &Engine, component: &Component, spec: &PluginSpec) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut filesystem = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        if let Some(iface) = interface.strip_prefix("mcpgate:plugin/") {
            if version
                .split('.')
                .take(2)
                .ne(CONTRACT_VERSION.split('.').take(2))
            {
                problems.push(format!(
                    "imports `{name}`: built for plugin contract {version}, this gateway implements {CONTRACT_VERSION}"
                ));
                continue;
            }
            let grant = match iface {
                "types" | "log" => None,
                "kv" => (!spec.grants.kv).then_some("`kv: true`"),
                "metrics" => (!spec.grants.metrics).then_some("`metrics: true`"),
                "callout" => spec
                    .grants
                    .callout
                    .is_empty()
                    .then_some("a `callout:` map of target names to URLs"),
                _ => {
                    problems.push(format!(
                        "imports `{name}`, which this gateway does not provide"
                    ));
                    None
                }
            };
            if let Some(grant) = grant {
                problems.push(format!(
                    "imports `{name}`, which is not granted (add {grant} under plugins.{}.grants)",
                    spec.name
                ));
            }
        } else if interface.starts_with("wasi:filesystem/") {
            if !spec.grants.empty_filesystem {
                filesystem.push(format!("`{name}`"));
            }
        } else if !WASI_ALLOWED.contains(&interface) {
            problems.push(format!(
                "imports `{name}`, which plugins never get (no filesystem, sockets or host environment)"
            ));
        }
    }
    if !filesystem.is_empty() {
        problems.push(format!(
            "imports {}, and plugins get no filesystem (built with `cargo component build`? Its default wasip1 adapter imports the filesystem whether or not the plugin uses it: build with `--target wasm32-wasip2`, or add `empty_filesystem: true` under plugins.{}.grants to link it with no directories at all)",
            filesystem.join(", "),
            spec.name
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{}` cannot load: {}",
            spec.file.display(),
            problems.join("; ")
        ))
    }
}

/// Why a hook call failed. Fails only the request at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Ran past its deadline.
    Timeout,
    /// Tried to grow memory past its cap.
    Memory,
    /// Trapped: a panic, `unreachable`, a bad memory access.
    Trap,
    /// Returned something unusable (bad JSON, a header it may not set, ...).
    Invalid,
    /// `init` refused the config.
    Rejected,
    /// No instance slot came free before the deadline.
    Busy,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Trap => "trap",
            FailureKind::Invalid => "invalid",
            FailureKind::Rejected => "rejected",
            FailureKind::Busy => "busy",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl Failure {
    fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    /// Classifies an error from wasmtime, using what the store saw.
    fn from_wasm(e: &wasmtime::Error, state: &State, timeout: Duration) -> Failure {
        if state.limiter.hit {
            return Failure::new(FailureKind::Memory, format!("{e}"));
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return Failure::new(
                FailureKind::Timeout,
                format!("still running after its {}ms deadline", timeout.as_millis()),
            );
        }
        // A Rust panic prints its message to stderr before trapping: that is the useful part.
        let stderr = state.stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let panic = stderr.lines().find(|l| l.contains("panicked at")).map(|l| {
            let rest: Vec<&str> = stderr.lines().skip_while(|x| *x != l).take(2).collect();
            rest.join(" ")
        });
        let root = e.root_cause().to_string();
        Failure::new(
            FailureKind::Trap,
            match panic {
                Some(p) => format!("{root} ({})", p.trim()),
                None => root,
            },
        )
    }
}

/// One live instance and its store.
struct Live {
    store: Store<State>,
    plugin: bindings::Plugin,
    _slot: OwnedSemaphorePermit,
}

/// A loaded plugin: its pre-instantiated component and how to get instances of it.
pub(crate) struct Loaded {
    runtime: Arc<Runtime>,
    pub(crate) spec: PluginSpec,
    pre: bindings::PluginPre<State>,
    shared: Arc<Shared>,
    idle: Mutex<Vec<Live>>,
}

impl Loaded {
    /// An initialised instance: a fresh one, or (with `instances: reuse`) an idle one.
    async fn instance(
        &self,
        request_id: Arc<str>,
        deadline: Instant,
    ) -> Result<(Live, bindings::mcpgate::plugin::types::Registration), Failure> {
        let timeout = self.spec.timeout;
        let slot =
            tokio::time::timeout_at(deadline.into(), self.runtime.slots.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Failure::new(
                        FailureKind::Busy,
                        "no plugin instance slot came free before the deadline",
                    )
                })?
                .map_err(|_| {
                    Failure::new(FailureKind::Busy, "the plugin runtime is shutting down")
                })?;
        let mut store = Store::new(
            &self.runtime.engine,
            State::new(
                self.shared.clone(),
                self.spec.max_memory,
                request_id,
                deadline,
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|cx| {
            Ok(if Instant::now() >= cx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let plugin = match self.pre.instantiate_async(&mut store).await {
            Ok(p) => p,
            Err(e) => return Err(Failure::from_wasm(&e, store.data(), timeout)),
        };
        let reg = match plugin
            .mcpgate_plugin_hooks()
            .call_init(&mut store, &self.spec.config_json)
            .await
        {
            Ok(Ok(reg)) => reg,
            Ok(Err(message)) => return Err(Failure::new(FailureKind::Rejected, message)),
            Err(e) => return Err(Failure::from_wasm(&e, store.data(), timeout)),
        };
        Ok((
            Live {
                store,
                plugin,
                _slot: slot,
            },
            reg,
        ))
    }

    /// An instance for one hook call.
    async fn acquire(&self, request_id: Arc<str>, deadline: Instant) -> Result<Live, Failure> {
        if self.spec.instances == InstanceMode::Reuse {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(mut live) = idle {
                live.store.data_mut().rearm(request_id, deadline);
                live.store.set_epoch_deadline(1);
                return Ok(live);
            }
        }
        match self.instance(request_id, deadline).await {
            Ok((live, _)) => Ok(live),
            // A config that passed at load but fails now is the plugin's bug, not the user's.
            Err(f) if f.kind == FailureKind::Rejected => Err(Failure::new(
                FailureKind::Invalid,
                format!("init rejected a config it accepted at load: {}", f.detail),
            )),
            Err(f) => Err(f),
        }
    }

    /// Returns a healthy instance after a call: kept when reusing, dropped otherwise.
    fn release(&self, live: Live) {
        if self.spec.instances == InstanceMode::Reuse {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(live);
            }
        }
    }

    /// Runs one hook on an instance under the plugin's deadline, or `limit` when that is sooner
    /// (what is left of the request's plugin budget). Any failure drops the instance.
    async fn call<R>(
        &self,
        request_id: Arc<str>,
        limit: Duration,
        hook: impl for<'a> FnOnce(
            &'a mut Store<State>,
            &'a bindings::Plugin,
        ) -> BoxFuture<'a, wasmtime::Result<R>>,
    ) -> Result<R, Failure>
    where
        R: Send,
    {
        let timeout = self.spec.timeout.min(limit);
        let deadline = Instant::now() + timeout;
        let run = async {
            let mut live = self.acquire(request_id, deadline).await?;
            let result = hook(&mut live.store, &live.plugin).await;
            match result {
                Ok(r) => {
                    self.release(live);
                    Ok(r)
                }
                Err(e) => Err(Failure::from_wasm(&e, live.store.data(), timeout)),
            }
        };
        // The epoch deadline stops wasm code; this also bounds time spent in host calls
        // (kv, callout) and waiting for a slot.
        match tokio::time::timeout_at((deadline + TICK * 2).into(), run).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Timeout,
                format!("still running after its {}ms deadline", timeout.as_millis()),
            )),
        }
    }
}
