//! A test fixture: misbehaves when asked to, by tool name. Every other call passes untouched,
//! so a test can prove one bad call fails alone while the plugin (and the gateway) keep serving.
//! `whoami` tells the upstream (in headers) when this instance's `init` ran and how many calls
//! the instance has served: what a test of instance isolation and init snapshots reads. `view`
//! reports every field of the request view in one header, in the same form as the contract-0.1
//! fixture (`tests/plugins/contract-v01`), so a test can compare what each contract shows.

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
            Some("view") => Action::Continue.set_header("x-view", view(req)),
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // Waits in the host (WASI's poll), where the epoch deadline cannot reach it.
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Action::Continue
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
            Some("huge_header") => Action::Continue.set_header("x-huge", "h".repeat(64 * 1024)),
            _ => Action::Continue,
        }
    }
}

/// Every field of the request, as `contract-v01` writes its own (the arguments cut to their
/// first 100 characters: a header must stay small).
fn view(req: &Request) -> String {
    let era = match req.era() {
        mcpgate_plugin_sdk::Era::Legacy => "legacy",
        mcpgate_plugin_sdk::Era::Modern => "modern",
    };
    format!(
        "method={} target={} id={} era={era} route={} args={} tenant={} caller={} scopes={} addr={} headers={} message-bytes={} hidden-auth={} request-id-set={}",
        req.method(),
        req.target().unwrap_or("-"),
        req.id().unwrap_or("-"),
        req.route(),
        req.arguments()
            .map_or("-".to_string(), |a| a.to_string())
            .chars()
            .take(100)
            .collect::<String>(),
        req.header("X-Tenant").as_deref().unwrap_or("-"),
        req.caller_id().unwrap_or("-"),
        req.scopes().join(","),
        req.remote_addr().unwrap_or("-"),
        req.headers().len(),
        req.message().len(),
        req.header("authorization").is_none(),
        !req.request_id().is_empty(),
    )
}

export_plugin!(Misbehave);
