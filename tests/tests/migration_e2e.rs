//! Coming from MCPGate: the config its README teaches runs unchanged through the real binary.
//!
//! `tests/fixtures/mcpgate-readme.yaml` is a verbatim copy of `../shared/seed/mcpgate-readme.yaml`
//! (every config example of MCPGate's README, merged as a migrating user writes them). It is
//! validated as it is, then served with only its two upstream URLs pointed at real MCP servers on
//! loopback (Python SDK), and driven by the Python SDK client as both of its callers: both keys
//! authenticate, the contractors' rules hold, the upstream credentials are injected, a burst
//! empties the `defaults` bucket (429), and the metrics and audit records appear.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mcpgate_e2e::*;
use serde_json::{Value, json};

const ENG_KEY: &str = "eng-key-7c1f0e5a93b2";
const CONTRACTOR_KEY: &str = "ctr-key-2d8b64f1e07a";
const GITHUB_TOKEN: &str = "ghp_migration_e2e_token";
const DB_KEY: &str = "db-key-migration-e2e";

/// The variables the README's config names.
const ENV: &[(&str, &str)] = &[
    ("ENG_API_KEY", ENG_KEY),
    ("CONTRACTOR_API_KEY", CONTRACTOR_KEY),
    ("GITHUB_MCP_TOKEN", GITHUB_TOKEN),
    ("DB_MCP_KEY", DB_KEY),
];

const FIXTURE: &str = "tests/fixtures/mcpgate-readme.yaml";

#[test]
fn the_mcpgate_readme_config_validates_unchanged() {
    let (ok, stdout, stderr) = run_mcpgate(&["validate", "--config", FIXTURE], ENV);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK (2 upstreams, 0 plugins)"), "{stdout}");

    // MCPGate's CLI: `list-servers [--config path]`.
    let (ok, stdout, stderr) = run_mcpgate(&["list-servers", "--config", FIXTURE], ENV);
    assert!(ok, "{stderr}");
    for needle in [
        "/servers/github/mcp -> https://github-mcp.example.com/mcp  (timeout 30000ms, sends authorization",
        "/servers/postgres/mcp -> https://db-mcp.internal:8080/mcp  (timeout 15000ms, sends x-db-key",
        "stages: auth → rate_limit → policy",
        "http://127.0.0.1:3000/servers/",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    for secret in [ENG_KEY, CONTRACTOR_KEY, GITHUB_TOKEN, DB_KEY] {
        assert!(!stdout.contains(secret), "a secret was printed: {stdout}");
    }

    // On a machine where the variables are not set yet: each is named at its key and line, and
    // the last line says how to set them.
    let (ok, _, stderr) = run_mcpgate(&["validate", "--config", FIXTURE], &[]);
    assert!(!ok);
    assert!(stderr.contains("4 errors"), "{stderr}");
    for needle in [
        "mcpgate-readme.yaml:10: upstreams.github.auth.token_env: environment variable `GITHUB_MCP_TOKEN` is not set",
        "mcpgate-readme.yaml:23: auth.keys[0].key: environment variable `ENG_API_KEY` is not set (used as `${ENG_API_KEY}`)",
        "export CONTRACTOR_API_KEY=... DB_MCP_KEY=... ENG_API_KEY=... GITHUB_MCP_TOKEN=...",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

/// The README's config with only its upstream URLs replaced: the test asserts that no other line
/// differs.
fn served_config(github: &str, postgres: &str) -> String {
    let original = std::fs::read_to_string(repo().join(FIXTURE)).unwrap();
    let served = original
        .replace("https://github-mcp.example.com/mcp", github)
        .replace("https://db-mcp.internal:8080/mcp", postgres);
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(served.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(
        changed
            .iter()
            .all(|(a, _)| a.trim_start().starts_with("url: ")),
        "{changed:?}"
    );
    served
}

fn seed_server(name: &str) -> (Proc, String) {
    let (p, base) = start_ported(
        name,
        Command::new(python())
            .arg(repo().join("tests/e2e/seed_server.py"))
            .arg(name)
            .env("PYTHONUNBUFFERED", "1"),
    );
    (p, format!("{base}/mcp"))
}

/// A 2026-07-28 `tools/call` (stateless: no session to set up first).
fn modern_call(base: &str, route: &str, key: &str, id: usize, tool: &str) -> RawResponse {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": tool, "arguments": {"query": "burst", "number": 1},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    raw_post(
        base,
        &format!("/servers/{route}/mcp"),
        &[
            ("x-api-key", key),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ],
        &body.to_string(),
    )
}

fn header_num(r: &RawResponse, name: &str) -> f64 {
    r.header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name}: {:?}", r.headers))
}

#[test]
fn the_mcpgate_readme_config_behaves_as_its_readme_says() {
    let (_github, github_url) = seed_server("github");
    let (_postgres, postgres_url) = seed_server("postgres");
    let dir = TempDir::new("migration");
    let cfg = dir.file("mcpgate.yaml", &served_config(&github_url, &postgres_url));
    let (mut gw, base) = start_gateway(&cfg, ENV);

    // ---- both callers, both routes, both protocol eras, through the Python SDK -------------
    let out = run_client(
        "py_migration_client.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_migration_client.py"))
            .args([&base, ENG_KEY, CONTRACTOR_KEY]),
        Duration::from_secs(180),
    );
    let all_tools = json!(["create_issue", "get_issue", "search_issues", "whoami"]);
    let eng_github = &out["engineering/github"];
    assert_eq!(eng_github["tools"], all_tools, "{out}");
    assert_eq!(
        eng_github["calls"]["search_issues"],
        "github: results for gateway"
    );
    // The upstream credentials are injected; the caller's key is not forwarded.
    assert_eq!(
        eng_github["whoami"],
        json!({"authorization": format!("Bearer {GITHUB_TOKEN}"), "x-db-key": null, "x-api-key": null}),
        "{out}"
    );
    let eng_postgres = &out["engineering/postgres"];
    assert_eq!(eng_postgres["mode"], "2026-07-28", "{out}");
    assert_eq!(eng_postgres["tools"], all_tools, "{out}");
    assert_eq!(
        eng_postgres["calls"]["create_issue"],
        "postgres: created index"
    );
    assert_eq!(
        eng_postgres["whoami"],
        json!({"authorization": null, "x-db-key": DB_KEY, "x-api-key": null}),
        "{out}"
    );
    // contractors on github: search_* and get_* allowed by their rule; the rest falls to
    // `default: allow`, so nothing is hidden there.
    let ctr_github = &out["contractors/github"];
    assert_eq!(ctr_github["tools"], all_tools, "{out}");
    assert_eq!(
        ctr_github["calls"],
        json!({"search_issues": "github: results for bug", "get_issue": "github: issue 7"})
    );
    // contractors on postgres: denied, so every tool is hidden from the list and a call is
    // refused with the reason.
    let ctr_postgres = &out["contractors/postgres"];
    assert_eq!(ctr_postgres["mode"], "2025-11-25", "{out}");
    assert_eq!(ctr_postgres["tools"], json!([]), "{out}");
    let denied = ctr_postgres["calls"]["search_issues"].as_str().unwrap();
    assert!(
        denied.starts_with("raised") && denied.contains("denied by policy rule #3"),
        "{denied}"
    );
    for (refused, why) in [
        ("wrong_key", "authentication failed: invalid API key"),
        (
            "no_key",
            "authentication required: send your API key in the `x-api-key` header",
        ),
    ] {
        let text = out[refused].as_str().unwrap();
        assert!(text.contains(why), "{refused}: {text}");
    }

    // ---- `defaults`: a bucket of 100 (refilling 10/s) for each caller on each server -------
    // Eight connections call until the gateway refuses; the first 100 calls always fit, and no
    // more than the refill of the elapsed time (plus what was in flight) can follow them.
    let started = Instant::now();
    let allowed = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicUsize::new(1000));
    let first_429 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (allowed, limited, next_id, base) = (&allowed, &limited, &next_id, &base);
                scope.spawn(move || {
                    while !limited.load(Ordering::SeqCst) {
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        assert!(id < 3000, "no 429 after 2000 calls");
                        let r = modern_call(base, "github", ENG_KEY, id, "search_issues");
                        match r.status {
                            200 => {
                                allowed.fetch_add(1, Ordering::SeqCst);
                            }
                            429 => {
                                limited.store(true, Ordering::SeqCst);
                                return Some((id, r));
                            }
                            other => panic!("call {id}: {other}: {}", r.body),
                        }
                    }
                    None
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().unwrap())
            .next()
            .unwrap()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::SeqCst) as f64;
    assert!(allowed >= 100.0, "the bucket holds 100: {allowed}");
    assert!(
        allowed <= 100.0 + 10.0 * elapsed + 8.0,
        "{allowed} calls in {elapsed:.1}s: more than the burst and the refill allow"
    );
    let (id, r) = first_429;
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(header_num(&r, "x-ratelimit-limit"), 100.0);
    assert_eq!(header_num(&r, "x-ratelimit-remaining"), 0.0);
    // Until the bucket is full again: 100 tokens at 10/s.
    let reset = header_num(&r, "x-ratelimit-reset");
    assert!((9.0..=10.0).contains(&reset), "{reset}");
    assert!(r.body.contains(r#""code":-32005"#), "{}", r.body);
    assert!(r.body.contains(&format!(r#""id":{id}"#)), "{}", r.body);
    // Other buckets are untouched: the same caller on the other server, and the other caller on
    // this one (each spent at most a few tokens above).
    for (route, key) in [("postgres", ENG_KEY), ("github", CONTRACTOR_KEY)] {
        let r = modern_call(&base, route, key, 1, "search_issues");
        assert_eq!(r.status, 200, "{route}: {}", r.body);
        assert!(
            header_num(&r, "x-ratelimit-remaining") >= 90.0,
            "{route}: {:?}",
            r.headers
        );
    }

    // ---- metrics: MCPGate's names and labels ------------------------------------------------
    let m = scrape(&format!("{base}/metrics"));
    let github = ("server", "github");
    let rejections = m.value(
        "mcpgate_rate_limit_rejections_total",
        &[github, ("client", "engineering")],
    );
    assert!(rejections >= 1.0, "{rejections}");
    assert_eq!(
        m.value(
            "mcpgate_requests_total",
            &[github, ("method", "tools/call"), ("status", "429")]
        ),
        rejections
    );
    assert_eq!(
        m.value(
            "mcpgate_policy_denials_total",
            &[
                ("server", "postgres"),
                ("client", "contractors"),
                ("tool", "search_issues")
            ]
        ),
        1.0
    );
    assert!(
        m.value(
            "mcpgate_tool_calls_total",
            &[github, ("tool", "search_issues")]
        ) >= allowed + 3.0
    );
    assert!(m.value("mcpgate_request_duration_seconds_count", &[github]) > allowed);
    assert!(
        m.samples
            .iter()
            .any(|(n, l, _)| n == "mcpgate_active_sessions"
                && l.get("server").map(String::as_str) == Some("postgres")),
    );

    // ---- audit: one JSON line per request on stdout, never a secret ------------------------
    let deadline = Instant::now() + Duration::from_secs(30);
    let records: Vec<Value> = loop {
        let records: Vec<Value> = gw
            .drain()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("decision").is_some())
            .collect();
        let has = |d: &str| records.iter().any(|r| r["decision"] == d);
        if (has("rate_limited") && has("denied") && has("auth_failed")) || Instant::now() > deadline
        {
            break records;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let find = |decision: &str, caller: Option<&str>, server: &str| {
        records
            .iter()
            .find(|r| {
                r["decision"] == decision && r["caller"].as_str() == caller && r["server"] == server
            })
            .unwrap_or_else(|| panic!("no {decision} record for {caller:?} on {server}"))
    };
    let denied = find("denied", Some("contractors"), "postgres");
    assert_eq!(
        (&denied["stage"], &denied["rule"], &denied["error_code"]),
        (&json!("policy"), &json!("#3"), &json!(-32007))
    );
    let limited = find("rate_limited", Some("engineering"), "github");
    assert_eq!(
        (&limited["status"], &limited["tool"]),
        (&json!(429), &json!("search_issues"))
    );
    assert_eq!(find("auth_failed", None, "github")["status"], 401);
    for (caller, server) in [
        ("engineering", "github"),
        ("engineering", "postgres"),
        ("contractors", "github"),
    ] {
        assert_eq!(
            find("forwarded", Some(caller), server)["upstream_status"],
            200
        );
    }
    let log = gw.drain().join("\n");
    for secret in [ENG_KEY, CONTRACTOR_KEY, GITHUB_TOKEN, DB_KEY] {
        assert!(
            !log.contains(secret),
            "a secret reached the gateway's output"
        );
    }
}
