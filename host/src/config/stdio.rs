//! `upstreams.<name>` with `type: stdio`: a program the gateway starts and speaks MCP with over
//! stdin and stdout (see `crate::stdio`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Validator;
use crate::stdio::{ChildSpec, StdioRoute};

/// `max_processes` when absent: legacy sessions (one process each) at once.
pub const DEFAULT_MAX_PROCESSES: usize = 16;
/// `max_message_bytes` when absent: the largest message read from a server's stdout.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// `idle_timeout` when absent (ms): a legacy session's process unused this long is stopped.
pub const DEFAULT_STDIO_IDLE_MS: u64 = 10 * 60 * 1000;
/// The placeholder URL of a stdio route until its bridge listens (never connected to).
pub const STDIO_PLACEHOLDER_URL: &str = "http://stdio.invalid/mcp";

/// The stdio keys of an upstream, as written.
#[derive(Debug, Default)]
pub(super) struct RawStdio {
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub max_processes: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub idle_timeout: Option<u64>,
}

impl RawStdio {
    /// Whether any stdio key is present (they need `type: stdio`).
    pub(super) fn any(&self) -> Option<&'static str> {
        [
            ("command", self.command.is_some()),
            ("args", self.args.is_some()),
            ("env", self.env.is_some()),
            ("cwd", self.cwd.is_some()),
            ("max_processes", self.max_processes.is_some()),
            ("max_message_bytes", self.max_message_bytes.is_some()),
            ("idle_timeout", self.idle_timeout.is_some()),
        ]
        .into_iter()
        .find(|(_, present)| *present)
        .map(|(key, _)| key)
    }
}

impl Validator<'_> {
    /// A stdio upstream's process settings, checked at `path` (`upstreams.<name>`).
    pub(super) fn stdio(&mut self, path: &str, name: &str, raw: RawStdio) -> Option<StdioRoute> {
        let command = match raw.command.filter(|c| !c.trim().is_empty()) {
            Some(c) => Some(c),
            None => {
                self.missing(
                    &format!("{path}.command"),
                    "required with `type: stdio`: the program to start, e.g. npx or python",
                );
                None
            }
        };
        let env = raw.env.unwrap_or_default();
        for key in env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                self.error(
                    &format!("{path}.env.{key}"),
                    "not a valid environment variable name",
                );
            }
        }
        let cwd = raw.cwd.map(PathBuf::from);
        if let Some(dir) = &cwd
            && !dir.is_dir()
        {
            self.error(
                &format!("{path}.cwd"),
                format!("`{}` is not a directory", dir.display()),
            );
        }
        let max_processes = self.at_least_one(
            &format!("{path}.max_processes"),
            raw.max_processes,
            DEFAULT_MAX_PROCESSES,
        );
        let max_message_bytes = self.at_least_one(
            &format!("{path}.max_message_bytes"),
            raw.max_message_bytes,
            DEFAULT_MAX_MESSAGE_BYTES,
        );
        Some(StdioRoute {
            child: ChildSpec {
                route: name.into(),
                command: command?,
                args: raw.args.unwrap_or_default(),
                env,
                cwd,
                max_message_bytes,
            },
            max_processes,
            idle_timeout: self.positive_ms(
                &format!("{path}.idle_timeout"),
                raw.idle_timeout,
                DEFAULT_STDIO_IDLE_MS,
            ),
        })
    }
}
