//! WebAssembly plugins through the real binary with a real SDK client (Python `mcp`), in both
//! protocol eras: a rejection's message reaches the client; a rewrite is what the upstream
//! receives; a response hook changes what the client sees; a quota kept in kv holds across
//! calls; a plugin that loops, sleeps, runs out of memory, panics or sets too many header bytes
//! fails only that call while another client keeps working; fail_open skips the plugin; a plugin built for contract 0.1 still
//! passes and refuses calls.

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::Value;

fn config(upstream: &str) -> String {
    let plugins = repo().join("plugins");
    format!(
        r#"plugin_runtime:
  dir: {plugins}
plugins:
  guard:
    file: arg_guard.wasm
    config:
      tools:
        add:
          arguments:
            a: {{type: integer, maximum: 100}}
            b: {{type: integer, maximum: 100}}
        echo:
          arguments:
            text: {{type: string, max_length: 200}}
        slow_count: {{additional_arguments: true}}
  redact_arguments:
    file: redact.wasm
    config: {{results: false}}
  redact_results:
    file: redact.wasm
    config: {{arguments: false}}
  quota:
    file: quota.wasm
    grants: {{kv: true, metrics: true}}
    config:
      limits:
        - {{tools: [slow_count], calls: 2}}
  chaos:
    file: misbehave.wasm
    timeout: 3000
    max_memory_mb: 16
  chaos_open:
    file: misbehave.wasm
    on_error: fail_open
    timeout: 100
  old_contract:
    file: contract_v01.wasm
    config: {{requests_only: true}}
pipeline: []
upstreams:
  guarded:
    url: {upstream}
    pipeline: [guard, redact_arguments, quota, chaos]
  scrubbed:
    url: {upstream}
    pipeline: [redact_results]
  lenient:
    url: {upstream}
    pipeline: [chaos_open]
  contract01:
    url: {upstream}
    pipeline: [old_contract]
"#,
        plugins = plugins.display()
    )
}

#[test]
fn plugins_with_the_python_sdk_in_both_eras() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("plugins");
    let cfg = dir.file("gw.yaml", &config(&upstream));
    for mode in ["legacy", "2026-07-28"] {
        // A gateway per era: the quota counts per client, and both runs come from 127.0.0.1.
        let (_gw, base) = start_gateway(&cfg, &[]);
        let out = run_client(
            &format!("py_plugins_client {mode}"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_plugins_client.py"))
                .args([&base, mode]),
            Duration::from_secs(180),
        );
        check(&out, mode);
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn check(out: &Value, mode: &str) {
    let rejected = text(&out["rejected"]);
    assert!(
        rejected.starts_with("raised")
            && rejected.contains("argument `a` of `add` must be at most 100"),
        "{mode}: the rejection's message reaches the client: {rejected}"
    );
    assert_eq!(
        out["rewritten"], "mail [REDACTED:email] now",
        "{mode}: the upstream echoed what it received, already redacted"
    );
    let quota: Vec<&str> = out["quota"].as_array().unwrap().iter().map(text).collect();
    assert_eq!(&quota[..2], &["counted to 1", "counted to 1"], "{mode}");
    assert!(
        quota[2].contains("quota exceeded: 2 calls to slow_count"),
        "{mode}: {quota:?}"
    );
    for (tool, kind) in [
        ("spin", "timeout"),
        // Waits in the host (WASI's poll), out of the epoch deadline's reach.
        ("sleep", "timeout"),
        ("oom", "memory"),
        ("panic", "trap"),
        // Sets 64 KiB of headers: past plugin_runtime.max_header_bytes.
        ("huge_header", "invalid"),
    ] {
        let f = &out["failures"][tool];
        assert!(
            text(&f["bad"]).contains(&format!("plugin `chaos` failed ({kind})")),
            "{mode} {tool}: {f}"
        );
        let served: Vec<&str> = f["concurrent"]
            .as_array()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert_eq!(
            served,
            ["still here 0", "still here 1", "still here 2"],
            "{mode} {tool}"
        );
        if tool == "spin" || tool == "sleep" {
            assert_eq!(
                f["bad_still_running"], true,
                "{mode}: the other client was served while the plugin looped or slept (3 s deadline)"
            );
        }
    }
    assert_eq!(out["after"], "after the failures", "{mode}");
    assert_eq!(
        out["scrubbed"], "token [REDACTED:github_token]",
        "{mode}: the response hook rewrote the result the client sees"
    );
    assert_eq!(
        out["contract01"]["echo"], "old plugin",
        "{mode}: a 0.1 plugin passes the call"
    );
    let refused = text(&out["contract01"]["forbidden"]);
    assert!(
        refused.starts_with("raised")
            && refused.contains("the 0.1 plugin refuses `forbidden` for anonymous"),
        "{mode}: a 0.1 plugin's rejection reaches the client: {refused}"
    );
    let open = text(&out["fail_open"]);
    assert!(
        !open.contains("plugin") && open.to_lowercase().contains("spin"),
        "{mode}: with fail_open the call went past the looping plugin to the upstream: {open}"
    );
}
