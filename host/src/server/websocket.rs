//! WebSocket clients on the MCP routes.
//!
//! A client may open `/servers/<name>/mcp` as a WebSocket (RFC 6455 over HTTP/1.1, subprotocol
//! `mcp`) and send one JSON-RPC message per text message, as the TypeScript SDK's
//! `WebSocketClientTransport` and the Python SDK 1.x `websocket_client` do. The gateway is the
//! Streamable HTTP client on the socket's behalf: every message becomes one POST through
//! [`super::exchange::serve_mcp`], so the route's whole pipeline applies to it (auth, rate
//! limits, policy, plugins, metrics, audit) and it reaches any upstream kind. The POST carries
//! the upgrade request's headers (the caller's credential), the session the socket's
//! `initialize` opened and its protocol version, or (2026-07-28) the routing headers derived
//! from the message itself. Answers come back as they come: a JSON answer as one message, an SSE
//! answer event by event (progress, server→client requests, then the result). After a legacy
//! `initialize`, a GET stream carries the session's other server messages to the socket.
//!
//! ```text
//!  client ══ text message ══▶ POST (same pipeline) ──▶ upstream
//!         ◀═ text messages ══ JSON answer / SSE events
//!         ◀═ text messages ══ GET stream (legacy session)
//! ```
//!
//! The socket is the session: when it closes, the session is ended (DELETE). Its bounds live in
//! `server.websocket` (message size, idle timeout, ping interval, requests in flight); the
//! connection counts under `server.max_connections` for as long as it is open, and a client
//! that stops reading is dropped after `server.write_timeout` like any other.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as Settings};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame, Utf8Bytes};

use super::Gateway;
use super::gateway::Generation;
use crate::config::WebSocketConfig;
use crate::error::GatewayError;
use crate::mcp::headers::{
    LAST_EVENT_ID, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, encode_value,
};
use crate::mcp::{Era, Message, MessageKind, ParsedBody, jsonrpc, sse};
use crate::pipeline::RequestContext;
use crate::proxy::Peer;

/// The subprotocol of MCP over WebSocket.
const SUBPROTOCOL: &str = "mcp";
/// Messages waiting for the socket's writer; a producer past it waits (the client's reading
/// pace, bounded by `server.write_timeout`, sets the pace upstream).
const OUTBOUND_QUEUE: usize = 64;
/// How long a closing socket waits for its session's DELETE.
const END_SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before a session's GET stream is opened again after it ended.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// The WebSocket clients of one gateway: their tasks (the drain waits for them) and metrics.
pub struct WebSockets {
    tasks: tokio_util::task::TaskTracker,
    open: IntGauge,
    closed: IntCounterVec,
}

impl std::fmt::Debug for WebSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSockets")
            .field("open", &self.open.get())
            .finish_non_exhaustive()
    }
}

impl WebSockets {
    /// `mcpgate_websocket_connections` and `mcpgate_websocket_closed_total{reason}` join
    /// `registry`.
    pub fn new(registry: &Registry) -> WebSockets {
        let open = IntGauge::new(
            "mcpgate_websocket_connections",
            "WebSocket clients connected to MCP routes now",
        )
        .expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "mcpgate_websocket_closed_total",
                "WebSocket connections ended, by reason (client, idle, ping_timeout, too_large, protocol, session_gone, shutdown, write_failed)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for e in EndReason::ALL {
            closed.with_label_values(&[e.as_str()]);
        }
        crate::observability::metrics::register_shared(registry, Box::new(open.clone()));
        crate::observability::metrics::register_shared(registry, Box::new(closed.clone()));
        WebSockets {
            tasks: tokio_util::task::TaskTracker::new(),
            open,
            closed,
        }
    }

    /// WebSocket clients connected now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Resolves when every socket has ended (the drain: they end when the shutdown token is
    /// cancelled, after their requests in flight are answered).
    pub(super) async fn drained(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A connection's slot under `server.max_connections`, put on an upgrade request by the
/// accept loop: the socket holds it after hyper has let the connection go.
#[derive(Clone)]
pub(super) struct HeldSlot {
    _held: Arc<crate::conn::Slot>,
}

impl HeldSlot {
    pub(super) fn new(slot: Arc<crate::conn::Slot>) -> Self {
        HeldSlot { _held: slot }
    }
}

/// Whether a request asks to become a WebSocket (`Upgrade: websocket`).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade on the MCP route `route`: 101 with the socket served on a task
/// of its own, or the refusal (audited and counted like any refused request).
pub(super) async fn upgrade<B>(
    gw: Arc<Gateway>,
    route: &str,
    peer: Peer,
    mut request: http::Request<B>,
) -> Response {
    let generation = gw.current();
    let request_id: Arc<str> = Arc::from(format!("{:032x}", rand::random::<u128>()));
    let mut summary = gw.obs.summary(
        request_id.clone(),
        route,
        Method::GET,
        tracing::Span::none(),
    );
    summary.peer =
        Some(peer.client_ip(request.headers(), &generation.config.server.trusted_proxies));
    let response = match handshake(&gw, &generation, route, &peer, &mut request).await {
        Ok((response, cx)) => {
            summary.identify(&cx);
            response
        }
        Err(refused) => {
            tracing::debug!(route, error = %refused.error, "WebSocket upgrade refused");
            summary.failed(&refused.error);
            let version_only = refused.version_only;
            let mut response = refused.error.into_response(None);
            if version_only {
                *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
                response.headers_mut().insert(
                    HeaderName::from_static("sec-websocket-version"),
                    HeaderValue::from_static("13"),
                );
            }
            response
        }
    };
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(crate::proxy::X_REQUEST_ID, v);
    }
    gw.obs.finish(summary, response)
}

/// Why an upgrade was refused; `version_only`: the client speaks another WebSocket version
/// (426 with the one the gateway speaks).
struct Refused {
    error: GatewayError,
    version_only: bool,
}

impl From<GatewayError> for Refused {
    fn from(error: GatewayError) -> Self {
        Refused {
            error,
            version_only: false,
        }
    }
}

fn bad_handshake(message: impl Into<String>) -> Refused {
    GatewayError::bad_request(jsonrpc::INVALID_REQUEST, message).into()
}

/// The checks of an upgrade, in order: the feature, the route, the handshake (RFC 6455 §4.2),
/// the subprotocol, `Origin`, the caller (the route's auth stages, so a refused caller gets
/// its 401 and `WWW-Authenticate` before any socket exists). Then the socket is spawned.
async fn handshake<B>(
    gw: &Arc<Gateway>,
    generation: &Arc<Generation>,
    route: &str,
    peer: &Peer,
    request: &mut http::Request<B>,
) -> Result<(Response, Box<RequestContext>), Refused> {
    let config = &generation.config;
    let settings = config.server.websocket.clone();
    if !settings.enabled {
        return Err(bad_handshake(
            "WebSocket connections are turned off on this gateway (server.websocket.enabled)",
        ));
    }
    let upstream = config
        .upstream(route)
        .cloned()
        .ok_or_else(|| GatewayError::UnknownServer(route.to_string()))?;
    let headers = request.headers();
    if request.version() != http::Version::HTTP_11 {
        return Err(bad_handshake(format!(
            "a WebSocket opens over HTTP/1.1; this request is {:?}",
            request.version()
        )));
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(bad_handshake(
            "a WebSocket upgrade needs `Connection: Upgrade`",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused {
            error: GatewayError::bad_request(
                jsonrpc::INVALID_REQUEST,
                "the gateway speaks WebSocket version 13 (Sec-WebSocket-Version)",
            ),
            version_only: true,
        });
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(k.as_bytes())
                .is_ok_and(|d| d.len() == 16)
        })
        .ok_or_else(|| {
            bad_handshake("`Sec-WebSocket-Key` must be 16 random bytes in base64 (RFC 6455)")
        })?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return Err(bad_handshake(format!(
            "this route speaks the WebSocket subprotocol `{SUBPROTOCOL}`; the client offered {}",
            offered.join(", ")
        )));
    }
    let subprotocol = !offered.is_empty();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        if !config.server.allowed_origins.allows(origin) {
            return Err(GatewayError::OriginForbidden(origin.to_string()).into());
        }
    }
    let mut template = template(headers);
    if let Some(param) = &settings.query_token {
        query_credential(&mut template, request.uri().query(), param, config);
    }
    let mut cx = Box::new(RequestContext::new(
        Arc::from(""),
        upstream.clone(),
        Method::GET,
        template.clone(),
        None,
    ));
    generation
        .pipeline(route)
        .authenticate(&mut cx)
        .await
        .map_err(Refused::from)?;
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(bad_handshake(
            "this connection cannot be upgraded to a WebSocket",
        ));
    };
    let slot = request.extensions_mut().remove::<HeldSlot>();
    let shared = Shared {
        gw: gw.clone(),
        route: upstream.name.clone(),
        path: request.uri().path().to_string(),
        peer: peer.clone(),
        template,
        max_inspected: config.server.max_inspected_bytes,
    };
    let caller = cx.caller.as_ref().map(|c| c.id.to_string());
    gw.websockets.tasks.spawn(async move {
        let _slot = slot;
        let io = match on_upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
                return;
            }
        };
        let ws_settings = Settings::default()
            .max_message_size(Some(settings.max_message_bytes))
            .max_frame_size(Some(settings.max_message_bytes));
        let ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(io),
            Role::Server,
            Some(ws_settings),
        )
        .await;
        let shared = Arc::new(shared);
        let sockets = &shared.gw.websockets;
        sockets.open.inc();
        tracing::debug!(route = %shared.route, caller = ?caller, "WebSocket opened");
        let ended = Socket::new(shared.clone(), settings).run(ws).await;
        tracing::debug!(route = %shared.route, reason = ended.as_str(), "WebSocket closed");
        let sockets = &shared.gw.websockets;
        sockets.open.dec();
        sockets.closed.with_label_values(&[ended.as_str()]).inc();
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok((response, cx))
}

/// The upgrade request's headers that every message's POST carries: the caller's credential,
/// `User-Agent`, `X-Forwarded-*`, trace context. Not what belongs to the handshake or to one
/// message (the request id, the session, routing headers, content negotiation); `Origin` was
/// checked at the upgrade.
fn template(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::ACCEPT,
        header::ORIGIN,
        MCP_SESSION_ID,
        MCP_PROTOCOL_VERSION,
        MCP_METHOD,
        MCP_NAME,
        LAST_EVENT_ID,
        crate::proxy::X_REQUEST_ID,
    ] {
        out.remove(name);
    }
    let params: Vec<HeaderName> = out
        .keys()
        .filter(|k| k.as_str().starts_with("mcp-param-"))
        .cloned()
        .collect();
    for name in params {
        out.remove(name);
    }
    out
}

/// `server.websocket.query_token`: the credential from the upgrade URL's query parameter
/// `param`, put where the route's auth reads it (`Authorization: Bearer`, or the API-key
/// header). A credential in a header wins; without `auth:` there is nothing to carry.
fn query_credential(
    template: &mut HeaderMap,
    query: Option<&str>,
    param: &str,
    config: &crate::config::Config,
) {
    let Some(auth) = &config.auth else {
        return;
    };
    let header = auth.credential_header();
    if template.contains_key(&header) {
        return;
    }
    let Some(value) = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.into_owned())
    }) else {
        return;
    };
    let value = if header == header::AUTHORIZATION {
        format!("Bearer {value}")
    } else {
        value
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        template.insert(header, v);
    }
}

/// What every task of one socket shares.
struct Shared {
    gw: Arc<Gateway>,
    route: Arc<str>,
    /// The upgrade's path, for the requests the socket makes.
    path: String,
    peer: Peer,
    template: HeaderMap,
    /// `server.max_inspected_bytes` at the upgrade: the largest answer held to become one
    /// WebSocket message.
    max_inspected: usize,
}

/// The legacy session a socket's `initialize` opened.
#[derive(Clone, Default)]
struct Session {
    id: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

/// What the socket's writer sends.
enum Out {
    Text(Utf8Bytes),
    Ping,
    Close(Option<CloseFrame>),
}

/// Why a socket ended, for `mcpgate_websocket_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    /// The client closed it or went away.
    Client,
    /// `server.websocket.idle_timeout` passed without a message.
    Idle,
    /// Two ping intervals without a frame from the client.
    PingTimeout,
    /// A message over `server.websocket.max_message_bytes`.
    TooLarge,
    /// A binary message, bad UTF-8, a broken frame.
    Protocol,
    /// The session (or the route) is gone: the client connects again.
    SessionGone,
    /// The gateway is draining.
    Shutdown,
    /// The client accepted nothing for `server.write_timeout` (or the connection broke).
    WriteFailed,
}

impl EndReason {
    const ALL: [EndReason; 8] = [
        EndReason::Client,
        EndReason::Idle,
        EndReason::PingTimeout,
        EndReason::TooLarge,
        EndReason::Protocol,
        EndReason::SessionGone,
        EndReason::Shutdown,
        EndReason::WriteFailed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::Idle => "idle",
            EndReason::PingTimeout => "ping_timeout",
            EndReason::TooLarge => "too_large",
            EndReason::Protocol => "protocol",
            EndReason::SessionGone => "session_gone",
            EndReason::Shutdown => "shutdown",
            EndReason::WriteFailed => "write_failed",
        }
    }
}

/// What a message's exchange learned.
struct Answered {
    /// The answer was to `initialize`: its session and protocol version.
    initialize: bool,
    session: Session,
    /// A 404: the session or the route is gone.
    gone: bool,
}

/// One open socket: the reading loop, the tasks of its messages, its session.
struct Socket {
    shared: Arc<Shared>,
    settings: WebSocketConfig,
    out: mpsc::Sender<Out>,
    outbox: Option<mpsc::Receiver<Out>>,
    session: Session,
    /// Requests awaiting their answers (bounded by `max_in_flight`).
    requests: JoinSet<Answered>,
    /// Notifications and responses being delivered (reading pauses at `max_in_flight`).
    others: JoinSet<Answered>,
    /// An `initialize` is in flight: later messages wait for its session.
    initializing: bool,
    /// The session's GET stream.
    listening: Option<tokio::task::JoinHandle<()>>,
    closing: bool,
}

impl Socket {
    fn new(shared: Arc<Shared>, settings: WebSocketConfig) -> Socket {
        let (out, outbox) = mpsc::channel(OUTBOUND_QUEUE);
        Socket {
            shared,
            settings,
            out,
            outbox: Some(outbox),
            session: Session::default(),
            requests: JoinSet::new(),
            others: JoinSet::new(),
            initializing: false,
            listening: None,
            closing: false,
        }
    }

    /// Serves the socket until it ends; then ends its session.
    async fn run<S>(mut self, ws: WebSocketStream<S>) -> EndReason
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, mut frames) = ws.split();
        let outbox = self.outbox.take().expect("run once");
        let mut writer = tokio::spawn(write(sink, outbox));
        let mut writer_done = false;
        let shutdown = self.shared.gw.shutdown_token();
        let every = self.settings.ping_interval;
        let mut pings = tokio::time::interval_at(Instant::now() + every, every);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let idle = tokio::time::sleep(self.settings.idle_timeout);
        tokio::pin!(idle);
        let ended = loop {
            let reading = !self.initializing && self.others.len() < self.settings.max_in_flight;
            let quiet = self.requests.is_empty() && self.others.is_empty();
            tokio::select! {
                () = shutdown.cancelled() => break EndReason::Shutdown,
                _ = &mut writer => {
                    writer_done = true;
                    break EndReason::WriteFailed;
                }
                frame = frames.next(), if reading => {
                    last_heard = Instant::now();
                    match frame {
                        None | Some(Ok(Frame::Close(_))) => break EndReason::Client,
                        Some(Err(e)) => break self.read_failed(e).await,
                        Some(Ok(Frame::Text(text))) => {
                            idle.as_mut().reset(Instant::now() + self.settings.idle_timeout);
                            self.message(text).await;
                        }
                        Some(Ok(Frame::Binary(_))) => {
                            self.close(CloseCode::Unsupported, "binary messages are not MCP: send JSON-RPC as text").await;
                            break EndReason::Protocol;
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                    idle.as_mut().reset(Instant::now() + self.settings.idle_timeout);
                    if let Some(ended) = self.answered(done).await {
                        break ended;
                    }
                }
                Some(done) = self.others.join_next(), if !self.others.is_empty() => {
                    if let Some(ended) = self.answered(done).await {
                        break ended;
                    }
                }
                _ = pings.tick() => {
                    if !reading {
                        // Frames wait unread: silence says nothing about the client.
                        last_heard = Instant::now();
                    }
                    if last_heard.elapsed() >= every * 2 {
                        break EndReason::PingTimeout;
                    }
                    // A full queue means the client is slow to read; the write timeout judges it.
                    let _ = self.out.try_send(Out::Ping);
                }
                () = &mut idle, if quiet => {
                    self.close(CloseCode::Normal, "idle for server.websocket.idle_timeout").await;
                    break EndReason::Idle;
                }
            }
        };
        if ended == EndReason::Shutdown {
            // The drain: nothing more is read, what is in flight is answered (the drain's
            // `server.shutdown_timeout` bounds the wait), then the client is told to go.
            while let Some(done) = self.requests.join_next().await {
                self.answered(done).await;
            }
            while self.others.join_next().await.is_some() {}
            self.close(CloseCode::Away, "the gateway is shutting down")
                .await;
        }
        if let Some(listening) = self.listening.take() {
            listening.abort();
        }
        self.requests.shutdown().await;
        self.others.shutdown().await;
        if !self.closing {
            let _ = self.out.try_send(Out::Close(None));
        }
        drop(self.out);
        if !writer_done {
            let _ = tokio::time::timeout(END_SESSION_TIMEOUT, &mut writer).await;
            writer.abort();
        }
        let session = std::mem::take(&mut self.session);
        self.shared.end_session(session).await;
        ended
    }

    /// A close frame to the client (the writer ends after it).
    async fn close(&mut self, code: CloseCode, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_string()),
        };
        let _ = self.out.send(Out::Close(Some(frame))).await;
    }

    /// A frame could not be read: why, told to the client where it can still hear it.
    async fn read_failed(&mut self, e: WsError) -> EndReason {
        match e {
            WsError::Capacity(_) => {
                let reason = format!(
                    "a message is larger than server.websocket.max_message_bytes ({} bytes)",
                    self.settings.max_message_bytes
                );
                self.close(CloseCode::Size, &reason).await;
                EndReason::TooLarge
            }
            WsError::Utf8(_) => {
                self.close(CloseCode::Invalid, "a text message is not UTF-8")
                    .await;
                EndReason::Protocol
            }
            // The client went away without a close frame (killed, network gone).
            WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => EndReason::Client,
            WsError::Protocol(p) => {
                tracing::debug!(error = %p, "WebSocket protocol error");
                self.close(CloseCode::Protocol, "WebSocket protocol error")
                    .await;
                EndReason::Protocol
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => {
                EndReason::Client
            }
            other => {
                tracing::debug!(error = %other, "WebSocket read failed");
                EndReason::Protocol
            }
        }
    }

    /// One text message from the client: its exchange starts on a task of its own.
    async fn message(&mut self, text: Utf8Bytes) {
        let body = Bytes::from(text);
        let parsed = ParsedBody::parse(&body);
        let msg = match &parsed {
            Ok(p) if p.batch => {
                self.error(
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "one JSON-RPC message per WebSocket message: batches are not accepted here",
                )
                .await;
                return;
            }
            Ok(p) => p.messages.first(),
            // The exchange answers it (-32700, -32600), audited like any bad request.
            Err(_) => None,
        };
        let request_kind = msg.is_some_and(|m| m.kind == MessageKind::Request);
        let id = msg.and_then(|m| m.id.clone());
        let initialize = msg.is_some_and(|m| {
            m.kind == MessageKind::Request && m.era == Era::Legacy && m.method() == "initialize"
        });
        if request_kind && self.requests.len() >= self.settings.max_in_flight {
            let message = format!(
                "{} requests on this WebSocket are awaiting answers (server.websocket.max_in_flight); wait for one",
                self.settings.max_in_flight
            );
            self.error(id.as_deref(), jsonrpc::TOO_MANY_IN_FLIGHT, &message)
                .await;
            return;
        }
        let session = (!initialize).then_some(&self.session);
        let request = self.shared.request(Method::POST, body, msg, session);
        let task = self
            .shared
            .clone()
            .exchange(request, id, initialize, self.out.clone());
        if initialize {
            self.initializing = true;
        }
        if request_kind {
            self.requests.spawn(task);
        } else {
            self.others.spawn(task);
        }
    }

    /// A message's exchange ended: an `initialize` opens the socket's session (and its GET
    /// stream); a 404 ends the socket.
    async fn answered(
        &mut self,
        done: Result<Answered, tokio::task::JoinError>,
    ) -> Option<EndReason> {
        let answered = match done {
            Ok(a) => a,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(route = %self.shared.route, "a WebSocket message's task panicked");
                }
                return None;
            }
        };
        if answered.initialize {
            self.initializing = false;
            if answered.session.id.is_some() {
                if let Some(listening) = self.listening.take() {
                    listening.abort();
                }
                // A second `initialize` on one socket: its first session ends here, not at
                // the session's idle timeout.
                let replaced = std::mem::replace(&mut self.session, answered.session);
                tokio::spawn(self.shared.clone().end_session_owned(replaced));
                let listen = self
                    .shared
                    .clone()
                    .listen(self.session.clone(), self.out.clone());
                self.listening = Some(tokio::spawn(listen));
            }
        }
        if answered.gone {
            self.close(
                CloseCode::Normal,
                "the MCP session or the route is gone: connect again",
            )
            .await;
            return Some(EndReason::SessionGone);
        }
        None
    }

    /// An error the socket answers itself (the message never became a request).
    async fn error(&self, id: Option<&RawValue>, code: i32, message: &str) {
        let body = jsonrpc::error_body(id, code, message, None);
        if let Ok(text) = Utf8Bytes::try_from(Bytes::from(body)) {
            let _ = self.out.send(Out::Text(text)).await;
        }
    }
}

/// The socket's writer: sends what the socket's tasks queue, in order, until a close frame or
/// a failed write (a client that stopped reading fails here after `server.write_timeout`).
async fn write<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Frame>,
    mut outbox: mpsc::Receiver<Out>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(out) = outbox.recv().await {
        let (frame, last) = match out {
            Out::Text(text) => (Frame::Text(text), false),
            Out::Ping => (Frame::Ping(Bytes::new()), false),
            Out::Close(frame) => (Frame::Close(frame), true),
        };
        if let Err(e) = sink.send(frame).await {
            tracing::debug!(error = %e, "WebSocket write failed");
            return;
        }
        if last {
            break;
        }
    }
    let _ = sink.close().await;
}

impl Shared {
    /// The request a message (or the session's GET, or its DELETE) becomes.
    fn request(
        &self,
        method: Method,
        body: Bytes,
        msg: Option<&Message>,
        session: Option<&Session>,
    ) -> http::Request<Full<Bytes>> {
        let mut headers = self.template.clone();
        match method {
            Method::POST => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_static("application/json, text/event-stream"),
                );
            }
            Method::GET => {
                headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_static("text/event-stream"),
                );
            }
            _ => {}
        }
        match msg {
            Some(m) if m.era == Era::Modern => {
                // 2026-07-28: stateless, and the routing headers mirror the message.
                if let Some(v) = m
                    .protocol_version
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    headers.insert(MCP_PROTOCOL_VERSION, v);
                }
                if m.kind != MessageKind::Response {
                    headers.insert(MCP_METHOD, encode_value(m.method()));
                    if let Some(target) = &m.target {
                        headers.insert(MCP_NAME, encode_value(target));
                    }
                }
            }
            _ => {
                if let Some(s) = session {
                    if let Some(id) = &s.id {
                        headers.insert(MCP_SESSION_ID, id.clone());
                    }
                    if let Some(v) = &s.version {
                        headers.insert(MCP_PROTOCOL_VERSION, v.clone());
                    }
                }
            }
        }
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = method;
        if let Ok(uri) = self.path.parse() {
            *request.uri_mut() = uri;
        }
        *request.headers_mut() = headers;
        request
    }

    /// Ends `session` upstream (DELETE through the route), if there is one; bounded in time.
    async fn end_session(&self, session: Session) {
        if session.id.is_none() {
            return;
        }
        let request = self.request(Method::DELETE, Bytes::new(), None, Some(&session));
        let end =
            super::exchange::serve_mcp(self.gw.clone(), &self.route, self.peer.clone(), request);
        if tokio::time::timeout(END_SESSION_TIMEOUT, end)
            .await
            .is_err()
        {
            tracing::debug!(route = %self.route, "a WebSocket's session did not end in time");
        }
    }

    async fn end_session_owned(self: Arc<Self>, session: Session) {
        self.end_session(session).await;
    }

    /// One message's exchange through the route, its answer relayed to the socket.
    async fn exchange(
        self: Arc<Self>,
        request: http::Request<Full<Bytes>>,
        id: Option<Box<RawValue>>,
        initialize: bool,
        out: mpsc::Sender<Out>,
    ) -> Answered {
        let response =
            super::exchange::serve_mcp(self.gw.clone(), &self.route, self.peer.clone(), request)
                .await;
        let mut answered = Answered {
            initialize,
            session: Session::default(),
            gone: response.status() == StatusCode::NOT_FOUND,
        };
        if initialize && response.status().is_success() {
            answered.session.id = response.headers().get(MCP_SESSION_ID).cloned();
        }
        let mut relay = Relay::new(&out, id.as_deref(), initialize, self.max_inspected);
        relay.response(response).await;
        if id.is_some() && !relay.answered && relay.open {
            relay
                .error(
                    jsonrpc::UPSTREAM_UNAVAILABLE,
                    "the upstream's answer ended before it carried the response to this request",
                )
                .await;
        }
        answered.session.version = relay.version.take();
        answered
    }

    /// The session's GET stream, relayed to the socket; opened again (with `Last-Event-ID`)
    /// when it ends, until the socket ends or the upstream offers none.
    async fn listen(self: Arc<Self>, session: Session, out: mpsc::Sender<Out>) {
        let mut last_event: Option<HeaderValue> = None;
        loop {
            let mut request = self.request(Method::GET, Bytes::new(), None, Some(&session));
            if let Some(id) = &last_event {
                request.headers_mut().insert(LAST_EVENT_ID, id.clone());
            }
            let response = super::exchange::serve_mcp(
                self.gw.clone(),
                &self.route,
                self.peer.clone(),
                request,
            )
            .await;
            if response.status() != StatusCode::OK || !sse::is_event_stream(response.headers()) {
                tracing::debug!(
                    route = %self.route,
                    status = response.status().as_u16(),
                    "no GET stream for this WebSocket's session"
                );
                return;
            }
            let mut relay = Relay::new(&out, None, false, self.max_inspected);
            relay.response(response).await;
            if let Some(id) = relay.last_event_id.take() {
                last_event = Some(id);
            }
            if !relay.open || self.gw.is_draining() {
                return;
            }
            tokio::time::sleep(REOPEN_PAUSE).await;
        }
    }
}

/// An answer on its way to the socket: JSON as one message (or one per batch entry), SSE event
/// by event; whether it carried the response to the request it answers.
struct Relay<'a> {
    out: &'a mpsc::Sender<Out>,
    id: Option<&'a RawValue>,
    initialize: bool,
    limit: usize,
    /// The response to `id` went by.
    answered: bool,
    /// The socket still takes messages.
    open: bool,
    /// `initialize`'s negotiated protocol version.
    version: Option<HeaderValue>,
    last_event_id: Option<HeaderValue>,
}

impl<'a> Relay<'a> {
    fn new(
        out: &'a mpsc::Sender<Out>,
        id: Option<&'a RawValue>,
        initialize: bool,
        limit: usize,
    ) -> Self {
        Relay {
            out,
            id,
            initialize,
            limit,
            answered: false,
            open: true,
            version: None,
            last_event_id: None,
        }
    }

    async fn response(&mut self, response: Response) {
        let status = response.status();
        let sse = sse::is_event_stream(response.headers());
        let body = response.into_body();
        if sse {
            self.events(body).await;
            return;
        }
        match http_body_util::Limited::new(body, self.limit)
            .collect()
            .await
        {
            Ok(collected) => self.json(collected.to_bytes(), status).await,
            Err(e) => {
                let message = if e.is::<http_body_util::LengthLimitError>() {
                    format!(
                        "the answer is larger than server.max_inspected_bytes ({} bytes), the largest message a WebSocket client is sent",
                        self.limit
                    )
                } else {
                    format!("the upstream's answer broke off: {e}")
                };
                self.error(jsonrpc::UPSTREAM_UNINSPECTABLE, &message).await;
            }
        }
    }

    /// An SSE answer: each event's data is one message.
    async fn events(&mut self, mut body: Body) {
        let mut splitter = sse::EventSplitter::default();
        while self.open {
            let chunk = match body.frame().await {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "an SSE answer for a WebSocket broke off");
                    break;
                }
            };
            splitter.push(&chunk);
            while let Some(event) = splitter.next_event() {
                if let Some(id) =
                    sse::event_id(&event).and_then(|id| HeaderValue::from_bytes(id).ok())
                {
                    self.last_event_id = Some(id);
                }
                if let Some(data) = sse::event_data(&event)
                    && !data.is_empty()
                {
                    self.message(Bytes::from(data)).await;
                }
            }
            if splitter.pending() > self.limit {
                let message = format!(
                    "an event of the answer is larger than server.max_inspected_bytes ({} bytes), the largest message a WebSocket client is sent",
                    self.limit
                );
                self.error(jsonrpc::UPSTREAM_UNINSPECTABLE, &message).await;
                return;
            }
        }
    }

    /// A JSON answer: one message, or a batch's entries one by one; an empty body (202) is
    /// nothing to send.
    async fn json(&mut self, bytes: Bytes, status: StatusCode) {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        match first {
            None => {}
            Some(b'{') => self.message(bytes).await,
            Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(&bytes) {
                Ok(items) => {
                    for item in items {
                        self.message(Bytes::copy_from_slice(item.get().as_bytes()))
                            .await;
                    }
                }
                Err(_) => self.not_json(status).await,
            },
            Some(_) => self.not_json(status).await,
        }
    }

    async fn not_json(&mut self, status: StatusCode) {
        let message = format!(
            "the upstream answered HTTP {} with a body that is not JSON-RPC",
            status.as_u16()
        );
        self.error(jsonrpc::UPSTREAM_UNAVAILABLE, &message).await;
    }

    /// One JSON-RPC message to the client; noted when it is the response this relay waits for.
    async fn message(&mut self, bytes: Bytes) {
        #[derive(serde::Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
            method: Option<serde::de::IgnoredAny>,
            #[serde(borrow)]
            result: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Initialized<'a> {
            #[serde(rename = "protocolVersion", borrow)]
            protocol_version: std::borrow::Cow<'a, str>,
        }
        let Ok(peek) = serde_json::from_slice::<Peek>(&bytes) else {
            tracing::debug!("an upstream message for a WebSocket is not JSON-RPC: dropped");
            return;
        };
        if peek.method.is_none()
            && let (Some(id), Some(want)) = (peek.id, self.id)
            && id.get() == want.get()
        {
            self.answered = true;
            if self.initialize
                && let Some(result) = peek.result
                && let Ok(init) = serde_json::from_str::<Initialized>(result.get())
            {
                self.version = HeaderValue::from_str(&init.protocol_version).ok();
            }
        }
        let Ok(text) = Utf8Bytes::try_from(bytes) else {
            tracing::debug!("an upstream message for a WebSocket is not UTF-8: dropped");
            return;
        };
        if self.out.send(Out::Text(text)).await.is_err() {
            self.open = false;
        }
    }

    /// An error for the request this relay answers (nothing when it has no id).
    async fn error(&mut self, code: i32, message: &str) {
        let Some(id) = self.id else {
            tracing::debug!(message, "a WebSocket server message was dropped");
            return;
        };
        let body = jsonrpc::error_body(Some(id), code, message, None);
        self.answered = true;
        if let Ok(text) = Utf8Bytes::try_from(Bytes::from(body))
            && self.out.send(Out::Text(text)).await.is_err()
        {
            self.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn upgrade_requests_are_recognised_by_token() {
        assert!(is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(is_upgrade(&headers(&[("upgrade", "h2c, WebSocket")])));
        assert!(!is_upgrade(&headers(&[("upgrade", "h2c")])));
        assert!(!is_upgrade(&headers(&[("upgrade", "websockets")])));
        assert!(!is_upgrade(&HeaderMap::new()));
    }

    #[test]
    fn the_template_keeps_the_caller_and_drops_what_belongs_to_one_message() {
        let t = template(&headers(&[
            ("authorization", "Bearer abc"),
            ("x-api-key", "k"),
            ("user-agent", "sdk"),
            ("x-forwarded-for", "10.0.0.1"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "mcp"),
            ("mcp-session-id", "forged"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "x"),
            ("mcp-param-region", "eu"),
            ("x-request-id", "same-for-every-message"),
            ("origin", "http://localhost"),
            ("content-length", "0"),
        ]));
        let mut kept: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "authorization",
                "user-agent",
                "x-api-key",
                "x-forwarded-for"
            ]
        );
    }

    fn config(yaml: &str) -> crate::config::Config {
        let env = |name: &str| (name == "WS_TEST_KEY").then(|| "0123456789abcdef".to_string());
        crate::config::Config::parse(yaml, "t.yaml", &env).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_query_token_goes_where_the_routes_auth_reads_it() {
        let api_key = config(
            "auth:\n  type: api-key\n  keys:\n    - {id: a, key_env: WS_TEST_KEY}\nupstreams:\n  x: {url: \"http://127.0.0.1:1/mcp\"}\n",
        );
        let mut t = HeaderMap::new();
        query_credential(&mut t, Some("a=1&token=s%20ecret"), "token", &api_key);
        assert_eq!(t.get("x-api-key").unwrap(), "s ecret");
        // A credential in a header wins over the query.
        let mut t = headers(&[("x-api-key", "from-header")]);
        query_credential(&mut t, Some("token=from-query"), "token", &api_key);
        assert_eq!(t.get("x-api-key").unwrap(), "from-header");
        // Another parameter name: nothing.
        let mut t = HeaderMap::new();
        query_credential(&mut t, Some("access_token=x"), "token", &api_key);
        assert!(t.is_empty());
        // No auth: nothing to carry.
        let open = config("upstreams:\n  x: {url: \"http://127.0.0.1:1/mcp\"}\n");
        let mut t = HeaderMap::new();
        query_credential(&mut t, Some("token=x"), "token", &open);
        assert!(t.is_empty());
    }
}
