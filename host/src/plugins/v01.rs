//! Plugins built for contract 0.1 (`wit/0.1/mcpgate-plugin.wit`) keep working: their hooks get
//! the whole request as one record (every field copied into the plugin's memory up front, as
//! 0.1 defines it), their answers are read into the current contract's types, and their imports
//! reach the same host functions as 0.2's.

use http::HeaderName;

use super::engine::bindings::mcpgate::plugin as current;
use super::host_api::State;
use crate::mcp::{Era, Message};
use crate::pipeline::RequestContext;

/// Bindings generated from `wit/0.1/mcpgate-plugin.wit`.
#[allow(unsafe_code, clippy::all, missing_docs)]
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/0.1",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::mcpgate::plugin::{callout, kv, log, metrics, types};

/// The 0.1 request record of `msg`, part of `cx`'s request.
pub(super) fn request(
    cx: &RequestContext,
    msg: &Message,
    visible: impl Fn(&HeaderName) -> bool,
) -> types::Request {
    let headers = cx
        .headers
        .iter()
        .filter(|(n, _)| visible(n))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    types::Request {
        request_id: cx.request_id.to_string(),
        route: cx.upstream.name.to_string(),
        era: match msg.era {
            Era::Legacy => types::Era::Legacy,
            Era::Modern => types::Era::Modern,
        },
        caller: types::Caller {
            id: cx.caller.as_ref().map(|c| c.id.to_string()),
            scopes: cx
                .caller
                .as_ref()
                .map(|c| c.scopes.clone())
                .unwrap_or_default(),
            remote_addr: cx.peer.map(|p| p.to_string()),
        },
        method: msg.method().to_string(),
        id: msg.id.as_ref().map(|i| i.get().to_string()),
        target: msg.target.as_deref().map(str::to_string),
        arguments: msg.arguments.as_ref().map(|a| a.get().to_string()),
        headers,
        message: msg.raw().get().to_string(),
    }
}

pub(super) fn registration(r: types::Registration) -> current::types::Registration {
    current::types::Registration {
        request_methods: r.request_methods,
        response_methods: r.response_methods,
    }
}

fn error(e: types::JsonrpcError) -> current::types::JsonrpcError {
    current::types::JsonrpcError {
        code: e.code,
        message: e.message,
        data: e.data,
    }
}

pub(super) fn request_action(a: types::RequestAction) -> current::types::RequestAction {
    use current::types::RequestAction as A;
    match a {
        types::RequestAction::Continue => A::Continue,
        types::RequestAction::Modify(m) => A::Modify(current::types::Modification {
            arguments: m.arguments,
            message: m.message,
            set_headers: m.set_headers,
            remove_headers: m.remove_headers,
        }),
        types::RequestAction::Reject(r) => A::Reject(current::types::Rejection {
            http_status: r.http_status,
            error: error(r.error),
        }),
        types::RequestAction::Respond(result) => A::Respond(result),
    }
}

pub(super) fn response_action(a: types::ResponseAction) -> current::types::ResponseAction {
    use current::types::ResponseAction as A;
    match a {
        types::ResponseAction::Continue => A::Continue,
        types::ResponseAction::ReplaceResult(r) => A::ReplaceResult(r),
        types::ResponseAction::ReplaceError(e) => A::ReplaceError(error(e)),
    }
}

impl types::Host for State {}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => current::log::Level::Trace,
            log::Level::Debug => current::log::Level::Debug,
            log::Level::Info => current::log::Level::Info,
            log::Level::Warn => current::log::Level::Warn,
            log::Level::Error => current::log::Level::Error,
        };
        current::log::Host::log(self, level, message).await;
    }
}

fn kv_error(e: current::kv::Error) -> kv::Error {
    match e {
        current::kv::Error::Unavailable(m) => kv::Error::Unavailable(m),
        current::kv::Error::Invalid(m) => kv::Error::Invalid(m),
    }
}

impl kv::Host for State {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        current::kv::Host::get(self, key).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), kv::Error> {
        current::kv::Host::set(self, key, value, ttl_ms)
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        current::kv::Host::delete(self, key).await.map_err(kv_error)
    }

    async fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, kv::Error> {
        current::kv::Host::incr(self, key, delta, ttl_ms)
            .await
            .map_err(kv_error)
    }
}

impl metrics::Host for State {
    async fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) {
        current::metrics::Host::counter_add(self, name, value, labels).await;
    }

    async fn histogram_observe(&mut self, name: String, value: f64, labels: Vec<(String, String)>) {
        current::metrics::Host::histogram_observe(self, name, value, labels).await;
    }
}

impl callout::Host for State {
    async fn send(&mut self, req: callout::Request) -> Result<callout::Response, callout::Error> {
        let req = current::callout::Request {
            target: req.target,
            method: req.method,
            path: req.path,
            headers: req.headers,
            body: req.body,
            timeout_ms: req.timeout_ms,
        };
        match current::callout::Host::send(self, req).await {
            Ok(r) => Ok(callout::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(current::callout::Error::Denied(m)) => Err(callout::Error::Denied(m)),
            Err(current::callout::Error::Timeout) => Err(callout::Error::Timeout),
            Err(current::callout::Error::Failed(m)) => Err(callout::Error::Failed(m)),
        }
    }
}
