//! The stage abstraction: one per-request context, an ordered list of stages, and the runner.
//!
//! ```text
//!  request ─▶ stage 1 ─▶ stage 2 ─▶ … ─▶ forward ─▶ response hooks (only where a stage asked) ─▶ client
//!               │           │
//!               └─ Reject / Respond: answered here, nothing reaches the upstream
//! ```
//!
//! Built-in stages (auth, rate limit, policy) and WASM plugin stages implement the same [`Stage`]
//! trait. A stage sees each JSON-RPC message of the request in turn (a batch's elements
//! each pass through every stage) via [`RequestContext::message`], and may rewrite it. Response
//! hooks see JSON responses and, in an SSE stream, only the response messages to requests a stage
//! asked about; every other event streams on untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use http::HeaderMap;

use serde_json::value::RawValue;

use crate::config::Upstream;
use crate::error::{GatewayError, StageKind};
use crate::mcp::{Era, Message, ParsedBody};
use crate::session::{HookedId, REQUEST_ID_PREFIX, SessionClaims, Sessions};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who is calling. Filled by the authentication stage; `None` while no auth is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: Arc<str>,
    pub scopes: Vec<String>,
}

/// Everything a stage may know about the request. Built once by the edge, threaded through every
/// stage, the forwarder and the response hooks.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub http_method: http::Method,
    /// The client's request headers (before any forwarding rewrite). Kept for response hooks;
    /// when no stage asked for the response they move into the upstream request.
    pub headers: HeaderMap,
    /// The parsed POST body (`None` for GET and DELETE).
    pub body: Option<ParsedBody>,
    pub era: Era,
    pub caller: Option<Caller>,
    /// The opened legacy session, if the request carried one.
    pub session: Option<SessionClaims>,
    pub started: Instant,
    pub timings: Timings,
    /// Where the request came from (the TCP peer).
    pub peer: Option<std::net::IpAddr>,
    /// Headers added to the response the client gets, whatever it is (rate-limit headers).
    pub response_headers: HeaderMap,
    /// The upstream's response status, once it answered (for response hooks).
    pub upstream_status: Option<u16>,
    /// Whether the upstream answered with an SSE stream (for response hooks).
    pub response_streamed: bool,
    /// The stage that answered the request locally ([`Verdict::Respond`]), for the audit log.
    pub responded_by: Option<StageKind>,
    /// What stages keep about this request for later phases (the rate limit's charges, which
    /// [`Stage::refund`] gives back when the request is not forwarded after all).
    pub extensions: http::Extensions,
    /// Plugin time this request has used (nanoseconds), request and response hooks together,
    /// against `plugin_runtime.request_budget`.
    pub plugin_time: std::sync::atomic::AtomicU64,
    current: usize,
    modified: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Timings {
    /// Time spent in request stages.
    pub stages: Duration,
    /// Time until the upstream's response headers arrived.
    pub upstream_headers: Option<Duration>,
}

impl RequestContext {
    pub fn new(
        request_id: Arc<str>,
        upstream: Arc<Upstream>,
        http_method: http::Method,
        headers: HeaderMap,
        body: Option<ParsedBody>,
    ) -> Self {
        let era = body.as_ref().map_or(Era::Legacy, ParsedBody::era);
        RequestContext {
            request_id,
            upstream,
            http_method,
            headers,
            body,
            era,
            caller: None,
            session: None,
            started: Instant::now(),
            timings: Timings::default(),
            peer: None,
            response_headers: HeaderMap::new(),
            upstream_status: None,
            response_streamed: false,
            responded_by: None,
            extensions: http::Extensions::new(),
            plugin_time: std::sync::atomic::AtomicU64::new(0),
            current: 0,
            modified: false,
        }
    }

    /// The message the current stage call is about (`None` for GET and DELETE).
    pub fn message(&self) -> Option<&Message> {
        self.body
            .as_ref()
            .and_then(|b| b.messages.get(self.current))
    }

    /// The identity stages key on: the authenticated caller's id, else `ip:<peer address>`, else
    /// `anonymous`.
    pub fn client_key(&self) -> Arc<str> {
        match (&self.caller, self.peer) {
            (Some(c), _) => c.id.clone(),
            (None, Some(ip)) => Arc::from(format!("ip:{ip}")),
            (None, None) => Arc::from("anonymous"),
        }
    }

    /// The current message, for a stage that rewrites it. Marks the body for re-serialisation.
    pub fn message_mut(&mut self) -> Option<&mut Message> {
        self.modified = true;
        let current = self.current;
        self.body.as_mut().and_then(|b| b.messages.get_mut(current))
    }

    /// Replaces message `index` (the gateway's own rewrite, such as a hooked request's id) and
    /// marks the body for re-serialisation; returns the message it replaced.
    pub fn replace_message(&mut self, index: usize, message: Message) -> Option<Message> {
        let slot = self.body.as_mut()?.messages.get_mut(index)?;
        self.modified = true;
        Some(std::mem::replace(slot, message))
    }

    /// Whether any stage rewrote a message (the body must then be re-serialised).
    pub fn body_modified(&self) -> bool {
        self.modified
    }

    /// The single message's id, for errors about the whole request.
    pub fn error_id(&self) -> Option<&serde_json::value::RawValue> {
        self.body.as_ref().and_then(ParsedBody::error_id)
    }
}

/// A stage's answer to a request.
pub enum Verdict {
    /// Go on to the next stage.
    Continue,
    /// Refuse: the error is answered to the client; the upstream never sees the request.
    Reject(GatewayError),
    /// Answer locally with this response; the upstream never sees the request.
    Respond(Response),
}

/// A stage's answer to a response message it asked to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVerdict {
    Unchanged,
    /// The stage changed the message; it is re-serialised.
    Modified,
}

/// One step of the pipeline.
pub trait Stage: Send + Sync + 'static {
    /// The stage's name in logs, metrics and audit records.
    fn name(&self) -> &str;

    /// What kind of stage this is: the audit decision for its refusals follows from it.
    fn kind(&self) -> StageKind {
        StageKind::Other(Arc::from(self.name()))
    }

    /// Judges the current message (see [`RequestContext::message`]). Called once per message of
    /// a POST body, and once with no message for GET and DELETE.
    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict>;

    /// Whether this stage wants to see the response to `request` (for example `tools/list` for a
    /// stage that filters lists). Only such responses are parsed; the rest stream untouched.
    fn wants_response(&self, _cx: &RequestContext, _request: &Message) -> bool {
        false
    }

    /// Undoes what [`Stage::on_request`] did to shared state for a request that is not forwarded
    /// after all (a later stage refused it or answered it, its session was unknown): the rate
    /// limit gives its tokens back. Called at most once per request, for every stage that ran.
    fn refund<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Whether [`Stage::wants_response`] can ever be true: then streams that carry responses to
    /// other requests (legacy GET streams) are inspected for them. A stage that overrides
    /// `wants_response` overrides this too.
    fn hooks_responses(&self) -> bool {
        false
    }

    /// Sees (and may rewrite) the JSON-RPC response to a request it asked about.
    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _request: &'a Message,
        _response: &'a mut serde_json::Value,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async { ResponseVerdict::Unchanged })
    }
}

/// The ordered stages of one route.
#[derive(Clone, Default)]
pub struct Pipeline {
    stages: Arc<[Arc<dyn Stage>]>,
    /// Response-only observers (the metrics' tool catalog): asked before the stages, so they
    /// see responses as the upstream sent them. Their `on_request` is never called.
    observers: Arc<[Arc<dyn Stage>]>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.stages.iter().map(|s| s.name()))
            .finish()
    }
}

/// What the request stages decided.
pub enum Outcome {
    Forward,
    Respond(Response),
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        Pipeline {
            stages: stages.into(),
            observers: Arc::new([]),
        }
    }

    /// Adds a response-only observer (see [`Pipeline`]).
    pub fn with_observer(mut self, observer: Arc<dyn Stage>) -> Self {
        let mut observers = self.observers.to_vec();
        observers.push(observer);
        self.observers = observers.into();
        self
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.name().to_string()).collect()
    }

    /// Whether a stage of this kind runs in the pipeline.
    pub fn has(&self, kind: &StageKind) -> bool {
        self.stages.iter().any(|s| s.kind() == *kind)
    }

    /// Runs every stage over every message, in order; the first Reject or Respond ends the run,
    /// and what the stages that ran charged is given back (nothing is charged for a request that
    /// is not forwarded; a batch is forwarded whole or not at all).
    pub async fn on_request(&self, cx: &mut RequestContext) -> Result<Outcome, GatewayError> {
        let started = Instant::now();
        let messages = cx.body.as_ref().map_or(1, |b| b.messages.len());
        for (ran, stage) in self.stages.iter().enumerate() {
            for i in 0..messages {
                cx.current = i;
                let ended = match stage.on_request(cx).await {
                    Verdict::Continue => continue,
                    Verdict::Reject(e) => Err(e),
                    Verdict::Respond(r) => {
                        cx.responded_by = Some(stage.kind());
                        Ok(Outcome::Respond(r))
                    }
                };
                cx.current = 0;
                self.refund_stages(cx, ran + 1).await;
                return ended;
            }
        }
        cx.current = 0;
        cx.timings.stages = started.elapsed();
        Ok(Outcome::Forward)
    }

    /// `result`, after giving back what the stages charged when it is an error: a request that
    /// is not forwarded is not charged.
    pub async fn refunding<T>(
        &self,
        cx: &mut RequestContext,
        result: Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        if result.is_err() {
            self.refund(cx).await;
        }
        result
    }

    /// Gives back what the stages charged for a request that passed them but is not forwarded
    /// after all (its session is unknown, it could not be built).
    pub async fn refund(&self, cx: &mut RequestContext) {
        self.refund_stages(cx, self.stages.len()).await;
    }

    async fn refund_stages(&self, cx: &mut RequestContext, ran: usize) {
        for stage in self.stages.iter().take(ran) {
            stage.refund(cx).await;
        }
    }

    /// Whether any stage (or observer) may ask to see responses: then streams that answer no
    /// request of their own (legacy GET streams, resumed streams) are inspected too.
    pub fn hooks_responses(&self) -> bool {
        self.observers
            .iter()
            .chain(self.stages.iter())
            .any(|s| s.hooks_responses())
    }

    /// The stages (observers first) that want the response to `request`.
    fn interested(&self, cx: &RequestContext, request: &Message) -> Vec<Arc<dyn Stage>> {
        self.observers
            .iter()
            .chain(self.stages.iter())
            .filter(|s| s.wants_response(cx, request))
            .cloned()
            .collect()
    }

    /// The response hooks this request needs. Each request message some stage asked about is
    /// forwarded under an id of the gateway's own ([`HookedId`], sealed by `ids`) instead of the
    /// client's, so its response is recognised by that id alone, whatever the server does to the
    /// spelling of ids and on whichever stream (or replica) the response arrives; the hooks then
    /// give the client back its exact id. Empty hooks mean "stream untouched".
    pub fn hook_requests(
        &self,
        cx: &mut RequestContext,
        ids: &Arc<Sessions>,
    ) -> Result<ResponseHooks, GatewayError> {
        let mut chosen = Vec::new();
        if let Some(body) = &cx.body {
            for (index, msg) in body.messages.iter().enumerate() {
                if !msg.is_request() {
                    continue;
                }
                let stages = self.interested(cx, msg);
                if !stages.is_empty() {
                    chosen.push((index, stages));
                }
            }
        }
        let caller = hooked_caller(cx).to_string();
        let mut wanted = Vec::with_capacity(chosen.len());
        for (index, stages) in chosen {
            let Some(msg) = cx.body.as_ref().and_then(|b| b.messages.get(index)) else {
                continue;
            };
            let claims = HookedId {
                caller: caller.clone(),
                method: msg.method().to_string(),
                target: msg.target.as_deref().map(str::to_string),
                client_id: msg.id.as_deref().map_or("null", RawValue::get).to_string(),
            };
            let token = ids.seal_request_id(&cx.upstream.name, &claims);
            let token_json = RawValue::from_string(format!("\"{token}\""))
                .map_err(|e| GatewayError::Internal(format!("request id: {e}")))?;
            let forwarded = msg
                .with_id(&token_json)
                .map_err(|e| GatewayError::bad_request(e.code, e.message))?;
            let Some(original) = cx.replace_message(index, forwarded) else {
                continue;
            };
            wanted.push(Wanted {
                token,
                request: original,
                stages,
                answered: std::sync::atomic::AtomicBool::new(false),
            });
        }
        Ok(ResponseHooks {
            inspect: !wanted.is_empty(),
            wanted,
            pipeline: self.clone(),
            ids: ids.clone(),
        })
    }

    /// Hooks for a stream that answers no request of its own (a legacy GET stream, or one a
    /// client resumes with `Last-Event-ID`): a response that carries a hooked request's id
    /// ([`HookedId`]) is hooked here too.
    pub fn stream_hooks(&self, ids: &Arc<Sessions>) -> ResponseHooks {
        ResponseHooks {
            inspect: self.hooks_responses(),
            wanted: Vec::new(),
            pipeline: self.clone(),
            ids: ids.clone(),
        }
    }
}

struct Wanted {
    /// The id the request was forwarded under.
    token: String,
    /// The request as the stages saw it, with the client's id.
    request: Message,
    stages: Vec<Arc<dyn Stage>>,
    /// Whether its answer has gone through the hooks.
    answered: std::sync::atomic::AtomicBool,
}

/// The response hooks of one request or stream (see [`Pipeline::hook_requests`]).
pub struct ResponseHooks {
    wanted: Vec<Wanted>,
    /// Whether bodies must be inspected at all.
    inspect: bool,
    /// For responses to requests of other POSTs (they arrive on GET and resumed streams).
    pipeline: Pipeline,
    ids: Arc<Sessions>,
}

/// What [`ResponseHooks::process`] made of one message (or batch) from the upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    /// Answers no hooked request: the upstream's bytes go on as they are.
    Untouched,
    /// Answers hooked requests: the messages after the hooks, with the clients' ids restored.
    Replaced(Vec<u8>),
    /// Must not reach the client: it answers (or may answer) a hooked request but cannot be
    /// inspected (unreadable, an id of ours that does not open, another caller's request).
    Refused(String),
}

/// The members of a message from the upstream that decide whether it may answer a request.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    result: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
}

impl ResponseHooks {
    /// Whether bodies must be read by [`ResponseHooks::process`] (else they stream untouched).
    pub fn inspects(&self) -> bool {
        self.inspect
    }

    /// JSON-RPC error responses, with `message`, for this request's hooked messages whose answers
    /// have not come through yet: what a stream that must end early sends so that the client's
    /// calls fail instead of waiting forever.
    pub fn unanswered_errors(&self, code: i32, message: &str) -> Vec<Vec<u8>> {
        self.wanted
            .iter()
            .filter(|w| !w.answered.load(std::sync::atomic::Ordering::Relaxed))
            .map(|w| crate::mcp::jsonrpc::error_body(w.request.id.as_deref(), code, message, None))
            .collect()
    }

    /// These hooks, inspecting nothing (for responses that can carry no hooked answer).
    pub fn none(mut self) -> Self {
        self.inspect = false;
        self
    }

    /// Runs the hooks on one SSE event's data or one JSON body from the upstream: a message or a
    /// batch of them. Fails closed: what may answer a hooked request but cannot be read is
    /// [`Processed::Refused`], never passed on.
    pub async fn process(&self, cx: &RequestContext, data: &[u8]) -> Processed {
        let Ok(text) = std::str::from_utf8(data) else {
            return Processed::Refused("the upstream's message is not UTF-8".into());
        };
        let text = text.trim();
        if text.is_empty() {
            // An event without data (SSE priming events, keep-alives) answers nothing.
            return Processed::Untouched;
        }
        if !text.starts_with('[') {
            return match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => self.one(cx, raw).await,
                Err(e) => Processed::Refused(format!("the upstream's message is not JSON: {e}")),
            };
        }
        let items = match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => items,
            Err(e) => {
                return Processed::Refused(format!("the upstream's batch is not JSON: {e}"));
            }
        };
        let mut changed = false;
        let mut kept: Vec<String> = Vec::with_capacity(items.len());
        let mut refused = None;
        for item in items {
            match self.one(cx, item).await {
                Processed::Untouched => kept.push(item.get().to_string()),
                Processed::Replaced(bytes) => {
                    changed = true;
                    kept.push(String::from_utf8(bytes).unwrap_or_default());
                }
                Processed::Refused(why) => {
                    changed = true;
                    refused = Some(why);
                }
            }
        }
        match (changed, kept.is_empty(), refused) {
            (false, _, _) => Processed::Untouched,
            (true, true, Some(why)) => Processed::Refused(why),
            _ => Processed::Replaced(format!("[{}]", kept.join(",")).into_bytes()),
        }
    }

    /// [`ResponseHooks::process`] for one message.
    async fn one(&self, cx: &RequestContext, raw: &RawValue) -> Processed {
        let Ok(probe) = serde_json::from_str::<Probe<'_>>(raw.get()) else {
            return Processed::Refused("the upstream's message is not a JSON-RPC object".into());
        };
        if probe.result.is_none() && probe.error.is_none() {
            // Requests and notifications answer nothing.
            return Processed::Untouched;
        }
        // Only ids of ours are hooked: the gateway forwarded every hooked request under one.
        let Some(token) = probe
            .id
            .and_then(|id| serde_json::from_str::<String>(id.get()).ok())
            .filter(|id| id.starts_with(REQUEST_ID_PREFIX))
        else {
            return Processed::Untouched;
        };
        let found;
        let opened;
        let (request, stages): (&Message, &[Arc<dyn Stage>]) =
            match self.wanted.iter().find(|w| w.token == token) {
                Some(w) => {
                    w.answered.store(true, std::sync::atomic::Ordering::Relaxed);
                    (&w.request, &w.stages)
                }
                None => {
                    // The answer to another POST's request (a GET or resumed stream).
                    let Some(claims) = self.ids.open_request_id(&cx.upstream.name, &token) else {
                        return Processed::Refused(
                            "a response under a request id the gateway cannot open".into(),
                        );
                    };
                    if claims.caller != hooked_caller(cx) {
                        return Processed::Refused("a response to another caller's request".into());
                    }
                    let Some(request) = reconstructed(&claims) else {
                        return Processed::Refused("a request id with unusable claims".into());
                    };
                    opened = self.pipeline.interested(cx, &request);
                    found = request;
                    (&found, &opened)
                }
            };
        let Ok(mut message) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
            return Processed::Refused("the upstream's message cannot be read as JSON".into());
        };
        let mut modified = false;
        for stage in stages {
            modified |=
                stage.on_response(cx, request, &mut message).await == ResponseVerdict::Modified;
        }
        let client_id = request.id.as_deref().map_or("null", RawValue::get);
        // Unchanged by the hooks: the upstream's bytes, with only the id given back.
        let out = if modified {
            with_client_id(message, client_id)
        } else {
            crate::mcp::envelope::set_member(raw.get(), "id", client_id)
                .ok()
                .map(String::into_bytes)
        };
        match out {
            Some(bytes) => Processed::Replaced(bytes),
            None => Processed::Refused("a hooked response is no longer a JSON-RPC object".into()),
        }
    }
}

/// Whose hooked request an id is: the authenticated caller, empty without authentication (as
/// legacy sessions are bound).
fn hooked_caller(cx: &RequestContext) -> &str {
    cx.caller.as_ref().map_or("", |c| c.id.as_ref())
}

/// The request a [`HookedId`] stands for, for hooks that see a response away from its POST:
/// method, id and target (name or URI); the arguments are not part of it.
fn reconstructed(claims: &HookedId) -> Option<Message> {
    let mut params = serde_json::Map::new();
    if let Some(target) = &claims.target {
        let key = if claims.method.starts_with("resources/") {
            "uri"
        } else {
            "name"
        };
        params.insert(key.into(), target.clone().into());
    }
    let text = format!(
        r#"{{"jsonrpc":"2.0","id":{},"method":{},"params":{}}}"#,
        claims.client_id,
        serde_json::to_string(&claims.method).ok()?,
        serde_json::Value::Object(params)
    );
    Message::parse(&RawValue::from_string(text).ok()?).ok()
}

/// A response message serialised with `id` (raw JSON) in place of its own.
fn with_client_id(message: serde_json::Value, id: &str) -> Option<Vec<u8>> {
    let serde_json::Value::Object(mut members) = message else {
        return None;
    };
    members.remove("id");
    let rest = serde_json::to_string(&members).ok()?;
    let rest = rest.strip_prefix('{')?;
    let sep = if rest == "}" { "" } else { "," };
    Some(format!("{{\"id\":{id}{sep}{rest}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::ParsedBody;

    struct Deny(&'static str);
    impl Stage for Deny {
        fn name(&self) -> &str {
            "deny"
        }
        fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
            Box::pin(async move {
                match cx.message().and_then(|m| m.target.as_deref()) {
                    Some(t) if t == self.0 => {
                        Verdict::Reject(GatewayError::bad_request(-32012, format!("{t} denied")))
                    }
                    _ => Verdict::Continue,
                }
            })
        }
    }

    struct Upper;
    impl Stage for Upper {
        fn name(&self) -> &str {
            "upper"
        }
        fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
            Box::pin(async move {
                if let Some(m) = cx.message_mut() {
                    let mut v = m.to_value().unwrap();
                    if let Some(name) = v["params"]["name"].as_str() {
                        v["params"]["name"] = name.to_uppercase().into();
                        m.replace(&v).unwrap();
                    }
                }
                Verdict::Continue
            })
        }
        fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
            request.method() == "tools/list"
        }
        fn hooks_responses(&self) -> bool {
            true
        }
        fn on_response<'a>(
            &'a self,
            _cx: &'a RequestContext,
            _request: &'a Message,
            response: &'a mut serde_json::Value,
        ) -> BoxFuture<'a, ResponseVerdict> {
            Box::pin(async move {
                response["result"]["seen"] = true.into();
                ResponseVerdict::Modified
            })
        }
    }

    fn cx(body: &str) -> RequestContext {
        let upstream = Arc::new(Upstream {
            name: "u".into(),
            url: "http://127.0.0.1:1/mcp".parse().unwrap(),
            timeout: Duration::from_secs(1),
            stream_idle_timeout: None,
            credential: None,
            pipeline: None,
        });
        RequestContext::new(
            "req".into(),
            upstream,
            http::Method::POST,
            HeaderMap::new(),
            Some(ParsedBody::parse(body.as_bytes()).unwrap()),
        )
    }

    #[tokio::test]
    async fn every_batch_element_passes_every_stage() {
        let p = Pipeline::new(vec![Arc::new(Upper), Arc::new(Deny("SECRET"))]);
        let mut ok = cx(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                           {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
        );
        assert!(matches!(p.on_request(&mut ok).await, Ok(Outcome::Forward)));
        assert!(ok.body_modified());
        let names: Vec<_> = ok
            .body
            .as_ref()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.target.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["A".into(), "B".into()] as Vec<Arc<str>>);

        // The second element is denied after the first stage rewrote it: the whole batch stops.
        let mut denied = cx(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                               {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret"}}]"#,
        );
        let err = p.on_request(&mut denied).await.err().unwrap();
        assert_eq!(err.to_string(), "SECRET denied");
    }

    fn sessions() -> Arc<Sessions> {
        Arc::new(
            Sessions::new(&crate::config::SessionConfig {
                key: Some([4; 32]),
                ttl: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(60),
                max_active: 10,
            })
            .0,
        )
    }

    /// The id a hooked request was forwarded under.
    fn forwarded_id(cx: &RequestContext, index: usize) -> String {
        let id = cx.body.as_ref().unwrap().messages[index]
            .id
            .clone()
            .unwrap();
        serde_json::from_str(id.get()).unwrap()
    }

    fn replaced(p: Processed) -> serde_json::Value {
        match p {
            Processed::Replaced(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Looks at `tools/list` answers, changes nothing.
    struct Look;
    impl Stage for Look {
        fn name(&self) -> &str {
            "look"
        }
        fn on_request<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
            Box::pin(async { Verdict::Continue })
        }
        fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
            request.method() == "tools/list"
        }
        fn hooks_responses(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn an_answer_the_hooks_leave_alone_keeps_its_bytes() {
        let p = Pipeline::new(vec![Arc::new(Look)]);
        let ids = sessions();
        let mut list = cx(r#"{"jsonrpc":"2.0","id":"\u0031","method":"tools/list"}"#);
        let hooks = p.hook_requests(&mut list, &ids).unwrap();
        let token = forwarded_id(&list, 0);
        let answer = format!(
            r#"{{"jsonrpc":"2.0", "id":"{token}","result":{{"n":123456789012345678901234567890,"x":1.50}}}}"#
        );
        assert_eq!(
            hooks.process(&list, answer.as_bytes()).await,
            Processed::Replaced(
                br#"{"jsonrpc":"2.0","id":"\u0031","result":{"n":123456789012345678901234567890,"x":1.50}}"#.to_vec()
            )
        );
    }

    #[tokio::test]
    async fn hooked_requests_go_out_under_gateway_ids_and_come_back_with_the_clients() {
        let p = Pipeline::new(vec![Arc::new(Upper)]);
        let ids = sessions();
        // An id spelled so that a server re-serialises it differently ("1").
        let mut list = cx(r#"{"jsonrpc":"2.0","id":"\u0031","method":"tools/list"}"#);
        let hooks = p.hook_requests(&mut list, &ids).unwrap();
        assert!(hooks.inspects());
        assert!(list.body_modified());
        let token = forwarded_id(&list, 0);
        assert!(token.starts_with(REQUEST_ID_PREFIX), "{token}");

        // The server answers under the gateway's id: hooked, and the client's exact id is back.
        let answer = format!(r#"{{"jsonrpc":"2.0","id":"{token}","result":{{"tools":[]}}}}"#);
        let out = hooks.process(&list, answer.as_bytes()).await;
        let Processed::Replaced(bytes) = &out else {
            panic!("{out:?}")
        };
        assert!(
            String::from_utf8_lossy(bytes).starts_with(r#"{"id":"\u0031","#),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(replaced(out)["result"]["seen"], true);

        // What answers no hooked request passes untouched: notifications, server requests, other
        // ids (the client's own spelling included: only the gateway's id is trusted), no data.
        for untouched in [
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":"1","result":{"tools":[{"name":"x"}]}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
            "",
            "  ",
        ] {
            assert_eq!(
                hooks.process(&list, untouched.as_bytes()).await,
                Processed::Untouched,
                "{untouched}"
            );
        }
        // Fail closed: what may answer a hooked request but cannot be read never goes on.
        let tampered = format!(r#"{{"jsonrpc":"2.0","id":"{token}x","result":{{}}}}"#);
        for refused in [
            "not json",
            r#"{"jsonrpc":"2.0","id":"mg1r.AAAA","result":{}}"#,
            tampered.as_str(),
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
            "[1, 2",
            "\u{ff}",
        ] {
            assert!(
                matches!(
                    hooks.process(&list, refused.as_bytes()).await,
                    Processed::Refused(_)
                ),
                "{refused}"
            );
        }
        // A batch: the hooked element is rewritten, the others keep their bytes.
        let batch = format!(
            r#"[{{"jsonrpc":"2.0","id":9, "result":{{"a": 1.50}}}},{{"jsonrpc":"2.0","id":"{token}","result":{{"tools":[]}}}}]"#
        );
        let v = replaced(hooks.process(&list, batch.as_bytes()).await);
        assert_eq!(v[1]["id"], "1");
        assert_eq!(v[1]["result"]["seen"], true);
        let Processed::Replaced(bytes) = hooks.process(&list, batch.as_bytes()).await else {
            panic!()
        };
        assert!(
            String::from_utf8_lossy(&bytes)
                .starts_with(r#"[{"jsonrpc":"2.0","id":9, "result":{"a": 1.50}}"#)
        );

        // A stream that answers no request of its own (a GET stream) recognises the same id, and
        // only for the caller the request was made by.
        let get = cx(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let stream = p.stream_hooks(&ids);
        assert!(stream.inspects());
        assert_eq!(
            replaced(stream.process(&get, answer.as_bytes()).await)["id"],
            "1"
        );
        let mut other_caller = cx(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        other_caller.caller = Some(Caller {
            id: "mallory".into(),
            scopes: vec![],
        });
        assert!(matches!(
            stream.process(&other_caller, answer.as_bytes()).await,
            Processed::Refused(_)
        ));

        // Requests no stage asked about keep their ids and their bytes.
        let mut call =
            cx(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        assert!(!p.hook_requests(&mut call, &ids).unwrap().inspects());
        assert!(!call.body_modified());
        assert!(
            !Pipeline::new(vec![Arc::new(Deny("x"))])
                .stream_hooks(&ids)
                .inspects()
        );
    }
}
