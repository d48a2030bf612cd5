//! MCP servers that speak stdio, behind a route (`upstreams.<name>.type: stdio`, issue 19).
//!
//! - `child.rs`: one server process: newline-delimited JSON-RPC in and out, stderr into the log,
//!   an environment of its own, killed with its handle. Nothing it writes is trusted.
//! - `peer.rs`: JSON-RPC with one process: requests under ids of the gateway's own, answers back
//!   under the client's, the rest to listeners; the process's death fails what waits at once.
//! - `bridge.rs`: a stdio server as a Streamable HTTP endpoint on 127.0.0.1 that only this
//!   gateway may use; legacy sessions get a process each, the 2026-07-28 era shares one.
pub mod bridge;
pub mod child;
pub mod peer;

pub use bridge::{BRIDGE_HEADER, Bridge, StdioRoute};
pub use child::{Child, ChildSpec, FromChild};
pub use peer::{PeerError, StdioPeer};
