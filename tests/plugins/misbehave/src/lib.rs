//! A test fixture: misbehaves when asked to, by tool name. Every other call passes untouched,
//! so a test can prove one bad call fails alone while the plugin (and the gateway) keep serving.
//! `whoami` tells the upstream (in headers) when this instance's `init` ran and how many calls
//! the instance has served: what a test of instance isolation and init snapshots reads.

use std::sync::atomic::{AtomicU64, Ordering};

use mcpgate_plugin_sdk::{Action, Modification, Plugin, Registration, Request, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Refuse to load when set (exercises init errors).
    #[serde(default)]
    refuse: Option<String>,
}

struct Misbehave {
    /// When `init` ran (wall clock, nanoseconds since the epoch).
    born: u128,
}

/// Calls this instance has served (module state: starts at 0 in every fresh instance).
static CALLS: AtomicU64 = AtomicU64::new(0);

impl Plugin for Misbehave {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        match config.refuse {
            Some(why) => Err(why),
            None => Ok(Misbehave {
                born: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            }),
        }
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match req.tool() {
            Some("whoami") => Action::Continue
                .set_header("x-plugin-born", self.born.to_string())
                .set_header("x-plugin-calls", calls.to_string()),
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("panic") => panic!("misbehave was asked to panic"),
            Some("garbage") => Action::Modify(Modification {
                arguments: Some(mcpgate_plugin_sdk::json!("not an object")),
                ..Modification::default()
            }),
            Some("bad_header") => Action::Continue.set_header("mcp-session-id", "stolen"),
            _ => Action::Continue,
        }
    }
}

export_plugin!(Misbehave);
