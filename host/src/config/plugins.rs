//! Schema and validation of `plugins:` (WebAssembly stages) and `plugin_runtime:` (the sandbox
//! shared by all of them). Checking a plugin's file, imports and `config` needs the wasm engine;
//! that happens when [`crate::plugins::Plugins::load`] loads them, with the lines kept here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::{StageName, StateBackend, Validator};

pub const DEFAULT_PLUGIN_DIR: &str = "plugins";
pub const DEFAULT_PLUGIN_TIMEOUT_MS: u64 = 50;
pub const DEFAULT_PLUGIN_MEMORY_MB: u64 = 16;
pub const MAX_PLUGIN_MEMORY_MB: u64 = 1024;
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Keys one plugin may hold in the in-memory kv store (`plugin_runtime.kv.max_entries`).
pub const DEFAULT_KV_MAX_ENTRIES: usize = 100_000;
/// Bytes of keys and values one plugin may hold in the in-memory kv store
/// (`plugin_runtime.kv.max_bytes`).
pub const DEFAULT_KV_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Total plugin time one request may use, all hooks of all plugins and messages together.
pub const DEFAULT_REQUEST_BUDGET_MS: u64 = 1_000;
/// Header bytes (names and values) one plugin answer may set on the upstream request.
pub const DEFAULT_PLUGIN_HEADER_BYTES: usize = 8 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPlugin {
    file: Option<String>,
    /// Free-form: read from the YAML tree itself (see [`super::yaml::to_json`]).
    config: Option<serde::de::IgnoredAny>,
    on_error: Option<String>,
    timeout: Option<u64>,
    max_memory_mb: Option<u64>,
    instances: Option<String>,
    init_snapshot: Option<bool>,
    grants: Option<RawGrants>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGrants {
    kv: Option<bool>,
    metrics: Option<bool>,
    callout: Option<BTreeMap<String, String>>,
    empty_filesystem: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPluginRuntime {
    dir: Option<String>,
    max_instances: Option<u32>,
    cache: Option<bool>,
    cache_dir: Option<String>,
    kv: Option<RawKv>,
    request_budget: Option<u64>,
    max_header_bytes: Option<u64>,
}

impl RawPluginRuntime {
    pub(super) fn request_budget(&self) -> Option<u64> {
        self.request_budget
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKv {
    backend: Option<String>,
    on_redis_error: Option<String>,
    max_entries: Option<usize>,
    max_bytes: Option<usize>,
}

/// `plugin_runtime.kv`: where the plugins' `kv` keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    pub backend: StateBackend,
    /// With Redis unavailable: `fail_closed` hands plugins `unavailable` (they decide);
    /// `fail_open` answers as an empty store that drops writes.
    pub on_redis_error: OnError,
    /// Bound on the keys one plugin holds in the memory store.
    pub max_entries: usize,
    /// Bound on the bytes (keys and values) one plugin holds in the memory store.
    pub max_bytes: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            backend: StateBackend::Memory,
            on_redis_error: OnError::FailClosed,
            max_entries: DEFAULT_KV_MAX_ENTRIES,
            max_bytes: DEFAULT_KV_MAX_BYTES,
        }
    }
}

/// What a plugin failure does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The request fails (HTTP 500, JSON-RPC -32013). The default: a broken guard must not
    /// silently let everything through.
    FailClosed,
    /// The plugin is skipped for this request.
    FailOpen,
}

/// How hook calls get an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A fresh instance per hook call: nothing leaks between requests (the default).
    Fresh,
    /// Initialised instances are kept and reused (one request at a time); any failure discards
    /// the instance. Faster, for plugins whose `init` is costly.
    Reuse,
}

/// The capabilities a plugin is granted beyond `log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub kv: bool,
    pub metrics: bool,
    /// Callout target name → base URL.
    pub callout: BTreeMap<String, Uri>,
    /// Accept `wasi:filesystem` imports, linked with no directories at all (nothing can be
    /// opened). For components built by `cargo component build` with its default wasip1
    /// adapter, which imports the filesystem whether or not the plugin touches files.
    pub empty_filesystem: bool,
}

/// One `plugins.<name>` entry, validated (its file is checked when loading).
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: Arc<str>,
    /// The component file, resolved against `plugin_runtime.dir` when given as a bare file name.
    pub file: PathBuf,
    /// The `config:` section as JSON text (`{}` when absent).
    pub config_json: String,
    pub on_error: OnError,
    /// Deadline of one hook call, instantiation included.
    pub timeout: Duration,
    pub max_memory: usize,
    pub instances: InstanceMode,
    /// Run `init` once at load and start every instance from a snapshot of the state it left
    /// (`init_snapshot`, default true), instead of running `init` in each fresh instance.
    pub init_snapshot: bool,
    pub grants: Grants,
    /// Lines of the entry's keys, for errors found while loading.
    pub lines: PluginLines,
}

#[derive(Debug, Clone, Default)]
pub struct PluginLines {
    pub file: Option<usize>,
    pub config: Option<usize>,
    pub grants: Option<usize>,
}

/// `plugin_runtime:`: the sandbox all plugins share.
#[derive(Debug, Clone)]
pub struct PluginRuntimeConfig {
    pub dir: PathBuf,
    /// Instances alive at once across all plugins (the pooling allocator's slots).
    pub max_instances: u32,
    /// Compilation cache directory; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    pub kv: KvConfig,
    /// Total plugin time one request may use (every hook of every plugin, every message of a
    /// batch, its response hooks): past it the request is refused, whatever `on_error` says.
    pub request_budget: Duration,
    /// Header bytes (names and values) one plugin answer may set on the upstream request.
    pub max_header_bytes: usize,
}

impl Default for PluginRuntimeConfig {
    fn default() -> Self {
        PluginRuntimeConfig {
            dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            max_instances: DEFAULT_MAX_INSTANCES,
            cache_dir: default_cache_dir(),
            kv: KvConfig::default(),
            request_budget: Duration::from_millis(DEFAULT_REQUEST_BUDGET_MS),
            max_header_bytes: DEFAULT_PLUGIN_HEADER_BYTES,
        }
    }
}

/// `$XDG_CACHE_HOME/mcpgate/wasm` or `~/.cache/mcpgate/wasm`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("mcpgate").join("wasm"))
}

impl Validator<'_> {
    pub(super) fn plugin_runtime(&mut self, raw: Option<RawPluginRuntime>) -> PluginRuntimeConfig {
        let Some(raw) = raw else {
            return PluginRuntimeConfig::default();
        };
        let mut out = PluginRuntimeConfig::default();
        if let Some(dir) = raw.dir {
            out.dir = PathBuf::from(dir);
        }
        if let Some(n) = raw.max_instances {
            if n == 0 || n > 10_000 {
                self.error(
                    "plugin_runtime.max_instances",
                    "must be between 1 and 10000",
                );
            } else {
                out.max_instances = n;
            }
        }
        match (raw.cache, raw.cache_dir) {
            (Some(false), Some(_)) => self.error(
                "plugin_runtime.cache_dir",
                "`cache_dir` is set but `cache: false` turns the cache off",
            ),
            (Some(false), None) => out.cache_dir = None,
            (_, Some(dir)) => out.cache_dir = Some(PathBuf::from(dir)),
            (_, None) => {}
        }
        if let Some(kv) = raw.kv {
            out.kv = self.kv(kv);
        }
        match raw.request_budget {
            Some(ms @ 1..=600_000) => out.request_budget = Duration::from_millis(ms),
            Some(_) => self.error(
                "plugin_runtime.request_budget",
                "must be between 1 and 600000 (milliseconds)",
            ),
            None => {}
        }
        match raw.max_header_bytes {
            Some(n @ 1..=65_536) => out.max_header_bytes = n as usize,
            Some(_) => self.error(
                "plugin_runtime.max_header_bytes",
                "must be between 1 and 65536 (bytes of header names and values one plugin answer may set)",
            ),
            None => {}
        }
        out
    }

    fn kv(&mut self, raw: RawKv) -> KvConfig {
        let (backend, on_redis_error) = self.state_backend(
            "plugin_runtime.kv",
            raw.backend.as_deref(),
            raw.on_redis_error.as_deref(),
            OnError::FailClosed,
        );
        let mut bound = |key: &str, raw: Option<usize>, default: usize| {
            let path = format!("plugin_runtime.kv.{key}");
            match raw {
                Some(0) => self.error(&path, "must be greater than 0"),
                Some(_) if backend == StateBackend::Redis => self.error(
                    &path,
                    "only applies to `backend: memory` (bound Redis with its maxmemory)",
                ),
                _ => {}
            }
            raw.unwrap_or(default).max(1)
        };
        let max_entries = bound("max_entries", raw.max_entries, DEFAULT_KV_MAX_ENTRIES);
        let max_bytes = bound("max_bytes", raw.max_bytes, DEFAULT_KV_MAX_BYTES);
        KvConfig {
            backend,
            on_redis_error,
            max_entries,
            max_bytes,
        }
    }

    /// The request budget once the plugins are known: one call must fit in it, so an explicit
    /// budget shorter than a plugin's `timeout` is an error, and the default grows to twice the
    /// longest `timeout` when that is more than the default.
    pub(super) fn request_budget(
        &mut self,
        budget: Duration,
        explicit: bool,
        plugins: &[PluginSpec],
    ) -> Duration {
        let Some(longest) = plugins.iter().max_by_key(|p| p.timeout) else {
            return budget;
        };
        if !explicit {
            return budget.max(longest.timeout.saturating_mul(2));
        }
        if budget < longest.timeout {
            self.error(
                "plugin_runtime.request_budget",
                format!(
                    "{}ms is shorter than plugins.{}.timeout ({}ms): one call must fit in a request's plugin time",
                    budget.as_millis(),
                    longest.name,
                    longest.timeout.as_millis()
                ),
            );
        }
        budget
    }

    pub(super) fn plugins(
        &mut self,
        raw: BTreeMap<String, RawPlugin>,
        runtime: &PluginRuntimeConfig,
    ) -> Vec<PluginSpec> {
        raw.into_iter()
            .filter_map(|(name, p)| self.plugin(&name, p, runtime))
            .collect()
    }

    fn plugin(
        &mut self,
        name: &str,
        raw: RawPlugin,
        runtime: &PluginRuntimeConfig,
    ) -> Option<PluginSpec> {
        let path = format!("plugins.{name}");
        let ok = self.plugin_name(&path, name);
        let file = match raw.file.as_deref().map(str::trim) {
            None | Some("") => {
                self.missing(
                    &format!("{path}.file"),
                    "required: the plugin's .wasm component (a file name in plugin_runtime.dir, or a path)",
                );
                None
            }
            Some(f) if f.contains('/') => Some(PathBuf::from(f)),
            Some(f) => Some(runtime.dir.join(f)),
        };
        let config_json = match raw
            .config
            .and_then(|_| super::yaml::node_at(self.root, &format!("{path}.config")))
            .map(super::yaml::to_json)
        {
            None | Some(serde_json::Value::Null) => "{}".to_string(),
            Some(v) => v.to_string(),
        };
        let on_error = self.on_error(
            &format!("{path}.on_error"),
            raw.on_error.as_deref(),
            OnError::FailClosed,
        );
        let instances = self.instances(&path, raw.instances.as_deref());
        let (timeout, max_memory) = self.plugin_limits(&path, raw.timeout, raw.max_memory_mb);
        let grants = raw
            .grants
            .map(|g| self.grants(&format!("{path}.grants"), g))
            .unwrap_or_default();
        let lines = self.plugin_lines(&path);
        if !ok {
            return None;
        }
        Some(PluginSpec {
            name: Arc::from(name),
            file: file?,
            config_json,
            on_error,
            timeout,
            max_memory,
            instances,
            init_snapshot: raw.init_snapshot.unwrap_or(true),
            grants,
            lines,
        })
    }

    /// A plugin's name must suit a YAML key, a metric label and a file name, and must not be a
    /// built-in stage's.
    fn plugin_name(&mut self, path: &str, name: &str) -> bool {
        let mut ok = true;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.error(
                path,
                format!("plugin name `{name}` may only use letters, digits, `-` and `_`"),
            );
            ok = false;
        }
        if StageName::BUILT_IN.iter().any(|s| s.as_str() == name) {
            self.error(
                path,
                format!("`{name}` is a built-in stage; give the plugin another name"),
            );
            ok = false;
        }
        ok
    }

    fn instances(&mut self, path: &str, raw: Option<&str>) -> InstanceMode {
        match raw {
            None | Some("fresh") => InstanceMode::Fresh,
            Some("reuse") => InstanceMode::Reuse,
            Some(other) => {
                self.error(
                    &format!("{path}.instances"),
                    format!("unknown value `{other}` (expected `fresh` or `reuse`)"),
                );
                InstanceMode::Fresh
            }
        }
    }

    /// The per-call deadline and the linear-memory cap, in bytes.
    fn plugin_limits(
        &mut self,
        path: &str,
        timeout: Option<u64>,
        memory_mb: Option<u64>,
    ) -> (Duration, usize) {
        let timeout = timeout.unwrap_or(DEFAULT_PLUGIN_TIMEOUT_MS);
        if timeout == 0 || timeout > 60_000 {
            self.error(
                &format!("{path}.timeout"),
                "must be between 1 and 60000 (milliseconds per hook call)",
            );
        }
        let memory = memory_mb.unwrap_or(DEFAULT_PLUGIN_MEMORY_MB);
        if memory == 0 || memory > MAX_PLUGIN_MEMORY_MB {
            self.error(
                &format!("{path}.max_memory_mb"),
                format!("must be between 1 and {MAX_PLUGIN_MEMORY_MB} (MiB of linear memory)"),
            );
        }
        let bytes = usize::try_from(memory.min(MAX_PLUGIN_MEMORY_MB) << 20).unwrap_or(usize::MAX);
        (Duration::from_millis(timeout), bytes)
    }

    /// The lines load errors point at: the plugin's `file`, `config` and `grants` keys (the
    /// plugin's own key where one is absent).
    fn plugin_lines(&self, path: &str) -> PluginLines {
        let line = |key: &str| super::yaml::line_of(self.root, &format!("{path}.{key}"));
        PluginLines {
            file: line("file"),
            config: line("config").or_else(|| super::yaml::line_of(self.root, path)),
            grants: line("grants").or_else(|| super::yaml::line_of(self.root, path)),
        }
    }

    fn grants(&mut self, path: &str, raw: RawGrants) -> Grants {
        let mut callout = BTreeMap::new();
        for (target, url) in raw.callout.unwrap_or_default() {
            let key = format!("{path}.callout.{target}");
            match super::parse_upstream_url(&url) {
                Ok(uri) if uri.query().is_none() => {
                    callout.insert(target, uri);
                }
                Ok(_) => self.error(&key, format!("`{url}` must not carry a query")),
                Err(e) => self.error(&key, e),
            }
        }
        Grants {
            kv: raw.kv.unwrap_or(false),
            metrics: raw.metrics.unwrap_or(false),
            callout,
            empty_filesystem: raw.empty_filesystem.unwrap_or(false),
        }
    }
}
