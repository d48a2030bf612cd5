//! The proxy against in-process upstreams: routing, header rules, every error path, streaming,
//! cancellation, shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use support::*;

async fn echo_upstream() -> Upstream {
    upstream(|s: Seen| async move {
        let id = serde_json::from_slice::<Value>(&s.body)
            .ok()
            .map(|v| v["id"].clone())
            .unwrap_or(Value::Null);
        json_response(200, ok_result(&id))
    })
    .await
}

#[tokio::test]
async fn routes_by_name_and_answers_unknown_names_with_a_json_rpc_404() {
    let a = echo_upstream().await;
    let gw = gateway_for("alpha", &a, "").await;
    let c = client();

    let resp = post(&gw.url("alpha"), &legacy_call(1, "t"), None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "ok");
    assert_eq!(a.requests().len(), 1);

    let resp = post(&gw.url("nope"), &legacy_call(9, "t"), None).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32002);
    assert_eq!(body["id"], 9);
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    // A percent-encoded name is decoded by the gateway's one MCP entry and reaches the same
    // route; a path that only looks like a route is a JSON-RPC 404 (an empty name is an unknown
    // server, other shapes the router's fallback).
    let resp = post(
        &format!("{}/servers/%61lpha/mcp", gw.base()),
        &legacy_call(2, "t"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 2);
    assert_eq!(a.requests().len(), 2);
    for (path, code) in [
        ("/servers/alpha/mcp/", -32601),
        ("/servers/alpha/x/mcp", -32601),
        ("/servers//mcp", -32002),
    ] {
        let resp = post(&format!("{}{path}", gw.base()), &legacy_call(3, "t"), None).await;
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}");
    }

    let resp = c.put(gw.url("alpha")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST, DELETE");

    let health = c
        .get(format!("{}/healthz", gw.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = get_json(&format!("{}/readyz", gw.base())).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["upstreams"], json!(["alpha"]));
    assert_eq!(a.requests().len(), 2, "errors never reach the upstream");
}

#[tokio::test]
async fn request_header_rules() {
    let a = echo_upstream().await;
    let b = echo_upstream().await;
    let env = [
        ("MCPGATE_TEST_TOKEN", "upstream-secret"),
        ("MCPGATE_TEST_KEY", "k-123"),
    ];
    let gw = gateway_env(&env, &format!(
        "upstreams:\n  bearer:\n    url: {}\n    auth: {{type: bearer, token_env: MCPGATE_TEST_TOKEN}}\n  \
         header:\n    url: {}?tenant=t1\n    auth: {{type: header, header: X-Api-Key, value_env: MCPGATE_TEST_KEY}}\n",
        a.url(),
        b.url()
    ))
    .await;
    let c = client();
    let resp = c
        .post(format!("{}?trace=1", gw.url("bearer")))
        .header("accept", ACCEPT)
        .header("authorization", "Bearer client-token-must-not-leak")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "t")
        .header("mcp-param-region", "eu")
        .header("last-event-id", "ev-7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("te", "trailers")
        .header("origin", "http://localhost:3000")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&legacy_call(1, "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = a.last();
    assert_eq!(seen.uri.path(), "/mcp");
    assert_eq!(
        seen.uri.query(),
        None,
        "the client's query string is not forwarded"
    );
    assert_eq!(
        seen.header("host"),
        Some(a.addr.to_string().as_str()),
        "Host is the upstream's"
    );
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer upstream-secret"),
        "upstream gets its own token"
    );
    for (name, value) in [
        ("accept", ACCEPT),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "t"),
        ("mcp-param-region", "eu"),
        ("last-event-id", "ev-7"),
        ("content-type", "application/json"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", gw.addr.to_string().as_str()),
    ] {
        assert_eq!(seen.header(name), Some(value), "{name} forwarded");
    }
    for name in ["x-hop", "te", "origin", "accept-encoding"] {
        assert!(seen.header(name).is_none(), "{name} must not be forwarded");
    }
    assert!(seen.header("x-request-id").is_some());

    c.post(format!("{}?tenant=t2&x=1", gw.url("header")))
        .header("authorization", "Bearer leak")
        .json(&legacy_call(2, "t"))
        .send()
        .await
        .unwrap();
    let seen = b.last();
    assert_eq!(
        seen.uri.query(),
        Some("tenant=t1"),
        "the configured query, with nothing added by the client"
    );
    assert_eq!(seen.header("x-api-key"), Some("k-123"));
    assert!(
        seen.header("authorization").is_none(),
        "the client's token is never forwarded"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_intact() {
    let up = upstream(|s: Seen| async move {
        match s.json()["method"].as_str() {
            Some("server/discover") => json_response(400, json!({"jsonrpc":"2.0","id":s.json()["id"],"error":{"code":-32000,"message":"Bad Request: Server not initialized"}})),
            _ => axum::response::Response::builder().status(418).header("x-custom", "kept").body(axum::body::Body::from("plain teapot")).unwrap(),
        }
    })
    .await;
    let gw = gateway_for("u", &up, "").await;
    let resp = post(
        &gw.url("u"),
        &json!({"jsonrpc":"2.0","id":1,"method":"server/discover"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000);
    assert_eq!(
        body["error"]["message"],
        "Bad Request: Server not initialized"
    );

    let resp = post(&gw.url("u"), &legacy_call(2, "t"), None).await;
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-custom"], "kept");
    assert_eq!(resp.text().await.unwrap(), "plain teapot");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_headers_are_504_with_the_request_id() {
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let slow = upstream(|_s: Seen| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        json_response(200, json!({}))
    })
    .await;
    let gw = gateway(&format!(
        "upstreams:\n  dead:\n    url: http://{dead}/mcp\n  slow:\n    url: {}\n    timeout: 200\n",
        slow.url()
    ))
    .await;
    let resp = post(&gw.url("dead"), &legacy_call(41, "t"), None).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 41);
    assert_eq!(body["error"]["code"], -32010);

    let resp = post(
        &gw.url("slow"),
        &json!({"jsonrpc":"2.0","id":"s-1","method":"tools/call","params":{"name":"x"}}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "s-1");
    assert_eq!(body["error"]["code"], -32011);
    assert!(body["error"]["message"].as_str().unwrap().contains("200ms"));
}

#[tokio::test]
async fn edge_checks_origin_size_and_json() {
    let up = echo_upstream().await;
    let gw = gateway_for(
        "u",
        &up,
        "server:\n  max_body_bytes: 1024\n  allowed_origins: [\"https://app.example.com\"]\n",
    )
    .await;
    let c = client();

    let resp = c
        .post(gw.url("u"))
        .header("origin", "https://evil.example")
        .json(&legacy_call(1, "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32003);
    let resp = c
        .post(gw.url("u"))
        .header("origin", "https://app.example.com")
        .json(&legacy_call(1, "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":"a".repeat(2000)}}});
    let resp = post(&gw.url("u"), &big, None).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32004);
    // Without Content-Length (chunked), the limit holds too.
    let chunks =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(big.to_string()))]);
    let resp = c
        .post(gw.url("u"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let resp = c
        .post(gw.url("u"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let resp = post(&gw.url("u"), &json!({"jsonrpc":"2.0","id":3}), None).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].clone(), body["id"].clone()),
        (json!(-32600), json!(3))
    );
    assert_eq!(
        up.requests().len(),
        1,
        "only the allowed request reached the upstream"
    );
}

#[tokio::test]
async fn modern_requests_must_mirror_their_body_in_headers() {
    let up = echo_upstream().await;
    let gw = gateway_for("u", &up, "").await;
    let c = client();
    let send = |name: &'static str, method: &'static str, version: &'static str| {
        c.post(gw.url("u"))
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", version)
            .header("mcp-method", method)
            .header("mcp-name", name)
            .json(&modern_call(5, "echo"))
            .send()
    };
    let ok = send("echo", "tools/call", "2026-07-28").await.unwrap();
    assert_eq!(ok.status(), 200);
    let ok = send("=?base64?ZWNobw==?=", "tools/call", "2026-07-28")
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for (name, method, version) in [
        ("other", "tools/call", "2026-07-28"),
        ("echo", "TOOLS/CALL", "2026-07-28"),
        ("echo", "tools/call", "2025-11-25"),
        ("=?base64?!!!?=", "tools/call", "2026-07-28"),
    ] {
        let resp = send(name, method, version).await.unwrap();
        assert_eq!(resp.status(), 400, "{name} {method} {version}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32020);
        assert_eq!(body["id"], 5);
    }
    // Duplicate routing header.
    let resp = c
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("mcp-name", "echo")
        .json(&modern_call(6, "echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A modern version header over a legacy body.
    let resp = c
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2026-07-28")
        .json(&legacy_call(7, "echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32602);
    assert_eq!(
        up.requests().len(),
        2,
        "mismatched requests never reach the upstream"
    );
}

#[tokio::test]
async fn batches_are_legacy_2025_03_26_only() {
    let up = upstream(|s: Seen| async move {
        let items = s.json();
        let out: Vec<Value> = items
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.get("id").is_some())
            .map(|m| ok_result(&m["id"]))
            .collect();
        json_response(200, Value::Array(out))
    })
    .await;
    let gw = gateway_for("u", &up, "").await;
    let c = client();
    let batch = json!([legacy_call(1, "a"), {"jsonrpc":"2.0","method":"notifications/progress","params":{}}]);
    let resp = post(&gw.url("u"), &batch, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()[0]["id"], 1);
    let resp = c
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2025-03-26")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2025-06-18")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32600);
    let resp = c
        .post(gw.url("u"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "a")
        .json(&json!([modern_call(1, "a")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32600);
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn sse_bytes_pass_through_exactly_and_the_first_event_arrives_before_the_upstream_finishes() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = upstream(move |_s: Seen| {
        let mut release = release_rx.clone();
        async move {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"id: e0\ndata: \n\nretry: 1500\n\n")).await.unwrap();
                tx.send(Bytes::from_static(b": keep-alive\n\nevent: message\nid: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n")).await.unwrap();
                // Hold the rest until the test has seen the first events through the gateway.
                while !*release.borrow() {
                    release.changed().await.unwrap();
                }
                tx.send(Bytes::from_static(b"event: message\r\nid: e2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n")).await.unwrap();
            });
            let mut resp = resp;
            resp.headers_mut().insert("content-encoding", "identity".parse().unwrap());
            resp
        }
    })
    .await;
    let gw = gateway_for("u", &up, "").await;
    let resp = client()
        .post(gw.url("u"))
        .header("accept", ACCEPT)
        .header("accept-encoding", "gzip")
        .json(&legacy_call(1, "slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let first_part = b"id: e0\ndata: \n\nretry: 1500\n\n: keep-alive\n\nevent: message\nid: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
    while got.len() < first_part.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events arrive while the upstream is still running")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(
        &got[..],
        &first_part[..],
        "priming event, retry, comment and ids byte for byte"
    );
    release_tx.send(true).unwrap();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got.ends_with(
        b"event: message\r\nid: e2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n"
    ));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request_but_a_finished_one_does_not() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    let up = upstream(move |s: Seen| {
        let closed_tx = closed_tx.clone();
        async move {
            let (tx, resp) = sse_channel();
            let slow = s.json()["params"]["name"] == "slow";
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n")).await.unwrap();
                if slow {
                    // The gateway must close our response when its client goes away.
                    tokio::time::timeout(Duration::from_secs(20), tx.closed()).await.expect("upstream request cancelled");
                    closed_tx.send("slow").await.unwrap();
                } else {
                    tx.send(Bytes::from_static(b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n")).await.unwrap();
                }
            });
            resp
        }
    })
    .await;
    let gw = gateway_for("u", &up, "").await;
    let resp = post(&gw.url("u"), &legacy_call(1, "slow"), None).await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), closed_rx.recv())
            .await
            .unwrap(),
        Some("slow")
    );

    let done = post(&gw.url("u"), &legacy_call(2, "fast"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(done.contains("\"id\":2"));
}

#[tokio::test]
async fn a_silent_stream_is_ended_by_the_idle_timeout() {
    let up = upstream(|_s: Seen| async move {
        let (tx, resp) = sse_channel();
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"data: {}\n\n")).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        resp
    })
    .await;
    let gw = gateway_for("u", &up, "    stream_idle_timeout: 300\n").await;
    let resp = post(&gw.url("u"), &legacy_call(1, "t"), None).await;
    let mut stream = resp.bytes_stream();
    assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"data: {}\n\n");
    let end = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("stream ended by idle timeout");
    assert!(matches!(end, Some(Err(_)) | None));
}

/// An upstream whose POST streams answer after 500 ms and whose GET streams stay open.
async fn draining_upstream() -> Upstream {
    upstream(|s: Seen| async move {
        let (tx, resp) = sse_channel();
        let is_get = s.method == http::Method::GET;
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"data: {\"first\":true}\n\n"))
                .await
                .unwrap();
            if is_get {
                tokio::time::sleep(Duration::from_secs(60)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(Bytes::from_static(
                    b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
                ))
                .await
                .unwrap();
            }
        });
        resp
    })
    .await
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams_and_ends_get_streams() {
    let up = draining_upstream().await;
    let gw = gateway_for("u", &up, "").await;
    drains_on_shutdown(gw).await;
}

#[tokio::test]
async fn worker_threads_serve_many_connections_and_drain_on_shutdown() {
    let up = echo_upstream().await;
    let gw = gateway_on_workers("u", &up, 2).await;
    // Sixteen clients, each on connections of its own, so both workers accept some; every
    // request reaches the upstream through the pool of the worker that serves it.
    let calls = (0..16u64).map(|i| {
        let url = gw.url("u");
        async move {
            let c = client();
            for j in 0..4 {
                let id = i * 10 + j;
                let resp = c
                    .post(&url)
                    .json(&legacy_call(id, "t"))
                    .header("accept", "application/json, text/event-stream")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["id"], id);
                assert_eq!(body["result"]["content"][0]["text"], "ok");
            }
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(up.requests().len(), 64);
    drop(up);

    let up = draining_upstream().await;
    let gw = gateway_on_workers("u", &up, 2).await;
    drains_on_shutdown(gw).await;
}

/// Shutdown lets an in-flight POST stream finish, ends a GET stream, and closes the listener.
async fn drains_on_shutdown(mut gw: Gw) {
    let c = client();
    let post = post(&gw.url("u"), &legacy_call(1, "t"), None).await;
    let get = c
        .get(gw.url("u"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut post_stream = post.bytes_stream();
    let mut get_stream = get.bytes_stream();
    assert!(post_stream.next().await.unwrap().is_ok());
    assert!(get_stream.next().await.unwrap().is_ok());

    let server = gw.shutdown();
    // The in-flight POST stream still completes.
    let mut rest = Vec::new();
    while let Some(chunk) = post_stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"id\":1"));
    // The GET stream is ended so its client can resume elsewhere.
    let end = tokio::time::timeout(Duration::from_secs(20), get_stream.next())
        .await
        .expect("GET stream ended on shutdown");
    assert!(end.is_none() || end.unwrap().is_err());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
    assert!(
        c.post(gw.url("u"))
            .json(&legacy_call(2, "t"))
            .send()
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn a_slow_reader_applies_backpressure_to_the_upstream() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1024; // 64 MiB offered by the upstream
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let up = upstream(move |_s: Seen| {
        let counter = counter.clone();
        async move {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                let chunk = Bytes::from(format!(": {}\n\n", "x".repeat(CHUNK - 4)));
                for _ in 0..CHUNKS {
                    if tx.send(chunk.clone()).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            resp
        }
    })
    .await;
    let gw = gateway_for("u", &up, "").await;
    let resp = post(&gw.url("u"), &legacy_call(1, "t"), None).await;
    // Read nothing for a while: the upstream must stall once the buffers between are full.
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(std::sync::atomic::Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let stalled_at = sent.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("upstream stalled after {stalled_at} chunks");
    assert!(
        stalled_at < CHUNKS / 2,
        "the gateway kept reading from the upstream while its client read nothing: {stalled_at} of {CHUNKS} chunks"
    );
    // Now read: everything arrives.
    let mut stream = resp.bytes_stream();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, CHUNK * CHUNKS);
}

/// `mcpgate::router` for embedders serving it themselves reaches the MCP route through the same
/// entry as `run`: percent-decoded names, the Host check, the other routes.
#[tokio::test]
async fn the_embedders_router_serves_the_mcp_route_through_the_one_entry() {
    let a = echo_upstream().await;
    let config = support::config(&format!("upstreams:\n  alpha:\n    url: {}\n", a.url()));
    let router = mcpgate::router(std::sync::Arc::new(mcpgate::Gateway::new(config)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let resp = post(
        &format!("{base}/servers/%61lpha/mcp"),
        &legacy_call(3, "t"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(a.requests().len(), 1);
    let bad_host = client()
        .post(format!("{base}/servers/alpha/mcp"))
        .header("host", "a\"b")
        .header("accept", ACCEPT)
        .json(&legacy_call(4, "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_host.status(), 400);
    assert_eq!(
        a.requests().len(),
        1,
        "a bad Host never reaches the upstream"
    );
    let health = client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let missing = client()
        .get(format!("{base}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.abort();
}
