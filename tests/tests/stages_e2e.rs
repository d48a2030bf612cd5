//! The built-in stages with real SDK clients through the real binary: API-key and OIDC/JWT
//! callers in both protocol eras, the 401 → resource-metadata discovery path as the TypeScript SDK
//! walks it, a policy-denied tool whose reason reaches the caller, a filtered tool list, and a
//! burst that runs into the rate limit.

use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;
use serde_json::Value;

const STAGES: &str = "\
rate_limit:
  tools:
    echo: {capacity: 3, refill_rate: 0.001}
policy:
  rules:
    - name: no-arithmetic
      tools: [add]
      decision: deny
      reason: arithmetic is switched off
";

const DENIED: &str =
    "tool `add` is denied by policy rule no-arithmetic: arithmetic is switched off";

struct Idp {
    _proc: Proc,
    issuer: String,
    tokens: Vec<(String, String)>,
}

fn start_idp(subjects: &[&str]) -> Idp {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/e2e/idp.py"))
        .args(["--audience", "mcpgate-e2e"])
        .args(subjects);
    let mut p = Proc::spawn("idp.py", &mut cmd);
    let port = p
        .wait_for("PORT ", Duration::from_secs(60))
        .trim()
        .trim_start_matches("PORT ")
        .to_string();
    let tokens = subjects
        .iter()
        .map(|s| {
            let line = p.wait_for(&format!("TOKEN {s} "), Duration::from_secs(10));
            (
                s.to_string(),
                line.rsplit(' ').next().unwrap().trim().to_string(),
            )
        })
        .collect();
    Idp {
        _proc: p,
        issuer: format!("http://127.0.0.1:{port}"),
        tokens,
    }
}

fn py_client(url: &str, mode: &str, header: &str, value: &str) -> Value {
    run_client(
        &format!("py_stages_client {mode}"),
        Command::new(python())
            .arg(repo().join("tests/e2e/py_stages_client.py"))
            .args([url, mode, header, value]),
        Duration::from_secs(120),
    )
}

fn assert_stages(out: &Value, what: &str, auth_hint: &str) {
    assert_eq!(
        out["tools"],
        serde_json::json!(["echo", "slow_count", "whoami"]),
        "{what}: `add` is filtered out of the list"
    );
    assert_eq!(out["echo"], "allowed", "{what}");
    let denied = out["denied"].as_str().unwrap_or_default();
    assert!(
        denied.contains(DENIED),
        "{what}: the denial reason reaches the caller: {denied}"
    );
    let burst: Vec<&str> = out["burst"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(
        burst.len(),
        3,
        "{what}: 2 more echo calls fit the bucket of 3, the third is limited: {burst:?}"
    );
    assert_eq!(&burst[..2], &["ok", "ok"], "{what}");
    assert!(
        burst[2].contains("rate limit exceeded"),
        "{what}: {burst:?}"
    );
    let anonymous = out["anonymous"].as_str().unwrap();
    assert!(
        anonymous.contains(auth_hint),
        "{what}: an unauthenticated client is told why: {anonymous}"
    );
}

#[test]
fn api_key_callers_in_both_eras() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("stages");
    let cfg = dir.file(
        "gw.yaml",
        &format!("auth:\n  type: api-key\n  keys:\n    - {{id: alice, key_env: ALICE_KEY}}\n    - {{id: bob, key_env: BOB_KEY}}\n{STAGES}upstreams:\n  demo:\n    url: {upstream}\n"),
    );
    let (_gw, base) = start_gateway(&cfg, &[("ALICE_KEY", "k-alice"), ("BOB_KEY", "k-bob")]);
    let url = format!("{base}/servers/demo/mcp");
    for (mode, key) in [("legacy", "k-alice"), ("2026-07-28", "k-bob")] {
        let out = py_client(&url, mode, "x-api-key", key);
        assert_stages(
            &out,
            &format!("api-key {mode}"),
            "send your API key in the `x-api-key` header",
        );
    }
}

#[test]
fn oidc_callers_in_both_eras_and_the_oauth_discovery_path() {
    let (_server, upstream) = start_demo_server();
    let idp = start_idp(&["carol", "dave", "erin", "frank"]);
    let dir = TempDir::new("stages");
    let cfg = dir.file(
        "gw.yaml",
        &format!("auth:\n  type: oidc\n  issuer: {}\n  audience: mcpgate-e2e\n{STAGES}upstreams:\n  demo:\n    url: {upstream}\n", idp.issuer),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let url = format!("{base}/servers/demo/mcp");
    for (mode, who) in [("legacy", 0), ("2026-07-28", 1)] {
        let out = py_client(
            &url,
            mode,
            "authorization",
            &format!("Bearer {}", idp.tokens[who].1),
        );
        assert_stages(
            &out,
            &format!("oidc {mode}"),
            "send `Authorization: Bearer <token>`",
        );
    }

    // `type: jwt` with the JWKS URL given directly (no discovery).
    let jwt_cfg = dir.file(
        "gw-jwt.yaml",
        &format!(
            "auth:\n  type: jwt\n  jwks_uri: {0}/jwks\n  issuer: {0}\n  audience: mcpgate-e2e\n  algorithms: [ES256]\n{STAGES}upstreams:\n  demo:\n    url: {upstream}\n",
            idp.issuer
        ),
    );
    let (_jwt_gw, jwt_base) = start_gateway(&jwt_cfg, &[]);
    let out = py_client(
        &format!("{jwt_base}/servers/demo/mcp"),
        "legacy",
        "authorization",
        &format!("Bearer {}", idp.tokens[3].1),
    );
    assert_stages(&out, "jwt legacy", "send `Authorization: Bearer <token>`");

    let out = run_client(
        "ts_auth_client",
        Command::new("node")
            .arg(repo().join("tests/e2e/ts_auth_client.mjs"))
            .args([&url, &idp.tokens[2].1])
            .current_dir(repo().join("tests/e2e")),
        Duration::from_secs(120),
    );
    assert!(node_modules().exists());
    assert_eq!(out["status"], 401);
    assert!(
        out["anonymous"]
            .as_str()
            .unwrap()
            .contains("authentication required"),
        "{out}"
    );
    assert_eq!(
        out["resourceMetadataUrl"],
        format!("{base}/.well-known/oauth-protected-resource/servers/demo/mcp")
    );
    assert_eq!(
        out["resource"], url,
        "the metadata names the exact URL the client called"
    );
    assert_eq!(out["authorizationServers"], serde_json::json!([idp.issuer]));
    assert_eq!(
        out["tokenEndpoint"],
        format!("{}/token", idp.issuer),
        "the client reached the authorization server's metadata"
    );
    assert!(out["sessionId"].as_str().unwrap().starts_with("mg1."));
    assert_eq!(
        out["tools"],
        serde_json::json!(["echo", "slow_count", "whoami"])
    );
    assert_eq!(out["echo"], "with a token");
    assert!(out["denied"].as_str().unwrap().contains(DENIED), "{out}");
}
