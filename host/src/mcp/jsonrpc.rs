//! JSON-RPC 2.0 error codes used by the gateway, and error bodies.
//!
//! Codes -32020..-32099 are reserved by the MCP specification; the gateway's own conditions use
//! the implementation range -32000..-32019, one code per condition so clients and logs can tell
//! them apart.

use serde_json::value::RawValue;

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;

/// MCP 2026-07-28: a routing header is missing, malformed or differs from the body.
pub const HEADER_MISMATCH: i32 = -32020;

/// The legacy session id is unknown, tampered with, expired or ended (HTTP 404).
pub const SESSION_NOT_FOUND: i32 = -32001;
/// No upstream is configured under the requested name (HTTP 404).
pub const UNKNOWN_SERVER: i32 = -32002;
/// The request was refused by the gateway's edge (Origin not allowed) (HTTP 403).
pub const FORBIDDEN: i32 = -32003;
/// The request body is larger than the configured limit (HTTP 413).
pub const PAYLOAD_TOO_LARGE: i32 = -32004;
/// A rate limit refused the request (HTTP 429, `Retry-After`).
pub const RATE_LIMITED: i32 = -32005;
/// No valid credential was presented (HTTP 401, `WWW-Authenticate`).
pub const UNAUTHENTICATED: i32 = -32006;
/// An access policy denied the call (HTTP 200: SDK clients raise this message to their caller).
pub const POLICY_DENIED: i32 = -32007;
/// The credential lacks a required scope (HTTP 403, `error="insufficient_scope"`).
pub const INSUFFICIENT_SCOPE: i32 = -32008;
/// The upstream could not be reached or broke the connection (HTTP 502).
pub const UPSTREAM_UNAVAILABLE: i32 = -32010;
/// The upstream did not begin its response within the route's timeout (HTTP 504).
pub const UPSTREAM_TIMEOUT: i32 = -32011;
/// A pipeline stage refused the request without a more specific code.
pub const REJECTED: i32 = -32012;
/// A plugin stage failed (trapped, ran out of time or memory, answered garbage) under
/// `on_error: fail_closed`.
pub const PLUGIN_FAILED: i32 = -32013;
/// The upstream's answer could not be inspected by the response hooks a stage asked for: a
/// message over `server.max_inspected_bytes`, or one that is not readable JSON-RPC (HTTP 502).
pub const UPSTREAM_UNINSPECTABLE: i32 = -32015;
/// The upstream answered 401 or 403 to the gateway: the credential the gateway sends for the
/// route (`upstreams.<name>.auth`) is missing, wrong or expired (HTTP 502).
pub const UPSTREAM_REFUSED: i32 = -32016;
/// The shared state a stage needs (Redis) is unavailable and the stage is set to
/// `on_redis_error: fail_closed` (HTTP 503 with Retry-After).
pub const STATE_UNAVAILABLE: i32 = -32014;

/// A WebSocket client has `server.websocket.max_in_flight` requests awaiting answers already; this
/// one was not sent (nothing was charged).
pub const TOO_MANY_IN_FLIGHT: i32 = -32017;

/// Serialises one JSON-RPC error response. `id` is the request's raw id (echoed byte for byte),
/// or `null` when the request had none or could not be read.
pub fn error_body(
    id: Option<&RawValue>,
    code: i32,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: i32,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a serde_json::Value>,
    }
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        jsonrpc: &'static str,
        id: Option<&'a RawValue>,
        error: Error<'a>,
    }
    serde_json::to_vec(&Envelope {
        jsonrpc: "2.0",
        id,
        error: Error {
            code,
            message,
            data,
        },
    })
    .expect("an error envelope always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_echoes_the_raw_id() {
        let id = RawValue::from_string("\"req-7\"".into()).unwrap();
        let body = error_body(Some(&id), HEADER_MISMATCH, "bad header", None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "req-7");
        assert_eq!(v["error"]["code"], -32020);
        assert_eq!(v["jsonrpc"], "2.0");
        assert!(v["error"].get("data").is_none());
    }

    #[test]
    fn error_body_without_id_is_null() {
        let body = error_body(None, PARSE_ERROR, "x", Some(&serde_json::json!({"a": 1})));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["data"]["a"], 1);
    }
}
