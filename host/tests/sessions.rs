//! Legacy sessions through the gateway: sealed ids, rewriting both ways, 404s, DELETE, replicas.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use support::*;

const KEY: &str = "sessions:\n  key: AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n";

/// An upstream that issues `up-<n>` session ids on initialize, echoes the session id on every
/// response (as some servers do), and answers GET with an SSE stream.
async fn session_upstream() -> Upstream {
    let counter = Arc::new(AtomicUsize::new(0));
    upstream(move |s: Seen| {
        let counter = counter.clone();
        async move {
            if s.method == http::Method::GET || s.method == http::Method::DELETE {
                let mut r = if s.method == http::Method::GET {
                    let (tx, r) = sse_channel();
                    tokio::spawn(async move {
                        let _ = tx
                            .send(bytes::Bytes::from_static(b"id: 5\ndata: {}\n\n"))
                            .await;
                    });
                    r
                } else {
                    json_response(200, json!({}))
                };
                if let Some(sid) = s.header("mcp-session-id") {
                    r.headers_mut()
                        .insert("mcp-session-id", sid.parse().unwrap());
                }
                return r;
            }
            let body = s.json();
            let mut r = json_response(200, ok_result(&body["id"]));
            let sid = if body["method"] == "initialize"
                || body["params"]["_meta"]
                    .get("io.modelcontextprotocol/protocolVersion")
                    .is_some()
            {
                Some(format!("up-{}", counter.fetch_add(1, Ordering::SeqCst)))
            } else {
                s.header("mcp-session-id").map(str::to_string)
            };
            if let Some(sid) = sid {
                r.headers_mut()
                    .insert("mcp-session-id", sid.parse().unwrap());
            }
            r
        }
    })
    .await
}

#[tokio::test]
async fn the_client_sees_only_sealed_ids_and_the_upstream_only_its_own() {
    let up = session_upstream().await;
    let gw = gateway_for("u", &up, KEY).await;
    let c = client();
    let token = open_session(&gw.url("u")).await;
    assert!(token.starts_with("mg1."), "{token}");
    assert!(!token.contains("up-0"));

    let resp = post(&gw.url("u"), &legacy_call(1, "t"), Some(&token)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("mcp-session-id"), Some("up-0"));
    assert_eq!(
        resp.headers()["mcp-session-id"],
        token.as_str(),
        "echoed id rewritten back"
    );

    // GET stream with resume: the upstream sees its id and Last-Event-ID untouched.
    let resp = c
        .get(gw.url("u"))
        .header("mcp-session-id", &token)
        .header("last-event-id", "4")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["mcp-session-id"], token.as_str());
    assert_eq!(resp.text().await.unwrap(), "id: 5\ndata: {}\n\n");
    let get = up.last();
    assert_eq!(get.header("mcp-session-id"), Some("up-0"));
    assert_eq!(get.header("last-event-id"), Some("4"));
    assert_eq!(gw.gateway.sessions.active_count(), 1);
}

#[tokio::test]
async fn unknown_tampered_and_ended_ids_get_404_from_the_gateway() {
    let up = session_upstream().await;
    let gw = gateway_for("u", &up, KEY).await;
    let c = client();
    let token = open_session(&gw.url("u")).await;
    let before = up.requests().len();

    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, id) in [
        ("unknown", "some-raw-upstream-id"),
        ("tampered", tampered.as_str()),
    ] {
        for method in [http::Method::POST, http::Method::GET, http::Method::DELETE] {
            let mut req = c
                .request(method.clone(), gw.url("u"))
                .header("mcp-session-id", id);
            if method == http::Method::POST {
                req = req.json(&legacy_call(3, "t"));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 404, "{what} {method}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], -32001, "{what} {method}");
        }
    }
    assert_eq!(up.requests().len(), before, "the upstream never saw them");

    // DELETE is forwarded with the upstream's id, then the id is dead here.
    let resp = c
        .delete(gw.url("u"))
        .header("mcp-session-id", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let del = up.last();
    assert_eq!(del.method, http::Method::DELETE);
    assert_eq!(del.header("mcp-session-id"), Some("up-0"));
    let resp = post(&gw.url("u"), &legacy_call(4, "t"), Some(&token)).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(gw.gateway.sessions.active_count(), 0);
}

#[tokio::test]
async fn ids_are_bound_to_their_route() {
    let up = session_upstream().await;
    let gw = gateway(&format!(
        "{KEY}upstreams:\n  a:\n    url: {}\n  b:\n    url: {}\n",
        up.url(),
        up.url()
    ))
    .await;

    let token = open_session(&gw.url("a")).await;
    let resp = post(&gw.url("b"), &legacy_call(1, "t"), Some(&token)).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn another_replica_with_the_same_key_continues_the_session() {
    let up = session_upstream().await;
    let a = gateway_for("u", &up, KEY).await;
    let b = gateway_for("u", &up, KEY).await;
    let other_key = gateway_for(
        "u",
        &up,
        "sessions:\n  key: ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=\n",
    )
    .await;

    let token = open_session(&a.url("u")).await;
    let resp = post(&b.url("u"), &legacy_call(1, "t"), Some(&token)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("mcp-session-id"), Some("up-0"));
    let resp = post(&other_key.url("u"), &legacy_call(2, "t"), Some(&token)).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn modern_requests_never_get_a_session() {
    let up = session_upstream().await;
    let gw = gateway_for("u", &up, KEY).await;
    let resp = client()
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "t")
        .header("mcp-session-id", "ignored-by-modern")
        .json(&modern_call(1, "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("mcp-session-id").is_none(),
        "no session minted or leaked"
    );
    assert!(
        up.last().header("mcp-session-id").is_none(),
        "the client's stray id is not forwarded"
    );
    assert_eq!(gw.gateway.sessions.active_count(), 0);
}
