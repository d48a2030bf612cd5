//! The admin dashboard in a real headless Chromium (Debian's `chromium`, driven by
//! tests/e2e/dashboard.mjs through playwright-core): a wrong token is refused on the page, the
//! right one shows the test config's routes, the numbers move after TypeScript SDK traffic, a tool
//! name made of markup stays text, and the reload button reloads.
//!
//! With `MCPGATE_DASHBOARD_SCREENSHOT=<path>` the screenshot is also copied there (how
//! docs/dashboard.png is made).

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;

#[test]
fn the_dashboard_shows_live_numbers_in_a_real_browser() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("dashboard");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nadmin:\n  port: 0\n  token_env: ADMIN_TOKEN\n\
             upstreams:\n  demo:\n    url: {upstream}\n  spare:\n    url: {upstream}\n\
             policy:\n  default: allow\n  rules:\n    - tools: [slow_*]\n      decision: deny\n"
        ),
    );
    let (_gw, base, admin) = start_with_admin(&cfg, &[]);
    let shot = dir.0.join("dashboard.png");
    let out = run_client(
        "dashboard.mjs",
        Command::new("node")
            .arg(repo().join("tests/e2e/dashboard.mjs"))
            .args([
                &admin.base,
                &admin.token,
                &format!("{base}/servers/demo/mcp"),
            ])
            .arg(&shot)
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(180),
    );
    assert!(
        out["wrong_token_message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{out}"
    );
    assert!(
        !out["url_after_login"].as_str().unwrap().contains("token"),
        "the token does not stay in the URL: {out}"
    );
    assert_eq!(out["routes"], serde_json::json!(["demo", "spare"]), "{out}");
    let (before, after) = (
        out["requests_before"].as_u64().unwrap(),
        out["requests_after"].as_u64().unwrap(),
    );
    assert!(after >= before + 5, "{out}");
    assert!(out["decisions"].as_u64().unwrap() >= 5, "{out}");
    assert_eq!(out["markup_shown_as_text"], true, "{out}");
    assert_eq!(out["markup_became_elements"], 0, "{out}");
    assert_eq!(out["pwned"], false, "{out}");
    assert_eq!(out["health"], "reachable", "{out}");
    assert!(out["snapshots"].as_u64().unwrap() >= 2, "{out}");
    assert!(
        out["reload_status"].as_str().unwrap().contains("applied"),
        "{out}"
    );
    assert_eq!(out["generation"], "2", "{out}");
    assert_eq!(out["console_errors"], serde_json::json!([]), "{out}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot"
    );
    if let Ok(path) = std::env::var("MCPGATE_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, path).unwrap();
    }
}
