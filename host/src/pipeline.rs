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

use crate::config::Upstream;
use crate::error::GatewayError;
use crate::mcp::{Era, Message, ParsedBody};
use crate::session::SessionClaims;

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
    pub responded_by: Option<String>,
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

    /// Judges the current message (see [`RequestContext::message`]). Called once per message of
    /// a POST body, and once with no message for GET and DELETE.
    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict>;

    /// Whether this stage wants to see the response to `request` (for example `tools/list` for a
    /// stage that filters lists). Only such responses are parsed; the rest stream untouched.
    fn wants_response(&self, _cx: &RequestContext, _request: &Message) -> bool {
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

    /// Runs every stage over every message, in order; the first Reject or Respond ends the run.
    pub async fn on_request(&self, cx: &mut RequestContext) -> Result<Outcome, GatewayError> {
        let started = Instant::now();
        let messages = cx.body.as_ref().map_or(1, |b| b.messages.len());
        for stage in self.stages.iter() {
            for i in 0..messages {
                cx.current = i;
                match stage.on_request(cx).await {
                    Verdict::Continue => {}
                    Verdict::Reject(e) => return Err(e),
                    Verdict::Respond(r) => {
                        cx.responded_by = Some(stage.name().to_string());
                        return Ok(Outcome::Respond(r));
                    }
                }
            }
        }
        cx.current = 0;
        cx.timings.stages = started.elapsed();
        Ok(Outcome::Forward)
    }

    /// The response hooks this request needs: for each request message some stage asked about,
    /// its id (as raw JSON text) and the stages that asked. Empty means "stream untouched".
    pub fn response_interest(&self, cx: &RequestContext) -> ResponseHooks {
        let mut wanted = Vec::new();
        if let Some(body) = &cx.body {
            for (index, msg) in body.messages.iter().enumerate() {
                let Some(id) = &msg.id else { continue };
                let stages: Vec<Arc<dyn Stage>> = self
                    .observers
                    .iter()
                    .chain(self.stages.iter())
                    .filter(|s| s.wants_response(cx, msg))
                    .cloned()
                    .collect();
                if !stages.is_empty() {
                    wanted.push(Wanted {
                        id: id.get().to_string(),
                        index,
                        stages,
                    });
                }
            }
        }
        ResponseHooks { wanted }
    }
}

struct Wanted {
    id: String,
    index: usize,
    stages: Vec<Arc<dyn Stage>>,
}

/// The response hooks of one request (see [`Pipeline::response_interest`]).
pub struct ResponseHooks {
    wanted: Vec<Wanted>,
}

impl ResponseHooks {
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Runs the hooks for one JSON-RPC message from the upstream, if it answers a request a
    /// stage asked about. Returns the re-serialised message when a stage modified it.
    pub async fn apply(
        &self,
        cx: &RequestContext,
        message: &mut serde_json::Value,
    ) -> ResponseVerdict {
        let is_response = message.get("result").is_some() || message.get("error").is_some();
        let Some(id) = message.get("id").filter(|_| is_response) else {
            return ResponseVerdict::Unchanged;
        };
        let id_text = id.to_string();
        let Some(w) = self.wanted.iter().find(|w| w.id == id_text) else {
            return ResponseVerdict::Unchanged;
        };
        let Some(request) = cx.body.as_ref().and_then(|b| b.messages.get(w.index)) else {
            return ResponseVerdict::Unchanged;
        };
        let mut verdict = ResponseVerdict::Unchanged;
        for stage in &w.stages {
            if stage.on_response(cx, request, message).await == ResponseVerdict::Modified {
                verdict = ResponseVerdict::Modified;
            }
        }
        verdict
    }

    /// Cheap pre-check on raw SSE data: could this be a response we must hook? Avoids parsing
    /// progress notifications.
    pub fn may_match(&self, data: &[u8]) -> bool {
        !self.wanted.is_empty() && (memfind(data, b"\"result\"") || memfind(data, b"\"error\""))
    }
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
                    let mut v = m.to_value();
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

    #[tokio::test]
    async fn response_hooks_match_by_id_only_where_asked() {
        let p = Pipeline::new(vec![Arc::new(Upper)]);
        let list = cx(r#"{"jsonrpc":"2.0","id":"l1","method":"tools/list"}"#);
        let hooks = p.response_interest(&list);
        assert!(!hooks.is_empty());
        let mut progress =
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}});
        assert_eq!(
            hooks.apply(&list, &mut progress).await,
            ResponseVerdict::Unchanged
        );
        let mut other = serde_json::json!({"jsonrpc":"2.0","id":"l2","result":{}});
        assert_eq!(
            hooks.apply(&list, &mut other).await,
            ResponseVerdict::Unchanged
        );
        let mut mine = serde_json::json!({"jsonrpc":"2.0","id":"l1","result":{"tools":[]}});
        assert_eq!(
            hooks.apply(&list, &mut mine).await,
            ResponseVerdict::Modified
        );
        assert_eq!(mine["result"]["seen"], true);
        assert!(hooks.may_match(br#"{"id":"l1","result":{}}"#));
        assert!(!hooks.may_match(br#"{"method":"notifications/progress"}"#));

        let call = cx(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        assert!(p.response_interest(&call).is_empty());
    }
}
