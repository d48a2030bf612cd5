//! Internal Streamable HTTP endpoints the gateway forwards to like any other upstream: a listener
//! on 127.0.0.1 (a port the OS picks) that only this gateway may use (every request must carry a
//! random token of this process's own in [`BRIDGE_HEADER`], added as the route's upstream
//! credential). stdio routes (`crate::stdio::Bridge`) and federated routes
//! (`crate::federation::Federator`) are such endpoints, so the whole pipeline runs in the gateway
//! for them as for an HTTP upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::mcp::jsonrpc;

/// The header that carries an endpoint's token.
pub const BRIDGE_HEADER: HeaderName = HeaderName::from_static("x-mcpgate-bridge");
/// Connections to one endpoint at once (the gateway's pooled ones; others are closed).
const MAX_CONNECTIONS: usize = 1024;
/// Bound on a request head, idle keep-alive included: longer than the gateway's upstream pool
/// keeps an idle connection (60 s), so an endpoint never closes one the gateway is about to reuse.
const HEAD_TIMEOUT: Duration = Duration::from_secs(90);

pub type Body = BoxBody<Bytes, Infallible>;

/// What serves an endpoint's requests (each already checked for the token).
pub trait Endpoint: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// Housekeeping, every [`Endpoint::tick_every`].
    fn tick(&self) {}

    fn tick_every(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// What a reload may retire: an endpoint whose route was removed or changed.
pub trait Stop: Send + Sync {
    fn stop(&self);
}

/// Endpoints a new config no longer uses, still serving until [`Retired::stop`]: the caller
/// stops them once that config serves, so no request meets a stopped endpoint in between.
#[derive(Default)]
pub struct Retired(Vec<Arc<dyn Stop>>);

impl Retired {
    pub fn push(&mut self, endpoint: Arc<dyn Stop>) {
        self.0.push(endpoint);
    }

    pub fn extend(&mut self, other: Retired) {
        self.0.extend(other.0);
    }

    /// Stops them.
    pub fn stop(self) {
        for e in self.0 {
            e.stop();
        }
    }
}

/// An endpoint's address and token, and the switch that stops it.
#[derive(Debug)]
pub struct Loopback {
    addr: SocketAddr,
    token: String,
    stop: CancellationToken,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl Loopback {
    /// Binds 127.0.0.1 on a free port with a fresh token; [`Loopback::serve`] starts serving.
    pub fn bind() -> std::io::Result<Loopback> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let token: [u8; 32] = rand::random();
        Ok(Loopback {
            addr: listener.local_addr()?,
            token: crate::session::hex(&token),
            stop: CancellationToken::new(),
            listener: std::sync::Mutex::new(Some(listener)),
        })
    }

    /// Serves `endpoint` until it is dropped or [`Loopback::stop`]ped. Needs a tokio runtime;
    /// once only.
    pub fn serve<E: Endpoint>(&self, endpoint: Weak<E>) -> std::io::Result<()> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| std::io::Error::other("the endpoint is served already"))?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(accept(
            listener,
            endpoint,
            self.token.clone(),
            self.stop.clone(),
        ));
        Ok(())
    }

    /// The URL the gateway forwards to.
    pub fn url(&self) -> http::Uri {
        format!("http://{}/mcp", self.addr)
            .parse()
            .expect("a loopback URL")
    }

    /// The credential the gateway sends with every request.
    pub fn credential(&self) -> (HeaderName, HeaderValue) {
        (
            BRIDGE_HEADER,
            HeaderValue::from_str(&self.token).expect("hex is a header value"),
        )
    }

    /// Stops serving (open connections get 503 from now on).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

async fn accept<E: Endpoint>(
    listener: tokio::net::TcpListener,
    endpoint: Weak<E>,
    token: String,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let every = endpoint
        .upgrade()
        .map_or(Duration::from_secs(30), |e| e.tick_every());
    let mut tick = tokio::time::interval(every);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let token: Arc<str> = Arc::from(token);
    loop {
        let tcp = tokio::select! {
            _ = tick.tick() => {
                match endpoint.upgrade() {
                    Some(e) => e.tick(),
                    None => return,
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        // Only the gateway should connect; any other local process gets nothing without the
        // token, and cannot hold more than MAX_CONNECTIONS connections or a silent one past
        // HEAD_TIMEOUT.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let (weak, stop, token) = (endpoint.clone(), stop.clone(), token.clone());
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let e = weak.upgrade().filter(|_| !stop.is_cancelled());
            let token = token.clone();
            async move {
                use subtle::ConstantTimeEq as _;
                let presented = request
                    .headers()
                    .get(&BRIDGE_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(match e {
                    _ if !bool::from(presented.ct_eq(token.as_bytes())) => {
                        empty(StatusCode::FORBIDDEN)
                    }
                    Some(e) => e.handle(request).await,
                    // Stopped (a reload changed the route): a pooled connection gets nothing.
                    None => empty(StatusCode::SERVICE_UNAVAILABLE),
                })
            }
        });
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON-RPC error response.
pub fn rpc_error(
    status: StatusCode,
    id: Option<&RawValue>,
    code: i32,
    message: &str,
) -> Response<Body> {
    json(status, jsonrpc::error_body(id, code, message, None))
}

/// A response without a body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status;
    r
}

/// One SSE event carrying `message`.
pub fn sse_event(message: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(message.len() + 16);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(message);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// A 200 `text/event-stream` response with `body`.
pub fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// An SSE response whose events come from `rx`, ending when every sender is gone.
pub fn sse_from(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
    });
    sse_response(http_body_util::StreamBody::new(stream).boxed())
}
