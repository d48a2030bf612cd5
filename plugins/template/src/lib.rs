//! A new mcpgate plugin. Rename it, then make `on_request` do what you need.
//!
//! Build: `cargo build --target wasm32-wasip2 --release` (from this folder), then add to the
//! gateway config:
//!
//! ```yaml
//! plugins:
//!   template:
//!     file: template.wasm            # plugins/template.wasm, put there by scripts/build-plugins.sh
//!     config: { greeting: hello }
//! pipeline: [template]
//! ```

use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, export_plugin, log};
use serde::Deserialize;

/// The plugin's YAML `config:` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Sent to the upstream in the `x-greeting` header.
    greeting: String,
}

struct Template {
    greeting: String,
}

impl Plugin for Template {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.greeting.is_empty() {
            return Err("`greeting` must not be empty".into());
        }
        Ok(Template {
            greeting: config.greeting,
        })
    }

    fn registration(&self) -> Registration {
        // Only tools/call requests reach on_request; everything else bypasses the plugin.
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        log::debug(format!("{} calls {:?}", req.client_key(), req.tool()));
        // Other answers: Action::reject(code, message), Action::rewrite_arguments(json),
        // Action::respond(result).
        Action::Continue.set_header("x-greeting", &self.greeting)
    }
}

export_plugin!(Template);
