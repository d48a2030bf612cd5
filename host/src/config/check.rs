//! The validator every section's checks share: errors positioned at their key's line, missing
//! keys, secrets from the environment, and the small value checks (durations, counts, URLs,
//! glob lists). Each section's own checks are `impl Validator` blocks beside the section's
//! runtime types (`config/` for the gateway's own sections, `stages/<stage>/config.rs` for a
//! stage's), so this file knows no section.

use std::collections::BTreeSet;
use std::time::Duration;

use super::OnError;
use super::yaml::{self, Sink};
use crate::glob::Glob;

/// Checks raw sections into runtime config, collecting every error with its line.
pub(crate) struct Validator<'a> {
    pub(super) root: &'a marked_yaml::Node,
    pub(super) sink: &'a mut Sink,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// Paths of the values that came wholly from `${VAR}` references ([`yaml::interpolate`]).
    pub(super) from_env: &'a BTreeSet<String>,
}

impl Validator<'_> {
    /// The value of the environment variable `var` named at `path`; unset or empty is an error.
    pub(crate) fn env_secret(&mut self, path: &str, var: &str) -> Option<String> {
        match (self.env)(var) {
            Some(value) if !value.is_empty() => Some(value),
            _ => {
                self.error(path, format!("environment variable `{var}` is not set"));
                self.sink.missing_env.insert(var.to_string());
                None
            }
        }
    }

    /// `fail_closed` or `fail_open` at `path`; `default` when absent.
    pub(crate) fn on_error(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: OnError,
    ) -> OnError {
        match value {
            None => default,
            Some("fail_closed") => OnError::FailClosed,
            Some("fail_open") => OnError::FailOpen,
            Some(other) => {
                self.error(
                    path,
                    format!("unknown value `{other}` (expected `fail_closed` or `fail_open`)"),
                );
                default
            }
        }
    }

    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let line = yaml::line_of(self.root, path);
        self.sink.push(path, line, message);
    }

    pub(crate) fn missing(&mut self, path: &str, message: &str) {
        if !self.sink.has_error_at(path) {
            let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
            let line = yaml::line_of(self.root, parent);
            self.sink.push(path, line, message);
        }
    }

    /// A count or size at `path` that must be at least 1; `default` when absent.
    pub(crate) fn at_least_one(&mut self, path: &str, raw: Option<usize>, default: usize) -> usize {
        if raw == Some(0) {
            self.error(path, "must be at least 1");
            return default;
        }
        raw.unwrap_or(default)
    }

    /// A duration in milliseconds at `path` that must be greater than 0.
    pub(crate) fn positive_ms(&mut self, path: &str, raw: Option<u64>, default: u64) -> Duration {
        match raw {
            Some(0) => {
                self.error(path, "must be greater than 0 (milliseconds)");
                Duration::from_millis(default)
            }
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_millis(default),
        }
    }

    /// Whether an error was already reported at `path` (or below it).
    pub(crate) fn has_error_at(&self, path: &str) -> bool {
        self.sink.has_error_at(path)
    }

    /// Whether the value at `path` came wholly from a `${VAR}` reference.
    pub(crate) fn came_from_env(&self, path: &str) -> bool {
        self.from_env.contains(path)
    }

    /// The YAML node at `path`, for checks that need the file's own order or spelling.
    pub(crate) fn node_at(&self, path: &str) -> Option<&marked_yaml::Node> {
        yaml::node_at(self.root, path)
    }

    /// An absolute http(s) URL with a host, or an error at `path`.
    pub(crate) fn http_url(&mut self, path: &str, text: &str) -> Option<url::Url> {
        match url::Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.error(
                    path,
                    format!("`{text}` is not an http(s) URL (e.g. https://mcp.example.com)"),
                );
                None
            }
        }
    }

    pub(crate) fn patterns(&mut self, path: &str, list: Option<Vec<String>>) -> Option<Vec<Glob>> {
        let list = list?;
        let mut out = Vec::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            match Glob::new(p) {
                Ok(p) => out.push(p),
                Err(e) => self.error(&format!("{path}[{i}]"), e),
            }
        }
        Some(out)
    }
}
