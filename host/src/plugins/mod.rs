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
//! One wasmtime engine per process (`engine.rs`): pooling allocator, epoch interruption (a ticker
//! thread; a running plugin yields to tokio every tick and is interrupted past its deadline), and
//! an on-disk compilation cache. `load.rs` turns a `plugins:` entry into a stage (compile, import
//! check against grants, `init`); `instance.rs` gives each hook call its instance under a deadline
//! and a memory cap; `stage.rs` is the [`Stage`] a loaded plugin is; `host_api.rs` is what an
//! instance can reach. The streaming body path never enters the sandbox.
//!
//! The runtime is the `plugins` cargo feature (on by default). Without it (the fuzz build, which
//! must not compile wasmtime again with sanitizers) this module keeps only the `kv` stores and
//! [`Plugins::load`] refuses a config that names a plugin.

#[cfg(feature = "plugins")]
mod engine;
#[cfg(feature = "plugins")]
pub mod host_api;
#[cfg(feature = "plugins")]
mod instance;
pub mod kv;
#[cfg(feature = "plugins")]
mod load;
#[cfg(feature = "plugins")]
mod snapshot;
#[cfg(feature = "plugins")]
mod stage;
#[cfg(feature = "plugins")]
mod v01;
#[cfg(feature = "plugins")]
mod view;

use std::sync::Arc;

#[cfg(not(feature = "plugins"))]
use crate::config::ConfigError;
use crate::config::{Config, ConfigErrors};
use crate::deps::Deps;
use crate::pipeline::Stage;
#[cfg(feature = "plugins")]
pub use host_api::CustomMetrics;
#[cfg(feature = "plugins")]
pub use instance::{Failure, FailureKind};
pub use kv::{KvStore, MemoryKv};
#[cfg(feature = "plugins")]
pub use load::PluginChanges;
#[cfg(feature = "plugins")]
pub use stage::{PluginStage, PluginStatus};

pub type BoxFuture<'a, T> = crate::pipeline::BoxFuture<'a, T>;

/// Without the runtime a reload has no plugins to report.
#[cfg(not(feature = "plugins"))]
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PluginChanges {
    pub loaded: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

/// The contract version this gateway implements (`package mcpgate:plugin@…`). Components built
/// for 0.1.0 load too (`v01.rs`).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The loaded plugins of one config, by name.
#[derive(Default, Clone)]
pub struct Plugins {
    /// `None` when the config has no plugins.
    #[cfg(feature = "plugins")]
    set: Option<load::LoadedSet>,
    /// What they were loaded with; the gateway builds its stages from the same resources.
    deps: Deps,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        #[cfg(feature = "plugins")]
        list.entries(self.set.iter().flat_map(|s| s.stages.keys()));
        list.finish()
    }
}

impl Plugins {
    /// Loads every plugin of `config`: compiles, checks imports against grants, and runs `init`
    /// with its config. All problems are reported together, each at its key's line.
    pub async fn load(config: &Config, deps: Deps) -> Result<Plugins, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: "plugins".into(),
            errors,
            missing_env: Vec::new(),
        };
        #[cfg(feature = "plugins")]
        let set = if config.plugins.is_empty() {
            None
        } else {
            Some(load::load_all(config, &deps, None).await.map_err(fail)?.0)
        };
        #[cfg(not(feature = "plugins"))]
        refuse_plugins(config).map_err(fail)?;
        Ok(Plugins {
            #[cfg(feature = "plugins")]
            set,
            deps,
        })
    }

    /// The plugins of `config` for a reload, with the same resources: a plugin whose entry and
    /// file are unchanged is kept as it is (instances, idle pool, counters); the others are
    /// compiled and initialised again. Nothing of `self` changes: on an error it keeps serving.
    #[cfg(feature = "plugins")]
    pub async fn reload(&self, config: &Config) -> Result<(Plugins, PluginChanges), ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: "plugins".into(),
            errors,
            missing_env: Vec::new(),
        };
        if config.plugins.is_empty() {
            let removed = self
                .set
                .iter()
                .flat_map(|s| s.stages.keys().map(|k| k.to_string()))
                .collect();
            let changes = PluginChanges {
                removed,
                ..PluginChanges::default()
            };
            return Ok((Plugins::none(self.deps.clone()), changes));
        }
        let (set, changes) = load::load_all(config, &self.deps, self.set.as_ref())
            .await
            .map_err(fail)?;
        let plugins = Plugins {
            set: Some(set),
            deps: self.deps.clone(),
        };
        Ok((plugins, changes))
    }

    /// Without the runtime no plugin loads; a reload keeps none.
    #[cfg(not(feature = "plugins"))]
    pub async fn reload(&self, config: &Config) -> Result<(Plugins, PluginChanges), ConfigErrors> {
        let plugins = Plugins::load(config, self.deps.clone()).await?;
        Ok((plugins, PluginChanges::default()))
    }

    /// Every loaded plugin as the admin API shows it, in name order.
    #[cfg(feature = "plugins")]
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut out: Vec<PluginStatus> = self
            .set
            .iter()
            .flat_map(|s| s.stages.values().map(|p| p.status()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Without the runtime there are none.
    #[cfg(not(feature = "plugins"))]
    pub fn statuses(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// No plugins, and the resources a gateway without them is built from.
    pub fn none(deps: Deps) -> Plugins {
        Plugins {
            #[cfg(feature = "plugins")]
            set: None,
            deps,
        }
    }

    /// The stage a `plugins:` entry loaded as, the way a pipeline holds it.
    #[cfg(feature = "plugins")]
    pub fn stage(&self, name: &str) -> Option<Arc<dyn Stage>> {
        self.get(name).map(|s| s.clone() as Arc<dyn Stage>)
    }

    /// Without the runtime no plugin loads ([`Plugins::load`] refuses them).
    #[cfg(not(feature = "plugins"))]
    pub fn stage(&self, _name: &str) -> Option<Arc<dyn Stage>> {
        None
    }

    /// The loaded plugin itself (its call counters, for tests and the CLI).
    #[cfg(feature = "plugins")]
    pub fn get(&self, name: &str) -> Option<&Arc<PluginStage>> {
        self.set.as_ref()?.stages.get(name)
    }

    /// The shared resources the plugins were loaded with (their metrics are in its registry).
    pub fn deps(&self) -> &Deps {
        &self.deps
    }
}

/// A build without the `plugins` feature has no WebAssembly runtime: a config that names a
/// plugin is refused at its `plugins:` key.
#[cfg(not(feature = "plugins"))]
fn refuse_plugins(config: &Config) -> Result<(), Vec<ConfigError>> {
    if config.plugins.is_empty() {
        return Ok(());
    }
    Err(config
        .plugins
        .iter()
        .map(|spec| ConfigError {
            path: format!("plugins.{}", spec.name),
            line: spec.lines.file,
            message:
                "this mcpgate was built without the `plugins` feature (no WebAssembly runtime)"
                    .into(),
        })
        .collect())
}
