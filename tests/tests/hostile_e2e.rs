//! Hostile callers through the real binary: every way a request or its answer could slip past
//! the stages, each against real MCP SDK servers (Python) and the real plugins.
//!
//! Each test names the item of the edge-security issue it holds the gateway to.

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::{Value, json};

/// A gateway in front of `routes` (name, upstream URL): the policy hides and denies `add` and
/// every resource but those under `file:///docs/`, the redact plugin hides e-mail addresses in
/// tool results, the arg-guard plugin refuses an `echo` of more than 40 characters.
fn gateway(routes: &[(&str, &str)]) -> (Proc, String, TempDir) {
    gateway_with(routes, "")
}

/// [`gateway`] with more top-level sections (`rate_limit:`, ...).
fn gateway_with(routes: &[(&str, &str)], sections: &str) -> (Proc, String, TempDir) {
    let plugins = repo().join("plugins");
    assert!(
        plugins.join("redact.wasm").exists(),
        "plugins/redact.wasm is missing: run scripts/build-plugins.sh (scripts/test.sh does)"
    );
    let dir = TempDir::new("hostile");
    let mut upstreams = String::new();
    for (name, url) in routes {
        upstreams.push_str(&format!("  {name}:\n    url: {url}\n"));
    }
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "\
policy:
  rules:
    - name: no-arithmetic
      tools: [add]
      decision: deny
    - name: docs-only
      resources: [\"file:///docs/*\"]
      decision: allow
    - name: no-other-files
      resources: [\"*\"]
      decision: deny
plugin_runtime:
  dir: {plugins}
plugins:
  redact:
    file: redact.wasm
    config: {{detectors: [email], arguments: false, results: true}}
  guard:
    file: arg_guard.wasm
    config:
      tools:
        echo:
          arguments:
            text: {{type: string, max_length: 40}}
{sections}upstreams:
{upstreams}",
            plugins = plugins.display()
        ),
    );
    let (gw, base) = start_gateway(&cfg, &[]);
    (gw, base, dir)
}

/// Issue item 1: response hooks must not depend on how the client spells its id. Ids that a
/// server re-serialises differently (`"\u0031"` → `"1"`, `-0` → `0`, `"\u0061b"` → `"ab"`,
/// `1.0`, `1e0`) still get their lists filtered and their results redacted, in both eras, from a
/// server answering with SSE and one answering with JSON; and the client gets its id back exactly
/// as it spelled it.
#[test]
fn hooks_hold_however_the_id_is_spelled() {
    let (_sse, sse_url) = hostile_server(&[]);
    let (_json, json_url) = hostile_server(&["--json"]);
    let (_gw, base, _dir) = gateway(&[("sse", &sse_url), ("json", &json_url)]);
    for route in ["sse", "json"] {
        for era in [LEGACY, MODERN] {
            let client = Client::new(&base, route, era);
            for id in [
                r#""\u0031""#,
                "-0",
                r#""\u0061b""#,
                "1.0",
                "1e0",
                r#""x\/y""#,
            ] {
                let what = format!("{route} {era} id {id}");
                let list = client.answer(id, "tools/list", json!({}));
                assert!(
                    list.starts_with(&format!(r#"{{"id":{id},"#))
                        || list.contains(&format!(r#""id":{id}"#)),
                    "{what}: the client's exact id comes back: {list}"
                );
                let v: Value = serde_json::from_str(&list).unwrap();
                let names: Vec<&str> = v["result"]["tools"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: {list}"))
                    .iter()
                    .map(|t| t["name"].as_str().unwrap())
                    .collect();
                assert!(
                    !names.contains(&"add"),
                    "{what}: `add` is hidden: {names:?}"
                );
                assert!(names.contains(&"leak"), "{what}: {names:?}");

                let call =
                    client.answer(id, "tools/call", json!({"name": "leak", "arguments": {}}));
                assert!(
                    call.contains(&format!(r#""id":{id}"#)),
                    "{what}: the client's exact id comes back: {call}"
                );
                assert!(!call.contains("alice@example.com"), "{what}: {call}");
                assert!(call.contains("[REDACTED:email]"), "{what}: {call}");
            }
        }
    }
}

/// The policy's list filter, through the real binary, against an upstream whose list repeats its
/// `tools` member (once spelled `t\u006fols`) with the denied tool in each copy, its name spelled
/// three ways (and its `name` key once escaped): every copy loses it, the others stay as sent.
#[test]
fn a_hostile_list_loses_the_denied_tool_in_every_copy_and_spelling() {
    let (_up, url) = raw_upstream(&[]);
    let (_gw, base, _dir) = gateway(&[("raw", &url)]);
    // The raw upstream opens no sessions, so the session-based era's client cannot start; the
    // filter reads answers alike in both eras.
    let client = Client::new(&base, "raw", MODERN);
    let list = client.answer("7", "tools/list", json!({"cursor": "respelled"}));
    for spelling in [r#""add""#, r#""\u0061dd""#, r#""a\u0064d""#] {
        assert!(!list.contains(spelling), "{spelling} in {list}");
    }
    assert_eq!(list.matches(r#""echo""#).count(), 3, "{list}");
    assert!(list.contains(r#""t\u006fols""#), "kept as sent: {list}");
    assert!(
        serde_json::from_str::<Value>(&list).is_ok(),
        "still JSON: {list}"
    );
}

/// A list answer that is not JSON deep inside an entry (a bad escape in a schema, which a lenient
/// client might still read), that gives its id again after the result, or that nests deeper
/// than 127 levels (SECURITY.md): the gateway checks a large result in the walk that filters
/// it, and none reaches the client, denied tool and all; the client gets an error naming why,
/// and the route serves the next list.
#[test]
fn a_list_that_is_not_json_deep_inside_never_reaches_the_client() {
    let (_up, url) = raw_upstream(&[]);
    let (_gw, base, _dir) = gateway(&[("raw", &url)]);
    let client = Client::new(&base, "raw", MODERN);
    for cursor in ["malformed", "id_twice", "deep"] {
        let r = client.send("8", "tools/list", json!({"cursor": cursor}));
        assert!(!r.body.contains(r#""add""#), "{cursor}: {}", r.body);
        assert!(!r.body.contains(r#""echo""#), "{cursor}: {}", r.body);
        assert!(
            r.body.contains("-32015"),
            "{cursor}: {} {}",
            r.status,
            r.body
        );
    }
    let list = client.answer("9", "tools/list", json!({"cursor": "respelled"}));
    assert!(
        list.contains(r#""echo""#) && !list.contains(r#""add""#),
        "{list}"
    );
}

/// Issue item 2: a response that reaches the client on another stream than its POST's (a
/// 2025-11-25 server closes the POST stream; the SDK client resumes with GET + Last-Event-ID and
/// the server replays the answer there) is hooked all the same.
#[test]
fn hooks_follow_an_answer_onto_the_resumed_stream() {
    let (_server, url) = hostile_server(&["--resumable"]);
    let (_gw, base, _dir) = gateway(&[("resumable", &url)]);
    let out = run_client(
        "py_resume_client.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_resume_client.py"))
            .arg(format!("{base}/servers/resumable/mcp")),
        Duration::from_secs(120),
    );
    assert_eq!(out["protocol_version"], LEGACY, "{out}");
    assert!(
        !out["tools"].as_array().unwrap().contains(&json!("add")),
        "{out}"
    );
    let redacted = "mail [REDACTED:email] for the key";
    assert_eq!(out["leak"], redacted, "{out}");
    assert_eq!(
        out["leak_later"], redacted,
        "the answer replayed on the resumed GET stream is redacted too: {out}"
    );
}

/// Issue item 3: the upstream URL is the configured one. Its query (a tenant, a credential) can be
/// neither added to nor overridden by a client's query string.
#[test]
fn a_client_query_string_never_reaches_the_upstream() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway(&[("tenant", &format!("{url}?tenant=t1"))]);
    for era in [LEGACY, MODERN] {
        for query in ["tenant=t2", "tenant=t1&tenant=t2", "x=%26tenant%3Dt2", ""] {
            let client = Client::at(&base, &format!("/servers/tenant/mcp?{query}"), era);
            let answer = client.answer(
                "1",
                "tools/call",
                json!({"name": "request_query", "arguments": {}}),
            );
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(
                v["result"]["content"][0]["text"], "tenant=t1",
                "{era} ?{query}: {answer}"
            );
        }
    }
}

/// Issue item 4: resource rules judge the URI a server would resolve, not its spelling. With
/// `file:///docs/*` allowed and every other resource denied, no spelling of a path out of
/// `/docs` (dot segments, their encodings, case, double encoding, an encoded slash) is read or
/// subscribed to, and the list shows only what may be read.
#[test]
fn resource_rules_judge_the_uri_not_its_spelling() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway(&[("files", &url)]);
    for era in [LEGACY, MODERN] {
        let client = Client::new(&base, "files", era);
        let list: Value =
            serde_json::from_str(&client.answer("1", "resources/list", json!({}))).unwrap();
        let uris: Vec<&str> = list["result"]["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{era}: {list}"))
            .iter()
            .map(|r| r["uri"].as_str().unwrap())
            .collect();
        assert_eq!(uris, ["file:///docs/readme.md"], "{era}");
        let read = client.answer(
            "2",
            "resources/read",
            json!({"uri": "file:///docs/readme.md"}),
        );
        assert!(read.contains("the docs"), "{era}: {read}");
        for uri in [
            "file:///etc/passwd",
            "file:///docs/../etc/passwd",
            "file:///docs/./../etc/passwd",
            "file:///docs/%2e%2e/etc/passwd",
            "file:///docs/.%2E/etc/passwd",
            "FILE:///docs/../etc/passwd",
            "file:///docs/..%2Fetc/passwd",
            "file:///docs/%252e%252e/etc/passwd",
            "file:///docs/..\\etc/passwd",
            "file:/docs/../etc/passwd",
        ] {
            for method in ["resources/read", "resources/subscribe"] {
                let answer = client.answer("3", method, json!({"uri": uri}));
                let v: Value = serde_json::from_str(&answer).unwrap();
                assert_eq!(v["error"]["code"], -32007, "{era} {method} {uri}: {answer}");
                assert!(!answer.contains("root:x"), "{era} {method} {uri}: {answer}");
            }
        }
    }
}

/// Issue item 5: a request that is not forwarded is not charged. Calls the policy denies, calls a
/// plugin refuses, batches one element of which is refused, and calls under an unknown session
/// take no token; the bucket's three tokens are all there for the calls that go through.
#[test]
fn refused_requests_are_not_charged() {
    let (_server, url) = hostile_server(&[]);
    for era in [LEGACY, MODERN] {
        // A gateway per era: the bucket is the caller's (here, the loopback address).
        let (_gw, base, _dir) = gateway_with(
            &[("limited", &url)],
            "rate_limit:\n  per_client: {capacity: 3, refill_rate: 0.001}\n",
        );
        let client = Client::new(&base, "limited", era);
        let call = |tool: &str, arguments: Value| {
            let answer = client.answer(
                "1",
                "tools/call",
                json!({"name": tool, "arguments": arguments}),
            );
            serde_json::from_str::<Value>(&answer).unwrap()
        };
        for i in 0..5 {
            let denied = call("add", json!({"a": 1, "b": 2}));
            assert_eq!(
                denied["error"]["code"], -32007,
                "{era} denied call {i}: {denied}"
            );
            let refused = call("echo", json!({"text": "x".repeat(60)}));
            assert_eq!(
                refused["error"]["code"], -32602,
                "{era} plugin-refused call {i}: {refused}"
            );
        }
        if era == LEGACY {
            let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}},
                            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}]"#;
            for i in 0..3 {
                let r = raw_post(
                    &base,
                    "/servers/limited/mcp",
                    &[("mcp-protocol-version", "2025-03-26")],
                    batch,
                );
                assert!(
                    r.body.contains("-32007"),
                    "batch {i}: {} {}",
                    r.status,
                    r.body
                );
            }
            for i in 0..3 {
                let r = raw_post(
                    &base,
                    "/servers/limited/mcp",
                    &[
                        ("mcp-protocol-version", LEGACY),
                        ("mcp-session-id", "mg1.unknown"),
                    ],
                    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}}"#,
                );
                assert_eq!(r.status, 404, "unknown session {i}: {}", r.body);
            }
        }
        // The legacy client's initialize was forwarded, and took one of the three.
        let left = if era == LEGACY { 2 } else { 3 };
        for i in 0..left {
            let ok = call("echo", json!({"text": "fits"}));
            assert_eq!(
                ok["result"]["content"][0]["text"], "fits",
                "{era} call {i}: {ok}"
            );
        }
        let limited = client.send(
            "1",
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "one more"}}),
        );
        assert_eq!(limited.status, 429, "{era}: {}", limited.body);
    }
}

/// Issue item 6: slow and idle clients are cut off, and the number of connections is capped.
/// A client trickling its request head, an idle keep-alive connection and a body that never
/// completes are closed within their timeouts (the body with 408 and a JSON-RPC error); a client
/// that stops reading a large answer is disconnected; connections over `max_connections` get 503
/// and a JSON-RPC error at once; the gateway serves normally throughout and counts each.
#[test]
fn slow_idle_and_numerous_clients_are_bounded() {
    use std::io::Write as _;
    let (_server, url) = hostile_server(&[]);
    // `plain` runs no stages, so its answers stream through without being read (the redact
    // plugin would refuse a 32 MiB result as too large for its memory).
    let plain = format!("{url}\n    pipeline: []");
    let (mut gw, base, _dir) = gateway_with(
        &[("slow", &url), ("plain", &plain)],
        "server:\n  max_connections: 8\n  header_timeout: 500\n  body_timeout: 500\n  write_timeout: 1000\nobservability:\n  metrics: {path: /metrics}\n",
    );
    // Slowloris: a head that never ends, one header line at a time.
    let mut trickle = connect(&base);
    trickle
        .write_all(b"POST /servers/slow/mcp HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        let _ = trickle.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes());
    }
    assert_eq!(
        read_until_closed(&mut trickle).unwrap(),
        "",
        "closed without an answer"
    );

    // An idle keep-alive connection, after one answered request.
    let mut idle = connect(&base);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answered = read_until_closed(&mut idle).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // A body that never completes: 408 with a JSON-RPC error, then the connection closes.
    let mut slow_body = connect(&base);
    slow_body
        .write_all(b"POST /servers/slow/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":")
        .unwrap();
    let answer = read_until_closed(&mut slow_body).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#""code":-32600"#) && answer.contains("server.body_timeout"),
        "{answer}"
    );

    // Twelve connections at once against a cap of eight: the rest are refused at once with 503.
    let mut crowd: Vec<std::net::TcpStream> = (0..12).map(|_| connect(&base)).collect();
    let answers: Vec<String> = crowd
        .iter_mut()
        .map(|s| read_until_closed(s).unwrap())
        .collect();
    let refused: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect();
    // Eight slots; a connection closed just before may still hold one for a moment.
    assert!((4..=5).contains(&refused.len()), "{answers:#?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.starts_with("HTTP/1.1 503")),
        "the others were admitted, then closed for sending nothing: {answers:#?}"
    );
    let refused_count = refused.len() as f64;
    assert!(
        refused[0].contains("server.max_connections"),
        "{}",
        refused[0]
    );
    drop(crowd);

    // A client that asks for 64 MiB (32 Mi characters, twice in the result) and reads none of it
    // is disconnected.
    let stalled = open_call(&base, "plain", "1", "big", r#"{"mib":32}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let closed = |text: &str, reason: &str| {
        metric(
            text,
            &format!("mcpgate_client_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    let metrics = loop {
        let text = get(&base, "/metrics");
        if closed(&text, "write_timeout") >= 1.0 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        closed(&metrics, "write_timeout"),
        1.0,
        "{metrics}\n{}",
        gw.drain().join("\n")
    );
    assert_eq!(closed(&metrics, "limit"), refused_count, "{metrics}");
    assert_eq!(closed(&metrics, "body_timeout"), 1.0, "{metrics}");
    assert!(closed(&metrics, "header_timeout") >= 2.0, "{metrics}");
    // After all that, the gateway serves as before.
    let client = Client::new(&base, "slow", MODERN);
    let answer = client.answer(
        "1",
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still here"}}),
    );
    assert!(answer.contains("still here"), "{answer}");
    drop(stalled);
}

/// Issue item 7: what the gateway reads whole to inspect is bounded. An SSE event that never
/// ends (on a hooked `tools/list`) ends the stream once it passes `server.max_inspected_bytes`,
/// with a JSON-RPC error for the request instead of its answer; a hooked JSON answer over the
/// bound is a 502 with a JSON-RPC error; a large event nothing inspects passes byte for byte.
#[test]
fn what_is_read_to_be_inspected_is_bounded() {
    let (_upstream, base_url) = raw_upstream(&[]);
    let (mut gw, base, _dir) = gateway_from(
        "hostile-bounds",
        &format!(
            "server:\n  max_inspected_bytes: 65536\npolicy:\n  rules:\n    - {{tools: [hidden], decision: deny}}\n    - {{resources: [\"file:///secret/*\"], decision: deny}}\n    - {{prompts: [hidden], decision: deny}}\nupstreams:\n  raw:\n    url: {base_url}/mcp\n"
        ),
        &[],
    );
    let client = Client::new(&base, "raw", MODERN);

    let started = std::time::Instant::now();
    let endless = client.send(r#""list-1""#, "tools/list", json!({}));
    assert_eq!(endless.status, 200, "{}", endless.body);
    let messages = endless.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let error: Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(error["id"], "list-1", "{error}");
    assert_eq!(error["error"]["code"], -32015, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_inspected_bytes"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let huge = client.send("7", "resources/list", json!({}));
    assert_eq!(
        huge.status,
        502,
        "{}",
        &huge.body[..huge.body.len().min(300)]
    );
    let error: Value = serde_json::from_str(&huge.body).unwrap();
    assert_eq!(
        (&error["id"], &error["error"]["code"]),
        (&json!(7), &json!(-32015))
    );

    let small = client.answer("8", "prompts/list", json!({}));
    let small: Value = serde_json::from_str(&small).unwrap();
    assert_eq!(small["result"]["prompts"][0]["name"], "p", "{small}");

    // Not inspected: a 1 MiB event streams through whole, whatever the bound.
    let big = client.answer(
        "9",
        "tools/call",
        json!({"name": "big_event", "arguments": {}}),
    );
    let v: Value = serde_json::from_str(&big).unwrap();
    assert_eq!(
        v["result"]["content"][0]["text"].as_str().unwrap().len(),
        1024 * 1024
    );
    let log = gw.drain().join("\n");
    assert!(log.contains("exceeds server.max_inspected_bytes"), "{log}");
}

/// Issue item 8: one request cannot drive unbounded work. A batch over `max_batch_messages` is
/// refused before any stage runs; a batch whose plugin calls use up `request_budget` is refused,
/// even with a `fail_open` plugin that would otherwise be skipped message after message.
#[test]
fn one_request_cannot_drive_unbounded_work() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway_from(
        "hostile-work",
        &format!(
            "server:\n  max_batch_messages: 10\nplugin_runtime:\n  dir: {}\n  request_budget: 200\nplugins:\n  misbehave:\n    file: misbehave.wasm\n    on_error: fail_open\n    timeout: 50\nupstreams:\n  work:\n    url: {url}\n",
            repo().join("plugins").display()
        ),
        &[],
    );
    let batch = |n: usize, tool: &str| {
        let items: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#))
            .collect();
        raw_post(
            &base,
            "/servers/work/mcp",
            &[("mcp-protocol-version", "2025-03-26")],
            &format!("[{}]", items.join(",")),
        )
    };
    let too_many = batch(11, "echo");
    assert_eq!(too_many.status, 400, "{}", too_many.body);
    assert!(
        too_many.body.contains("server.max_batch_messages") && too_many.body.contains("-32600"),
        "{}",
        too_many.body
    );
    // Ten plugin calls that each run to the plugin's 50 ms deadline: the 200 ms budget runs
    // out on the way, and the batch is refused (not forwarded with the plugin skipped).
    let spinning = batch(10, "spin");
    assert_eq!(spinning.status, 400, "{}", spinning.body);
    assert!(
        spinning.body.contains("plugin_runtime.request_budget") && spinning.body.contains("-32012"),
        "{}",
        spinning.body
    );
    // One such call stays within the budget: fail_open skips the plugin, as configured.
    let client = Client::new(&base, "work", MODERN);
    let one = client.answer(
        "1",
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "ok"}}),
    );
    assert!(one.contains(r#""text":"ok""#), "{one}");
    let spin = client.send("2", "tools/call", json!({"name": "spin", "arguments": {}}));
    assert_eq!(spin.status, 200, "{}", spin.body);
    assert!(!spin.body.contains("request_budget"), "{}", spin.body);
}

/// Issue item 9: an identity provider that hangs does not serialise JWT traffic. With the keys
/// fetched once and the provider then answering nothing (it accepts connections and stays
/// silent), tokens with a known key keep being served at once although the key set is stale,
/// and tokens naming an unknown key are refused after one bounded wait each, concurrently,
/// instead of queueing behind one fetch after another.
#[test]
fn a_hanging_identity_provider_costs_each_request_a_bounded_wait() {
    let (_server, url) = hostile_server(&[]);
    let mut idp = Proc::spawn(
        "idp.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/idp.py"))
            .args(["--audience", "hostile", "alice"]),
    );
    let port: u16 = idp
        .wait_for("PORT ", Duration::from_secs(60))
        .trim()
        .trim_start_matches("PORT ")
        .parse()
        .unwrap();
    let token_line = idp.wait_for("TOKEN alice ", Duration::from_secs(10));
    let token = token_line.rsplit(' ').next().unwrap().trim().to_string();
    let issuer = format!("http://127.0.0.1:{port}");
    let (_gw, base, _dir) = gateway_from(
        "hostile-idp",
        &format!(
            "auth:\n  type: jwt\n  jwks_uri: {issuer}/jwks\n  issuer: {issuer}\n  audience: hostile\n  algorithms: [ES256]\n  jwks_ttl: 300\n  jwks_min_refetch: 300\n  jwks_fetch_timeout: 1000\nupstreams:\n  idp:\n    url: {url}\n"
        ),
        &[],
    );
    let call = |bearer: &str| {
        raw_post(
            &base,
            "/servers/idp/mcp",
            &[
                ("authorization", &format!("Bearer {bearer}")),
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        )
        .status
    };
    assert_eq!(call(&token), 200, "the keys are fetched once");

    // The provider hangs: same port, connections accepted by the kernel, never answered.
    drop(idp);
    std::thread::sleep(Duration::from_millis(200));
    let _hanging = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the IdP's port");
    std::thread::sleep(Duration::from_millis(500)); // past jwks_ttl: the set is stale

    let rotated = format!(
        "{}.{}.c2ln",
        "eyJhbGciOiJFUzI1NiIsImtpZCI6InJvdGF0ZWQiLCJ0eXAiOiJKV1QifQ", // {"alg":"ES256","kid":"rotated","typ":"JWT"}
        "eyJzdWIiOiJhbGljZSJ9"                                        // {"sub":"alice"}
    );
    for (what, bearer, want) in [
        ("known key", token.as_str(), 200),
        ("unknown key", &rotated, 401),
    ] {
        let started = std::time::Instant::now();
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..10).map(|_| s.spawn(|| call(bearer))).collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(statuses.iter().all(|s| *s == want), "{what}: {statuses:?}");
        // One bounded wait (jwks_fetch_timeout, 1 s) at most, not ten 1-second fetches in a row
        // (and before the fix, ten 10-second ones).
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{what}: ten concurrent requests took {:?}",
            started.elapsed()
        );
    }
}

/// Issue item 11: the in-memory plugin kv store is bounded in bytes for each plugin. A plugin
/// writing 64 KiB values without end fills its own 1 MiB and no more, and the quota plugin beside
/// it keeps counting in its own share.
#[test]
fn one_plugin_cannot_fill_the_kv_store_for_all() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway_from(
        "hostile-kv",
        &format!(
            "plugin_runtime:\n  dir: {}\n  kv: {{max_bytes: 1048576}}\nplugins:\n  hoarder:\n    file: kv_hoarder.wasm\n    grants: {{kv: true}}\n  counter:\n    file: quota.wasm\n    grants: {{kv: true, metrics: true}}\n    config: {{limits: [{{tools: [echo], calls: 3}}]}}\nupstreams:\n  kv:\n    url: {url}\n",
            repo().join("plugins").display()
        ),
        &[],
    );
    let client = Client::new(&base, "kv", MODERN);
    let hoard: Value = serde_json::from_str(&client.answer(
        "1",
        "tools/call",
        json!({"name": "hoard", "arguments": {"count": 200}}),
    ))
    .unwrap();
    let stored = hoard["result"]["stored"].as_u64().unwrap();
    assert!(
        (10..=16).contains(&stored),
        "1 MiB holds 15 values of 64 KiB and their keys: {hoard}"
    );
    assert!(
        hoard["result"]["error"].as_str().unwrap().contains("full"),
        "{hoard}"
    );
    for i in 0..3 {
        let ok = client.answer(
            "2",
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "counted"}}),
        );
        assert!(ok.contains("counted"), "call {i}: {ok}");
    }
    let over = client.send(
        "3",
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "one too many"}}),
    );
    assert_eq!(over.status, 429, "the quota still counts: {}", over.body);
}

/// Issue item 12: a body over `max_body_bytes` from an ordinary client gets the 413 and its
/// JSON-RPC error, not a broken pipe: the gateway reads (and drops) what the client is still
/// sending, up to a bound, before it answers.
#[test]
fn an_oversized_body_gets_its_413_in_plain_clients() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway_with(&[("big", &url)], "server:\n  max_body_bytes: 1048576\n");
    for size in ["1500000", "40000000"] {
        let out = run_client(
            "py_big_body.py",
            Command::new(python())
                .arg(repo().join("tests/e2e/py_big_body.py"))
                .args([&format!("{base}/servers/big/mcp"), size]),
            Duration::from_secs(120),
        );
        for client in ["urllib", "httpx"] {
            let got = &out[client];
            assert_eq!(got["status"], 413, "{size} bytes with {client}: {got}");
            let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], -32004, "{client}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("1048576"),
                "{client}: {body}"
            );
        }
    }
    // A client that waits for `100 Continue` before sending its body gets the 413 instead,
    // without sending it.
    use std::io::Write as _;
    let mut s = connect(&base);
    s.write_all(b"POST /servers/big/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut s).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("-32004"), "{answer}");
}

/// Issue item 13: numbers survive. `1e400` and `-1e400` in arguments a plugin rewrites neither
/// crash the connection nor hide the arguments from the plugin (the e-mail address is still
/// redacted), and a 30-digit integer the plugin did not touch reaches the server as sent.
#[test]
fn numbers_survive_a_plugin_rewrite_exactly() {
    let (_server, url) = hostile_server(&[]);
    let (_gw, base, _dir) = gateway_from(
        "hostile-numbers",
        &format!(
            "plugin_runtime:\n  dir: {}\nplugins:\n  redact:\n    file: redact.wasm\n    config: {{detectors: [email], arguments: true, results: false}}\nupstreams:\n  n:\n    url: {url}\n",
            repo().join("plugins").display()
        ),
        &[],
    );
    for era in [LEGACY, MODERN] {
        let client = Client::new(&base, "n", era);
        for (huge, read) in [("1e400", "inf"), ("-1e400", "-inf"), ("2.50", "2.5")] {
            // As text: this test's own JSON values could hold neither number.
            let params = format!(
                r#"{{"name":"numbers","arguments":{{"text":"mail alice@example.com","big":123456789012345678901234567890,"huge":{huge}}}}}"#
            );
            let r = client.send_text("4", "tools/call", Some("numbers"), &params);
            assert_eq!(r.status, 200, "{era} huge={huge}: {}", r.body);
            let answer = r
                .messages()
                .into_iter()
                .find(|m| m.contains(r#""result""#) || m.contains(r#""error""#))
                .unwrap_or_else(|| panic!("{era} huge={huge}: {}", r.body));
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(
                v["result"]["content"][0]["text"],
                format!("mail [REDACTED:email]|123456789012345678901234567890|{read}"),
                "{era} huge={huge}: {answer}"
            );
        }
    }
}

/// Issue item 14: an upstream refusing the gateway's own credential (401/403, an expired token)
/// is a 502 naming that credential, not the upstream's 401 and `WWW-Authenticate`, which would
/// send an MCP client into an OAuth flow against the wrong server; and it is counted.
#[test]
fn an_upstream_refusing_the_gateways_credential_is_a_502() {
    let (_upstream, base_url) = raw_upstream(&["--require-token", "fresh-token"]);
    let (_gw, base, _dir) = gateway_from(
        "hostile-upstream-auth",
        &format!(
            "upstreams:\n  fresh:\n    url: {base_url}/mcp\n    auth: {{type: bearer, token_env: FRESH}}\n  expired:\n    url: {base_url}/mcp\n    auth: {{type: bearer, token_env: EXPIRED}}\nobservability:\n  metrics: {{path: /metrics}}\n"
        ),
        &[("FRESH", "fresh-token"), ("EXPIRED", "old-token")],
    );
    let ok = Client::new(&base, "fresh", MODERN).send("1", "prompts/list", json!({}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let legacy = raw_post(
        &base,
        "/servers/expired/mcp",
        &[("mcp-protocol-version", LEGACY)],
        r#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    let modern = Client::new(&base, "expired", MODERN).send("2", "prompts/list", json!({}));
    for (era, r) in [(LEGACY, legacy), (MODERN, modern)] {
        assert_eq!(r.status, 502, "{era}: {}", r.body);
        assert!(r.header("www-authenticate").is_none(), "{:?}", r.headers);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            (&v["id"], &v["error"]["code"]),
            (&json!(2), &json!(-32016)),
            "{v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("upstreams.expired.auth"),
            "{v}"
        );
    }
    let metrics = get(&base, "/metrics");
    assert!(
        metrics.contains(
            r#"mcpgate_upstream_errors_total{kind="credential_refused",server="expired"} 2"#
        ),
        "{metrics}"
    );
}

/// Issue item 15: forwarding headers are believed only from `server.trusted_proxies`. From any
/// other client, `X-Forwarded-For/Host/Proto` and `Forwarded` are replaced by what the gateway
/// saw, and cannot move the caller to another rate-limit bucket; from a trusted proxy they pass
/// on, and the caller is the address the proxy names.
#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let (_server, url) = hostile_server(&[]);
    let spoof = |xff: &'static str| {
        vec![
            ("x-forwarded-for", xff),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6;host=evil.example"),
        ]
    };
    let call = |base: &str, headers: &[(&str, &str)], tool: &str| {
        let mut h: Vec<(&str, &str)> = vec![
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ];
        h.extend_from_slice(headers);
        raw_post(
            base,
            "/servers/f/mcp",
            &h,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
            ),
        )
    };
    let seen = |r: &RawResponse| -> Value {
        let v: Value = serde_json::from_str(&r.messages()[0]).unwrap();
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
    };
    let limit = "rate_limit:\n  per_client: {capacity: 2, refill_rate: 0.001}\n";

    // No trusted proxies: the client's claims are replaced.
    let (_gw, base, _dir) = gateway_with(&[("f", &url)], limit);
    let host = base.trim_start_matches("http://").to_string();
    let r = call(&base, &spoof("6.6.6.6"), "forwarded");
    assert_eq!(
        seen(&r),
        json!({"x-forwarded-for": "127.0.0.1", "x-forwarded-host": host, "x-forwarded-proto": "http", "forwarded": null})
    );
    // Another made-up address is the same caller: the bucket of two is spent.
    assert_eq!(call(&base, &spoof("7.7.7.7"), "echo").status, 200);
    assert_eq!(call(&base, &spoof("8.8.8.8"), "echo").status, 429);

    // 127.0.0.1 trusted: the proxy's headers pass, and the caller is who it names.
    let (_gw2, base2, _dir2) = gateway_with(
        &[("f", &url)],
        &format!("server:\n  trusted_proxies: [127.0.0.1/32]\n{limit}"),
    );
    let r = call(&base2, &spoof("6.6.6.6"), "forwarded");
    assert_eq!(
        seen(&r),
        json!({"x-forwarded-for": "6.6.6.6, 127.0.0.1", "x-forwarded-host": "evil.example", "x-forwarded-proto": "https", "forwarded": "for=6.6.6.6;host=evil.example"})
    );
    assert_eq!(call(&base2, &spoof("6.6.6.6"), "echo").status, 200);
    assert_eq!(
        call(&base2, &spoof("6.6.6.6"), "echo").status,
        429,
        "6.6.6.6 spent its two"
    );
    assert_eq!(
        call(&base2, &spoof("7.7.7.7"), "echo").status,
        200,
        "7.7.7.7 has its own"
    );
}

/// Issue item 16: the URLs of OAuth resource metadata never carry what a client put in `Host`.
/// A `Host` that is not an authority is refused (a `"` in it reached `WWW-Authenticate`); an
/// HTTP/2 client, which sends `:authority` instead of `Host`, gets URLs naming the gateway, not
/// `localhost`.
#[test]
fn oauth_urls_never_carry_a_forged_host() {
    let (_server, url) = hostile_server(&[]);
    let mut idp = Proc::spawn(
        "idp.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/idp.py"))
            .args(["--audience", "hostile", "alice"]),
    );
    let port = idp
        .wait_for("PORT ", Duration::from_secs(60))
        .trim()
        .trim_start_matches("PORT ")
        .to_string();
    let (_gw, base, _dir) = gateway_from(
        "hostile-host",
        &format!(
            "auth:\n  type: oidc\n  issuer: http://127.0.0.1:{port}\n  audience: hostile\nupstreams:\n  o:\n    url: {url}\n"
        ),
        &[],
    );
    let authority = base.trim_start_matches("http://").to_string();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    for (host, status) in [
        (r#"evil"x"#, 400),
        ("evil.example, other", 400),
        ("a@b", 400),
        (authority.as_str(), 401),
    ] {
        use std::io::Write as _;
        let mut s = connect(&base);
        s.write_all(
            format!(
                "POST /servers/o/mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let answer = read_until_closed(&mut s).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "Host {host:?}: {answer}"
        );
        if status == 400 {
            assert!(
                answer.contains("-32600") && !answer.contains("evil"),
                "{answer}"
            );
        } else {
            assert!(
                answer.contains(&format!(
                    r#"resource_metadata="http://{authority}/.well-known/oauth-protected-resource/servers/o/mcp""#
                )),
                "{answer}"
            );
        }
    }
    // HTTP/2 (prior knowledge, as h2c clients speak it): no Host header, an :authority.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let challenge = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let r = client
            .post(format!("{base}/servers/o/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 401);
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string()
    });
    assert!(
        challenge.contains(&format!("http://{authority}/.well-known/")),
        "{challenge}"
    );
}

/// Issue item 17: secrets stay out of what the gateway prints and serves. An upstream URL's query
/// values are hidden in `list-servers` and the start log; an audit record cut short keeps no
/// part of a secret (redaction comes before the cut); `/metrics`, which names callers, can
/// require a bearer token.
#[test]
fn secrets_stay_out_of_output_logs_and_metrics() {
    let (_server, url) = hostile_server(&[]);
    let dir = TempDir::new("hostile-secrets");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "upstreams:\n  s:\n    url: {url}?api_key=s3cret-query-value&tenant=t1\nobservability:\n  metrics:\n    path: /metrics\n    token_env: METRICS_TOKEN\n  audit:\n    log_bodies: true\n    max_body_bytes: 60\n"
        ),
    );
    let (ok, listed, stderr) = run_mcpgate(
        &["list-servers", "--config", cfg.to_str().unwrap()],
        &[("METRICS_TOKEN", "scrape-me")],
    );
    assert!(ok, "{stderr}");
    assert!(listed.contains("?api_key=…&tenant=…"), "{listed}");
    assert!(!listed.contains("s3cret"), "{listed}");

    let (mut gw, base) = start_gateway(&cfg, &[("METRICS_TOKEN", "scrape-me")]);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"password":"hunter2-hunter2-hunter2","text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let r = raw_post(
        &base,
        "/servers/s/mcp",
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let record = gw.wait_for(r#""truncated":true"#, Duration::from_secs(30));
    assert!(!record.contains("hunter"), "{record}");

    let anonymous = get(&base, "/metrics");
    assert!(
        anonymous.contains("observability.metrics.token_env"),
        "{anonymous}"
    );
    let scraped = {
        use std::io::Write as _;
        let mut s = connect(&base);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer scrape-me\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_until_closed(&mut s).unwrap()
    };
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("mcpgate_requests_total"), "{scraped}");
    let log = gw.drain().join("\n");
    assert!(!log.contains("s3cret"), "{log}");
    assert!(
        log.contains("api_key=…"),
        "the start log names the route: {log}"
    );
}

/// Issue item 10: a full session table makes room in constant time. Creating sessions once the
/// table holds `sessions.max_active` costs about what it costs on an empty table (it scanned the
/// whole table twice under its one lock per new session: 2,000 sessions at a full table of
/// 20,000 took several times longer than at an empty one).
#[test]
fn a_full_session_table_makes_room_in_constant_time() {
    let bin = mcpgate_bin().with_file_name("bench-upstream");
    assert!(
        bin.exists(),
        "{} is built with the workspace",
        bin.display()
    );
    let (_upstream, upstream_url) = start_ported("bench-upstream", &mut Command::new(bin));
    let (_gw, base, _dir) = gateway_from(
        "hostile-sessions",
        &format!(
            "sessions:\n  max_active: 20000\nupstreams:\n  s:\n    url: {upstream_url}/mcp\nobservability:\n  metrics: {{path: /metrics}}\n"
        ),
        &[],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{base}/servers/s/mcp");
    // `n` new sessions over eight connections; how long they took.
    let initialize = |n: usize| {
        let started = std::time::Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        for _ in 0..n / 8 {
                            let r = client
                                .post(&url)
                                .header("content-type", "application/json")
                                .header("accept", "application/json, text/event-stream")
                                .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(r.status(), 200);
                            assert!(r.headers().contains_key("mcp-session-id"));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        started.elapsed()
    };
    let empty = initialize(2000);
    initialize(18000);
    let tracked = get(&base, "/metrics");
    assert!(
        tracked.contains(r#"mcpgate_active_sessions{server="s"} 20000"#),
        "{tracked}"
    );
    let full = initialize(2000);
    eprintln!("2,000 new sessions: {empty:?} at an empty table, {full:?} at a full one");
    assert!(
        full < empty * 3 + Duration::from_secs(1),
        "2,000 new sessions took {full:?} at a full table, {empty:?} at an empty one"
    );
}
