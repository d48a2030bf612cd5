//! One request on an MCP route, as a value ([`McpExchange`]) that goes through the phases
//! ARCHITECTURE.md names, each a method:
//!
//! ```text
//!  edge ─▶ envelope ─▶ era rules ─▶ stages ─▶ session ─▶ forward ─▶ respond
//! ```
//!
//! Every phase returns early with a [`GatewayError`]; [`McpExchange::finish`] is the one place
//! the outcome becomes the client's response (and its audit record and metrics). From the
//! session phase until the request is sent, a failure gives back what the stages charged.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use super::Gateway;
use super::body::read_body;
use super::gateway::Generation;
use crate::config::Upstream;
use crate::error::GatewayError;
use crate::mcp::{Era, ParsedBody, rules};
use crate::observability::Summary;
use crate::pipeline::{Outcome, Pipeline, RequestContext, ResponseHooks};
use crate::proxy::keepalive::KeepAlive;
use crate::proxy::relay::{BoxError, Relay};
use crate::proxy::{self, Outgoing, Peer, X_REQUEST_ID};
use crate::session::{Answered, SessionBinding};

/// Handles one request on the MCP route `name` and answers it, errors included.
pub(super) async fn serve_mcp<B>(
    gw: Arc<Gateway>,
    name: &str,
    peer: Peer,
    request: http::Request<B>,
) -> Response
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    use tracing::Instrument as _;
    let mut exchange = McpExchange::new(&gw, name, &peer, request.headers(), request.method());
    let span = exchange.summary.span.clone();
    let result = exchange.run(request).instrument(span).await;
    exchange.finish(result)
}

/// One request on an MCP route, from the client's bytes to the response.
struct McpExchange<'a> {
    gw: &'a Gateway,
    /// The config generation this request runs on from start to end, whatever a reload does
    /// meanwhile.
    generation: Arc<Generation>,
    route: &'a str,
    peer: &'a Peer,
    /// What the request did, for the audit log and metrics.
    summary: Summary,
    /// The id an error answer carries: the request's, once its body is read.
    error_id: Option<Box<RawValue>>,
    /// Headers the stages want on the response, whatever it turns out to be (rate-limit headers).
    response_headers: HeaderMap,
}

impl<'a> McpExchange<'a> {
    fn new(
        gw: &'a Gateway,
        route: &'a str,
        peer: &'a Peer,
        headers: &HeaderMap,
        method: &Method,
    ) -> Self {
        let generation = gw.current();
        let request_id = request_id(headers);
        let span = gw.obs.span(&request_id, route, headers);
        let mut summary = gw.obs.summary(request_id, route, method.clone(), span);
        summary.peer = Some(peer.client_ip(headers, &generation.config.server.trusted_proxies));
        McpExchange {
            gw,
            generation,
            route,
            peer,
            summary,
            error_id: None,
            response_headers: HeaderMap::new(),
        }
    }

    /// The phases in order.
    async fn run<B>(&mut self, request: http::Request<B>) -> Result<Response, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let upstream = self.edge(&parts)?;
        let Some(upstream) = upstream else {
            return Err(self.unknown_server(&parts, body).await);
        };
        let (bytes, parsed) = self.envelope(&parts, body).await?;
        if let Some(parsed) = &parsed {
            self.era_rules(parsed, &parts.headers)?;
        }
        let mut cx = Box::new(RequestContext::new(
            self.summary.request_id.clone(),
            upstream,
            parts.method,
            parts.headers,
            parsed,
        ));
        cx.peer = self.summary.peer;
        let session = SessionBinding::of(cx.era, &cx.headers, cx.body.as_ref());
        let pipeline = self.generation.pipeline(&cx.upstream.name);
        if let Some(answer) = self.stages(&pipeline, &mut cx).await? {
            return Ok(answer);
        }
        let opened = self.session(&session, &mut cx);
        pipeline.refunding(&mut cx, opened).await?;
        let (hooks, answer) = self.forward(&pipeline, &mut cx, bytes).await?;
        self.respond(cx, hooks, &session, answer).await
    }

    /// Edge: the route, the HTTP method, `Origin` (the DNS-rebinding defence for browsers).
    /// `None`: no upstream is configured under the route's name.
    fn edge(&self, parts: &Parts) -> Result<Option<Arc<Upstream>>, GatewayError> {
        let Some(upstream) = self.generation.config.upstream(self.route).cloned() else {
            return Ok(None);
        };
        if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
            return Err(GatewayError::MethodNotAllowed(parts.method.clone()));
        }
        if let Some(origin) = parts.headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("<not text>");
            if !self.generation.config.server.allowed_origins.allows(origin) {
                return Err(GatewayError::OriginForbidden(origin.to_string()));
            }
        }
        Ok(Some(upstream))
    }

    /// No such route: best effort, the error answers with the request's id so the client can
    /// match it.
    async fn unknown_server<B>(&mut self, parts: &Parts, body: B) -> GatewayError
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if parts.method == Method::POST
            && let Ok(bytes) = read_body(
                self.gw,
                &self.generation.config.server,
                body,
                &parts.headers,
            )
            .await
        {
            self.error_id = ParsedBody::parse(&bytes)
                .ok()
                .and_then(|p| p.error_id().map(ToOwned::to_owned));
        }
        GatewayError::UnknownServer(self.route.to_string())
    }

    /// Envelope: a POST's body read once (bounded) and parsed once.
    async fn envelope<B>(
        &mut self,
        parts: &Parts,
        body: B,
    ) -> Result<(Bytes, Option<ParsedBody>), GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if parts.method != Method::POST {
            return Ok((Bytes::new(), None));
        }
        let bytes = read_body(
            self.gw,
            &self.generation.config.server,
            body,
            &parts.headers,
        )
        .await?;
        let parsed = ParsedBody::parse(&bytes).map_err(|e| {
            self.error_id = e.id.clone();
            GatewayError::bad_request(e.code, e.message)
        })?;
        self.error_id = parsed.error_id().map(ToOwned::to_owned);
        self.summary.describe(&parsed);
        if self.gw.obs.log_bodies() {
            self.summary.request_body = Some(bytes.clone());
        }
        Ok((bytes, Some(parsed)))
    }

    /// Era rules: batches are legacy-only and bounded; routing headers mirror the body.
    fn era_rules(&self, parsed: &ParsedBody, headers: &HeaderMap) -> Result<(), GatewayError> {
        let max_batch = self.generation.config.server.max_batch_messages;
        rules::check(parsed, headers, max_batch)
            .map_err(|e| GatewayError::bad_request(e.code, e.message))
    }

    /// Stages: auth fills `cx.caller` first (the session is bound to it); a stage may refuse
    /// (an error) or answer locally (`Some`).
    async fn stages(
        &mut self,
        pipeline: &Pipeline,
        cx: &mut RequestContext,
    ) -> Result<Option<Response>, GatewayError> {
        let outcome = pipeline.on_request(cx).await;
        std::mem::swap(&mut self.response_headers, &mut cx.response_headers);
        self.summary.identify(cx);
        if self.gw.obs.log_bodies() {
            self.summary.secrets = secrets(cx, &self.generation.credential_headers);
        }
        match outcome? {
            Outcome::Respond(response) => {
                self.summary.responded(cx.responded_by.take());
                Ok(Some(response))
            }
            Outcome::Forward => Ok(None),
        }
    }

    /// Session: a legacy request's sealed id opened into `cx.session`.
    fn session(
        &mut self,
        session: &SessionBinding,
        cx: &mut RequestContext,
    ) -> Result<(), GatewayError> {
        let caller = cx.caller.as_ref().map(|c| c.id.as_ref());
        cx.session = session.open(&self.gw.sessions, &cx.upstream.name, caller)?;
        if let Some(claims) = &cx.session {
            self.summary.session = Some(claims.id.clone());
        }
        Ok(())
    }

    /// Forward: requests whose responses a stage inspects go out under ids of the gateway's
    /// own (a GET stream may carry their responses too); the upstream request is built and sent,
    /// and its answer's head awaited.
    async fn forward(
        &mut self,
        pipeline: &Pipeline,
        cx: &mut RequestContext,
        body: Bytes,
    ) -> Result<(ResponseHooks, http::Response<Incoming>), GatewayError> {
        use tracing::Instrument as _;
        let sessions = &self.gw.sessions;
        let hooks = if cx.body.is_some() {
            let hooked = pipeline.hook_requests(cx, sessions);
            pipeline.refunding(cx, hooked).await?
        } else if cx.http_method == Method::GET && cx.era == Era::Legacy {
            pipeline.stream_hooks(sessions)
        } else {
            pipeline.stream_hooks(sessions).none()
        };
        let body = match &cx.body {
            Some(b) if cx.body_modified() => Bytes::from(b.to_bytes()),
            _ => body,
        };
        // Response hooks may read the client's headers; without hooks nothing does after this,
        // so they move into the upstream request instead of being copied.
        let headers = if hooks.inspects() {
            cx.headers.clone()
        } else {
            std::mem::take(&mut cx.headers)
        };
        let outgoing = Outgoing {
            method: cx.http_method.clone(),
            request_id: &cx.request_id,
            upstream_session: cx.session.as_ref().map(|s| s.upstream_session.as_str()),
            headers,
            body,
        };
        let built = proxy::upstream_request(
            &cx.upstream,
            outgoing,
            self.peer,
            &self.generation.credential_headers,
        );
        let mut request = pipeline.refunding(cx, built).await?;
        self.summary.forwarded(cx);
        let span =
            self.gw
                .obs
                .upstream_span(&self.summary.span, &cx.upstream, request.headers_mut());
        let sent = self
            .gw
            .client
            .send(&cx.upstream, request, &mut cx.timings.upstream_headers)
            .instrument(span)
            .await;
        self.summary.upstream_seconds = cx.timings.upstream_headers.map(|d| d.as_secs_f64());
        if let Some(health) = self.gw.health.route(&cx.upstream.name) {
            match &sent {
                Ok(r) if r.status().is_server_error() => {
                    health.failed(&format!("HTTP {}", r.status()));
                }
                Ok(_) => health.ok(cx.timings.upstream_headers.unwrap_or_default()),
                Err(e) => health.failed(&e.to_string()),
            }
        }
        Ok((hooks, sent?))
    }

    /// Respond: the upstream's head (a refusal of the gateway's own credential is the gateway's
    /// error), the session id rewritten, then the body: relayed as it comes, or through the
    /// response hooks.
    async fn respond(
        &mut self,
        mut cx: Box<RequestContext>,
        hooks: ResponseHooks,
        session: &SessionBinding,
        answer: http::Response<Incoming>,
    ) -> Result<Response, GatewayError> {
        let (mut parts, body) = answer.into_parts();
        self.refused_credential(&cx, &parts)?;
        let is_sse = proxy::clean_response_headers(&mut parts.headers);
        cx.upstream_status = Some(parts.status.as_u16());
        cx.response_streamed = is_sse;
        self.summary.upstream_status = cx.upstream_status;
        self.summary.streamed = is_sse;
        let answered = Answered {
            upstream: &cx.upstream.name,
            method: &cx.http_method,
            caller: cx.caller.as_ref().map(|c| c.id.as_ref()),
            claims: cx.session.as_ref(),
        };
        session.answer(
            &self.gw.sessions,
            answered,
            parts.status,
            &mut parts.headers,
        );

        let shutdown = (cx.http_method == Method::GET).then(|| self.gw.shutdown.clone());
        let relayed = Relay::new(body, cx.upstream.stream_idle_timeout, shutdown);
        let limit = self.generation.config.server.max_inspected_bytes;
        let keepalive = self
            .generation
            .config
            .server
            .sse_keepalive
            .filter(|_| is_sse);
        let body = if !hooks.inspects() {
            Body::new(relayed)
        } else if is_sse {
            Body::new(crate::pipeline::hooked_sse(relayed, cx, hooks, limit))
        } else {
            let error_status = !parts.status.is_success();
            let bytes = crate::pipeline::hooked_json(relayed, &cx, &hooks, limit, error_status)
                .await
                .map_err(|e| uninspectable(&cx.upstream, limit, &*e))?;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            Body::from(bytes)
        };
        // After the hooks: they never see a keep-alive comment.
        let body = match keepalive {
            Some(every) => Body::new(KeepAlive::new(body, every)),
            None => body,
        };
        Ok(Response::from_parts(parts, body))
    }

    /// The upstream refusing the gateway's own credentials is the gateway's problem to report:
    /// passed on, its 401 and `WWW-Authenticate` would send an MCP client into an OAuth flow
    /// against the wrong server.
    fn refused_credential(
        &mut self,
        cx: &RequestContext,
        parts: &http::response::Parts,
    ) -> Result<(), GatewayError> {
        if !matches!(
            parts.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Ok(());
        }
        self.summary.upstream_status = Some(parts.status.as_u16());
        tracing::warn!(
            upstream = %cx.upstream.name,
            status = parts.status.as_u16(),
            challenge = ?parts.headers.get(header::WWW_AUTHENTICATE),
            "the upstream refused the gateway's request: check upstreams.<name>.auth"
        );
        Err(GatewayError::UpstreamRefused {
            upstream: cx.upstream.name.to_string(),
            status: parts.status.as_u16(),
        })
    }

    /// The response the client gets: the answer, or the error's (with the request's id); the
    /// request id and the stages' headers on either; the audit record and metrics written.
    fn finish(mut self, result: Result<Response, GatewayError>) -> Response {
        let request_id = self.summary.request_id.clone();
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(request_id = %request_id, upstream = %self.route, error = %e, "request failed");
                } else {
                    tracing::debug!(request_id = %request_id, upstream = %self.route, error = %e, "request refused");
                }
                self.summary.failed(&e);
                e.into_response(self.error_id.as_deref())
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
        for (name, value) in self.response_headers.iter() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        self.gw.obs.finish(self.summary, response)
    }
}

/// A JSON answer the hooks could not read (too large, or broken off).
fn uninspectable(
    upstream: &Upstream,
    limit: usize,
    e: &(dyn std::error::Error + 'static),
) -> GatewayError {
    let reason = if e.is::<http_body_util::LengthLimitError>() {
        format!("it is larger than server.max_inspected_bytes ({limit} bytes)")
    } else {
        e.to_string()
    };
    GatewayError::Uninspectable {
        upstream: upstream.name.to_string(),
        reason,
    }
}

/// The client's `X-Request-Id` when it is usable (printable ASCII, at most 128 bytes), else a
/// fresh random one.
fn request_id(headers: &HeaderMap) -> Arc<str> {
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

/// The strings the audit log must never write for this request: the caller's credential (a
/// bearer token or an API key) and the upstream's.
fn secrets(cx: &RequestContext, credential_headers: &[header::HeaderName]) -> Vec<String> {
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
    for name in credential_headers {
        cx.headers.get_all(name).iter().for_each(&mut add);
    }
    if let Some((_, v)) = &cx.upstream.credential {
        add(v);
    }
    out
}
