//! stdio servers behind a route, through the real binary: the Python SDK client in both eras
//! against the demo server run as a stdio program, the same pipeline (a policy denial), a process
//! killed mid-call, a server that writes garbage to stdout, and the bound on processes.

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::json;

fn stdio_config(command: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "server:\n  port: 0\nadmin:\n  port: 0\n  token_env: ADMIN_TOKEN\nupstreams:\n  py:\n    type: stdio\n    command: \"{command}\"\n    args: [{}]\n{extra}",
        args.join(", ")
    )
}

fn demo_stdio(extra: &str) -> String {
    let python = python();
    let demo = repo().join("examples/demo_server.py");
    stdio_config(
        python.to_str().unwrap(),
        &[demo.to_str().unwrap(), "--stdio"],
        extra,
    )
}

/// The stdio server processes the gateway runs now (its children).
fn children(gw: &Proc) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &gw.pid().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn sdk_clients_of_both_eras_reach_a_stdio_server_through_the_pipeline() {
    let dir = TempDir::new("stdio");
    let policy =
        "policy:\n  default: allow\n  rules:\n    - tools: [whoami]\n      decision: deny\n";
    let cfg = dir.file("gw.yaml", &demo_stdio(policy));
    let (gw, base, admin) = start_with_admin(&cfg, &[]);
    let url = format!("{base}/servers/py/mcp");
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let out = run_client(
            &format!("py_client {mode} over a stdio route"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_client.py"))
                .args([&url, mode]),
            Duration::from_secs(120),
        );
        assert_eq!(out["protocol_version"], version, "{out}");
        assert_eq!(out["echo"], "héllo through the gateway", "{out}");
        assert_eq!(out["add"], "42", "{out}");
        assert_eq!(out["slow"]["text"], "counted to 3", "{out}");
        // Progress reaches the client in both eras (on the shared 2026-07-28 process, under a
        // token of the gateway's own, restored to the client's).
        assert_eq!(
            out["slow"]["progress"].as_array().unwrap().len(),
            3,
            "{out}"
        );
        assert_eq!(out["unknown_tool_is_error"], true, "{out}");
    }
    // The legacy clients' sessions ended (DELETE): its process is gone; the shared modern one
    // stays.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(children(&gw).len(), 1, "{:?}", children(&gw));
    // The policy stands between clients and the stdio server like any other, in both eras.
    for era in [LEGACY, MODERN] {
        let denied = Client::new(&base, "py", era).answer(
            "3",
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        );
        assert!(denied.contains("-32007"), "{denied}");
    }
    let routes = admin.get("/admin/routes");
    assert_eq!(routes["routes"][0]["health"]["reachable"], true, "{routes}");
}

#[test]
fn a_server_killed_mid_call_fails_that_call_and_its_session_starts_again() {
    let dir = TempDir::new("stdio-kill");
    let cfg = dir.file("gw.yaml", &demo_stdio(""));
    let (gw, base, _admin) = start_with_admin(&cfg, &[]);
    let client = Client::new(&base, "py", LEGACY);
    assert_eq!(children(&gw).len(), 1);
    // A slow call, and the process killed while it runs.
    let slow = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = client.send(
            "7",
            "tools/call",
            json!({"name": "slow_count", "arguments": {"steps": 50, "delay_ms": 200}}),
        );
        (r, started.elapsed(), client)
    });
    std::thread::sleep(Duration::from_millis(800));
    for pid in children(&gw) {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    let (r, took, client) = slow.join().unwrap();
    assert!(
        took < Duration::from_secs(8),
        "answered when the process died, not at the end: {took:?}"
    );
    let answer = r.messages().join("\n");
    assert!(
        answer.contains("-32010") && answer.contains("ended"),
        "{answer}"
    );
    // The session died with its process: 404, and a new session works.
    let after = client.send("8", "tools/list", json!({}));
    assert_eq!(after.status, 404, "{}", after.body);
    let again = Client::new(&base, "py", LEGACY);
    assert!(again.answer("9", "tools/list", json!({})).contains("echo"));
}

#[test]
fn garbage_on_stdout_is_skipped_and_processes_are_bounded() {
    let dir = TempDir::new("stdio-garbage");
    let python = python();
    let demo = repo().join("examples/demo_server.py");
    // A wrapper that writes noise before the server starts (as servers that log to stdout do):
    // lines that are not JSON-RPC, a message over max_message_bytes; on stderr a 5000-byte line
    // and a burst of 300 lines, then one more a second later.
    let script = format!(
        "echo 'Starting server...'; echo '{{not json'; \
         printf '{{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":\"%0200000d\"}}\\n' 0; \
         printf '%05000d\\n' 7 >&2; i=0; while [ $i -lt 300 ]; do echo noise$i >&2; i=$((i+1)); done; \
         sleep 1.2; echo after-the-burst >&2; exec '{}' '{}' --stdio",
        python.display(),
        demo.display()
    );
    let cfg = dir.file(
        "gw.yaml",
        &stdio_config(
            "sh",
            &["-c", &script.replace('"', "\\\"")],
            "    max_processes: 2\n    max_message_bytes: 100000\n",
        ),
    );
    let (mut gw, base, _admin) = start_with_admin(&cfg, &[]);
    let a = Client::new(&base, "py", LEGACY);
    assert!(a.answer("1", "tools/list", json!({})).contains("echo"));
    // The server's stdout and stderr are read by different tasks: their log lines interleave in
    // no fixed order (a CI run saw the stdout warnings after the stderr ones).
    gw.expect_line("not a JSON-RPC message", Duration::from_secs(10));
    gw.expect_line("over the bound: dropped", Duration::from_secs(10));
    // stderr: the long line cut at 4 KiB, the burst bounded to 100 lines a second and the rest
    // counted, reported when the next line comes.
    let cut = gw.expect_line("(a line of 5000 bytes, cut)", Duration::from_secs(10));
    assert!(cut.len() < 4096 + 300, "{} bytes logged", cut.len());
    gw.expect_line("lines dropped", Duration::from_secs(10));
    gw.expect_line("after-the-burst", Duration::from_secs(10));
    let noise = gw
        .drain()
        .iter()
        .filter(|l| l.contains("stdio server: noise"))
        .count();
    assert!((1..=100).contains(&noise), "{noise} noise lines logged");
    let _b = Client::new(&base, "py", LEGACY);
    // The third session is over max_processes: refused with a reason, the others unharmed.
    let third = raw_post(
        &base,
        "/servers/py/mcp",
        &[("mcp-protocol-version", LEGACY)],
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
    );
    assert_eq!(third.status, 503, "{}", third.body);
    assert!(third.body.contains("max_processes"), "{}", third.body);
    assert!(
        a.answer(
            "2",
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "still"}})
        )
        .contains("still")
    );
}

#[test]
fn a_stdio_route_is_checked_by_validate() {
    let dir = TempDir::new("stdio-validate");
    for (upstream, needle) in [
        ("    type: stdio\n", "upstreams.py.command: required"),
        (
            "    type: stdio\n    command: x\n    url: http://127.0.0.1:1/mcp\n",
            "upstreams.py.url",
        ),
        (
            "    url: http://127.0.0.1:1/mcp\n    command: x\n",
            "add `type: stdio`",
        ),
        ("    type: carrier-pigeon\n", "unknown upstream type"),
        (
            "    type: stdio\n    command: x\n    cwd: /nonexistent/dir\n",
            "not a directory",
        ),
        (
            "    type: stdio\n    command: x\n    max_processes: 0\n",
            "max_processes",
        ),
    ] {
        let cfg = dir.file("gw.yaml", &format!("upstreams:\n  py:\n{upstream}"));
        let (ok, out, err) = run_mcpgate(&["validate", "--config", cfg.to_str().unwrap()], &[]);
        let text = out + &err;
        assert!(!ok, "{text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn server_everything_over_stdio_with_the_typescript_client() {
    let dir = TempDir::new("stdio-everything");
    let everything = node_modules().join("@modelcontextprotocol/server-everything/dist/index.js");
    let cfg = dir.file(
        "gw.yaml",
        &stdio_config("node", &[everything.to_str().unwrap(), "stdio"], ""),
    );
    let (_gw, base, _admin) = start_with_admin(&cfg, &[]);
    let out = run_client(
        "ts_client over a stdio route",
        Command::new("node")
            .arg(repo().join("tests/e2e/ts_client.mjs"))
            .arg(format!("{base}/servers/py/mcp"))
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(120),
    );
    // Progress and two sampling round trips (server → client → server) through the session's
    // process.
    assert_everything_session(&out);
}

#[test]
fn a_server_that_keeps_crashing_is_reported_as_a_crash_loop() {
    let dir = TempDir::new("stdio-crash");
    let cfg = dir.file(
        "gw.yaml",
        &stdio_config(
            "sh",
            &["-c", "echo 'cannot open the database' >&2; exit 1"],
            "",
        )
        .replace(
            "server:\n  port: 0\n",
            "server:\n  port: 0\nobservability:\n  metrics: {}\n",
        ),
    );
    let (mut gw, base, admin) = start_with_admin(&cfg, &[]);
    assert_eq!(
        metric(
            &get(&base, "/metrics"),
            "mcpgate_upstream_up{server=\"py\"}"
        ),
        1.0
    );
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    for _ in 0..5 {
        let r = raw_post(
            &base,
            "/servers/py/mcp",
            &[("mcp-protocol-version", LEGACY)],
            init,
        );
        // A clear JSON-RPC error naming the process's end, not a hang.
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            r.body.contains("-32010") && r.body.contains("ended"),
            "{}",
            r.body
        );
    }
    // Its stderr is in the gateway's log, labelled with the route.
    gw.wait_for("cannot open the database", Duration::from_secs(10));
    let routes = admin.get("/admin/routes");
    let status = &routes["routes"][0]["stdio"]["status"];
    assert_eq!(status["state"], "crash_loop", "{routes}");
    assert_eq!(status["crashes"], 5, "{routes}");
    let ready: serde_json::Value = serde_json::from_str(&get(&base, "/readyz")).unwrap();
    assert_eq!(ready["stdio"]["py"], "crash_loop", "{ready}");
    assert_eq!(
        metric(
            &get(&base, "/metrics"),
            "mcpgate_upstream_up{server=\"py\"}"
        ),
        0.0
    );
}

#[test]
fn abandoned_sessions_give_their_processes_back() {
    let dir = TempDir::new("stdio-idle");
    let cfg = dir.file(
        "gw.yaml",
        // Long enough that a busy machine's initialize → initialized gap never reaches it.
        &demo_stdio("    max_processes: 1\n    idle_timeout: 2000\n"),
    );
    let (gw, base, _admin) = start_with_admin(&cfg, &[]);
    // A client that initializes and goes away without DELETE holds the only process...
    let abandoned = Client::new(&base, "py", LEGACY);
    assert_eq!(children(&gw).len(), 1);
    // ...until it has been idle for idle_timeout: then another client gets it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !children(&gw).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle process was not stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let next = Client::new(&base, "py", LEGACY);
    assert!(next.answer("1", "tools/list", json!({})).contains("echo"));
    let gone = abandoned.send("2", "tools/list", json!({}));
    assert_eq!(gone.status, 404, "{}", gone.body);
}

#[test]
fn a_reload_keeps_unchanged_stdio_servers_and_restarts_changed_ones() {
    let dir = TempDir::new("stdio-reload");
    let cfg = dir.file("gw.yaml", &demo_stdio(""));
    let (gw, base, admin) = start_with_admin(&cfg, &[]);
    let session = Client::new(&base, "py", LEGACY);
    let before = children(&gw);
    assert_eq!(before.len(), 1);

    // A reload that changes something else keeps the process and the session.
    let policy =
        "policy:\n  default: allow\n  rules:\n    - tools: [whoami]\n      decision: deny\n";
    dir.file("gw.yaml", &demo_stdio(policy));
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 200, "{report}");
    assert_eq!(children(&gw), before);
    assert!(
        session
            .answer("1", "tools/list", json!({}))
            .contains("echo")
    );

    // Changing the route's process settings stops its processes: the session ends (404) and a
    // new one runs the new settings.
    dir.file(
        "gw.yaml",
        &demo_stdio(&format!("    env: {{DEMO_FLAVOUR: new}}\n{policy}")),
    );
    sighup(&gw);
    // (The admin reload above logged "config reloaded" too: wait for this one's generation.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while admin.get("/admin/status")["generation"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the SIGHUP reload did not apply"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = session.send("2", "tools/list", json!({}));
    assert_eq!(gone.status, 404, "{}", gone.body);
    let fresh = Client::new(&base, "py", LEGACY);
    assert!(fresh.answer("3", "tools/list", json!({})).contains("echo"));
    let after = children(&gw);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
}

#[test]
fn a_call_whose_client_leaves_is_cancelled_at_the_stdio_server() {
    let dir = TempDir::new("stdio-cancel");
    let cfg = dir.file("gw.yaml", &demo_stdio(""));
    let (mut gw, base, _admin) = start_with_admin(&cfg, &[]);
    // A 2026-07-28 call on the shared process: ten steps of 300 ms, each reporting progress; the
    // client leaves after two (the gateway notices when a progress event cannot be written).
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"slow_count","arguments":{{"steps":10,"delay_ms":300}},"_meta":{{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let mut call = connect(&base);
    std::io::Write::write_all(
        &mut call,
        format!(
            "POST /servers/py/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: slow_count\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    gw.wait_for("slow_count step 2/10", Duration::from_secs(30));
    drop(call);
    // The server heard `notifications/cancelled` and stopped: no step past a few more.
    std::thread::sleep(Duration::from_secs(4));
    let log = gw.drain().join("\n");
    assert!(!log.contains("slow_count step 10/10"), "{log}");
    assert!(!log.contains("slow_count step 9/10"), "{log}");
    // The process serves the next call.
    let c = Client::new(&base, "py", MODERN);
    let r = c.send(
        "2",
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"3\""), "{}", r.body);
}
