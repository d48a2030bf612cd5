//! Protocol knowledge, and nothing else: how MCP messages look on the wire.
//!
//! - [`envelope`]: parse a POST body once into [`Message`]s (era, method, id, target, arguments).
//! - [`headers`]: the 2026-07-28 routing headers and their validation against the body.
//! - [`jsonrpc`]: JSON-RPC error codes and error bodies.
//! - [`rules`]: the era rules a POST must follow (batches, routing headers against the body).
//! - [`sse`]: splitting a `text/event-stream` into raw events without changing a byte.
//! - [`uri`]: resource URIs in the one normal form policies judge them in.
//!
//! No I/O happens here; everything is a pure function over bytes, so it is unit-tested in place.

pub mod envelope;
pub mod headers;
pub mod jsonrpc;
pub mod rules;
pub mod scan;
pub mod sse;
pub mod uri;

pub use envelope::{Era, Message, MessageKind, ParsedBody};

/// The revisions of the session-based (legacy) era.
pub const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision: `_meta` version on every request, routing headers, no sessions.
pub const MODERN_VERSION: &str = "2026-07-28";

/// Whether a protocol version string names a stateless (modern) revision.
///
/// Versions are dates, so any revision from 2026-07-28 on is stateless; a future revision we do
/// not know yet is treated as modern rather than legacy, because the legacy era is closed.
pub fn is_modern_version(v: &str) -> bool {
    v.len() == 10 && v.as_bytes()[4] == b'-' && v >= MODERN_VERSION
}

/// The `_meta` key that carries the protocol version of a modern request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
