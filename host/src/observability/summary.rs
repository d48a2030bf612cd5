//! What one request did ([`Summary`]), filled by the MCP exchange phase by phase and recorded
//! once, when the response ends: metrics, the audit record, the span's outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::audit::AuditCall;
use super::metrics::{self, UpstreamErrorKind};
use crate::error::{GatewayError, StageKind};
use crate::mcp::{Era, Message, ParsedBody};
use crate::pipeline::RequestContext;

/// How the request ended, for the audit log's `decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forwarded,
    AuthFailed,
    RateLimited,
    Denied,
    PluginRejected,
    /// A stage answered locally.
    Responded,
    /// Refused by the gateway's own checks (bad request, origin, size, unknown route...).
    Invalid,
    SessionNotFound,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// A stage's shared state (Redis) was unavailable and the stage fails closed.
    StateUnavailable,
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Forwarded => "forwarded",
            Decision::AuthFailed => "auth_failed",
            Decision::RateLimited => "rate_limited",
            Decision::Denied => "denied",
            Decision::PluginRejected => "plugin_rejected",
            Decision::Responded => "responded",
            Decision::Invalid => "invalid",
            Decision::SessionNotFound => "session_not_found",
            Decision::UpstreamUnavailable => "upstream_unavailable",
            Decision::UpstreamTimeout => "upstream_timeout",
            Decision::StateUnavailable => "state_unavailable",
            Decision::Error => "error",
        }
    }
}

/// What one request did, filled by the handler along the way.
#[derive(Debug)]
pub struct Summary {
    pub time: SystemTime,
    pub started: Instant,
    pub request_id: Arc<str>,
    pub server: Arc<str>,
    pub http_method: Method,
    pub peer: Option<IpAddr>,
    /// Index into [`metrics::METHODS`].
    pub method: usize,
    pub method_name: Option<String>,
    pub tool: Option<Arc<str>>,
    pub target: Option<Arc<str>>,
    pub jsonrpc_id: Option<String>,
    pub calls: Vec<AuditCall>,
    /// `tools/call` names that reached the upstream.
    pub forwarded_tools: Vec<Arc<str>>,
    pub era: Era,
    pub caller: Option<Arc<str>>,
    pub client: Option<Arc<str>>,
    pub session: Option<String>,
    pub decision: Decision,
    pub stage: Option<String>,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub error_code: Option<i32>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub upstream_seconds: Option<f64>,
    pub upstream_error: Option<UpstreamErrorKind>,
    pub streamed: bool,
    pub stream_error: Option<&'static str>,
    /// The request body as received, kept only for `audit.log_bodies`.
    pub request_body: Option<Bytes>,
    /// Strings never to be written (the caller's credential, the upstream's).
    pub secrets: Vec<String>,
    pub span: tracing::Span,
    /// `false`: observability is off, the describe/identify/... calls do nothing.
    active: bool,
}

pub(super) static NO_SERVER: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from(""));

impl Summary {
    pub(super) fn inactive(request_id: Arc<str>, http_method: Method) -> Self {
        let mut s = Summary::new(request_id, "", http_method, tracing::Span::none());
        s.active = false;
        s
    }

    pub fn new(
        request_id: Arc<str>,
        server: &str,
        http_method: Method,
        span: tracing::Span,
    ) -> Self {
        let method = match http_method {
            Method::GET => metrics::METHOD_GET,
            Method::DELETE => metrics::METHOD_DELETE,
            _ => 0,
        };
        Summary {
            time: SystemTime::now(),
            started: Instant::now(),
            request_id,
            server: if server.is_empty() {
                NO_SERVER.clone()
            } else {
                Arc::from(server)
            },
            http_method,
            peer: None,
            method,
            method_name: None,
            tool: None,
            target: None,
            jsonrpc_id: None,
            calls: Vec::new(),
            forwarded_tools: Vec::new(),
            era: Era::Legacy,
            caller: None,
            client: None,
            session: None,
            decision: Decision::Forwarded,
            stage: None,
            rule: None,
            reason: None,
            error_code: None,
            status: 0,
            upstream_status: None,
            upstream_seconds: None,
            upstream_error: None,
            streamed: false,
            stream_error: None,
            request_body: None,
            secrets: Vec::new(),
            span,
            active: true,
        }
    }

    /// What the parsed body asks for.
    pub fn describe(&mut self, body: &ParsedBody) {
        if !self.active {
            return;
        }
        self.era = body.era();
        if body.batch {
            self.method = metrics::METHOD_BATCH;
            self.method_name = Some("batch".into());
            self.calls = body
                .messages
                .iter()
                .map(|m| AuditCall {
                    method: m.method().to_string(),
                    target: m.target.clone(),
                })
                .collect();
        } else if let Some(m) = body.messages.first() {
            self.describe_message(m);
        }
        if !self.span.is_none() {
            self.span.record("method", self.method_name.as_deref());
            self.span.record("tool", self.tool.as_deref());
        }
    }

    fn describe_message(&mut self, m: &Message) {
        self.jsonrpc_id = m.id.as_ref().map(|i| i.get().to_string());
        if m.method.is_none() {
            self.method = metrics::METHOD_RESPONSE;
            self.method_name = Some("response".into());
            return;
        }
        let method = m.method();
        self.method = metrics::method_index(method);
        self.method_name = Some(method.to_string());
        if method == "tools/call" {
            self.tool = m.target.clone();
        } else {
            self.target = m.target.clone();
        }
    }

    /// Who the stages say is calling.
    pub fn identify(&mut self, cx: &RequestContext) {
        if !self.active {
            return;
        }
        self.caller = cx.caller.as_ref().map(|c| c.id.clone());
        self.client = Some(cx.client_key());
        self.session = cx.session.as_ref().map(|s| s.id.clone());
    }

    /// The request reached the upstream; remember its tool calls.
    pub fn forwarded(&mut self, cx: &RequestContext) {
        self.decision = Decision::Forwarded;
        if !self.active {
            return;
        }
        if let Some(body) = &cx.body {
            self.forwarded_tools = body
                .messages
                .iter()
                .filter(|m| m.method() == "tools/call")
                .filter_map(|m| m.target.clone())
                .collect();
        }
    }

    /// A stage answered locally.
    pub fn responded(&mut self, stage: Option<StageKind>) {
        self.decision = Decision::Responded;
        self.stage = stage.as_ref().map(StageKind::label);
    }

    /// The request failed or was refused with `e`.
    pub fn failed(&mut self, e: &GatewayError) {
        if !self.active {
            return;
        }
        self.error_code = Some(e.jsonrpc_code());
        self.reason = Some(e.to_string());
        self.decision = match e {
            GatewayError::Rejected {
                stage,
                code: crate::mcp::jsonrpc::STATE_UNAVAILABLE,
                ..
            } => {
                self.stage = Some(stage.label());
                Decision::StateUnavailable
            }
            GatewayError::Rejected { stage, data, .. } => {
                self.stage = Some(stage.label());
                match stage {
                    StageKind::Auth => Decision::AuthFailed,
                    StageKind::RateLimit => Decision::RateLimited,
                    StageKind::Policy => {
                        self.rule = data
                            .as_ref()
                            .and_then(|d| d.get("rule"))
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        Decision::Denied
                    }
                    StageKind::Plugin(_) => Decision::PluginRejected,
                    StageKind::Other(_) => Decision::Error,
                }
            }
            GatewayError::SessionNotFound => {
                self.stage = Some("session".into());
                Decision::SessionNotFound
            }
            GatewayError::UpstreamUnavailable { .. } => {
                self.upstream_error = Some(UpstreamErrorKind::Unavailable);
                Decision::UpstreamUnavailable
            }
            GatewayError::UpstreamTimeout { .. } => {
                self.upstream_error = Some(UpstreamErrorKind::Timeout);
                Decision::UpstreamTimeout
            }
            GatewayError::Uninspectable { .. } => {
                self.upstream_error = Some(UpstreamErrorKind::Uninspectable);
                Decision::UpstreamUnavailable
            }
            GatewayError::UpstreamRefused { .. } => {
                self.upstream_error = Some(UpstreamErrorKind::CredentialRefused);
                Decision::UpstreamUnavailable
            }
            GatewayError::Internal(_) => Decision::Error,
            _ => {
                self.stage = Some("gateway".into());
                Decision::Invalid
            }
        };
    }
}
