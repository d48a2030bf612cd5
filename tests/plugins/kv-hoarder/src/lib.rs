//! A test fixture for the kv store's bounds: `tools/call hoard {count}` writes `count` keys of
//! 64 KiB each into the plugin's kv store and answers locally with how many writes succeeded and
//! the first error. Every other call passes untouched.

use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, export_plugin, json, kv};

struct Hoarder;

impl Plugin for Hoarder {
    type Config = serde::de::IgnoredAny;

    fn init(_config: serde::de::IgnoredAny) -> Result<Self, String> {
        Ok(Hoarder)
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        if req.tool() != Some("hoard") {
            return Action::Continue;
        }
        let count = req
            .arguments()
            .and_then(|a| a["count"].as_u64())
            .unwrap_or(0);
        let value = vec![b'h'; 64 * 1024];
        let mut stored = 0u64;
        let mut error = None;
        for i in 0..count {
            match kv::set(&format!("hoard-{i}"), &value, None) {
                Ok(()) => stored += 1,
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        Action::respond(json!({"stored": stored, "error": error}))
    }
}

export_plugin!(Hoarder);
