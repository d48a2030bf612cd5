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
