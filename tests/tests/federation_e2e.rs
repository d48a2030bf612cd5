//! Federated routes through the real binary: one route serving several members (Python SDK
//! servers over HTTP and stdio, server-everything, hostile raw upstreams) to real SDK clients of
//! both eras: merged lists with prefixed names, calls routed by prefix, progress, sampling and
//! elicitation round trips (2026-07-28: `input_required` retries), resources, prompts and
//! completions routed to their member, failures naming the prefixed tool, merged GET streams, a
//! policy on prefixed names, a member that is down or past the route's bounds, collisions
//! refused by `validate` (offline, and `--members` asking them), catalog caching.

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::{Value, json};

fn federated_config(alpha_url: &str, extra: &str) -> String {
    let python = python();
    let demo = repo().join("examples/demo_server.py");
    format!(
        r#"server:
  port: 0
observability:
  metrics: {{path: /metrics}}
upstreams:
  alpha:
    url: {alpha_url}
  beta:
    type: stdio
    command: "{python}"
    args: ["{demo}", "--stdio"]
  team:
    members: [alpha, beta]
{extra}"#,
        python = python.display(),
        demo = demo.display(),
    )
}

/// The demo server's tools as member `alpha` of a federated route serves them.
const ALPHA_TOOLS: [&str; 4] = [
    "alpha_echo",
    "alpha_add",
    "alpha_slow_count",
    "alpha_whoami",
];

/// The tool names of a `tools/list` answer, in order.
fn tool_names(listed: &Value) -> Vec<&str> {
    listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn python_sdk_clients_of_both_eras_use_a_federated_route() {
    let (_alpha, alpha_url) = start_demo_server();
    let dir = TempDir::new("fed-py");
    let policy = "policy:\n  default: allow\n  rules:\n    - name: no-alpha-whoami\n      tools: [alpha_whoami]\n      decision: deny\n";
    let cfg = dir.file("gw.yaml", &federated_config(&alpha_url, policy));
    let (_gw, base) = start_gateway(&cfg, &[]);
    let url = format!("{base}/servers/team/mcp");
    for (mode, version) in [("legacy", LEGACY), ("2026-07-28", MODERN)] {
        for prefix in ["alpha_", "beta_"] {
            let out = run_client(
                &format!("py_client {mode} {prefix}"),
                Command::new(python())
                    .arg(repo().join("tests/e2e/py_client.py"))
                    .args([&url, mode, prefix]),
                Duration::from_secs(120),
            );
            assert_eq!(out["protocol_version"], version, "{out}");
            let tools = names(&out["tools"]);
            for t in [
                "alpha_echo",
                "alpha_add",
                "alpha_slow_count",
                "beta_echo",
                "beta_whoami",
            ] {
                assert!(tools.contains(&t.to_string()), "{t} missing: {out}");
            }
            // The policy judges the client-facing name: the denied tool is not even listed.
            assert!(!tools.contains(&"alpha_whoami".to_string()), "{out}");
            assert_eq!(tools.len(), 7, "{out}");
            assert_eq!(out["echo"], "héllo through the gateway", "{out}");
            assert_eq!(out["add"], "42", "{out}");
            assert_eq!(out["slow"]["text"], "counted to 3", "{out}");
            assert_eq!(
                out["slow"]["progress"].as_array().unwrap().len(),
                3,
                "{out}"
            );
            assert_eq!(out["unknown_tool_is_error"], true, "{out}");
        }
    }
    // The denied prefixed tool is refused when called anyway.
    let c = Client::new(&base, "team", MODERN);
    let r = c.send(
        "9",
        "tools/call",
        json!({"name": "alpha_whoami", "arguments": {}}),
    );
    assert!(r.body.contains("-32007"), "{}", r.body);
    // A name with no member's prefix.
    let r = c.send(
        "10",
        "tools/call",
        json!({"name": "gamma_echo", "arguments": {}}),
    );
    assert!(r.body.contains("names no member's tool"), "{}", r.body);
}

#[test]
fn progress_and_sampling_round_trips_cross_a_federated_route() {
    let (_everything, upstream) = start_everything();
    let (_alpha, alpha_url) = start_demo_server();
    let dir = TempDir::new("fed-ts");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nupstreams:\n  everything:\n    url: {upstream}\n  alpha:\n    url: {alpha_url}\n  team:\n    members: [alpha, {{name: everything, prefix: \"ev.\"}}]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let out = run_client(
        "ts_client through a federated route",
        Command::new("node")
            .arg(repo().join("tests/e2e/ts_client.mjs"))
            .arg(format!("{base}/servers/team/mcp"))
            .arg("ev.")
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(120),
    );
    let tools = names(&out["tools"]);
    assert!(tools.contains(&"ev.echo".to_string()), "{out}");
    assert!(tools.contains(&"alpha_echo".to_string()), "{out}");
    // The member's sampling requests reached the client under remapped ids, and the client's
    // answers reached the member: twice.
    assert_everything_session(&out);
}

#[test]
fn a_member_that_is_down_is_left_out_not_fatal() {
    let (_alpha, alpha_url) = start_demo_server();
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let dir = TempDir::new("fed-down");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  alpha:\n    url: {alpha_url}\n  dead:\n    url: {dead}\n    timeout: 2000\n  team:\n    members: [alpha, dead]\n"
        ),
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    for (mode, version) in [("legacy", LEGACY), ("2026-07-28", MODERN)] {
        let out = run_client(
            &format!("py_client {mode} with a member down"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_client.py"))
                .args([&format!("{base}/servers/team/mcp"), mode, "alpha_"]),
            Duration::from_secs(120),
        );
        assert_eq!(out["protocol_version"], version, "{out}");
        assert_eq!(
            names(&out["tools"]),
            [
                "alpha_add",
                "alpha_echo",
                "alpha_slow_count",
                "alpha_whoami"
            ],
            "{out}"
        );
        assert_eq!(out["add"], "42", "{out}");
    }
    let failures = metric(
        &get(&base, "/metrics"),
        "mcpgate_federation_member_failures_total{member=\"dead\",route=\"team\"}",
    );
    assert!(failures >= 2.0, "{failures}");
    gw.wait_for(
        "a member of a federated route was left out",
        Duration::from_secs(5),
    );
}

#[test]
fn validate_refuses_members_whose_names_would_collide() {
    let dir = TempDir::new("fed-validate");
    let cfg = dir.file(
        "gw.yaml",
        "upstreams:\n  a: {url: \"http://127.0.0.1:1/mcp\"}\n  b: {url: \"http://127.0.0.1:2/mcp\"}\n  team:\n    members: [a, b]\n    prefix: \"x_\"\n",
    );
    let (ok, _out, err) = run_mcpgate(&["validate", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!ok, "{err}");
    assert!(err.contains("upstreams.team.members[1]"), "{err}");
    assert!(
        err.contains("`b` and `a` both get the prefix `x_`"),
        "{err}"
    );
    assert!(
        err.contains(":5:") || err.contains(":4:"),
        "the line is named: {err}"
    );
}

#[test]
fn subscription_streams_of_members_merge_into_one() {
    let (_alpha, alpha_url) = start_demo_server();
    let (_gamma, gamma_url) = start_demo_server();
    let dir = TempDir::new("fed-listen");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nupstreams:\n  alpha:\n    url: {alpha_url}\n  gamma:\n    url: {gamma_url}\n  team:\n    members: [alpha, gamma]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"listen-1","method":"subscriptions/listen","params":{{"notifications":{{"toolsListChanged":true}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let mut s = connect(&base);
    std::io::Write::write_all(
        &mut s,
        format!(
            "POST /servers/team/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // Both members (HTTP servers) acknowledge; the client hears it once, and the stream stays
    // open while theirs are.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(
        seen.matches("notifications/subscriptions/acknowledged")
            .count(),
        1,
        "{seen}"
    );
    assert!(!seen.contains("\"resultType\":\"complete\""), "{seen}");
}

#[test]
fn a_hostile_member_costs_only_its_own_entries() {
    let (_alpha, alpha_url) = start_demo_server();
    // tools/list: an SSE event that never ends; resources/list: 1 MiB of JSON.
    let (_evil, evil_base) = raw_upstream(&[]);
    let evil_url = format!("{evil_base}/mcp");
    let dir = TempDir::new("fed-hostile");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  alpha:\n    url: {alpha_url}\n  evil:\n    url: {evil_url}\n    timeout: 2000\n  team:\n    members: [alpha, evil]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let c = Client::new(&base, "team", LEGACY);
    let started = std::time::Instant::now();
    let listed = c.answer("1", "tools/list", json!({}));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(tool_names(&listed), ALPHA_TOOLS, "{listed}");
    // Bounded by the hostile member's own timeout, not by its endless event.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let failures = metric(
        &get(&base, "/metrics"),
        "mcpgate_federation_member_failures_total{member=\"evil\",route=\"team\"}",
    );
    assert!(failures >= 1.0, "{failures}");
    // Its broken answers reach only the calls that asked for them; the other member serves on.
    let broken = c.send(
        "2",
        "tools/call",
        json!({"name": "evil_reset_before_headers", "arguments": {}}),
    );
    assert!(broken.body.contains("-32010"), "{}", broken.body);
    let sum = c.answer(
        "3",
        "tools/call",
        json!({"name": "alpha_add", "arguments": {"a": 40, "b": 2}}),
    );
    assert!(sum.contains("42"), "{sum}");
}

fn counting_server(flags: &[&str]) -> (Proc, String) {
    let (p, base) = start_ported(
        "counting_server.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/counting_server.py"))
            .args(flags)
            .env("PYTHONUNBUFFERED", "1"),
    );
    (p, format!("{base}/mcp"))
}

/// Waits until the catalog check the gateway runs at start has ended for `route`.
fn wait_checked(base: &str, route: &str) {
    let series = format!("mcpgate_federation_name_collisions{{route=\"{route}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !get(base, "/metrics").contains(&series) {
        assert!(
            std::time::Instant::now() < deadline,
            "no catalog check for {route}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many tools/list requests a counting member has served (asked through the route).
fn served_lists(c: &Client, id: &str, tool: &str) -> u64 {
    let answer = c.answer(id, "tools/call", json!({"name": tool, "arguments": {}}));
    let v: Value = serde_json::from_str(&answer).unwrap();
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn member_catalogs_are_cached_as_their_scope_and_ttl_allow() {
    let (_public, public_url) = counting_server(&["--ttl", "60000", "--scope", "public"]);
    let (_private, private_url) = counting_server(&["--ttl", "60000", "--scope", "private"]);
    let (_legacy, legacy_url) = counting_server(&[]);
    let dir = TempDir::new("fed-cache");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  pub:\n    url: {public_url}\n  priv:\n    url: {private_url}\n  old:\n    url: {legacy_url}\n  modern:\n    members: [pub, priv]\n  cached:\n    members: [old]\n    catalog_ttl: 60000\n  uncached:\n    members: [old]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    // The catalog check at start asks every member once too: counted from after it.
    for route in ["modern", "cached", "uncached"] {
        wait_checked(&base, route);
    }
    let c = Client::new(&base, "modern", MODERN);
    let pub0 = served_lists(&c, "101", "pub_count");
    let priv0 = served_lists(&c, "102", "priv_count");
    let probe = Client::new(&base, "uncached", LEGACY);
    let old0 = served_lists(&probe, "103", "old_count");

    // 2026-07-28: a public page is served from the cache for its ttlMs; a private one never is.
    for id in ["1", "2", "3"] {
        let listed = c.answer(id, "tools/list", json!({}));
        assert!(
            listed.contains("pub_count") && listed.contains("priv_count"),
            "{listed}"
        );
        assert!(listed.contains("\"cacheScope\":\"private\""), "{listed}");
    }
    assert_eq!(served_lists(&c, "4", "pub_count") - pub0, 1);
    assert_eq!(served_lists(&c, "5", "priv_count") - priv0, 3);

    // Legacy, with catalog_ttl: one list for every session, until the member says it changed.
    let a = Client::new(&base, "cached", LEGACY);
    let b = Client::new(&base, "cached", LEGACY);
    a.answer("1", "tools/list", json!({}));
    b.answer("1", "tools/list", json!({}));
    assert_eq!(served_lists(&a, "2", "old_count") - old0, 1);
    let touched = a.send(
        "3",
        "tools/call",
        json!({"name": "old_touch", "arguments": {}}),
    );
    assert!(touched.body.contains("list_changed"), "{}", touched.body);
    b.answer("4", "tools/list", json!({}));
    assert_eq!(served_lists(&b, "5", "old_count") - old0, 2);

    // Without catalog_ttl, legacy lists are not cached.
    let u = Client::new(&base, "uncached", LEGACY);
    u.answer("1", "tools/list", json!({}));
    u.answer("2", "tools/list", json!({}));
    assert_eq!(served_lists(&u, "3", "old_count") - old0, 4);

    let metrics = get(&base, "/metrics");
    let hits = metric(
        &metrics,
        "mcpgate_federation_catalog_requests_total{member=\"pub\",result=\"hit\",route=\"modern\"}",
    );
    assert_eq!(hits, 2.0, "{metrics}");
}

#[test]
fn names_two_members_would_both_serve_are_reported_at_load_and_served_once() {
    // The demo server's `slow_count` under `a_` and the counting server's `count` under
    // `a_slow_`: both would be `a_slow_count`. Prefixes differ, so only the catalogs show it.
    let (_demo, demo_url) = start_demo_server();
    let (_counter, counter_url) = counting_server(&[]);
    let dir = TempDir::new("fed-collide");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  demo:\n    url: {demo_url}\n  counter:\n    url: {counter_url}\n  team:\n    members: [{{name: demo, prefix: a_}}, {{name: counter, prefix: a_slow_}}]\n"
        ),
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    let line = gw.wait_for("would be served by member demo", Duration::from_secs(30));
    assert!(line.contains("`a_slow_count`"), "{line}");
    assert!(line.contains("by member counter (its `count`)"), "{line}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(
        &get(&base, "/metrics"),
        "mcpgate_federation_name_collisions{route=\"team\"}",
    ) != 1.0
    {
        assert!(std::time::Instant::now() < deadline, "no collision counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Served once, from the first member; the list says so in the log too.
    let c = Client::new(&base, "team", MODERN);
    let listed: Value = serde_json::from_str(&c.answer("1", "tools/list", json!({}))).unwrap();
    let tools: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools.iter().filter(|t| **t == "a_slow_count").count(),
        1,
        "{tools:?}"
    );
    assert!(tools.contains(&"a_slow_touch"), "{tools:?}");
    let r = c.send(
        "2",
        "tools/call",
        json!({"name": "a_slow_count", "arguments": {"steps": 1, "delay_ms": 1}}),
    );
    assert!(
        r.body.contains("counted to 1"),
        "the first member's: {}",
        r.body
    );
}

/// `fed_member.py --name <name>` over HTTP; returns it and its /mcp URL.
fn fed_member(name: &str) -> (Proc, String) {
    let (p, base) = start_ported(
        &format!("fed_member.py {name}"),
        Command::new(python())
            .arg(repo().join("tests/e2e/fed_member.py"))
            .args(["--name", name]),
    );
    (p, format!("{base}/mcp"))
}

/// A route `team` of `a` (fed_member over HTTP at `a_url`) and `b` (fed_member over stdio).
fn members_config(a_url: &str) -> String {
    format!(
        "server:\n  port: 0\nupstreams:\n  a:\n    url: {a_url}\n  b:\n    type: stdio\n    command: \"{python}\"\n    args: [\"{member}\", \"--name\", \"b\", \"--stdio\"]\n  team:\n    members: [a, b]\n",
        python = python().display(),
        member = repo().join("tests/e2e/fed_member.py").display(),
    )
}

#[test]
fn elicitation_resources_prompts_and_completions_reach_their_member() {
    let (_a, a_url) = fed_member("a");
    let dir = TempDir::new("fed-members");
    let cfg = dir.file("gw.yaml", &members_config(&a_url));
    let (_gw, base) = start_gateway(&cfg, &[]);
    let url = format!("{base}/servers/team/mcp");
    for (mode, version) in [("legacy", LEGACY), ("2026-07-28", MODERN)] {
        let out = run_client(
            &format!("py_fed_client {mode}"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_fed_client.py"))
                .args([&url, mode, "a=a_", "b=b_"]),
            Duration::from_secs(120),
        );
        assert_eq!(out["protocol_version"], version, "{out}");
        // Resources keep the URIs their members gave them; prompts get the prefixes.
        assert_eq!(
            out["resources"],
            json!(["note://a/readme", "note://b/readme"]),
            "{out}"
        );
        assert_eq!(out["prompts"], json!(["a_greet", "b_greet"]), "{out}");
        for m in ["a", "b"] {
            let got = &out[m];
            // Elicitation: a request to the client (session-based) or an input_required round
            // trip (2026-07-28), answered by the client and back at the member that asked.
            assert_eq!(got["confirm"], format!("{m}: ship it? -> yes"), "{out}");
            assert_eq!(got["note"], format!("the note of {m}"), "{out}");
            assert_eq!(got["greet"], format!("{m} greets ada"), "{out}");
            assert_eq!(
                got["completion"],
                json!([format!("{m}-ada"), format!("{m}-alan")]),
                "{out}"
            );
            // The member's failure names the tool as the client called it.
            assert_eq!(got["fail"]["is_error"], true, "{out}");
            assert_eq!(
                got["fail"]["text"],
                format!("Error executing tool {m}_fail"),
                "{out}"
            );
        }
        assert_eq!(
            out["asked"],
            json!(["a asks: ship it?", "b asks: ship it?"]),
            "{out}"
        );
    }
    // An unknown tool of a known member: the member's error, in the client's names.
    let c = Client::new(&base, "team", MODERN);
    let r = c.answer(
        "1",
        "tools/call",
        json!({"name": "a_nope", "arguments": {}}),
    );
    assert!(r.contains("a_nope"), "{r}");
    // A URI no member listed is asked of each member; none serves it.
    let r = c.answer("2", "resources/read", json!({"uri": "note://c/readme"}));
    assert!(r.contains("\"error\""), "{r}");
}

#[test]
fn the_session_stream_merges_every_members_notifications() {
    let (_a, a_url) = fed_member("a");
    let (_b, b_url) = fed_member("b");
    let dir = TempDir::new("fed-get");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nupstreams:\n  a:\n    url: {a_url}\n  b:\n    url: {b_url}\n  team:\n    members: [a, b]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let c = Client::new(&base, "team", LEGACY);
    let mut stream = c.open_get_stream();
    let head = read_until(&mut stream, "\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    // Each member announces on its own session's GET stream: both reach the client's one. (A
    // member's server may register its stream a moment after sending its headers: announce
    // again until the notification shows.)
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut seen = head;
    for (id, m) in [(1, "a"), (100, "b")] {
        let tool = format!("{m}_announce");
        let note = format!("note://{m}/readme");
        for attempt in 0.. {
            assert!(attempt < 40, "nothing from {m}: {seen}");
            let r = c.answer(
                &(id + attempt).to_string(),
                "tools/call",
                json!({"name": tool, "arguments": {}}),
            );
            assert!(r.contains("announced"), "{r}");
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                assert!(n > 0, "the merged stream ended: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            if seen.contains(&note) {
                break;
            }
        }
    }
    assert!(
        seen.matches("notifications/tools/list_changed").count() >= 2,
        "{seen}"
    );
}

#[test]
fn validate_with_members_asks_them_and_refuses_collisions() {
    // demo's `slow_count` under `a_` and counter's `count` under `a_slow_` would both be
    // `a_slow_count`: only asking the members shows it. `s` is a stdio member (started for the
    // check), `gone` cannot be asked (a warning, not an error).
    let (_demo, demo_url) = start_demo_server();
    let (_counter, counter_url) = counting_server(&[]);
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let dir = TempDir::new("fed-validate-members");
    let stdio = format!(
        "  s:\n    type: stdio\n    command: \"{}\"\n    args: [\"{}\", \"--stdio\"]\n",
        python().display(),
        repo().join("examples/demo_server.py").display()
    );
    let yaml = |members: &str| {
        format!(
            "upstreams:\n  demo:\n    url: {demo_url}\n  counter:\n    url: {counter_url}\n  gone:\n    url: {dead}\n{stdio}  team:\n    members: {members}\n"
        )
    };
    let bad = dir.file(
        "bad.yaml",
        &yaml("[{name: demo, prefix: a_}, {name: counter, prefix: a_slow_}, s, gone]"),
    );
    // Offline, the prefixes differ: valid.
    let (ok, out, err) = run_mcpgate(&["validate", "--config", bad.to_str().unwrap()], &[]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run_mcpgate(
        &["validate", "--members", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert!(!ok, "{out}{err}");
    assert!(err.contains(":13: upstreams.team.members:"), "{err}");
    assert!(
        err.contains("the tool `a_slow_count` would be served by member demo (its `slow_count`) and by member counter (its `count`)"),
        "{err}"
    );
    assert!(
        err.contains("warning: upstreams.team.members: member gone could not be asked"),
        "{err}"
    );
    // The stdio member was asked (its names collide with nobody's): no warning for it.
    assert!(!err.contains("member s could not"), "{err}");
    let good = dir.file(
        "good.yaml",
        &yaml("[{name: demo, prefix: a_}, {name: counter, prefix: c_}, s]"),
    );
    let (ok, out, err) = run_mcpgate(
        &["validate", "--members", "--config", good.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("the members of 1 federated route asked for their names"),
        "{out}"
    );
}

/// A member whose list is not JSON deep inside an entry, repeats its `id` after the result, or
/// nests a schema 200 levels deep: its page is read strictly once, so it is left out (counted)
/// and none of its entries reach the client; the other member's are served, as JSON.
#[test]
fn a_member_list_that_is_not_json_is_left_out_whole() {
    let (_alpha, alpha_url) = start_demo_server();
    let evil: Vec<(Proc, String)> = ["malformed", "id_twice", "deep"]
        .iter()
        .map(|fault| raw_upstream(&["--tools-list", fault]))
        .collect();
    let dir = TempDir::new("fed-not-json");
    let mut yaml = format!(
        "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  alpha:\n    url: {alpha_url}\n"
    );
    for (i, (_, base)) in evil.iter().enumerate() {
        yaml.push_str(&format!("  evil{i}:\n    url: {base}/mcp\n"));
    }
    yaml.push_str("  team:\n    members: [alpha, evil0, evil1, evil2]\n");
    let cfg = dir.file("gw.yaml", &yaml);
    let (_gw, base) = start_gateway(&cfg, &[]);
    for era in [MODERN, LEGACY] {
        let c = Client::new(&base, "team", era);
        let listed: Value = serde_json::from_str(&c.answer("1", "tools/list", json!({}))).unwrap();
        assert_eq!(tool_names(&listed), ALPHA_TOOLS, "{listed}");
    }
    let metrics = get(&base, "/metrics");
    for i in 0..3 {
        let failures = metric(
            &metrics,
            &format!(
                "mcpgate_federation_member_failures_total{{member=\"evil{i}\",route=\"team\"}}"
            ),
        );
        assert!(failures >= 2.0, "evil{i}: {failures}");
    }
}

#[test]
fn a_member_past_the_federated_bounds_is_refused_and_held_back() {
    let (_alpha, alpha_url) = start_demo_server();
    let (mut evil, evil_base) = raw_upstream(&[]);
    let evil_url = format!("{evil_base}/mcp");
    let dir = TempDir::new("fed-bounds");
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\nobservability:\n  metrics: {{path: /metrics}}\nupstreams:\n  alpha:\n    url: {alpha_url}\n  evil:\n    url: {evil_url}\n  team:\n    members: [alpha, evil]\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let c = Client::new(&base, "team", MODERN);
    // A list answer of 17 MiB: past the 16 MiB a federated route reads whole to merge. The
    // member is left out (and counted); the list is served.
    let listed = c.answer("1", "resources/templates/list", json!({}));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed["result"]["resourceTemplates"].is_array(), "{listed}");
    assert!(
        metric(
            &get(&base, "/metrics"),
            "mcpgate_federation_member_failures_total{member=\"evil\",route=\"team\"}"
        ) >= 1.0
    );
    // A call answered with 17 MiB of JSON: a clear error for that call, the route serves on.
    let r = c.send(
        "2",
        "tools/call",
        json!({"name": "evil_huge_json", "arguments": {}}),
    );
    assert_eq!(r.status, 502, "{}", &r.body[..r.body.len().min(300)]);
    assert!(
        r.body.contains("-32010"),
        "{}",
        &r.body[..r.body.len().min(300)]
    );
    assert!(r.body.contains("16777216"), "{}", r.body);
    let sum = c.answer(
        "3",
        "tools/call",
        json!({"name": "alpha_add", "arguments": {"a": 40, "b": 2}}),
    );
    assert!(sum.contains("42"), "{sum}");
    // A member's stream toward a client that does not read: the route's buffer (256 messages)
    // and the sockets' fill, then the member waits; it is not read without bound.
    let s = open_call(&base, "team", "4", "evil_firehose", "{}");
    std::thread::sleep(Duration::from_secs(3));
    drop(s);
    let line = evil.wait_for("FIREHOSE ", Duration::from_secs(60));
    let written: usize = line.trim().trim_start_matches("FIREHOSE ").parse().unwrap();
    assert!(
        written < 96 << 20,
        "the member wrote {written} bytes for a client that read nothing: no backpressure"
    );
}
