//! Talking to upstreams: the request as the upstream must see it, and the response relayed back.
//!
//! - this module: the HTTP client, the header rules in both directions, `forward`.
//! - [`relay`]: response bodies: pass-through with an idle timeout, and the SSE/JSON paths that
//!   run response hooks on the few messages a stage asked for.

pub mod keepalive;
pub mod relay;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};

use crate::config::Cidr;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use crate::config::Upstream;
use crate::error::GatewayError;
use crate::mcp::headers::MCP_SESSION_ID;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

type Pool = Client<Connector, Full<Bytes>>;

/// The upstream client: pooled connections, HTTP/1.1 and HTTP/2 (over TLS by ALPN).
///
/// Every `UpstreamClient` has the same settings, so a serving worker thread
/// ([`crate::server::run_workers`]) gets a pool of its own ([`UpstreamClient::use_thread_pool`]):
/// a connection's task then lives on the runtime of the requests that use it, and no request
/// wakes another thread. Elsewhere (tests, embedders, side fetches from the control runtime) the
/// pool shared by the clones of this value serves.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Pool,
}

thread_local! {
    /// This thread's own pool, on serving worker threads.
    static THREAD_POOL: std::cell::OnceCell<Pool> = const { std::cell::OnceCell::new() };
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient")
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    pub fn new() -> Self {
        UpstreamClient {
            client: Self::pool(),
        }
    }

    /// Gives the calling thread a pool of its own, used by every `UpstreamClient` on it from now
    /// on. For threads that run one single-threaded runtime for their whole life.
    pub fn use_thread_pool() {
        THREAD_POOL.with(|p| {
            let _ = p.set(Self::pool());
        });
    }

    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        THREAD_POOL.with(|p| p.get().unwrap_or(&self.client).request(request))
    }

    fn pool() -> Pool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // Without a timer the pool never evicts idle connections (only a later checkout drops
        // an expired one), so an upstream that keeps connections open kept a descriptor and a
        // task each after a burst, for good (found by the soak, RELIABILITY.md).
        Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(https)
    }

    /// Sends the request to `upstream` and waits for the response to begin, bounded by the
    /// route's timeout; `waited` is set to how long that took. Only the wait for headers is
    /// bounded here: a tool may stream for as long as it keeps talking (the relay bounds silence
    /// with the idle timeout instead).
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: Request<Full<Bytes>>,
        waited: &mut Option<Duration>,
    ) -> Result<http::Response<Incoming>, GatewayError> {
        let started = Instant::now();
        let result = tokio::time::timeout(upstream.timeout, self.request(request)).await;
        *waited = Some(started.elapsed());
        match result {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                upstream: upstream.name.to_string(),
                timeout: upstream.timeout,
            }),
            Ok(Err(e)) => Err(GatewayError::UpstreamUnavailable {
                upstream: upstream.name.to_string(),
                reason: error_chain(&e),
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Why [`UpstreamClient::fetch`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Timeout,
    /// Connection failure, an oversized body, or a body that broke off; the text says which.
    Failed(String),
}

impl UpstreamClient {
    /// Sends a small request and reads the whole response, bounded in time (headers and body
    /// together) and in body size. For side requests (JWKS, discovery, plugin callouts), never
    /// for MCP traffic, which streams.
    pub async fn fetch(
        &self,
        request: Request<Full<Bytes>>,
        timeout: std::time::Duration,
        max_body: usize,
    ) -> Result<(http::response::Parts, Bytes), FetchError> {
        use http_body_util::BodyExt as _;
        let url = request.uri().to_string();
        let fetch = async {
            let response = self
                .request(request)
                .await
                .map_err(|e| FetchError::Failed(format!("{url}: {}", error_chain(&e))))?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| FetchError::Failed(format!("{url}: {e}")))?
                .to_bytes();
            Ok((parts, body))
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    /// GETs a small JSON document (JWKS, OpenID discovery), bounded in time and size.
    pub async fn get_json(
        &self,
        url: &str,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (parts, body) =
            self.fetch(request, timeout, 1024 * 1024)
                .await
                .map_err(|e| match e {
                    FetchError::Timeout => format!("{url}: timed out"),
                    FetchError::Failed(m) => m,
                })?;
        if !parts.status.is_success() {
            return Err(format!("{url}: HTTP {}", parts.status));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the client named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    if named.is_empty() && HOP_BY_HOP.iter().all(|n| !headers.contains_key(n)) {
        return;
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// Where the request came from, for `X-Forwarded-*`: made once per client connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer's IP as a header value (formatting an address is a measurable share of a request).
    ip_header: HeaderValue,
    /// Whether the peer is one of `server.trusted_proxies`: only then are its `X-Forwarded-*`
    /// headers believed and passed on.
    pub trusted: bool,
    /// The scheme the peer reached the gateway with (`X-Forwarded-Proto` when it sets none).
    pub scheme: &'static str,
}

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

impl Peer {
    pub fn new(addr: SocketAddr, trusted_proxies: &[Cidr]) -> Peer {
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer {
            addr,
            ip_header,
            trusted: trusted_proxies.iter().any(|c| c.contains(addr.ip())),
            scheme: "http",
        }
    }

    /// The same peer, reached over `scheme` (`https` on a TLS listener).
    pub fn with_scheme(mut self, scheme: &'static str) -> Peer {
        self.scheme = scheme;
        self
    }

    /// The client's address: the peer's; behind trusted proxies, the nearest address in
    /// `X-Forwarded-For` (read from the right) that is not itself a trusted proxy.
    pub fn client_ip(&self, headers: &HeaderMap, trusted_proxies: &[Cidr]) -> IpAddr {
        if !self.trusted {
            return self.addr.ip();
        }
        let hops: Vec<IpAddr> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !trusted_proxies.iter().any(|c| c.contains(**ip)))
            .or(hops.first())
            .copied()
            .unwrap_or(self.addr.ip())
    }
}

/// What the client's request contributes to the upstream request [`upstream_request`] builds.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: http::Method,
    /// The gateway's request id (`X-Request-Id`).
    pub request_id: &'a str,
    /// The upstream's own session id, in place of the client's sealed one.
    pub upstream_session: Option<&'a str>,
    /// The client's headers (moved, or copied when response hooks still read them).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Builds the request `upstream` receives: the rules every forwarded request follows.
///
/// - the URL is the upstream's as configured: the client's query string is dropped;
/// - `Host` becomes the upstream's authority (SDK servers check it against DNS rebinding);
/// - hop-by-hop headers are dropped; so are the client's `Authorization` (the upstream gets its
///   own credentials, never the caller's token), any header in `strip` (the gateway's own
///   credential headers), `Origin` (checked by the gateway for its own listener),
///   `Accept-Encoding` (so SSE is never compressed), `Content-Length` (recomputed);
/// - `Mcp-Session-Id` is replaced by the upstream's own id, or dropped for modern requests;
/// - `X-Forwarded-For/Proto/Host` and `X-Request-Id` are added; a client's own
///   `X-Forwarded-*` and `Forwarded` are dropped first unless it is a trusted proxy;
/// - everything else (`Accept`, `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`,
///   `Mcp-Param-*`, `Last-Event-ID`, `Content-Type`, `traceparent`) passes untouched.
pub fn upstream_request(
    upstream: &Upstream,
    outgoing: Outgoing<'_>,
    peer: &Peer,
    strip: &[HeaderName],
) -> Result<Request<Full<Bytes>>, GatewayError> {
    let Outgoing {
        method,
        request_id,
        upstream_session,
        mut headers,
        body,
    } = outgoing;
    // The configured URL exactly: its query may carry the gateway's credentials or a tenant,
    // which a client must not add to or override (`?tenant=t2`). MCP has no use for a client's
    // query string on the endpoint, so it is dropped.
    let base = &upstream.url;
    let uri = base.clone();

    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    for name in [
        header::AUTHORIZATION,
        header::HOST,
        header::ORIGIN,
        header::ACCEPT_ENCODING,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    for name in strip {
        headers.remove(name);
    }
    headers.remove(&MCP_SESSION_ID);
    if let Some(session) = upstream_session {
        let value = HeaderValue::from_str(session).map_err(|_| GatewayError::SessionNotFound)?;
        headers.insert(MCP_SESSION_ID, value);
    }
    if let Some(authority) = base.authority() {
        headers.insert(
            header::HOST,
            HeaderValue::from_str(authority.as_str())
                .map_err(|e| GatewayError::Internal(e.to_string()))?,
        );
    }
    if let Some((name, value)) = &upstream.credential {
        headers.insert(name.clone(), value.clone());
    }

    set_forwarding(&mut headers, peer, original_host)?;
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, id);
    }

    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// `X-Forwarded-For/Proto/Host`: what a client says about where it came from is believed only
/// from a trusted proxy; from anyone else the gateway states it itself.
fn set_forwarding(
    headers: &mut HeaderMap,
    peer: &Peer,
    original_host: Option<HeaderValue>,
) -> Result<(), GatewayError> {
    if !peer.trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if prior.is_empty() {
        peer.ip_header.clone()
    } else {
        HeaderValue::from_str(&format!("{}, {}", prior.join(", "), peer.addr.ip()))
            .map_err(|e| GatewayError::Internal(e.to_string()))?
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(peer.scheme));
    }
    if let Some(host) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    Ok(())
}

/// Response header rules: hop-by-hop dropped; SSE marked never-buffer. Session ids are handled by
/// the caller, which knows the era and the client's token.
pub fn clean_response_headers(headers: &mut HeaderMap) -> bool {
    strip_hop_by_hop(headers);
    let is_sse = crate::mcp::sse::is_event_stream(headers);
    if is_sse {
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache"));
        headers.remove(header::CONTENT_LENGTH);
    }
    is_sse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_scheme_is_the_forwarded_proto_unless_a_trusted_proxy_says_otherwise() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let proto = |peer: &Peer, sent: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(p) = sent {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(p));
            }
            set_forwarding(&mut headers, peer, None).unwrap();
            headers[&X_FORWARDED_PROTO].to_str().unwrap().to_string()
        };
        let plain = Peer::new(addr, &[]);
        let tls = Peer::new(addr, &[]).with_scheme("https");
        assert_eq!(proto(&plain, None), "http");
        assert_eq!(proto(&tls, None), "https");
        // An untrusted client cannot claim either.
        assert_eq!(proto(&plain, Some("https")), "http");
        assert_eq!(proto(&tls, Some("http")), "https");
        let proxy = Peer::new(addr, &[Cidr::parse("127.0.0.1/32").unwrap()]);
        assert_eq!(proto(&proxy, Some("https")), "https");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-method"));
    }

    #[test]
    fn sse_responses_are_marked_unbuffered() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(clean_response_headers(&mut h));
        assert_eq!(h["x-accel-buffering"], "no");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!clean_response_headers(&mut json));
        assert!(!json.contains_key("x-accel-buffering"));
    }
}
