//! The 2026-07-28 routing headers: `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`.
//!
//! A modern request's headers must mirror its body. The gateway checks that before any stage can
//! trust a header (a policy judging `Mcp-Name` must know it names the tool the body calls), and
//! answers a mismatch itself with HTTP 400 / JSON-RPC -32020, so the upstream never sees it.
//! `Mcp-Param-*` headers depend on the tool's input schema, which the gateway does not know: they
//! are forwarded untouched for the upstream to check.

use std::borrow::Cow;

use base64::Engine as _;
use http::{HeaderMap, HeaderName};

use super::{Era, Message, is_modern_version, jsonrpc};

// Header names as `HeaderName` constants: a lookup by `&str` parses the name every time.
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A request that breaks its era's rules (routing headers, batches): HTTP 400 with this JSON-RPC
/// code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: i32,
    pub message: String,
}

fn mismatch(message: String) -> Violation {
    Violation {
        code: jsonrpc::HEADER_MISMATCH,
        message,
    }
}

/// Decodes a routing header value: surrounding whitespace is dropped, and a value wrapped in the
/// sentinel `=?base64?...?=` is base64-decoded (bad base64 inside a sentinel is an error). A value
/// that opens the sentinel but does not close it is taken literally.
pub fn decode_value(raw: &[u8]) -> Result<Cow<'_, str>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "is not valid UTF-8".to_string())?;
    let text = text.trim_matches([' ', '\t']);
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("has a bad base64 sentinel: {e}"))?;
            String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|_| "has a base64 sentinel that is not UTF-8".to_string())
        }
        None => Ok(Cow::Borrowed(text)),
    }
}

/// A routing header value for `text`: as is where a header can carry it unchanged, else in the
/// base64 sentinel (non-ASCII, control characters, surrounding whitespace, or text that itself
/// looks like a sentinel). [`decode_value`] gives `text` back.
pub fn encode_value(text: &str) -> http::HeaderValue {
    let plain = !text.starts_with("=?base64?")
        && !text.starts_with([' ', '\t'])
        && !text.ends_with([' ', '\t'])
        && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if plain && let Ok(v) = http::HeaderValue::from_str(text) {
        return v;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    http::HeaderValue::from_str(&format!("=?base64?{encoded}?="))
        .expect("base64 is a valid header value")
}

/// The single value of a routing header: `Ok(None)` when absent, an error when repeated.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<Cow<'h, str>>, Violation> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(mismatch(format!("header `{name}` is repeated")));
    }
    decode_value(first.as_bytes())
        .map(Some)
        .map_err(|why| mismatch(format!("header `{name}` {why}")))
}

/// Checks one message's routing headers against its body, by era.
///
/// - Modern: `MCP-Protocol-Version` equals the `_meta` version; `Mcp-Method` equals `method`
///   (case-sensitive); `Mcp-Name` equals the tool/prompt name or resource URI where the method has
///   one, and is absent where it has none. Duplicates are rejected.
/// - Legacy: a header naming a modern version over a body without `_meta` is -32602.
pub fn validate(headers: &HeaderMap, msg: &Message) -> Result<(), Violation> {
    let version = single(headers, &MCP_PROTOCOL_VERSION)?;
    if msg.era == Era::Legacy {
        return match version {
            Some(v) if is_modern_version(&v) => Err(Violation {
                code: jsonrpc::INVALID_PARAMS,
                message: format!(
                    "MCP-Protocol-Version {v} requires `params._meta[\"io.modelcontextprotocol/protocolVersion\"]` in the body"
                ),
            }),
            _ => Ok(()),
        };
    }
    let body_version = msg.protocol_version.as_deref().unwrap_or_default();
    match version {
        None => return Err(mismatch("header `MCP-Protocol-Version` is missing".into())),
        Some(v) if v != body_version => {
            return Err(mismatch(format!(
                "header `MCP-Protocol-Version` is {v:?} but the body's _meta version is {body_version:?}"
            )));
        }
        Some(_) => {}
    }
    if msg.kind == super::MessageKind::Response {
        return Ok(());
    }
    match single(headers, &MCP_METHOD)? {
        None => return Err(mismatch("header `Mcp-Method` is missing".into())),
        Some(m) if m != msg.method() => {
            return Err(mismatch(format!(
                "header `Mcp-Method` is {m:?} but the body's method is {:?}",
                msg.method()
            )));
        }
        Some(_) => {}
    }
    let needs_name = matches!(
        msg.method(),
        "tools/call" | "prompts/get" | "resources/read"
    );
    match (single(headers, &MCP_NAME)?, msg.target.as_deref()) {
        (None, None) if !needs_name => Ok(()),
        (None, _) => Err(mismatch(format!(
            "header `Mcp-Name` is missing for {}",
            msg.method()
        ))),
        (Some(n), Some(t)) if n == t => Ok(()),
        (Some(n), Some(t)) => Err(mismatch(format!(
            "header `Mcp-Name` is {n:?} but the body names {t:?}"
        ))),
        (Some(n), None) => Err(mismatch(format!(
            "header `Mcp-Name` is {n:?} but the body of {} names nothing",
            msg.method()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::ParsedBody;

    fn msg(body: &str) -> Message {
        ParsedBody::parse(body.as_bytes())
            .unwrap()
            .messages
            .remove(0)
    }

    fn modern_call(name: &str) -> Message {
        msg(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#,
            serde_json::to_string(name).unwrap()
        ))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn encoded_values_decode_to_the_text() {
        for text in [
            "echo",
            "a b",
            "h\u{e9}llo",
            " padded",
            "tab\t",
            "=?base64?x?=",
            "line\nbreak",
            "",
            "file:///tmp/a b.txt",
        ] {
            let v = encode_value(text);
            assert_eq!(decode_value(v.as_bytes()).as_deref(), Ok(text), "{text:?}");
        }
        assert_eq!(encode_value("echo").as_bytes(), b"echo");
        assert!(encode_value("h\u{e9}").as_bytes().starts_with(b"=?base64?"));
    }

    #[test]
    fn sentinel_decoding() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("plain", Ok("plain")),
            ("  padded\t", Ok("padded")),
            ("=?base64?aMOpbGxv?=", Ok("héllo")),
            (" =?base64?dG9vbA==?= ", Ok("tool")),
            ("=?base64?not*base64?=", Err(())),
            ("=?base64?dG9vbA==", Ok("=?base64?dG9vbA==")),
            ("=?base64??=", Ok("")),
        ];
        for (raw, want) in cases {
            let got = decode_value(raw.as_bytes());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{raw}"),
                Err(()) => assert!(got.is_err(), "{raw} should fail"),
            }
        }
    }

    #[test]
    fn modern_header_table() {
        let v = ("mcp-protocol-version", "2026-07-28");
        let m = ("mcp-method", "tools/call");
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<i32>);
        let cases: Vec<Case> = vec![
            ("all agree", vec![v, m, ("mcp-name", "echo")], None),
            (
                "base64 name",
                vec![v, m, ("mcp-name", "=?base64?ZWNobw==?=")],
                None,
            ),
            ("whitespace", vec![v, m, ("mcp-name", "  echo ")], None),
            (
                "name differs",
                vec![v, m, ("mcp-name", "other")],
                Some(-32020),
            ),
            ("name missing", vec![v, m], Some(-32020)),
            (
                "name repeated",
                vec![v, m, ("mcp-name", "echo"), ("mcp-name", "echo")],
                Some(-32020),
            ),
            (
                "method case",
                vec![v, ("mcp-method", "TOOLS/CALL"), ("mcp-name", "echo")],
                Some(-32020),
            ),
            (
                "method missing",
                vec![v, ("mcp-name", "echo")],
                Some(-32020),
            ),
            (
                "method repeated",
                vec![v, m, m, ("mcp-name", "echo")],
                Some(-32020),
            ),
            (
                "version missing",
                vec![m, ("mcp-name", "echo")],
                Some(-32020),
            ),
            (
                "version differs",
                vec![
                    ("mcp-protocol-version", "2025-11-25"),
                    m,
                    ("mcp-name", "echo"),
                ],
                Some(-32020),
            ),
            (
                "bad sentinel",
                vec![v, m, ("mcp-name", "=?base64?%%%?=")],
                Some(-32020),
            ),
        ];
        let call = modern_call("echo");
        for (what, pairs, want) in cases {
            let got = validate(&headers(&pairs), &call).err().map(|e| e.code);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn non_ascii_names_travel_as_base64() {
        let call = modern_call("récupérer");
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?csOpY3Vww6lyZXI=?="),
        ]);
        assert_eq!(validate(&h, &call), Ok(()));
    }

    #[test]
    fn methods_without_a_name() {
        let list = msg(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let base = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ];
        assert_eq!(validate(&headers(&base), &list), Ok(()));
        let mut with_name = base.to_vec();
        with_name.push(("mcp-name", "x"));
        assert_eq!(
            validate(&headers(&with_name), &list).unwrap_err().code,
            -32020
        );
    }

    #[test]
    fn legacy_bodies() {
        let legacy = msg(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
        assert_eq!(validate(&HeaderMap::new(), &legacy), Ok(()));
        assert_eq!(
            validate(&headers(&[("mcp-protocol-version", "2025-06-18")]), &legacy),
            Ok(())
        );
        // Routing headers mean nothing on legacy requests; the upstream ignores them.
        assert_eq!(
            validate(&headers(&[("mcp-method", "other")]), &legacy),
            Ok(())
        );
        let err =
            validate(&headers(&[("mcp-protocol-version", "2026-07-28")]), &legacy).unwrap_err();
        assert_eq!(err.code, -32602);
    }
}
