//! The `server:` section: listener, limits, timeouts, trusted proxies, allowed origins.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::Validator;

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MAX_INSPECTED_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 100;
pub const DEFAULT_DISCARD_BODY_BYTES: usize = 64 * 1024 * 1024;
/// `server.sse_keepalive` when it is set to 0 (an error, reported; this keeps the rest going).
const DEFAULT_SSE_KEEPALIVE_MS: u64 = 15_000;
/// Upper bound on `server.workers`.
pub const MAX_WORKERS: u64 = 1024;
/// `server.websocket.idle_timeout` when absent: a socket with no message either way and nothing
/// in flight for this long is closed.
pub const DEFAULT_WS_IDLE_TIMEOUT_MS: u64 = 600_000;
/// `server.websocket.ping_interval` when absent.
pub const DEFAULT_WS_PING_INTERVAL_MS: u64 = 30_000;
/// `server.websocket.max_in_flight` when absent: requests one socket may have awaiting answers.
pub const DEFAULT_WS_MAX_IN_FLIGHT: usize = 32;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebSocket {
    enabled: Option<bool>,
    max_message_bytes: Option<usize>,
    idle_timeout: Option<u64>,
    ping_interval: Option<u64>,
    max_in_flight: Option<usize>,
    query_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    port: Option<u16>,
    bind: Option<String>,
    max_body_bytes: Option<u64>,
    allowed_origins: Option<Vec<String>>,
    shutdown_timeout: Option<u64>,
    public_url: Option<String>,
    workers: Option<u64>,
    max_connections: Option<usize>,
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    write_timeout: Option<u64>,
    max_inspected_bytes: Option<usize>,
    max_batch_messages: Option<usize>,
    discard_body_bytes: Option<usize>,
    sse_keepalive: Option<u64>,
    watch_config: Option<bool>,
    tls: Option<RawTls>,
    trusted_proxies: Option<Vec<String>>,
    websocket: Option<RawWebSocket>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub max_body_bytes: usize,
    pub allowed_origins: OriginAllowList,
    pub shutdown_timeout: Duration,
    /// Serving threads, each with its own single-threaded runtime and upstream pool (see
    /// [`crate::server::run_workers`]). Default: the number of CPUs.
    pub workers: usize,
    /// The URL clients reach the gateway at (scheme://host[:port], no trailing slash), for
    /// OAuth resource metadata. `None`: derived from each request's `Host`.
    pub public_url: Option<String>,
    /// Client connections open at once, across all serving threads; one more is answered 503
    /// and closed.
    pub max_connections: usize,
    /// Bound on receiving a request's head (HTTP/1), which is also the longest a keep-alive
    /// connection may wait idle for its next request.
    pub header_timeout: Duration,
    /// Bound on receiving a request's whole body, once its head has arrived (408 past it).
    pub body_timeout: Duration,
    /// Bound on a client that accepts no bytes of its response (it stopped reading): past it
    /// the connection is closed.
    pub write_timeout: Duration,
    /// The largest upstream message the gateway reads whole to run response hooks on it (one
    /// SSE event, or one JSON response). Streams that no stage inspects are not bounded by it.
    pub max_inspected_bytes: usize,
    /// Messages one JSON-RPC batch (2025-03-26) may hold; each runs every stage.
    pub max_batch_messages: usize,
    /// How much of a body over `max_body_bytes` is read and dropped so that a client still
    /// sending receives the 413 (0: none; the connection is then reset under the client).
    pub discard_body_bytes: usize,
    /// Peers whose `X-Forwarded-For/Host/Proto` are believed (load balancers in front). From
    /// anyone else those headers are dropped and the gateway sets its own.
    pub trusted_proxies: Vec<Cidr>,
    /// A keep-alive comment on an SSE stream toward a client after this much quiet between
    /// events, so load balancers do not reap it; `None` (the default): none.
    pub sse_keepalive: Option<Duration>,
    /// HTTPS on the listener (`server.tls`); `None`: plain HTTP.
    pub tls: Option<crate::tls::Tls>,
    /// Reload when the config file, a plugin's file or a TLS file changes (polled, debounced).
    pub watch_config: bool,
    /// WebSocket clients on the MCP routes (`server.websocket`).
    pub websocket: WebSocketConfig,
}

/// `server.websocket`: clients that connect to an MCP route over WebSocket (subprotocol `mcp`,
/// one JSON-RPC message per text frame). Each message goes through the route's pipeline like a
/// POST; these bound the socket itself.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Whether an MCP route accepts the upgrade at all (default true).
    pub enabled: bool,
    /// The largest message (and frame) a client may send; a larger one closes the socket with
    /// 1009. Default: `server.max_body_bytes`, the bound on a POST's body.
    pub max_message_bytes: usize,
    /// A socket with no message either way and no request in flight for this long is closed
    /// (1000). Pings do not count as messages.
    pub idle_timeout: Duration,
    /// The gateway pings the client this often; a client that sends nothing (not even a pong)
    /// for two intervals is dropped.
    pub ping_interval: Duration,
    /// Requests one socket may have awaiting their answers; one more is answered at once with
    /// a JSON-RPC error.
    pub max_in_flight: usize,
    /// The query parameter that may carry the caller's credential on the upgrade, for browsers,
    /// which cannot set headers on a WebSocket (`None`, the default: credentials come in
    /// headers only).
    pub query_token: Option<String>,
}

impl ServerConfig {
    /// The scheme clients reach the listener with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network (e.g. 10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on an IPv6 socket (::ffff:a.b.c.d) is that IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Allowed values of the `Origin` header. Entries are exact origins (`https://app.example.com`),
/// origins with any port (`http://localhost:*`), or `*` for any origin.
#[derive(Debug, Clone)]
pub struct OriginAllowList {
    any: bool,
    exact: Vec<String>,
    any_port: Vec<String>,
}

impl OriginAllowList {
    /// Browsers on this machine only: what the MCP SDKs allow by default for local servers.
    pub fn loopback() -> Self {
        Self::parse(&["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]).expect("valid")
    }

    fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut list = OriginAllowList {
            any: false,
            exact: Vec::new(),
            any_port: Vec::new(),
        };
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                list.any = true;
            } else if let Some(prefix) = entry.strip_suffix(":*") {
                check_origin(prefix)?;
                list.any_port.push(prefix.to_ascii_lowercase());
            } else {
                check_origin(entry)?;
                list.exact.push(entry.to_ascii_lowercase());
            }
        }
        Ok(list)
    }

    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        if self.exact.contains(&origin) {
            return true;
        }
        self.any_port.iter().any(|prefix| {
            origin == *prefix
                || origin
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|port| {
                        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                    })
        })
    }
}

fn check_origin(origin: &str) -> Result<(), String> {
    let url = url::Url::parse(origin).map_err(|e| format!("`{origin}` is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.path() != "/"
        || origin.ends_with('/')
    {
        return Err(format!(
            "`{origin}` is not an origin (scheme://host[:port], no path)"
        ));
    }
    Ok(())
}

impl Validator<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> ServerConfig {
        let bind = match raw.bind.as_deref().map(str::trim) {
            None => IpAddr::from([127, 0, 0, 1]),
            Some("localhost") => IpAddr::from([127, 0, 0, 1]),
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.error(
                    "server.bind",
                    format!("`{text}` is not an IP address (for example 127.0.0.1 or 0.0.0.0)"),
                );
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            self.error("server.max_body_bytes", "must be greater than 0");
        }
        let allowed_origins = match raw.allowed_origins {
            None => OriginAllowList::loopback(),
            Some(list) => OriginAllowList::parse(&list).unwrap_or_else(|e| {
                self.error("server.allowed_origins", e);
                OriginAllowList::loopback()
            }),
        };
        ServerConfig {
            bind,
            port: raw.port.unwrap_or(DEFAULT_PORT),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            allowed_origins,
            shutdown_timeout: Duration::from_millis(
                raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            ),
            public_url: raw.public_url.and_then(|u| self.public_url(&u)),
            workers: self.workers(raw.workers),
            max_connections: self.at_least_one(
                "server.max_connections",
                raw.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
            header_timeout: self.positive_ms(
                "server.header_timeout",
                raw.header_timeout,
                DEFAULT_HEADER_TIMEOUT_MS,
            ),
            body_timeout: self.positive_ms(
                "server.body_timeout",
                raw.body_timeout,
                DEFAULT_BODY_TIMEOUT_MS,
            ),
            write_timeout: self.positive_ms(
                "server.write_timeout",
                raw.write_timeout,
                DEFAULT_WRITE_TIMEOUT_MS,
            ),
            max_inspected_bytes: self.at_least_one(
                "server.max_inspected_bytes",
                raw.max_inspected_bytes,
                DEFAULT_MAX_INSPECTED_BYTES,
            ),
            max_batch_messages: self.at_least_one(
                "server.max_batch_messages",
                raw.max_batch_messages,
                DEFAULT_MAX_BATCH_MESSAGES,
            ),
            trusted_proxies: raw
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    Cidr::parse(c)
                        .map_err(|e| self.error(&format!("server.trusted_proxies[{i}]"), e))
                        .ok()
                })
                .collect(),
            discard_body_bytes: raw.discard_body_bytes.unwrap_or(DEFAULT_DISCARD_BODY_BYTES),
            tls: raw.tls.and_then(|t| self.tls(t)),
            watch_config: raw.watch_config.unwrap_or(false),
            websocket: self.websocket(raw.websocket.unwrap_or_default(), max_body_bytes),
            sse_keepalive: raw.sse_keepalive.map(|ms| {
                self.positive_ms("server.sse_keepalive", Some(ms), DEFAULT_SSE_KEEPALIVE_MS)
            }),
        }
    }

    /// `server.websocket`, its bounds defaulting to the POST's.
    fn websocket(&mut self, raw: RawWebSocket, max_body_bytes: u64) -> WebSocketConfig {
        let query_token = raw.query_token.map(|q| q.trim().to_string());
        if let Some(q) = &query_token
            && (q.is_empty()
                || !q
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
        {
            self.error(
                "server.websocket.query_token",
                format!(
                    "`{q}` is not a query parameter name (letters, digits, `_`, `-`, `.`; for example access_token)"
                ),
            );
        }
        WebSocketConfig {
            enabled: raw.enabled.unwrap_or(true),
            max_message_bytes: self.at_least_one(
                "server.websocket.max_message_bytes",
                raw.max_message_bytes,
                usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            ),
            idle_timeout: self.positive_ms(
                "server.websocket.idle_timeout",
                raw.idle_timeout,
                DEFAULT_WS_IDLE_TIMEOUT_MS,
            ),
            ping_interval: self.positive_ms(
                "server.websocket.ping_interval",
                raw.ping_interval,
                DEFAULT_WS_PING_INTERVAL_MS,
            ),
            max_in_flight: self.at_least_one(
                "server.websocket.max_in_flight",
                raw.max_in_flight,
                DEFAULT_WS_MAX_IN_FLIGHT,
            ),
            query_token,
        }
    }

    /// `server.tls`: both files, read and checked now, so `validate` reports a wrong path, a
    /// file that is not PEM or a key that does not fit at its key's line.
    fn tls(&mut self, raw: RawTls) -> Option<crate::tls::Tls> {
        let file = |v: &mut Self, key: &str, text: Option<String>| {
            let text = text.filter(|t| !t.trim().is_empty());
            if text.is_none() {
                v.missing(
                    &format!("server.tls.{key}"),
                    "required: a PEM file (the certificate chain, or its private key)",
                );
            }
            text.map(|t| std::path::PathBuf::from(t.trim()))
        };
        let cert = file(self, "cert", raw.cert);
        let key = file(self, "key", raw.key);
        let (cert, key) = (cert?, key?);
        match crate::tls::Tls::load(&cert, &key) {
            Ok(tls) => Some(tls),
            Err(crate::tls::TlsError::Cert(m)) => {
                self.error("server.tls.cert", m);
                None
            }
            Err(crate::tls::TlsError::Key(m)) => {
                self.error("server.tls.key", m);
                None
            }
        }
    }

    fn workers(&mut self, raw: Option<u64>) -> usize {
        match raw {
            None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n @ 1..=MAX_WORKERS) => usize::try_from(n).unwrap_or(1),
            Some(n) => {
                self.error(
                    "server.workers",
                    format!("{n} is out of range: 1 to {MAX_WORKERS} serving threads"),
                );
                1
            }
        }
    }
}
