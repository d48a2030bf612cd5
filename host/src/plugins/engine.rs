//! The process's one wasmtime engine: the pooling allocator, the epoch ticker that bounds every
//! call, the linker with the host imports, and the gateway's own series about plugin calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use super::host_api::State;
use crate::config::PluginRuntimeConfig;

/// Bindings generated from `wit/mcpgate-plugin.wit` (contract 0.2). The request and response a
/// hook reads are host resources (`view.rs`), read field by field; the resource methods are
/// plain calls (no future), and fail (trap) only on a handle the call was not given.
#[allow(unsafe_code, clippy::all, missing_docs)]
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: {
            "mcpgate:plugin/types.[method]request.request-id": trappable,
            "mcpgate:plugin/types.[method]request.route": trappable,
            "mcpgate:plugin/types.[method]request.era": trappable,
            "mcpgate:plugin/types.[method]request.caller-id": trappable,
            "mcpgate:plugin/types.[method]request.scopes": trappable,
            "mcpgate:plugin/types.[method]request.remote-addr": trappable,
            "mcpgate:plugin/types.[method]request.method": trappable,
            "mcpgate:plugin/types.[method]request.id": trappable,
            "mcpgate:plugin/types.[method]request.target": trappable,
            "mcpgate:plugin/types.[method]request.arguments": trappable,
            "mcpgate:plugin/types.[method]request.header": trappable,
            "mcpgate:plugin/types.[method]request.headers": trappable,
            "mcpgate:plugin/types.[method]request.message": trappable,
            "mcpgate:plugin/types.[drop]request": trappable,
            "mcpgate:plugin/types.[method]response.http-status": trappable,
            "mcpgate:plugin/types.[method]response.streamed": trappable,
            "mcpgate:plugin/types.[method]response.message": trappable,
            "mcpgate:plugin/types.[drop]response": trappable,
            default: async,
        },
        exports: { default: async },
        with: {
            "mcpgate:plugin/types.request": crate::plugins::view::RequestView,
            "mcpgate:plugin/types.response": crate::plugins::view::ResponseView,
        },
    });
}

/// The `plugin_runtime` settings a runtime is built with: a reload that changes any of them
/// builds a new runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    max_instances: u32,
    cache_dir: Option<std::path::PathBuf>,
    /// `plugin_runtime.request_budget`: plugin time one request may use in all.
    pub(crate) request_budget: Duration,
    /// `plugin_runtime.max_header_bytes`: header bytes one plugin answer may set.
    pub(crate) max_header_bytes: usize,
}

impl Settings {
    pub(super) fn of(cfg: &PluginRuntimeConfig) -> Settings {
        Settings {
            max_instances: cfg.max_instances,
            cache_dir: cfg.cache_dir.clone(),
            request_budget: cfg.request_budget,
            max_header_bytes: cfg.max_header_bytes,
        }
    }
}

/// How often the epoch ticks: the granularity of deadlines, and how often a busy plugin yields.
pub(super) const TICK: Duration = Duration::from_millis(2);
/// Reused instances kept idle per plugin (`instances: reuse`).
pub(super) const MAX_IDLE: usize = 16;

/// The process's wasm engine and what all plugins share.
pub(crate) struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<State>,
    /// One permit per pooling-allocator slot: a call waits for a slot (up to its deadline)
    /// instead of failing when every slot is busy.
    pub(super) slots: Arc<Semaphore>,
    pub(crate) stats: Stats,
    /// The largest `max_memory` its pool was sized for: a plugin asking for more needs a new
    /// runtime.
    pub(super) max_memory: usize,
    /// The `plugin_runtime` settings it was built with.
    pub(crate) settings: Settings,
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
        PluginSeries {
            calls: HOOKS.map(|hook| {
                OUTCOMES.map(|outcome| self.calls.with_label_values(&[plugin, hook, outcome]))
            }),
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

/// A plugin's call counters (by hook, then outcome, in the order of [`HOOKS`] and
/// [`OUTCOMES`]) and duration histograms (see [`Stats::series`]).
pub(crate) struct PluginSeries {
    calls: [[prometheus::IntCounter; OUTCOMES.len()]; 2],
    duration: [prometheus::Histogram; 2],
}

impl PluginSeries {
    fn counter(&self, hook: &str, outcome: &str) -> Option<&prometheus::IntCounter> {
        let h = HOOKS.iter().position(|x| *x == hook)?;
        let o = OUTCOMES.iter().position(|x| *x == outcome)?;
        Some(&self.calls[h][o])
    }

    pub(crate) fn record(&self, hook: &str, outcome: &str, took: Duration) {
        if let Some(c) = self.counter(hook, outcome) {
            c.inc();
        }
        let i = usize::from(hook != HOOKS[0]);
        self.duration[i].observe(took.as_secs_f64());
    }

    /// Calls counted so far (for tests and the CLI).
    pub(crate) fn count(&self, hook: &str, outcome: &str) -> u64 {
        self.counter(hook, outcome).map_or(0, |c| c.get())
    }

    /// Every call counted, those that failed (the failure kinds among the outcomes), and the
    /// median and 99th percentile of their duration in seconds (from the histogram's buckets:
    /// the upper bound of the bucket the quantile falls in; `None` before any call).
    pub(crate) fn summary(&self) -> CallSummary {
        let counted = || {
            self.calls
                .iter()
                .flat_map(|by_outcome| OUTCOMES.iter().zip(by_outcome))
        };
        let calls = counted().map(|(_, c)| c.get()).sum();
        let failures = counted()
            .filter(|(outcome, _)| FAILURES.contains(outcome))
            .map(|(_, c)| c.get())
            .sum();
        let mut merged = crate::observability::metrics::MergedHistogram::default();
        for h in &self.duration {
            merged.add(prometheus::core::Metric::metric(h).get_histogram());
        }
        CallSummary {
            calls,
            failures,
            p50_seconds: merged.quantile(0.5),
            p99_seconds: merged.quantile(0.99),
        }
    }
}

/// The outcomes that are failures of the plugin (not its answers).
const FAILURES: [&str; 6] = ["timeout", "memory", "trap", "invalid", "rejected", "busy"];

/// A plugin's calls in brief (see [`PluginSeries::summary`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallSummary {
    pub calls: u64,
    pub failures: u64,
    /// Upper bound of the histogram bucket holding the median call; past the last bucket:
    /// infinity (serialized as null).
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
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
    pub(super) fn new(
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
        super::v01::bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let stats = Stats::new(registry)?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            slots: Arc::new(Semaphore::new(slots as usize)),
            stats,
            settings: Settings::of(cfg),
            max_memory,
            _ticker: ticker,
        }))
    }
}
