//! A loaded plugin as a pipeline [`Stage`]: what it is shown, and what its answers do.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::Value;
use serde_json::value::RawValue;

use super::engine::bindings::mcpgate::plugin::types as wit;
use super::instance::{Failure, FailureKind, Loaded};
use super::view::{ResponseView, Shown};
use crate::config::{OnError, PluginSpec};
use crate::error::{GatewayError, StageKind};
use crate::mcp::{Message, jsonrpc};
use crate::pipeline::{BoxFuture, Reply, RequestContext, ResponseVerdict, Stage, Verdict};

/// Request headers a plugin never sees: credentials.
const HIDDEN: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Headers a plugin may not set or remove: the connection's, the protocol's (they must mirror
/// the body), the gateway's own, and credentials (the upstream's come from `upstreams.*.auth`).
const PROTECTED: [&str; 17] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "accept",
    "origin",
    "authorization",
    "proxy-authorization",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "x-request-id",
];

fn protected(name: &HeaderName) -> bool {
    let n = name.as_str();
    PROTECTED.contains(&n) || n.starts_with("mcp-param-") || n.starts_with("x-forwarded-")
}

/// A loaded plugin as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub file: String,
    /// SHA-256 of the component file it was compiled from (hex).
    pub sha256: String,
    pub instances: &'static str,
    pub on_error: &'static str,
    pub timeout_ms: u64,
    pub calls: super::engine::CallSummary,
}

pub struct PluginStage {
    loaded: Loaded,
    label: String,
    series: super::engine::PluginSeries,
    requests: Option<crate::glob::GlobSet>,
    responses: Option<crate::glob::GlobSet>,
    /// Header names consumed by the gateway (API-key header): hidden from plugins too.
    hidden: Vec<HeaderName>,
}

impl PluginStage {
    pub(super) fn new(
        loaded: Loaded,
        requests: Option<crate::glob::GlobSet>,
        responses: Option<crate::glob::GlobSet>,
    ) -> Self {
        PluginStage {
            label: format!("plugin:{}", loaded.spec.name),
            series: loaded.runtime.stats.series(&loaded.spec.name),
            loaded,
            requests,
            responses,
            hidden: Vec::new(),
        }
    }

    /// Hides these (credential) headers from the plugin as well.
    pub fn hide_headers(&mut self, names: &[HeaderName]) {
        self.hidden.extend_from_slice(names);
    }

    pub fn name(&self) -> &str {
        &self.loaded.spec.name
    }

    /// Whether `spec` would load this very plugin again: the same entry, the same file
    /// contents, the same hidden headers.
    pub(super) fn unchanged(&self, spec: &PluginSpec, hidden: &[HeaderName]) -> bool {
        super::load::same_entry(&self.loaded.spec, spec)
            && super::load::file_sha256(spec) == Some(self.loaded.file_sha256)
            && self.hidden == hidden
    }

    /// What the admin API shows of a loaded plugin.
    pub fn status(&self) -> PluginStatus {
        let spec = &self.loaded.spec;
        let sha256 = crate::session::hex(&self.loaded.file_sha256);
        PluginStatus {
            name: spec.name.to_string(),
            file: spec.file.display().to_string(),
            sha256,
            instances: match spec.instances {
                crate::config::InstanceMode::Fresh => "fresh",
                crate::config::InstanceMode::Reuse => "reuse",
            },
            on_error: match spec.on_error {
                OnError::FailClosed => "fail_closed",
                OnError::FailOpen => "fail_open",
            },
            timeout_ms: u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX),
            calls: self.series.summary(),
        }
    }

    /// Calls counted for this plugin's `hook` with `outcome`.
    pub fn calls(&self, hook: &str, outcome: &str) -> u64 {
        self.series.count(hook, outcome)
    }

    /// What the hook is shown of `msg`: the form of the plugin's contract, without credentials.
    fn shown(&self, cx: &RequestContext, msg: &Message) -> Shown {
        Shown::new(self.loaded.pre.contract(), cx, msg, |n| {
            !HIDDEN.contains(&n.as_str()) && !self.hidden.contains(n)
        })
    }

    /// Counts one call of `hook` that ended with `outcome`.
    fn record(&self, hook: &str, outcome: &str, took: Duration) {
        self.series.record(hook, outcome, took);
    }

    /// What is left of the request's plugin budget, or the refusal when nothing is.
    fn budget_left(&self, cx: &RequestContext) -> Result<Duration, GatewayError> {
        let used = Duration::from_nanos(cx.plugin_time.load(Ordering::Relaxed));
        let left = self
            .loaded
            .runtime
            .settings
            .request_budget
            .saturating_sub(used);
        if left.is_zero() {
            return Err(self.over_budget());
        }
        Ok(left)
    }

    /// Adds a call's time (since `started`) to the request's plugin time, and returns it.
    fn spend(cx: &RequestContext, started: Instant) -> Duration {
        let took = started.elapsed();
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        cx.plugin_time.fetch_add(nanos, Ordering::Relaxed);
        took
    }

    /// The refusal of a request whose plugin time ran out: never skipped, even under
    /// `fail_open`, or a client could make a guard plugin skip its later messages.
    fn over_budget(&self) -> GatewayError {
        let budget = self.loaded.runtime.settings.request_budget.as_millis();
        GatewayError::Rejected {
            stage: self.kind(),
            status: StatusCode::BAD_REQUEST,
            code: jsonrpc::REJECTED,
            message: format!(
                "the request used up its plugin time ({budget}ms, plugin_runtime.request_budget): send fewer messages at once"
            ),
            data: None,
            headers: Vec::new(),
        }
    }

    /// A failure under a deadline the budget cut short is the budget's, not the plugin's.
    fn budget_failure(&self, f: &Failure, limit: Duration) -> bool {
        f.kind == FailureKind::Timeout && limit < self.loaded.spec.timeout
    }

    /// Logs and counts a failure, and decides what the request gets.
    fn failed(
        &self,
        cx: &RequestContext,
        hook: &str,
        f: &Failure,
        took: Duration,
    ) -> Option<GatewayError> {
        self.record(hook, f.kind.as_str(), took);
        let open = self.loaded.spec.on_error == OnError::FailOpen;
        tracing::warn!(
            plugin = %self.name(),
            request_id = %cx.request_id,
            hook,
            kind = f.kind.as_str(),
            detail = %f.detail,
            on_error = if open { "fail_open: skipped" } else { "fail_closed: request failed" },
            "plugin failed"
        );
        (!open).then(|| GatewayError::Rejected {
            stage: self.kind(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: jsonrpc::PLUGIN_FAILED,
            message: format!("plugin `{}` failed ({})", self.name(), f.kind.as_str()),
            data: None,
            headers: Vec::new(),
        })
    }

    /// Applies a modification, all or nothing. The plugin's JSON goes in as it wrote it (never
    /// through a `Value`), and only what it replaced changes in the forwarded message.
    fn apply(&self, cx: &mut RequestContext, m: wit::Modification) -> Result<(), String> {
        let current = cx.message().ok_or("no message to modify")?.clone();
        let mut next: Option<Message> = None;
        if let Some(text) = m.message {
            let raw =
                RawValue::from_string(text).map_err(|e| format!("`message` is not JSON: {e}"))?;
            let parsed = Message::parse(&raw).map_err(|e| e.message)?;
            if parsed.id.as_ref().map(|i| i.get()) != current.id.as_ref().map(|i| i.get())
                || parsed.method != current.method
                || parsed.target != current.target
            {
                return Err("a rewritten `message` must keep its id, method and target".into());
            }
            next = Some(parsed);
        }
        if let Some(text) = m.arguments {
            if !matches!(current.method(), "tools/call" | "prompts/get") {
                return Err(format!(
                    "`{}` has no arguments to rewrite",
                    current.method()
                ));
            }
            let args =
                RawValue::from_string(text).map_err(|e| format!("`arguments` is not JSON: {e}"))?;
            if !args.get().trim_start().starts_with('{') {
                return Err("`arguments` must be a JSON object".into());
            }
            let base = next.as_ref().unwrap_or(&current);
            next = Some(base.with_arguments(&args).map_err(|e| e.message)?);
        }
        let size: usize = m.set_headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        let limit = self.loaded.runtime.settings.max_header_bytes;
        if size > limit {
            return Err(format!(
                "sets {size} bytes of headers; a plugin may set at most {limit} (plugin_runtime.max_header_bytes)"
            ));
        }
        let mut set = Vec::with_capacity(m.set_headers.len());
        for (name, value) in &m.set_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            if protected(&name) {
                return Err(format!("plugins may not set `{name}`"));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value for `{name}` is not a valid header value"))?;
            set.push((name, value));
        }
        let mut remove = Vec::with_capacity(m.remove_headers.len());
        for name in &m.remove_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            if protected(&name) {
                return Err(format!("plugins may not remove `{name}`"));
            }
            remove.push(name);
        }
        if let Some(message) = next {
            *cx.message_mut().ok_or("no message to modify")? = message;
        }
        for name in remove {
            cx.headers.remove(name);
        }
        for (name, value) in set {
            cx.headers.insert(name, value);
        }
        Ok(())
    }

    fn rejection(&self, r: wit::Rejection) -> Result<GatewayError, String> {
        let status = StatusCode::from_u16(r.http_status)
            .ok()
            .filter(|s| *s == StatusCode::OK || s.is_client_error() || s.is_server_error())
            .ok_or_else(|| format!("rejection status {} is not 200, 4xx or 5xx", r.http_status))?;
        let data = r
            .error
            .data
            .map(|d| serde_json::from_str(&d).map_err(|e| format!("error `data` is not JSON: {e}")))
            .transpose()?;
        Ok(GatewayError::Rejected {
            stage: self.kind(),
            status,
            code: r.error.code,
            message: r.error.message,
            data,
            headers: Vec::new(),
        })
    }

    fn local_response(&self, cx: &RequestContext, result: &str) -> Result<Response, String> {
        let result: Value = serde_json::from_str(result)
            .map_err(|e| format!("`respond` result is not JSON: {e}"))?;
        if cx.body.as_ref().is_some_and(|b| b.batch) {
            return Err("`respond` cannot answer one message of a batch".into());
        }
        let msg = cx.message().ok_or("nothing to respond to")?;
        let Some(id) = &msg.id else {
            // A notification gets no JSON-RPC response.
            return Ok(Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .expect("static response"));
        };
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{}}}"#,
            id.get(),
            result
        );
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("static response"))
    }
}

impl Stage for PluginStage {
    fn name(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> StageKind {
        StageKind::Plugin(self.loaded.spec.name.clone())
    }

    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(msg) = cx.message() else {
                return Verdict::Continue;
            };
            if msg.method.is_none()
                || !self
                    .requests
                    .as_ref()
                    .is_some_and(|set| set.matches(msg.method()))
            {
                return Verdict::Continue;
            }
            let limit = match self.budget_left(cx) {
                Ok(left) => left,
                Err(e) => return Verdict::Reject(e),
            };
            let shown = self.shown(cx, msg);
            let started = Instant::now();
            let action = self
                .loaded
                .call(cx.request_id.clone(), started, limit, |store, plugin| {
                    Box::pin(plugin.on_request(store, shown))
                })
                .await;
            let took = Self::spend(cx, started);
            let (outcome, result) = match action {
                Err(f) if self.budget_failure(&f, limit) => {
                    self.record("request", f.kind.as_str(), took);
                    return Verdict::Reject(self.over_budget());
                }
                Err(f) => {
                    return match self.failed(cx, "request", &f, took) {
                        Some(e) => Verdict::Reject(e),
                        None => Verdict::Continue,
                    };
                }
                Ok(wit::RequestAction::Continue) => ("continue", Ok(Verdict::Continue)),
                Ok(wit::RequestAction::Modify(m)) => {
                    ("modify", self.apply(cx, m).map(|()| Verdict::Continue))
                }
                Ok(wit::RequestAction::Reject(r)) => {
                    ("reject", self.rejection(r).map(Verdict::Reject))
                }
                Ok(wit::RequestAction::Respond(result)) => (
                    "respond",
                    self.local_response(cx, &result).map(Verdict::Respond),
                ),
            };
            match result {
                Ok(verdict) => {
                    self.record("request", outcome, took);
                    verdict
                }
                Err(detail) => {
                    let f = Failure::new(FailureKind::Invalid, detail);
                    match self.failed(cx, "request", &f, took) {
                        Some(e) => Verdict::Reject(e),
                        None => Verdict::Continue,
                    }
                }
            }
        })
    }

    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.is_request()
            && self
                .responses
                .as_ref()
                .is_some_and(|set| set.matches(request.method()))
    }

    fn hooks_responses(&self) -> bool {
        self.responses.is_some()
    }

    fn on_response<'a>(
        &'a self,
        cx: &'a RequestContext,
        request: &'a Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let limit = match self.budget_left(cx) {
                Ok(left) => left,
                Err(e) => return replace_with_error(response, &e),
            };
            let Some(message) = response.text() else {
                return ResponseVerdict::Refuse("the upstream's message is not JSON");
            };
            let view = ResponseView {
                http_status: cx.upstream_status.unwrap_or(200),
                streamed: cx.response_streamed,
                message: message.to_string(),
            };
            let shown = self.shown(cx, request);
            let started = Instant::now();
            let action = self
                .loaded
                .call(cx.request_id.clone(), started, limit, |store, plugin| {
                    Box::pin(plugin.on_response(store, shown, view))
                })
                .await;
            let took = Self::spend(cx, started);
            if let Err(f) = &action
                && self.budget_failure(f, limit)
            {
                self.record("response", f.kind.as_str(), took);
                return replace_with_error(response, &self.over_budget());
            }
            let replaced = match action.map(replacement) {
                Ok(None) => {
                    self.record("response", "continue", took);
                    return ResponseVerdict::Unchanged;
                }
                Ok(Some(r)) => r,
                Err(f) => Err(f),
            };
            let (field, value) = match replaced {
                Ok(r) => {
                    self.record("response", "replace", took);
                    r
                }
                // Counted (by kind) in `failed`; fail_open leaves the response alone.
                Err(f) => match self.failed(cx, "response", &f, took) {
                    None => return ResponseVerdict::Unchanged,
                    Some(e) => (
                        "error",
                        serde_json::json!({"code": e.jsonrpc_code(), "message": e.to_string()}),
                    ),
                },
            };
            if let Some(obj) = response.tree().and_then(Value::as_object_mut) {
                obj.remove("result");
                obj.remove("error");
                obj.insert(field.to_string(), value);
            }
            ResponseVerdict::Modified
        })
    }
}

/// The part of the response message a plugin's `replace-result` or `replace-error` sets, and its
/// JSON (`None`: `continue`); text that is not JSON is the plugin's failure.
fn replacement(action: wit::ResponseAction) -> Option<Result<(&'static str, Value), Failure>> {
    let not_json = |what: &str, e: serde_json::Error| {
        Failure::new(FailureKind::Invalid, format!("{what} is not JSON: {e}"))
    };
    match action {
        wit::ResponseAction::Continue => None,
        wit::ResponseAction::ReplaceResult(text) => Some(
            serde_json::from_str::<Value>(&text)
                .map(|v| ("result", v))
                .map_err(|e| not_json("replacement result", e)),
        ),
        wit::ResponseAction::ReplaceError(e) => {
            let mut err = serde_json::json!({"code": e.code, "message": e.message});
            if let Some(d) = e.data {
                match serde_json::from_str::<Value>(&d) {
                    Ok(d) => err["data"] = d,
                    Err(e) => return Some(Err(not_json("error `data`", e))),
                }
            }
            Some(Ok(("error", err)))
        }
    }
}

/// A response message whose result becomes the JSON-RPC error of `e`.
fn replace_with_error(response: &mut Reply<'_>, e: &GatewayError) -> ResponseVerdict {
    if let Some(obj) = response.tree().and_then(Value::as_object_mut) {
        obj.remove("result");
        obj.insert(
            "error".into(),
            serde_json::json!({"code": e.jsonrpc_code(), "message": e.to_string()}),
        );
    }
    ResponseVerdict::Modified
}
