//! Per-client quotas on expensive tools: each caller may make at most N calls to a group of
//! tools per window (a day by default). Counters live in the gateway's `kv` store, so they hold
//! across requests, instances and (with the Redis backend) replicas. See README.md.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgate_plugin_sdk::{
    Action, Plugin, Registration, Request, export_plugin, json, kv, log, metrics,
};
use serde::Deserialize;
use wildmatch::WildMatch;

const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    /// Tools this quota counts (`*` wildcards); the first matching limit applies.
    tools: Vec<String>,
    /// Calls allowed per client per window.
    calls: i64,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnKvError {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    limits: Vec<Limit>,
    /// Window length in milliseconds; windows are aligned to the Unix epoch (a day: UTC days).
    #[serde(default = "day")]
    window_ms: u64,
    /// When the kv store is unreachable: let calls through (default) or refuse them.
    #[serde(default = "allow")]
    on_kv_error: OnKvError,
}

fn day() -> u64 {
    DAY_MS
}
fn allow() -> OnKvError {
    OnKvError::Allow
}

pub struct Quota {
    limits: Vec<(Vec<WildMatch>, i64, String)>,
    window_ms: u64,
    on_kv_error: OnKvError,
}

/// The key of one client's counter for one limit in one window, and the window's remaining ms.
pub fn counter_key(client: &str, limit: usize, window_ms: u64, now_ms: u64) -> (String, u64) {
    let window = now_ms / window_ms;
    let remaining = window_ms - now_ms % window_ms;
    (format!("{client}/{limit}/{window}"), remaining)
}

impl Quota {
    pub fn new(config: Config) -> Result<Self, String> {
        if config.limits.is_empty() {
            return Err("`limits` must list at least one limit".into());
        }
        if config.window_ms == 0 {
            return Err("`window_ms` must be greater than 0".into());
        }
        let mut limits = Vec::new();
        for (i, l) in config.limits.into_iter().enumerate() {
            if l.calls <= 0 {
                return Err(format!("limits[{i}].calls must be greater than 0"));
            }
            if l.tools.is_empty() {
                return Err(format!("limits[{i}].tools must name at least one tool"));
            }
            let label = l.tools.join(",");
            limits.push((
                l.tools.iter().map(|t| WildMatch::new(t)).collect(),
                l.calls,
                label,
            ));
        }
        Ok(Quota {
            limits,
            window_ms: config.window_ms,
            on_kv_error: config.on_kv_error,
        })
    }

    /// The index and size of the first limit that counts `tool`.
    pub fn limit_for(&self, tool: &str) -> Option<(usize, i64, &str)> {
        self.limits
            .iter()
            .enumerate()
            .find(|(_, (p, _, _))| p.iter().any(|w| w.matches(tool)))
            .map(|(i, (_, calls, label))| (i, *calls, label.as_str()))
    }
}

impl Plugin for Quota {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Quota::new(config)
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        let Some(tool) = req.tool() else {
            return Action::Continue;
        };
        let Some((index, calls, label)) = self.limit_for(tool) else {
            return Action::Continue;
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let client = req.client_key();
        let (key, remaining_ms) = counter_key(&client, index, self.window_ms, now_ms);
        match kv::incr(&key, 1, Some(Duration::from_millis(remaining_ms))) {
            Ok(used) if used > calls => {
                metrics::counter_add("quota_rejections", 1, &[("tools", label)]);
                Action::reject(
                    -32005,
                    format!(
                        "quota exceeded: {calls} calls to {label} per {}s; resets in {}s",
                        self.window_ms / 1000,
                        remaining_ms.div_ceil(1000)
                    ),
                )
                .with_status(429)
                .with_data(json!({"limit": calls, "used": used - 1, "reset_ms": remaining_ms}))
            }
            Ok(_) => Action::Continue,
            Err(e) => {
                log::warn(format!("quota store unavailable: {e:?}"));
                match self.on_kv_error {
                    OnKvError::Allow => Action::Continue,
                    OnKvError::Deny => {
                        Action::reject(-32005, "quota store unavailable; try again later")
                            .with_status(503)
                    }
                }
            }
        }
    }
}

export_plugin!(Quota);

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_plugin_sdk::Value;
    use mcpgate_plugin_sdk::testing::{self, request};

    fn quota(c: Value) -> Result<Quota, String> {
        Quota::new(serde_json::from_value(c).unwrap())
    }

    #[test]
    fn first_matching_limit_and_windows() {
        let q = quota(json!({"limits": [{"tools": ["search_*"], "calls": 3}, {"tools": ["*"], "calls": 100}]})).unwrap();
        assert_eq!(q.limit_for("search_web"), Some((0, 3, "search_*")));
        assert_eq!(q.limit_for("echo"), Some((1, 100, "*")));
        // Windows are aligned: the same key until the boundary, a new one after it.
        let (k1, r1) = counter_key("alice", 0, 1000, 5_250);
        let (k2, _) = counter_key("alice", 0, 1000, 5_999);
        let (k3, _) = counter_key("alice", 0, 1000, 6_000);
        assert_eq!((k1.as_str(), r1), ("alice/0/5", 750));
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
    }

    #[test]
    fn config_errors() {
        assert!(
            quota(json!({"limits": []}))
                .err()
                .unwrap()
                .contains("at least one")
        );
        assert!(
            quota(json!({"limits": [{"tools": ["x"], "calls": 0}]}))
                .err()
                .unwrap()
                .contains("calls must be greater than 0")
        );
        assert!(
            quota(json!({"limits": [{"tools": ["x"], "calls": 1}], "window_ms": 0}))
                .err()
                .unwrap()
                .contains("window_ms")
        );
    }

    // The hook itself, natively: `testing` keeps the kv counters and metrics in memory.
    const HOUR_MS: u64 = 3_600_000;

    fn call(q: &Quota, tool: &str, who: &str) -> Action {
        q.on_request(&request("tools/call").tool(tool).caller(who).build())
    }

    #[test]
    fn calls_past_the_limit_are_refused_per_client_and_counted() {
        let q: Quota = testing::init(json!({
            "limits": [{"tools": ["search_*"], "calls": 2}],
            "window_ms": HOUR_MS,
        }))
        .unwrap();
        assert_eq!(call(&q, "search_web", "alice"), Action::Continue);
        assert_eq!(call(&q, "search_web", "alice"), Action::Continue);
        let Action::Reject { http_status, error } = call(&q, "search_web", "alice") else {
            panic!("the third call is over the quota")
        };
        assert_eq!((http_status, error.code), (429, -32005));
        assert_eq!(error.data.unwrap()["used"], 2);
        // Another client has its own quota; a tool no limit names is not counted.
        assert_eq!(call(&q, "search_web", "bob"), Action::Continue);
        assert_eq!(call(&q, "echo", "alice"), Action::Continue);
        assert_eq!(
            testing::counter("quota_rejections", &[("tools", "search_*")]),
            1
        );
    }

    #[test]
    fn an_unreachable_store_lets_calls_through_or_refuses_them_as_configured() {
        testing::kv_unavailable(true);
        let limits = json!([{"tools": ["*"], "calls": 1}]);
        let allow: Quota = testing::init(json!({"limits": limits})).unwrap();
        assert_eq!(call(&allow, "t", "alice"), Action::Continue);
        let deny: Quota = testing::init(json!({"limits": limits, "on_kv_error": "deny"})).unwrap();
        let Action::Reject { http_status, .. } = call(&deny, "t", "alice") else {
            panic!("on_kv_error: deny refuses")
        };
        assert_eq!(http_status, 503);
        let logs = testing::logs();
        assert_eq!(logs.len(), 2);
        assert!(
            logs.iter()
                .all(|(level, line)| *level == testing::Level::Warn
                    && line.contains("quota store unavailable"))
        );
        // Back up: counting resumes.
        testing::kv_unavailable(false);
        assert_eq!(call(&deny, "t", "alice"), Action::Continue);
        assert!(matches!(call(&deny, "t", "alice"), Action::Reject { .. }));
    }
}
