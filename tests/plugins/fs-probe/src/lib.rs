//! A test fixture that imports the filesystem (as cargo component's wasip1 adapter makes every
//! plugin do): `tools/call read {path}` is answered with what reading that host file gave.

use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, export_plugin, json};

struct FsProbe;

impl Plugin for FsProbe {
    type Config = serde::de::IgnoredAny;

    fn init(_config: serde::de::IgnoredAny) -> Result<Self, String> {
        Ok(FsProbe)
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        let path = req
            .arguments()
            .and_then(|a| a["path"].as_str())
            .unwrap_or("/etc/hostname")
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => Action::respond(json!({"read": text})),
            Err(e) => Action::respond(json!({"error": e.to_string()})),
        }
    }
}

export_plugin!(FsProbe);
