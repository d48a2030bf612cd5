//! A stdio server as a Streamable HTTP endpoint the gateway forwards to like any other upstream:
//! a listener on 127.0.0.1 (a port the OS picks) that only the gateway may use (every request
//! must carry a random token of this process's own, [`BRIDGE_HEADER`]), in front of the server's
//! processes. The whole pipeline (auth, limits, policy, plugins, sessions, metrics, audit) runs in
//! the gateway as for an HTTP upstream; the bridge only speaks stdio.
//!
//! Sessions map onto processes so that no client ever shares a server's state with another:
//! - **legacy era**: `initialize` starts a process for the session (at most `max_processes` at
//!   once: one more is refused with 503 and a JSON-RPC error saying so); its requests, the GET
//!   stream and DELETE go to that process; DELETE, the process's death or the gateway's shutdown
//!   end it (its client then gets 404 and initializes again). A request is answered as an SSE
//!   stream that carries what the server writes meanwhile (progress, logging, sampling and other
//!   server requests) and ends with the answer; with a GET stream open, server messages go there.
//! - **2026-07-28**: stateless, so one process per route serves every client (each request under
//!   an id of the gateway's own); it is started on first use and started again, after a pause
//!   that doubles with each crash (up to 30 s), when it dies. A request that asks for
//!   progress gets a progress token of the gateway's own, and its progress comes back on its
//!   stream under the client's token; the process's other messages belong to no request and
//!   are not relayed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::child::ChildSpec;
use super::peer::{PeerError, StdioPeer};
pub use crate::loopback::BRIDGE_HEADER;
use crate::loopback::{
    Body, Endpoint, Loopback, empty, json, rpc_error, sse_event, sse_from, sse_response,
};
use crate::mcp::headers::MCP_SESSION_ID;
use crate::mcp::{Era, Message, MessageKind, ParsedBody, jsonrpc};

/// The largest request body the bridge reads (the gateway's own limit applies before it).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The longest pause before the shared process is started again after a crash.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Unexpected process ends within [`CRASH_WINDOW`] that make a crash loop.
pub const CRASH_LOOP_CRASHES: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// A stdio route's state, for the admin API, readiness and `mcpgate_upstream_up`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StdioStatus {
    /// `running` (a process is up), `idle` (none needed yet), `crash_loop` (at least
    /// [`CRASH_LOOP_CRASHES`] unexpected ends in the last [`CRASH_WINDOW`]).
    pub state: &'static str,
    pub processes: usize,
    pub sessions: usize,
    /// Unexpected ends since the gateway started.
    pub crashes: u64,
    pub last_crash: Option<String>,
}

/// Unexpected ends of a route's processes.
#[derive(Default)]
struct Crashes {
    recent: std::collections::VecDeque<Instant>,
    total: u64,
    last: Option<String>,
}

/// What one stdio route runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioRoute {
    pub child: ChildSpec,
    /// Legacy sessions (one process each) at once.
    pub max_processes: usize,
    /// A legacy session unused this long (no request, no open stream) is ended and its process
    /// stopped, so sessions clients abandon do not hold `max_processes`.
    pub idle_timeout: Duration,
}

/// Server messages waiting for a slow client, per stream; past it they are dropped (logged).
const STREAM_BUFFER: usize = 256;

/// A legacy session: its process, and the streams its server messages go to.
struct Session {
    peer: Arc<StdioPeer>,
    sinks: Mutex<Sinks>,
    last_used: Mutex<Instant>,
}

/// Where a session's server messages go: to the request they concern (its progress token), else
/// to the latest request under way (messages during a call belong to it, as the protocol asks),
/// else to the GET stream; with none, they are dropped.
#[derive(Default)]
struct Sinks {
    calls: Vec<CallSink>,
    get: Option<mpsc::Sender<Bytes>>,
    next: u64,
}

struct CallSink {
    key: u64,
    progress_token: Option<String>,
    tx: mpsc::Sender<Bytes>,
}

/// The `params.progressToken` of a progress notification, as JSON text.
fn progress_token_of(message: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(rename = "progressToken", borrow)]
        token: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Note<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    let note: Note<'_> = serde_json::from_slice(message).ok()?;
    Some(note.params?.token?.get().to_string())
}

/// The `params._meta.progressToken` of a request, as JSON text.
fn request_progress_token(message: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Meta<'a> {
        #[serde(rename = "progressToken", borrow)]
        token: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(rename = "_meta", borrow)]
        meta: Option<Meta<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    let r: Request<'_> = serde_json::from_str(message.raw().get()).ok()?;
    Some(r.params?.meta?.token?.get().to_string())
}

impl Session {
    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// Unused for `idle`: no request under way, no GET stream open, none for that long.
    fn idle_for(&self, idle: Duration) -> bool {
        let sinks = self.lock();
        let streams = !sinks.calls.is_empty() || sinks.get.as_ref().is_some_and(|g| !g.is_closed());
        drop(sinks);
        !streams
            && self
                .last_used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed()
                >= idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes one server message (called in the order the server wrote them).
    fn deliver(&self, route: &str, message: Bytes) {
        let mut sinks = self.lock();
        let token = if sinks.calls.is_empty() {
            None
        } else {
            progress_token_of(&message)
        };
        let by_token = token.and_then(|t| {
            sinks
                .calls
                .iter()
                .find(|c| c.progress_token.as_deref() == Some(t.as_str()))
        });
        let target = by_token
            .or(sinks.calls.last())
            .map(|c| c.tx.clone())
            .or_else(|| sinks.get.clone());
        let Some(tx) = target else {
            tracing::debug!(
                route,
                "stdio server message with no client stream open: dropped"
            );
            return;
        };
        match tx.try_send(sse_event(&message)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    route,
                    "a client reads its stream too slowly: a server message was dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                if sinks.get.as_ref().is_some_and(|g| g.same_channel(&tx)) {
                    sinks.get = None;
                }
            }
        }
    }

    /// A request under way: its stream receives the session's server messages meanwhile.
    fn open_call(&self, progress_token: Option<String>, tx: mpsc::Sender<Bytes>) -> u64 {
        let mut sinks = self.lock();
        sinks.next += 1;
        let key = sinks.next;
        sinks.calls.push(CallSink {
            key,
            progress_token,
            tx,
        });
        key
    }

    fn close_call(&self, key: u64) {
        self.lock().calls.retain(|c| c.key != key);
    }
}

/// The shared process of the 2026-07-28 era, and its crash history.
#[derive(Default)]
struct Shared {
    peer: Option<Arc<StdioPeer>>,
    crashes: u32,
    next_start: Option<Instant>,
}

/// One stdio route's bridge.
pub struct Bridge {
    route: StdioRoute,
    loopback: Loopback,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    shared: Mutex<Shared>,
    crashes: Mutex<Crashes>,
    /// 2026-07-28 requests under way that asked for progress: the gateway's token → the
    /// client's token and the request's stream.
    progress: Mutex<HashMap<String, ModernCall>>,
    next_token: std::sync::atomic::AtomicU64,
}

/// A 2026-07-28 request under way on the shared process, for its progress notifications.
struct ModernCall {
    client_token: Box<RawValue>,
    tx: mpsc::Sender<Bytes>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("route", &self.route.child.route)
            .field("url", &self.loopback.url())
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Binds the bridge's listener on 127.0.0.1 and serves it until the bridge is dropped or
    /// [`Bridge::stop`]ped. Needs a tokio runtime.
    pub fn start(route: StdioRoute) -> std::io::Result<Arc<Bridge>> {
        let bridge = Arc::new(Bridge {
            route,
            loopback: Loopback::bind()?,
            sessions: Mutex::new(HashMap::new()),
            shared: Mutex::new(Shared::default()),
            crashes: Mutex::new(Crashes::default()),
            progress: Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
        });
        bridge.loopback.serve(Arc::downgrade(&bridge))?;
        Ok(bridge)
    }

    /// The URL the gateway forwards to.
    pub fn url(&self) -> http::Uri {
        self.loopback.url()
    }

    /// The credential the gateway sends with every request.
    pub fn credential(&self) -> (HeaderName, HeaderValue) {
        self.loopback.credential()
    }

    /// What it runs.
    pub fn route(&self) -> &StdioRoute {
        &self.route
    }

    /// Processes running now (sessions, and the shared one).
    pub fn processes(&self) -> usize {
        let sessions = self.lock_sessions().len();
        let shared = self
            .lock_shared()
            .peer
            .as_ref()
            .is_some_and(|p| !p.ended().is_cancelled());
        sessions + usize::from(shared)
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModernCall>> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A message the shared process wrote on its own: a progress notification for a request
    /// under way goes to that request's stream with the client's token; anything else is
    /// nobody's and dropped.
    fn deliver_progress(&self, message: Bytes) {
        let Some(ours) = progress_token_of(&message) else {
            return;
        };
        let calls = self.lock_progress();
        let Some(call) = calls.get(&ours) else {
            return;
        };
        let restored = std::str::from_utf8(&message)
            .ok()
            .and_then(|t| RawValue::from_string(t.to_string()).ok())
            .and_then(|raw| Message::parse(&raw).ok())
            .and_then(|m| m.with_param(&["progressToken"], &call.client_token).ok());
        if let Some(m) = restored
            && call
                .tx
                .try_send(sse_event(m.raw().get().as_bytes()))
                .is_err()
        {
            tracing::debug!(route = %self.route.child.route, "a progress notification was dropped (slow client)");
        }
    }

    /// Gives a 2026-07-28 request that asks for progress a token of the gateway's own (clients'
    /// tokens may collide on the shared process); `None` when it asks for none.
    fn register_progress(
        &self,
        message: &Message,
        tx: &mpsc::Sender<Bytes>,
    ) -> Option<(Message, String)> {
        let theirs = request_progress_token(message)?;
        let n = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ours = format!("\"mcpgate-p-{n}\"");
        let ours_raw = RawValue::from_string(ours.clone()).ok()?;
        let rewritten = message
            .with_param(&["_meta", "progressToken"], &ours_raw)
            .ok()?;
        let client_token = RawValue::from_string(theirs).ok()?;
        self.lock_progress().insert(
            ours.clone(),
            ModernCall {
                client_token,
                tx: tx.clone(),
            },
        );
        Some((rewritten, ours))
    }

    /// Records a process that ended without being asked to.
    fn crashed(&self, why: String) {
        let mut c = self
            .crashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        c.recent.push_back(now);
        while c.recent.len() > CRASH_LOOP_CRASHES
            || c.recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            c.recent.pop_front();
        }
        c.total += 1;
        c.last = Some(why);
    }

    /// The route's state now.
    pub fn status(&self) -> StdioStatus {
        let c = self
            .crashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let looping = c.recent.len() >= CRASH_LOOP_CRASHES
            && c.recent
                .front()
                .is_some_and(|t| t.elapsed() <= CRASH_WINDOW);
        let processes = self.processes();
        StdioStatus {
            state: if looping {
                "crash_loop"
            } else if processes > 0 {
                "running"
            } else {
                "idle"
            },
            processes,
            sessions: self.lock_sessions().len(),
            crashes: c.total,
            last_crash: c.last.clone(),
        }
    }

    /// Ends the legacy sessions left idle past `idle_timeout` (their processes stop); how many.
    pub fn reap_idle(&self) -> usize {
        let idle = self.route.idle_timeout;
        let mut sessions = self.lock_sessions();
        let before = sessions.len();
        sessions.retain(|_, s| !s.idle_for(idle));
        let reaped = before - sessions.len();
        if reaped > 0 {
            tracing::info!(route = %self.route.child.route, reaped, "stdio sessions idle past idle_timeout ended");
        }
        reaped
    }

    /// Stops serving and ends every process.
    pub fn stop(&self) {
        self.loopback.stop();
        self.lock_sessions().clear();
        self.lock_shared().peer = None;
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn serve(self: Arc<Self>, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let session = request
            .headers()
            .get(&MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match *request.method() {
            Method::POST => {}
            Method::GET => return self.get_stream(session.as_deref()),
            Method::DELETE => {
                let ended = session.and_then(|s| self.lock_sessions().remove(&s));
                return empty(if ended.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                });
            }
            _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
        }
        let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
        };
        let parsed = match ParsedBody::parse(&body) {
            Ok(p) if !p.batch && p.messages.len() == 1 => p,
            Ok(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "stdio routes take one message per request (no batches)",
                );
            }
            Err(e) => {
                return rpc_error(StatusCode::BAD_REQUEST, e.id.as_deref(), e.code, &e.message);
            }
        };
        let message = parsed.messages.into_iter().next().expect("one message");
        self.post(session, message).await
    }

    async fn post(self: Arc<Self>, session: Option<String>, message: Message) -> Response<Body> {
        let id = message.id.clone();
        let unavailable = |why: &str| {
            rpc_error(
                StatusCode::BAD_GATEWAY,
                id.as_deref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                why,
            )
        };
        if message.era == Era::Modern {
            let peer = match self.shared_peer() {
                Ok(p) => p,
                Err(why) => return unavailable(&why),
            };
            return answer(peer, Routing::Modern(self.clone()), message).await;
        }
        if message.method.as_deref() == Some("initialize") {
            return self.initialize(message).await;
        }
        let found = session.and_then(|s| self.lock_sessions().get(&s).cloned());
        if let Some(s) = &found {
            s.touch();
        }
        let Some(s) = found else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                id.as_deref(),
                jsonrpc::SESSION_NOT_FOUND,
                "session not found: initialize again",
            );
        };
        if message.kind == MessageKind::Request {
            answer(s.peer.clone(), Routing::Session(s), message).await
        } else {
            match s.peer.send(&message).await {
                Ok(()) => empty(StatusCode::ACCEPTED),
                Err(e) => unavailable(&e.to_string()),
            }
        }
    }

    /// A legacy `initialize`: a process of its own for the new session.
    async fn initialize(self: Arc<Self>, message: Message) -> Response<Body> {
        let id = message.id.clone();
        if self.lock_sessions().len() >= self.route.max_processes {
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                id.as_deref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &format!(
                    "this stdio server runs at most {} sessions at once (upstreams.{}.max_processes): try again later",
                    self.route.max_processes, self.route.child.route
                ),
            );
        }
        let peer = match StdioPeer::start(&self.route.child) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(route = %self.route.child.route, error = %e, "cannot start the stdio server");
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    id.as_deref(),
                    jsonrpc::UPSTREAM_UNAVAILABLE,
                    "the stdio server could not be started (see the gateway's log)",
                );
            }
        };
        let session = Arc::new(Session {
            peer: peer.clone(),
            sinks: Mutex::new(Sinks::default()),
            last_used: Mutex::new(Instant::now()),
        });
        let weak_session = Arc::downgrade(&session);
        let route = self.route.child.route.clone();
        peer.set_listener(Arc::new(move |m| {
            if let Some(s) = weak_session.upgrade() {
                s.deliver(&route, m);
            }
        }));
        match peer.call(&message).await {
            Ok(answer) => {
                let key: [u8; 16] = rand::random();
                let key = crate::session::hex(&key);
                self.lock_sessions().insert(key.clone(), session);
                // A process that dies ends its session.
                let weak = Arc::downgrade(&self);
                let (ended, k) = (peer.ended().clone(), key.clone());
                let peer_for_why = Arc::downgrade(&peer);
                tokio::spawn(async move {
                    ended.cancelled().await;
                    if let Some(bridge) = weak.upgrade()
                        && bridge.lock_sessions().remove(&k).is_some()
                        && !bridge.loopback.is_stopped()
                    {
                        // Still registered: nobody ended it (DELETE removes it first).
                        let why = peer_for_why
                            .upgrade()
                            .and_then(|p| p.ended_because())
                            .unwrap_or_else(|| "ended".into());
                        bridge.crashed(why);
                    }
                });
                let mut r = json(StatusCode::OK, answer.raw().get().as_bytes().to_vec());
                r.headers_mut().insert(
                    MCP_SESSION_ID,
                    HeaderValue::from_str(&key).expect("hex is a header value"),
                );
                r
            }
            Err(e) => {
                if let PeerError::Ended(why) = &e {
                    self.crashed(why.clone());
                }
                rpc_error(
                    StatusCode::BAD_GATEWAY,
                    id.as_deref(),
                    jsonrpc::UPSTREAM_UNAVAILABLE,
                    &e.to_string(),
                )
            }
        }
    }

    /// The shared process of the 2026-07-28 era, started when there is none (or it died), unless
    /// it is pausing after a crash.
    fn shared_peer(self: &Arc<Self>) -> Result<Arc<StdioPeer>, String> {
        let mut shared = self.lock_shared();
        if let Some(p) = shared.peer.clone() {
            if !p.ended().is_cancelled() {
                return Ok(p);
            }
            shared.crashes += 1;
            let pause = Duration::from_millis(100)
                .saturating_mul(1 << shared.crashes.min(16))
                .min(MAX_BACKOFF);
            shared.next_start = Some(Instant::now() + pause);
            shared.peer = None;
            tracing::warn!(route = %self.route.child.route, crashes = shared.crashes, ?pause, "stdio server died: starting it again after a pause");
        }
        if let Some(at) = shared.next_start
            && Instant::now() < at
        {
            return Err(format!(
                "the stdio server crashed and restarts in {} ms",
                at.saturating_duration_since(Instant::now()).as_millis()
            ));
        }
        let peer = StdioPeer::start(&self.route.child).map_err(|e| {
            tracing::warn!(route = %self.route.child.route, error = %e, "cannot start the stdio server");
            "the stdio server could not be started (see the gateway's log)".to_string()
        })?;
        let weak = Arc::downgrade(self);
        peer.set_listener(Arc::new(move |m| {
            if let Some(bridge) = weak.upgrade() {
                bridge.deliver_progress(m);
            }
        }));
        shared.peer = Some(peer.clone());
        // Its end, unless the gateway asked for it, is a crash (counted for the crash loop).
        let (weak, ended, p) = (
            Arc::downgrade(self),
            peer.ended().clone(),
            Arc::downgrade(&peer),
        );
        tokio::spawn(async move {
            ended.cancelled().await;
            if let Some(bridge) = weak.upgrade()
                && !bridge.loopback.is_stopped()
            {
                let why = p.upgrade().and_then(|p| p.ended_because());
                bridge.crashed(why.unwrap_or_else(|| "ended".into()));
            }
        });
        Ok(peer)
    }

    /// A legacy GET stream: what the session's server writes on its own.
    fn get_stream(&self, session: Option<&str>) -> Response<Body> {
        let Some(s) = session.and_then(|s| self.lock_sessions().get(s).cloned()) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        s.lock().get = Some(tx);
        let ended = s.peer.ended().clone();
        let stream = futures_util::stream::unfold((rx, ended), |(mut rx, ended)| async move {
            let next = tokio::select! {
                m = rx.recv() => m,
                () = ended.cancelled() => None,
            };
            next.map(|m| (Ok::<_, Infallible>(http_body::Frame::data(m)), (rx, ended)))
        });
        sse_response(http_body_util::StreamBody::new(stream).boxed())
    }
}

/// Where a request's server messages go while it runs.
enum Routing {
    /// A legacy session's: the session routes them (see [`Sinks`]).
    Session(Arc<Session>),
    /// The shared 2026-07-28 process: the request's own progress notifications.
    Modern(Arc<Bridge>),
}

/// What a request registered to receive its server messages.
enum Registered {
    Call(u64),
    Token(String),
    Nothing,
}

/// A request's answer as an SSE stream: the server messages that belong to it, written while it
/// runs, then the answer.
async fn answer(peer: Arc<StdioPeer>, routing: Routing, message: Message) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    tokio::spawn(async move {
        // Registered before the request is written, so nothing it causes is missed.
        let (outgoing, registered) = match &routing {
            Routing::Session(s) => {
                let key = s.open_call(request_progress_token(&message), tx.clone());
                (None, Registered::Call(key))
            }
            Routing::Modern(b) => match b.register_progress(&message, &tx) {
                Some((rewritten, ours)) => (Some(rewritten), Registered::Token(ours)),
                None => (None, Registered::Nothing),
            },
        };
        // The client leaving (its stream dropped) drops the call, which cancels it at the
        // server (`notifications/cancelled`, see `StdioPeer::call`).
        let result = tokio::select! {
            result = peer.call(outgoing.as_ref().unwrap_or(&message)) => Some(result),
            () = tx.closed() => None,
        };
        match (&routing, registered) {
            (Routing::Session(s), Registered::Call(key)) => s.close_call(key),
            (Routing::Modern(b), Registered::Token(ours)) => {
                b.lock_progress().remove(&ours);
            }
            _ => {}
        }
        let Some(result) = result else {
            return;
        };
        let text = match result {
            // The answer carries the id of what was sent: the client's.
            Ok(answer) => answer.raw().get().as_bytes().to_vec(),
            Err(e) => jsonrpc::error_body(
                message.id.as_deref(),
                match e {
                    PeerError::Ended(_) => jsonrpc::UPSTREAM_UNAVAILABLE,
                    PeerError::Invalid(_) => jsonrpc::INTERNAL_ERROR,
                },
                &e.to_string(),
                None,
            ),
        };
        let _ = tx.send(sse_event(&text)).await;
    });
    sse_from(rx)
}

impl crate::loopback::Stop for Bridge {
    fn stop(&self) {
        Bridge::stop(self);
    }
}

impl Endpoint for Bridge {
    fn handle(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.serve(request)
    }

    fn tick(&self) {
        self.reap_idle();
    }

    /// Idle sessions are reaped within a quarter of `idle_timeout`.
    fn tick_every(&self) -> Duration {
        (self.route.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A stdio "server": answers initialize and any request with its method, writing a progress
    /// notification before each answer.
    const SERVER: &str = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    token = m.get("params", {}).get("_meta", {}).get("progressToken", 1)
    print(json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "for": m.get("params", {}).get("name")}}), flush=True)
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"method": m["method"]}}), flush=True)
"#;

    fn route(max_processes: usize) -> StdioRoute {
        StdioRoute {
            child: ChildSpec {
                route: "py".into(),
                command: "python3".into(),
                args: vec!["-c".into(), SERVER.into()],
                env: BTreeMap::new(),
                cwd: None,
                max_message_bytes: 1 << 20,
            },
            max_processes,
            idle_timeout: Duration::from_secs(600),
        }
    }

    async fn post(
        bridge: &Bridge,
        token: Option<&str>,
        session: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .post(bridge.url().to_string())
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header(BRIDGE_HEADER.as_str(), t);
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send().await.unwrap()
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

    #[tokio::test]
    async fn legacy_sessions_get_a_process_each_within_the_bound() {
        let bridge = Bridge::start(route(1)).unwrap();
        let token = bridge.credential().1.to_str().unwrap().to_string();
        // Without the token (another local process), nothing.
        assert_eq!(post(&bridge, None, None, INIT).await.status(), 403);
        assert_eq!(post(&bridge, Some("guess"), None, INIT).await.status(), 403);

        let init = post(&bridge, Some(&token), None, INIT).await;
        assert_eq!(init.status(), 200);
        let session = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(init.text().await.unwrap().contains("initialize"));
        assert_eq!(bridge.processes(), 1);

        // A request: its progress, then its answer, on one SSE stream.
        let call = r#"{"jsonrpc":"2.0","id":"c1","method":"tools/list","params":{}}"#;
        let r = post(&bridge, Some(&token), Some(&session), call).await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        let progress = text.find("notifications/progress").expect(&text);
        let result = text.find(r#""id":"c1""#).expect(&text);
        assert!(progress < result, "{text}");

        // The bound: a second session is refused while the first lives.
        let refused = post(&bridge, Some(&token), None, INIT).await;
        assert_eq!(refused.status(), 503);
        assert!(refused.text().await.unwrap().contains("max_processes"));

        // An unknown session is 404; DELETE ends the session and its process.
        let unknown = post(&bridge, Some(&token), Some("nope"), call).await;
        assert_eq!(unknown.status(), 404);
        let deleted = reqwest::Client::new()
            .delete(bridge.url().to_string())
            .header(BRIDGE_HEADER.as_str(), &token)
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
        assert_eq!(
            post(&bridge, Some(&token), Some(&session), call)
                .await
                .status(),
            404
        );
        assert_eq!(post(&bridge, Some(&token), None, INIT).await.status(), 200);
    }

    #[tokio::test]
    async fn a_stopped_bridge_serves_nothing_more_on_open_connections() {
        let bridge = Bridge::start(route(2)).unwrap();
        let token = bridge.credential().1.to_str().unwrap().to_string();
        let client = reqwest::Client::new();
        let init = |c: &reqwest::Client| {
            c.post(bridge.url().to_string())
                .header(BRIDGE_HEADER.as_str(), &token)
                .header("content-type", "application/json")
                .body(INIT)
                .send()
        };
        assert_eq!(init(&client).await.unwrap().status(), 200);
        assert_eq!(bridge.processes(), 1);
        bridge.stop();
        assert_eq!(bridge.processes(), 0);
        // The same (pooled) connection: refused, no process started.
        if let Ok(r) = init(&client).await {
            assert_eq!(r.status(), 503);
        }
        assert_eq!(bridge.processes(), 0);
    }

    #[tokio::test]
    async fn modern_requests_share_one_process() {
        let bridge = Bridge::start(route(4)).unwrap();
        let token = bridge.credential().1.to_str().unwrap().to_string();
        let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        for _ in 0..3 {
            let r = post(&bridge, Some(&token), None, call).await;
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            assert!(text.contains(r#""id":5"#), "{text}");
            // Nothing but the answer: a notification for no request under way is nobody's.
            assert!(!text.contains("progress"), "{text}");
        }
        assert_eq!(bridge.processes(), 1);
        // Two clients that chose the same progress token each get their own progress only,
        // with their token.
        let with_token = |id: u32| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x{id}","_meta":{{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
            )
        };
        let (a, b) = (with_token(41), with_token(42));
        let (a, b) = tokio::join!(
            post(&bridge, Some(&token), None, &a),
            post(&bridge, Some(&token), None, &b)
        );
        for (r, mine, other) in [(a, 41, 42), (b, 42, 41)] {
            let text = r.text().await.unwrap();
            // The progress of this request, not of the other one.
            assert!(text.contains(&format!(r#""for":"x{mine}""#)), "{text}");
            assert_eq!(text.matches("notifications/progress").count(), 1, "{text}");
            assert!(
                text.contains(r#""progressToken":"p""#),
                "the client's token back: {text}"
            );
            assert!(text.contains(&format!(r#""id":{mine}"#)), "{text}");
            assert!(!text.contains(&format!(r#""id":{other}"#)), "{text}");
        }
    }
}
