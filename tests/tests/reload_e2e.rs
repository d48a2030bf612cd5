//! Hot reload through the real binary: SIGHUP, `POST /admin/reload` and `server.watch_config`.
//! A stream under way finishes on the config it started with while the next call sees the new
//! one; routes come and go; a broken config is refused and the running one keeps serving; a
//! plugin replaced on disk is picked up and an unchanged one kept; reloads that race each other
//! all answer.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::{Value, json};

/// A 2026-07-28 `slow_count` call on a connection of its own (closed after the response),
/// left unread for the test to read as it goes.
fn start_slow_count(base: &str, route: &str, steps: u32, delay_ms: u32) -> std::net::TcpStream {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"slow_count","arguments":{{"steps":{steps},"delay_ms":{delay_ms}}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}},"progressToken":"p"}}}}}}"#
    );
    let mut s = connect(base);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /servers/{route}/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: slow_count\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Reads until `needle` has arrived; returns what came.
fn read_until(s: &mut std::net::TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).expect("the stream stays open");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn config(upstream: &str, routes: &[&str], policy: &str) -> String {
    let mut yaml = String::from(
        "server:\n  port: 0\nobservability:\n  metrics: {}\nadmin:\n  port: 0\n  token_env: ADMIN_TOKEN\nupstreams:\n",
    );
    for r in routes {
        yaml.push_str(&format!("  {r}:\n    url: {upstream}\n"));
    }
    yaml.push_str(policy);
    yaml
}

const ALLOW_ALL: &str = "policy:\n  default: allow\n";
const DENY_SLOW: &str = "policy:\n  default: allow\n  rules:\n    - name: no-slow\n      tools: [slow_*]\n      decision: deny\n      reason: too slow\n";

fn call(base: &str, route: &str, tool: &str, arguments: Value) -> Value {
    let c = Client::new(base, route, MODERN);
    let text = c.answer(
        "1",
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    );
    serde_json::from_str(&text).unwrap()
}

/// The tightened policy (`DENY_SLOW`) refuses `slow_count` on the demo route.
fn assert_slow_count_denied(base: &str) {
    let denied = call(
        base,
        "demo",
        "slow_count",
        json!({"steps": 1, "delay_ms": 1}),
    );
    assert_eq!(denied["error"]["code"], -32007, "{denied}");
}

#[test]
fn a_stream_under_way_finishes_on_its_config_and_the_next_call_sees_the_new_one() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("reload");
    let cfg = dir.file("gw.yaml", &config(&upstream, &["demo", "old"], ALLOW_ALL));
    let (mut gw, base, admin) = start_with_admin(&cfg, &[]);

    // A long tool call streams progress; the policy is tightened and a route swapped under it.
    let mut stream = start_slow_count(&base, "demo", 12, 200);
    let first = read_until(&mut stream, "notifications/progress");
    assert!(first.contains("200 OK"), "{first}");
    dir.file("gw.yaml", &config(&upstream, &["demo", "new"], DENY_SLOW));
    sighup(&gw);
    gw.wait_for("config reloaded", Duration::from_secs(30));

    // The call started before the reload runs to its end, every progress event included.
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    let all = first + &rest;
    assert_eq!(
        all.matches("notifications/progress").count(),
        12,
        "every progress event arrives: {all}"
    );
    assert!(
        all.contains(r#""result""#) && !all.contains("policy"),
        "{all}"
    );

    // The next call is judged by the new policy; other tools still pass.
    assert_slow_count_denied(&base);
    let echo = call(&base, "demo", "echo", json!({"text": "after"}));
    assert_eq!(echo["result"]["content"][0]["text"], "after", "{echo}");

    // The added route serves; the removed one is an unknown server.
    let added = call(&base, "new", "echo", json!({"text": "new route"}));
    assert_eq!(
        added["result"]["content"][0]["text"], "new route",
        "{added}"
    );
    let gone = Client::new(&base, "old", MODERN).send(
        "1",
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    );
    assert_eq!(gone.status, 404, "{}", gone.body);

    // What the admin API and the metrics say of it.
    let status = admin.get("/admin/status");
    assert_eq!(status["generation"], 2, "{status}");
    let last = &status["last_reload"];
    assert_eq!(last["result"], "applied", "{last}");
    assert_eq!(last["trigger"], "signal", "{last}");
    assert_eq!(last["routes_added"], json!(["new"]), "{last}");
    assert_eq!(last["routes_removed"], json!(["old"]), "{last}");
    let routes = admin.get("/admin/routes");
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo", "new"], "{routes}");
    assert_eq!(routes["routes"][0]["health"]["reachable"], true, "{routes}");
    let metrics = get(&base, "/metrics");
    assert_eq!(
        metric(&metrics, "mcpgate_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "mcpgate_config_generation"), 2.0);
    // The new route has its own series.
    assert!(
        metrics.contains("mcpgate_requests_total{method=\"tools/call\",server=\"new\""),
        "{metrics}"
    );
}

#[test]
fn a_broken_config_is_refused_and_the_running_one_keeps_serving() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("reload-broken");
    let good = config(&upstream, &["demo"], ALLOW_ALL);
    let cfg = dir.file("gw.yaml", &good);
    let (mut gw, base, admin) = start_with_admin(&cfg, &[]);

    // Two errors at once: both are reported with their key and line, nothing changes.
    let broken = good.replace("policy:\n  default: allow\n", "policy:\n  default: maybe\n")
        + "  bogus_key: 1\n";
    dir.file("gw.yaml", &broken);
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["result"], "refused", "{report}");
    assert_eq!(report["generation"], 1, "{report}");
    let errors = report["errors"].to_string();
    assert!(errors.contains("policy.default"), "{errors}");
    assert!(errors.contains("bogus_key"), "{errors}");
    assert!(
        errors.contains("gw.yaml:"),
        "errors name the file and line: {errors}"
    );
    gw.wait_for("config reload refused", Duration::from_secs(10));
    let echo = call(&base, "demo", "echo", json!({"text": "still here"}));
    assert_eq!(echo["result"]["content"][0]["text"], "still here", "{echo}");

    // A file that is not YAML at all, then one that is gone: refused the same way.
    dir.file("gw.yaml", "server: [unclosed\n");
    assert_eq!(admin.call("POST", "/admin/reload").0, 422);
    std::fs::remove_file(&cfg).unwrap();
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 422, "{report}");
    assert!(
        report["errors"].to_string().contains("cannot read"),
        "{report}"
    );

    // Keys only a restart applies are reported and keep their running values; the rest applies.
    let restart = good
        .replace("server:\n  port: 0\n", "server:\n  port: 0\n  workers: 7\n")
        .replace("admin:\n  port: 0\n", "admin:\n  port: 1\n")
        .replace(ALLOW_ALL, DENY_SLOW);
    dir.file("gw.yaml", &restart);
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 200, "{report}");
    let pending = report["restart_required"].to_string();
    assert!(pending.contains("server.workers"), "{pending}");
    assert!(pending.contains("admin"), "{pending}");
    assert_eq!(report["generation"], 2, "{report}");
    let config = admin.get("/admin/config");
    assert_ne!(config["effective"]["server"]["workers"], 7, "{config}");
    assert_slow_count_denied(&base);

    let metrics = get(&base, "/metrics");
    assert_eq!(
        metric(&metrics, "mcpgate_config_reloads_total{result=\"refused\"}"),
        3.0
    );
    assert_eq!(
        metric(&metrics, "mcpgate_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "mcpgate_config_generation"), 2.0);
}

#[test]
fn reloads_that_race_each_other_all_answer_one_at_a_time() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("reload-race");
    let cfg = dir.file("gw.yaml", &config(&upstream, &["demo"], ALLOW_ALL));
    let (gw, base, admin) = start_with_admin(&cfg, &[]);
    let admin = std::sync::Arc::new(admin);
    // Eight admin reloads and eight SIGHUPs at once, with traffic running.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let admin = admin.clone();
            std::thread::spawn(move || admin.call("POST", "/admin/reload").0)
        })
        .collect();
    for _ in 0..8 {
        sighup(&gw);
    }
    for i in 0..10 {
        let echo = call(
            &base,
            "demo",
            "echo",
            json!({"text": format!("during {i}")}),
        );
        assert_eq!(echo["result"]["content"][0]["text"], format!("during {i}"));
    }
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    // Signals that arrive together may be merged into one; every admin reload counts.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied = metric(
            &get(&base, "/metrics"),
            "mcpgate_config_reloads_total{result=\"applied\"}",
        );
        let generation = admin.get("/admin/status")["generation"].as_u64().unwrap();
        assert_eq!(
            generation as f64,
            applied + 1.0,
            "one generation per reload"
        );
        if applied >= 9.0 || std::time::Instant::now() > deadline {
            assert!(applied >= 9.0, "{applied} reloads applied");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_plugin_replaced_on_disk_is_picked_up_and_an_unchanged_one_kept() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("reload-plugin");
    let plugins = repo().join("plugins");
    let swap = dir.0.join("swap.wasm");
    std::fs::copy(plugins.join("misbehave.wasm"), &swap).unwrap();
    let yaml = format!(
        "server:\n  port: 0\n  watch_config: true\nadmin:\n  port: 0\n  token_env: ADMIN_TOKEN\n\
         upstreams:\n  demo:\n    url: {upstream}\n\
         plugins:\n  swap:\n    file: {}\n    grants: {{empty_filesystem: true}}\n  steady:\n    file: {}\n\
         pipeline: [steady, swap]\n",
        swap.display(),
        plugins.join("misbehave.wasm").display()
    );
    let cfg = dir.file("gw.yaml", &yaml);
    let (mut gw, base, admin) = start_with_admin(&cfg, &[]);
    let before = admin.get("/admin/plugins");
    let echo = call(&base, "demo", "echo", json!({"text": "through misbehave"}));
    assert_eq!(echo["result"]["content"][0]["text"], "through misbehave");

    // The file is replaced by another component (written elsewhere, then renamed over it, as
    // deploy tools do): the watcher reloads, and the new plugin answers tools/call itself.
    let staged = dir.0.join("swap.wasm.new");
    std::fs::copy(plugins.join("fs_probe.wasm"), &staged).unwrap();
    std::fs::rename(&staged, &swap).unwrap();
    gw.wait_for("config reloaded", Duration::from_secs(60));
    let answered = call(&base, "demo", "echo", json!({"path": "/nonexistent"}));
    let text = answered.to_string();
    assert!(
        answered["result"]["error"].is_string() || text.contains("error"),
        "the new plugin answers: {text}"
    );
    assert!(!text.contains("through misbehave"), "{text}");

    let last = &admin.get("/admin/status")["last_reload"];
    assert_eq!(last["trigger"], "watch", "{last}");
    assert_eq!(last["plugins"]["loaded"], json!(["swap"]), "{last}");
    assert_eq!(last["plugins"]["kept"], json!(["steady"]), "{last}");
    let after = admin.get("/admin/plugins");
    let sha = |v: &Value, name: &str| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["sha256"].clone())
            .unwrap()
    };
    assert_ne!(sha(&before, "swap"), sha(&after, "swap"), "{after}");
    assert_eq!(sha(&before, "steady"), sha(&after, "steady"), "{after}");
    // The kept plugin kept its counters (the same loaded instance).
    let steady_calls = after["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "steady")
        .unwrap()["calls"]["calls"]
        .as_u64()
        .unwrap();
    assert!(steady_calls >= 2, "{after}");

    // A component that cannot load (garbage) is refused; the loaded plugin keeps serving.
    std::fs::write(dir.0.join("swap.wasm.bad"), b"\0asm garbage").unwrap();
    std::fs::rename(dir.0.join("swap.wasm.bad"), &swap).unwrap();
    gw.wait_for("config reload refused", Duration::from_secs(60));
    let still = call(&base, "demo", "echo", json!({"path": "/nonexistent"}));
    assert_eq!(still.to_string().contains("error"), text.contains("error"));
    assert_eq!(admin.get("/admin/status")["generation"], 2);
}

#[test]
fn sessions_and_spent_buckets_survive_a_reload() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("reload-state");
    let limits = "rate_limit:\n  per_client: {capacity: 3, refill_rate: 0.001}\n";
    let base_cfg = config(&upstream, &["demo"], ALLOW_ALL);
    let cfg = dir.file("gw.yaml", &format!("{base_cfg}{limits}"));
    let (mut gw, base, admin) = start_with_admin(&cfg, &[]);
    // A legacy session (initialize took a token), then two more calls: the bucket is empty.
    let legacy = Client::new(&base, "demo", LEGACY);
    let list = |c: &Client| c.send("5", "tools/list", json!({}));
    assert_eq!(list(&legacy).status, 200);
    assert_eq!(list(&legacy).status, 200);
    assert_eq!(list(&legacy).status, 429);

    // A reload that changes something else (the policy) keeps both.
    dir.file(
        "gw.yaml",
        &format!("{}{limits}", config(&upstream, &["demo"], DENY_SLOW)),
    );
    sighup(&gw);
    gw.wait_for("config reloaded", Duration::from_secs(30));
    assert_eq!(list(&legacy).status, 429, "the spent bucket stays spent");
    assert_eq!(admin.get("/admin/sessions")["count"], 1);

    // Loosened limit: the bucket keeps its (few) tokens but refills at the new rate; the session
    // is the same one throughout.
    dir.file(
        "gw.yaml",
        &format!(
            "{}rate_limit:\n  per_client: {{capacity: 3, refill_rate: 1000}}\n",
            config(&upstream, &["demo"], DENY_SLOW)
        ),
    );
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 200, "{report}");
    std::thread::sleep(Duration::from_millis(50));
    let after = list(&legacy);
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(admin.get("/admin/sessions")["count"], 1);
}
