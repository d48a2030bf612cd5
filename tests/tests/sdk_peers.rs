//! Real MCP SDK peers through the real `mcpgate` binary:
//! - the Python `mcp` 2.x client and server, in the legacy era, the 2026-07-28 era, and `auto`;
//! - the TypeScript SDK 1.x client with `@modelcontextprotocol/server-everything`.
//!
//! Each checks tools listing and calls, and that a slow tool's progress notifications reach the
//! client *before* its result (the gateway streams; it does not buffer).

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::Value;

fn gateway_for(name: &str, upstream_url: &str) -> (Proc, String, TempDir) {
    let dir = TempDir::new("e2e");
    let cfg = dir.file(
        "mcpgate.yaml",
        &format!("sessions:\n  key: ${{MCPGATE_SESSION_KEY}}\nupstreams:\n  {name}:\n    url: {upstream_url}\n    timeout: 30000\n"),
    );
    let (gw, base) = start_gateway(
        &cfg,
        &[(
            "MCPGATE_SESSION_KEY",
            "c2Vzc2lvbi1rZXktZm9yLWUyZS10ZXN0cy0zMmJ5dGU=",
        )],
    );
    (gw, format!("{base}/servers/{name}/mcp"), dir)
}

/// Progress events arrived one by one, well before the result: with 300 ms between steps, the
/// first progress event precedes the result by two more steps unless something buffered it.
fn assert_streamed(progress: &[Value], result_at: f64, min_lead: f64, what: &str) {
    assert!(
        !progress.is_empty(),
        "{what}: no progress notifications arrived"
    );
    let first = progress[0]["at"].as_f64().unwrap();
    for p in progress {
        assert!(
            p["at"].as_f64().unwrap() <= result_at,
            "{what}: progress after result: {p}"
        );
    }
    assert!(
        result_at - first >= min_lead,
        "{what}: first progress only {:.3}s before the result (buffered?): {progress:?}",
        result_at - first
    );
}

#[test]
fn python_sdk_client_and_server_in_both_eras() {
    let (_server, upstream) = start_demo_server();
    let (mut gw, url, _dir) = gateway_for("demo", &upstream);
    for (mode, version) in [
        ("legacy", "2025-11-25"),
        ("2026-07-28", "2026-07-28"),
        ("auto", "2026-07-28"),
    ] {
        let out = run_client(
            &format!("py_client {mode}"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_client.py"))
                .args([&url, mode]),
            Duration::from_secs(120),
        );
        let what = format!("python {mode}");
        assert_eq!(out["protocol_version"], version, "{what}: {out}");
        assert_eq!(
            out["tools"],
            serde_json::json!(["add", "echo", "slow_count", "whoami"]),
            "{what}"
        );
        assert_eq!(out["echo"], "héllo through the gateway", "{what}");
        assert_eq!(out["add"], "42", "{what}");
        assert_eq!(out["unknown_tool_is_error"], true, "{what}");
        let slow = &out["slow"];
        assert_eq!(slow["text"], "counted to 3", "{what}");
        let progress = slow["progress"].as_array().unwrap();
        assert_eq!(progress.len(), 3, "{what}: {progress:?}");
        assert_streamed(progress, slow["result_at"].as_f64().unwrap(), 0.25, &what);
    }
    let log = gw.drain().join("\n");
    assert!(!log.contains("ERROR"), "gateway logged errors:\n{log}");
}

#[test]
fn typescript_sdk_client_with_server_everything() {
    let (_server, upstream) = start_everything();
    let (_gw, url, _dir) = gateway_for("everything", &upstream);
    let out = run_client(
        "ts_client",
        Command::new("node")
            .arg(repo().join("tests/e2e/ts_client.mjs"))
            .arg(&url)
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(120),
    );
    let session = out["sessionId"].as_str().unwrap();
    assert!(
        session.starts_with("mg1."),
        "the client holds the gateway's sealed id, not the upstream's: {session}"
    );
    assert_eq!(out["protocolVersion"], "2025-11-25");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in ["echo", "get-sum", "trigger-long-running-operation"] {
        assert!(tools.contains(&t), "{t} listed: {tools:?}");
    }
    assert_everything_session(&out);
    let slow = &out["slow"];
    assert!(
        slow["text"]
            .as_str()
            .unwrap()
            .starts_with("Long running operation completed")
    );
    let progress: Vec<Value> = slow["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::json!({"at": p["at"].as_f64().unwrap() / 1000.0}))
        .collect();
    assert_eq!(progress.len(), 4, "{slow}");
    assert_streamed(
        &progress,
        slow["resultAt"].as_f64().unwrap() / 1000.0,
        0.5,
        "typescript",
    );
}
