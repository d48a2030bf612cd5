//! mcpgate plugin SDK: what WebAssembly plugin authors depend on.
//!
//! Plugins are custom pipeline stages compiled to WebAssembly components (`wasm32-wasip2`) against
//! the WIT contract in `wit/`. This crate will carry the typed request/response views, helpers to
//! reject or rewrite, and the one-line export macro. It never depends on the host.

/// The plugin contract version this SDK targets.
pub const CONTRACT_VERSION: &str = "0.1.0";
