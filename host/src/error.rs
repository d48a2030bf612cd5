//! The one error type of the request path, and the one place it becomes an HTTP response.
//!
//! Each variant knows its HTTP status, its JSON-RPC code and its label for logs and metrics; a
//! refusal by a stage carries the [`StageKind`] the audit decision follows from. Handlers return
//! `GatewayError`; `into_response` answers it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::value::RawValue;

use crate::mcp::jsonrpc;

/// The kind of stage that refused or answered a request: the audit decision and the metrics
/// follow from it, never from a stage's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    Auth,
    RateLimit,
    Policy,
    /// A WebAssembly plugin, by its `plugins:` name.
    Plugin(Arc<str>),
    /// Any other stage (an embedder's own), by its name.
    Other(Arc<str>),
}

impl StageKind {
    /// The stage as the audit log names it: `auth`, `rate_limit`, `policy`, `plugin:<name>`.
    pub fn label(&self) -> String {
        match self {
            StageKind::Auth => "auth".into(),
            StageKind::RateLimit => "rate_limit".into(),
            StageKind::Policy => "policy".into(),
            StageKind::Plugin(name) => format!("plugin:{name}"),
            StageKind::Other(name) => name.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no MCP server is configured under the name `{0}`")]
    UnknownServer(String),
    #[error("method {0} is not allowed on an MCP endpoint (use POST, GET or DELETE)")]
    MethodNotAllowed(http::Method),
    #[error(
        "session not found: the session id is unknown, expired or was ended; initialize a new session"
    )]
    SessionNotFound,
    #[error("{message}")]
    BadRequest { code: i32, message: String },
    #[error("origin `{0}` is not allowed")]
    OriginForbidden(String),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error(
        "the request body did not arrive within {}ms (server.body_timeout)",
        .0.as_millis()
    )]
    BodyTimeout(Duration),
    #[error("upstream `{upstream}` is unavailable: {reason}")]
    UpstreamUnavailable { upstream: String, reason: String },
    #[error(
        "upstream `{upstream}` refused the gateway's request (HTTP {status}): its credential (upstreams.{upstream}.auth) is missing, wrong or expired"
    )]
    UpstreamRefused { upstream: String, status: u16 },
    #[error("the answer of upstream `{upstream}` cannot be inspected: {reason}")]
    Uninspectable { upstream: String, reason: String },
    #[error("upstream `{upstream}` did not begin its response within {}ms", timeout.as_millis())]
    UpstreamTimeout { upstream: String, timeout: Duration },
    /// A stage refused the request.
    #[error("{message}")]
    Rejected {
        stage: StageKind,
        status: StatusCode,
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
        /// Extra response headers (`Retry-After`, `WWW-Authenticate`, ...).
        headers: Vec<(header::HeaderName, HeaderValue)>,
    },
    #[error("internal gateway error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn bad_request(code: i32, message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownServer(_) | GatewayError::SessionNotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BadRequest { code, .. } if *code == jsonrpc::METHOD_NOT_FOUND => {
                StatusCode::NOT_FOUND
            }
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::OriginForbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UpstreamUnavailable { .. }
            | GatewayError::Uninspectable { .. }
            | GatewayError::UpstreamRefused { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Rejected { status, .. } => *status,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn jsonrpc_code(&self) -> i32 {
        match self {
            GatewayError::UnknownServer(_) => jsonrpc::UNKNOWN_SERVER,
            GatewayError::MethodNotAllowed(_) => jsonrpc::INVALID_REQUEST,
            GatewayError::SessionNotFound => jsonrpc::SESSION_NOT_FOUND,
            GatewayError::BadRequest { code, .. } | GatewayError::Rejected { code, .. } => *code,
            GatewayError::OriginForbidden(_) => jsonrpc::FORBIDDEN,
            GatewayError::PayloadTooLarge(_) => jsonrpc::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout(_) => jsonrpc::INVALID_REQUEST,
            GatewayError::UpstreamUnavailable { .. } => jsonrpc::UPSTREAM_UNAVAILABLE,
            GatewayError::Uninspectable { .. } => jsonrpc::UPSTREAM_UNINSPECTABLE,
            GatewayError::UpstreamRefused { .. } => jsonrpc::UPSTREAM_REFUSED,
            GatewayError::UpstreamTimeout { .. } => jsonrpc::UPSTREAM_TIMEOUT,
            GatewayError::Internal(_) => jsonrpc::INTERNAL_ERROR,
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            GatewayError::UnknownServer(_) => "unknown_server",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::SessionNotFound => "session_not_found",
            GatewayError::BadRequest { code, .. } if *code == jsonrpc::HEADER_MISMATCH => {
                "header_mismatch"
            }
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::OriginForbidden(_) => "origin_forbidden",
            GatewayError::PayloadTooLarge(_) => "payload_too_large",
            GatewayError::BodyTimeout(_) => "body_timeout",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::Uninspectable { .. } => "upstream_uninspectable",
            GatewayError::UpstreamRefused { .. } => "upstream_refused",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::Rejected { .. } => "rejected",
            GatewayError::Internal(_) => "internal",
        }
    }

    /// The response: HTTP status, JSON-RPC error body carrying the request's id.
    pub fn into_response(self, id: Option<&RawValue>) -> Response {
        let status = self.status();
        let code = self.jsonrpc_code();
        let message = self.to_string();
        let (data, extra) = match self {
            GatewayError::Rejected { data, headers, .. } => (data, headers),
            GatewayError::MethodNotAllowed(_) => (
                None,
                vec![(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"))],
            ),
            // The rest of the body may still come: the connection cannot carry another request.
            GatewayError::BodyTimeout(_) | GatewayError::PayloadTooLarge(_) => (
                None,
                vec![(header::CONNECTION, HeaderValue::from_static("close"))],
            ),
            _ => (None, Vec::new()),
        };
        let body = jsonrpc::error_body(id, code, &message, data.as_ref());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in extra {
            headers.append(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn statuses_codes_and_bodies() {
        let cases: Vec<(GatewayError, u16, i32)> = vec![
            (
                GatewayError::UnknownServer("x".into()),
                404,
                jsonrpc::UNKNOWN_SERVER,
            ),
            (
                GatewayError::SessionNotFound,
                404,
                jsonrpc::SESSION_NOT_FOUND,
            ),
            (
                GatewayError::bad_request(jsonrpc::HEADER_MISMATCH, "m"),
                400,
                -32020,
            ),
            (
                GatewayError::bad_request(jsonrpc::METHOD_NOT_FOUND, "m"),
                404,
                -32601,
            ),
            (
                GatewayError::OriginForbidden("o".into()),
                403,
                jsonrpc::FORBIDDEN,
            ),
            (
                GatewayError::PayloadTooLarge(4),
                413,
                jsonrpc::PAYLOAD_TOO_LARGE,
            ),
            (
                GatewayError::BodyTimeout(Duration::from_secs(1)),
                408,
                jsonrpc::INVALID_REQUEST,
            ),
            (
                GatewayError::UpstreamUnavailable {
                    upstream: "u".into(),
                    reason: "r".into(),
                },
                502,
                jsonrpc::UPSTREAM_UNAVAILABLE,
            ),
            (
                GatewayError::UpstreamTimeout {
                    upstream: "u".into(),
                    timeout: Duration::from_millis(5),
                },
                504,
                jsonrpc::UPSTREAM_TIMEOUT,
            ),
            (
                GatewayError::Internal("x".into()),
                500,
                jsonrpc::INTERNAL_ERROR,
            ),
        ];
        for (err, status, code) in cases {
            let id = RawValue::from_string("17".into()).unwrap();
            let label = err.label();
            let resp = err.into_response(Some(&id));
            assert_eq!(resp.status().as_u16(), status, "{label}");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["id"], 17, "{label}");
            assert_eq!(v["error"]["code"], code, "{label}");
        }
    }
}
