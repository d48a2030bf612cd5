//! Faults injected around the real binary: an upstream that resets, stalls or sends garbage, a
//! client that goes away mid-stream. Each test asserts what the client sees, what the metrics
//! record, and that nothing leaks (file descriptors and streams back to where they were).

use std::process::Command;
use std::time::{Duration, Instant};

use mcpgate_e2e::*;
use serde_json::{Value, json};

/// The gateway's open file descriptors.
fn open_fds(gw: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until `done` holds for the gateway's metrics (or 20 s pass); returns the last scrape.
fn metrics_until(base: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(base, "/metrics");
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const FAULTS: &[&str] = &[
    "reset_before_headers",
    "reset_mid_sse",
    "reset_mid_json",
    "stall_after_headers",
    "malformed_sse",
    "invalid_json",
    "wrong_content_type",
];

/// An upstream that breaks in every way it can: each call ends promptly with what the client
/// can tell from it (a 502 with its id before any answer began, a cut stream after), the
/// breakage is counted by kind, no Python SDK client is left hanging, the gateway serves on,
/// and it holds no more descriptors or streams afterwards than before.
#[test]
fn an_upstream_that_breaks_costs_only_its_own_calls() {
    let (_upstream, url) = raw_upstream(&[]);
    let (gw, base, _dir) = gateway_from(
        "faults",
        &format!(
            "upstreams:\n  raw:\n    url: {url}/mcp\n    stream_idle_timeout: 500\nobservability:\n  metrics: {{path: /metrics}}\n"
        ),
        &[],
    );
    let client = Client::new(&base, "raw", MODERN);
    // Warm up (the upstream pool's first connection), then take the baseline.
    assert!(
        client
            .answer("0", "prompts/list", json!({}))
            .contains(r#""p""#)
    );
    let baseline = open_fds(&gw);
    let tasks = || metric(&get(&base, "/metrics"), "mcpgate_runtime_tasks");
    let tasks_before = tasks();
    assert!(tasks_before >= 1.0, "the task gauge reads the runtimes");

    let call = |fault: &str| {
        let started = Instant::now();
        let r = client.send("7", "tools/call", json!({"name": fault, "arguments": {}}));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{fault}: the client waited {:?}",
            started.elapsed()
        );
        r
    };
    let r = call("reset_before_headers");
    assert_eq!(r.status, 502, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (&v["id"], &v["error"]["code"]),
        (&json!(7), &json!(-32010)),
        "{v}"
    );

    let r = call("reset_mid_sse");
    assert_eq!(r.status, 200);
    let messages = r.messages();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("notifications/progress")),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains(r#""result""#)),
        "{messages:?}"
    );

    let r = call("reset_mid_json");
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 1000, "the body was cut: {:?}", r.body);

    let r = call("stall_after_headers");
    assert_eq!(r.status, 200);
    assert!(r.messages().is_empty(), "{:?}", r.messages());

    // Garbage an upstream sends on a path nothing inspects reaches the client as sent.
    let r = call("malformed_sse");
    let messages = r.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], "{not json");
    assert!(
        messages[1].contains(r#""result""#) && messages[1].contains("after"),
        "{messages:?}"
    );
    let r = call("invalid_json");
    assert_eq!((r.status, r.body.as_str()), (200, "{oops"));
    let r = call("wrong_content_type");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );

    let text = metrics_until(&base, |t| {
        metric(t, r#"mcpgate_active_sse_streams{server="raw"}"#) == 0.0
    });
    let kind = |k: &str| {
        metric(
            &text,
            &format!(r#"mcpgate_upstream_errors_total{{kind="{k}",server="raw"}}"#),
        )
    };
    assert_eq!(kind("unavailable"), 1.0, "{text}");
    assert!(kind("stream_broken") >= 2.0, "{text}");
    assert_eq!(kind("stream_idle"), 1.0, "{text}");
    assert_eq!(
        metric(&text, r#"mcpgate_active_sse_streams{server="raw"}"#),
        0.0
    );

    // The Python SDK client: every faulty call ends (raised or answered), none hangs, and a new
    // session is served afterwards.
    let out = run_client(
        "py_fault_client.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_fault_client.py"))
            .arg(format!("{base}/servers/raw/mcp"))
            .args(FAULTS),
        Duration::from_secs(240),
    );
    for fault in FAULTS {
        let outcome = out["calls"][fault].as_str().unwrap_or_default();
        assert!(
            !outcome.is_empty() && outcome != "timed out",
            "{fault}: {out}"
        );
    }
    assert_eq!(out["prompts"], json!(["p"]), "{out}");

    // Nothing left open: the descriptors return to the baseline (a few pooled upstream
    // connections may come and go).
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(&gw) > baseline + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        open_fds(&gw) <= baseline + 4,
        "{} descriptors open, {baseline} before",
        open_fds(&gw)
    );
    // No task outlives its request (a pooled upstream connection has one, like a descriptor).
    while tasks() > tasks_before + 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        tasks() <= tasks_before + 4.0,
        "{} tasks alive, {tasks_before} before",
        tasks()
    );
}

/// A client that goes away mid-stream: the gateway stops reading the upstream's stream, so the
/// upstream's request ends too (its writes fail) instead of running on for nobody.
#[test]
fn a_client_that_leaves_mid_stream_cancels_the_upstream_request() {
    let (mut upstream, url) = raw_upstream(&[]);
    let (_gw, base, _dir) = gateway_from(
        "faults-leave",
        &format!("upstreams:\n  raw:\n    url: {url}/mcp\n"),
        &[],
    );
    let mut s = open_call(&base, "raw", r#""leaving""#, "slow_stream", "{}");
    // Read until the first progress event has arrived, then leave.
    first_progress(&mut s);
    drop(s);
    // The upstream would stream for 10 s; it learns well before that its reader is gone.
    let started = Instant::now();
    let line = upstream.wait_for("STREAM_END", Duration::from_secs(20));
    assert_eq!(line.trim(), "STREAM_END leaving cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// The gateway's resident memory in bytes.
fn rss(gw: &Proc) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A slow client reading a stream the upstream would make 1 GiB long: the gateway holds a
/// bounded amount (backpressure reaches the upstream, which writes only a little more than the
/// client has read), and its memory stays near where it was.
#[test]
fn a_slow_reader_of_a_huge_stream_costs_bounded_memory() {
    use std::io::Read as _;
    let (mut upstream, url) = raw_upstream(&[]);
    let (gw, base, _dir) = gateway_from(
        "faults-slow",
        &format!("upstreams:\n  raw:\n    url: {url}/mcp\n"),
        &[],
    );
    let client = Client::new(&base, "raw", MODERN);
    assert!(
        client
            .answer("0", "prompts/list", json!({}))
            .contains(r#""p""#)
    );
    let before = rss(&gw);
    let mut s = open_call(&base, "raw", "1", "firehose", "{}");
    // 64 KiB every 50 ms for 3 s: about 4 MiB read.
    let mut read = 0usize;
    let mut peak = before;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..60 {
        let mut want = buf.len();
        while want > 0 {
            let n = s.read(&mut buf[..want]).unwrap();
            assert!(n > 0, "the stream ended after {read} bytes");
            read += n;
            want -= n;
        }
        peak = peak.max(rss(&gw));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    let line = upstream.wait_for("FIREHOSE ", Duration::from_secs(30));
    let written: usize = line.trim().trim_start_matches("FIREHOSE ").parse().unwrap();
    eprintln!(
        "read {read} bytes; the upstream wrote {written}; gateway RSS {before} -> peak {peak}"
    );
    assert!(
        written < read + (96 << 20),
        "the upstream wrote {written} bytes for a client that read {read}: no backpressure"
    );
    assert!(
        peak < before + (64 << 20),
        "the gateway grew from {before} to {peak} bytes"
    );
}

/// SIGTERM under load: the requests in flight complete (each 1 s long), new connections are no
/// longer accepted (a balancer sends them elsewhere), the process exits cleanly within
/// `shutdown_timeout`, and the audit records of the drained requests are flushed.
#[test]
fn sigterm_under_load_drains_in_flight_requests_and_flushes_the_audit() {
    let (_upstream, url) = raw_upstream(&[]);
    let dir = TempDir::new("faults-term");
    let audit = dir.0.join("audit.jsonl");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  shutdown_timeout: 10000\nupstreams:\n  raw:\n    url: {url}/mcp\nobservability:\n  audit: {{sink: file, path: {}}}\n",
            audit.display()
        ),
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    let started = Instant::now();
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                Client::new(&base, "raw", MODERN).send(
                    &format!(r#""drain-{i}""#),
                    "tools/call",
                    json!({"name": "slow_answer", "arguments": {}}),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The listener goes first: a new connection is refused while the others drain.
    let deadline = Instant::now() + Duration::from_secs(5);
    let addr = base.trim_start_matches("http://").to_string();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, t) in in_flight.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "drain-{i}: {}", r.body);
        assert!(r.body.contains("slow"), "drain-{i}: {}", r.body);
    }
    let status = gw.wait(Duration::from_secs(20)).expect("the process exits");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let records = std::fs::read_to_string(&audit).unwrap();
    for i in 0..8 {
        assert!(
            records
                .lines()
                .any(|l| l.contains(&format!(r#""jsonrpc_id":"\"drain-{i}\"""#))
                    && l.contains(r#""decision":"forwarded""#)),
            "drain-{i} has its audit record:\n{records}"
        );
    }
}

/// A plugin that traps on 1 % of calls under load: the calls it traps on fail alone (500 with
/// JSON-RPC -32013), every other call succeeds, and their latency stays that of a run without
/// traps (loosely: the 99th percentile within three times it, plus 50 ms of noise).
#[test]
fn a_plugin_that_traps_now_and_then_fails_only_those_calls() {
    let (_upstream, url) = raw_upstream(&[]);
    let (_gw, base, _dir) = gateway_from(
        "faults-trap",
        &format!(
            "plugin_runtime:\n  dir: {}\nplugins:\n  misbehave:\n    file: misbehave.wasm\nupstreams:\n  raw:\n    url: {url}/mcp\nobservability:\n  metrics: {{path: /metrics}}\n",
            repo().join("plugins").display()
        ),
        &[],
    );
    // 400 calls on 8 connections; with `trap`, every 100th calls the tool the plugin panics on.
    let run = |trap: bool| -> (Vec<Duration>, usize, usize) {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let base = base.clone();
                std::thread::spawn(move || {
                    let client = Client::new(&base, "raw", MODERN);
                    let mut out = Vec::new();
                    for i in 0..50 {
                        let n = w * 50 + i;
                        let tool = if trap && n % 100 == 0 {
                            "panic"
                        } else {
                            "echo"
                        };
                        let started = Instant::now();
                        let r = client.send(
                            &n.to_string(),
                            "tools/call",
                            json!({"name": tool, "arguments": {}}),
                        );
                        out.push((tool, r.status, r.body, started.elapsed()));
                    }
                    out
                })
            })
            .collect();
        let mut ok = Vec::new();
        let mut trapped = 0;
        let mut failed = 0;
        for w in workers {
            for (tool, status, body, took) in w.join().unwrap() {
                match (tool, status) {
                    ("echo", 200) => ok.push(took),
                    ("panic", 500) if body.contains("-32013") => trapped += 1,
                    _ => failed += 1,
                }
            }
        }
        ok.sort();
        (ok, trapped, failed)
    };
    let (calm, _, calm_failed) = run(false);
    let (stormy, trapped, failed) = run(true);
    assert_eq!((calm.len(), calm_failed), (400, 0));
    assert_eq!((stormy.len(), trapped, failed), (396, 4, 0));
    let p99 = |v: &[Duration]| v[v.len() * 99 / 100];
    eprintln!(
        "p99 without traps {:?}, with {:?}",
        p99(&calm),
        p99(&stormy)
    );
    assert!(
        p99(&stormy) < p99(&calm) * 3 + Duration::from_millis(50),
        "p99 without traps {:?}, with {:?}",
        p99(&calm),
        p99(&stormy)
    );
    let metrics = get(&base, "/metrics");
    assert!(
        metrics.contains(
            r#"mcpgate_plugin_calls_total{hook="request",outcome="trap",plugin="misbehave"} 4"#
        ),
        "{metrics}"
    );
}

/// One of two replicas killed mid-stream behind a balancer: the legacy SDK client, cut off,
/// resumes with GET + `Last-Event-ID`; the balancer sends that to the other replica, which
/// opens the same session (one key), and the call completes with every step.
/// Reads `s` until the first progress event of a streamed call has arrived; returns what came.
fn first_progress(s: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The replica behind `lb` that the latest `tools/call` went to.
fn last_call_backend(lb: &mcpgate_e2e::services::Balancer) -> String {
    lb.hits()
        .into_iter()
        .rev()
        .find(|h| h.rpc.as_deref() == Some("tools/call"))
        .expect("the call went through the balancer")
        .backend
}

/// SIGKILLs the replica (`a` or `b` behind `lb`) that carries the latest `tools/call`; returns
/// its name.
fn kill_the_carrier(lb: &mcpgate_e2e::services::Balancer, a: &mut Proc, b: &mut Proc) -> String {
    let carrier = last_call_backend(lb);
    let victim = if carrier == "a" { a } else { b };
    Command::new("kill")
        .args(["-KILL", &victim.pid().to_string()])
        .status()
        .unwrap();
    assert!(victim.wait(Duration::from_secs(10)).is_some());
    carrier
}

/// The stateless era has no stream to resume: a replica killed under a modern call's SSE answer
/// ends that answer without its result, and the client's retry (the same request, through the
/// same balancer) is served by the other replica and completes.
#[test]
fn a_replica_killed_mid_stream_leaves_a_modern_retry_to_the_other() {
    let (_upstream, url) = raw_upstream(&[]);
    let yaml = format!("upstreams:\n  r:\n    url: {url}/mcp\n");
    let (mut a, base_a, _da) = gateway_from("faults-ma", &yaml, &[]);
    let (mut b, base_b, _db) = gateway_from("faults-mb", &yaml, &[]);
    let lb = mcpgate_e2e::services::Balancer::start(&[("a", &base_a), ("b", &base_b)]);
    let mut s = open_call(&lb.url, "r", "1", "slow_stream", "{}");
    let seen = first_progress(&mut s);
    let carrier = kill_the_carrier(&lb, &mut a, &mut b);
    // The broken answer ends without a result (the client must retry).
    let rest = read_until_closed(&mut s).unwrap_or_else(|partial| partial);
    let first = format!("{seen}{rest}");
    assert!(!first.contains("\"result\""), "{first}");
    let retry = Client::new(&lb.url, "r", MODERN).send(
        "2",
        "tools/call",
        json!({"name": "slow_stream", "arguments": {}}),
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert!(retry.body.contains("\"result\""), "{}", retry.body);
    assert_ne!(
        last_call_backend(&lb),
        carrier,
        "the retry went to the surviving replica"
    );
}

#[test]
fn a_replica_killed_mid_stream_leaves_the_call_to_the_other() {
    let (_server, url) = hostile_server(&["--resumable"]);
    let key = {
        let (ok, out, _) = run_mcpgate(&["gen-key"], &[]);
        assert!(ok);
        out.trim().to_string()
    };
    let yaml = format!("sessions:\n  key: {key}\nupstreams:\n  r:\n    url: {url}\n");
    let (mut a, base_a, _da) = gateway_from("faults-a", &yaml, &[]);
    let (mut b, base_b, _db) = gateway_from("faults-b", &yaml, &[]);
    let lb = mcpgate_e2e::services::Balancer::start(&[("a", &base_a), ("b", &base_b)]);
    let mut client = Proc::spawn(
        "py_failover_client.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_failover_client.py"))
            .arg(format!("{}/servers/r/mcp", lb.url)),
    );
    client.wait_for("STARTED", Duration::from_secs(60));
    // Kill the replica carrying the tool's stream, mid-call.
    let carrier = kill_the_carrier(&lb, &mut a, &mut b);
    let out = finish_client(client, Duration::from_secs(90));
    assert_eq!(out["result"], "counted to 30", "{out}");
    let steps = out["progress"].as_array().unwrap();
    assert_eq!(steps.last(), Some(&json!(30.0)), "{out}");
    let resumed = lb
        .hits()
        .into_iter()
        .any(|h| h.method == "GET" && h.backend != carrier && h.status == 200);
    assert!(
        resumed,
        "the client resumed on the other replica: {:?}",
        lb.hits()
    );
}

/// A quiet SSE stream gets a keep-alive comment now and then (`server.sse_keepalive`), so a load
/// balancer in between does not reap it, but only between events: the upstream's quiet in the
/// middle of an event gets none, and the client's SDK-style reading of the stream is unchanged.
/// Without the setting, nothing is added.
#[test]
fn quiet_streams_get_keep_alive_comments_between_events_only() {
    let (_upstream, url) = raw_upstream(&[]);
    for (server, keepalive) in [("server:\n  sse_keepalive: 150\n", true), ("", false)] {
        let (_gw, base, _dir) = gateway_from(
            "keepalive",
            &format!("{server}upstreams:\n  raw:\n    url: {url}/mcp\n"),
            &[],
        );
        let client = Client::new(&base, "raw", MODERN);
        let r = client.send(
            "5",
            "tools/call",
            json!({"name": "quiet_stream", "arguments": {}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let events: Vec<&str> = r
            .body
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .collect();
        for event in &events {
            assert!(
                *event == ": keep-alive"
                    || (event.starts_with("data: {") && !event.contains("keep-alive")),
                "a comment inside an event, or a stray line: {event:?} in {:?}",
                r.body
            );
        }
        let comments = events.iter().filter(|e| **e == ": keep-alive").count();
        if keepalive {
            assert!(
                comments >= 1,
                "0.8 s of quiet between events, no comment: {:?}",
                r.body
            );
        } else {
            assert_eq!(comments, 0, "{:?}", r.body);
        }
        let messages = r.messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        let result: Value = serde_json::from_str(&messages[1]).unwrap();
        assert_eq!(
            (&result["id"], &result["result"]["content"][0]["text"]),
            (&json!(5), &json!("done")),
            "{result}"
        );
    }
}
