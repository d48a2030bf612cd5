//! What operators see: Prometheus metrics, the audit log, tracing spans.
//!
//! The MCP handler fills one [`Summary`] per request as it goes (what was asked, who asked, which
//! stage decided, what the upstream said). When the response is built, [`Observability::finish`]
//! wraps its body; the summary is recorded once, when that body ends, is dropped (the client went
//! away) or fails: metrics, one audit record, the span closed with the outcome. Responses are never
//! buffered for it; the wrapper only watches frames go by (and, with `audit.log_bodies`, copies
//! the first bytes of JSON responses).
//!
//! - [`metrics`]: families, bounded labels, lock-free recording, `/metrics`.
//! - [`audit`]: records, the bounded queue and its writer thread, body redaction.
//! - [`trace`]: the subscriber with OTLP export, W3C trace context in and out.

pub mod audit;
pub mod metrics;
pub mod recent;
mod summary;
pub mod trace;

use summary::NO_SERVER;
pub use summary::{Decision, Summary};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::Method;
use http_body::{Frame, SizeHint};
use prometheus::Registry;
use serde_json::Value;

use crate::config::Config;
use crate::mcp::{Era, Message};
use crate::pipeline::{BoxFuture, Reply, RequestContext, ResponseVerdict, Stage, Verdict};
use crate::session::Sessions;
use audit::{AuditLog, AuditRecord};
use metrics::{Metrics, RouteMetrics, UpstreamErrorKind};

/// Milliseconds since the Unix epoch of `t` (0 before it): the admin API's and dashboard's
/// timestamps.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The three signals, as configured under `observability:`.
pub struct Observability {
    pub registry: Registry,
    pub metrics: Option<Metrics>,
    pub metrics_path: Option<String>,
    /// SHA-256 of the bearer token `/metrics` requires, if any.
    pub metrics_token: Option<[u8; 32]>,
    pub audit: Option<AuditLog>,
    /// The latest decisions, for the admin dashboard (`admin:` configured).
    pub recent: Option<recent::RecentDecisions>,
    /// A span per request.
    pub spans: bool,
    /// Spans are exported: the gateway takes part in the client's trace (`traceparent`).
    pub export: bool,
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("metrics", &self.metrics.is_some())
            .field("audit", &self.audit)
            .field("spans", &self.spans)
            .field("export", &self.export)
            .finish()
    }
}

impl Observability {
    /// Everything off (a registry still exists for plugin metrics).
    pub fn off(registry: Registry) -> Self {
        Observability {
            registry,
            metrics: None,
            metrics_path: None,
            metrics_token: None,
            audit: None,
            recent: None,
            spans: false,
            export: false,
        }
    }

    /// Sets up what `config.observability` asks for. The audit sink is opened here, so a file
    /// that cannot be written fails the start with the reason.
    pub fn new(
        config: &Config,
        registry: Registry,
        sessions: Arc<Sessions>,
    ) -> Result<Self, String> {
        let cfg = &config.observability;
        // The admin dashboard shows the request metrics: they are kept with `admin:` even
        // when no listener exposes them.
        let kept = cfg.metrics.clone().or_else(|| {
            config
                .admin
                .as_ref()
                .map(|_| crate::config::MetricsConfig::default())
        });
        let metrics = kept
            .as_ref()
            .map(|m| Metrics::new(&registry, m, &config.upstreams, sessions))
            .transpose()
            .map_err(|e| format!("observability.metrics: {e}"))?;
        let audit = cfg
            .audit
            .as_ref()
            .map(|a| AuditLog::start(a, &registry))
            .transpose()
            .map_err(|e| format!("observability.audit: {e}"))?;
        let public = cfg
            .metrics
            .as_ref()
            .filter(|m| m.listener == crate::config::MetricsListener::Public);
        Ok(Observability {
            metrics_path: public.map(|m| m.path.clone()),
            recent: config
                .admin
                .as_ref()
                .map(|a| recent::RecentDecisions::new(a.recent_decisions)),
            metrics_token: cfg.metrics.as_ref().and_then(|m| m.token_sha256),
            metrics,
            audit,
            spans: cfg.tracing.is_some(),
            export: cfg
                .tracing
                .as_ref()
                .is_some_and(|t| t.otlp_endpoint.is_some()),
            registry,
        })
    }

    /// Resolves the metric handles of routes a reload added.
    pub fn add_routes(&self, upstreams: &[Arc<crate::config::Upstream>]) {
        if let Some(m) = &self.metrics {
            m.add_routes(upstreams);
        }
    }

    /// Whether any signal needs the per-request summary recorded.
    pub fn is_on(&self) -> bool {
        self.metrics.is_some() || self.audit.is_some() || self.spans || self.recent.is_some()
    }

    /// A new request's summary; with every signal off it records nothing and allocates nothing.
    pub fn summary(
        &self,
        request_id: Arc<str>,
        server: &str,
        http_method: Method,
        span: tracing::Span,
    ) -> Summary {
        if self.is_on() {
            Summary::new(request_id, server, http_method, span)
        } else {
            Summary::inactive(request_id, http_method)
        }
    }

    /// Whether the audit log wants bodies (the handler keeps the request bytes then).
    pub fn log_bodies(&self) -> bool {
        self.audit.as_ref().is_some_and(|a| a.log_bodies)
    }

    /// A response-only observer that learns tool names from `tools/list` results, for the
    /// `tool` label (see [`metrics`]).
    pub fn tool_catalog(&self, route: &str) -> Option<Arc<dyn Stage>> {
        let m = self.metrics.as_ref()?.route(route);
        Some(Arc::new(ToolCatalog(m)))
    }

    /// The span of one upstream exchange, a child of the request's `parent`, with its
    /// `traceparent` written into the outgoing `headers`; none when spans are not exported.
    pub fn upstream_span(
        &self,
        parent: &tracing::Span,
        upstream: &crate::config::Upstream,
        headers: &mut http::HeaderMap,
    ) -> tracing::Span {
        if !self.export {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            parent: parent,
            "mcp.upstream",
            otel.name = "mcp.upstream",
            otel.kind = "client",
            server = %upstream.name,
            // The host only: a URL's path or query may carry a credential.
            server.address = upstream.url.host().unwrap_or_default(),
        );
        trace::inject(&span, headers);
        span
    }

    /// The request's span (when spans are on), child of the client's trace when exporting.
    pub fn span(&self, request_id: &str, server: &str, headers: &http::HeaderMap) -> tracing::Span {
        if !self.spans {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "mcp.request",
            otel.name = "mcp.request",
            otel.kind = "server",
            request_id = %request_id,
            server = %server,
            method = tracing::field::Empty,
            tool = tracing::field::Empty,
            decision = tracing::field::Empty,
            stage = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if self.export {
            trace::adopt_parent(&span, headers);
        }
        span
    }

    /// Wraps the response body so the summary is recorded when the response ends.
    pub fn finish(self: &Arc<Self>, mut summary: Summary, response: Response) -> Response {
        if !self.is_on() {
            return response;
        }
        summary.status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let route = self.metrics.as_ref().map(|m| m.route(&summary.server));
        if summary.streamed
            && let Some(r) = &route
        {
            r.sse_streams().inc();
        }
        let capture = self
            .audit
            .as_ref()
            .filter(|a| a.log_bodies && !summary.streamed)
            .map(|a| (BytesMut::new(), a.max_body_bytes));
        let pending = Pending {
            obs: self.clone(),
            route,
            summary,
            capture,
        };
        let body = Observed {
            inner: body,
            pending: Some(pending),
        };
        Response::from_parts(parts, Body::new(body))
    }
}

/// The summary waiting for its response to end.
struct Pending {
    obs: Arc<Observability>,
    route: Option<Arc<RouteMetrics>>,
    summary: Summary,
    capture: Option<(BytesMut, usize)>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let s = &mut self.summary;
        let elapsed = s.started.elapsed();
        if s.upstream_error.is_none() && s.upstream_status.is_some_and(|st| st >= 500) {
            s.upstream_error = Some(UpstreamErrorKind::Status5xx);
        }
        if let (Some(m), Some(route)) = (&self.obs.metrics, &self.route) {
            record_metrics(m, route, s, elapsed.as_secs_f64());
        }
        if let Some(recent) = &self.obs.recent {
            recent.push(s, elapsed.as_secs_f64() * 1000.0);
        }
        if !s.span.is_none() {
            s.span.record("decision", s.decision.as_str());
            s.span.record("stage", s.stage.as_deref());
            s.span.record("http.response.status_code", s.status);
        }
        if let Some(audit) = &self.obs.audit {
            let s = std::mem::replace(
                &mut self.summary,
                Summary::inactive(NO_SERVER.clone(), Method::GET),
            );
            let response_body = self
                .capture
                .take()
                .filter(|(buf, _)| !buf.is_empty())
                .map(|(buf, max)| audit::redacted_body(&buf, &s.secrets, max));
            audit.record(record(
                s,
                elapsed.as_secs_f64() * 1000.0,
                response_body,
                audit,
            ));
        }
    }
}

fn record_metrics(m: &Metrics, route: &RouteMetrics, s: &Summary, seconds: f64) {
    // GET streams last as long as the client listens: counted, not timed.
    let timed = (s.http_method != Method::GET).then_some(seconds);
    route.request(s.method, s.status, timed);
    if s.streamed {
        route.sse_streams().dec();
    }
    if let Some(secs) = s.upstream_seconds {
        route.upstream_answered(secs);
    }
    if let Some(kind) = s.upstream_error {
        route.upstream_error(kind);
    }
    for tool in &s.forwarded_tools {
        route.tool_call(&route.tool_label(tool));
    }
    match s.decision {
        Decision::RateLimited => {
            let client = m.client_label(s.client.as_deref().unwrap_or("anonymous"));
            route.rate_limited(&client);
        }
        Decision::Denied => {
            let client = m.client_label(s.client.as_deref().unwrap_or("anonymous"));
            let tool = s
                .tool
                .as_deref()
                .map_or_else(|| Arc::from(""), |t| route.tool_label(t));
            route.denied(&client, &tool);
        }
        _ => {}
    }
}

fn record(
    s: Summary,
    duration_ms: f64,
    response_body: Option<Value>,
    audit: &AuditLog,
) -> AuditRecord {
    let request_body = s
        .request_body
        .as_ref()
        .map(|b| audit::redacted_body(b, &s.secrets, audit.max_body_bytes));
    AuditRecord {
        time: s.time,
        request_id: s.request_id,
        caller: s.caller,
        peer: s.peer,
        server: s.server,
        era: match s.era {
            Era::Legacy => "legacy",
            Era::Modern => "2026-07-28",
        },
        http_method: match s.http_method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        },
        method: s.method_name,
        tool: s.tool,
        target: s.target,
        jsonrpc_id: s.jsonrpc_id,
        calls: s.calls,
        session: s.session,
        decision: s.decision.as_str(),
        stage: s.stage,
        rule: s.rule,
        reason: s.reason,
        status: s.status,
        error_code: s.error_code,
        upstream_status: s.upstream_status,
        streamed: s.streamed,
        stream_error: s.stream_error,
        duration_ms: (duration_ms * 1000.0).round() / 1000.0,
        request_body,
        response_body,
    }
}

/// A response body that records its request's summary when it ends.
struct Observed {
    inner: Body,
    pending: Option<Pending>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(Pending {
                    capture: Some((buf, max)),
                    ..
                }) = this.pending.as_mut()
                    && let Some(data) = frame.data_ref()
                    && buf.len() <= *max
                {
                    let room = (*max + 1).saturating_sub(buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..room]);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(p) = this.pending.as_mut() {
                    let idle = is_idle_timeout(e);
                    p.summary.stream_error = Some(if idle {
                        "upstream_idle"
                    } else {
                        "upstream_broken"
                    });
                    p.summary.upstream_error = Some(if idle {
                        UpstreamErrorKind::StreamIdle
                    } else {
                        UpstreamErrorKind::StreamBroken
                    });
                }
                this.pending.take();
            }
            Poll::Ready(None) => {
                this.pending.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (the upstream request is cancelled).
        if let Some(p) = self.pending.as_mut()
            && !http_body::Body::is_end_stream(&self.inner)
            && p.summary.stream_error.is_none()
        {
            p.summary.stream_error = Some("client_gone");
        }
    }
}

fn is_idle_timeout(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<crate::proxy::relay::IdleTimeout>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Learns the tool names an upstream advertises, from the `tools/list` results passing by.
struct ToolCatalog(Arc<RouteMetrics>);

/// The string `name`s of the entries of `result.<field>` in a list response's text (read
/// without building a tree, [`crate::mcp::scan`]; an unreadable response lists nothing; of
/// repeated members, the last, as clients read them).
fn listed_names<'a>(text: &'a str, field: &str) -> Vec<std::borrow::Cow<'a, str>> {
    use crate::mcp::scan;
    let entries = || -> Result<Vec<&'a str>, scan::ScanError> {
        let message = scan::members(text)?;
        let Some(result) = message.iter().rev().find(|m| m.is("result")) else {
            return Ok(Vec::new());
        };
        let result = scan::members(result.value)?;
        match result.iter().rev().find(|m| m.is(field)) {
            Some(list) => scan::elements(list.value),
            None => Ok(Vec::new()),
        }
    };
    entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let members = scan::members(entry).ok()?;
            let name = members.iter().rev().find(|m| m.is("name"))?;
            scan::string_text(name.value).ok()
        })
        .collect()
}

impl Stage for ToolCatalog {
    fn name(&self) -> &str {
        "tool_catalog"
    }

    fn on_request<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Continue })
    }

    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.method() == "tools/list"
    }

    fn hooks_responses(&self) -> bool {
        true
    }

    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _request: &'a Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        if let Some(text) = response.text() {
            self.0
                .learn_tools(listed_names(text, "tools").iter().map(|n| &**n));
        }
        Box::pin(async { ResponseVerdict::Unchanged })
    }
}
