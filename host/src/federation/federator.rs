//! One federated route's endpoint: a Streamable HTTP server (on 127.0.0.1, only for this
//! gateway, see `crate::loopback`) in front of the route's members.
//!
//! - **Names**: each member's tools and prompts are listed as `<prefix><name>` (the prefix is
//!   `{member}_` unless the config says otherwise); a call or `prompts/get` is routed to the
//!   member whose prefix its name carries (the longest that fits), the prefix stripped on the way.
//!   Resource URIs are kept as the members list them and routed to the member that listed them.
//! - **Lists** (tools, prompts, resources, resource templates) are asked of every member in
//!   parallel, each within its own `timeout`; a member that fails or times out is left out with a
//!   warning and `mcpgate_federation_member_failures_total`, never failing the list. A page's
//!   `nextCursor` is the gateway's own (each member's cursor inside it). A name two members
//!   would both list is served from the first (in `members` order) and logged with both sources.
//! - **Legacy sessions**: `initialize` opens one session per member in parallel; the route's
//!   session id carries them all (the gateway seals it into the client's token like any
//!   upstream's), capabilities are merged, `serverInfo` is the gateway's own. The GET stream
//!   merges the members' streams; DELETE ends every member's session.
//! - **What flows back**: progress and other notifications pass through; a member's request to
//!   the client (sampling, elicitation, roots) goes out under an id that names the member, so the
//!   client's answer is routed back to it with the member's own id. Client notifications
//!   (`initialized`, `cancelled`, roots changes) go to every member: ids are the client's own
//!   and unique within its session, so a member ignores a cancellation that is not its own.
//! - **2026-07-28**: stateless; the same routing, the routing headers rewritten where a name
//!   is, `server/discover` merged under the gateway's identity, `subscriptions/listen` streams
//!   merged (one acknowledgement; the client's stream completes once every member's has).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::{Federation, Upstream};
use crate::loopback::{
    BRIDGE_HEADER, Body, Endpoint, Loopback, empty, json as json_response, rpc_error, sse_event,
    sse_from,
};
use crate::mcp::headers::{MCP_METHOD, MCP_NAME, MCP_SESSION_ID};
use crate::mcp::sse::{EventSplitter, is_event_stream};
use crate::mcp::{jsonrpc, scan};
use crate::proxy::{Outgoing, Peer, UpstreamClient};

/// The largest request body the endpoint reads (the gateway's own limit applies before it).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The largest answer of one member the endpoint reads whole (for merging).
const MAX_MEMBER_ANSWER: usize = 16 * 1024 * 1024;
/// Resource URIs remembered (which member listed them); past it the map starts afresh.
const MAX_KNOWN_URIS: usize = 100_000;
/// Messages waiting for a slow client on one relayed stream.
const STREAM_BUFFER: usize = 256;
/// The prefix of a server request's id as the client sees it: `mcpgate-fed:<member>:<raw id>`.
const REMAPPED_ID: &str = "mcpgate-fed:";
/// The prefix of the route's own session ids and cursors.
const OWN_TOKEN: &str = "fed1.";

/// Cached list pages at most (one per member, method, cursor and protocol version); past it the
/// cache starts afresh.
const MAX_CACHED_PAGES: usize = 10_000;

/// The metrics of the federated routes.
#[derive(Debug, Clone)]
pub struct FederationMetrics {
    /// `mcpgate_federation_member_failures_total{route, member}`.
    pub failures: prometheus::IntCounterVec,
    /// `mcpgate_federation_catalog_requests_total{route, member, result}` (`hit`, `miss`).
    pub catalog: prometheus::IntCounterVec,
    /// `mcpgate_federation_name_collisions{route}`: names two members would both serve, as the
    /// last catalog check found them.
    pub collisions: prometheus::IntGaugeVec,
}

/// Members' list pages kept for their time to live: a 2026-07-28 page its `ttlMs` when its
/// `cacheScope` is `public` (a `private` one is never kept: it is one caller's), a legacy page
/// `catalog_ttl` when the route sets it. A member's `list_changed` drops its pages of that list.
/// Policy filtering happens after, in the gateway, per caller.
#[derive(Default)]
struct Catalog {
    pages: Mutex<HashMap<PageKey, (RawObject, std::time::Instant)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    member: Arc<str>,
    method: String,
    cursor: Option<String>,
    version: String,
}

impl Catalog {
    fn get(&self, key: &PageKey) -> Option<RawObject> {
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (result, expires) = pages.get(key)?;
        let now = std::time::Instant::now();
        if *expires <= now {
            pages.remove(key);
            return None;
        }
        let mut result = result.clone();
        if result.get("ttlMs").is_some() {
            // What is left of its time, so a client caching it too does not outlive it.
            let left = u64::try_from((*expires - now).as_millis()).unwrap_or(u64::MAX);
            result.set_json("ttlMs", &left);
        }
        Some(result)
    }

    fn put(&self, key: PageKey, result: &RawObject, legacy_ttl: Option<std::time::Duration>) {
        let ttl = match result.parse::<String>("cacheScope").as_deref() {
            Some("public") => result
                .parse::<u64>("ttlMs")
                .filter(|t| *t > 0)
                .map(std::time::Duration::from_millis),
            Some(_) => None,
            None if result.get("ttlMs").is_some() => None,
            None => legacy_ttl,
        };
        let Some(ttl) = ttl else { return };
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pages.len() >= MAX_CACHED_PAGES {
            pages.clear();
        }
        pages.insert(key, (result.clone(), std::time::Instant::now() + ttl));
    }

    /// A member said one of its lists changed.
    fn changed(&self, member: &str, method: &str) {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| !(*k.member == *member && k.method == method));
    }
}

/// The list a `notifications/<kind>/list_changed` is about.
fn changed_list(method: &str) -> Option<&'static str> {
    match method {
        "notifications/tools/list_changed" => Some("tools/list"),
        "notifications/prompts/list_changed" => Some("prompts/list"),
        "notifications/resources/list_changed" => Some("resources/list"),
        _ => None,
    }
}

/// A member as the endpoint reaches it.
#[derive(Debug, Clone)]
struct Member {
    name: Arc<str>,
    prefix: String,
    upstream: Arc<Upstream>,
}

/// One federated route's endpoint.
pub struct Federator {
    route: Arc<str>,
    loopback: Loopback,
    members: ArcSwap<Vec<Member>>,
    client: UpstreamClient,
    /// The gateway, as the members' requests come from it (its `X-Forwarded-*` are believed).
    peer: Peer,
    /// Resource URI → the member that listed it.
    uris: Mutex<HashMap<String, Arc<str>>>,
    /// A prefixed tool or prompt name → the member a list served it from, where prefixes alone
    /// are ambiguous (one member's prefix extends another's).
    names: Mutex<HashMap<String, Arc<str>>>,
    catalog: Arc<Catalog>,
    /// `catalog_ttl` of the route as configured now.
    legacy_ttl: Mutex<Option<std::time::Duration>>,
    metrics: Option<FederationMetrics>,
}

impl std::fmt::Debug for Federator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federator")
            .field("route", &self.route)
            .field("members", &self.members.load().len())
            .finish_non_exhaustive()
    }
}

impl crate::loopback::Stop for Federator {
    fn stop(&self) {
        self.loopback.stop();
    }
}

impl Endpoint for Federator {
    fn handle(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.serve(request)
    }
}

/// A member's answer read whole: the JSON-RPC response to the request, and its session header.
struct Answer {
    message: Value,
    session: Option<String>,
}

/// What [`Federator::catalog_check`] found.
#[derive(Debug, Default)]
pub struct CatalogCheck {
    /// Names two members would both serve after prefixing, in the order found.
    pub collisions: Vec<Collision>,
    /// Members that could not be asked, and why.
    pub unasked: Vec<(Arc<str>, String)>,
}

/// A tool or prompt name two members of a federated route would both serve after prefixing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// `tool` or `prompt`.
    pub kind: &'static str,
    /// The name as the route would serve it.
    pub shown: String,
    /// The member that comes first in `members` (its name is the one served), with its own name.
    pub first: (Arc<str>, String),
    /// The member whose name is shadowed, with its own name.
    pub second: (Arc<str>, String),
}

impl std::fmt::Display for Collision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Collision {
            kind,
            shown,
            first: (a, a_own),
            second: (b, b_own),
        } = self;
        write!(
            f,
            "the {kind} `{shown}` would be served by member {a} (its `{a_own}`) and by member {b} (its `{b_own}`); {a}'s is served: give one of them its own prefix"
        )
    }
}

impl Federator {
    /// Binds the endpoint and serves it until dropped or stopped. Needs a tokio runtime.
    pub fn start(
        route: Arc<str>,
        client: UpstreamClient,
        metrics: Option<FederationMetrics>,
    ) -> std::io::Result<Arc<Federator>> {
        let loopback = Loopback::bind()?;
        let gateway: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        let trusted = crate::config::Cidr::parse("127.0.0.1/32").expect("a CIDR");
        let federator = Arc::new(Federator {
            route,
            loopback,
            members: ArcSwap::from_pointee(Vec::new()),
            client,
            peer: Peer::new(gateway, &[trusted]),
            uris: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            catalog: Arc::new(Catalog::default()),
            legacy_ttl: Mutex::new(None),
            metrics,
        });
        federator.loopback.serve(Arc::downgrade(&federator))?;
        Ok(federator)
    }

    pub fn url(&self) -> http::Uri {
        self.loopback.url()
    }

    pub fn credential(&self) -> (HeaderName, HeaderValue) {
        self.loopback.credential()
    }

    pub fn stop(&self) {
        self.loopback.stop();
    }

    /// The members as `upstreams` (the whole config's, stdio routes attached) describe them.
    pub fn set_members(&self, federation: &Federation, upstreams: &[Arc<Upstream>]) {
        let members = federation
            .members
            .iter()
            .filter_map(|m| {
                let upstream = upstreams.iter().find(|u| u.name == m.name)?.clone();
                Some(Member {
                    name: m.name.clone(),
                    prefix: m.prefix.clone(),
                    upstream,
                })
            })
            .collect();
        self.members.store(Arc::new(members));
        *self
            .legacy_ttl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = federation.catalog_ttl;
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        // A reload may have changed what the members are: nothing cached is trusted.
        self.catalog
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// At start and on every reload: [`Federator::catalog_check`], each collision logged with
    /// both sources (the first member's name is the one served) and counted in
    /// `mcpgate_federation_name_collisions`. Members that cannot be asked yet are skipped.
    pub async fn check_catalogs(self: Arc<Self>) {
        let check = self.catalog_check().await;
        for (member, why) in &check.unasked {
            tracing::debug!(route = %self.route, member = %member, "catalog not checked: {why}");
        }
        for c in &check.collisions {
            tracing::warn!(route = %self.route, "federated route: {c}");
        }
        if let Some(metrics) = &self.metrics {
            metrics
                .collisions
                .with_label_values(&[self.route.as_ref()])
                .set(i64::try_from(check.collisions.len()).unwrap_or(i64::MAX));
        }
    }

    /// Asks every member (in parallel) for its tool and prompt names: the names two members
    /// would both serve after prefixing, and the members that could not be asked. Where
    /// prefixes alone are ambiguous, the member each name is served from is remembered.
    pub async fn catalog_check(&self) -> CatalogCheck {
        let members = self.members.load_full();
        let asks = members
            .iter()
            .map(|m| async move { (m, self.catalog_names(m).await) });
        let mut seen: HashMap<String, (Arc<str>, String)> = HashMap::new();
        let mut check = CatalogCheck::default();
        for (m, names) in futures_util::future::join_all(asks).await {
            let names = match names {
                Ok(n) => n,
                Err(why) => {
                    check.unasked.push((m.name.clone(), why));
                    continue;
                }
            };
            for (kind, own) in names {
                let shown = format!("{}{own}", m.prefix);
                match seen.get(&shown) {
                    Some((first, first_own)) => check.collisions.push(Collision {
                        kind,
                        shown,
                        first: (first.clone(), first_own.clone()),
                        second: (m.name.clone(), own),
                    }),
                    None => {
                        if self.ambiguous(&shown) {
                            remember(&self.names, &shown, &m.name);
                        }
                        seen.insert(shown, (m.name.clone(), own));
                    }
                }
            }
        }
        check
    }

    /// A member's tool and prompt names (`("tool", name)`, `("prompt", name)`), asked statelessly
    /// (2026-07-28) or, where the member does not speak that, in a session of its own.
    async fn catalog_names(&self, member: &Member) -> Result<Vec<(&'static str, String)>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let meta = json!({"io.modelcontextprotocol/protocolVersion": crate::mcp::MODERN_VERSION,
                          "io.modelcontextprotocol/clientCapabilities": {}});
        let mut modern = headers.clone();
        modern.insert(
            crate::mcp::headers::MCP_PROTOCOL_VERSION,
            HeaderValue::from_static(crate::mcp::MODERN_VERSION),
        );
        let mut names = Vec::new();
        let mut session = None;
        for (kind, method, key) in [
            ("tool", "tools/list", "tools"),
            ("prompt", "prompts/list", "prompts"),
        ] {
            let body = |meta: Option<&Value>| {
                let mut m = json!({"jsonrpc": "2.0", "id": "mcpgate-check", "method": method, "params": {}});
                if let Some(meta) = meta {
                    m["params"]["_meta"] = meta.clone();
                }
                Bytes::from(m.to_string())
            };
            let mut asked = modern.clone();
            asked.insert(MCP_METHOD, HeaderValue::from_static(method));
            let answer = match (
                &session,
                self.ask(member, &asked, None, body(Some(&meta))).await,
            ) {
                (None, Ok(a)) if a.message.get("result").is_some() => a,
                _ => {
                    if session.is_none() {
                        session = Some(self.check_session(member, &headers).await?);
                    }
                    let mut with_version = headers.clone();
                    with_version.insert(
                        crate::mcp::headers::MCP_PROTOCOL_VERSION,
                        HeaderValue::from_static("2025-11-25"),
                    );
                    self.ask(member, &with_version, session.as_ref(), body(None))
                        .await?
                }
            };
            for entry in answer.message["result"][key]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(name) = entry["name"].as_str() {
                    names.push((kind, name.to_string()));
                }
            }
        }
        if let Some(s) = &session
            && let Ok(r) = self
                .send(member, Method::DELETE, &headers, Some(s), Bytes::new())
                .await
        {
            let _ = r.into_body().collect().await;
        }
        Ok(names)
    }

    /// A legacy session with `member` for the catalog check.
    async fn check_session(
        &self,
        member: &Member,
        headers: &HeaderMap,
    ) -> Result<Sessions, String> {
        let init = json!({"jsonrpc": "2.0", "id": "mcpgate-check", "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcpgate-catalog-check", "version": env!("CARGO_PKG_VERSION")}}});
        let answer = self
            .ask(member, headers, None, Bytes::from(init.to_string()))
            .await?;
        let mut sessions = Sessions::default();
        if let Some(s) = answer.session {
            sessions.0.insert(member.name.to_string(), s);
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if let Ok(r) = self
            .send(
                member,
                Method::POST,
                headers,
                Some(&sessions),
                Bytes::from(initialized.to_string()),
            )
            .await
        {
            let _ = r.into_body().collect().await;
        }
        Ok(sessions)
    }

    async fn serve(self: Arc<Self>, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let session = match parts.headers.get(&MCP_SESSION_ID).map(decode_session) {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => return empty(StatusCode::NOT_FOUND),
        };
        match parts.method {
            Method::POST => {}
            Method::GET => return self.get_stream(&parts.headers, session.as_ref()).await,
            Method::DELETE => {
                self.end_sessions(&parts.headers, session.as_ref()).await;
                return empty(StatusCode::OK);
            }
            _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
        }
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
        };
        let message: Value = match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "federated routes take one message per request (no batches)",
                );
            }
            Err(e) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    jsonrpc::PARSE_ERROR,
                    &format!("not JSON: {e}"),
                );
            }
        };
        let headers = parts.headers;
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let has_id = message.get("id").is_some_and(|id| !id.is_null());
        match (method.as_deref(), has_id) {
            // A client's answer to a member's request.
            (None, _) => {
                self.answer_member(&headers, session.as_ref(), message)
                    .await
            }
            (Some(_), false) => self.notify_all(&headers, session.as_ref(), &body).await,
            (Some(m), true) => {
                self.request(m, &headers, session.as_ref(), message, body)
                    .await
            }
        }
    }

    /// One request of the client's, by method.
    async fn request(
        &self,
        method: &str,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        message: Value,
        body: Bytes,
    ) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        match method {
            "initialize" => self.initialize(headers, message, body).await,
            "ping" => result(&id, json!({})),
            "server/discover" => self.discover(headers, message, body).await,
            "tools/list" => self.list(headers, session, message, "tools", "name").await,
            "prompts/list" => {
                self.list(headers, session, message, "prompts", "name")
                    .await
            }
            "resources/list" => {
                self.list(headers, session, message, "resources", "uri")
                    .await
            }
            "resources/templates/list" => {
                self.list(
                    headers,
                    session,
                    message,
                    "resourceTemplates",
                    "uriTemplate",
                )
                .await
            }
            "tools/call" | "prompts/get" => self.call_by_name(headers, session, message).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.call_by_uri(headers, session, message, body).await
            }
            "completion/complete" => self.complete(headers, session, message).await,
            "subscriptions/listen" => self.listen(headers, message, body).await,
            "logging/setLevel" => {
                let members = self.members.load_full();
                let asks = members
                    .iter()
                    .map(|m| self.ask(m, headers, session, body.clone()));
                futures_util::future::join_all(asks).await;
                result(&id, json!({}))
            }
            other => rpc_error(
                StatusCode::OK,
                raw_id(&id).as_deref(),
                jsonrpc::METHOD_NOT_FOUND,
                &format!(
                    "`{other}` is not served by the federated route {}",
                    self.route
                ),
            ),
        }
    }

    /// Sends `body` to `member` as a POST (with the member's session, its own credential).
    async fn send(
        &self,
        member: &Member,
        method: Method,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut headers = headers.clone();
        headers.remove(&BRIDGE_HEADER);
        let member_session = session.and_then(|s| s.0.get(member.name.as_ref()));
        let request_id = headers
            .get(&crate::proxy::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let outgoing = Outgoing {
            method,
            request_id: &request_id,
            upstream_session: member_session.map(String::as_str),
            headers,
            body,
        };
        let request = crate::proxy::upstream_request(&member.upstream, outgoing, &self.peer, &[])
            .map_err(|e| e.to_string())?;
        let mut waited = None;
        self.client
            .send(&member.upstream, request, &mut waited)
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks `member` and reads its whole answer (JSON, or the response event of an SSE
    /// stream), within its timeout.
    async fn ask(
        &self,
        member: &Member,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        body: Bytes,
    ) -> Result<Answer, String> {
        let (raw, session) = self.ask_raw(member, headers, session, body).await?;
        let message = serde_json::from_slice::<Value>(&raw)
            .map_err(|e| format!("its answer is not JSON: {e}"))?;
        Ok(Answer { message, session })
    }

    /// [`Federator::ask`], the response message left as JSON text (with the member's session
    /// id): for a caller that reads only part of it.
    async fn ask_raw(
        &self,
        member: &Member,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        body: Bytes,
    ) -> Result<(Bytes, Option<String>), String> {
        let asked = async {
            let response = self
                .send(member, Method::POST, headers, session, body)
                .await?;
            let status = response.status();
            let member_session = response
                .headers()
                .get(&MCP_SESSION_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let sse = is_event_stream(response.headers());
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_MEMBER_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("its answer broke off: {e}"))?
                .to_bytes();
            let message = if sse {
                let mut splitter = EventSplitter::default();
                splitter.push(&bytes);
                let mut found = None;
                while let Some(data) = splitter.next_message() {
                    if is_response(&data) {
                        found = Some(Bytes::from(data));
                    }
                }
                found
            } else {
                is_response(&bytes).then_some(bytes)
            };
            match message {
                Some(message) => Ok((message, member_session)),
                None => Err(format!(
                    "it answered HTTP {} without a JSON-RPC response",
                    status.as_u16()
                )),
            }
        };
        match tokio::time::timeout(member.upstream.timeout, asked).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within its timeout ({} ms)",
                member.upstream.timeout.as_millis()
            )),
        }
    }

    /// A member left out of a merged answer: logged and counted.
    fn left_out(&self, member: &Member, method: &str, why: &str) {
        tracing::warn!(route = %self.route, member = %member.name, method, "a member of a federated route was left out: {why}");
        if let Some(m) = &self.metrics {
            m.failures
                .with_label_values(&[self.route.as_ref(), member.name.as_ref()])
                .inc();
        }
    }

    /// Asks every member (or those `only` names) the same request in parallel.
    async fn fan_out(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        bodies: Vec<(Member, Bytes)>,
        method: &str,
    ) -> Vec<(Member, Answer)> {
        let asks = bodies.into_iter().map(|(m, body)| async move {
            let answer = self.ask(&m, headers, session, body).await;
            (m, answer)
        });
        let mut out = Vec::new();
        for (m, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(a) if a.message.get("error").is_some() => {
                    let why = a.message["error"].to_string();
                    self.left_out(&m, method, &format!("it answered an error: {why}"));
                }
                Ok(a) => out.push((m, a)),
                Err(why) => self.left_out(&m, method, &why),
            }
        }
        out
    }

    /// [`Federator::fan_out`] for list pages: each result read one level deep ([`RawObject`]),
    /// its entries left as JSON text until merged.
    async fn fan_out_pages(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        bodies: Vec<(Member, Bytes)>,
        method: &str,
    ) -> Vec<(Member, RawObject)> {
        let asks = bodies.into_iter().map(|(m, body)| async move {
            let answer = self.ask_raw(&m, headers, session, body).await;
            (m, answer)
        });
        let mut out = Vec::new();
        for (m, answer) in futures_util::future::join_all(asks).await {
            let answer = answer.and_then(|(raw, _)| {
                std::str::from_utf8(&raw)
                    .map_err(|_| scan::ScanError("not UTF-8"))
                    .and_then(PageAnswer::read)
                    .map_err(|e| format!("its answer is not a list result: {e}"))
            });
            match answer {
                Ok(PageAnswer {
                    error: Some(error), ..
                }) => {
                    self.left_out(&m, method, &format!("it answered an error: {error}"));
                }
                Ok(PageAnswer {
                    result: Some(page), ..
                }) => out.push((m, page)),
                Ok(_) => self.left_out(&m, method, "its answer has no result"),
                Err(why) => self.left_out(&m, method, &why),
            }
        }
        out
    }

    /// The same request to every member, without a session; the error the client gets when
    /// none answers.
    async fn ask_all(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        method: &str,
        id: &Value,
    ) -> Result<Vec<(Member, Answer)>, Response<Body>> {
        let members = self.members.load_full();
        let bodies = members.iter().map(|m| (m.clone(), body.clone())).collect();
        let answers = self.fan_out(headers, None, bodies, method).await;
        if answers.is_empty() {
            return Err(rpc_error(
                StatusCode::BAD_GATEWAY,
                raw_id(id).as_deref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &format!(
                    "no member of the federated route {} answered {method}",
                    self.route
                ),
            ));
        }
        Ok(answers)
    }

    /// `initialize`: a session with every member that answers, capabilities merged.
    async fn initialize(&self, headers: &HeaderMap, message: Value, body: Bytes) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let answers = match self.ask_all(headers, body, "initialize", &id).await {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        let requested = message["params"]["protocolVersion"].as_str().unwrap_or("");
        let versions: Vec<&str> = answers
            .iter()
            .filter_map(|(_, a)| a.message["result"]["protocolVersion"].as_str())
            .collect();
        let version = if versions.contains(&requested) {
            requested
        } else {
            versions.first().copied().unwrap_or(requested)
        };
        let mut capabilities = serde_json::Map::new();
        let mut instructions = Vec::new();
        let mut sessions = Sessions::default();
        for (m, a) in &answers {
            merge_capabilities(&mut capabilities, &a.message["result"]["capabilities"]);
            if let Some(text) = a.message["result"]["instructions"].as_str() {
                instructions.push(format!(
                    "{} (tools and prompts prefixed `{}`): {text}",
                    m.name, m.prefix
                ));
            }
            if let Some(s) = &a.session {
                sessions.0.insert(m.name.to_string(), s.clone());
            }
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": self.identity(),
        });
        if !instructions.is_empty() {
            result["instructions"] = Value::String(instructions.join("\n\n"));
        }
        let mut response = self::result(&id, result);
        if let Some(v) = sessions.encode() {
            response.headers_mut().insert(MCP_SESSION_ID, v);
        }
        response
    }

    /// The gateway's identity as a federated route's server.
    fn identity(&self) -> Value {
        json!({
            "name": format!("mcpgate/{}", self.route),
            "title": format!("{} (federated by mcpgate)", self.route),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// `server/discover` (2026-07-28): the members' answers merged under the gateway's identity.
    async fn discover(&self, headers: &HeaderMap, message: Value, body: Bytes) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let answers = match self.ask_all(headers, body, "server/discover", &id).await {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        let mut capabilities = serde_json::Map::new();
        let mut supported: Option<Vec<Value>> = None;
        let mut caching = Caching::default();
        for (_, a) in &answers {
            let r = &a.message["result"];
            merge_capabilities(&mut capabilities, &r["capabilities"]);
            caching.add(r);
            let theirs = r["supportedVersions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            supported = Some(match supported {
                None => theirs,
                Some(ours) => ours.into_iter().filter(|v| theirs.contains(v)).collect(),
            });
        }
        let mut result = json!({
            "supportedVersions": supported.unwrap_or_default(),
            "capabilities": capabilities,
            "_meta": {"io.modelcontextprotocol/serverInfo": self.identity()},
        });
        caching.apply(&mut result);
        self::result(&id, result)
    }

    /// A list method: every member's page (the first, or the one the gateway's cursor names),
    /// names prefixed, merged.
    async fn list(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        message: Value,
        key: &str,
        name_field: &str,
    ) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let method = message["method"].as_str().unwrap_or("").to_string();
        let members = self.members.load_full();
        let cursors: Option<HashMap<String, Value>> = match message["params"].get("cursor") {
            None | Some(Value::Null) => None,
            Some(c) => match c.as_str().and_then(decode_token) {
                Some(map) => Some(map),
                None => {
                    return rpc_error(
                        StatusCode::OK,
                        raw_id(&id).as_deref(),
                        jsonrpc::INVALID_PARAMS,
                        "this cursor was not made by this federated route",
                    );
                }
            },
        };
        let version = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get(&crate::mcp::headers::MCP_PROTOCOL_VERSION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let legacy_ttl = *self
            .legacy_ttl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bodies = Vec::new();
        let mut cached = Vec::new();
        let mut keys = HashMap::new();
        // A first page is the same request to every member: written once.
        let first_page = cursors.is_none().then(|| {
            let mut asked = message.clone();
            if let Some(params) = asked.get_mut("params").and_then(Value::as_object_mut) {
                params.remove("cursor");
            }
            Bytes::from(asked.to_string())
        });
        for m in members.iter() {
            let mut cursor = None;
            let body = match (&cursors, &first_page) {
                (Some(map), _) => match map.get(m.name.as_ref()) {
                    None => continue,
                    Some(c) => {
                        cursor = Some(c.to_string());
                        let mut asked = message.clone();
                        asked["params"]["cursor"] = c.clone();
                        Bytes::from(asked.to_string())
                    }
                },
                (None, Some(body)) => body.clone(),
                (None, None) => continue,
            };
            let key = PageKey {
                member: m.name.clone(),
                method: method.clone(),
                cursor,
                version: version.clone(),
            };
            if let Some(result) = self.catalog.get(&key) {
                self.count_catalog(m, "hit");
                cached.push((m.clone(), result));
                continue;
            }
            self.count_catalog(m, "miss");
            keys.insert(m.name.clone(), key);
            bodies.push((m.clone(), body));
        }
        let mut pages = self.fan_out_pages(headers, session, bodies, &method).await;
        for (m, page) in &pages {
            if let Some(key) = keys.remove(&m.name) {
                self.catalog.put(key, page, legacy_ttl);
            }
        }
        // In the members' order, cached or not: the first member's name wins a collision.
        pages.extend(cached);
        pages.sort_by_key(|(m, _)| members.iter().position(|o| o.name == m.name));
        // The entries, merged as JSON text: `[entry,entry,…]`.
        let mut merged = vec![b'['];
        let mut seen: HashMap<String, Arc<str>> = HashMap::new();
        let mut next: HashMap<String, Value> = HashMap::new();
        let mut caching = Caching::default();
        for (m, mut page) in pages {
            caching.add_raw(&page);
            if let Some(c) = page.parse::<Value>("nextCursor").filter(|c| !c.is_null()) {
                next.insert(m.name.to_string(), c);
            }
            let Some(list) = page.take(key) else { continue };
            let Ok((fields, ends)) = page_entries(&list) else {
                continue;
            };
            let mut start = 0;
            for end in ends {
                let entry = &fields[start..end];
                start = end;
                let Some(own) = entry
                    .iter()
                    .find(|f| f.is(name_field))
                    .and_then(|f| scan::string_text(f.value).ok())
                else {
                    continue;
                };
                let shown = if name_field == "name" {
                    format!("{}{own}", m.prefix)
                } else {
                    own.to_string()
                };
                if let Some(first) = seen.get(&shown) {
                    tracing::warn!(
                        route = %self.route,
                        name = %shown,
                        kept = %first,
                        dropped = %m.name,
                        "two members of a federated route list the same name: the first member's is served (give one its own prefix)"
                    );
                    continue;
                }
                if name_field == "uri" {
                    self.remember_uri(&own, &m.name);
                } else if name_field == "name" && self.ambiguous(&shown) {
                    remember(&self.names, &shown, &m.name);
                }
                if merged.len() > 1 {
                    merged.push(b',');
                }
                let renamed = (name_field == "name").then_some(shown.as_str());
                write_entry(&mut merged, entry, name_field, renamed);
                seen.insert(shown, m.name.clone());
            }
        }
        merged.push(b']');
        let size = merged.len();
        let mut result = RawObject::default();
        // Entries walked from checked text and strings written by serde_json: JSON.
        let merged = String::from_utf8(merged).map_or_else(|_| "[]".into(), String::into_boxed_str);
        result.set_text(key, merged);
        if !next.is_empty() {
            result.set_json("nextCursor", &encode_token(&next));
        }
        caching.apply_raw(&mut result);
        let mut body = Vec::with_capacity(size + 64);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        let _ = serde_json::to_writer(&mut body, &id);
        body.extend_from_slice(br#","result":"#);
        result.write_json(&mut body);
        body.push(b'}');
        json_response(StatusCode::OK, body)
    }

    fn count_catalog(&self, member: &Member, result: &str) {
        if let Some(m) = &self.metrics {
            m.catalog
                .with_label_values(&[self.route.as_ref(), member.name.as_ref(), result])
                .inc();
        }
    }

    fn remember_uri(&self, uri: &str, member: &Arc<str>) {
        remember(&self.uris, uri, member);
    }

    /// The member a prefixed name belongs to, and the name without its prefix: the member a
    /// list served it from, else the one with the longest prefix that fits.
    fn by_name(&self, name: &str) -> Option<(Member, String)> {
        let members = self.members.load();
        let listed = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned();
        listed
            .and_then(|l| members.iter().find(|m| m.name == l))
            .or_else(|| {
                members
                    .iter()
                    .filter(|m| name.starts_with(&m.prefix) && name.len() > m.prefix.len())
                    .max_by_key(|m| m.prefix.len())
            })
            .map(|m| (m.clone(), name[m.prefix.len()..].to_string()))
    }

    /// Whether more than one member's prefix fits `name` (only then is a list's choice kept).
    fn ambiguous(&self, name: &str) -> bool {
        self.members
            .load()
            .iter()
            .filter(|m| name.starts_with(&m.prefix) && name.len() > m.prefix.len())
            .count()
            > 1
    }

    /// `tools/call`, `prompts/get`: to the member the name's prefix names, the prefix stripped.
    async fn call_by_name(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        mut message: Value,
    ) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let name = message["params"]["name"].as_str().unwrap_or("").to_string();
        let Some((member, own)) = self.by_name(&name) else {
            return rpc_error(
                StatusCode::OK,
                raw_id(&id).as_deref(),
                jsonrpc::INVALID_PARAMS,
                &format!(
                    "`{name}` names no member's tool or prompt on the federated route {} (names carry the member's prefix)",
                    self.route
                ),
            );
        };
        message["params"]["name"] = Value::String(own.clone());
        let mut headers = headers.clone();
        if headers.contains_key(&MCP_NAME) {
            headers.insert(MCP_NAME, crate::mcp::headers::encode_value(&own));
        }
        let rename = Rename { own, shown: name };
        self.relay(
            &member,
            &headers,
            session,
            Bytes::from(message.to_string()),
            &id,
            Some(rename),
        )
        .await
    }

    /// Resource requests: to the member that listed the URI; an unknown URI is asked of each
    /// member in turn until one serves it.
    async fn call_by_uri(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        message: Value,
        body: Bytes,
    ) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let uri = message["params"]["uri"].as_str().unwrap_or("").to_string();
        let known = self
            .uris
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&uri)
            .cloned();
        let members = self.members.load_full();
        if let Some(m) = known.and_then(|k| members.iter().find(|m| m.name == k)) {
            return self.relay(m, headers, session, body, &id, None).await;
        }
        let mut last = None;
        for m in members.iter() {
            match self.ask(m, headers, session, body.clone()).await {
                Ok(a) if a.message.get("result").is_some() => {
                    self.remember_uri(&uri, &m.name);
                    return json_response(StatusCode::OK, a.message.to_string().into_bytes());
                }
                Ok(a) => last = Some(a.message),
                Err(why) => tracing::debug!(route = %self.route, member = %m.name, "{why}"),
            }
        }
        match last {
            Some(error) => json_response(StatusCode::OK, error.to_string().into_bytes()),
            None => rpc_error(
                StatusCode::OK,
                raw_id(&id).as_deref(),
                jsonrpc::INVALID_PARAMS,
                &format!(
                    "no member of the federated route {} serves `{uri}`",
                    self.route
                ),
            ),
        }
    }

    /// `completion/complete`: by the prompt's prefixed name, or the resource's URI.
    async fn complete(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        mut message: Value,
    ) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let reference = &message["params"]["ref"];
        let target = match reference["type"].as_str() {
            Some("ref/prompt") => {
                let name = reference["name"].as_str().unwrap_or("");
                self.by_name(name).map(|(m, own)| (m, Some(own)))
            }
            Some("ref/resource") => {
                let uri = reference["uri"].as_str().unwrap_or("");
                let known = self
                    .uris
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(uri)
                    .cloned();
                let members = self.members.load();
                known
                    .and_then(|k| members.iter().find(|m| m.name == k).cloned())
                    .or_else(|| members.first().cloned())
                    .map(|m| (m, None))
            }
            _ => None,
        };
        let Some((member, own)) = target else {
            return result(&id, json!({"completion": {"values": []}}));
        };
        if let Some(own) = own {
            message["params"]["ref"]["name"] = Value::String(own);
        }
        self.relay(
            &member,
            headers,
            session,
            Bytes::from(message.to_string()),
            &id,
            None,
        )
        .await
    }

    /// Forwards one request to `member` and streams its answer back, the member's requests to
    /// the client under remapped ids, the client-facing name restored in a failure's text
    /// (`rename`).
    async fn relay(
        &self,
        member: &Member,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        body: Bytes,
        id: &Value,
        rename: Option<Rename>,
    ) -> Response<Body> {
        let response = match self
            .send(member, Method::POST, headers, session, body)
            .await
        {
            Ok(r) => r,
            Err(why) => {
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    raw_id(id).as_deref(),
                    jsonrpc::UPSTREAM_UNAVAILABLE,
                    &format!(
                        "member {} of the federated route {}: {why}",
                        member.name, self.route
                    ),
                );
            }
        };
        let status = response.status();
        if !is_event_stream(response.headers()) {
            let bytes = match http_body_util::Limited::new(response.into_body(), MAX_MEMBER_ANSWER)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let why = if e.is::<http_body_util::LengthLimitError>() {
                        format!(
                            "member {}'s JSON answer is larger than {MAX_MEMBER_ANSWER} bytes, the most a federated route reads whole (a stream of SSE events has no such bound)",
                            member.name
                        )
                    } else {
                        format!("member {}'s answer broke off: {e}", member.name)
                    };
                    return rpc_error(
                        StatusCode::BAD_GATEWAY,
                        raw_id(id).as_deref(),
                        jsonrpc::UPSTREAM_UNAVAILABLE,
                        &why,
                    );
                }
            };
            let restored = rename.as_ref().and_then(|r| r.restore(&bytes));
            return json_response(status, restored.unwrap_or_else(|| bytes.to_vec()));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(pump_filtered(
            response.into_body(),
            member.name.clone(),
            tx,
            Filter {
                listening: None,
                rename,
            },
            self.catalog.clone(),
        ));
        sse_from(rx)
    }

    /// `subscriptions/listen` (2026-07-28): every member's subscription stream, merged. One
    /// acknowledgement reaches the client; a member that completes its stream does not end the
    /// client's, which completes (once, under the client's id) when every member's has ended.
    async fn listen(&self, headers: &HeaderMap, message: Value, body: Bytes) -> Response<Body> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let members = self.members.load_full();
        let opens = members.iter().map(|m| {
            let body = body.clone();
            async move { (m, self.send(m, Method::POST, headers, None, body).await) }
        });
        let (inner_tx, mut inner_rx) = mpsc::channel(STREAM_BUFFER);
        let filter = Arc::new(Listening {
            id: id.clone(),
            acknowledged: std::sync::atomic::AtomicBool::new(false),
        });
        let mut any = false;
        for (m, opened) in futures_util::future::join_all(opens).await {
            match opened {
                Ok(r) if r.status() == StatusCode::OK && is_event_stream(r.headers()) => {
                    any = true;
                    tokio::spawn(pump_filtered(
                        r.into_body(),
                        m.name.clone(),
                        inner_tx.clone(),
                        Filter {
                            listening: Some(filter.clone()),
                            rename: None,
                        },
                        self.catalog.clone(),
                    ));
                }
                Ok(r) => self.left_out(
                    m,
                    "subscriptions/listen",
                    &format!("it answered HTTP {}", r.status().as_u16()),
                ),
                Err(why) => self.left_out(m, "subscriptions/listen", &why),
            }
        }
        drop(inner_tx);
        if !any {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                raw_id(&id).as_deref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &format!(
                    "no member of the federated route {} opened a subscription stream",
                    self.route
                ),
            );
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            while let Some(event) = inner_rx.recv().await {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            let done = json!({"jsonrpc": "2.0", "id": id, "result": {
                "resultType": "complete",
                "_meta": {"io.modelcontextprotocol/subscriptionId": id},
            }});
            let _ = tx.send(sse_event(done.to_string().as_bytes())).await;
        });
        sse_from(rx)
    }

    /// A notification of the client's: to every member (of its session).
    async fn notify_all(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        body: &Bytes,
    ) -> Response<Body> {
        let members = self.members.load_full();
        let sends = members
            .iter()
            .filter(|m| session.is_none_or(|s| s.0.contains_key(m.name.as_ref())))
            .map(|m| async move {
                if let Ok(r) = self
                    .send(m, Method::POST, headers, session, body.clone())
                    .await
                {
                    let _ = r.into_body().collect().await;
                }
            });
        futures_util::future::join_all(sends).await;
        empty(StatusCode::ACCEPTED)
    }

    /// The client's answer to a member's request: back to that member, under its own id.
    async fn answer_member(
        &self,
        headers: &HeaderMap,
        session: Option<&Sessions>,
        mut message: Value,
    ) -> Response<Body> {
        let remapped = message.get("id").and_then(Value::as_str).and_then(unmap_id);
        let Some((member_name, original)) = remapped else {
            tracing::debug!(route = %self.route, "a client answered a request no member made: dropped");
            return empty(StatusCode::ACCEPTED);
        };
        let members = self.members.load_full();
        let Some(member) = members.iter().find(|m| *m.name == *member_name) else {
            return empty(StatusCode::ACCEPTED);
        };
        message["id"] = original;
        match self
            .send(
                member,
                Method::POST,
                headers,
                session,
                Bytes::from(message.to_string()),
            )
            .await
        {
            Ok(r) => {
                let status = r.status();
                let _ = r.into_body().collect().await;
                empty(if status.is_success() {
                    StatusCode::ACCEPTED
                } else {
                    status
                })
            }
            Err(why) => {
                tracing::warn!(route = %self.route, member = %member.name, "a client's answer could not be delivered: {why}");
                empty(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The session's GET stream: every member's, merged.
    async fn get_stream(&self, headers: &HeaderMap, session: Option<&Sessions>) -> Response<Body> {
        let Some(session) = session else {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        };
        let members = self.members.load_full();
        let opens = members
            .iter()
            .filter(|m| session.0.contains_key(m.name.as_ref()))
            .map(|m| async move {
                let r = self
                    .send(m, Method::GET, headers, Some(session), Bytes::new())
                    .await;
                (m.name.clone(), r)
            });
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut any = false;
        for (name, opened) in futures_util::future::join_all(opens).await {
            match opened {
                Ok(r) if r.status() == StatusCode::OK && is_event_stream(r.headers()) => {
                    any = true;
                    tokio::spawn(pump(r.into_body(), name, tx.clone(), self.catalog.clone()));
                }
                Ok(r) => {
                    tracing::debug!(route = %self.route, member = %name, status = r.status().as_u16(), "no GET stream from this member");
                }
                Err(why) => {
                    tracing::debug!(route = %self.route, member = %name, "no GET stream from this member: {why}");
                }
            }
        }
        if !any {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        sse_from(rx)
    }

    /// DELETE: every member's session ends.
    async fn end_sessions(&self, headers: &HeaderMap, session: Option<&Sessions>) {
        let Some(session) = session else { return };
        let members = self.members.load_full();
        let ends = members
            .iter()
            .filter(|m| session.0.contains_key(m.name.as_ref()))
            .map(|m| async move {
                if let Ok(r) = self
                    .send(m, Method::DELETE, headers, Some(session), Bytes::new())
                    .await
                {
                    let _ = r.into_body().collect().await;
                }
            });
        futures_util::future::join_all(ends).await;
    }
}

/// Relays a member's SSE stream to `tx`: each event's message as an event of its own (ids of
/// the member's stream are not passed: the client cannot resume a merged stream by them); a
/// request of the member's to the client goes out under a remapped id.
async fn pump(
    body: hyper::body::Incoming,
    member: Arc<str>,
    tx: mpsc::Sender<Bytes>,
    catalog: Arc<Catalog>,
) {
    pump_filtered(body, member, tx, Filter::default(), catalog).await;
}

/// What [`pump_filtered`] changes on the way.
#[derive(Default)]
struct Filter {
    /// A merged subscription stream's rules.
    listening: Option<Arc<Listening>>,
    /// The names of a relayed call.
    rename: Option<Rename>,
}

/// A call or `prompts/get` relayed to a member under the member's own name: where the member's
/// failure names it (`Unknown tool: echo`), the client reads the name it called
/// (`alpha_echo`). Only an error's message and a failed tool result's text are touched, and
/// only whole words.
struct Rename {
    own: String,
    shown: String,
}

impl Rename {
    /// `message` with the name restored, or `None` when it needs nothing.
    fn restore(&self, message: &[u8]) -> Option<Vec<u8>> {
        if self.own == self.shown || !std::str::from_utf8(message).ok()?.contains(&self.own) {
            return None;
        }
        let mut v: Value = serde_json::from_slice(message).ok()?;
        if v.get("method").is_some() {
            return None;
        }
        let mut changed = false;
        if let Some(text) = v.pointer_mut("/error/message") {
            changed |= self.swap(text);
        }
        if v.pointer("/result/isError") == Some(&Value::Bool(true))
            && let Some(items) = v
                .pointer_mut("/result/content")
                .and_then(Value::as_array_mut)
        {
            for item in items.iter_mut().filter(|i| i["type"] == "text") {
                if let Some(text) = item.get_mut("text") {
                    changed |= self.swap(text);
                }
            }
        }
        changed.then(|| v.to_string().into_bytes())
    }

    fn swap(&self, text: &mut Value) -> bool {
        let Some(t) = text.as_str() else {
            return false;
        };
        match replace_word(t, &self.own, &self.shown) {
            Some(new) => {
                *text = Value::String(new);
                true
            }
            None => false,
        }
    }
}

/// `text` with each mention of the tool or prompt `word` replaced: the word quoted (`'echo'`,
/// `"echo"`, `` `echo` ``) or after "tool" or "prompt" (`Unknown tool: echo`, `Error executing
/// tool echo`), and not part of a longer name. Other occurrences are prose (a tool named `get`
/// in "could not get the file") and stay.
fn replace_word(text: &str, word: &str, with: &str) -> Option<String> {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let mut out = String::with_capacity(text.len() + with.len());
    let mut last = 0;
    let mut any = false;
    for (at, _) in text.match_indices(word) {
        let end = at + word.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if at < last || part(before) || part(after) {
            continue;
        }
        let quoted = matches!(before, Some('\'' | '"' | '`')) && before == after;
        let lead = text[..at].trim_end_matches([' ', ':']);
        let named = ["tool", "prompt"].iter().any(|k| {
            lead.len() >= k.len()
                && lead.is_char_boundary(lead.len() - k.len())
                && lead[lead.len() - k.len()..].eq_ignore_ascii_case(k)
                && !part(lead[..lead.len() - k.len()].chars().next_back())
        }) && lead.len() < at;
        if !quoted && !named {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = end;
        any = true;
    }
    out.push_str(&text[last..]);
    any.then_some(out)
}

/// A merged subscription stream's rules for each member's messages.
struct Listening {
    /// The client's `subscriptions/listen` id.
    id: Value,
    acknowledged: std::sync::atomic::AtomicBool,
}

impl Listening {
    /// Whether a member's message goes to the client: not a member's completion of the stream
    /// (the merged stream completes once, itself), and the acknowledgement only once.
    fn passes(&self, data: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return true;
        };
        if v.get("method").is_none() && v.get("id") == Some(&self.id) {
            return false;
        }
        if v["method"] == "notifications/subscriptions/acknowledged" {
            return !self
                .acknowledged
                .swap(true, std::sync::atomic::Ordering::Relaxed);
        }
        true
    }
}

/// [`pump`], with a subscription stream's rules.
async fn pump_filtered(
    mut body: hyper::body::Incoming,
    member: Arc<str>,
    tx: mpsc::Sender<Bytes>,
    filter: Filter,
    catalog: Arc<Catalog>,
) {
    let mut splitter = EventSplitter::default();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            () = tx.closed() => return,
        };
        let Some(Ok(frame)) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        splitter.push(&data);
        while let Some(data) = splitter.next_message() {
            if filter.listening.as_ref().is_some_and(|l| !l.passes(&data)) {
                continue;
            }
            let data = match filter.rename.as_ref().and_then(|r| r.restore(&data)) {
                Some(restored) => restored,
                None => data,
            };
            if let Some(list) = list_changed_in(&data) {
                catalog.changed(&member, list);
            }
            let data = remap_request(&member, data);
            if tx.send(sse_event(&data)).await.is_err() {
                return;
            }
        }
        if splitter.pending() > MAX_MEMBER_ANSWER {
            tracing::warn!(member = %member, "an event of a member's stream is too large: the stream ends");
            return;
        }
    }
}

/// Notes `key` → `member` in a bounded map (past [`MAX_KNOWN_URIS`] it starts afresh).
fn remember(map: &Mutex<HashMap<String, Arc<str>>>, key: &str, member: &Arc<str>) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() >= MAX_KNOWN_URIS {
        map.clear();
    }
    map.insert(key.to_string(), member.clone());
}

/// The list a member's `list_changed` notification is about.
fn list_changed_in(data: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Note<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    let note: Note = serde_json::from_slice(data).ok()?;
    changed_list(note.method.as_deref()?)
}

/// A member's message: a request to the client gets an id that names the member.
fn remap_request(member: &str, data: Vec<u8>) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(&data) else {
        return data;
    };
    if v.get("method").is_none() {
        return data;
    }
    let Some(id) = v.get("id").filter(|id| !id.is_null()) else {
        return data;
    };
    v["id"] = Value::String(format!("{REMAPPED_ID}{member}:{id}"));
    v.to_string().into_bytes()
}

/// A remapped id back to (member, the member's own id).
fn unmap_id(id: &str) -> Option<(String, Value)> {
    let rest = id.strip_prefix(REMAPPED_ID)?;
    let (member, raw) = rest.split_once(':')?;
    Some((member.to_string(), serde_json::from_str(raw).ok()?))
}

/// Each member's session id, as the route's one session id carries them.
#[derive(Debug, Default, Clone)]
struct Sessions(HashMap<String, String>);

impl Sessions {
    fn encode(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let map: HashMap<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        HeaderValue::from_str(&encode_token(&map)).ok()
    }
}

fn decode_session(v: &HeaderValue) -> Option<Sessions> {
    let map = decode_token(v.to_str().ok()?)?;
    Some(Sessions(
        map.into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect(),
    ))
}

/// A map as one of the route's own tokens (session ids, cursors): `fed1.` + base64url(JSON).
fn encode_token(map: &HashMap<String, Value>) -> String {
    let text = serde_json::to_string(map).expect("a map of JSON values");
    format!(
        "{OWN_TOKEN}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    )
}

fn decode_token(token: &str) -> Option<HashMap<String, Value>> {
    let b64 = token.strip_prefix(OWN_TOKEN)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Capabilities the route does not federate, left out of the merged ones so that no client
/// relies on them: tasks (a task's id is one member's, and `tasks/*` requests name no member).
const NOT_FEDERATED: &[&str] = &["tasks"];

/// Capabilities of several servers as one: a capability any member has; `listChanged` and
/// `subscribe` where any member offers them.
fn merge_capabilities(into: &mut serde_json::Map<String, Value>, theirs: &Value) {
    let Some(theirs) = theirs.as_object() else {
        return;
    };
    for (k, v) in theirs {
        if NOT_FEDERATED.contains(&k.as_str()) {
            continue;
        }
        match (into.get_mut(k), v) {
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            (Some(Value::Object(ours)), Value::Object(more)) => {
                for (flag, value) in more {
                    let on = value.as_bool() == Some(true)
                        || ours.get(flag).and_then(Value::as_bool) == Some(true);
                    if value.is_boolean() {
                        ours.insert(flag.clone(), Value::Bool(on));
                    } else {
                        ours.entry(flag.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

/// `ttlMs` and `cacheScope` of merged 2026-07-28 results: the shortest time, and `private` when
/// any member's is.
#[derive(Default)]
struct Caching {
    ttl: Option<u64>,
    private: bool,
    any: bool,
    /// A member's result carried `resultType` (2026-07-28): the merged one does too.
    typed: bool,
}

impl Caching {
    fn add(&mut self, result: &Value) {
        self.typed |= result.get("resultType").is_some();
        if let Some(t) = result.get("ttlMs").and_then(Value::as_u64) {
            self.ttl = Some(self.ttl.map_or(t, |o| o.min(t)));
            self.any = true;
        }
        if let Some(s) = result.get("cacheScope").and_then(Value::as_str) {
            self.private |= s == "private";
            self.any = true;
        }
    }

    fn add_raw(&mut self, result: &RawObject) {
        self.typed |= result.get("resultType").is_some();
        if let Some(t) = result.parse::<u64>("ttlMs") {
            self.ttl = Some(self.ttl.map_or(t, |o| o.min(t)));
            self.any = true;
        }
        if let Some(s) = result.parse::<String>("cacheScope") {
            self.private |= s == "private";
            self.any = true;
        }
    }

    fn apply_raw(&self, result: &mut RawObject) {
        let mut v = Value::Object(serde_json::Map::new());
        self.apply(&mut v);
        if let Value::Object(fields) = v {
            for (k, field) in &fields {
                result.set_json(k, field);
            }
        }
    }

    fn apply(&self, result: &mut Value) {
        if self.typed {
            result["resultType"] = json!("complete");
        }
        if !self.any {
            return;
        }
        result["ttlMs"] = json!(self.ttl.unwrap_or(0));
        result["cacheScope"] = json!(if self.private { "private" } else { "public" });
    }
}

/// A JSON object read one level deep: its members in order (repeats kept), each value kept as
/// the JSON text the strict walk that read it checked. A list page's entries are merged from
/// their text, so a tool's schema is copied, never parsed.
#[derive(Debug, Clone, Default)]
struct RawObject(Vec<(String, Box<str>)>);

impl RawObject {
    /// The object `text` (surrounding whitespace allowed), checked whole as `serde_json` reads
    /// JSON.
    #[cfg(test)]
    fn read(text: &str) -> Result<RawObject, scan::ScanError> {
        let mut c = scan::Cursor::strict(text);
        let object = RawObject::walk(&mut c)?;
        c.end()?;
        Ok(object)
    }

    /// The object at the strict cursor `c`.
    fn walk(c: &mut scan::Cursor<'_>) -> Result<RawObject, scan::ScanError> {
        let mut fields = Vec::new();
        c.object(|c, key| {
            let value = c.skip()?;
            fields.push((scan::string_text(key)?.into_owned(), value.into()));
            Ok(())
        })?;
        Ok(RawObject(fields))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The member `key` read as a `T` (`None` when absent or of another type).
    fn parse<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?).ok()
    }

    fn take(&mut self, key: &str) -> Option<Box<str>> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// Sets `key` to `value`, where the member was (any later member of that name dropped),
    /// or last.
    fn set_json<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        if let Ok(text) = serde_json::to_string(value) {
            self.set_text(key, text.into());
        }
    }

    /// [`RawObject::set_json`] with the value's JSON text, which must be JSON.
    fn set_text(&mut self, key: &str, text: Box<str>) {
        match self.0.iter().position(|(k, _)| k == key) {
            Some(at) => {
                self.0[at].1 = text;
                let mut i = 0;
                self.0.retain(|(k, _)| {
                    i += 1;
                    i - 1 <= at || k != key
                });
            }
            None => self.0.push((key.to_string(), text)),
        }
    }

    /// Its JSON text, the values as read.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'}');
    }
}

/// `s` as a JSON string.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A member's answer to a list request, read in one strict walk: the answer is JSON as
/// `serde_json` reads it, its `id`, `result` and `error` each at most once (as the gateway's
/// response hooks require), the result an object (read one level deep) or `null`.
struct PageAnswer {
    result: Option<RawObject>,
    error: Option<String>,
}

impl PageAnswer {
    fn read(text: &str) -> Result<PageAnswer, scan::ScanError> {
        let mut c = scan::Cursor::strict(text);
        let mut once = crate::pipeline::AnswerMembers::default();
        let (mut result, mut error) = (None, None);
        c.object(|c, key| {
            let which = once.note(key)?;
            if which == Some(crate::pipeline::AnswerMembers::RESULT) && c.peek() == Some(b'{') {
                result = Some(RawObject::walk(c)?);
                return Ok(());
            }
            let value = c.skip()?;
            match which {
                Some(crate::pipeline::AnswerMembers::RESULT) if value != "null" => {
                    return Err(scan::ScanError("its result is not an object"));
                }
                Some(crate::pipeline::AnswerMembers::ERROR) if value != "null" => {
                    error = Some(value.to_string());
                }
                _ => {}
            }
            Ok(())
        })?;
        c.end()?;
        Ok(PageAnswer { result, error })
    }
}

/// The entries of a list page (`list`, checked by the walk that read the page) as the spans of
/// their members, flat: `(members, ends)` where entry `i` is `members[ends[i - 1]..ends[i]]`.
/// An element that is not an object fails the whole list.
fn page_entries(list: &str) -> Result<(Vec<scan::Member<'_>>, Vec<usize>), scan::ScanError> {
    let (mut members, mut ends) = (Vec::new(), Vec::new());
    let mut c = scan::Cursor::new(list);
    c.array(|c| {
        c.object(|c, key| {
            let value = c.skip()?;
            members.push(scan::Member { key, value });
            Ok(())
        })?;
        ends.push(members.len());
        Ok(())
    })?;
    c.end()?;
    Ok((members, ends))
}

/// The entry of `members` as JSON text into `out`: its first `field` member (a later one of
/// that name is dropped, so the client reads the one the gateway judged) with the value
/// `shown` when given (a prefixed name), the others as written.
fn write_entry(out: &mut Vec<u8>, members: &[scan::Member<'_>], field: &str, shown: Option<&str>) {
    out.push(b'{');
    let (mut first, mut named) = (true, false);
    for m in members {
        let named_here = m.is(field);
        if named_here && std::mem::replace(&mut named, true) {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(m.key.as_bytes());
        out.push(b':');
        match shown {
            Some(shown) if named_here => write_string(out, shown),
            _ => out.extend_from_slice(m.value.as_bytes()),
        }
    }
    out.push(b'}');
}

/// Whether `message` is a JSON-RPC response (a result or an error, not a request): `method`
/// absent, `result` or `error` given, none of the three twice (whichever a reader would take
/// is then ambiguous). A quick look at the top level (what it skips is not checked): whoever
/// reads the message checks it, strictly ([`PageAnswer::read`], `serde_json`).
fn is_response(message: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(message) else {
        return false;
    };
    // `method`, `result`, `error`: how often each came, and whether one was not null.
    let mut seen = [(0u8, false); 3];
    let mut c = scan::Cursor::new(text);
    let walked = c.object(|c, key| {
        let value = c.skip()?;
        if let Some(i) = ["method", "result", "error"]
            .iter()
            .position(|name| scan::key_is(key, name))
        {
            seen[i].0 = seen[i].0.saturating_add(1);
            seen[i].1 |= value != "null";
        }
        Ok(())
    });
    let [method, result, error] = seen;
    walked.and_then(|()| c.end()).is_ok()
        && seen.iter().all(|(n, _)| *n <= 1)
        && !method.1
        && (result.1 || error.1)
}

fn raw_id(id: &Value) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(id.to_string()).ok()
}

/// A JSON-RPC result for `id`, serialized straight from its parts (`json!` would deep-copy
/// `result` into a new tree first: a merged list's every entry).
fn result<T: serde::Serialize>(id: &Value, result: T) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct Envelope<'a, T> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: T,
    }
    let bytes = serde_json::to_vec(&Envelope {
        jsonrpc: "2.0",
        id,
        result,
    })
    .unwrap_or_default();
    json_response(StatusCode::OK, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_ids_come_back_to_their_member() {
        for raw in [r#"7"#, r#""abc""#, r#""a:b""#] {
            let out = remap_request(
                "github",
                format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"sampling/createMessage"}}"#)
                    .into_bytes(),
            );
            let v: Value = serde_json::from_slice(&out).unwrap();
            let (member, id) = unmap_id(v["id"].as_str().unwrap()).unwrap();
            assert_eq!(member, "github");
            assert_eq!(id, serde_json::from_str::<Value>(raw).unwrap());
        }
        // Notifications and responses pass byte for byte.
        let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#.to_vec();
        assert_eq!(remap_request("m", note.clone()), note);
        assert_eq!(unmap_id("7"), None);
    }

    #[test]
    fn sessions_and_cursors_round_trip() {
        let mut s = Sessions::default();
        s.0.insert("a".into(), "sess-1".into());
        s.0.insert("b".into(), "sess-2".into());
        let v = s.encode().unwrap();
        let back = decode_session(&v).unwrap();
        assert_eq!(back.0, s.0);
        assert!(decode_session(&HeaderValue::from_static("fed1.!!")).is_none());
        assert!(decode_session(&HeaderValue::from_static("other")).is_none());
        assert!(Sessions::default().encode().is_none());
    }

    #[test]
    fn capabilities_merge_by_union() {
        let mut into = serde_json::Map::new();
        merge_capabilities(
            &mut into,
            &json!({"tools": {"listChanged": false}, "logging": {}}),
        );
        merge_capabilities(
            &mut into,
            &json!({"tools": {"listChanged": true}, "prompts": {}, "tasks": {"list": {}}}),
        );
        assert_eq!(
            Value::Object(into),
            json!({"tools": {"listChanged": true}, "logging": {}, "prompts": {}})
        );
    }

    #[test]
    fn the_caches_and_maps_stay_bounded() {
        let raw = |v: Value| RawObject::read(&v.to_string()).unwrap();
        let catalog = Catalog::default();
        let page = raw(json!({"tools": [], "ttlMs": 60000, "cacheScope": "public"}));
        for i in 0..=MAX_CACHED_PAGES {
            let key = PageKey {
                member: "m".into(),
                method: "tools/list".into(),
                cursor: Some(i.to_string()),
                version: "2026-07-28".into(),
            };
            catalog.put(key, &page, None);
        }
        let kept = catalog.pages.lock().unwrap().len();
        assert!((1..=MAX_CACHED_PAGES).contains(&kept), "{kept}");
        // Private pages and pages without a time are never kept.
        let empty = Catalog::default();
        let key = PageKey {
            member: "m".into(),
            method: "tools/list".into(),
            cursor: None,
            version: "2026-07-28".into(),
        };
        empty.put(
            key.clone(),
            &raw(json!({"ttlMs": 60000, "cacheScope": "private"})),
            None,
        );
        empty.put(
            key.clone(),
            &raw(json!({"ttlMs": 0, "cacheScope": "public"})),
            None,
        );
        empty.put(key, &raw(json!({"tools": []})), None);
        assert!(empty.pages.lock().unwrap().is_empty());
        let uris = Mutex::new(HashMap::new());
        let member: Arc<str> = "m".into();
        for i in 0..=MAX_KNOWN_URIS {
            remember(&uris, &format!("file:///{i}"), &member);
        }
        let known = uris.lock().unwrap().len();
        assert!((1..=MAX_KNOWN_URIS).contains(&known), "{known}");
    }

    #[test]
    fn failures_name_what_the_client_called() {
        let r = Rename {
            own: "echo".into(),
            shown: "alpha_echo".into(),
        };
        let error =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool: echo"}}"#;
        let v: Value = serde_json::from_slice(&r.restore(error).unwrap()).unwrap();
        assert_eq!(v["error"]["message"], "Unknown tool: alpha_echo");
        let failed = br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[{"type":"text","text":"Error executing tool echo: 'echo' broke; echo_all, alpha_echo and an echo stay"}]}}"#;
        let v: Value = serde_json::from_slice(&r.restore(failed).unwrap()).unwrap();
        assert_eq!(
            v["result"]["content"][0]["text"],
            "Error executing tool alpha_echo: 'alpha_echo' broke; echo_all, alpha_echo and an echo stay"
        );
        // A result that succeeded, a notification, text without the name: untouched.
        let fine =
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"echo"}]}}"#;
        assert!(r.restore(fine).is_none());
        let note =
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"echo"}}"#;
        assert!(r.restore(note).is_none());
        assert!(r.restore(br#"{"error":{"message":"echoes"}}"#).is_none());
        assert!(r.restore(b"\xff echo").is_none());
        assert_eq!(
            replace_word("Tool `echo`, Prompt: echo", "echo", "a_echo").unwrap(),
            "Tool `a_echo`, Prompt: a_echo"
        );
        assert_eq!(replace_word("é 'echo' é", "echo", "x").unwrap(), "é 'x' é");
        assert!(replace_word("could not get it", "get", "x").is_none());
        assert!(replace_word("mytool get, 'get\"", "get", "x").is_none());
        assert!(replace_word("tool", "tool", "x").is_none());
        assert!(replace_word("", "echo", "x").is_none());
    }

    #[test]
    fn raw_objects_keep_their_members_as_written() {
        let text = |o: &RawObject| {
            let mut out = Vec::new();
            o.write_json(&mut out);
            String::from_utf8(out).unwrap()
        };
        let mut o = RawObject::read(
            r#" {"name":"echo","inputSchema":{"type":"object","x":[1, 2]},"n":1} "#,
        )
        .unwrap();
        assert_eq!(o.parse::<String>("name").as_deref(), Some("echo"));
        assert_eq!(o.parse::<String>("n"), None);
        o.set_json("name", "alpha_echo");
        assert_eq!(
            text(&o),
            r#"{"name":"alpha_echo","inputSchema":{"type":"object","x":[1, 2]},"n":1}"#
        );
        let mut twice = RawObject::read(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        twice.set_json("a", &4);
        assert_eq!(text(&twice), r#"{"a":4,"b":2}"#);
        assert!(o.take("n").is_some() && o.get("n").is_none());
        // Keys are read unescaped and written as JSON strings again.
        let escaped = RawObject::read(r#"{"n\u0061me":"x","q\"":1}"#).unwrap();
        assert_eq!(escaped.get("name"), Some(r#""x""#));
        assert_eq!(text(&escaped), r#"{"name":"x","q\"":1}"#);
        // Checked whole, however deep the fault: it is not JSON as serde_json reads it.
        for bad in [
            "[1]",
            r#"{"a":1"#,
            r#"{"a":{"b":[1,2,]}}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":01}"#,
            r#"{"a":1} x"#,
        ] {
            assert!(RawObject::read(bad).is_err(), "{bad}");
            assert!(bad == "[1]" || serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err());
        }
        assert!(is_response(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert!(is_response(br#"{"id":1,"error":{"code":1,"message":"x"}}"#));
        assert!(is_response(br#"{"id":1,"r\u0065sult":{}}"#));
        assert!(!is_response(
            br#"{"id":1,"method":"sampling/createMessage","params":{}}"#
        ));
        assert!(!is_response(br#"{"id":1,"result":null}"#));
        assert!(!is_response(br#"{"id":1,"result":{},"method":"x"}"#));
        // Which of two results (or errors) would a reader take? Not an answer.
        assert!(!is_response(br#"{"id":1,"result":{},"result":{"x":1}}"#));
        assert!(!is_response(br#"{"id":1,"error":{},"\u0065rror":{}}"#));
        assert!(!is_response(
            br#"{"id":1,"result":{},"method":null,"method":null}"#
        ));
        assert!(!is_response(b"{oops"));
        assert!(!is_response(b"\xff{}"));
        assert!(!is_response(br#"[{"id":1,"result":{}}]"#));
    }

    #[test]
    fn a_page_answer_is_read_strictly_once() {
        let page = PageAnswer::read(
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a"}],"nextCursor":"c2"}}"#,
        )
        .unwrap();
        let result = page.result.unwrap();
        assert_eq!(result.get("tools"), Some(r#"[{"name":"a"}]"#));
        assert_eq!(result.parse::<String>("nextCursor").as_deref(), Some("c2"));
        assert!(page.error.is_none());
        let failed =
            PageAnswer::read(r#"{"id":7,"error":{"code":-32601,"message":"no"},"result":null}"#)
                .unwrap();
        assert!(failed.result.is_none());
        assert_eq!(
            failed.error.as_deref(),
            Some(r#"{"code":-32601,"message":"no"}"#)
        );
        for hostile in [
            // Not JSON deep inside an entry: the member is left out, never merged.
            r#"{"id":7,"result":{"tools":[{"name":"a","inputSchema":{"x":[1,,2]}}]}}"#,
            r#"{"id":7,"result":{"tools":[{"name":"a\q"}]}}"#,
            // A second result or id (however spelled): which one would a client read?
            r#"{"id":7,"result":{"tools":[]},"result":{"tools":[{"name":"x"}]}}"#,
            r#"{"id":7,"result":{"tools":[]},"r\u0065sult":{"tools":[]}}"#,
            r#"{"id":7,"result":{"tools":[]},"id":8}"#,
            // A result that is not an object, text after the answer.
            r#"{"id":7,"result":[]}"#,
            r#"{"id":7,"result":{"tools":[]}}{}"#,
        ] {
            assert!(PageAnswer::read(hostile).is_err(), "{hostile}");
        }
        // Nesting past serde_json's 127 levels inside an entry.
        let deep = format!(
            r#"{{"id":7,"result":{{"tools":[{{"name":"a","s":{}{}}}]}}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        assert!(PageAnswer::read(&deep).is_err());
    }

    #[test]
    fn entries_merge_as_written_with_one_name() {
        let list = r#"[ {"name":"echo", "inputSchema":{"type":"object","x":[1, 2]}},
            {"description":"d","na\u006de":"two","name":"again"}, {"name":3} ]"#;
        let (fields, ends) = page_entries(list).unwrap();
        assert_eq!(ends, vec![2, 5, 6]);
        let entry = |i: usize, shown: Option<&str>| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let mut out = Vec::new();
            write_entry(&mut out, &fields[start..ends[i]], "name", shown);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            entry(0, Some("m_echo")),
            r#"{"name":"m_echo","inputSchema":{"type":"object","x":[1, 2]}}"#
        );
        // The first name member is the one judged and shown; a repeat is dropped, so a client
        // reading the last of repeated keys reads the same name.
        assert_eq!(
            entry(1, Some("m_\"two")),
            r#"{"description":"d","na\u006de":"m_\"two"}"#
        );
        assert_eq!(entry(1, None), r#"{"description":"d","na\u006de":"two"}"#);
        // An element that is not an object fails the member's whole page.
        assert!(page_entries(r#"[{"name":"a"},"b"]"#).is_err());
        assert!(page_entries("[]").unwrap().1.is_empty());
    }

    #[test]
    fn merged_caching_is_the_strictest() {
        let mut c = Caching::default();
        c.add(&json!({"ttlMs": 5000, "cacheScope": "public"}));
        c.add(&json!({"ttlMs": 1000, "cacheScope": "private"}));
        let mut r = json!({});
        c.apply(&mut r);
        assert_eq!(r, json!({"ttlMs": 1000, "cacheScope": "private"}));
        let mut none = json!({});
        Caching::default().apply(&mut none);
        assert_eq!(none, json!({}));
    }
}
