//! Init snapshots: a plugin's `init` runs once, at load, in an instrumented copy of its
//! component, and the state it leaves (every core instance's memories and globals) becomes the
//! initial state of a new component (wasmtime-wizer). Fresh instances of that component start
//! initialised: no `init` per call, and the pooling allocator maps the initialised memory
//! copy-on-write, so a call dirties (and its reset restores) only the pages it writes.
//!
//! What is not carried over is what lives in the host: resources the guest opened during `init`
//! (none of the plugin contract's imports hand out resources). A component that cannot be
//! instrumented, or whose snapshot registers other methods than its `init` did at load (an
//! `init` that is not deterministic), keeps running `init` in each fresh instance.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::engine::bindings::mcpgate::plugin::types::Registration;
use super::host_api::State;
use super::instance::{Bound, Loaded, Pre};

impl Loaded {
    /// The snapshot of `bytes` (the plugin's component) after `init` with its config, and the
    /// registration `init` returned there, which must equal `expected` (the load's own `init`).
    /// A panic inside wizer is an error here too, never the process's end.
    pub(super) async fn snapshot(
        &self,
        bytes: &[u8],
        expected: &Registration,
    ) -> Result<(Pre, Registration), String> {
        use futures_util::FutureExt as _;
        std::panic::AssertUnwindSafe(self.try_snapshot(bytes, expected))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err("the snapshot panicked".into()))
    }

    async fn try_snapshot(
        &self,
        bytes: &[u8],
        expected: &Registration,
    ) -> Result<(Pre, Registration), String> {
        let wizer = Wizer::new();
        let (cx, instrumented) = wizer
            .instrument_component(bytes)
            .map_err(|e| format!("cannot instrument the component: {e:#}"))?;
        let component = compile(&self.runtime.engine, instrumented).await?;
        let pre = self
            .runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot link the instrumented component: {e:#}"))?;
        let deadline = Instant::now() + self.spec.timeout.max(Duration::from_secs(5));
        let mut store = self.store("snapshot".into(), deadline);
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("cannot instantiate the instrumented component: {e:#}"))?;
        let contract = self.pre.contract();
        let plugin = Bound::new(contract, &mut store, &instance)
            .map_err(|e| format!("the instrumented component lost its exports: {e:#}"))?;
        let registration = plugin
            .init(&mut store, &self.spec.config_json)
            .await
            .map_err(|e| format!("init failed in the instrumented component: {e:#}"))?
            .map_err(|e| format!("init rejected its config in the instrumented component: {e}"))?;
        if registration.request_methods != expected.request_methods
            || registration.response_methods != expected.response_methods
        {
            return Err("init registered other methods on a second run".into());
        }
        let mut access = Access {
            store: &mut store,
            instance,
            failed: None,
        };
        let snapshot = wizer
            .snapshot_component(&cx, &mut access)
            .await
            .map_err(|e| format!("cannot snapshot the initialised component: {e:#}"))?;
        if let Some(why) = access.failed {
            return Err(why);
        }
        let component = compile(&self.runtime.engine, snapshot).await?;
        let pre = self
            .runtime
            .linker
            .instantiate_pre(&component)
            .and_then(|pre| Pre::new(contract, pre))
            .map_err(|e| format!("cannot link the snapshot: {e:#}"))?;
        Ok((pre, registration))
    }
}

/// Compiles a component off the async threads (the compile cache applies).
async fn compile(engine: &Engine, wasm: Vec<u8>) -> Result<Component, String> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || Component::new(&engine, &wasm))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot compile: {e:#}"))
}

/// What wizer reads the initialised state through: the instrumented component's accessor
/// functions (`wasmtime:wizer/access`), each taking nothing and returning one value. Wizer's
/// interface has no errors, so the first failure is kept here (and a default value returned):
/// the snapshot is then refused, the process never panics on it.
struct Access<'a> {
    store: &'a mut Store<State>,
    instance: Instance,
    failed: Option<String>,
}

impl Access<'_> {
    async fn call<R: Lift + Default + Send + Sync + 'static>(
        &mut self,
        interface: &str,
        func: &str,
    ) -> R {
        match self.try_call(interface, func).await {
            Ok(value) => value,
            Err(why) => {
                self.failed.get_or_insert(why);
                R::default()
            }
        }
    }

    async fn try_call<R: Lift + Send + Sync + 'static>(
        &mut self,
        interface: &str,
        func: &str,
    ) -> Result<R, String> {
        let missing = || format!("wizer's accessor `{interface}#{func}` is missing");
        let (_, exported) = self
            .instance
            .get_export(&mut *self.store, None, interface)
            .ok_or_else(missing)?;
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&exported), func)
            .ok_or_else(missing)?;
        let typed = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .map_err(|e| format!("wizer's accessor `{func}`: {e:#}"))?;
        let (value,) = typed
            .call_async(&mut *self.store, ())
            .await
            .map_err(|e| format!("wizer's accessor `{func}` failed: {e:#}"))?;
        Ok(value)
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.try_call::<WasmList<u8>>(instance, func).await {
            Ok(list) => contents(list.as_le_slice(&*self.store)),
            Err(why) => {
                self.failed.get_or_insert(why);
                contents(&[]);
            }
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.to_bits()
    }
}
