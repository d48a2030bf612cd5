//! One hook call's instance: a slot from the pool, a fresh (or reused) instance, `init`, the
//! call under its deadline and memory cap; a failed instance is dropped, never reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Store, Trap, UpdateDeadline};

use wasmtime::component::{Component, Instance, InstancePre, Resource};

use super::BoxFuture;
use super::engine::bindings::mcpgate::plugin::types::{self as wit, Registration};
use super::engine::{MAX_IDLE, Runtime, TICK, bindings};
use super::host_api::{Shared, State};
use super::v01;
use super::view::{self, ResponseView, Shown};
use crate::config::{InstanceMode, PluginSpec};

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
    pub(super) fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
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

/// The plugin contract a component was built for: the version of the `hooks` it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contract {
    /// `mcpgate:plugin@0.1.0`: the request and response handed over as records.
    V01,
    /// `mcpgate:plugin@0.2.0`: the request and response as resources read field by field.
    V02,
}

impl Contract {
    pub(super) fn version(self) -> &'static str {
        match self {
            Contract::V01 => "0.1.0",
            Contract::V02 => super::CONTRACT_VERSION,
        }
    }

    /// The contract whose `hooks` `component` exports; the error says what it exports instead.
    pub(super) fn of(engine: &wasmtime::Engine, component: &Component) -> Result<Contract, String> {
        let mut found = Vec::new();
        for (name, _) in component.component_type().exports(engine) {
            match name {
                "mcpgate:plugin/hooks@0.2.0" => return Ok(Contract::V02),
                "mcpgate:plugin/hooks@0.1.0" => return Ok(Contract::V01),
                _ => found.push(format!("`{name}`")),
            }
        }
        let exports = if found.is_empty() {
            "nothing".to_string()
        } else {
            found.join(", ")
        };
        Err(format!(
            "exports {exports}, not `mcpgate:plugin/hooks` of a contract this gateway runs (0.2.0, or 0.1.0): rebuild it with this gateway's plugin-sdk"
        ))
    }
}

/// A plugin's component, linked and ready to instantiate, by its contract.
pub(super) enum Pre {
    V01(v01::bindings::PluginPre<State>),
    V02(bindings::PluginPre<State>),
}

impl Pre {
    pub(super) fn new(contract: Contract, pre: InstancePre<State>) -> wasmtime::Result<Pre> {
        Ok(match contract {
            Contract::V01 => Pre::V01(v01::bindings::PluginPre::new(pre)?),
            Contract::V02 => Pre::V02(bindings::PluginPre::new(pre)?),
        })
    }

    pub(super) fn contract(&self) -> Contract {
        match self {
            Pre::V01(_) => Contract::V01,
            Pre::V02(_) => Contract::V02,
        }
    }

    async fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::V01(p) => Bound::V01(p.instantiate_async(store).await?),
            Pre::V02(p) => Bound::V02(p.instantiate_async(store).await?),
        })
    }
}

/// One instance's hooks, by its contract.
pub(super) enum Bound {
    V01(v01::bindings::Plugin),
    V02(bindings::Plugin),
}

impl Bound {
    /// The hooks of `instance`, a component built for `contract`.
    pub(super) fn new(
        contract: Contract,
        store: &mut Store<State>,
        instance: &Instance,
    ) -> wasmtime::Result<Bound> {
        Ok(match contract {
            Contract::V01 => Bound::V01(v01::bindings::Plugin::new(store, instance)?),
            Contract::V02 => Bound::V02(bindings::Plugin::new(store, instance)?),
        })
    }

    /// Calls `init` with the plugin's config (JSON text).
    pub(super) async fn init(
        &self,
        store: &mut Store<State>,
        config: &str,
    ) -> wasmtime::Result<Result<Registration, String>> {
        Ok(match self {
            Bound::V01(p) => p
                .mcpgate_plugin_hooks()
                .call_init(store, config)
                .await?
                .map(v01::registration),
            Bound::V02(p) => p.mcpgate_plugin_hooks().call_init(store, config).await?,
        })
    }
}

impl Bound {
    /// Calls `on-request` with what the hook is shown.
    pub(super) async fn on_request(
        &self,
        store: &mut Store<State>,
        shown: Shown,
    ) -> wasmtime::Result<wit::RequestAction> {
        match (self, shown) {
            (Bound::V02(p), Shown::V02(view)) => {
                let req = view::lend(store, view)?;
                let borrowed = Resource::new_borrow(req.rep());
                let result = p
                    .mcpgate_plugin_hooks()
                    .call_on_request(&mut *store, borrowed)
                    .await;
                view::take_back(store, req);
                result
            }
            (Bound::V01(p), Shown::V01(record)) => p
                .mcpgate_plugin_hooks()
                .call_on_request(store, &record)
                .await
                .map(v01::request_action),
            _ => Err(mismatch()),
        }
    }

    /// Calls `on-response` with the request it answers (as shown) and the response.
    pub(super) async fn on_response(
        &self,
        store: &mut Store<State>,
        shown: Shown,
        response: ResponseView,
    ) -> wasmtime::Result<wit::ResponseAction> {
        match (self, shown) {
            (Bound::V02(p), Shown::V02(view)) => {
                let req = view::lend(store, view)?;
                let resp = match view::lend(store, response) {
                    Ok(r) => r,
                    Err(e) => {
                        view::take_back(store, req);
                        return Err(e);
                    }
                };
                let result = p
                    .mcpgate_plugin_hooks()
                    .call_on_response(
                        &mut *store,
                        Resource::new_borrow(req.rep()),
                        Resource::new_borrow(resp.rep()),
                    )
                    .await;
                view::take_back(store, req);
                view::take_back(store, resp);
                result
            }
            (Bound::V01(p), Shown::V01(request)) => {
                let record = v01::bindings::mcpgate::plugin::types::Response {
                    request,
                    http_status: response.http_status,
                    streamed: response.streamed,
                    message: response.message,
                };
                p.mcpgate_plugin_hooks()
                    .call_on_response(store, &record)
                    .await
                    .map(v01::response_action)
            }
            _ => Err(mismatch()),
        }
    }
}

/// A view built for one contract handed to an instance of another: a gateway bug, failing the
/// call (never a panic).
fn mismatch() -> wasmtime::Error {
    wasmtime::format_err!("the hook's view was built for another plugin contract")
}

/// One live instance and its store.
pub(super) struct Live {
    store: Store<State>,
    plugin: Bound,
    _slot: OwnedSemaphorePermit,
}

/// A loaded plugin: its pre-instantiated component and how to get instances of it.
pub(crate) struct Loaded {
    pub(super) runtime: Arc<Runtime>,
    pub(crate) spec: PluginSpec,
    /// SHA-256 of the component file it was compiled from.
    pub(crate) file_sha256: [u8; 32],
    pub(super) pre: Pre,
    pub(super) shared: Arc<Shared>,
    pub(super) idle: Mutex<Vec<Live>>,
    /// Set when `pre` is an init snapshot (see `load.rs`): its instances start initialised, with
    /// this registration, and `init` is not run again.
    pub(super) initialised: Option<Registration>,
}

impl Loaded {
    /// An initialised instance: a fresh one, or (with `instances: reuse`) an idle one.
    pub(super) async fn instance(
        &self,
        request_id: Arc<str>,
        deadline: Instant,
    ) -> Result<(Live, Registration), Failure> {
        let timeout = self.spec.timeout;
        // A free slot is taken at once; only a wait for one needs the timer.
        let slot = match self.runtime.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
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
                    })?
            }
        };
        let mut store = self.store(request_id, deadline);
        let plugin = match self.pre.instantiate(&mut store).await {
            Ok(p) => p,
            Err(e) => return Err(Failure::from_wasm(&e, store.data(), timeout)),
        };
        if let Some(reg) = &self.initialised {
            let live = Live {
                store,
                plugin,
                _slot: slot,
            };
            return Ok((live, reg.clone()));
        }
        let reg = match plugin.init(&mut store, &self.spec.config_json).await {
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

    /// A store for one instance: the plugin's memory cap, and its deadline enforced by epochs.
    pub(super) fn store(&self, request_id: Arc<str>, deadline: Instant) -> Store<State> {
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
        store
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
    pub(super) fn release(&self, live: Live) {
        if self.spec.instances == InstanceMode::Reuse {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(live);
            }
        }
    }

    /// Runs one hook on an instance under the plugin's deadline, or `limit` when that is sooner
    /// (what is left of the request's plugin budget). Any failure drops the instance.
    pub(super) async fn call<R>(
        &self,
        request_id: Arc<str>,
        started: Instant,
        limit: Duration,
        hook: impl for<'a> FnOnce(&'a mut Store<State>, &'a Bound) -> BoxFuture<'a, wasmtime::Result<R>>,
    ) -> Result<R, Failure>
    where
        R: Send,
    {
        let timeout = self.spec.timeout.min(limit);
        let deadline = started + timeout;
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
        // The epoch deadline stops wasm code; this also bounds time spent waiting in the host
        // (kv, callout, and WASI's poll: a plugin's `sleep`) and for a slot.
        match tokio::time::timeout_at((deadline + TICK * 2).into(), run).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Timeout,
                format!("still running after its {}ms deadline", timeout.as_millis()),
            )),
        }
    }
}
