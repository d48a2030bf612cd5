//! The edge: listeners, routes, the MCP exchange, graceful shutdown.
//!
//! - `gateway.rs`: [`Gateway`], the state every request shares, built once from config.
//! - `listen.rs`: the accept loops ([`run`], [`run_workers`]), the drain, and `dispatch`, the
//!   one entry every request passes (the MCP route, or [`router`] for everything else).
//! - `routes.rs`: health, readiness, metrics, OAuth protected-resource metadata.
//! - `exchange.rs`: one request on an MCP route, phase by phase (`McpExchange`).
//! - `body.rs`: reading a request body within its size and time limits.

mod body;
mod exchange;
mod gateway;
mod listen;
mod routes;

pub use gateway::Gateway;
pub use listen::{run, run_workers};
pub use routes::router;
