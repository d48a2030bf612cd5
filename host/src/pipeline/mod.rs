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

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use http::HeaderMap;

use crate::config::Upstream;
use crate::error::{GatewayError, StageKind};
use crate::mcp::{Era, Message, ParsedBody};
use crate::session::SessionClaims;

mod bodies;
mod hooks;
#[cfg(test)]
mod tests;

pub use bodies::{hooked_json, hooked_sse};
pub(crate) use hooks::{AnswerMembers, check_message};
pub use hooks::{Processed, ResponseHooks};

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
    /// The stage changed the message.
    Modified,
    /// The stage cannot judge the message, so it must not reach the client (the reason is
    /// logged).
    Refuse(&'static str),
}

/// What [`Reply::into_parts`] gives back: text, tree, where a hook put the id in its text.
pub(crate) type ReplyParts<'r> = (
    Cow<'r, str>,
    Option<serde_json::Value>,
    Option<std::ops::Range<usize>>,
);

/// A response message as the response hooks see it: the upstream's JSON text, parsed into a
/// tree only when a hook asks for one ([`Reply::tree`]). A hook that works on the text (the
/// policy's list filter reads only entries' names) spares the others a parse and a
/// serialisation of the whole message.
///
/// The text may not be checked yet: the hooks read a message's top level only, and leave a
/// result's inside to be checked by the first hook that reads it ([`Reply::text`] checks it
/// first; a walk that checks as it goes, [`Reply::text_to_walk`], spares that pass), or, when no
/// hook read it, before it goes on. What is not JSON never reaches a hook or the client.
pub struct Reply<'r> {
    text: Cow<'r, str>,
    /// When some hook asked for it: the message, authoritative over `text`.
    tree: Option<serde_json::Value>,
    /// Whether `text` is known to be JSON as `serde_json` reads it.
    checked: bool,
    /// Where in a hook's `text` the message's one top-level `id` value is, when the hook said
    /// ([`Reply::set_text_with_id`]): the client's id goes there without another walk.
    id_at: Option<std::ops::Range<usize>>,
}

impl<'r> Reply<'r> {
    /// A reply whose text is known to be JSON.
    pub fn new(text: &'r str) -> Reply<'r> {
        Reply {
            text: Cow::Borrowed(text),
            tree: None,
            checked: true,
            id_at: None,
        }
    }

    /// A reply whose text is still to be checked ([`check_message`]).
    pub(crate) fn unchecked(text: &'r str) -> Reply<'r> {
        Reply {
            checked: false,
            ..Reply::new(text)
        }
    }

    /// The message as JSON text; `None` when the upstream's text is not JSON.
    pub fn text(&mut self) -> Option<&str> {
        if let Some(tree) = self.tree.take() {
            self.text = Cow::Owned(tree.to_string());
        }
        if !self.checked {
            check_message(&self.text).ok()?;
            self.checked = true;
        }
        Some(&self.text)
    }

    /// The message's text for a walk that checks everything it passes
    /// ([`crate::mcp::scan::Cursor::strict`]), and refuses a repeated `id`, `result` or `error`
    /// at the top level, when the second value says it must; a walk that reached its end calls
    /// [`Reply::walked`].
    pub fn text_to_walk(&mut self) -> (&str, bool) {
        if let Some(tree) = self.tree.take() {
            self.text = Cow::Owned(tree.to_string());
        }
        (&self.text, !self.checked)
    }

    /// A strict walk over [`Reply::text_to_walk`] went through without an error.
    pub fn walked(&mut self) {
        self.checked = true;
    }

    /// The message as a tree to read or change; `None` when the text cannot be one (not JSON, a
    /// number out of range, nesting deeper than the parser goes).
    pub fn tree(&mut self) -> Option<&mut serde_json::Value> {
        self.id_at = None;
        if self.tree.is_none() {
            // A parse reads JSON but keeps the last of repeated members: the check refuses them,
            // as it does for a hook that reads the text.
            if !self.checked {
                check_message(&self.text).ok()?;
                self.checked = true;
            }
            self.tree = Some(serde_json::from_str(&self.text).ok()?);
        }
        self.tree.as_mut()
    }

    /// Replaces the message with `text` (JSON).
    pub fn set_text(&mut self, text: String) {
        self.set_text_with_id(text, None);
    }

    /// Replaces the message with `text` (JSON) whose only top-level `id` member has its value at
    /// `id_at` (`None`: not known).
    pub fn set_text_with_id(&mut self, text: String, id_at: Option<std::ops::Range<usize>>) {
        self.tree = None;
        self.id_at = id_at.filter(|at| text.get(at.clone()).is_some());
        self.text = Cow::Owned(text);
        self.checked = true;
    }

    /// The message's tree, if a hook asked for one, else its text (and where a hook said its id
    /// is); checked first if no hook read it.
    pub(crate) fn into_parts(self) -> Result<ReplyParts<'r>, crate::mcp::scan::ScanError> {
        if !self.checked {
            check_message(&self.text)?;
        }
        Ok((self.text, self.tree, self.id_at))
    }
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
        _response: &'a mut Reply<'_>,
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

    /// Runs only the authentication stages, over no message: what a WebSocket upgrade checks
    /// before it is accepted (every message on the socket then runs the whole pipeline). Charges
    /// nothing.
    pub async fn authenticate(&self, cx: &mut RequestContext) -> Result<(), GatewayError> {
        for stage in self.stages.iter().filter(|s| s.kind() == StageKind::Auth) {
            if let Verdict::Reject(e) = stage.on_request(cx).await {
                return Err(e);
            }
        }
        Ok(())
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
}
