//! Listening and serving: the accept loops, connection limits, the drain, and [`dispatch`], the
//! one entry every request passes.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use super::websocket;
use crate::error::GatewayError;
use crate::mcp::jsonrpc;
use crate::proxy::relay::BoxError;
use crate::proxy::{Peer, UpstreamClient};

/// Serves on an already-bound listener until `shutdown` resolves, then drains: stops accepting,
/// ends GET streams (clients resume elsewhere), lets in-flight requests finish for up to
/// `server.shutdown_timeout`. Runs on the caller's runtime (tests, embedders); `mcpgate start`
/// uses [`run_workers`].
///
/// Connections are served by hyper directly: the MCP route (`/servers/<name>/mcp`) is matched
/// here and handled without the router's extractor chain (the hot path); every other path
/// (health, readiness, metrics, OAuth metadata, 404s) goes to the other routes.
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
    serve(listener, gateway.clone(), shutdown).await;
    reaper.abort();
    return_leases(&gateway).await;
    Ok(())
}

/// After the drain: the unspent tokens of Redis leases go back, for the other replicas.
async fn return_leases(gateway: &Gateway) {
    if let Some(l) = &gateway.current().leases {
        l.sweep(true).await;
    }
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
    return_leases(&gateway).await;
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

/// Reaps idle session bookkeeping and rate-limit buckets in the background (every 30 s), and
/// gives stale Redis leases back (every second).
fn spawn_reaper(gateway: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let gw = gateway.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for n in 0u64.. {
            tick.tick().await;
            let current = gw.current();
            if let Some(l) = &current.leases {
                l.sweep(false).await;
            }
            if n % 30 == 0 {
                gw.sessions.reap();
                if let Some(b) = &current.buckets {
                    b.sweep();
                }
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
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;

    let _tracked = crate::observability::metrics::track_runtime();
    let app = super::routes::routes(gateway.clone());
    // Settings only a restart changes (a reload keeps them, see reload.rs): read once.
    let started_on = gateway.config();
    let builder = http_builder(&started_on.server);
    let handshake = started_on.server.header_timeout;
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
        let Some((slot, tcp)) = admit(&gateway, tcp) else {
            continue;
        };
        // What a reload may change (TLS certificates, trusted proxies) is read per connection.
        let generation = gateway.current();
        let server = &generation.config.server;
        let gw = gateway.clone();
        let app = app.clone();
        let peer = Peer::new(peer, &server.trusted_proxies).with_scheme(server.scheme());
        // The connection's slot: a WebSocket holds it after hyper lets the connection go.
        let slot = Arc::new(slot);
        let held = slot.clone();
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                if websocket::is_upgrade(request.headers()) {
                    request
                        .extensions_mut()
                        .insert(websocket::HeldSlot::new(held.clone()));
                }
                dispatch(gw.clone(), app.clone(), peer.clone(), request)
            });
        let connections = gateway.connections.clone();
        let Some(acceptor) = &generation.tls else {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _slot = slot;
                connection_ended(&connections, conn.await);
            });
            continue;
        };
        // The handshake runs on the connection's task, bounded like a request head: a client
        // that opens a connection and never finishes it holds nothing else up.
        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(stream) = tls_handshake(&acceptor, tcp, handshake).await else {
                return;
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            connection_ended(&connections, watcher.watch(conn).await);
        });
    }

    drain(&gateway, listener, graceful).await;
}

/// Takes a new client connection if `server.max_connections` allows (else it is refused with a
/// 503 on a task of its own): its slot, and the socket guarded against stalls.
fn admit(
    gateway: &Gateway,
    tcp: tokio::net::TcpStream,
) -> Option<(
    crate::conn::Slot,
    crate::conn::StallGuard<tokio::net::TcpStream>,
)> {
    let Some(slot) = gateway.connections.admit() else {
        let connections = gateway.connections.clone();
        tokio::spawn(async move { connections.refuse(tcp).await });
        return None;
    };
    // TCP_NODELAY on every client connection: SSE events and small JSON answers are written
    // as they come, and with Nagle each would wait for the client's delayed ACK (~40 ms).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
    }
    let tcp = crate::conn::StallGuard::new(
        tcp,
        gateway.connections.write_timeout,
        gateway.connections.header_timeout,
    );
    Some((slot, tcp))
}

/// The TLS handshake of one connection, within `timeout` (`server.header_timeout`); `None`
/// when it failed or took too long (the connection is then dropped).
async fn tls_handshake<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished within server.header_timeout");
            None
        }
    }
}

/// Counts how a client connection ended, when that says something about the client (it
/// stalled, it stopped reading).
fn connection_ended(
    connections: &crate::conn::Connections,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
) {
    if let Err(e) = result {
        if let Some(why) = crate::conn::closed_by(e.as_ref()) {
            connections.closed(why);
        }
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// hyper's connection settings: with a timer, hyper bounds the wait for a request head (which
/// also ends idle keep-alive connections); HTTP/2 peers are pinged and dropped when they stop
/// answering.
fn http_builder(
    server: &crate::config::ServerConfig,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The drain: readiness turns to 503, GET streams end (their clients resume elsewhere), no new
/// connection is accepted, and the open ones get `server.shutdown_timeout` to finish.
async fn drain(
    gateway: &Gateway,
    listener: TcpListener,
    graceful: hyper_util::server::graceful::GracefulShutdown,
) {
    gateway.draining.store(true, Ordering::Relaxed);
    gateway.shutdown.cancel();
    drop(listener);
    let connections = async {
        graceful.shutdown().await;
        gateway.websockets.drained().await;
    };
    if tokio::time::timeout(gateway.config().server.shutdown_timeout, connections)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// One request: the MCP route to its exchange, everything else to `others` (the other routes).
/// The same for [`super::run`]'s connections and for [`super::router`]'s embedders.
pub(super) async fn dispatch<B>(
    gw: Arc<Gateway>,
    others: Router,
    peer: Peer,
    mut request: http::Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
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
        Some(name)
            if request.method() == http::Method::GET
                && websocket::is_upgrade(request.headers()) =>
        {
            let name = name.into_owned();
            Ok(websocket::upgrade(gw, &name, peer, request).await)
        }
        Some(name) => {
            let name = name.into_owned();
            Ok(super::exchange::serve_mcp(gw, &name, peer, request).await)
        }
        None => {
            use tower::ServiceExt as _;
            // What `into_make_service_with_connect_info` adds, for handlers that extract it.
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.addr));
            others.oneshot(request.map(axum::body::Body::new)).await
        }
    }
}

/// `/servers/<name>/mcp` → `name`, percent-decoded (`%61lpha` is `alpha`); `None` for any other
/// path, or a name that does not decode to UTF-8 text without `/`. The name may be empty (no
/// server has that name: an unknown server's 404).
fn mcp_route_name(path: &str) -> Option<Cow<'_, str>> {
    let name = path.strip_prefix("/servers/")?.strip_suffix("/mcp")?;
    if name.contains('/') {
        return None;
    }
    if !name.contains('%') {
        return Some(Cow::Borrowed(name));
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(crate::mcp::uri::hex_octet(bytes.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.contains('/')).then_some(Cow::Owned(name))
}

#[cfg(test)]
mod tests {
    use super::mcp_route_name;

    #[test]
    fn mcp_route_names_are_percent_decoded() {
        assert_eq!(
            mcp_route_name("/servers/alpha/mcp").as_deref(),
            Some("alpha")
        );
        assert_eq!(
            mcp_route_name("/servers/%61lpha/mcp").as_deref(),
            Some("alpha")
        );
        assert_eq!(mcp_route_name("/servers/a%2Fb/mcp"), None);
        assert_eq!(mcp_route_name("/servers/a/b/mcp"), None);
        // An empty name is a route to no server (an unknown server's 404, not the fallback's).
        assert_eq!(mcp_route_name("/servers//mcp").as_deref(), Some(""));
        assert_eq!(mcp_route_name("/servers/%zz/mcp"), None);
        assert_eq!(mcp_route_name("/servers/%ff/mcp"), None);
        assert_eq!(mcp_route_name("/servers/x%4/mcp"), None);
        // A sign is no hex digit (`u8::from_str_radix` alone would read `%+1` as 0x01).
        assert_eq!(mcp_route_name("/servers/%+1/mcp"), None);
        assert_eq!(mcp_route_name("/servers/alpha/mcp/"), None);
        assert_eq!(mcp_route_name("/healthz"), None);
    }
}
