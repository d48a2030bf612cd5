//! Loading a `plugins:` entry: read, compile (cached), check imports against grants, link,
//! pre-instantiate, run `init` once with its config; every error names the key to fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginStage;
use super::engine::bindings::mcpgate::plugin::types::Registration;
use super::engine::{Runtime, Settings};
use super::host_api::{CustomMetrics, Shared};
use super::instance::{Contract, FailureKind, Loaded, Pre};
use crate::config::{Config, ConfigError, PluginSpec};
use crate::deps::Deps;

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

/// What loading one config's plugins made: the runtime they run on, the series they define,
/// and the plugins by name.
#[derive(Clone)]
pub(super) struct LoadedSet {
    pub(super) runtime: Arc<Runtime>,
    pub(super) metrics: Arc<CustomMetrics>,
    pub(super) stages: HashMap<Arc<str>, Arc<PluginStage>>,
}

/// Which plugins a reload compiled and initialised again, and which it kept as they were.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PluginChanges {
    pub loaded: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

/// Loads every plugin of `config` (not empty). `previous`: the plugins of the generation a
/// reload replaces; one whose entry (file path, config, grants, limits) and file contents are
/// unchanged is kept as it is (same instances, same state), and so is their runtime when the
/// new entries fit its pool. Every error is kept.
pub(super) async fn load_all(
    config: &Config,
    deps: &Deps,
    previous: Option<&LoadedSet>,
) -> Result<(LoadedSet, PluginChanges), Vec<ConfigError>> {
    let max_memory = config
        .plugins
        .iter()
        .map(|p| p.max_memory)
        .max()
        .unwrap_or(0);
    // The previous runtime (and with it the plugins it keeps) serves on only when the new
    // entries fit its pool and the runtime's own settings did not change.
    let previous = previous.filter(|p| {
        max_memory <= p.runtime.max_memory
            && p.runtime.settings == Settings::of(&config.plugin_runtime)
    });
    let (runtime, metrics) = match previous {
        Some(p) => (p.runtime.clone(), p.metrics.clone()),
        None => {
            let runtime = Runtime::new(&config.plugin_runtime, max_memory, &deps.registry)
                .map_err(|e| {
                    vec![ConfigError {
                        path: "plugin_runtime".into(),
                        line: None,
                        message: format!("cannot start the WebAssembly runtime: {e:#}"),
                    }]
                })?;
            (runtime, Arc::new(CustomMetrics::new(deps.registry.clone())))
        }
    };
    let hidden = config.credential_headers();
    let mut set = LoadedSet {
        runtime,
        metrics,
        stages: HashMap::new(),
    };
    let mut changes = PluginChanges::default();
    let mut errors = Vec::new();
    for spec in &config.plugins {
        if let Some(kept) = previous.and_then(|p| p.stages.get(&spec.name))
            && kept.unchanged(spec, &hidden)
        {
            changes.kept.push(spec.name.to_string());
            set.stages.insert(spec.name.clone(), kept.clone());
            continue;
        }
        match set.runtime.load(spec, deps, &set.metrics).await {
            Ok(mut stage) => {
                stage.hide_headers(&hidden);
                changes.loaded.push(spec.name.to_string());
                set.stages.insert(spec.name.clone(), Arc::new(stage));
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(p) = previous {
        changes.removed = p
            .stages
            .keys()
            .filter(|name| !set.stages.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
    }
    if errors.is_empty() {
        Ok((set, changes))
    } else {
        Err(errors)
    }
}

/// SHA-256 of a plugin's file as it is on disk now (`None`: unreadable).
pub(super) fn file_sha256(spec: &PluginSpec) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    std::fs::read(&spec.file)
        .ok()
        .map(|bytes| sha2::Sha256::digest(&bytes).into())
}

/// Whether two entries load the same plugin the same way (their lines in the file aside).
pub(super) fn same_entry(a: &PluginSpec, b: &PluginSpec) -> bool {
    a.name == b.name
        && a.file == b.file
        && a.config_json == b.config_json
        && a.on_error == b.on_error
        && a.timeout == b.timeout
        && a.max_memory == b.max_memory
        && a.instances == b.instances
        && a.grants == b.grants
}

impl Runtime {
    /// Loads one plugin; the error names the key to fix.
    async fn load(
        self: &Arc<Self>,
        spec: &PluginSpec,
        deps: &Deps,
        metrics: &Arc<CustomMetrics>,
    ) -> Result<PluginStage, ConfigError> {
        let (pre, file_sha256, bytes) = self.prepare(spec).await?;
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
            file_sha256,
            pre,
            shared,
            idle: Mutex::new(Vec::new()),
            initialised: None,
        };
        let (requests, responses, registration) = registered(&plugin, spec).await?;
        let mut plugin = plugin;
        if spec.init_snapshot {
            match plugin.snapshot(&bytes, &registration).await {
                Ok((pre, reg)) => {
                    plugin.pre = pre;
                    plugin.initialised = Some(reg);
                }
                Err(why) => tracing::warn!(
                    plugin = %spec.name,
                    reason = %why,
                    "init cannot be snapshotted: each fresh instance runs init (set init_snapshot: false to silence this)"
                ),
            }
        }
        Ok(PluginStage::new(plugin, requests, responses))
    }

    /// The plugin's file read, compiled (cached), its imports checked against its grants, and
    /// linked against the `plugin` world, ready to instantiate.
    async fn prepare(&self, spec: &PluginSpec) -> Result<(Pre, [u8; 32], Vec<u8>), ConfigError> {
        use sha2::Digest as _;
        let file = spec.file.clone();
        let bytes = std::fs::read(&file).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (build the example plugins with scripts/build-plugins.sh, or check plugin_runtime.dir)"
            } else {
                ""
            };
            let message = format!("cannot read `{}`: {e}{hint}", file.display());
            at(spec, ".file", spec.lines.file, message)
        })?;
        let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let engine = self.engine.clone();
        let compiled = bytes.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &compiled))
            .await
            .map_err(|e| at(spec, ".file", spec.lines.file, e.to_string()))?
            .map_err(|e| {
                let message = format!(
                    "`{}` is not a loadable WebAssembly component: {e:#}",
                    file.display()
                );
                at(spec, ".file", spec.lines.file, message)
            })?;
        let contract = Contract::of(&self.engine, &component).map_err(|m| {
            let message = format!("`{}` is not an mcpgate plugin: it {m}", file.display());
            at(spec, ".file", spec.lines.file, message)
        })?;
        check_imports(&self.engine, &component, spec, contract)
            .map_err(|m| at(spec, ".grants", spec.lines.grants, m))?;
        self.linker
            .instantiate_pre(&component)
            .and_then(|pre| Pre::new(contract, pre))
            .map(|pre| (pre, sha256, bytes))
            .map_err(|e| {
                let message = format!(
                    "`{}` does not implement the mcpgate:plugin@{} `plugin` world: {e:#}",
                    file.display(),
                    contract.version()
                );
                at(spec, ".file", spec.lines.file, message)
            })
    }
}

/// A loading error at the plugin's `key` (`.file`, `.grants`, `.config`).
fn at(spec: &PluginSpec, key: &str, line: Option<usize>, message: String) -> ConfigError {
    ConfigError {
        path: format!("plugins.{}{key}", spec.name),
        line,
        message,
    }
}

/// The method patterns a plugin registered for requests and responses, and its registration.
type Registered = (
    Option<crate::glob::GlobSet>,
    Option<crate::glob::GlobSet>,
    Registration,
);

/// Runs the plugin's `init` once now (a config the plugin rejects fails `validate` and
/// `start`) and compiles the method patterns it registered for requests and responses.
async fn registered(plugin: &Loaded, spec: &PluginSpec) -> Result<Registered, ConfigError> {
    let deadline = Instant::now() + spec.timeout.max(Duration::from_secs(5));
    let registration = match plugin.instance("load".into(), deadline).await {
        Ok((live, reg)) => {
            plugin.release(live);
            reg
        }
        Err(f) if f.kind == FailureKind::Rejected => {
            let message = format!("plugin `{}` rejected its config: {}", spec.name, f.detail);
            return Err(at(spec, ".config", spec.lines.config, message));
        }
        Err(f) => {
            let message = format!("plugin `{}` failed in init: {f}", spec.name);
            return Err(at(spec, ".file", spec.lines.file, message));
        }
    };
    let patterns = |methods: &[String]| {
        crate::glob::GlobSet::new(methods).map_err(|e| {
            let message = format!(
                "plugin `{}` registered an invalid method pattern: {e}",
                spec.name
            );
            at(spec, ".file", spec.lines.file, message)
        })
    };
    Ok((
        patterns(&registration.request_methods)?,
        patterns(&registration.response_methods)?,
        registration,
    ))
}

/// Refuses a component that imports anything its grants do not cover, naming every such import.
/// Its `mcpgate:plugin` imports must come from the contract its hooks were built for.
fn check_imports(
    engine: &Engine,
    component: &Component,
    spec: &PluginSpec,
    contract: Contract,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut filesystem = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        if let Some(iface) = interface.strip_prefix("mcpgate:plugin/") {
            if version
                .split('.')
                .take(2)
                .ne(contract.version().split('.').take(2))
            {
                problems.push(format!(
                    "imports `{name}`, but its hooks were built for plugin contract {} (one component, one contract)",
                    contract.version()
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
