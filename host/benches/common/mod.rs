//! What the loopback benchmarks share: serving a router on 127.0.0.1, and one `tools/call`
//! through a gateway.
#![allow(dead_code)]

use std::hint::black_box;

/// Serves `router` on an OS-chosen loopback port; returns `http://127.0.0.1:<port>`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

/// An upstream answering every POST /mcp with one small JSON result.
pub fn json_upstream() -> axum::Router {
    axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async {
            (
                [("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"ok"}]}}"#,
            )
        }),
    )
}

/// POSTs `body` to `url` with the MCP Accept header and these extra headers; expects 200 and
/// reads the whole response.
pub async fn call(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    headers: &[(&str, &str)],
) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    black_box(resp.bytes().await.unwrap());
}
