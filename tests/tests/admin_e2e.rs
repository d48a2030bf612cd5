//! The admin API through the real binary: its token, sessions listed and ended, rate-limit
//! buckets inspected and reset, the config shown without its secrets, `/metrics` moved to the
//! admin listener, the OpenAPI document, the live event stream and its bound; and the hostile
//! side: no or wrong token, a token in the URL, methods and paths that do not exist, a client
//! that opens connections and sends nothing.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::{Value, json};

const SESSION_KEY: &str = "W2YoI7mX24FA27LhF+i+6vJ5LFoAQr4ZK+DZiUYHyw8=";

fn admin_config(upstream: &str, extra: &str) -> String {
    format!(
        "server:\n  port: 0\nsessions:\n  key: {SESSION_KEY}\nadmin:\n  port: 0\n  token_env: ADMIN_TOKEN\n\
         upstreams:\n  demo:\n    url: {upstream}\n{extra}"
    )
}

#[test]
fn every_admin_request_needs_the_token_and_errors_are_json() {
    let dir = TempDir::new("admin-auth");
    let cfg = dir.file("gw.yaml", &admin_config("http://127.0.0.1:1/mcp", ""));
    let (_gw, _base, admin) = start_with_admin(&cfg, &[]);
    let bad = |headers: &[(&str, &str)], path: &str| {
        let r = raw_request(&admin.base, "GET", path, headers, "");
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (
            r.status,
            body,
            r.header("www-authenticate").map(str::to_string),
        )
    };
    for (headers, path) in [
        (vec![], "/admin/status"),
        (
            vec![("authorization", "Bearer wrong-token-wrong-token")],
            "/admin/status",
        ),
        (vec![("authorization", "Basic dGVzdA==")], "/admin/config"),
        (vec![("authorization", "Bearer")], "/admin/sessions"),
        // A token in the URL is never looked at (it would end up in logs and histories).
        (vec![], &*format!("/admin/status?token={ADMIN_TOKEN}")),
        (
            vec![("authorization", &*format!("Bearer {ADMIN_TOKEN}x"))],
            "/admin/events",
        ),
    ] {
        let (status, body, challenge) = bad(&headers, path);
        assert_eq!(status, 401, "{headers:?} {path}: {body}");
        assert_eq!(body["error"]["status"], 401, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"mcpgate-admin\""));
    }
    let (status, body) = admin.call("GET", "/admin/nope");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openapi"),
        "{body}"
    );
    let (status, body) = admin.call("PUT", "/admin/reload");
    assert_eq!(status, 405, "{body}");
    let (status, body) = admin.call("GET", "/admin/reload");
    assert_eq!(status, 405, "{body}");

    // The OpenAPI document describes every endpoint the API serves.
    let doc = admin.get("/admin/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/admin/status",
        "/admin/routes",
        "/admin/sessions",
        "/admin/sessions/{id}",
        "/admin/buckets",
        "/admin/config",
        "/admin/plugins",
        "/admin/reload",
        "/admin/decisions",
        "/admin/snapshot",
        "/admin/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
}

#[test]
fn sessions_are_listed_and_ended_and_buckets_inspected_and_reset() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("admin-state");
    let limits = "rate_limit:\n  per_client: {capacity: 3, refill_rate: 0.001}\n  per_server: {capacity: 1000, refill_rate: 100}\n";
    let cfg = dir.file("gw.yaml", &admin_config(&upstream, limits));
    let (_gw, base, admin) = start_with_admin(&cfg, &[]);

    // A legacy session opens (one token), shows up in the list with its route and age.
    let legacy = Client::new(&base, "demo", LEGACY);
    let listed = admin.get("/admin/sessions");
    assert_eq!(listed["count"], 1, "{listed}");
    let session = &listed["sessions"][0];
    assert_eq!(session["route"], "demo", "{session}");
    assert!(session["age_seconds"].as_u64().unwrap() < 60, "{session}");
    assert_eq!(admin.get("/admin/sessions?route=other")["count"], 0);

    // Two calls more empty the caller's bucket: the third is refused.
    let list = |c: &Client| c.send("9", "tools/list", json!({}));
    assert_eq!(list(&legacy).status, 200);
    assert_eq!(list(&legacy).status, 200);
    assert_eq!(list(&legacy).status, 429);
    let buckets = admin.get("/admin/buckets");
    let client_bucket = buckets["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["level"] == "client")
        .cloned()
        .unwrap_or_else(|| panic!("{buckets}"));
    assert_eq!(client_bucket["capacity"], 3.0, "{buckets}");
    assert!(client_bucket["tokens"].as_f64().unwrap() < 1.0, "{buckets}");
    let caller = client_bucket["client"].as_str().unwrap().to_string();
    let mine = admin.get(&format!("/admin/buckets?client={caller}"));
    assert!(mine["count"].as_u64().unwrap() >= 1, "{mine}");
    assert_eq!(admin.get("/admin/buckets?client=somebody-else")["count"], 0);
    // Reset: the caller may call again.
    let (status, reset) = admin.call("DELETE", &format!("/admin/buckets?client={caller}"));
    assert_eq!(status, 200, "{reset}");
    assert!(reset["reset"].as_u64().unwrap() >= 1, "{reset}");
    assert_eq!(list(&legacy).status, 200);

    // Ending the session: the client's next request gets 404 (and may start a new session).
    let id = session["id"].as_str().unwrap();
    let (status, ended) = admin.call("DELETE", &format!("/admin/sessions/{id}"));
    assert_eq!(status, 200, "{ended}");
    let after = list(&legacy);
    assert_eq!(after.status, 404, "{}", after.body);
    assert_eq!(admin.get("/admin/sessions")["count"], 0);
    let (status, unknown) = admin.call("DELETE", &format!("/admin/sessions/{id}"));
    assert_eq!(status, 404, "{unknown}");
    let (status, _) = admin.call("DELETE", "/admin/sessions/..%2F..%2Fetc");
    assert_eq!(status, 404);

    // The decisions the dashboard lists: the 429 and the 404 are there, without bodies.
    let decisions = admin.get("/admin/decisions")["decisions"].to_string();
    assert!(decisions.contains("rate_limited"), "{decisions}");
    assert!(!decisions.contains("protocolVersion"), "{decisions}");
}

#[test]
fn the_config_is_shown_without_its_secrets() {
    let dir = TempDir::new("admin-config");
    let extra = format!(
        "plugins:\n  guard:\n    file: fs_probe.wasm\n    grants: {{empty_filesystem: true}}\n\
         \x20   config: {{api_key: literal-plugin-secret, endpoint: \"https://u:upstream-pass@example.com/x\"}}\nplugin_runtime:\n  dir: {}\n",
        repo().join("plugins").display()
    );
    let cfg = dir.file("gw.yaml", &admin_config("http://127.0.0.1:1/mcp", &extra));
    let (_gw, _base, admin) = start_with_admin(&cfg, &[]);
    let config = admin.get("/admin/config");
    let text = config.to_string();
    for secret in [
        SESSION_KEY,
        "literal-plugin-secret",
        "upstream-pass",
        ADMIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    assert_eq!(
        config["file"]["admin"]["token_env"], "ADMIN_TOKEN",
        "{config}"
    );
    assert_eq!(
        config["effective"]["sessions"]["key"], "<redacted>",
        "{config}"
    );
    assert_eq!(
        config["effective"]["upstreams"][0]["name"], "demo",
        "{config}"
    );
    assert_eq!(config["generation"], 1);
    let plugins = admin.get("/admin/plugins");
    let guard = &plugins["plugins"][0];
    assert_eq!(guard["name"], "guard", "{plugins}");
    assert_eq!(guard["sha256"].as_str().unwrap().len(), 64, "{plugins}");
}

#[test]
fn metrics_can_move_to_the_admin_listener() {
    let dir = TempDir::new("admin-metrics");
    let cfg = dir.file(
        "gw.yaml",
        &admin_config(
            "http://127.0.0.1:1/mcp",
            "observability:\n  metrics: {listener: admin}\n",
        ),
    );
    let (_gw, base, admin) = start_with_admin(&cfg, &[]);
    let public = raw_request(&base, "GET", "/metrics", &[], "");
    assert_eq!(public.status, 404, "{}", public.body);
    let anonymous = raw_request(&admin.base, "GET", "/metrics", &[], "");
    assert_eq!(anonymous.status, 401);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let scraped = raw_request(
        &admin.base,
        "GET",
        "/metrics",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.body.contains("mcpgate_config_generation 1"),
        "{}",
        scraped.body
    );

    // Without an `admin:` section that setting is an error at its key.
    let lone = dir.file(
        "lone.yaml",
        "upstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\nobservability:\n  metrics:\n    listener: admin\n",
    );
    let (ok, out, err) = run_mcpgate(&["validate", "--config", lone.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!((out + &err).contains("lone.yaml:6: observability.metrics.listener"));
}

#[test]
fn an_admin_section_needs_a_strong_token_from_the_environment() {
    let dir = TempDir::new("admin-validate");
    for (admin, env, needle) in [
        ("admin: {port: 0}\n", vec![], "admin.token_env: required"),
        (
            "admin: {token_env: NOPE_UNSET}\n",
            vec![],
            "`NOPE_UNSET` is not set",
        ),
        (
            "admin: {token_env: SHORT}\n",
            vec![("SHORT", "abc")],
            "at least 16",
        ),
        (
            "admin: {token_env: T, bind: nowhere}\n",
            vec![("T", ADMIN_TOKEN)],
            "admin.bind",
        ),
    ] {
        let cfg = dir.file(
            "gw.yaml",
            &format!("upstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\n{admin}"),
        );
        let (ok, out, err) = run_mcpgate(&["validate", "--config", cfg.to_str().unwrap()], &env);
        let text = out + &err;
        assert!(!ok, "{text}");
        assert!(text.contains("gw.yaml:4:"), "{needle}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn the_event_stream_sends_snapshots_and_is_bounded() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("admin-events");
    let cfg = dir.file(
        "gw.yaml",
        &admin_config(&upstream, "").replace(
            "  port: 0\n  token_env",
            "  port: 0\n  max_event_streams: 3\n  token_env",
        ),
    );
    let (_gw, base, admin) = start_with_admin(&cfg, &[]);
    let open = || {
        let mut s = connect(&admin.base);
        write!(
            s,
            "GET /admin/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .unwrap();
        s
    };
    let read_some = |s: &mut std::net::TcpStream, needle: &str| {
        let mut got = String::new();
        let mut buf = [0u8; 65536];
        while !got.contains(needle) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got
    };
    let mut first = open();
    let head = read_some(&mut first, "event: snapshot");
    assert!(head.contains("text/event-stream"), "{head}");
    // Traffic shows up in the next snapshots.
    let c = Client::new(&base, "demo", MODERN);
    c.answer("1", "tools/list", json!({}));
    let later = read_some(&mut first, "\"requests\":1");
    assert!(later.contains("\"demo\""), "{later}");

    // admin.max_event_streams (3) at once; the next is refused with a reason, not held.
    let mut streams: Vec<_> = (1..3).map(|_| open()).collect();
    for s in &mut streams {
        read_some(s, "event: snapshot");
    }
    let (status, body) = admin.call("GET", "/admin/events");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snapshot"),
        "{body}"
    );
    // One closes: a new one is admitted.
    drop(streams.pop());
    std::thread::sleep(Duration::from_millis(300));
    let mut again = open();
    read_some(&mut again, "event: snapshot");
}

#[test]
fn idle_admin_connections_are_bounded() {
    let dir = TempDir::new("admin-idle");
    let cfg = dir.file(
        "gw.yaml",
        &admin_config("http://127.0.0.1:1/mcp", "")
            .replace(
                "server:\n  port: 0\n",
                "server:\n  port: 0\n  header_timeout: 1000\n",
            )
            .replace(
                "  port: 0\n  token_env",
                "  port: 0\n  max_connections: 8\n  token_env",
            ),
    );
    let (_gw, _base, admin) = start_with_admin(&cfg, &[]);
    // 20 connections that send nothing: past the 8 the admin listener holds
    // (admin.max_connections), the rest are closed at once, and the silent ones are closed after
    // server.header_timeout.
    let mut idle: Vec<_> = (0..20).map(|_| connect(&admin.base)).collect();
    let started = std::time::Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The API answers afterwards.
    assert_eq!(admin.get("/admin/status")["generation"], 1);
}

#[test]
fn an_unreachable_upstream_shows_in_the_routes_health() {
    let dir = TempDir::new("admin-health");
    let port = free_port();
    let cfg = dir.file(
        "gw.yaml",
        &admin_config(&format!("http://127.0.0.1:{port}/mcp"), ""),
    );
    let (_gw, base, admin) = start_with_admin(&cfg, &[]);
    let before = admin.get("/admin/routes");
    assert_eq!(
        before["routes"][0]["health"]["reachable"],
        Value::Null,
        "{before}"
    );
    let r = Client::new(&base, "demo", MODERN).send("1", "tools/list", json!({}));
    assert_eq!(r.status, 502, "{}", r.body);
    let after = admin.get("/admin/routes");
    let health = &after["routes"][0]["health"];
    assert_eq!(health["reachable"], false, "{after}");
    assert_eq!(health["failures"], 1, "{after}");
    assert!(health["last_error"].as_str().unwrap().len() > 5, "{after}");
    // The failure is a decision the dashboard lists.
    let snapshot = admin.get("/admin/snapshot");
    assert_eq!(snapshot["routes"]["demo"]["errors"], 1, "{snapshot}");
}
