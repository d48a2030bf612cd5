//! A fast MCP upstream for benchmarks: Streamable HTTP on 127.0.0.1, both eras, as little work
//! per request as an answer allows, so the proxy in front of it is what gets measured.
//!
//!   bench-upstream [--sse EVENTS] [--interval-us N] [--tools N] [--result-bytes N]
//!                  [--stream-interval-ms N]
//!
//! Prints `PORT <n>` once listening. `initialize` gets a session id (`Mcp-Session-Id: s<n>`);
//! notifications and responses get 202; every other request gets a result: one JSON body, or
//! with `--sse N` an SSE stream of N-1 progress notifications and the result, `--interval-us`
//! apart. Each event's data carries `"sentUs"`, the wall-clock microseconds when it was written,
//! so a client can measure how late each event arrives. With `--tools N`, `tools/list` lists N
//! tools (a federated route's fan-out scenario); with `--result-bytes N` a call's result text is
//! N bytes (large results passed through). DELETE is 200.
//!
//! Server streams: GET (with a session: the legacy standalone stream) and a 2026-07-28
//! `subscriptions/listen` (acknowledged first) stay open; with `--stream-interval-ms N` each
//! carries a `notifications/message` with `sentUs` every N ms, otherwise nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

struct Mode {
    sse_events: usize,
    /// The size of a call's result text (0: "ok").
    result_bytes: usize,
    /// Server streams carry an event this often (zero: they stay silent).
    stream_interval: Duration,
    /// `tools/list` answers this many tools (0: a result like any other request's).
    tools: usize,
    interval: Duration,
    sessions: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

fn full(status: StatusCode, content_type: Option<&str>, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    r.body(Full::new(Bytes::from(body)).boxed()).unwrap()
}

async fn handle(mode: Arc<Mode>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return Ok(full(StatusCode::OK, None, Vec::new())),
        Method::GET => return Ok(server_stream(mode.stream_interval, None)),
        _ => return Ok(full(StatusCode::METHOD_NOT_ALLOWED, None, Vec::new())),
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(full(StatusCode::BAD_REQUEST, None, Vec::new()));
    };
    let id = msg.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let method = msg.get("method").and_then(|m| m.as_str()).unwrap_or("");
    if id.is_null() || method.is_empty() {
        return Ok(full(StatusCode::ACCEPTED, None, Vec::new()));
    }
    if method == "initialize" {
        let n = mode.sessions.fetch_add(1, Ordering::Relaxed);
        let version = msg["params"]["protocolVersion"]
            .as_str()
            .unwrap_or("2025-11-25");
        let result = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{
            "protocolVersion":version,"capabilities":{"tools":{}},
            "serverInfo":{"name":"bench-upstream","version":"1"}}});
        let mut r = full(
            StatusCode::OK,
            Some("application/json"),
            serde_json::to_vec(&result).unwrap(),
        );
        r.headers_mut()
            .insert("mcp-session-id", format!("s{n}").parse().unwrap());
        return Ok(r);
    }
    if method == "subscriptions/listen" {
        let ack = serde_json::json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged",
            "params":{"_meta":{"io.modelcontextprotocol/subscriptionId":id.to_string()}}});
        return Ok(server_stream(mode.stream_interval, Some(ack.to_string())));
    }
    if method == "tools/list" && mode.tools > 0 {
        let tools: Vec<serde_json::Value> = (0..mode.tools)
            .map(|i| {
                serde_json::json!({"name": format!("tool_{i}"), "description": "a benchmark tool",
                    "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
            })
            .collect();
        let list = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"tools":tools}});
        return Ok(full(
            StatusCode::OK,
            Some("application/json"),
            serde_json::to_vec(&list).unwrap(),
        ));
    }
    let text = if mode.result_bytes == 0 {
        "ok".to_string()
    } else {
        "x".repeat(mode.result_bytes)
    };
    let result = move |sent: u128| {
        serde_json::to_vec(&serde_json::json!({"jsonrpc":"2.0","id":id,"result":{
            "content":[{"type":"text","text":text}],"sentUs":sent.to_string()}}))
        .unwrap()
    };
    if mode.sse_events == 0 {
        return Ok(full(
            StatusCode::OK,
            Some("application/json"),
            result(now_us()),
        ));
    }
    // SSE: progress notifications, then the result, each written when its time comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let events = mode.sse_events;
    let interval = mode.interval;
    let token = msg["params"]["_meta"]["progressToken"].clone();
    tokio::spawn(async move {
        for i in 1..events {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let note = serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress",
                "params":{"progressToken":token,"progress":i,"total":events - 1,"sentUs":now_us().to_string()}});
            let frame = format!("event: message\ndata: {note}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
        }
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let last = String::from_utf8(result(now_us())).unwrap();
        let _ = tx
            .send(Ok(Frame::data(Bytes::from(format!(
                "event: message\ndata: {last}\n\n"
            )))))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

/// A server stream that stays open: `first` (an acknowledgement) if given, then a message
/// every `every` (none when zero) until the client goes away.
fn server_stream(every: Duration, first: Option<String>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        if let Some(first) = first {
            let frame = format!("event: message\ndata: {first}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
        }
        if every.is_zero() {
            tx.closed().await;
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            let note = serde_json::json!({"jsonrpc":"2.0","method":"notifications/message",
                "params":{"level":"info","data":"tick","sentUs":now_us().to_string()}});
            let frame = format!("event: message\ndata: {note}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn arg(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = Arc::new(Mode {
        sse_events: arg(&args, "--sse").unwrap_or(0) as usize,
        result_bytes: arg(&args, "--result-bytes").unwrap_or(0) as usize,
        stream_interval: Duration::from_millis(arg(&args, "--stream-interval-ms").unwrap_or(0)),
        tools: arg(&args, "--tools").unwrap_or(0) as usize,
        interval: Duration::from_micros(arg(&args, "--interval-us").unwrap_or(0)),
        sessions: AtomicU64::new(0),
    });
    mcpgate_bench::serve(move |req| handle(mode.clone(), req)).await;
}
