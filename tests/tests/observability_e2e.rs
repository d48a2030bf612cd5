//! The three signals through the real binary, after real SDK traffic: the Python SDK client
//! calls the Python demo server through auth, rate limit, policy and the arg-guard plugin
//! (allowed, denied, plugin-rejected, limited and unauthenticated calls); then `/metrics` is read
//! with the Prometheus project's own text parser, the audit file is parsed record by record, and
//! the spans the gateway exported reach an OTLP/HTTP receiver run by this test, children of the
//! client's `traceparent`.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpgate_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;

const KEY: &str = "obs-alice-key-5f2c9d8e71";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: stores every POSTed `/v1/traces` body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    _runtime: tokio::runtime::Runtime,
}

fn start_receiver() -> Receiver {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let store = bodies.clone();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/v1/traces"),
        bodies,
        _runtime: runtime,
    }
}

impl Receiver {
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let req = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push((service.clone(), span));
                    }
                }
            }
        }
        out
    }
}

fn text(v: &Any) -> Option<String> {
    match v {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn set(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn metrics_audit_and_spans_after_real_sdk_traffic() {
    let plugins = repo().join("plugins");
    assert!(
        plugins.join("arg_guard.wasm").exists(),
        "plugins/arg_guard.wasm is missing: run scripts/build-plugins.sh (scripts/test.sh does)"
    );
    let (_server, upstream) = start_demo_server();
    let receiver = start_receiver();
    let dir = TempDir::new("obs");
    let audit = dir.0.join("audit/requests.jsonl");
    let config = dir.file(
        "mcpgate.yaml",
        &format!(
            "\
auth:
  type: api-key
  header: X-API-Key
  keys:
    - {{id: alice, key_env: OBS_ALICE_KEY}}
rate_limit:
  tools:
    echo: {{capacity: 3, refill_rate: 0.001}}
policy:
  rules:
    - name: no-arithmetic
      tools: [add]
      decision: deny
      reason: arithmetic is switched off
plugin_runtime:
  dir: {plugins}
plugins:
  guard:
    file: arg_guard.wasm
    config:
      tools:
        echo:
          arguments:
            text: {{type: string, max_length: 40}}
pipeline: [auth, rate_limit, policy, guard]
upstreams:
  obs:
    url: {upstream}
  down:
    url: http://127.0.0.1:9/mcp
observability:
  metrics:
    path: /metrics
  audit:
    sink: file
    path: {audit}
    log_bodies: true
  tracing:
    otlp_endpoint: {otlp}
    service_name: mcpgate-e2e
",
            plugins = plugins.display(),
            audit = audit.display(),
            otlp = receiver.url,
        ),
    );
    let (mut gw, base) = start_gateway(&config, &[("OBS_ALICE_KEY", KEY)]);
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let out = run_client(
        "py_obs_client.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_obs_client.py"))
            .arg(format!("{base}/servers/obs/mcp"))
            .args(["legacy", KEY, &traceparent]),
        Duration::from_secs(120),
    );

    // What the client saw: each kind of call happened.
    // The policy hides the denied tool from the list.
    assert_eq!(
        out["tools"],
        serde_json::json!(["echo", "slow_count", "whoami"]),
        "{out}"
    );
    assert_eq!(
        out["allowed"],
        serde_json::json!(["one", "two", "three"]),
        "{out}"
    );
    let denied = out["denied"].as_str().unwrap();
    assert!(
        denied.contains("denied by policy rule no-arithmetic"),
        "{denied}"
    );
    let rejected = out["plugin_rejected"].as_str().unwrap();
    assert!(rejected.starts_with("raised"), "{rejected}");
    let limited = out["limited"].as_str().unwrap();
    assert!(limited.contains("rate limit exceeded"), "{limited}");
    assert!(
        out["anonymous"]
            .as_str()
            .unwrap()
            .contains("authentication required"),
        "{out}"
    );

    // One call to an upstream that is down (connection refused): 502, counted by kind.
    let status = raw_post(
        &base,
        "/servers/down/mcp",
        &[("x-api-key", KEY)],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .status;
    assert_eq!(status, 502);

    // ---- metrics, read by the Prometheus project's parser ---------------------------------
    let m = scrape(&format!("{base}/metrics"));
    assert!(
        m.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        m.content_type
    );
    for (family, kind, labels) in [
        (
            "mcpgate_requests",
            "counter",
            &["server", "method", "status"][..],
        ),
        (
            "mcpgate_request_duration_seconds",
            "histogram",
            &["server", "method"],
        ),
        ("mcpgate_active_sessions", "gauge", &["server"]),
        ("mcpgate_tool_calls", "counter", &["server", "tool"]),
        (
            "mcpgate_rate_limit_rejections",
            "counter",
            &["client", "server"],
        ),
        (
            "mcpgate_policy_denials",
            "counter",
            &["client", "server", "tool"],
        ),
        (
            "mcpgate_upstream_response_seconds",
            "histogram",
            &["server"],
        ),
        (
            "mcpgate_plugin_calls",
            "counter",
            &["plugin", "hook", "outcome"],
        ),
        ("mcpgate_build_info", "gauge", &["version"]),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
        let sample = match kind {
            "counter" => format!("{family}_total"),
            "histogram" => format!("{family}_count"),
            _ => family.to_string(),
        };
        assert_eq!(m.label_names(&sample), set(labels), "labels of {sample}");
    }
    let obs = ("server", "obs");
    let calls = [obs, ("method", "tools/call")];
    assert_eq!(m.value("mcpgate_requests_total", &calls), 6.0);
    assert_eq!(
        m.value(
            "mcpgate_requests_total",
            &[obs, ("method", "tools/call"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(
        m.value("mcpgate_request_duration_seconds_count", &calls),
        6.0
    );
    assert!(m.value("mcpgate_request_duration_seconds_sum", &calls) > 0.0);
    assert_eq!(
        m.value(
            "mcpgate_requests_total",
            &[obs, ("method", "tools/list"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "mcpgate_requests_total",
            &[obs, ("method", "initialize"), ("status", "200")]
        ),
        1.0
    );
    assert!(
        m.value(
            "mcpgate_requests_total",
            &[obs, ("method", "initialize"), ("status", "401")]
        ) >= 1.0
    );
    // Only the three allowed echoes reached the upstream as tool calls.
    assert_eq!(
        m.value("mcpgate_tool_calls_total", &[obs, ("tool", "echo")]),
        3.0
    );
    assert_eq!(
        m.value("mcpgate_tool_calls_total", &[obs, ("tool", "add")]),
        0.0
    );
    assert_eq!(
        m.value(
            "mcpgate_rate_limit_rejections_total",
            &[obs, ("client", "alice")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "mcpgate_policy_denials_total",
            &[obs, ("client", "alice"), ("tool", "add")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "mcpgate_plugin_calls_total",
            &[
                ("plugin", "guard"),
                ("hook", "request"),
                ("outcome", "reject")
            ]
        ),
        1.0
    );
    // arg-guard registers for tools/call only: the three allowed echoes went on.
    assert_eq!(
        m.value(
            "mcpgate_plugin_calls_total",
            &[
                ("plugin", "guard"),
                ("hook", "request"),
                ("outcome", "continue")
            ]
        ),
        3.0
    );
    assert!(m.value("mcpgate_upstream_response_seconds_count", &[obs]) >= 6.0);
    assert_eq!(m.value("mcpgate_build_info", &[]), 1.0);
    assert_eq!(m.value("mcpgate_audit_dropped_total", &[]), 0.0);
    assert!(
        m.samples
            .iter()
            .any(|(n, l, _)| n == "mcpgate_active_sessions"
                && l.get("server").map(String::as_str) == Some("obs"))
    );
    assert_eq!(
        m.value(
            "mcpgate_upstream_errors_total",
            &[("server", "down"), ("kind", "unavailable")]
        ),
        1.0
    );

    // The Grafana dashboard in the repo queries only series this gateway exports.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/mcpgate-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let exported: HashSet<&str> = m.samples.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                queried += 1;
                assert!(
                    exported.contains(name.as_str()),
                    "panel `{}` queries `{name}`, which /metrics does not export",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 16, "{queried}");

    // ---- the audit log: one record per request, matched to the calls ----------------------
    let records: Vec<Value> = wait_for_records(&audit, |r| {
        r.iter().any(|v| v["decision"] == "rate_limited")
            && r.iter().any(|v| v["decision"] == "auth_failed")
    });
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains(KEY),
        "the API key reached the audit log:\n{text}"
    );
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), records.len(), "request ids are unique");
    let tool_records = |decision: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["method"] == "tools/call" && r["decision"] == decision)
            .collect()
    };
    let forwarded = tool_records("forwarded");
    assert_eq!(forwarded.len(), 3, "{records:#?}");
    for r in &forwarded {
        assert_eq!(r["caller"], "alice");
        assert_eq!(r["server"], "obs");
        assert_eq!(r["tool"], "echo");
        assert_eq!(r["upstream_status"], 200);
        assert_eq!(r["era"], "legacy");
        assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
        assert!(r["session"].is_string(), "{r}");
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["request_body"]["params"]["name"], "echo");
    }
    let denied = tool_records("denied");
    assert_eq!(denied.len(), 1, "{records:#?}");
    assert_eq!(denied[0]["stage"], "policy");
    assert_eq!(denied[0]["rule"], "no-arithmetic");
    assert_eq!(denied[0]["tool"], "add");
    assert_eq!(denied[0]["error_code"], -32007);
    assert!(denied[0]["upstream_status"].is_null());
    let rejected = tool_records("plugin_rejected");
    assert_eq!(rejected.len(), 1, "{records:#?}");
    assert_eq!(rejected[0]["stage"], "plugin:guard");
    let argument = rejected[0]["request_body"]["params"]["arguments"]["text"]
        .as_str()
        .unwrap();
    assert!(argument.starts_with("[REDACTED] xxx"), "{argument}");
    let limited = tool_records("rate_limited");
    assert_eq!(limited.len(), 1, "{records:#?}");
    assert_eq!(limited[0]["stage"], "rate_limit");
    assert_eq!(limited[0]["status"], 429);
    let unauthenticated: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "auth_failed")
        .collect();
    assert!(!unauthenticated.is_empty());
    for r in unauthenticated {
        assert_eq!(r["stage"], "auth");
        assert_eq!(r["status"], 401);
        assert!(r["caller"].is_null());
    }

    // ---- spans: SIGTERM makes the gateway flush what it batched ---------------------------
    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        gw.wait(Duration::from_secs(30)).is_some(),
        "mcpgate exits after SIGTERM"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.spans();
        if spans.iter().any(|(_, s)| s.name == "mcp.upstream") || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(spans.iter().all(|(service, _)| service == "mcpgate-e2e"));
    let requests: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "mcp.request" && hex(&s.trace_id) == TRACE_ID)
        .collect();
    // initialize, initialized, tools/list, six calls, the GET stream and the DELETE at least.
    assert!(
        requests.len() >= 9,
        "{} request spans: {spans:#?}",
        requests.len()
    );
    for s in &requests {
        assert_eq!(hex(&s.parent_span_id), CLIENT_SPAN, "parent of {s:?}");
        assert_eq!(attr(s, "server").as_deref(), Some("obs"));
        assert!(attr(s, "request_id").is_some_and(|id| ids.contains(id.as_str())));
    }
    let denied_span = requests
        .iter()
        .find(|s| attr(s, "decision").as_deref() == Some("denied"))
        .expect("a span for the denied call");
    assert_eq!(attr(denied_span, "tool").as_deref(), Some("add"));
    assert_eq!(attr(denied_span, "stage").as_deref(), Some("policy"));
    // The upstream leg of each forwarded request is a child of its request span.
    let request_ids: HashSet<String> = requests.iter().map(|s| hex(&s.span_id)).collect();
    let upstream_legs: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "mcp.upstream" && hex(&s.trace_id) == TRACE_ID)
        .collect();
    assert!(upstream_legs.len() >= 5, "{spans:#?}");
    for s in upstream_legs {
        assert!(request_ids.contains(&hex(&s.parent_span_id)), "{s:?}");
    }
    // The anonymous client sent no traceparent: its requests start traces of their own.
    assert!(spans.iter().any(|(_, s)| s.name == "mcp.request"
        && hex(&s.trace_id) != TRACE_ID
        && s.parent_span_id.is_empty()));
}

/// The metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("mcpgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Reads the audit file until `done` holds for its records (the writer flushes each batch).
fn wait_for_records(path: &std::path::Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if done(&records) || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_records_go_to_stdout_as_json_lines() {
    let dir = TempDir::new("obs-stdout");
    let config = dir.file(
        "mcpgate.yaml",
        "upstreams:\n  down:\n    url: http://127.0.0.1:9/mcp\nobservability:\n  audit:\n    sink: stdout\n",
    );
    let (mut gw, base) = start_gateway(&config, &[]);
    let status = raw_post(
        &base,
        "/servers/down/mcp",
        &[("x-request-id", "audit-to-stdout-1")],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
    )
    .status;
    assert_eq!(status, 502);
    let line = gw.wait_for(
        r#""request_id":"audit-to-stdout-1""#,
        Duration::from_secs(30),
    );
    let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(record["decision"], "upstream_unavailable");
    assert_eq!(record["server"], "down");
    assert_eq!(record["tool"], "t");
    assert_eq!(record["status"], 502);
    assert_eq!(record["jsonrpc_id"], "7");
    assert!(
        record.get("request_body").is_none(),
        "bodies only with log_bodies"
    );
}

/// Issue item 18: a client's sampled `traceparent` does not override `sample_ratio` unless the
/// operator says so (`honor_client_sampling`): with a ratio of 0, a client asking for its trace
/// gets no span exported, and gets them with the option on.
#[test]
fn a_clients_sampled_flag_is_obeyed_only_when_configured() {
    let receiver = start_receiver();
    let dir = TempDir::new("obs-sampling");
    for honor in [false, true] {
        let config = dir.file(
            &format!("gw-{honor}.yaml"),
            &format!(
                "upstreams:\n  down:\n    url: http://127.0.0.1:9/mcp\nobservability:\n  tracing:\n    otlp_endpoint: {}\n    sample_ratio: 0.0\n    honor_client_sampling: {honor}\n",
                receiver.url
            ),
        );
        let (mut gw, base) = start_gateway(&config, &[]);
        let trace_id = if honor {
            "11111111111111111111111111111111"
        } else {
            "22222222222222222222222222222222"
        };
        let traceparent = format!("00-{trace_id}-{CLIENT_SPAN}-01");
        let status = raw_post(
            &base,
            "/servers/down/mcp",
            &[("traceparent", &traceparent)],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .status;
        assert_eq!(status, 502);
        // SIGTERM flushes what was batched.
        Command::new("kill")
            .args(["-TERM", &gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(gw.wait(Duration::from_secs(30)).is_some());
        let exported = receiver
            .spans()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .count();
        if honor {
            assert!(exported >= 1, "honored: the client's trace is exported");
        } else {
            assert_eq!(
                exported, 0,
                "a client cannot make a sample_ratio of 0 export"
            );
        }
    }
}
