//! WebSocket clients on the MCP routes, through the real binary: the TypeScript SDK's
//! `WebSocketClientTransport` and the Python SDK 1.x `websocket_client` against
//! server-everything (tools, progress, a denied call, a 429, sampling) and a stdio route; then a
//! raw client for what SDKs never do: refused handshakes, bad and huge frames, batches, too many
//! requests in flight, silence, a peer that vanishes mid-call, a session ended under it, a
//! reload, the connection bound and the drain.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::{Duration, Instant};

use mcpgate_e2e::*;
use serde_json::{Value, json};

const TS_KEY: &str = "ws-ts-key-0123456789";
const PY_KEY: &str = "ws-py-key-0123456789";
const KEY: &str = "ws-raw-key-0123456789";

fn ws_url(base: &str, route: &str) -> String {
    format!(
        "{}/servers/{route}/mcp",
        base.replacen("http://", "ws://", 1)
    )
}

/// Polls `/metrics` until `series` has `want` (the socket's end is recorded after its close).
fn wait_metric(base: &str, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = metric(&get(base, "/metrics"), series);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_sessions(admin: &AdminApi, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = admin.get("/admin/sessions")["count"].as_u64().unwrap();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{got} sessions, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn progress_before_result(out: &Value) {
    let progress = out["slow"]["progress"].as_array().unwrap();
    if out.get("protocolVersion").is_some() {
        assert_eq!(progress.len(), 4, "{out}");
    } else {
        // The TypeScript SDK hands a progress notification to its handler a microtask later but
        // drops the handler as soon as the result arrives; Node's WebSocket dispatches every
        // message of one read in a row, so when the last progress and the result reach the
        // client in one TCP read (a loaded machine), that progress is dropped by the client
        // (seen once in CI; the gateway wrote both, in order). Its SSE transport awaits between
        // events, so over HTTP all four always count.
        assert!((3..=4).contains(&progress.len()), "{out}");
    }
    let first = progress[0]["at"].as_f64().unwrap();
    let result = out["slow"]["resultAt"].as_f64().unwrap();
    // Streamed, not buffered: the first of 4 steps (0.3 s apart) came well before the result.
    assert!(result - first > 0.5 * scale(out), "{out}");
}

/// Seconds (Python's clock) or milliseconds (JavaScript's).
fn scale(out: &Value) -> f64 {
    if out.get("protocolVersion").is_some() {
        1.0
    } else {
        1000.0
    }
}

#[test]
fn sdk_websocket_clients_reach_http_and_stdio_routes_through_the_pipeline() {
    let (_everything, upstream) = start_everything();
    let dir = TempDir::new("ws-sdk");
    let demo = repo().join("examples/demo_server.py");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            r#"server:
  port: 0
  websocket:
    query_token: api_key
admin:
  port: 0
  token_env: ADMIN_TOKEN
auth:
  type: api-key
  keys:
    - {{id: ts, key_env: TS_KEY}}
    - {{id: py, key_env: PY_KEY}}
rate_limit:
  tools:
    "get-sum": {{capacity: 1, refill_rate: 0.001}}
policy:
  default: allow
  rules:
    - name: no-env
      tools: [get-env]
      decision: deny
      reason: the environment stays private
observability:
  metrics: {{path: /metrics}}
upstreams:
  everything:
    url: {upstream}
  demo:
    type: stdio
    command: "{python}"
    args: ["{demo}", "--stdio"]
"#,
            python = python().display(),
            demo = demo.display(),
        ),
    );
    let (_gw, base, admin) = start_with_admin(&cfg, &[("TS_KEY", TS_KEY), ("PY_KEY", PY_KEY)]);

    // The TypeScript SDK cannot set headers on a WebSocket: its key rides in the query parameter
    // this config turns on.
    let ts = run_client(
        "ws_ts_client",
        Command::new("node")
            .arg("--experimental-websocket")
            .arg(repo().join("tests/e2e/ws_ts_client.mjs"))
            .arg(format!("{}?api_key={TS_KEY}", ws_url(&base, "everything")))
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(120),
    );
    let tools = ts["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("echo")), "{ts}");
    assert!(
        !tools.contains(&json!("get-env")),
        "a denied tool is hidden from the list: {ts}"
    );
    assert_eq!(ts["echo"], "Echo: hello over a WebSocket", "{ts}");
    progress_before_result(&ts);
    assert_eq!(ts["denied"]["code"], -32007, "{ts}");
    assert!(
        ts["denied"]["message"].as_str().unwrap().contains("no-env"),
        "{ts}"
    );
    assert_eq!(ts["limited"][0]["ok"], "The sum of 0 and 40 is 40.", "{ts}");
    assert_eq!(ts["limited"][1]["code"], -32005, "{ts}");
    assert_eq!(ts["samplingRequests"], 2, "{ts}");
    assert!(
        ts["sampling"][1]
            .as_str()
            .unwrap()
            .contains("sampled #2: Resource trigger-sampling-request context: second"),
        "{ts}"
    );
    assert_eq!(ts["closedEarly"], false, "{ts}");

    let py_venv = repo().join("tests/e2e/.venv-mcp1/bin/python");
    let py_client = |route: &str, mode: &str| {
        run_client(
            &format!("ws_py_client {mode}"),
            Command::new(&py_venv)
                .arg(repo().join("tests/e2e/ws_py_client.py"))
                .arg(format!("{}?api_key={PY_KEY}", ws_url(&base, route)))
                .arg(mode),
            Duration::from_secs(120),
        )
    };
    let py = py_client("everything", "everything");
    assert_eq!(py["protocolVersion"], LEGACY, "{py}");
    assert!(
        !py["tools"].as_array().unwrap().contains(&json!("get-env")),
        "{py}"
    );
    assert_eq!(py["echo"], "Echo: hello from Python", "{py}");
    progress_before_result(&py);
    assert_eq!(py["denied"]["code"], -32007, "{py}");
    // Its own caller's bucket: the first call passes, the second is refused.
    assert_eq!(py["limited"][0]["isError"], false, "{py}");
    assert_eq!(py["limited"][1]["code"], -32005, "{py}");
    assert_eq!(py["samplingRequests"], 1, "{py}");
    assert!(
        py["sampling"]
            .as_str()
            .unwrap()
            .contains("sampled #1: Resource trigger-sampling-request context: py"),
        "{py}"
    );

    // A stdio route serves WebSocket clients like any other.
    let demo = py_client("demo", "demo");
    assert_eq!(demo["serverName"], "mcpgate-demo", "{demo}");
    assert_eq!(demo["echo"], "hello from Python", "{demo}");
    assert_eq!(demo["slow"]["text"], "counted to 3", "{demo}");
    assert_eq!(
        demo["slow"]["progress"].as_array().unwrap().len(),
        3,
        "{demo}"
    );

    // Every socket ended with its client, and took its session along (DELETE on close).
    wait_metric(&base, "mcpgate_websocket_connections ", 0.0);
    wait_metric(
        &base,
        "mcpgate_websocket_closed_total{reason=\"client\"}",
        3.0,
    );
    wait_sessions(&admin, 0);
}

/// The raw-client gateway: the demo server over HTTP, API keys in a header, tight socket bounds.
fn raw_gateway(extra: &str) -> (Proc, String, AdminApi, TempDir, Proc) {
    let (demo, upstream) = start_demo_server();
    let dir = TempDir::new("ws-raw");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            r#"server:
  port: 0
  websocket:
    max_message_bytes: 4096
    max_in_flight: 2
    idle_timeout: 6000
    ping_interval: 1500
admin:
  port: 0
  token_env: ADMIN_TOKEN
auth:
  type: api-key
  keys:
    - {{id: raw, key_env: RAW_KEY}}
observability:
  metrics: {{path: /metrics}}
upstreams:
  demo:
    url: {upstream}
{extra}"#
        ),
    );
    let (gw, base, admin) = start_with_admin(&cfg, &[("RAW_KEY", KEY)]);
    (gw, base, admin, dir, demo)
}

fn open(base: &str) -> Ws {
    ws_connect(&ws_url(base, "demo"), &[("x-api-key", KEY)]).expect("upgrade accepted")
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// A call whose progress the server reports (the SDK server only reports with a token).
fn call_reporting(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": id}}})
}

fn upgrade_status(base: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    all.extend_from_slice(headers);
    raw_request(base, "GET", path, &all, "")
}

#[test]
fn upgrades_are_checked_before_a_socket_exists() {
    let (_gw, base, _admin, _dir, _demo) = raw_gateway("");
    let key = ("x-api-key", KEY);
    let v13 = ("Sec-WebSocket-Version", "13");
    let route = "/servers/demo/mcp";

    // Accepted: 101, the subprotocol echoed.
    let ws = open(&base);
    assert_eq!(ws.protocol.as_deref(), Some("mcp"));
    drop(ws);
    // No subprotocol offered: accepted without one.
    let ws = ws_connect_offering(&ws_url(&base, "demo"), None, &[key]).unwrap();
    assert_eq!(ws.protocol, None);

    // No credential: the route's own 401 and challenge, before any socket.
    let r = upgrade_status(&base, route, &[v13]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);
    // A key in the query is not a credential unless server.websocket.query_token says so.
    let r = upgrade_status(&base, &format!("{route}?api_key={KEY}"), &[v13]);
    assert_eq!(r.status, 401, "{}", r.body);
    // Another WebSocket version: 426 naming the one spoken.
    let r = upgrade_status(&base, route, &[key, ("Sec-WebSocket-Version", "8")]);
    assert_eq!(r.status, 426, "{}", r.body);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    // Only other subprotocols offered.
    let r = upgrade_status(
        &base,
        route,
        &[key, v13, ("Sec-WebSocket-Protocol", "graphql-ws")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("subprotocol `mcp`"), "{}", r.body);
    // A key that is not 16 bytes of base64.
    let r = raw_request(
        &base,
        "GET",
        route,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "short"),
            key,
            v13,
        ],
        "",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Sec-WebSocket-Key"), "{}", r.body);
    // A page on another origin (the DNS-rebinding defence applies to sockets too).
    let r = upgrade_status(
        &base,
        route,
        &[key, v13, ("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // No such route.
    let r = upgrade_status(&base, "/servers/nope/mcp", &[key, v13]);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("-32002"), "{}", r.body);
}

#[test]
fn hostile_websocket_clients_end_alone() {
    let (gw, base, admin, dir, _demo) = raw_gateway("");
    let wait = Duration::from_secs(30);

    // Both eras on one socket kind: a legacy session...
    let mut ws = open(&base);
    let init = ws.initialize(LEGACY);
    assert_eq!(init["result"]["protocolVersion"], LEGACY, "{init}");
    ws.send(&call(1, "echo", json!({"text": "legacy"})));
    let answer = ws.until_response(&json!(1), wait).pop().unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "legacy", "{answer}");
    wait_sessions(&admin, 1);
    assert_eq!(admin.get("/admin/status")["websocket_connections"], 1);
    // A second initialize on the socket: its first session is ended, not left to idle out.
    let first_id = admin.get("/admin/sessions")["sessions"][0]["id"].clone();
    ws.initialize(LEGACY);
    let deadline = Instant::now() + wait;
    loop {
        let listed = admin.get("/admin/sessions");
        if listed["count"] == 1 && listed["sessions"][0]["id"] != first_id {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first session stayed: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and a stateless 2026-07-28 call: its routing headers are derived from the message.
    let mut modern = open(&base);
    modern.send(
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "modern"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}),
    );
    let answer = modern.until_response(&json!(7), wait).pop().unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "modern", "{answer}");
    modern.socket.close(None).unwrap();

    // Not JSON: the parse error, and the socket stays.
    ws.send_text("{not json");
    let e = ws.recv(wait);
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert_eq!(e["id"], Value::Null, "{e}");
    // A batch: one message per WebSocket message.
    ws.send(&json!([{"jsonrpc": "2.0", "id": 2, "method": "ping"}]));
    let e = ws.recv(wait);
    assert_eq!(e["error"]["code"], -32600, "{e}");
    // More requests in flight than max_in_flight (2): the third is answered at once.
    ws.send(&call(
        10,
        "slow_count",
        json!({"steps": 2, "delay_ms": 400}),
    ));
    ws.send(&call(
        11,
        "slow_count",
        json!({"steps": 2, "delay_ms": 400}),
    ));
    ws.send(&call(12, "echo", json!({"text": "one too many"})));
    let first = ws.recv(wait);
    assert_eq!(
        first["id"], 12,
        "the refusal comes before the slow answers: {first}"
    );
    assert_eq!(first["error"]["code"], -32017, "{first}");
    assert!(
        first["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.websocket.max_in_flight"),
        "{first}"
    );
    ws.until_response(&json!(10), wait);
    let done = ws.until_response(&json!(11), wait).pop().unwrap();
    assert_eq!(
        done["result"]["content"][0]["text"], "counted to 2",
        "{done}"
    );

    // A reload applies to the next message of a socket already open.
    dir.file(
        "gw.yaml",
        &std::fs::read_to_string(dir.0.join("gw.yaml")).unwrap().replace(
            "upstreams:",
            "policy:\n  default: allow\n  rules:\n    - {tools: [echo], decision: deny}\nupstreams:",
        ),
    );
    let (status, report) = admin.call("POST", "/admin/reload");
    assert_eq!(status, 200, "{report}");
    ws.send(&call(13, "echo", json!({"text": "after the reload"})));
    let denied = ws.until_response(&json!(13), wait).pop().unwrap();
    assert_eq!(denied["error"]["code"], -32007, "{denied}");

    // The session ended under the socket (admin): the next request gets the 404's error, then
    // the socket closes so the client connects again.
    let sessions = admin.get("/admin/sessions");
    let id = sessions["sessions"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = admin.call("DELETE", &format!("/admin/sessions/{id}"));
    assert_eq!(status, 200);
    ws.send(&call(14, "add", json!({"a": 1, "b": 2})));
    let gone = ws.recv(wait);
    assert_eq!(gone["error"]["code"], -32001, "{gone}");
    let (code, reason) = ws.closed(wait).unwrap();
    assert_eq!(code, 1000);
    assert!(reason.contains("connect again"), "{reason}");

    // A binary message: 1003.
    let mut bin = open(&base);
    bin.socket
        .send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(bin.closed(wait).unwrap().0, 1003);
    // A message over max_message_bytes (4096): 1009 naming the key.
    let mut huge = open(&base);
    huge.send(&call(1, "echo", json!({"text": "x".repeat(5000)})));
    let (code, reason) = huge.closed(wait).unwrap();
    assert_eq!(code, 1009);
    assert!(
        reason.contains("server.websocket.max_message_bytes"),
        "{reason}"
    );
    // Silence: no message for idle_timeout (6 s) closes with 1000 (pings answered meanwhile do
    // not keep it open).
    let mut idle = open(&base);
    let started = Instant::now();
    let (code, reason) = idle.closed(Duration::from_secs(20)).unwrap();
    assert_eq!(code, 1000);
    assert!(reason.contains("idle"), "{reason}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A client that completes the handshake and then neither reads nor answers pings is
    // dropped after two ping intervals (3 s), before its idle timeout.
    let mut deaf = raw_upgrade(&base);
    std::thread::sleep(Duration::from_secs(4));
    let mut buf = [0u8; 4096];
    deaf.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let reading = Instant::now();
    loop {
        match deaf.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(reading.elapsed() < Duration::from_secs(20), "never dropped"),
        }
    }
    wait_metric(
        &base,
        "mcpgate_websocket_closed_total{reason=\"ping_timeout\"}",
        1.0,
    );

    // A peer that vanishes mid-call: its session is ended for it.
    let mut vanishing = open(&base);
    vanishing.initialize(LEGACY);
    wait_sessions(&admin, 1);
    vanishing.send(&call_reporting(
        1,
        "slow_count",
        json!({"steps": 5, "delay_ms": 300}),
    ));
    let progress = vanishing.recv(wait);
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    drop(vanishing);
    wait_sessions(&admin, 0);

    // Through all of it the gateway served everyone else.
    let mut after = open(&base);
    after.initialize(LEGACY);
    after.send(&call(2, "add", json!({"a": 40, "b": 2})));
    let sum = after.until_response(&json!(2), wait).pop().unwrap();
    assert_eq!(sum["result"]["content"][0]["text"], "42", "{sum}");
    drop(after);
    // Many sockets at once, each with its session: all answered, all sessions ended.
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let mut ws = open(&base);
                ws.initialize(LEGACY);
                ws.send(&call(1, "add", json!({"a": i, "b": 1})));
                let sum = ws
                    .until_response(&json!(1), Duration::from_secs(60))
                    .pop()
                    .unwrap();
                ws.socket.close(None).unwrap();
                sum["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), (i + 1).to_string());
    }
    wait_sessions(&admin, 0);
    wait_metric(&base, "mcpgate_websocket_connections ", 0.0);
    for reason in [
        "protocol",
        "too_large",
        "idle",
        "session_gone",
        "ping_timeout",
    ] {
        let series = format!("mcpgate_websocket_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&get(&base, "/metrics"), &series), 1.0, "{series}");
    }
    drop(gw);
}

/// A WebSocket handshake on a plain TCP connection, which then does nothing at all.
fn raw_upgrade(base: &str) -> std::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /servers/demo/mcp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mcp\r\nX-API-Key: {KEY}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[test]
fn sockets_hold_their_connection_slot_and_the_drain_answers_them() {
    // server.max_connections: 2, so two sockets hold every slot.
    let (_demo, upstream) = start_demo_server();
    let dir = TempDir::new("ws-slots");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\n  max_connections: 2\n  shutdown_timeout: 20000\nupstreams:\n  demo:\n    url: {upstream}\n"
        ),
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    let url = ws_url(&base, "demo");
    let mut one = ws_connect(&url, &[]).unwrap();
    let two = ws_connect(&url, &[]).unwrap();
    // hyper let both connections go at the upgrade; the sockets kept their slots.
    let refused = raw_request(&base, "GET", "/healthz", &[], "");
    assert_eq!(refused.status, 503, "{}", refused.body);
    drop(two);
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_request(&base, "GET", "/healthz", &[], "").status != 200 {
        assert!(
            Instant::now() < deadline,
            "the closed socket's slot never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The drain: a call in flight is answered, then the socket is told the gateway goes away.
    one.initialize(LEGACY);
    one.send(&call_reporting(
        1,
        "slow_count",
        json!({"steps": 4, "delay_ms": 300}),
    ));
    let first = one.recv(Duration::from_secs(30));
    assert_eq!(first["method"], "notifications/progress", "{first}");
    let _ = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status();
    let answer = one
        .until_response(&json!(1), Duration::from_secs(30))
        .pop()
        .unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], "counted to 4",
        "{answer}"
    );
    let (code, reason) = one.closed(Duration::from_secs(30)).unwrap();
    assert_eq!(code, 1001);
    assert!(reason.contains("shutting down"), "{reason}");
    let status = gw.wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
