//! # mcpgate plugin SDK
//!
//! Write custom mcpgate pipeline stages in Rust, compile them to a WebAssembly component, and run
//! them inside the gateway's sandbox next to the built-in auth, rate-limit and policy stages.
//!
//! A plugin is a type implementing [`Plugin`], exported with one macro line. It sees each JSON-RPC
//! request whose method it registered for (with the caller, the route, the tool name and the
//! arguments as JSON values) and decides: go on, rewrite, refuse with a JSON-RPC error, or answer
//! locally. It may also see (and rewrite) the responses to those requests.
//!
//! The SDK builds for plugin contract 0.2 ([`CONTRACT_VERSION`]): a [`Request`] fetches each
//! field from the gateway the first time the plugin reads it, so a hook pays only for what it
//! reads (a plugin that checks the tool name never copies a large message or its arguments).
//!
//! ```no_run
//! use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, export_plugin};
//! use serde::Deserialize;
//!
//! /// Refuses calls of the configured tools.
//! struct DenyTools {
//!     tools: Vec<String>,
//! }
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     tools: Vec<String>,
//! }
//!
//! impl Plugin for DenyTools {
//!     type Config = Config;
//!
//!     fn init(config: Config) -> Result<Self, String> {
//!         if config.tools.is_empty() {
//!             return Err("`tools` must name at least one tool".into());
//!         }
//!         Ok(DenyTools { tools: config.tools })
//!     }
//!
//!     fn registration(&self) -> Registration {
//!         Registration::new().requests(["tools/call"])
//!     }
//!
//!     fn on_request(&self, req: &Request) -> Action {
//!         match req.tool() {
//!             Some(tool) if self.tools.iter().any(|t| t == tool) => {
//!                 Action::reject(-32012, format!("tool `{tool}` is disabled here"))
//!             }
//!             _ => Action::Continue,
//!         }
//!     }
//! }
//!
//! export_plugin!(DenyTools);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (or `cargo component build
//! --release`), then reference the `.wasm` file from the gateway's `plugins:` section. The
//! template in `plugins/template/` is this example as a crate.
//!
//! ## The sandbox
//!
//! Each hook call runs in a fresh instance by default (nothing survives between calls except what
//! the plugin stores with [`kv`]), with a deadline and a memory cap. A panic, a loop past the
//! deadline or running out of memory fails only the request at hand (or skips the plugin, with
//! `on_error: fail_open`). There is no filesystem, network, environment or clock beyond what the
//! gateway grants: [`log`] always; [`kv`], [`metrics`] and [`callout`] only where the YAML lists
//! them under `grants:`.
//!
//! ## Testing
//!
//! [`testing`] builds requests and responses natively and gives the capabilities an in-memory
//! host, so `on_request` and `on_response` are unit-tested with plain `cargo test` (the template
//! in `plugins/template/` shows how).

use std::any::Any;
use std::cell::{OnceCell, RefCell};
use std::time::Duration;

use serde::de::DeserializeOwned;
pub use serde_json::{Value, json};

/// The raw WIT bindings (`wit/mcpgate-plugin.wit`, contract 0.2). Plugin code rarely needs them.
#[allow(unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_hooks",
        default_bindings_module: "mcpgate_plugin_sdk::bindings",
    });
}

use bindings::exports::mcpgate::plugin::hooks as wit_hooks;
use bindings::mcpgate::plugin::types as wit;

pub use wit::Era;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// The plugin contract version this SDK targets (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A pipeline stage compiled to WebAssembly.
pub trait Plugin: Sized + 'static {
    /// The plugin's YAML `config:` section (`{}` when absent), deserialised with serde.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config. An `Err` rejects the configuration: `mcpgate validate`
    /// and `mcpgate start` report it with the plugin's name. Runs when the gateway loads the
    /// plugin; every instance then starts from a snapshot of the memory `init` left (the
    /// plugin's `init_snapshot: false` runs it at the start of every fresh instance instead), so
    /// what `init` draws at random (a secret, a hash seed) is the same in every instance.
    fn init(config: Self::Config) -> Result<Self, String>;

    /// Which methods' requests and responses this plugin sees. Everything else bypasses it.
    fn registration(&self) -> Registration;

    /// Judges one JSON-RPC request or notification.
    fn on_request(&self, _req: &Request<'_>) -> Action {
        Action::Continue
    }

    /// Sees the response to a request whose method is in [`Registration::responses`].
    fn on_response(&self, _resp: &Response<'_>) -> ResponseAction {
        ResponseAction::Continue
    }
}

/// The methods a plugin wants to see. Names may use `*` wildcards: `tools/*`, `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    requests: Vec<String>,
    responses: Vec<String>,
}

impl Registration {
    pub fn new() -> Self {
        Registration::default()
    }

    /// Methods whose requests reach [`Plugin::on_request`].
    pub fn requests<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> Self {
        self.requests.extend(methods.into_iter().map(Into::into));
        self
    }

    /// Methods whose responses reach [`Plugin::on_response`].
    pub fn responses<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> Self {
        self.responses.extend(methods.into_iter().map(Into::into));
        self
    }
}

/// One JSON-RPC request (or notification) on its way to the upstream.
///
/// Each field is fetched from the gateway the first time it is read, and kept: a plugin that
/// only reads the method and the tool name never has the message, its arguments or the headers
/// copied into its memory (contract 0.2).
pub struct Request<'a> {
    /// The gateway's handle; `None` for a request built by [`testing`], whose fields are all set.
    host: Option<&'a wit::Request>,
    request_id: OnceCell<String>,
    route: OnceCell<String>,
    era: OnceCell<Era>,
    caller_id: OnceCell<Option<String>>,
    scopes: OnceCell<Vec<String>>,
    remote_addr: OnceCell<Option<String>>,
    method: OnceCell<String>,
    id: OnceCell<Option<String>>,
    target: OnceCell<Option<String>>,
    arguments_text: OnceCell<Option<String>>,
    arguments: OnceCell<Option<Value>>,
    headers: OnceCell<Vec<(String, String)>>,
    message: OnceCell<String>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("id", &self.id())
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

/// Every field of a request, for one built outside the gateway ([`testing`]).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Fields {
    pub request_id: String,
    pub route: String,
    pub era: Era,
    pub caller_id: Option<String>,
    pub scopes: Vec<String>,
    pub remote_addr: Option<String>,
    pub method: String,
    pub id: Option<String>,
    pub target: Option<String>,
    pub arguments: Option<String>,
    pub headers: Vec<(String, String)>,
    pub message: String,
}

impl<'a> Request<'a> {
    fn empty(host: Option<&'a wit::Request>) -> Self {
        Request {
            host,
            request_id: OnceCell::new(),
            route: OnceCell::new(),
            era: OnceCell::new(),
            caller_id: OnceCell::new(),
            scopes: OnceCell::new(),
            remote_addr: OnceCell::new(),
            method: OnceCell::new(),
            id: OnceCell::new(),
            target: OnceCell::new(),
            arguments_text: OnceCell::new(),
            arguments: OnceCell::new(),
            headers: OnceCell::new(),
            message: OnceCell::new(),
        }
    }

    fn from_host(host: &'a wit::Request) -> Self {
        Request::empty(Some(host))
    }

    /// The gateway's handle; only reached for a field not yet read, which a request built
    /// outside the gateway never has.
    fn host(&self) -> &'a wit::Request {
        self.host
            .expect("a request built outside the gateway has every field set")
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_fields(f: Fields) -> Request<'static> {
        let r = Request::empty(None);
        let _ = r.request_id.set(f.request_id);
        let _ = r.route.set(f.route);
        let _ = r.era.set(f.era);
        let _ = r.caller_id.set(f.caller_id);
        let _ = r.scopes.set(f.scopes);
        let _ = r.remote_addr.set(f.remote_addr);
        let _ = r.method.set(f.method);
        let _ = r.id.set(f.id);
        let _ = r.target.set(f.target);
        let _ = r.arguments_text.set(f.arguments);
        let _ = r.headers.set(f.headers);
        let _ = r.message.set(f.message);
        r
    }

    /// Every field, read now (for [`testing`]'s responses, which carry their request).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn fields(&self) -> Fields {
        Fields {
            request_id: self.request_id().to_string(),
            route: self.route().to_string(),
            era: self.era(),
            caller_id: self.caller_id().map(str::to_string),
            scopes: self.scopes().to_vec(),
            remote_addr: self.remote_addr().map(str::to_string),
            method: self.method().to_string(),
            id: self.id().map(str::to_string),
            target: self.target().map(str::to_string),
            arguments: self.arguments_text().map(str::to_string),
            headers: self.headers().to_vec(),
            message: self.message().to_string(),
        }
    }

    /// The JSON-RPC method, e.g. `tools/call`.
    pub fn method(&self) -> &str {
        self.method.get_or_init(|| self.host().method())
    }

    /// The route's upstream name (`/servers/<route>/mcp`).
    pub fn route(&self) -> &str {
        self.route.get_or_init(|| self.host().route())
    }

    pub fn era(&self) -> Era {
        *self.era.get_or_init(|| self.host().era())
    }

    /// The gateway's request id, as in its logs and `X-Request-Id`.
    pub fn request_id(&self) -> &str {
        self.request_id.get_or_init(|| self.host().request_id())
    }

    /// The authenticated caller (`None` without an auth stage before this plugin).
    pub fn caller_id(&self) -> Option<&str> {
        self.caller_id
            .get_or_init(|| self.host().caller_id())
            .as_deref()
    }

    /// The caller's OAuth scopes.
    pub fn scopes(&self) -> &[String] {
        self.scopes.get_or_init(|| self.host().scopes())
    }

    /// The client's IP address.
    pub fn remote_addr(&self) -> Option<&str> {
        self.remote_addr
            .get_or_init(|| self.host().remote_addr())
            .as_deref()
    }

    /// The caller id, else `ip:<address>`, else `anonymous`: a key for per-client state.
    pub fn client_key(&self) -> String {
        match (self.caller_id(), self.remote_addr()) {
            (Some(id), _) => id.to_string(),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".to_string(),
        }
    }

    /// The JSON-RPC id as JSON text; `None` for a notification.
    pub fn id(&self) -> Option<&str> {
        self.id.get_or_init(|| self.host().id()).as_deref()
    }

    /// The tool name of a `tools/call`.
    pub fn tool(&self) -> Option<&str> {
        (self.method() == "tools/call")
            .then(|| self.target())
            .flatten()
    }

    /// The tool or prompt name, or the resource URI, the method acts on.
    pub fn target(&self) -> Option<&str> {
        self.target.get_or_init(|| self.host().target()).as_deref()
    }

    /// The first value of a request header (name in any case). Credentials are never visible
    /// to plugins. Asks the gateway for this one header (unless [`Request::headers`] was read).
    pub fn header(&self, name: &str) -> Option<String> {
        match (self.headers.get(), self.host) {
            (None, Some(host)) => host.header(name),
            _ => self
                .headers()
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
        }
    }

    /// All request headers visible to plugins, as (lower-case name, value).
    pub fn headers(&self) -> &[(String, String)] {
        self.headers.get_or_init(|| self.host().headers())
    }

    fn arguments_text(&self) -> Option<&str> {
        self.arguments_text
            .get_or_init(|| self.host().arguments())
            .as_deref()
    }

    /// `params.arguments` of tools/call and prompts/get, parsed on first use.
    ///
    /// Arguments that cannot be read (nested deeper than 128 levels) fail the hook: the plugin
    /// traps and the gateway applies its `on_error` (`fail_closed` by default), so a plugin
    /// never lets through a request it could not look at.
    pub fn arguments(&self) -> Option<&Value> {
        self.arguments
            .get_or_init(|| self.arguments_text().map(unreadable_fails))
            .as_ref()
    }

    /// The arguments deserialised into `T`; the error reads well as a JSON-RPC message.
    pub fn arguments_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        let raw = self.arguments_text().unwrap_or("{}");
        serde_json::from_str(raw).map_err(|e| format!("invalid arguments: {e}"))
    }

    /// The whole JSON-RPC message as JSON text.
    pub fn message(&self) -> &str {
        self.message.get_or_init(|| self.host().message())
    }

    /// The whole JSON-RPC message as a JSON value (what cannot be read fails the hook, as
    /// [`Request::arguments`]).
    pub fn message_value(&self) -> Value {
        unreadable_fails(self.message())
    }
}

/// JSON text the gateway handed over, parsed; what cannot be parsed fails the hook (a trap the
/// gateway counts and answers by the plugin's `on_error`), never reads as absent.
fn unreadable_fails(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the plugin cannot read its input ({e}): failing the call"))
}

/// A JSON-RPC error for [`Action::Reject`] and [`ResponseAction::ReplaceError`].
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn into_wit(self) -> wit::JsonrpcError {
        wit::JsonrpcError {
            code: self.code,
            message: self.message,
            data: self.data.map(|d| d.to_string()),
        }
    }
}

/// Changes to a request, built with [`Action::rewrite_arguments`] and [`Action::set_header`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modification {
    pub arguments: Option<Value>,
    pub message: Option<Value>,
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
}

/// What [`Plugin::on_request`] decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Pass the request on unchanged.
    Continue,
    /// Pass it on with these changes.
    Modify(Modification),
    /// Refuse it with this HTTP status and JSON-RPC error; the upstream never sees it.
    Reject { http_status: u16, error: RpcError },
    /// Answer locally with this JSON-RPC `result`; the upstream never sees the request.
    Respond(Value),
}

impl Action {
    /// Refuse with a JSON-RPC error. The HTTP status is 200, so every MCP client library shows
    /// the caller `message` (a 4xx would surface as a transport error in some).
    pub fn reject(code: i32, message: impl Into<String>) -> Action {
        Action::Reject {
            http_status: 200,
            error: RpcError::new(code, message),
        }
    }

    /// Refuse with JSON-RPC -32602 (invalid params).
    pub fn invalid_params(message: impl Into<String>) -> Action {
        Action::reject(-32602, message)
    }

    /// Sets the HTTP status of a rejection (for example 429 for a quota).
    pub fn with_status(mut self, status: u16) -> Action {
        if let Action::Reject { http_status, .. } = &mut self {
            *http_status = status;
        }
        self
    }

    /// Attaches `error.data` to a rejection.
    pub fn with_data(mut self, data: Value) -> Action {
        if let Action::Reject { error, .. } = &mut self {
            error.data = Some(data);
        }
        self
    }

    /// Forward the request with these `params.arguments` instead.
    pub fn rewrite_arguments(arguments: Value) -> Action {
        Action::Modify(Modification {
            arguments: Some(arguments),
            ..Modification::default()
        })
    }

    /// Forward this JSON-RPC message instead (same id, method and target).
    pub fn rewrite_message(message: Value) -> Action {
        Action::Modify(Modification {
            message: Some(message),
            ..Modification::default()
        })
    }

    /// Answer locally with `result`.
    pub fn respond(result: Value) -> Action {
        Action::Respond(result)
    }

    /// Adds a header to the request the upstream receives (turns `Continue` into `Modify`).
    pub fn set_header(self, name: impl Into<String>, value: impl Into<String>) -> Action {
        self.modify(|m| m.set_headers.push((name.into(), value.into())))
    }

    /// Removes a header from the request the upstream receives.
    pub fn remove_header(self, name: impl Into<String>) -> Action {
        self.modify(|m| m.remove_headers.push(name.into()))
    }

    fn modify(self, f: impl FnOnce(&mut Modification)) -> Action {
        match self {
            Action::Continue => {
                let mut m = Modification::default();
                f(&mut m);
                Action::Modify(m)
            }
            Action::Modify(mut m) => {
                f(&mut m);
                Action::Modify(m)
            }
            other => other,
        }
    }

    fn into_wit(self) -> wit::RequestAction {
        match self {
            Action::Continue => wit::RequestAction::Continue,
            Action::Modify(m) => wit::RequestAction::Modify(wit::Modification {
                arguments: m.arguments.map(|a| a.to_string()),
                message: m.message.map(|a| a.to_string()),
                set_headers: m.set_headers,
                remove_headers: m.remove_headers,
            }),
            Action::Reject { http_status, error } => wit::RequestAction::Reject(wit::Rejection {
                http_status,
                error: error.into_wit(),
            }),
            Action::Respond(result) => wit::RequestAction::Respond(result.to_string()),
        }
    }
}

/// The response to a request the plugin registered for, read from the gateway on first use as
/// the request is.
pub struct Response<'a> {
    request: Request<'a>,
    /// The gateway's handle; `None` for a response built by [`testing`].
    host: Option<&'a wit::Response>,
    http_status: OnceCell<u16>,
    streamed: OnceCell<bool>,
    message: OnceCell<String>,
    parsed: OnceCell<Value>,
}

impl std::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("request", &self.request)
            .field("http_status", &self.http_status())
            .finish_non_exhaustive()
    }
}

impl<'a> Response<'a> {
    fn from_host(request: Request<'a>, host: &'a wit::Response) -> Self {
        Response {
            request,
            host: Some(host),
            http_status: OnceCell::new(),
            streamed: OnceCell::new(),
            message: OnceCell::new(),
            parsed: OnceCell::new(),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn local(
        request: Request<'static>,
        http_status: u16,
        streamed: bool,
        message: String,
    ) -> Response<'static> {
        Response {
            request,
            host: None,
            http_status: OnceCell::from(http_status),
            streamed: OnceCell::from(streamed),
            message: OnceCell::from(message),
            parsed: OnceCell::new(),
        }
    }

    fn host(&self) -> &'a wit::Response {
        self.host
            .expect("a response built outside the gateway has every field set")
    }

    /// The request this answers (as the upstream received it).
    pub fn request(&self) -> &Request<'a> {
        &self.request
    }

    /// The upstream's HTTP status.
    pub fn http_status(&self) -> u16 {
        *self.http_status.get_or_init(|| self.host().http_status())
    }

    /// Whether it arrived as the final event of an SSE stream.
    pub fn streamed(&self) -> bool {
        *self.streamed.get_or_init(|| self.host().streamed())
    }

    /// The JSON-RPC response message as JSON text.
    pub fn message(&self) -> &str {
        self.message.get_or_init(|| self.host().message())
    }

    fn parsed(&self) -> &Value {
        self.parsed.get_or_init(|| unreadable_fails(self.message()))
    }

    /// The `result`, if the upstream answered with one.
    pub fn result(&self) -> Option<&Value> {
        self.parsed().get("result")
    }

    /// The `error`, if the upstream answered with one.
    pub fn error(&self) -> Option<&Value> {
        self.parsed().get("error")
    }
}

/// What [`Plugin::on_response`] decides.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseAction {
    Continue,
    /// The client gets this `result` instead.
    ReplaceResult(Value),
    /// The client gets this JSON-RPC error instead.
    ReplaceError(RpcError),
}

impl ResponseAction {
    fn into_wit(self) -> wit::ResponseAction {
        match self {
            ResponseAction::Continue => wit::ResponseAction::Continue,
            ResponseAction::ReplaceResult(v) => wit::ResponseAction::ReplaceResult(v.to_string()),
            ResponseAction::ReplaceError(e) => wit::ResponseAction::ReplaceError(e.into_wit()),
        }
    }
}

/// Log lines, attributed by the gateway to the plugin and the request. Always available.
/// (Outside WebAssembly, in unit tests, they go to [`testing::logs`].)
pub mod log {
    use crate::bindings::mcpgate::plugin::log::Level;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mcpgate::plugin::log::log;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::host::log;

    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }
    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }
    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }
    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message.as_ref());
    }
}

/// The plugin's key/value store (capability `kv`: list it under the plugin's `grants:`).
/// Shared by all instances and requests of the plugin; other plugins cannot see it.
/// (Outside WebAssembly, in unit tests, an in-memory store: [`testing::kv_value`].)
pub mod kv {
    use super::Duration;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mcpgate::plugin::kv as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::host::kv as raw;

    pub use raw::Error;

    fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        raw::get(key)
    }

    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        raw::set(key, value, ttl_ms(ttl))
    }

    pub fn delete(key: &str) -> Result<(), Error> {
        raw::delete(key)
    }

    /// Adds `delta` to the counter at `key` (created at 0 with `ttl`) and returns the new value.
    pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
        raw::incr(key, delta, ttl_ms(ttl))
    }
}

/// Prometheus series owned by the plugin (capability `metrics`). (Outside WebAssembly, in unit
/// tests: [`testing::counter`], [`testing::observations`].)
pub mod metrics {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mcpgate::plugin::metrics as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::host::metrics as raw;

    fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Adds to the counter `mcpgate_plugin_<name>_total`.
    pub fn counter_add(name: &str, value: u64, labels: &[(&str, &str)]) {
        raw::counter_add(name, value, &owned(labels));
    }

    /// Records an observation in the histogram `mcpgate_plugin_<name>`.
    pub fn histogram_observe(name: &str, value: f64, labels: &[(&str, &str)]) {
        raw::histogram_observe(name, value, &owned(labels));
    }
}

/// HTTP requests to the targets named under the plugin's `grants.callout` (capability `callout`).
/// (Outside WebAssembly, in unit tests: answered by [`testing::on_callout`].)
pub mod callout {
    use super::Duration;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mcpgate::plugin::callout as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::host::callout as raw;

    pub use raw::{Error, Response};

    /// Sends `method path` to the named target with `body`, waiting at most `timeout` (and never
    /// past the plugin's own deadline).
    pub fn send(
        target: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, Error> {
        raw::send(&raw::Request {
            target: target.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        })
    }
}

/// Exports a [`Plugin`] type as the component's hooks. One line, at the crate root:
/// `mcpgate_plugin_sdk::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __McpgatePluginExport;
        impl $crate::__private::Guest for __McpgatePluginExport {
            fn init(config: String) -> Result<$crate::__private::WitRegistration, String> {
                $crate::__private::init::<$plugin>(config)
            }
            fn on_request(
                req: &$crate::__private::WitRequest,
            ) -> $crate::__private::WitRequestAction {
                $crate::__private::on_request::<$plugin>(req)
            }
            fn on_response(
                req: &$crate::__private::WitRequest,
                resp: &$crate::__private::WitResponse,
            ) -> $crate::__private::WitResponseAction {
                $crate::__private::on_response::<$plugin>(req, resp)
            }
        }
        // Only a wasm build exports the hooks; a native build (for unit tests) keeps them alive.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_hooks!(__McpgatePluginExport with_types_in $crate::bindings);
        #[cfg(not(target_arch = "wasm32"))]
        const _: [fn(String) -> Result<$crate::__private::WitRegistration, String>; 1] =
            [<__McpgatePluginExport as $crate::__private::Guest>::init];
    };
}

/// The glue behind [`export_plugin!`]: one plugin value per instance, built by `init`.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit::{
        Registration as WitRegistration, Request as WitRequest, RequestAction as WitRequestAction,
        Response as WitResponse, ResponseAction as WitResponseAction,
    };
    pub use wit_hooks::Guest;

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    fn with_plugin<P: Plugin, R>(f: impl FnOnce(&P) -> R) -> R {
        INSTANCE.with(|cell| {
            let cell = cell.borrow();
            let plugin = cell
                .as_ref()
                .and_then(|p| p.downcast_ref::<P>())
                .expect("the gateway calls init before any hook");
            f(plugin)
        })
    }

    pub fn init<P: Plugin>(config: String) -> Result<WitRegistration, String> {
        let config: P::Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let plugin = P::init(config)?;
        let reg = plugin.registration();
        INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(WitRegistration {
            request_methods: reg.requests,
            response_methods: reg.responses,
        })
    }

    pub fn on_request<P: Plugin>(req: &WitRequest) -> WitRequestAction {
        let req = Request::from_host(req);
        with_plugin::<P, _>(|p| p.on_request(&req)).into_wit()
    }

    pub fn on_response<P: Plugin>(req: &WitRequest, resp: &WitResponse) -> WitResponseAction {
        let resp = Response::from_host(Request::from_host(req), resp);
        with_plugin::<P, _>(|p| p.on_response(&resp)).into_wit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_compose() {
        let a = Action::Continue
            .set_header("x-tenant", "acme")
            .remove_header("x-debug");
        let Action::Modify(m) = a else {
            panic!("set_header turns Continue into Modify")
        };
        assert_eq!(m.set_headers, vec![("x-tenant".into(), "acme".into())]);
        assert_eq!(m.remove_headers, vec!["x-debug".to_string()]);

        let r = Action::reject(-32029, "quota")
            .with_status(429)
            .with_data(json!({"limit": 3}));
        match r.clone().into_wit() {
            wit::RequestAction::Reject(rej) => {
                assert_eq!(rej.http_status, 429);
                assert_eq!(rej.error.code, -32029);
                assert_eq!(rej.error.data.as_deref(), Some(r#"{"limit":3}"#));
            }
            _ => panic!("a rejection stays a rejection"),
        }
        // Header helpers leave a rejection alone.
        assert_eq!(r.clone().set_header("a", "b"), r);
    }

    fn request(method: &str, target: Option<&str>, arguments: Option<&str>) -> Request<'static> {
        Request::from_fields(Fields {
            request_id: "r1".into(),
            route: "github".into(),
            era: Era::Legacy,
            caller_id: None,
            scopes: vec![],
            remote_addr: Some("127.0.0.1".into()),
            method: method.into(),
            id: Some("1".into()),
            target: target.map(Into::into),
            arguments: arguments.map(Into::into),
            headers: vec![("x-tenant".into(), "acme".into())],
            message: "{}".into(),
        })
    }

    #[test]
    fn request_view() {
        let r = request("tools/call", Some("search"), Some(r#"{"q":"x","n":2}"#));
        assert_eq!(r.tool(), Some("search"));
        assert_eq!(r.arguments().unwrap()["n"], 2);
        assert_eq!(r.header("X-Tenant").as_deref(), Some("acme"));
        assert_eq!(r.client_key(), "ip:127.0.0.1");
        #[derive(serde::Deserialize)]
        struct Args {
            q: String,
        }
        assert_eq!(r.arguments_as::<Args>().unwrap().q, "x");
        assert!(
            r.arguments_as::<Vec<u8>>()
                .unwrap_err()
                .starts_with("invalid arguments")
        );

        let prompt = request("prompts/get", Some("greet"), None);
        assert_eq!(prompt.tool(), None);
        assert_eq!(prompt.target(), Some("greet"));
        assert!(prompt.arguments().is_none());
    }

    #[test]
    #[should_panic(expected = "the plugin cannot read its input")]
    fn arguments_that_cannot_be_read_fail_the_call_instead_of_reading_as_absent() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let r = request("tools/call", Some("t"), Some(&deep));
        let _ = r.arguments();
    }
}
