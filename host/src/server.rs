//! The edge: listeners, routes, the MCP handler, graceful shutdown.
//!
//! The MCP route reads top to bottom in [`handle`]: edge checks → envelope → routing headers →
//! session → stages → forward → response (session rewrite, hooks, relay). Every error returns
//! early as a [`GatewayError`], turned into a response in one place ([`mcp_route`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::GatewayError;
use crate::mcp::headers::{self as mcp_headers, MCP_SESSION_ID};
use crate::mcp::{Era, ParsedBody, jsonrpc};
use crate::observability::{Observability, Summary};
use crate::pipeline::{Outcome, Pipeline, RequestContext};
use crate::proxy::relay::{self, Relay};
use crate::proxy::{self, Peer, UpstreamClient, X_REQUEST_ID};
use crate::session::Sessions;

/// Everything the request path shares: immutable config, sessions, client, pipelines.
pub struct Gateway {
    pub config: Arc<Config>,
    pub sessions: Arc<Sessions>,
    /// Metrics, audit log, spans (`observability:`).
    pub obs: Arc<Observability>,
    client: UpstreamClient,
    pipelines: HashMap<Arc<str>, Pipeline>,
    /// Header names that carry the gateway's own credentials: never forwarded.
    strip_headers: Vec<HeaderName>,
    /// In-memory rate-limit buckets, swept in the background.
    buckets: Option<Arc<crate::stages::ratelimit::MemoryBackend>>,
    /// Client connection limits, shared by the serving threads.
    pub connections: Arc<crate::conn::Connections>,
    shutdown: CancellationToken,
    draining: AtomicBool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway from a validated config without plugins (see [`Gateway::with_plugins`]).
    pub fn new(config: Config) -> Gateway {
        Gateway::with_plugins(config, &crate::plugins::Plugins::default())
    }

    /// Builds the gateway from a validated config and its loaded plugins.
    ///
    /// # Panics
    /// When [`Gateway::build`] fails (the audit log cannot be opened).
    pub fn with_plugins(config: Config, plugins: &crate::plugins::Plugins) -> Gateway {
        Gateway::build(config, plugins).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds the gateway from a validated config and its loaded plugins; its metrics join the
    /// plugins' registry. Fails when the audit sink cannot be opened or the Redis URL is
    /// unusable. Warns when the session key was generated.
    pub fn build(config: Config, plugins: &crate::plugins::Plugins) -> Result<Gateway, String> {
        let (sessions, generated) = Sessions::new(&config.sessions);
        let sessions = Arc::new(sessions);
        if generated {
            tracing::warn!(
                "no session key configured (sessions.key or {}): generated one for this process; \
                 sessions will not survive a restart, and replicas behind one load balancer need a shared key",
                crate::config::SESSION_KEY_ENV
            );
        }
        let obs = Observability::new(&config, plugins.registry().clone(), sessions.clone())?;
        let client = UpstreamClient::new();
        // One Redis connection per process: the one the plugins were loaded with, else ours.
        let redis = match (plugins.redis(), &config.redis) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(c)) => Some(crate::redis::Redis::new(c, plugins.registry())?),
            (None, None) => None,
        };
        let mut built = crate::stages::build(&config, &client, plugins, redis.as_ref());
        for (name, pipeline) in built.pipelines.iter_mut() {
            if let Some(catalog) = obs.tool_catalog(name) {
                *pipeline = std::mem::take(pipeline).with_observer(catalog);
            }
        }
        let connections = Arc::new(crate::conn::Connections::new(&config.server, &obs.registry));
        Ok(Gateway {
            connections,
            config: Arc::new(config),
            sessions,
            obs: Arc::new(obs),
            client,
            pipelines: built.pipelines,
            strip_headers: built.strip_headers,
            buckets: built.buckets,
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// Replaces the pipeline of one upstream (stages are built from config by later layers).
    pub fn set_pipeline(&mut self, upstream: &str, pipeline: Pipeline) {
        if let Some(u) = self.config.upstream(upstream) {
            self.pipelines.insert(u.name.clone(), pipeline);
        }
    }

    /// Adds a header name the gateway consumes itself (for example an API-key header), so it is
    /// never forwarded upstream.
    pub fn strip_header(&mut self, name: HeaderName) {
        self.strip_headers.push(name);
    }
}

/// The router: the MCP routes, health, readiness, metrics.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    if let Some(path) = &gateway.obs.metrics_path {
        router = router.route(path, get(metrics));
    }
    router
        .route("/servers/{name}/mcp", any(mcp_route))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/.well-known/oauth-protected-resource/servers/{name}/mcp",
            get(protected_resource_metadata),
        )
        .fallback(|| async {
            GatewayError::bad_request(
                jsonrpc::METHOD_NOT_FOUND,
                "not found: MCP servers live at /servers/<name>/mcp",
            )
            .into_response(None)
        })
        .with_state(gateway)
}

use axum::Json;

/// Prometheus text exposition of the gateway's registry (plugin series included); behind a
/// bearer token when `observability.metrics.token_env` names one.
async fn metrics(State(gw): State<Arc<Gateway>>, headers: http::HeaderMap) -> Response {
    if let Some(digest) = gw.obs.metrics_token {
        // The same check as API keys: a bearer token, compared by digest in constant time.
        let token = crate::stages::auth::ApiKey {
            id: Arc::from("metrics"),
            digest,
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        let presented =
            crate::stages::auth::Auth::check_api_key(&header::AUTHORIZATION, &[token], &headers);
        if !bearer || presented.is_err() {
            let mut r = GatewayError::Rejected {
                stage: "metrics".into(),
                status: StatusCode::UNAUTHORIZED,
                code: jsonrpc::UNAUTHENTICATED,
                message: "the metrics need `Authorization: Bearer <token>` (observability.metrics.token_env)".into(),
                data: None,
                headers: vec![],
            }
            .into_response(None);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let text = crate::observability::metrics::encode(&gw.obs.registry);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        let upstreams: Vec<&str> = gw
            .config
            .upstreams
            .iter()
            .map(|u| u.name.as_ref())
            .collect();
        Json(json!({"status": "ready", "upstreams": upstreams})).into_response()
    }
}

/// RFC 9728 Protected Resource Metadata for a route whose pipeline authenticates with OAuth
/// bearer tokens: `resource` is the route's exact public URL, with the trusted authorization servers.
async fn protected_resource_metadata(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
) -> Response {
    let jwt = gw.config.auth.as_ref().and_then(|a| a.jwt());
    let guarded = gw
        .pipelines
        .get(name.as_str())
        .is_some_and(|p| p.names().iter().any(|n| n == "auth"));
    let (Some(jwt), true) = (jwt, guarded) else {
        return GatewayError::bad_request(
            jsonrpc::METHOD_NOT_FOUND,
            format!("no OAuth-protected MCP server is configured under `{name}`"),
        )
        .into_response(None);
    };
    let (_, resource) =
        crate::stages::auth::resource_urls(gw.config.server.public_url.as_deref(), &headers, &name);
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": jwt.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    });
    if !jwt.scopes.is_empty() {
        doc["scopes_supported"] = json!(jwt.scopes);
    }
    Json(doc).into_response()
}

/// Serves on an already-bound listener until `shutdown` resolves, then drains: stops accepting,
/// ends GET streams (clients resume elsewhere), lets in-flight requests finish for up to
/// `server.shutdown_timeout`. Runs on the caller's runtime (tests, embedders); `mcpgate start`
/// uses [`run_workers`].
///
/// Connections are served by hyper directly: the MCP route (`/servers/<name>/mcp`) is matched
/// here and handled without the router's extractor chain (the hot path); every other path
/// (health, readiness, metrics, OAuth metadata, 404s) goes to [`router`].
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reaper = spawn_reaper(&gateway);
    let shutdown = async {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
    };
    serve(listener, gateway, shutdown).await;
    reaper.abort();
    Ok(())
}

/// [`run`] on `workers` threads (`server.workers`), each with a single-threaded runtime of its
/// own and its own upstream connection pool, all accepting on the same listener. A connection
/// stays on the thread that accepted it, so the request path never wakes another thread (the
/// work-stealing runtime woke a sibling worker on every request: a futex and two context
/// switches, measured in BENCHMARKS.md). The caller's runtime keeps the background work
/// (session and bucket sweeps, signals, exporters).
///
/// Returns when every worker has drained; a worker that cannot start stops the others and is
/// the error returned.
pub async fn run_workers(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    workers: usize,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let _control = crate::observability::metrics::track_runtime();
    let stop = CancellationToken::new();
    let mut threads = Vec::with_capacity(workers);
    let mut failed = None;
    for i in 0..workers.max(1) {
        let spawned = listener.try_clone().and_then(|listener| {
            let gateway = gateway.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("mcpgate-worker-{i}"))
                .spawn(move || worker(listener, gateway, stop))
        });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(listener);
    let reaper = spawn_reaper(&gateway);
    if failed.is_none() {
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        tracing::info!("shutting down: draining in-flight requests");
    }
    stop.cancel();
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(std::io::Error::other)?;
    reaper.abort();
    match failed {
        Some(e) => Err(e),
        None => joined.into_iter().collect(),
    }
}

/// One serving thread of [`run_workers`]: serves until `stop`, and stops the others if it ends
/// first (it could not start, or it panicked).
fn worker(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let _stop_others = stop.clone().drop_guard();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    UpstreamClient::use_thread_pool();
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        serve(listener, gateway, stop.cancelled_owned()).await;
        Ok(())
    })
}

/// Reaps idle session bookkeeping and rate-limit buckets in the background.
fn spawn_reaper(gateway: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let gw = gateway.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            gw.sessions.reap();
            if let Some(b) = &gw.buckets {
                b.sweep();
            }
        }
    })
}

/// The accept loop of [`run`] and of each worker of [`run_workers`], then the drain.
async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;

    let _tracked = crate::observability::metrics::track_runtime();
    let app = router(gateway.clone());
    let server = &gateway.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper bounds the wait for a request head (which also ends idle keep-alive
    // connections); HTTP/2 peers are pinged and dropped when they stop answering.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = gateway.connections.admit() else {
            let connections = gateway.connections.clone();
            tokio::spawn(async move { connections.refuse(tcp).await });
            continue;
        };
        // TCP_NODELAY on every client connection: SSE events and small JSON answers are written
        // as they come, and with Nagle each would wait for the client's delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
        let tcp = crate::conn::StallGuard::new(
            tcp,
            gateway.connections.write_timeout,
            server.header_timeout,
        );
        let gw = gateway.clone();
        let app = app.clone();
        let peer = Peer::new(peer, &gateway.config.server.trusted_proxies);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                dispatch(gw.clone(), app.clone(), peer.clone(), request)
            });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let connections = gateway.connections.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                if let Some(why) = crate::conn::closed_by(e.as_ref()) {
                    connections.closed(why);
                }
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }

    gateway.draining.store(true, Ordering::Relaxed);
    gateway.shutdown.cancel();
    drop(listener);
    if tokio::time::timeout(gateway.config.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// One request on a client connection: the MCP route directly, everything else through the router.
async fn dispatch(
    gw: Arc<Gateway>,
    app: Router,
    peer: Peer,
    mut request: http::Request<hyper::body::Incoming>,
) -> Result<Response, std::convert::Infallible> {
    // HTTP/2 carries the authority in `:authority`, not `Host`: one place to read it from.
    if !request.headers().contains_key(header::HOST)
        && let Some(authority) = request.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    if let Some(host) = request.headers().get(header::HOST)
        && !host.to_str().is_ok_and(crate::stages::auth::is_authority)
    {
        return Ok(GatewayError::bad_request(
            jsonrpc::INVALID_REQUEST,
            "the Host header is not an authority (host[:port])",
        )
        .into_response(None));
    }
    match mcp_route_name(request.uri().path()) {
        Some(name) => {
            let name = name.to_owned();
            Ok(serve_mcp(gw, name, peer, request).await)
        }
        None => {
            use tower::ServiceExt as _;
            // What `into_make_service_with_connect_info` would add: the router's MCP route
            // (names that need percent-decoding) extracts the peer from it.
            let mut request = request;
            request.extensions_mut().insert(ConnectInfo(peer.addr));
            app.oneshot(request).await
        }
    }
}

/// `/servers/<name>/mcp` → `name`, for names that need no percent-decoding (those go through the
/// router, whose `Path` extractor decodes them).
fn mcp_route_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/servers/")?.strip_suffix("/mcp")?;
    (!name.is_empty() && !name.contains(['/', '%'])).then_some(name)
}

/// The MCP route in the router (for embedders serving [`router`] themselves; [`run`] calls
/// [`serve_mcp`] directly).
async fn mcp_route(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let peer = Peer::new(peer, &gw.config.server.trusted_proxies);
    serve_mcp(gw, name, peer, request).await
}

/// Handles one request on an MCP route and turns any error into its response.
async fn serve_mcp<B>(
    gw: Arc<Gateway>,
    name: String,
    peer: Peer,
    request: http::Request<B>,
) -> Response
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<relay::BoxError>,
{
    use tracing::Instrument as _;
    let request_id = request_id(request.headers());
    let span = gw.obs.span(&request_id, &name, request.headers());
    let mut summary = gw.obs.summary(
        request_id.clone(),
        &name,
        request.method().clone(),
        span.clone(),
    );
    summary.peer = Some(peer.client_ip(request.headers(), &gw.config.server.trusted_proxies));
    let mut error_id = None;
    // Headers stages want on the response, whatever it turns out to be (rate-limit headers).
    let mut extra_headers = http::HeaderMap::new();
    let result = handle(
        &gw,
        &name,
        &peer,
        request,
        &mut error_id,
        &mut extra_headers,
        &mut summary,
    )
    .instrument(span)
    .await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            let level_warn = e.status().is_server_error();
            if level_warn {
                tracing::warn!(request_id = %request_id, upstream = %name, error = %e, "request failed");
            } else {
                tracing::debug!(request_id = %request_id, upstream = %name, error = %e, "request refused");
            }
            summary.failed(&e);
            let id = error_id.as_deref();
            e.into_response(id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    for (name, value) in extra_headers.iter() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    gw.obs.finish(summary, response)
}

fn request_id(headers: &http::HeaderMap) -> Arc<str> {
    if let Some(v) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return Arc::from(v);
    }
    let n: u128 = rand::random();
    Arc::from(format!("{n:032x}"))
}

async fn handle<B>(
    gw: &Gateway,
    name: &str,
    peer: &Peer,
    request: http::Request<B>,
    error_id: &mut Option<Box<serde_json::value::RawValue>>,
    extra_headers: &mut http::HeaderMap,
    summary: &mut Summary,
) -> Result<Response, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<relay::BoxError>,
{
    // 1. Edge: route, method, Origin (DNS-rebinding defence for browsers), body limit.
    let (parts, body) = request.into_parts();
    let Some(upstream) = gw.config.upstream(name).cloned() else {
        // Best effort: answer with the request's id so the client can match the error.
        if parts.method == Method::POST
            && let Ok(bytes) = read_body(gw, body, &parts.headers).await
        {
            *error_id = ParsedBody::parse(&bytes)
                .ok()
                .and_then(|p| p.error_id().map(ToOwned::to_owned));
        }
        return Err(GatewayError::UnknownServer(name.to_string()));
    };
    if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
        return Err(GatewayError::MethodNotAllowed(parts.method));
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        if !gw.config.server.allowed_origins.allows(origin) {
            return Err(GatewayError::OriginForbidden(origin.to_string()));
        }
    }

    // 2. Envelope: read the body once (bounded), parse it once.
    let (body_bytes, parsed) = if parts.method == Method::POST {
        let bytes = read_body(gw, body, &parts.headers).await?;
        let parsed = ParsedBody::parse(&bytes).map_err(|e| {
            *error_id = e.id.clone();
            GatewayError::bad_request(e.code, e.message)
        })?;
        *error_id = parsed.error_id().map(ToOwned::to_owned);
        summary.describe(&parsed);
        if gw.obs.log_bodies() {
            summary.request_body = Some(bytes.clone());
        }
        (bytes, Some(parsed))
    } else {
        (Bytes::new(), None)
    };

    // 3. Era rules: batches are legacy-only; routing headers must mirror the body.
    if let Some(parsed) = &parsed {
        let max_batch = gw.config.server.max_batch_messages;
        if parsed.batch && parsed.messages.len() > max_batch {
            return Err(GatewayError::bad_request(
                jsonrpc::INVALID_REQUEST,
                format!(
                    "a batch may hold at most {max_batch} messages (server.max_batch_messages); this one holds {}",
                    parsed.messages.len()
                ),
            ));
        }
        if parsed.batch && parsed.era() == Era::Modern {
            return Err(GatewayError::bad_request(
                jsonrpc::INVALID_REQUEST,
                "batches are not allowed in protocol 2026-07-28: send one message per POST",
            ));
        }
        if parsed.batch
            && let Some(v) = parts
                .headers
                .get(&mcp_headers::MCP_PROTOCOL_VERSION)
                .and_then(|v| v.to_str().ok())
            && v.trim() != "2025-03-26"
        {
            return Err(GatewayError::bad_request(
                jsonrpc::INVALID_REQUEST,
                format!("JSON-RPC batches exist only in protocol 2025-03-26, not {v}"),
            ));
        }
        for msg in &parsed.messages {
            mcp_headers::validate(&parts.headers, msg)
                .map_err(|e| GatewayError::bad_request(e.code, e.message))?;
        }
    }

    let mut cx = Box::new(RequestContext::new(
        summary.request_id.clone(),
        upstream.clone(),
        parts.method.clone(),
        parts.headers,
        parsed,
    ));
    cx.peer = summary.peer;
    let is_initialize = cx
        .body
        .as_ref()
        .is_some_and(|b| b.messages.iter().any(|m| m.method() == "initialize"));

    // 4. Request stages (auth fills `cx.caller` first, so the session check below can bind to it).
    let pipeline = gw
        .pipelines
        .get(&upstream.name)
        .cloned()
        .unwrap_or_default();
    let outcome = pipeline.on_request(&mut cx).await;
    std::mem::swap(extra_headers, &mut cx.response_headers);
    summary.identify(&cx);
    if gw.obs.log_bodies() {
        summary.secrets = secrets(&cx, &gw.strip_headers);
    }
    if let Outcome::Respond(response) = outcome? {
        summary.responded(cx.responded_by.take());
        return Ok(response);
    }

    // 5. Legacy session: open the gateway's sealed id; unknown, tampered, expired, ended or
    //    someone else's → 404 from the gateway itself. Modern requests never carry one.
    //    From here until the request is sent, a failure gives back what the stages charged.
    let client_session = cx.headers.get(&MCP_SESSION_ID).cloned();
    let opened = open_session(gw, &mut cx, client_session.as_ref(), is_initialize, summary);
    refunding(&pipeline, &mut cx, opened).await?;

    // 6. Forward.
    // Requests whose responses a stage inspects go out under ids of the gateway's own; a GET
    // stream may carry their responses too.
    let hooks = if cx.body.is_some() {
        let hooked = pipeline.hook_requests(&mut cx, &gw.sessions);
        refunding(&pipeline, &mut cx, hooked).await?
    } else if cx.http_method == Method::GET && cx.era == Era::Legacy {
        pipeline.stream_hooks(&gw.sessions)
    } else {
        pipeline.stream_hooks(&gw.sessions).none()
    };
    let body_bytes = match &cx.body {
        Some(b) if cx.body_modified() => Bytes::from(b.to_bytes()),
        _ => body_bytes,
    };
    // Response hooks may read the client's headers; without hooks nothing does after this, so
    // they move into the upstream request instead of being copied.
    let client_headers = if !hooks.inspects() {
        std::mem::take(&mut cx.headers)
    } else {
        cx.headers.clone()
    };
    let built = proxy::upstream_request(&cx, client_headers, peer, &gw.strip_headers, body_bytes);
    let mut upstream_req = refunding(&pipeline, &mut cx, built).await?;
    summary.forwarded(&cx);
    let upstream_span = if gw.obs.export {
        let span = tracing::info_span!(
            parent: &summary.span,
            "mcp.upstream",
            otel.name = "mcp.upstream",
            otel.kind = "client",
            server = %upstream.name,
            // The host only: a URL's path or query may carry a credential.
            server.address = upstream.url.host().unwrap_or_default(),
        );
        crate::observability::trace::inject(&span, upstream_req.headers_mut());
        span
    } else {
        tracing::Span::none()
    };
    let sent = {
        use tracing::Instrument as _;
        gw.client
            .send(&mut cx, upstream_req)
            .instrument(upstream_span)
            .await
    };
    summary.upstream_seconds = cx.timings.upstream_headers.map(|d| d.as_secs_f64());
    let upstream_resp = sent?;

    // 7. Response: headers, session id rewrite, then the body (hooked or passed through).
    let (mut resp_parts, resp_body) = upstream_resp.into_parts();
    // The upstream refusing the gateway's own credentials is the gateway's problem to report:
    // passed on, its 401 and `WWW-Authenticate` would send an MCP client into an OAuth flow
    // against the wrong server.
    if matches!(
        resp_parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        summary.upstream_status = Some(resp_parts.status.as_u16());
        tracing::warn!(
            request_id = %cx.request_id,
            upstream = %upstream.name,
            status = resp_parts.status.as_u16(),
            challenge = ?resp_parts.headers.get(header::WWW_AUTHENTICATE),
            "the upstream refused the gateway's request: check upstreams.<name>.auth"
        );
        return Err(GatewayError::UpstreamRefused {
            upstream: upstream.name.to_string(),
            status: resp_parts.status.as_u16(),
        });
    }
    let is_sse = proxy::clean_response_headers(&mut resp_parts.headers);
    cx.upstream_status = Some(resp_parts.status.as_u16());
    cx.response_streamed = is_sse;
    summary.upstream_status = cx.upstream_status;
    summary.streamed = is_sse;
    let upstream_session = resp_parts.headers.remove(&MCP_SESSION_ID);
    // Modern requests are stateless: an upstream's session id is dropped, never passed on.
    if cx.era == Era::Legacy
        && let Some(up) = upstream_session
    {
        let token = match (&cx.session, up.to_str()) {
            (Some(s), Ok(up)) if s.upstream_session == up => client_session.clone(),
            (_, Ok(up)) if is_initialize || cx.session.is_some() => {
                let caller = cx.caller.as_ref().map(|c| c.id.as_ref());
                HeaderValue::from_str(&gw.sessions.mint(&upstream.name, up, caller)).ok()
            }
            _ => None,
        };
        if let Some(t) = token {
            resp_parts.headers.insert(MCP_SESSION_ID, t);
        }
    }
    if cx.http_method == Method::DELETE
        && let Some(claims) = &cx.session
        && (resp_parts.status.is_success() || resp_parts.status == StatusCode::NOT_FOUND)
    {
        gw.sessions.end(claims);
    }

    let idle = upstream.stream_idle_timeout;
    let shutdown = (cx.http_method == Method::GET).then(|| gw.shutdown.clone());
    let relayed = Relay::new(resp_body, idle, shutdown);
    let body = if !hooks.inspects() {
        Body::new(relayed)
    } else if is_sse {
        Body::new(relay::hooked_sse(
            relayed,
            cx,
            hooks,
            gw.config.server.max_inspected_bytes,
        ))
    } else {
        let error_status = !resp_parts.status.is_success();
        let limit = gw.config.server.max_inspected_bytes;
        let read = relay::hooked_json(relayed, &cx, &hooks, limit, error_status).await;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = if e.is::<http_body_util::LengthLimitError>() {
                    format!("it is larger than server.max_inspected_bytes ({limit} bytes)")
                } else {
                    e.to_string()
                };
                return Err(GatewayError::Uninspectable {
                    upstream: upstream.name.to_string(),
                    reason,
                });
            }
        };
        resp_parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Body::from(bytes)
    };
    Ok(Response::from_parts(resp_parts, body))
}

/// Opens the legacy session a request carries (step 5 of [`handle`]) into `cx.session`.
fn open_session(
    gw: &Gateway,
    cx: &mut RequestContext,
    client_session: Option<&HeaderValue>,
    is_initialize: bool,
    summary: &mut Summary,
) -> Result<(), GatewayError> {
    let Some(token) = client_session.filter(|_| cx.era == Era::Legacy && !is_initialize) else {
        return Ok(());
    };
    let token = token.to_str().map_err(|_| GatewayError::SessionNotFound)?;
    let caller = cx.caller.as_ref().map(|c| c.id.as_ref());
    match gw.sessions.open(&cx.upstream.name, token, caller) {
        Ok(claims) => {
            summary.session = Some(claims.id.clone());
            cx.session = Some(claims);
            Ok(())
        }
        Err(e) => {
            tracing::debug!(request_id = %cx.request_id, reason = ?e, "session rejected");
            Err(GatewayError::SessionNotFound)
        }
    }
}

/// `result`, after giving back what the stages charged when it is an error: a request that is
/// not forwarded is not charged.
async fn refunding<T>(
    pipeline: &Pipeline,
    cx: &mut RequestContext,
    result: Result<T, GatewayError>,
) -> Result<T, GatewayError> {
    if result.is_err() {
        pipeline.refund(cx).await;
    }
    result
}

/// The strings the audit log must never write for this request: the caller's credential (a
/// bearer token or an API key) and the upstream's.
fn secrets(cx: &RequestContext, credential_headers: &[HeaderName]) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |v: &HeaderValue| {
        if let Ok(text) = v.to_str() {
            let text = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .unwrap_or(text)
                .trim();
            if text.len() >= 6 {
                out.push(text.to_string());
            }
        }
    };
    for name in std::iter::once(&header::AUTHORIZATION).chain(credential_headers) {
        cx.headers.get_all(name).iter().for_each(&mut add);
    }
    if let Some((_, v)) = &cx.upstream.credential {
        add(v);
    }
    out
}

/// Reads a request body up to `server.max_body_bytes`; larger → 413 (early from
/// `Content-Length`); not all there within `server.body_timeout` → 408.
async fn read_body<B>(
    gw: &Gateway,
    body: B,
    headers: &http::HeaderMap,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<relay::BoxError>,
{
    let timeout = gw.config.server.body_timeout;
    match tokio::time::timeout(
        timeout,
        read_bounded(
            body,
            gw.config.server.max_body_bytes,
            gw.config.server.discard_body_bytes,
            headers,
        ),
    )
    .await
    {
        Ok(read) => read,
        Err(_) => {
            gw.connections.closed(crate::conn::Closed::BodyTimeout);
            Err(GatewayError::BodyTimeout(timeout))
        }
    }
}

/// [`read_body`] without the timeout. A body over `limit` is read on and dropped, holding none
/// of it, for up to `discard` more bytes (`server.discard_body_bytes`), so that a client still
/// sending receives the 413 instead of a reset.
async fn read_bounded<B>(
    body: B,
    limit: usize,
    discard: usize,
    headers: &http::HeaderMap,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<relay::BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that waits for `100 Continue` gets the 413 instead, without sending its body.
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let discard = limit.saturating_add(discard);
    if declared.is_some_and(|n| n > limit as u64) {
        if !expects_continue && declared.is_some_and(|n| n <= discard as u64) {
            drain(body, discard).await;
        }
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::bad_request(
                jsonrpc::PARSE_ERROR,
                format!("could not read the request body: {}", e.into()),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read = read.saturating_add(data.len());
        if read > limit {
            // Too large: drop the rest too (bounded), then answer.
            if read <= discard {
                drain(body, discard - read).await;
            }
            return Err(GatewayError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops up to `bound` more bytes of a body (the caller's timeout bounds the time).
async fn drain<B>(body: B, bound: usize)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut left = bound;
    while let Some(Ok(frame)) = body.frame().await {
        let n = frame.data_ref().map_or(0, Bytes::len);
        if n > left {
            return;
        }
        left -= n;
    }
}
