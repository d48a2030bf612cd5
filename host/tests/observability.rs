//! Metrics and the audit log through an in-process gateway: label values stay bounded whatever
//! clients send, upstream failures are counted by kind, and the audit log records the gateway's
//! own refusals, batches and (redacted) JSON response bodies. The end-to-end test with real SDK
//! peers, the Prometheus parser and OTLP export is tests/tests/observability_e2e.rs.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// An upstream that lists two tools and answers every call; `token` in its results is a secret.
async fn listing_upstream() -> Upstream {
    upstream(|s: Seen| async move {
        let body = s.json();
        let result = match body["method"].as_str() {
            Some("tools/list") => json!({"tools": [
                {"name": "listed_a", "inputSchema": {"type": "object"}},
                {"name": "listed_b", "inputSchema": {"type": "object"}}]}),
            _ => json!({"content": [{"type": "text", "text": "ok"}], "token": "tok-123456789"}),
        };
        if body.is_array() {
            let answers: Vec<Value> = body
                .as_array()
                .unwrap()
                .iter()
                .map(|m| json!({"jsonrpc": "2.0", "id": m["id"], "result": {}}))
                .collect();
            return json_response(200, Value::Array(answers));
        }
        json_response(
            200,
            json!({"jsonrpc": "2.0", "id": body["id"], "result": result}),
        )
    })
    .await
}

async fn scrape(gw: &Gw) -> String {
    let resp = client()
        .get(format!("{}/metrics", gw.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The exposition lines of one family's samples.
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_values_stay_bounded_whatever_clients_send() {
    let up = listing_upstream().await;
    let gw = gateway(&format!(
        "upstreams:\n  u:\n    url: {}\n  down:\n    url: http://127.0.0.1:9/mcp\n    timeout: 5000\n\
         observability:\n  metrics:\n    max_unlisted_tools: 3\n    max_clients: 5\n"
    , up.url()))
    .await;
    let url = gw.url("u");
    // Before any tools/list, the first three unlisted names get series of their own.
    for i in 0..3 {
        post(&url, &legacy_call(i, &format!("early{i}")), None).await;
    }
    let list = json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list"});
    assert_eq!(post(&url, &list, None).await.status(), 200);
    // 40 junk names: all counted, under `_other`.
    for i in 0..40 {
        post(&url, &legacy_call(200 + i, &format!("junk-{i}")), None).await;
    }
    for tool in ["listed_a", "listed_b", "listed_a"] {
        post(&url, &legacy_call(300, tool), None).await;
    }
    // Made-up methods share `_other`; unknown routes share `_unknown`.
    for i in 0..10 {
        let m = json!({"jsonrpc": "2.0", "id": i, "method": format!("x/made-up-{i}")});
        post(&url, &m, None).await;
        post(&gw.url(&format!("nope{i}")), &m, None).await;
    }
    // An upstream that is down: 502, counted by kind.
    assert_eq!(
        post(&gw.url("down"), &legacy_call(1, "t"), None)
            .await
            .status(),
        502
    );

    let text = scrape(&gw).await;
    let tools: Vec<&str> = series(&text, "mcpgate_tool_calls_total")
        .into_iter()
        .filter(|l| l.contains(r#"server="u""#))
        .collect();
    // early0..2, listed_a, listed_b, _other: never more than listed + max_unlisted + 1.
    assert_eq!(tools.len(), 6, "{tools:#?}");
    for line in [
        r#"mcpgate_tool_calls_total{server="u",tool="early0"} 1"#,
        r#"mcpgate_tool_calls_total{server="u",tool="early2"} 1"#,
        r#"mcpgate_tool_calls_total{server="u",tool="_other"} 40"#,
        r#"mcpgate_tool_calls_total{server="u",tool="listed_a"} 2"#,
        r#"mcpgate_tool_calls_total{server="u",tool="listed_b"} 1"#,
        r#"mcpgate_requests_total{method="_other",server="u",status="200"} 10"#,
        r#"mcpgate_requests_total{method="_other",server="_unknown",status="404"} 10"#,
        r#"mcpgate_requests_total{method="tools/call",server="down",status="502"} 1"#,
        r#"mcpgate_upstream_errors_total{kind="unavailable",server="down"} 1"#,
        r#"mcpgate_active_sessions{server="u"} 0"#,
        r#"mcpgate_build_info{version="0.1.0"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    assert!(!text.contains("made-up"), "{text}");
    assert!(!text.contains("nope"), "{text}");
    assert!(!text.contains("junk"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_limited_callers_are_counted_per_bounded_client() {
    let up = listing_upstream().await;
    let keys: Vec<(String, String)> = (0..8)
        .map(|i| (format!("K{i}"), format!("key-number-{i}-0123456789")))
        .collect();
    let env: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key_list: String = (0..8)
        .map(|i| format!("    - {{id: client{i}, key_env: K{i}}}\n"))
        .collect();
    let gw = gateway_env(
        &env,
        &format!(
            "auth:\n  type: api-key\n  header: X-API-Key\n  keys:\n{key_list}\
             rate_limit:\n  per_client: {{capacity: 1, refill_rate: 0.001}}\n\
             policy:\n  rules:\n    - {{tools: [listed_b], decision: deny}}\n\
             upstreams:\n  u:\n    url: {}\n\
             observability:\n  metrics:\n    max_clients: 3\n",
            up.url()
        ),
    )
    .await;
    let url = gw.url("u");
    for (_, key) in &keys {
        let h = [("x-api-key", key.as_str())];
        // Denied by policy (not charged), then the bucket's one token, then limited.
        let denied = post_with(&url, &legacy_call(1, "listed_b"), &h).await;
        assert_eq!(denied.status(), 200);
        let allowed = post_with(&url, &legacy_call(2, "listed_a"), &h).await;
        assert_eq!(allowed.status(), 200);
        let limited = post_with(&url, &legacy_call(3, "listed_a"), &h).await;
        assert_eq!(limited.status(), 429);
    }
    let text = scrape(&gw).await;
    let limited = series(&text, "mcpgate_rate_limit_rejections_total");
    assert_eq!(limited.len(), 4, "{limited:#?}");
    assert!(
        limited.contains(&r#"mcpgate_rate_limit_rejections_total{client="_other",server="u"} 5"#)
    );
    assert!(
        limited.contains(&r#"mcpgate_rate_limit_rejections_total{client="client0",server="u"} 1"#)
    );
    let denials = series(&text, "mcpgate_policy_denials_total");
    assert!(
        denials.contains(
            &r#"mcpgate_policy_denials_total{client="_other",server="u",tool="listed_b"} 5"#
        ),
        "{denials:#?}"
    );
    assert_eq!(denials.len(), 4, "{denials:#?}");
}

fn read_records(path: &std::path::Path, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= want || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_gateway_refusals_batches_and_redacted_bodies() {
    let up = listing_upstream().await;
    let dir = std::env::temp_dir().join(format!("mcpgate-audit-it-{}", std::process::id()));
    let path = dir.join("audit.jsonl");
    let gw = gateway(&format!(
        "upstreams:\n  u:\n    url: {}\n\
         observability:\n  audit:\n    sink: file\n    path: {}\n    log_bodies: true\n",
        up.url(),
        path.display()
    ))
    .await;
    let url = gw.url("u");
    // 1. A JSON response: its body is logged, secrets redacted.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "listed_a", "arguments": {"password": "hunter2", "q": "x"}}});
    assert_eq!(post(&url, &call, None).await.status(), 200);
    // 2. A modern request whose Mcp-Name header lies: refused by the gateway itself.
    let modern = modern_call(2, "listed_a");
    let lie = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "other"),
    ];
    assert_eq!(post_with(&url, &modern, &lie).await.status(), 400);
    // 3. A batch (legacy 2025-03-26).
    let batch =
        json!([legacy_call(3, "listed_a"), {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}]);
    assert_eq!(post(&url, &batch, None).await.status(), 200);
    // 4. A session id nobody issued.
    assert_eq!(
        post(&url, &legacy_call(5, "listed_a"), Some("mg1.bogus"))
            .await
            .status(),
        404
    );

    let records = read_records(&path, 4);
    assert_eq!(records.len(), 4, "{records:#?}");
    let ok = &records[0];
    assert_eq!(ok["decision"], "forwarded");
    assert_eq!(ok["tool"], "listed_a");
    assert_eq!(ok["jsonrpc_id"], "1");
    assert_eq!(
        ok["request_body"]["params"]["arguments"]["password"],
        "[REDACTED]"
    );
    assert_eq!(ok["request_body"]["params"]["arguments"]["q"], "x");
    assert_eq!(ok["response_body"]["result"]["token"], "[REDACTED]");
    assert_eq!(ok["response_body"]["result"]["content"][0]["text"], "ok");
    let lied = &records[1];
    assert_eq!(lied["decision"], "invalid");
    assert_eq!(lied["stage"], "gateway");
    assert_eq!(lied["era"], "2026-07-28");
    assert_eq!(lied["status"], 400);
    assert_eq!(lied["error_code"], -32020);
    let b = &records[2];
    assert_eq!(b["method"], "batch");
    assert_eq!(
        b["calls"],
        json!([{"method": "tools/call", "target": "listed_a"}, {"method": "tools/list"}])
    );
    let lost = &records[3];
    assert_eq!(lost["decision"], "session_not_found");
    assert_eq!(lost["status"], 404);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("tok-123456789"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
