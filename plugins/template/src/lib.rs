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

// Unit tests run natively with `cargo test`: `testing` builds the requests the gateway would
// hand over and keeps what the plugin logs (and stores, and counts) in memory.
#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_plugin_sdk::json;
    use mcpgate_plugin_sdk::testing::{self, Level, request};

    #[test]
    fn every_tool_call_goes_on_with_the_greeting() {
        let plugin: Template = testing::init(json!({"greeting": "hello"})).unwrap();
        let call = request("tools/call").tool("echo").caller("alice").build();
        assert_eq!(
            plugin.on_request(&call),
            Action::Continue.set_header("x-greeting", "hello")
        );
        assert_eq!(
            testing::logs(),
            vec![(Level::Debug, r#"alice calls Some("echo")"#.to_string())]
        );
    }

    #[test]
    fn a_bad_config_is_refused_with_a_reason() {
        let empty = testing::init::<Template>(json!({"greeting": ""}));
        assert!(empty.err().unwrap().contains("must not be empty"));
        let misspelt = testing::init::<Template>(json!({"greting": "hello"}));
        assert!(misspelt.err().unwrap().contains("unknown field `greting`"));
    }
}
