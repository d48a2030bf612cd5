//! What the built-in stages cost per request: envelope parse alone, then auth (API key), rate
//! limit (three bucket levels), policy (ten rules with globs), and all three; plus filtering a
//! `tools/list` response (50 tools; 1,000, all allowed or a tenth denied); and a new session in a
//! full session table. Run with
//! `cargo bench -p mcpgate --bench stages`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderValue, Method};
use mcpgate::Config;
use mcpgate::mcp::ParsedBody;
use mcpgate::pipeline::{Outcome, Pipeline, RequestContext};
use mcpgate::proxy::UpstreamClient;

const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_code","arguments":{"query":"fn main","repo":"mcpgate/mcpgate","limit":20}}}"#;

/// The built-in stages as every benchmark configures them (`bench/builtins.yaml`).
const BUILTINS: &str = include_str!("../../bench/builtins.yaml");

fn config(pipeline: &str) -> Config {
    let yaml = format!(
        "{BUILTINS}pipeline: {pipeline}\nupstreams:\n  github:\n    url: http://127.0.0.1:1/mcp\n"
    );
    Config::parse(&yaml, "bench.yaml", &|k| {
        (k == "BENCH_API_KEY").then(|| "bench-secret".to_string())
    })
    .unwrap()
}

fn pipeline(stages: &str) -> (Pipeline, Arc<mcpgate::config::Upstream>) {
    let cfg = config(stages);
    let built = mcpgate::stages::build(
        &cfg,
        &UpstreamClient::new(),
        &Default::default(),
        None,
        None,
        None,
    );
    (built.pipelines["github"].clone(), cfg.upstreams[0].clone())
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("bench-secret"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "accept",
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    h
}

fn run(p: &Pipeline, upstream: &Arc<mcpgate::config::Upstream>, headers: &HeaderMap) {
    let body = ParsedBody::parse(black_box(BODY)).unwrap();
    let mut cx = RequestContext::new(
        "bench".into(),
        upstream.clone(),
        Method::POST,
        headers.clone(),
        Some(body),
    );
    cx.peer = Some([127, 0, 0, 1].into());
    // No stage awaits anything with these backends: one poll completes the pipeline.
    let outcome = p
        .on_request(&mut cx)
        .now_or_never()
        .expect("stages complete without waiting");
    assert!(matches!(outcome, Ok(Outcome::Forward)));
    black_box(cx);
}

/// The envelope alone: parsing a legacy call, and a 2026-07-28 call with its routing headers
/// checked against the body.
fn envelope(c: &mut Criterion) {
    let modern = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_code","arguments":{"query":"fn main","repo":"mcpgate/mcpgate","limit":20},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let mut h = headers();
    h.insert(
        "mcp-protocol-version",
        HeaderValue::from_static("2026-07-28"),
    );
    h.insert("mcp-method", HeaderValue::from_static("tools/call"));
    h.insert("mcp-name", HeaderValue::from_static("search_code"));
    let mut g = c.benchmark_group("envelope");
    g.bench_function("parse a legacy tools/call", |b| {
        b.iter(|| black_box(ParsedBody::parse(black_box(BODY)).unwrap()))
    });
    g.bench_function(
        "parse a 2026-07-28 tools/call + validate its routing headers",
        |b| {
            b.iter(|| {
                let body = ParsedBody::parse(black_box(modern)).unwrap();
                for msg in &body.messages {
                    mcpgate::mcp::headers::validate(black_box(&h), msg).unwrap();
                }
                black_box(body)
            })
        },
    );
    g.finish();
}

fn stages(c: &mut Criterion) {
    let headers = headers();
    let mut g = c.benchmark_group("stages per request");
    for (name, list) in [
        ("envelope only", "[]"),
        ("auth", "[auth]"),
        ("rate_limit", "[rate_limit]"),
        ("policy", "[policy]"),
        ("auth + rate_limit + policy", "[auth, rate_limit, policy]"),
    ] {
        let (p, upstream) = pipeline(list);
        g.bench_function(name, |b| b.iter(|| run(&p, &upstream, &headers)));
    }
    g.finish();

    // Filtering a tools/list response for the caller.
    let (p, upstream) = pipeline("[auth, policy]");
    let ids = Arc::new(
        mcpgate::session::Sessions::new(
            &Config::parse(
                "upstreams:\n  u:\n    url: http://127.0.0.1:1/mcp\n",
                "bench",
                &|_| None,
            )
            .unwrap()
            .sessions,
        )
        .0,
    );
    // 50 tools of which a fifth are denied (create_* for this caller is allowed; admin_* is
    // not); 1,000 tools shaped like bench-upstream's, all allowed (the text goes on as it came)
    // or one in ten denied (the list is rewritten).
    let list_of = |n: usize, name: &dyn Fn(usize) -> String| {
        let tools: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"name": name(i), "description": "a benchmark tool",
                    "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
            })
            .collect();
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
    };
    let lists = [
        (
            "policy: filter a 50-tool tools/list",
            list_of(50, &|i| match i % 5 {
                0 => format!("create_thing_{i}"),
                1 => format!("admin_{i}"),
                _ => format!("search_{i}"),
            }),
        ),
        (
            "policy: a 1,000-tool tools/list, all allowed",
            list_of(1000, &|i| format!("tool_{i}")),
        ),
        (
            "policy: a 1,000-tool tools/list, 100 denied",
            list_of(1000, &|i| {
                if i % 10 == 0 {
                    format!("admin_{i}")
                } else {
                    format!("tool_{i}")
                }
            }),
        ),
    ];
    let request = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for (name, list) in lists {
        c.bench_function(name, |b| {
            let mut cx = RequestContext::new(
                "bench".into(),
                upstream.clone(),
                Method::POST,
                headers.clone(),
                Some(ParsedBody::parse(request).unwrap()),
            );
            p.on_request(&mut cx).now_or_never().unwrap().unwrap();
            let hooks = p.hook_requests(&mut cx, &ids).unwrap();
            // The upstream answers under the id the request was forwarded with.
            let forwarded = cx.body.as_ref().unwrap().messages[0].id.clone().unwrap();
            let mut answer = list.clone();
            answer["id"] = serde_json::from_str(forwarded.get()).unwrap();
            let answer = serde_json::to_vec(&answer).unwrap();
            b.iter(|| {
                let out = hooks.process(&cx, &answer).now_or_never().unwrap();
                assert!(!matches!(out, mcpgate::pipeline::Processed::Refused(_)));
                black_box(out);
            })
        });
    }
}

/// A new legacy session when the table already tracks `sessions.max_active` (100,000): making
/// room must not scan the table (it did, twice, under the table's one lock).
fn sessions(c: &mut Criterion) {
    let cfg = Config::parse(
        "sessions:\n  key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n  max_active: 100000\nupstreams:\n  u:\n    url: http://127.0.0.1:1/mcp\n",
        "bench",
        &|_| None,
    )
    .unwrap();
    let (sessions, _) = mcpgate::session::Sessions::new(&cfg.sessions);
    for i in 0..100_000 {
        sessions.mint("u", &format!("up-{i}"), Some("alice"));
    }
    assert_eq!(sessions.active_count(), 100_000);
    let mut n = 0u64;
    c.bench_function("sessions: mint into a full table of 100,000", |b| {
        b.iter(|| {
            n += 1;
            black_box(sessions.mint("u", &format!("new-{n}"), Some("alice")))
        })
    });
}

criterion_group!(benches, envelope, stages, sessions);
criterion_main!(benches);
