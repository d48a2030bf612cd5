//! WebAssembly plugin stages with the real example plugins (built by scripts/build-plugins.sh):
//! loading and its errors, every kind of answer, the sandbox's failure modes, and state in kv.

mod support;

use serde_json::{Value, json};
use support::*;

/// An upstream that answers `tools/call` with the arguments it received (as text), plus a secret
/// for the tool `leak`; `sse_leak` answers the same over SSE after a progress notification.
async fn echo_upstream() -> Upstream {
    upstream(|s: Seen| async move {
        let req = s.json();
        let id = req["id"].clone();
        let tool = req["params"]["name"].as_str().unwrap_or_default().to_string();
        let args = req["params"]["arguments"].to_string();
        let text = match tool.as_str() {
            "leak" | "sse_leak" => format!("{args} key=AKIAIOSFODNN7EXAMPLE"),
            _ => args,
        };
        let result = json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}});
        if tool == "sse_leak" {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                let progress = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"message":"AKIAIOSFODNN7EXAMPLE"}});
                let _ = tx.send(format!("event: message\ndata: {progress}\n\n").into()).await;
                let _ = tx.send(format!("event: message\ndata: {result}\n\n").into()).await;
            });
            resp
        } else {
            json_response(200, result)
        }
    })
    .await
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
}

async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let resp = post(url, body, None).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    // SSE: the last data line carries the response.
    let json = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or(Value::Null),
    };
    (status, json)
}

#[tokio::test]
async fn load_errors_name_the_key_and_line() {
    let dir = plugin_dir();
    let yaml = format!(
        r#"upstreams:
  u:
    url: http://127.0.0.1:1/mcp
plugin_runtime:
  dir: {dir}
plugins:
  absent:
    file: does-not-exist.wasm
  counting:
    file: quota.wasm
    config: {{limits: [{{tools: ['*'], calls: 5}}]}}
  snoop:
    file: sneaky.wasm
  picky:
    file: misbehave.wasm
    config:
      refuse: the config says no
  manifest:
    file: {dir}/Cargo.toml
"#
    );
    let cfg = config(&yaml);
    let errors = load_plugins(&cfg)
        .await
        .expect_err("every plugin here is broken");
    let text = errors.to_string();
    let find = |key: &str| {
        errors
            .errors
            .iter()
            .find(|e| e.path == key)
            .unwrap_or_else(|| panic!("no error at {key}:\n{text}"))
    };
    let missing = find("plugins.absent.file");
    assert_eq!(missing.line, Some(8));
    assert!(
        missing.message.contains("does-not-exist.wasm")
            && missing.message.contains("build-plugins.sh"),
        "{text}"
    );
    let ungranted = find("plugins.counting.grants");
    assert!(
        ungranted
            .message
            .contains("imports `mcpgate:plugin/kv@0.2.0`, which is not granted (add `kv: true`"),
        "{text}"
    );
    assert!(
        ungranted.message.contains("mcpgate:plugin/metrics"),
        "{text}"
    );
    let sneaky = find("plugins.snoop.grants");
    assert!(sneaky.message.contains("wasi:filesystem/"), "{text}");
    assert!(sneaky.message.contains("wasi:sockets/"), "{text}");
    let picky = find("plugins.picky.config");
    assert_eq!(picky.line, Some(16));
    assert!(
        picky
            .message
            .contains("plugin `picky` rejected its config: the config says no"),
        "{text}"
    );
    let manifest = find("plugins.manifest.file");
    assert!(
        manifest
            .message
            .contains("is not a loadable WebAssembly component"),
        "{text}"
    );
    assert_eq!(errors.errors.len(), 5, "{text}");
}

const ROUTE: &str = r#"upstreams:
  u:
    url: {url}
plugin_runtime:
  dir: {plugins}
"#;

fn route(up: &Upstream, rest: &str) -> String {
    ROUTE.replace("{url}", &up.url()) + rest
}

#[tokio::test]
async fn rejections_rewrites_and_response_hooks() {
    let up = echo_upstream().await;
    let (gw, plugins) = gateway_plugins(&route(
        &up,
        r#"plugins:
  guard:
    file: arg_guard.wasm
    config:
      tools:
        search:
          arguments:
            query: {type: string, max_length: 200}
            limit: {type: integer, minimum: 1, maximum: 50}
        leak: {additional_arguments: true}
        sse_leak: {additional_arguments: true}
  redact:
    file: redact.wasm
  greet:
    file: template.wasm
    config: {greeting: hello}
pipeline: [guard, redact, greet]
"#,
    ))
    .await;
    let url = gw.url("u");

    // arg-guard refuses: the client reads the reason, the upstream never sees the call.
    let (status, body) = post_json(
        &url,
        &call(1, "search", json!({"query": "x", "limit": 500})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32602);
    assert_eq!(
        body["error"]["message"],
        "argument `limit` of `search` must be at most 50"
    );
    assert!(up.requests().is_empty());

    // redact rewrites the arguments: the upstream receives the redacted text; the template
    // plugin's header arrives too.
    let (status, body) = post_json(
        &url,
        &call(
            2,
            "search",
            json!({"query": "mail alice@example.com please", "limit": 5}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = up.last();
    assert_eq!(
        seen.json()["params"]["arguments"]["query"],
        "mail [REDACTED:email] please"
    );
    // redact also inspects the result, so the call went out under the gateway's own id, and the
    // client got its own back.
    assert!(
        seen.json()["id"].as_str().unwrap().starts_with("mg1r."),
        "{}",
        seen.json()
    );
    assert_eq!(body["id"], 2);
    assert_eq!(seen.header("x-greeting"), Some("hello"));

    // The response hook changes what the client sees (JSON response).
    let (_, body) = post_json(&url, &call(3, "leak", json!({}))).await;
    assert_eq!(
        body["result"]["content"][0]["text"],
        "{} key=[REDACTED:aws_access_key]"
    );
    assert_eq!(body["id"], 3);

    // ...and the final message of an SSE stream, while the progress event passes untouched.
    let resp = post(&url, &call(4, "sse_leak", json!({"n": 1})), None).await;
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#""message":"AKIAIOSFODNN7EXAMPLE""#),
        "progress is not a response: {text}"
    );
    assert!(
        text.contains(r#"{\"n\":1} key=[REDACTED:aws_access_key]"#),
        "{text}"
    );

    let redact = plugins.get("redact").unwrap();
    assert_eq!(redact.calls("request", "modify"), 1);
    assert_eq!(redact.calls("response", "replace"), 2);
    assert_eq!(plugins.get("guard").unwrap().calls("request", "reject"), 1);
}

#[tokio::test]
async fn modern_requests_are_judged_too() {
    let up = echo_upstream().await;
    let (gw, _plugins) = gateway_plugins(&route(
        &up,
        "plugins:\n  guard:\n    file: arg_guard.wasm\n    config: {unknown_tools: deny, tools: {}}\n",
    ))
    .await;
    let body = modern_call(9, "anything");
    let resp = post_with(
        &gw.url("u"),
        &body,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "anything"),
        ],
    )
    .await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], 9);
    assert_eq!(
        v["error"]["message"],
        "tool `anything` is not allowed through this gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_fails_only_its_request() {
    let up = echo_upstream().await;
    let (gw, plugins) = gateway_plugins(&route(
        &up,
        "plugins:\n  chaos:\n    file: misbehave.wasm\n    timeout: 3000\n    max_memory_mb: 8\n",
    ))
    .await;
    let url = gw.url("u");
    for (i, (tool, kind)) in [
        ("spin", "timeout"),
        ("sleep", "timeout"),
        ("oom", "memory"),
        ("panic", "trap"),
        ("garbage", "invalid"),
        ("bad_header", "invalid"),
        ("huge_header", "invalid"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 100 + i as u64;
        let bad = {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, &call(id, tool, json!({}))).await })
        };
        // A well-behaved request through the same plugin meanwhile gets its answer.
        let (status, ok) = post_json(&url, &call(1, "fine", json!({"i": i}))).await;
        assert_eq!(
            (status, &ok["result"]["content"][0]["text"]),
            (200, &json!(format!("{{\"i\":{i}}}")))
        );
        if tool == "spin" || tool == "sleep" {
            // The loop (or the sleep) is still running (it has three seconds) while the other
            // call was served.
            assert!(
                !bad.is_finished(),
                "the concurrent call waited for the spinning plugin"
            );
        }
        let (status, body) = bad.await.unwrap();
        assert_eq!(status, 500, "{tool}: {body}");
        assert_eq!(body["id"], id);
        assert_eq!(body["error"]["code"], -32013);
        assert_eq!(
            body["error"]["message"],
            format!("plugin `chaos` failed ({kind})")
        );
        assert!(
            plugins.get("chaos").unwrap().calls("request", kind) >= 1,
            "{tool}"
        );
    }
    // None of those reached the upstream; the plugin still works afterwards.
    let tools: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.json()["params"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(tools.iter().all(|t| t == "fine"), "{tools:?}");
    let (status, _) = post_json(&url, &call(2, "fine", json!({}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn fail_open_skips_the_plugin() {
    let up = echo_upstream().await;
    let (gw, plugins) = gateway_plugins(&route(
        &up,
        "plugins:\n  chaos:\n    file: misbehave.wasm\n    on_error: fail_open\n    timeout: 100\n",
    ))
    .await;
    for tool in ["spin", "panic"] {
        let (status, body) = post_json(&gw.url("u"), &call(5, tool, json!({"a": 1}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["content"][0]["text"], r#"{"a":1}"#);
        assert_eq!(up.last().json()["params"]["name"], tool);
    }
    let chaos = plugins.get("chaos").unwrap();
    assert_eq!(
        (
            chaos.calls("request", "timeout"),
            chaos.calls("request", "trap")
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn quota_state_persists_in_kv_across_fresh_instances() {
    let up = echo_upstream().await;
    let (gw, _plugins) = gateway_plugins(&route(
        &up,
        r#"plugins:
  quota:
    file: quota.wasm
    grants: {kv: true, metrics: true}
    config:
      window_ms: 3600000
      limits:
        - {tools: ["search*"], calls: 2}
"#,
    ))
    .await;
    let url = gw.url("u");
    for id in 1..=2 {
        let (status, body) = post_json(&url, &call(id, "search_web", json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("result").is_some());
    }
    let (status, body) = post_json(&url, &call(3, "search_code", json!({}))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], -32005);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("quota exceeded: 2 calls to search* per 3600s"),
        "{body}"
    );
    assert_eq!(body["error"]["data"]["limit"], 2);
    // Tools outside the quota are not counted.
    let (status, _) = post_json(&url, &call(4, "echo", json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(up.requests().len(), 3);
}

#[tokio::test]
async fn reused_instances_serve_many_calls_and_drop_after_a_trap() {
    let up = echo_upstream().await;
    let (gw, plugins) = gateway_plugins(&route(
        &up,
        "plugins:\n  redact:\n    file: redact.wasm\n    instances: reuse\n  chaos:\n    file: misbehave.wasm\n    instances: reuse\n",
    ))
    .await;
    let url = gw.url("u");
    for id in 0..20 {
        let (status, body) =
            post_json(&url, &call(id, "echo", json!({"who": "bob@example.org"}))).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["result"]["content"][0]["text"],
            r#"{"who":"[REDACTED:email]"}"#
        );
    }
    let (status, _) = post_json(&url, &call(50, "panic", json!({}))).await;
    assert_eq!(status, 500);
    let (status, _) = post_json(&url, &call(51, "echo", json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        plugins.get("redact").unwrap().calls("request", "modify"),
        20
    );
}

/// Fresh instances start from a snapshot of `init`'s state (the same birth time on every call)
/// and still share nothing between calls (each has served one call); without the snapshot each
/// fresh instance runs `init` itself; reused instances count on.
#[tokio::test]
async fn fresh_instances_start_from_the_init_snapshot_and_share_nothing() {
    let up = echo_upstream().await;
    let (gw, _plugins) = gateway_plugins(&format!(
        "upstreams:\n  u_snap:\n    url: {0}\n    pipeline: [snap]\n  u_plain:\n    url: {0}\n    pipeline: [plain]\n  u_kept:\n    url: {0}\n    pipeline: [kept]\nplugin_runtime:\n  dir: {{plugins}}\nplugins:\n  snap:\n    file: misbehave.wasm\n  plain:\n    file: misbehave.wasm\n    init_snapshot: false\n  kept:\n    file: misbehave.wasm\n    instances: reuse\n",
        up.url()
    ))
    .await;
    // One route per plugin: the fixture's headers would overwrite each other on one.
    let seen = |plugin: &'static str| {
        let (gw, up) = (&gw, &up);
        async move {
            let before = up.requests().len();
            for id in 0..3 {
                let (status, body) = post_json(
                    &gw.url(&format!("u_{plugin}")),
                    &call(id, "whoami", json!({})),
                )
                .await;
                assert_eq!(status, 200, "{plugin}: {body}");
            }
            up.requests()[before..]
                .iter()
                .map(|s| {
                    (
                        s.header("x-plugin-born").unwrap().to_string(),
                        s.header("x-plugin-calls").unwrap().to_string(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let snap = seen("snap").await;
    assert!(snap.iter().all(|(_, calls)| calls == "1"), "{snap:?}");
    assert!(snap.iter().all(|(born, _)| *born == snap[0].0), "{snap:?}");
    let plain = seen("plain").await;
    assert!(plain.iter().all(|(_, calls)| calls == "1"), "{plain:?}");
    assert!(
        plain[0].0 != plain[1].0 && plain[1].0 != plain[2].0,
        "{plain:?}"
    );
    let kept = seen("kept").await;
    let calls: Vec<&str> = kept.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(calls, ["1", "2", "3"], "{kept:?}");
}

#[tokio::test]
async fn callouts_reach_only_granted_targets() {
    let directory = upstream(|s: Seen| async move {
        json_response(
            200,
            json!({"path": s.uri.to_string(), "caller": s.header("x-caller")}),
        )
    })
    .await;
    let up = echo_upstream().await;
    let base = format!("http://{}/api", directory.addr);
    let (gw, _plugins) = gateway_plugins(&route(
        &up,
        &format!("plugins:\n  probe:\n    file: callout_probe.wasm\n    grants:\n      callout: {{directory: {base}}}\n"),
    ))
    .await;
    let lookup =
        |target: &str, path: &str| call(7, "lookup", json!({"target": target, "path": path}));
    let (status, body) = post_json(&gw.url("u"), &lookup("directory", "/who?id=42")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["status"], 200);
    let answer: Value = serde_json::from_str(body["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"path": "/api/who?id=42", "caller": "ip:127.0.0.1"})
    );

    // A target the YAML does not name is refused inside the plugin; so is a URL for a path.
    let (_, body) = post_json(&gw.url("u"), &lookup("elsewhere", "/")).await;
    assert!(
        body["result"]["error"]
            .as_str()
            .unwrap()
            .contains("Denied(\"callout target `elsewhere` is not granted"),
        "{body}"
    );
    let (_, body) = post_json(
        &gw.url("u"),
        &lookup("directory", "http://169.254.169.254/"),
    )
    .await;
    assert!(
        body["result"]["error"]
            .as_str()
            .unwrap()
            .contains("absolute path"),
        "{body}"
    );
    assert_eq!(directory.requests().len(), 1);
    assert!(up.requests().is_empty(), "answered locally");

    // Without the grant, the component does not load.
    let cfg = config(
        &route(&up, "plugins:\n  probe:\n    file: callout_probe.wasm\n")
            .replace("{plugins}", &plugin_dir()),
    );
    let err = load_plugins(&cfg)
        .await
        .expect_err("callout is not granted")
        .to_string();
    assert!(
        err.contains(
            "imports `mcpgate:plugin/callout@0.2.0`, which is not granted (add a `callout:` map"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_filesystem_is_refused_or_empty() {
    let up = echo_upstream().await;
    // Refused at load, with the way out for cargo-component builds.
    let cfg = config(
        &route(&up, "plugins:\n  fs:\n    file: fs_probe.wasm\n")
            .replace("{plugins}", &plugin_dir()),
    );
    let err = load_plugins(&cfg)
        .await
        .expect_err("filesystem is not granted")
        .to_string();
    assert!(err.contains("imports `wasi:filesystem/types@"), "{err}");
    assert!(
        err.contains("add `empty_filesystem: true` under plugins.fs.grants"),
        "{err}"
    );

    // Linked empty: the plugin loads, and a host file is still out of reach.
    let (gw, _plugins) = gateway_plugins(&route(
        &up,
        "plugins:\n  fs:\n    file: fs_probe.wasm\n    grants: {empty_filesystem: true}\n",
    ))
    .await;
    for path in ["/etc/hostname", "/etc/passwd", "Cargo.toml"] {
        let (status, body) = post_json(&gw.url("u"), &call(1, "read", json!({"path": path}))).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["result"].get("read").is_none(),
            "{path} was readable: {body}"
        );
        assert!(body["result"]["error"].is_string(), "{body}");
    }
}

/// A plugin built for contract 0.1 (the `contract-v01` fixture, wit-bindgen on `wit/0.1`) keeps
/// running beside 0.2 plugins: the same view of the request (field by field, against the 0.2
/// fixture reporting in the same form), its rejections, its header changes, its response
/// replacements, its logs, and its init snapshot.
#[tokio::test]
async fn plugins_built_for_contract_0_1_keep_working() {
    use sha2::Digest as _;
    let up = echo_upstream().await;
    let key: String = sha2::Sha256::digest(b"key-v01")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (gw, plugins) = gateway_plugins(&format!(
        "auth:\n  type: api-key\n  keys: [{{id: carol, key: \"sha256:{key}\"}}]\nupstreams:\n  u_old:\n    url: {0}\n    pipeline: [auth, old]\n  u_new:\n    url: {0}\n    pipeline: [auth, new]\nplugin_runtime:\n  dir: {{plugins}}\nplugins:\n  old:\n    file: contract_v01.wasm\n  new:\n    file: misbehave.wasm\n",
        up.url()
    ))
    .await;
    let headers = [
        ("x-api-key", "key-v01"),
        ("x-tenant", "acme"),
        ("authorization", "Bearer not-for-plugins"),
    ];
    let mut seen = Vec::new();
    for route in ["u_old", "u_new"] {
        let before = up.requests().len();
        let resp = post_with(
            &gw.url(route),
            &call(7, "view", json!({"q": "x"})),
            &headers,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert!(body.get("error").is_none(), "{route}: {body}");
        let sent = &up.requests()[before..];
        assert_eq!(sent.len(), 1, "{route}");
        let header = if route == "u_old" {
            "x-v01-saw"
        } else {
            "x-view"
        };
        seen.push(sent[0].header(header).unwrap().to_string());
        if route == "u_old" {
            // The 0.1 response hook replaced the result with what it was handed.
            let v01 = &body["result"]["v01"];
            assert_eq!(v01["status"], 200, "{body}");
            assert_eq!(v01["streamed"], false, "{body}");
            assert!(v01["message-bytes"].as_u64().unwrap() > 20, "{body}");
            assert_eq!(body["id"], 7, "the client's id comes back: {body}");
        }
    }
    assert_eq!(
        seen[0].replacen("route=u_old", "route=u_new", 1),
        seen[1],
        "0.1 and 0.2 show the same request"
    );
    for part in [
        "method=tools/call",
        "id=7",
        "era=legacy",
        r#"args={"q":"x"}"#,
        "tenant=acme",
        "caller=carol",
        "addr=127.0.0.1",
        "hidden-auth=true",
        "request-id-set=true",
    ] {
        assert!(seen[1].contains(part), "{part} in {}", seen[1]);
    }

    // A 0.1 rejection reaches the client with its code, message and data.
    let before = up.requests().len();
    let resp = post_with(&gw.url("u_old"), &call(8, "forbidden", json!({})), &headers).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32050, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the 0.1 plugin refuses `forbidden` for carol"
    );
    assert_eq!(body["error"]["data"]["contract"], "0.1");
    assert_eq!(up.requests().len(), before, "the upstream never saw it");

    let old = plugins.get("old").unwrap();
    assert_eq!(old.calls("request", "modify"), 1);
    assert_eq!(old.calls("request", "reject"), 1);
    assert_eq!(old.calls("response", "replace"), 1);
}

/// A 0.2 plugin is handed only what it reads: a tool call whose arguments are bigger than the
/// plugin's whole memory passes a plugin that reads only the tool name, where the 0.1 contract
/// (which copies the message and the arguments into the plugin) cannot even make the call.
#[tokio::test]
async fn a_plugin_pays_only_for_the_fields_it_reads() {
    let up = echo_upstream().await;
    let (gw, plugins) = gateway_plugins(&format!(
        "upstreams:\n  u_new:\n    url: {0}\n    pipeline: [new]\n  u_old:\n    url: {0}\n    pipeline: [old]\nplugin_runtime:\n  dir: {{plugins}}\nplugins:\n  new:\n    file: misbehave.wasm\n    max_memory_mb: 2\n  old:\n    file: contract_v01.wasm\n    max_memory_mb: 2\n",
        up.url()
    ))
    .await;
    let big = "x".repeat(3 << 20);
    let (status, body) =
        post_json(&gw.url("u_new"), &call(1, "whoami", json!({ "blob": big }))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("error").is_none(), "{body}");
    let sent = up.last();
    assert_eq!(sent.header("x-plugin-calls"), Some("1"));
    assert_eq!(
        sent.json()["params"]["arguments"]["blob"]
            .as_str()
            .map(str::len),
        Some(3 << 20),
        "forwarded whole"
    );
    assert_eq!(plugins.get("new").unwrap().calls("request", "continue"), 0);
    assert_eq!(plugins.get("new").unwrap().calls("request", "modify"), 1);

    // The same call through the 0.1 plugin: its record does not fit the plugin's memory, so the
    // call fails (fail_closed) as a memory failure, and nothing reaches the upstream.
    let before = up.requests().len();
    let (status, body) =
        post_json(&gw.url("u_old"), &call(2, "search", json!({ "blob": big }))).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed (memory)"),
        "{body}"
    );
    assert_eq!(up.requests().len(), before);
    assert_eq!(plugins.get("old").unwrap().calls("request", "memory"), 1);
}

/// A component that does not export the hooks of a contract this gateway runs is refused at
/// load, saying what it exports instead.
#[tokio::test]
async fn components_of_an_unknown_contract_are_refused_at_load() {
    // The 0.1 fixture with its hooks export renamed to a contract that does not exist (same
    // length, so the component stays well-formed).
    let bytes = std::fs::read(format!("{}/contract_v01.wasm", plugin_dir())).unwrap();
    let (from, to) = (b"mcpgate:plugin/hooks@0.1.0", b"mcpgate:plugin/hooks@0.9.0");
    let mut renamed = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            renamed.extend_from_slice(to);
            i += from.len();
        } else {
            renamed.push(bytes[i]);
            i += 1;
        }
    }
    assert_ne!(renamed, bytes, "the fixture exports 0.1 hooks");
    let dir = std::env::temp_dir().join(format!("mcpgate-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("future.wasm"), renamed).unwrap();
    let cfg = config(&format!(
        "upstreams:\n  u:\n    url: http://127.0.0.1:9/mcp\nplugin_runtime:\n  dir: {}\nplugins:\n  future:\n    file: future.wasm\n",
        dir.display()
    ));
    let err = load_plugins(&cfg)
        .await
        .expect_err("0.9 is not a contract this gateway runs")
        .to_string();
    assert!(
        err.contains("plugins.future.file")
            && err.contains("exports `mcpgate:plugin/hooks@0.9.0`")
            && err.contains("0.2.0, or 0.1.0"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that changes only `plugin_runtime` settings builds a new runtime, so the plugins it
/// would otherwise keep run under the new settings (here `max_header_bytes`).
#[tokio::test]
async fn a_reload_applies_changed_runtime_settings() {
    use mcpgate::pipeline::{RequestContext, Verdict};
    let yaml = |limit: usize| {
        format!(
            "upstreams:\n  u:\n    url: http://127.0.0.1:9/mcp\n    pipeline: [chaos]\nplugin_runtime:\n  dir: {}\n  max_header_bytes: {limit}\nplugins:\n  chaos:\n    file: misbehave.wasm\n",
            plugin_dir()
        )
    };
    // `whoami` sets two headers: about 50 bytes of names and values.
    let verdict = |plugins: &mcpgate::plugins::Plugins, cfg: &mcpgate::Config| {
        let stage = plugins.stage("chaos").unwrap();
        let body = serde_json::to_vec(&call(1, "whoami", json!({}))).unwrap();
        let parsed = mcpgate::mcp::ParsedBody::parse(&body).unwrap();
        let upstream = cfg.upstreams[0].clone();
        async move {
            let mut cx = RequestContext::new(
                "t".into(),
                upstream,
                http::Method::POST,
                http::HeaderMap::new(),
                Some(parsed),
            );
            match stage.on_request(&mut cx).await {
                Verdict::Continue => "continue".to_string(),
                Verdict::Reject(e) => e.to_string(),
                Verdict::Respond(_) => "respond".to_string(),
            }
        }
    };
    let roomy = config(&yaml(8192));
    let first = load_plugins(&roomy).await.unwrap();
    assert_eq!(verdict(&first, &roomy).await, "continue");

    let tight = config(&yaml(16));
    let (second, changes) = first.reload(&tight).await.unwrap();
    assert_eq!(changes.loaded, ["chaos"], "{changes:?}");
    assert!(changes.kept.is_empty(), "{changes:?}");
    assert_eq!(
        verdict(&second, &tight).await,
        "plugin `chaos` failed (invalid)"
    );

    // Unchanged settings keep the plugin (and its runtime) as it was.
    let (third, changes) = second.reload(&tight).await.unwrap();
    assert_eq!(changes.kept, ["chaos"], "{changes:?}");
    assert_eq!(
        verdict(&third, &tight).await,
        "plugin `chaos` failed (invalid)"
    );
}
