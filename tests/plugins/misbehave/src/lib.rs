//! A test fixture: misbehaves when asked to, by tool name. Every other call passes untouched,
//! so a test can prove one bad call fails alone while the plugin (and the gateway) keep serving.

use mcpgate_plugin_sdk::{Action, Modification, Plugin, Registration, Request, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Refuse to load when set (exercises init errors).
    #[serde(default)]
    refuse: Option<String>,
}

struct Misbehave;

impl Plugin for Misbehave {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        match config.refuse {
            Some(why) => Err(why),
            None => Ok(Misbehave),
        }
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        match req.tool() {
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
