//! The stage abstraction end to end: reject, respond locally, rewrite requests, hook responses
//! (JSON and SSE, where only the asked-for message is touched).

mod support;

use std::sync::Arc;

use bytes::Bytes;
use mcpgate::error::GatewayError;
use mcpgate::pipeline::{
    BoxFuture, Pipeline, Reply, RequestContext, ResponseVerdict, Stage, Verdict,
};
use serde_json::{Value, json};
use support::*;

/// Rejects `forbidden`, answers `local` itself, renames `old_name` to `new_name`, and hides the
/// tool `hidden` from `tools/list` results.
struct TestStage;

impl Stage for TestStage {
    fn name(&self) -> &str {
        "test-stage"
    }
    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(target) = cx.message().and_then(|m| m.target.clone()) else {
                return Verdict::Continue;
            };
            match target.as_ref() {
                "forbidden" => Verdict::Reject(GatewayError::Rejected {
                    stage: mcpgate::error::StageKind::Other("test-stage".into()),
                    status: http::StatusCode::FORBIDDEN,
                    code: -32012,
                    message: "tool `forbidden` is not allowed for you".into(),
                    data: Some(json!({"tool": "forbidden"})),
                    headers: vec![],
                }),
                "local" => Verdict::Respond(json_response(
                    200,
                    json!({"jsonrpc":"2.0","id":cx.message().unwrap().id.as_ref().map(|i| serde_json::from_str::<Value>(i.get()).unwrap()),"result":{"local":true}}),
                )),
                "old_name" => {
                    let m = cx.message_mut().unwrap();
                    let mut v = m.to_value().unwrap();
                    v["params"]["name"] = "new_name".into();
                    v["params"]["arguments"]["added"] = true.into();
                    m.replace(&v).unwrap();
                    Verdict::Continue
                }
                _ => Verdict::Continue,
            }
        })
    }
    fn wants_response(&self, _cx: &RequestContext, request: &mcpgate::mcp::Message) -> bool {
        request.method() == "tools/list"
    }
    fn hooks_responses(&self) -> bool {
        true
    }
    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _req: &'a mcpgate::mcp::Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let Some(response) = response.tree() else {
                return ResponseVerdict::Refuse("unreadable");
            };
            if let Some(tools) = response["result"]["tools"].as_array_mut() {
                tools.retain(|t| t["name"] != "hidden");
                return ResponseVerdict::Modified;
            }
            ResponseVerdict::Unchanged
        })
    }
}

fn tools() -> Value {
    json!([{"name":"visible","inputSchema":{"type":"object"}},{"name":"hidden","inputSchema":{"type":"object"}}])
}

async fn list_upstream(sse: bool) -> Upstream {
    upstream(move |s: Seen| async move {
        let body = s.json();
        let result = if body["method"] == "tools/list" { json!({"tools": tools()}) } else { json!({"echo": body["params"]}) };
        let msg = json!({"jsonrpc":"2.0","id":body["id"],"result":result});
        if !sse {
            return json_response(200, msg);
        }
        let (tx, resp) = sse_channel();
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"id: p0\ndata: \n\n: ping\n\n")).await.unwrap();
            tx.send(Bytes::from(format!("event: message\nid: p1\ndata: {}\n\n", json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"note":"hidden stays in progress"}})))).await.unwrap();
            tx.send(Bytes::from(format!("event: message\nid: p2\ndata: {msg}\n\n"))).await.unwrap();
        });
        resp
    })
    .await
}

async fn gw_with_stage(up: &Upstream) -> Gw {
    let cfg = config(&format!("upstreams:\n  u:\n    url: {}\n", up.url()));
    gateway_with(cfg, |g| {
        g.set_pipeline("u", Pipeline::new(vec![Arc::new(TestStage)]))
    })
    .await
}

#[tokio::test]
async fn stages_reject_respond_and_rewrite() {
    let up = list_upstream(false).await;
    let gw = gw_with_stage(&up).await;

    let resp = post(&gw.url("u"), &legacy_call(7, "forbidden"), None).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(
        body["error"]["message"],
        "tool `forbidden` is not allowed for you"
    );
    assert_eq!(body["error"]["data"]["tool"], "forbidden");

    let resp: Value = post(&gw.url("u"), &legacy_call(8, "local"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["result"]["local"], true);
    assert!(
        up.requests().is_empty(),
        "rejected and locally answered requests never reach the upstream"
    );

    let resp: Value = post(&gw.url("u"), &legacy_call(9, "old_name"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["result"]["echo"]["name"], "new_name");
    let seen = up.last().json();
    assert_eq!(seen["params"]["name"], "new_name");
    assert_eq!(seen["params"]["arguments"]["added"], true);

    // A batch: the second element is forbidden, so nothing is forwarded.
    let before = up.requests().len();
    let resp = post(
        &gw.url("u"),
        &json!([legacy_call(1, "ok"), legacy_call(2, "forbidden")]),
        None,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(up.requests().len(), before);
}

#[tokio::test]
async fn json_responses_pass_through_response_hooks() {
    let up = list_upstream(false).await;
    let gw = gw_with_stage(&up).await;
    let resp = post(
        &gw.url("u"),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        None,
    )
    .await;
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), len);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["visible"]);
}

#[tokio::test]
async fn sse_response_hooks_touch_only_the_final_message() {
    let up = list_upstream(true).await;
    let gw = gw_with_stage(&up).await;
    let text = post(
        &gw.url("u"),
        &json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}),
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    let progress = format!(
        "event: message\nid: p1\ndata: {}\n\n",
        json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"note":"hidden stays in progress"}})
    );
    assert!(
        text.starts_with(&format!("id: p0\ndata: \n\n: ping\n\n{progress}")),
        "untouched events byte for byte: {text}"
    );
    let last = text.rsplit("\n\n").nth(1).unwrap();
    assert!(last.starts_with("event: message\nid: p2\ndata: "), "{last}");
    let v: Value = serde_json::from_str(last.rsplit("data: ").next().unwrap()).unwrap();
    assert_eq!(v["id"], "L");
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"]["tools"][0]["name"], "visible");
}
