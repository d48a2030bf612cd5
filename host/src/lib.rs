//! mcpgate: a gateway for Model Context Protocol servers that speak Streamable HTTP.
//!
//! Each upstream gets a route, `/servers/<name>/mcp`. Between client and upstream the gateway
//! checks the edge (Origin, body size), parses the JSON-RPC envelope once, enforces the protocol
//! era's rules, maps legacy sessions to sealed ids any replica can read, runs the pipeline of
//! stages, and streams the response back without buffering.
//!
//! Modules, in the order a request meets them:
//! - [`server`]: listeners, routes, the MCP handler, graceful shutdown.
//! - [`conn`]: client connections' limits (count, slow heads and bodies, clients that stop reading).
//! - [`mcp`]: protocol knowledge only: envelope, era, routing headers, JSON-RPC errors, SSE framing.
//! - [`pipeline`]: the [`pipeline::Stage`] abstraction, the per-request context, the runner.
//! - [`session`]: sealed legacy session ids and local bookkeeping.
//! - [`stages`]: the built-in stages (auth, rate limit, policy) and pipeline assembly.
//! - [`plugins`]: WebAssembly plugin stages: the sandbox, loading, the per-call lifecycle.
//! - [`proxy`]: the upstream client, header rules, the streaming relay.
//! - [`stdio`]: MCP servers spoken to over stdio (processes the gateway starts).
//! - [`error`]: the request path's one error type, turned into a response in one place.
//! - [`redis`]: the Redis connection replicas share state through (buckets, plugin kv).
//! - [`observability`]: Prometheus metrics, the audit log, tracing spans and OTLP export.
//! - [`admin`]: the admin listener: JSON API, live dashboard, reload.
//! - [`config`]: YAML → validated, immutable runtime config.
//! - [`tls`]: the listener's TLS (`server.tls`).
//! - [`glob`]: the config's one glob dialect (policy patterns, plugins' method patterns).
//! - [`deps`]: the resources a process builds once and lends out (registry, upstream client,
//!   Redis, plugin kv).

pub mod admin;
pub mod cli;
pub mod config;
pub mod conn;
pub mod deps;
pub mod error;
pub mod federation;
pub mod glob;
pub mod loopback;
pub mod mcp;
pub mod observability;
pub mod pipeline;
pub mod plugins;
pub mod proxy;
pub mod redis;
pub mod server;
pub mod session;
pub mod stages;
pub mod stdio;
pub mod tls;

pub use config::Config;
pub use server::{Gateway, router, run, run_workers};
