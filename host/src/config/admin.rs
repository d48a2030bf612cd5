//! The `admin:` section: the admin API and dashboard, on a listener of their own (loopback by
//! default), every request authenticated with a bearer token.

use std::net::IpAddr;

use serde::Deserialize;
use sha2::Digest as _;

use super::Validator;

/// `admin.port` when absent.
pub const DEFAULT_ADMIN_PORT: u16 = 9190;
/// The shortest admin token accepted: the admin API can end sessions and reload the config.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;
/// `admin.max_connections` when absent.
pub const DEFAULT_ADMIN_CONNECTIONS: usize = 64;
/// `admin.max_event_streams` when absent.
pub const DEFAULT_EVENT_STREAMS: usize = 16;
/// `admin.recent_decisions` when absent.
pub const DEFAULT_RECENT_DECISIONS: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    enabled: Option<bool>,
    bind: Option<String>,
    port: Option<u16>,
    token_env: Option<String>,
    dashboard: Option<bool>,
    max_connections: Option<usize>,
    max_event_streams: Option<usize>,
    recent_decisions: Option<usize>,
}

/// `admin:` validated.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bind: IpAddr,
    /// 0 picks a free port (printed at start).
    pub port: u16,
    /// SHA-256 of the bearer token every admin request must present.
    pub token_sha256: [u8; 32],
    /// Serve the web dashboard at `/` (default true).
    pub dashboard: bool,
    /// Admin connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Dashboards streaming `/admin/events` at once; more get a 503.
    pub max_event_streams: usize,
    /// Decisions kept in memory for the dashboard (never bodies).
    pub recent_decisions: usize,
}

impl Validator<'_> {
    /// `admin:`; `None` when absent or `enabled: false`.
    pub(super) fn admin(&mut self, raw: RawAdmin) -> Option<AdminConfig> {
        let bind = match raw.bind.as_deref().map(str::trim) {
            None | Some("localhost") => IpAddr::from([127, 0, 0, 1]),
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.error(
                    "admin.bind",
                    format!("`{text}` is not an IP address (for example 127.0.0.1)"),
                );
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let token = match raw.token_env.as_deref() {
            None => {
                self.missing(
                    "admin.token_env",
                    "required: the environment variable holding the admin API's bearer token (e.g. MCPGATE_ADMIN_TOKEN; `mcpgate gen-key` makes one)",
                );
                None
            }
            Some(var) => self.env_secret("admin.token_env", var),
        };
        let token = token.map(|t| t.trim().to_string());
        if let Some(t) = &token
            && t.chars().count() < MIN_ADMIN_TOKEN_CHARS
        {
            self.error(
                "admin.token_env",
                format!(
                    "the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters (`mcpgate gen-key` makes one)"
                ),
            );
        }
        let config = AdminConfig {
            bind,
            port: raw.port.unwrap_or(DEFAULT_ADMIN_PORT),
            token_sha256: sha2::Sha256::digest(token.unwrap_or_default().as_bytes()).into(),
            dashboard: raw.dashboard.unwrap_or(true),
            max_connections: self.at_least_one(
                "admin.max_connections",
                raw.max_connections,
                DEFAULT_ADMIN_CONNECTIONS,
            ),
            max_event_streams: self.at_least_one(
                "admin.max_event_streams",
                raw.max_event_streams,
                DEFAULT_EVENT_STREAMS,
            ),
            recent_decisions: self
                .at_least_one(
                    "admin.recent_decisions",
                    raw.recent_decisions,
                    DEFAULT_RECENT_DECISIONS,
                )
                .min(100_000),
        };
        raw.enabled.unwrap_or(true).then_some(config)
    }
}
