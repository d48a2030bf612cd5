//! The edge: listeners, routes, the MCP exchange, graceful shutdown.
//!
//! - `gateway.rs`: [`Gateway`], the state every request shares, and [`Generation`], what one
//!   config builds (swapped whole by a reload).
//! - `reload.rs`: hot reload (SIGHUP, `server.watch_config`, `POST /admin/reload`).
//! - `health.rs`: each upstream's health from the traffic it served.
//! - `watch.rs`: `server.watch_config`, reloading when a file the config was built from changes.
//! - `listen.rs`: the accept loops ([`run`], [`run_workers`]), the drain, and `dispatch`, the
//!   one entry every request passes (the MCP route, or [`router`] for everything else).
//! - `routes.rs`: health, readiness, metrics, OAuth protected-resource metadata.
//! - `exchange.rs`: one request on an MCP route, phase by phase (`McpExchange`).
//! - `body.rs`: reading a request body within its size and time limits.
//! - `websocket.rs`: WebSocket clients on the MCP routes, each message an exchange.

mod body;
mod exchange;
mod gateway;
pub mod health;
mod listen;
pub mod reload;
mod routes;
pub mod watch;
pub mod websocket;

pub use gateway::{Gateway, Generation};
pub use listen::{run, run_workers};
pub use reload::{ConfigSource, ReloadReport};
pub use routes::router;
