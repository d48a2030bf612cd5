//! A test fixture for the `callout` capability: `tools/call lookup {target, path}` is answered
//! locally with the status and body of `GET <path>` on the named callout target, or the error.

use std::time::Duration;

use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, callout, export_plugin, json};

struct CalloutProbe;

impl Plugin for CalloutProbe {
    type Config = serde::de::IgnoredAny;

    fn init(_config: serde::de::IgnoredAny) -> Result<Self, String> {
        Ok(CalloutProbe)
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        if req.tool() != Some("lookup") {
            return Action::Continue;
        }
        let args = req.arguments().cloned().unwrap_or_default();
        let target = args["target"].as_str().unwrap_or_default();
        let path = args["path"].as_str().unwrap_or("/");
        let caller = req.client_key();
        match callout::send(
            target,
            "GET",
            path,
            &[("x-caller", &caller)],
            b"",
            Duration::from_secs(5),
        ) {
            Ok(r) => Action::respond(json!({
                "status": r.status,
                "body": String::from_utf8_lossy(&r.body),
            })),
            Err(e) => Action::respond(json!({"error": format!("{e:?}")})),
        }
    }
}

export_plugin!(CalloutProbe);
