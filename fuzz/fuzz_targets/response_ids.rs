//! Response-id matching: which upstream messages answer a request whose response a stage
//! inspects (policy list filtering, plugins' response hooks).
//!
//! The gateway forwards such a request under an id of its own (`mg1r.…`, sealed) and recognises
//! the answer by it. An upstream may re-spell that id (`\u` escapes, `\/`), batch answers, mix
//! in answers to other requests, forge ids or send garbage. Whatever it sends: never a panic,
//! never an answer under one of the gateway's ids passed through uninspected (fail closed), and
//! what is passed on carries the client's own id, never the gateway's.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use mcpgate::config::{SessionConfig, Upstream};
use mcpgate::mcp::{Message, ParsedBody};
use mcpgate::pipeline::{
    BoxFuture, Pipeline, Processed, Reply, RequestContext, ResponseVerdict, Stage, Verdict,
};
use mcpgate::session::Sessions;
use mcpgate_fuzz::{is_response, member, messages, ready};
use serde_json::Value;

const OURS: &str = "mg1r.";

/// Inspects `tools/list` answers and marks them, as a list-filtering stage rewrites them.
struct Marker;

impl Stage for Marker {
    fn name(&self) -> &str {
        "marker"
    }
    fn on_request<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Continue })
    }
    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.method() == "tools/list"
    }
    fn hooks_responses(&self) -> bool {
        true
    }
    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _request: &'a Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let Some(response) = response.tree() else {
                return ResponseVerdict::Refuse("unreadable");
            };
            match response.get_mut("result").and_then(Value::as_object_mut) {
                Some(result) => {
                    result.insert("marked".into(), true.into());
                    ResponseVerdict::Modified
                }
                None => ResponseVerdict::Unchanged,
            }
        })
    }
}

#[derive(Arbitrary, Debug)]
enum ClientId {
    Number(i32),
    Text(String),
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
enum Spelling {
    /// The id the gateway forwarded, as it was sent.
    Forwarded(u8),
    /// The forwarded id with these characters written as `\u00XX` (and `/` as `\/`).
    Escaped(u8, Vec<u8>),
    /// The forwarded id cut short or extended.
    Cut(u8, u8),
    /// The client's own id (an upstream that answers under ids it never received).
    Client(u8),
    /// Anything.
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Shape {
    Result,
    Error,
    Both,
    Neither,
    ScalarResult,
}

#[derive(Arbitrary, Debug)]
struct Answer {
    id: Spelling,
    shape: Shape,
    /// Repeat the id member (a duplicate key).
    duplicate_id: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Each request: its id, and whether it is a hooked `tools/list` (else `ping`).
    requests: Vec<(ClientId, bool)>,
    answers: Vec<Answer>,
    batch: bool,
    /// Raw bytes instead of the answers above.
    raw: Option<Vec<u8>>,
}

static IDS: LazyLock<Arc<Sessions>> = LazyLock::new(|| {
    Arc::new(
        Sessions::new(&SessionConfig {
            key: Some([9; 32]),
            ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
            max_active: 16,
        })
        .0,
    )
});

fn client_id(id: &ClientId) -> String {
    match id {
        ClientId::Number(n) => n.to_string(),
        ClientId::Text(s) => serde_json::to_string(s).unwrap(),
        ClientId::Raw(b) => [
            "1.50",
            "-0",
            "1e2",
            "\"\\u0031\"",
            "\"mg1r.fake\"",
            "{}",
            "[1]",
        ][usize::from(*b) % 7]
            .to_string(),
    }
}

fn spell(id: &Spelling, forwarded: &[String], clients: &[String]) -> String {
    let pick = |list: &[String], i: &u8| list[usize::from(*i) % list.len()].clone();
    match id {
        Spelling::Forwarded(i) => serde_json::to_string(&pick(forwarded, i)).unwrap(),
        Spelling::Escaped(i, which) => {
            let text = pick(forwarded, i);
            let mut out = String::from("\"");
            for (n, c) in text.chars().enumerate() {
                if which
                    .iter()
                    .any(|w| usize::from(*w) % text.len().max(1) == n)
                {
                    if c == '/' {
                        out.push_str("\\/");
                    } else {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    }
                } else {
                    out.push(c);
                }
            }
            out.push('"');
            out
        }
        Spelling::Cut(i, n) => {
            // By characters: a client's own id (kept on requests nobody hooks) may be any text.
            let text = pick(forwarded, i);
            let n = usize::from(*n);
            let len = text.chars().count();
            let text: String = if n < len {
                text.chars().take(n).collect()
            } else {
                text + &"A".repeat(n - len)
            };
            serde_json::to_string(&text).unwrap()
        }
        Spelling::Client(i) => pick(clients, i),
        Spelling::Other(s) => serde_json::to_string(s).unwrap(),
    }
}

fn answer(a: &Answer, forwarded: &[String], clients: &[String]) -> String {
    let id = spell(&a.id, forwarded, clients);
    let mut members = vec![r#""jsonrpc":"2.0""#.to_string(), format!(r#""id":{id}"#)];
    if a.duplicate_id {
        members.push(r#""id":7"#.into());
    }
    match a.shape {
        Shape::Result => members.push(r#""result":{"tools":[]}"#.into()),
        Shape::Error => members.push(r#""error":{"code":-1,"message":"no"}"#.into()),
        Shape::Both => {
            members.push(r#""result":{}"#.into());
            members.push(r#""error":{"code":-1,"message":"no"}"#.into());
        }
        Shape::Neither => members.push(r#""method":"notifications/x""#.into()),
        Shape::ScalarResult => members.push(r#""result":3"#.into()),
    }
    format!("{{{}}}", members.join(","))
}

/// The string id of a response message the way a peer reads it.
fn answered_id(message: &Value) -> Option<&str> {
    if !is_response(message) {
        return None;
    }
    member(message, "id")?.as_str()
}

fuzz_target!(|input: Input| {
    if input.requests.is_empty() || input.requests.len() > 8 {
        return;
    }
    let clients: Vec<String> = input.requests.iter().map(|(id, _)| client_id(id)).collect();
    let requests: Vec<String> = input
        .requests
        .iter()
        .zip(&clients)
        .map(|((_, hooked), id)| {
            let method = if *hooked { "tools/list" } else { "ping" };
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#)
        })
        .collect();
    let Ok(body) = ParsedBody::parse(format!("[{}]", requests.join(",")).as_bytes()) else {
        return;
    };
    let upstream = Arc::new(Upstream {
        name: "route".into(),
        url: "http://127.0.0.1:9/mcp".parse().unwrap(),
        timeout: Duration::from_secs(1),
        stream_idle_timeout: None,
        credential: None,
        pipeline: None,
        stdio: None,
        federation: None,
    });
    let mut cx = RequestContext::new(
        "fuzz".into(),
        upstream,
        http::Method::POST,
        HeaderMap::new(),
        Some(body),
    );
    let pipeline = Pipeline::new(vec![Arc::new(Marker)]);
    let Ok(hooks) = pipeline.hook_requests(&mut cx, &IDS) else {
        return;
    };
    let forwarded: Vec<String> = cx
        .body
        .as_ref()
        .unwrap()
        .messages
        .iter()
        .filter_map(|m| serde_json::from_str::<String>(m.id.as_deref()?.get()).ok())
        .filter(|id| id.starts_with(OURS))
        .collect();
    let data = match (&input.raw, forwarded.is_empty()) {
        (Some(raw), _) => raw.clone(),
        (None, true) => return,
        (None, false) => {
            let answers: Vec<String> = input
                .answers
                .iter()
                .map(|a| answer(a, &forwarded, &clients))
                .collect();
            if input.batch {
                format!("[{}]", answers.join(",")).into_bytes()
            } else if let Some(first) = answers.first() {
                first.clone().into_bytes()
            } else {
                return;
            }
        }
    };
    let processed = ready(hooks.process(&cx, &data));
    let Ok(peer) = serde_json::from_slice::<Value>(&data) else {
        return;
    };
    let carries_ours = messages(&peer)
        .into_iter()
        .any(|m| answered_id(m).is_some_and(|id| id.starts_with(OURS)));
    match processed {
        Processed::Untouched => assert!(
            !carries_ours,
            "an answer under a gateway id passed uninspected: {}",
            String::from_utf8_lossy(&data)
        ),
        Processed::Replaced(bytes) => {
            let out: Value = serde_json::from_slice(&bytes).expect("the gateway writes JSON");
            // The client's ids, as the client wrote them (one may itself start with `mg1r.`).
            let own: Vec<Value> = clients
                .iter()
                .filter_map(|c| serde_json::from_str(c).ok())
                .collect();
            for m in messages(&out) {
                let leaked = answered_id(m).is_some_and(|id| {
                    id.starts_with(OURS) && !own.iter().any(|c| c.as_str() == Some(id))
                });
                assert!(
                    !leaked,
                    "a gateway id reached the client: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        Processed::Refused(_) => {}
    }
});
