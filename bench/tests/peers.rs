//! The benchmark's own peers answer like an MCP server and a proxy should, so the load benchmark
//! measures real answers: `bench-upstream` mints sessions, answers calls in JSON and as SSE with
//! timestamped events, and `floor-proxy` passes all of it through unchanged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command) -> (Kill, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .to_string();
    (Kill(child), format!("http://127.0.0.1:{port}"))
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_code","arguments":{}}}"#;
const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn post(url: &str, body: &str) -> (u16, Option<String>, Option<String>, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt as _;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (session, kind) = (header("mcp-session-id"), header("content-type"));
        let status = resp.status().as_u16();
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        (status, session, kind, text)
    })
}

#[test]
fn upstream_and_floor_answer_like_mcp_peers() {
    let (_json, json) = start(&mut Command::new(env!("CARGO_BIN_EXE_bench-upstream")));
    let (_sse, sse) =
        start(Command::new(env!("CARGO_BIN_EXE_bench-upstream")).args(["--sse", "3"]));
    let (_floor, floor) = start(Command::new(env!("CARGO_BIN_EXE_floor-proxy")).arg(&sse));
    // Direct and through the floor: the same answers.
    for base in [&sse, &floor] {
        let (status, session, _, _) = post(&format!("{base}/mcp"), INIT);
        assert_eq!(status, 200);
        assert!(session.is_some_and(|s| s.starts_with('s')));
        let (status, _, kind, text) = post(&format!("{base}/mcp"), CALL);
        assert_eq!(status, 200);
        assert_eq!(kind.as_deref(), Some("text/event-stream"));
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3, "{text}");
        assert!(
            events[..2]
                .iter()
                .all(|e| e.contains("notifications/progress"))
        );
        assert!(events[2].contains(r#""id":7"#) && events[2].contains(r#""sentUs":""#));
    }
    let (status, _, kind, text) = post(&format!("{json}/mcp"), CALL);
    assert_eq!((status, kind.as_deref()), (200, Some("application/json")));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["content"][0]["text"], "ok");
    let (status, _, _, _) = post(
        &format!("{json}/mcp"),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202, "notifications are accepted");
}
