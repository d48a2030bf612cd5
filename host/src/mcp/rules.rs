//! The era rules one POST must follow before anything else looks at it: batches exist only in
//! the legacy era's 2025-03-26 revision and are bounded, and every message's routing headers
//! mirror the body (2026-07-28).

use http::HeaderMap;

use super::envelope::{Era, ParsedBody};
use super::headers::{self, MCP_PROTOCOL_VERSION, Violation};
use super::jsonrpc;

/// Checks a parsed POST against its era's rules; a batch of more than `max_batch` messages
/// (`server.max_batch_messages`) is refused before any of them is looked at.
pub fn check(body: &ParsedBody, headers: &HeaderMap, max_batch: usize) -> Result<(), Violation> {
    if body.batch {
        check_batch(body, headers, max_batch)?;
    }
    for msg in &body.messages {
        headers::validate(headers, msg)?;
    }
    Ok(())
}

fn check_batch(body: &ParsedBody, headers: &HeaderMap, max_batch: usize) -> Result<(), Violation> {
    let refuse = |message: String| Violation {
        code: jsonrpc::INVALID_REQUEST,
        message,
    };
    if body.messages.len() > max_batch {
        return Err(refuse(format!(
            "a batch may hold at most {max_batch} messages (server.max_batch_messages); this one holds {}",
            body.messages.len()
        )));
    }
    if body.era() == Era::Modern {
        return Err(refuse(
            "batches are not allowed in protocol 2026-07-28: send one message per POST".into(),
        ));
    }
    if let Some(v) = headers
        .get(&MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        && v.trim() != "2025-03-26"
    {
        return Err(refuse(format!(
            "JSON-RPC batches exist only in protocol 2025-03-26, not {v}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn batch(n: usize, modern: bool) -> ParsedBody {
        let meta = if modern {
            r#","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#
        } else {
            ""
        };
        let items: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"{meta}}}"#))
            .collect();
        ParsedBody::parse(format!("[{}]", items.join(",")).as_bytes()).unwrap()
    }

    #[test]
    fn batches_are_legacy_only_bounded_and_of_2025_03_26() {
        let none = HeaderMap::new();
        assert_eq!(check(&batch(3, false), &none, 3), Ok(()));
        let over = check(&batch(4, false), &none, 3).unwrap_err();
        assert_eq!(over.code, jsonrpc::INVALID_REQUEST);
        assert!(
            over.message.contains("server.max_batch_messages"),
            "{over:?}"
        );
        let modern = check(&batch(2, true), &none, 3).unwrap_err();
        assert!(modern.message.contains("2026-07-28"), "{modern:?}");
        let mut headers = HeaderMap::new();
        headers.insert(
            MCP_PROTOCOL_VERSION,
            HeaderValue::from_static(" 2025-03-26 "),
        );
        assert_eq!(check(&batch(2, false), &headers, 3), Ok(()));
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2025-06-18"));
        let later = check(&batch(2, false), &headers, 3).unwrap_err();
        assert!(later.message.contains("not 2025-06-18"), "{later:?}");
    }

    #[test]
    fn a_single_message_is_checked_against_its_routing_headers() {
        let body = ParsedBody::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2026-07-28"));
        headers.insert(headers::MCP_METHOD, HeaderValue::from_static("tools/call"));
        headers.insert(headers::MCP_NAME, HeaderValue::from_static("b"));
        let e = check(&body, &headers, 1).unwrap_err();
        assert_eq!(e.code, jsonrpc::HEADER_MISMATCH);
        assert!(e.message.contains("Mcp-Name"), "{e:?}");
        headers.insert(headers::MCP_NAME, HeaderValue::from_static("a"));
        assert_eq!(check(&body, &headers, 1), Ok(()));
    }
}
