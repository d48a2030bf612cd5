//! MCP servers that speak stdio, behind a route (`upstreams.<name>.type: stdio`, issue 19).
//!
//! - `child.rs`: one server process: newline-delimited JSON-RPC in and out, stderr into the log,
//!   an environment of its own, killed with its handle. Nothing it writes is trusted.
pub mod child;

pub use child::{Child, ChildSpec, FromChild};
