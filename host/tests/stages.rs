//! The built-in stages through the gateway: API keys, JWT (JWKS, rotation, edge cases), OIDC
//! discovery, OAuth resource metadata, rate limits, policies and list filtering.

mod support;

use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use support::jwt::{Idp, Key, claims, now};
use support::*;

const ALICE_KEY: &str = "alice-secret-key";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An upstream that answers tools/list with three tools (as JSON, or as SSE when `sse`), and
/// echoes anything else.
async fn tools_upstream(sse: bool) -> Upstream {
    upstream(move |s: Seen| async move {
        let body = s.json();
        let result = match body["method"].as_str() {
            Some("tools/list") => json!({"tools": [
                {"name": "search_code", "inputSchema": {"type": "object"}},
                {"name": "delete_repo", "inputSchema": {"type": "object"}},
                {"name": "create_issue", "inputSchema": {"type": "object"}}],
                "ttlMs": 60000, "cacheScope": "public"}),
            _ => json!({"content": [{"type": "text", "text": "ok"}]}),
        };
        let msg = json!({"jsonrpc": "2.0", "id": body["id"], "result": result});
        if !sse {
            return json_response(200, msg);
        }
        let (tx, resp) = sse_channel();
        tokio::spawn(async move {
            tx.send(Bytes::from("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"data\":\"delete_repo mentioned\"}}\n\n")).await.unwrap();
            tx.send(Bytes::from(format!("event: message\ndata: {msg}\n\n"))).await.unwrap();
        });
        resp
    })
    .await
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn modern(method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

// ---- API keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn api_keys_identify_callers_and_never_reach_the_upstream() {
    let up = tools_upstream(false).await;
    let bob_sha = format!("sha256:{}", sha256_hex("bob-secret-key"));
    let gw = gateway_env(
        &[("ALICE_KEY", ALICE_KEY)],
        &format!(
            "sessions:\n  key: AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\nauth:\n  type: api-key\n  header: X-API-Key\n  keys:\n    - {{id: alice, key_env: ALICE_KEY}}\n    - {{id: bob, key: \"{bob_sha}\"}}\nupstreams:\n  u:\n    url: {}\n",
            up.url()
        ),
    )
    .await;
    let url = gw.url("u");

    let resp = post(&url, &legacy_call(1, "search_code"), None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "ApiKey header=\"x-api-key\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["id"].clone(), body["error"]["code"].clone()),
        (json!(1), json!(-32006))
    );

    for bad in ["wrong", "", "alice-secret-key ", "Bearer alice-secret-key"] {
        let resp = post_with(&url, &legacy_call(2, "t"), &[("x-api-key", bad)]).await;
        // Surrounding whitespace is trimmed; anything else must match exactly.
        let want = if bad.trim() == ALICE_KEY { 200 } else { 401 };
        assert_eq!(resp.status(), want, "{bad:?}");
    }
    assert_eq!(up.requests().len(), 1);

    let resp = post_with(
        &url,
        &legacy_call(3, "t"),
        &[
            ("x-api-key", "bob-secret-key"),
            ("authorization", "Bearer nope"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert!(
        seen.header("x-api-key").is_none(),
        "the gateway's own credential is not forwarded"
    );
    assert!(seen.header("authorization").is_none());
}

#[tokio::test]
async fn sessions_are_bound_to_the_authenticated_caller() {
    let up = upstream(|s: Seen| async move {
        let mut r = json_response(200, ok_result(&s.json()["id"]));
        r.headers_mut()
            .insert("mcp-session-id", "up-1".parse().unwrap());
        r
    })
    .await;
    let gw = gateway_env(
        &[("A", "key-a"), ("B", "key-b")],
        &format!("auth:\n  type: api-key\n  keys:\n    - {{id: alice, key_env: A}}\n    - {{id: bob, key_env: B}}\nupstreams:\n  u:\n    url: {}\n", up.url()),
    )
    .await;
    let url = gw.url("u");
    let init = post_with(&url, &initialize(), &[("x-api-key", "key-a")]).await;
    let token = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let alice = post_with(
        &url,
        &legacy_call(1, "t"),
        &[("x-api-key", "key-a"), ("mcp-session-id", &token)],
    )
    .await;
    assert_eq!(alice.status(), 200);
    let bob = post_with(
        &url,
        &legacy_call(2, "t"),
        &[("x-api-key", "key-b"), ("mcp-session-id", &token)],
    )
    .await;
    assert_eq!(
        bob.status(),
        404,
        "another caller presenting the id gets 404"
    );
}

// ---- JWT / OIDC / resource metadata -------------------------------------------------------------

async fn jwt_gateway(idp: &Idp, up: &Upstream, min_refetch_ms: u64) -> Gw {
    gateway(&format!(
        "auth:\n  type: jwt\n  jwks_uri: {}\n  issuer: {}\n  audience: https://mcp.example.com\n  algorithms: [ES256]\n  jwks_min_refetch: {min_refetch_ms}\nupstreams:\n  u:\n    url: {}\n",
        idp.jwks_uri(),
        idp.issuer(),
        up.url()
    ))
    .await
}

#[tokio::test]
async fn jwt_edge_cases() {
    let key = Key::new("k1");
    let other = Key::new("k1"); // same kid, different key: a forged signature
    let idp = Idp::start(&[&key]).await;
    let up = tools_upstream(false).await;
    let gw = jwt_gateway(&idp, &up, 60_000).await;
    let url = gw.url("u");
    let iss = idp.issuer();
    let aud = "https://mcp.example.com";
    let good = claims(&iss, aud, "agent-7");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(key.jwk()["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let b64 = |v: &Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT","kid":"k1"})),
        b64(&good)
    );

    let cases: Vec<(&str, String, u16)> = vec![
        ("valid", key.sign(&good), 200),
        (
            "valid with leeway-expired exp",
            key.sign(&with("exp", json!(now() - 5))),
            200,
        ),
        ("expired", key.sign(&with("exp", json!(now() - 3600))), 401),
        (
            "not yet valid",
            key.sign(&with("nbf", json!(now() + 3600))),
            401,
        ),
        (
            "wrong issuer",
            key.sign(&with("iss", json!("https://evil.example"))),
            401,
        ),
        (
            "wrong audience",
            key.sign(&with("aud", json!("https://other.example"))),
            401,
        ),
        (
            "audience list containing ours",
            key.sign(&with("aud", json!(["x", aud]))),
            200,
        ),
        ("no exp", key.sign(&no_exp), 401),
        ("no sub", key.sign(&with("sub", Value::Null)), 401),
        ("forged signature", other.sign(&good), 401),
        ("alg none", alg_none, 401),
        ("HS256 confusion", hs256, 401),
        ("garbage", "not.a.jwt".into(), 401),
        ("empty", String::new(), 401),
    ];
    for (what, token, status) in cases {
        let resp = post_with(
            &url,
            &legacy_call(9, "search_code"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        if status == 401 {
            let challenge = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                challenge.starts_with("Bearer resource_metadata=\""),
                "{what}: {challenge}"
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["id"], 9, "{what}");
            assert_eq!(body["error"]["code"], -32006, "{what}");
        }
    }
    // A malformed Authorization header is a 401 too, never a 500.
    for raw in ["Basic abc", "Bearer", "Bearer  ", "token"] {
        let resp = post_with(&url, &legacy_call(1, "t"), &[("authorization", raw)]).await;
        assert_eq!(resp.status(), 401, "{raw}");
    }
    assert!(
        up.requests()
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "client tokens never reach the upstream"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_at_a_bounded_rate() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = Idp::start(&[&k1]).await;
    let up = tools_upstream(false).await;
    let gw = jwt_gateway(&idp, &up, 1_000).await;
    let url = gw.url("u");
    let good = |k: &Key| k.sign(&claims(&idp.issuer(), "https://mcp.example.com", "a"));
    assert_eq!(
        post_with(
            &url,
            &legacy_call(1, "t"),
            &[("authorization", &format!("Bearer {}", good(&k1)))]
        )
        .await
        .status(),
        200
    );
    assert_eq!(idp.jwks_fetches(), 1);
    // Key rotation: the provider publishes k2; once the minimum interval since the last fetch has
    // passed, a token with the unknown kid triggers one refetch.
    idp.publish(&[&k1, &k2]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        post_with(
            &url,
            &legacy_call(2, "t"),
            &[("authorization", &format!("Bearer {}", good(&k2)))]
        )
        .await
        .status(),
        200
    );
    assert_eq!(idp.jwks_fetches(), 2);
    // A flood of tokens naming unknown kids right after does not hammer the provider.
    let k3 = Key::new("k3");
    for i in 0..10 {
        let resp = post_with(
            &url,
            &legacy_call(i, "t"),
            &[("authorization", &format!("Bearer {}", good(&k3)))],
        )
        .await;
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "refetches are rate limited (jwks_min_refetch)"
    );
    // Known keys keep working throughout.
    assert_eq!(
        post_with(
            &url,
            &legacy_call(99, "t"),
            &[("authorization", &format!("Bearer {}", good(&k1)))]
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn oidc_discovery_scopes_and_protected_resource_metadata() {
    let key = Key::new("k1");
    let idp = Idp::start(&[&key]).await;
    let up = tools_upstream(false).await;
    let gw = gateway(&format!(
        "auth:\n  type: oidc\n  issuer: {}\n  audience: https://mcp.example.com\n  scopes: [mcp:read]\nupstreams:\n  u:\n    url: {}\n",
        idp.issuer(),
        up.url()
    ))
    .await;
    let url = gw.url("u");
    let token = key.sign(&claims(&idp.issuer(), "https://mcp.example.com", "agent"));
    let resp = post_with(
        &url,
        &legacy_call(1, "t"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert!(
        idp.server
            .requests()
            .iter()
            .any(|s| s.uri.path() == "/.well-known/openid-configuration")
    );

    // Missing scope: 403 insufficient_scope.
    let mut c = claims(&idp.issuer(), "https://mcp.example.com", "agent");
    c["scope"] = json!("other");
    let resp = post_with(
        &url,
        &legacy_call(2, "t"),
        &[("authorization", &format!("Bearer {}", key.sign(&c)))],
    )
    .await;
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:read\""), "{challenge}");

    // No token: 401 pointing at the metadata, which names this route and the issuer.
    let resp = post(&url, &legacy_call(3, "t"), None).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let metadata_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        metadata_url,
        format!(
            "{}/.well-known/oauth-protected-resource/servers/u/mcp",
            gw.base()
        )
    );
    let doc = get_json(&metadata_url).await;
    assert_eq!(
        doc["resource"], url,
        "resource is the exact URL the client called"
    );
    assert_eq!(doc["authorization_servers"], json!([idp.issuer()]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:read"]));
    let missing = client()
        .get(format!(
            "{}/.well-known/oauth-protected-resource/servers/nope/mcp",
            gw.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

// ---- rate limits ------------------------------------------------------------------------------

#[tokio::test]
async fn a_burst_gets_429_with_headers_and_the_request_id() {
    let up = tools_upstream(false).await;
    let gw = gateway_for(
        "u",
        &up,
        "rate_limit:\n  per_client: {capacity: 3, refill_rate: 0.5}\n  tools:\n    delete_*: {capacity: 1, refill_rate: 0.01}\n  per_tool: {capacity: 100, refill_rate: 100}\n",
    )
    .await;
    let url = gw.url("u");
    let mut statuses = Vec::new();
    for i in 0..5 {
        let resp = post(&url, &legacy_call(i, "search_code"), None).await;
        let h = resp.headers().clone();
        statuses.push(resp.status().as_u16());
        assert_eq!(h["x-ratelimit-limit"], "3", "request {i}");
        assert!(h.contains_key("x-ratelimit-remaining") && h.contains_key("x-ratelimit-reset"));
        if resp.status() == 429 {
            assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["id"], i);
            assert_eq!(body["error"]["code"], -32005);
            assert_eq!(h["x-ratelimit-remaining"], "0");
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(
        up.requests().len(),
        3,
        "limited requests never reach the upstream"
    );
    // Notifications are not charged, but their responses carry the headers too.
    let resp = post(
        &url,
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        None,
    )
    .await;
    assert_ne!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let get = client().get(&url).send().await.unwrap();
    assert_eq!(
        get.headers()["x-ratelimit-limit"],
        "3",
        "GET responses on a limited route carry the headers"
    );
}

#[tokio::test]
async fn per_tool_limits_apply_per_tool() {
    let up = tools_upstream(false).await;
    let gw = gateway_for(
        "u",
        &up,
        "rate_limit:\n  tools:\n    delete_*: {capacity: 1, refill_rate: 0.01}\n",
    )
    .await;
    let url = gw.url("u");
    assert_eq!(
        post(&url, &legacy_call(1, "delete_repo"), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&url, &legacy_call(2, "delete_repo"), None)
            .await
            .status(),
        429
    );
    for i in 3..8 {
        assert_eq!(
            post(&url, &legacy_call(i, "search_code"), None)
                .await
                .status(),
            200,
            "other tools are not limited"
        );
    }
}

// ---- policies ---------------------------------------------------------------------------------

const POLICY: &str = "policy:\n  default: allow\n  rules:\n    - name: no-deletes\n      tools: [\"delete_*\"]\n      decision: deny\n      reason: destructive tools are disabled\n";

#[tokio::test]
async fn a_denied_call_carries_the_reason_in_both_eras() {
    let up = tools_upstream(false).await;
    let gw = gateway_for("u", &up, POLICY).await;
    let url = gw.url("u");
    let resp = post(&url, &legacy_call(4, "delete_repo"), None).await;
    assert_eq!(
        resp.status(),
        200,
        "SDK clients surface JSON-RPC errors, not HTTP failures"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 4);
    assert_eq!(body["error"]["code"], -32007);
    assert_eq!(
        body["error"]["message"],
        "tool `delete_repo` is denied by policy rule no-deletes: destructive tools are disabled"
    );

    let call = modern(
        "tools/call",
        json!({"name": "delete_repo", "arguments": {}}),
    );
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "delete_repo"),
    ];
    let body: Value = post_with(&url, &call, &headers).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32007);
    // Headers that disagree with the body cannot smuggle a denied tool past the policy.
    let sneaky = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "search_code"),
    ];
    assert_eq!(post_with(&url, &call, &sneaky).await.status(), 400);
    assert!(up.requests().is_empty());
    let ok = post(&url, &legacy_call(5, "search_code"), None).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn lists_are_filtered_for_the_caller_in_json_and_sse() {
    for sse in [false, true] {
        let up = tools_upstream(sse).await;
        let gw = gateway_for("u", &up, POLICY).await;
        let url = gw.url("u");
        let parse = |text: &str| -> Value {
            if sse {
                let last = text
                    .split("\n\n")
                    .filter(|e| e.contains("\"result\""))
                    .last()
                    .unwrap();
                serde_json::from_str(last.rsplit("data: ").next().unwrap()).unwrap()
            } else {
                serde_json::from_str(text).unwrap()
            }
        };
        let legacy = post(
            &url,
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
            None,
        )
        .await
        .text()
        .await
        .unwrap();
        assert_eq!(
            tool_names(&parse(&legacy)),
            vec!["search_code", "create_issue"],
            "legacy sse={sse}"
        );
        if sse {
            assert!(
                legacy.contains("delete_repo mentioned"),
                "other events pass untouched"
            );
        }
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ];
        let modern_text = post_with(&url, &modern("tools/list", json!({})), &headers)
            .await
            .text()
            .await
            .unwrap();
        let v = parse(&modern_text);
        assert_eq!(
            tool_names(&v),
            vec!["search_code", "create_issue"],
            "modern sse={sse}"
        );
        assert_eq!(
            v["result"]["cacheScope"], "private",
            "a filtered list is not public"
        );
        assert_eq!(v["result"]["ttlMs"], 60000);
    }
}

/// A server that repeats members and re-spells keys in its list answer: whichever copy a client
/// reads (Python and JavaScript keep the last, others the first), a denied tool is not in it; a
/// repeated `result` makes the answer one the gateway does not pass on at all.
#[tokio::test]
async fn lists_with_repeated_and_respelled_members_are_filtered_in_every_copy() {
    for sse in [false, true] {
        let up = upstream(move |s: Seen| async move {
            let id = s.json()["id"].to_string();
            let text = if s.json()["params"]["cursor"] == "twice" {
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[]}},"r\u0065sult":{{"tools":[{{"name":"delete_repo"}}]}}}}"#
                )
            } else {
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"r\u0065sult":{{"t\u006fols":[{{"name":"search_code","name":"delete_x"}},{{"n\u0061me":"d\u0065lete_y"}},{{"name":"create_issue"}}],"tools":[{{"name":"delete_z"}},"delete_w",{{"name":"search_code"}}],"cacheScope":"publ\u0069c"}}}}"#
                )
            };
            if !sse {
                return axum::response::Response::builder()
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(text))
                    .unwrap();
            }
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                tx.send(Bytes::from(format!("event: message\ndata: {text}\n\n")))
                    .await
                    .unwrap();
            });
            resp
        })
        .await;
        let gw = gateway_for("u", &up, POLICY).await;
        let list = |cursor: &'static str| {
            let url = gw.url("u");
            async move {
                let text = post(
                    &url,
                    &json!({"jsonrpc":"2.0","id":"list-1","method":"tools/list","params":{"cursor":cursor}}),
                    None,
                )
                .await
                .text()
                .await
                .unwrap();
                if sse {
                    text.rsplit("data: ").next().unwrap().trim().to_string()
                } else {
                    text
                }
            }
        };
        let message = list("once").await;
        let seen: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(
            seen["id"], "list-1",
            "sse={sse}: the client's id comes back"
        );
        assert_eq!(
            tool_names(&seen),
            vec!["search_code"],
            "sse={sse}: {message}"
        );
        // Every copy, unescaped: no denied name anywhere.
        let unescaped = message.replace(r"\u0065", "e").replace(r"\u0061", "a");
        assert!(!unescaped.contains("delete"), "sse={sse}: {message}");
        assert!(unescaped.contains("create_issue"), "sse={sse}: {message}");
        assert!(
            message.contains(r#""cacheScope":"private""#),
            "sse={sse}: {message}"
        );
        let twice: Value = serde_json::from_str(&list("twice").await).unwrap();
        assert_eq!(twice["id"], "list-1", "sse={sse}");
        assert_eq!(twice["error"]["code"], -32015, "sse={sse}: {twice}");
        assert!(twice.get("result").is_none(), "sse={sse}: {twice}");
    }
}

#[tokio::test]
async fn pipeline_order_and_per_route_overrides() {
    let up = tools_upstream(false).await;
    let gw = gateway_env(
        &[("K", "k")],
        &format!(
            "auth:\n  type: api-key\n  keys: [{{id: a, key_env: K}}]\n{POLICY}pipeline: [auth, policy]\nupstreams:\n  guarded:\n    url: {0}\n  open:\n    url: {0}\n    pipeline: [policy]\n",
            up.url()
        ),
    )
    .await;
    assert_eq!(
        post(&gw.url("guarded"), &legacy_call(1, "search_code"), None)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&gw.url("open"), &legacy_call(1, "search_code"), None)
            .await
            .status(),
        200
    );
    let denied: Value = post(&gw.url("open"), &legacy_call(2, "delete_repo"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(denied["error"]["code"], -32007);
}
