//! What observability costs per request. Run with `cargo bench -p mcpgate --bench observability`.
//!
//! - `through the gateway`: one `tools/call` over loopback HTTP, client → gateway → in-process
//!   upstream → back, with observability off, metrics only, metrics + audit (file sink), and
//!   all three with every span exported over OTLP/HTTP to an in-process receiver. The
//!   differences between the rows are the cost; the loopback round trips dominate each row.
//! - `record one request`: only the observability work of one finished request (summary →
//!   metrics, audit record queued, span closed), without any I/O of the request itself.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use http_body_util::BodyExt as _;
use mcpgate::observability::{Observability, Summary};
use mcpgate::{Config, Gateway};

const CALL: &str = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_code","arguments":{"query":"fn main","repo":"mcpgate/mcpgate","limit":20}}}"#;

fn config(upstream: &str, observability: &str) -> Config {
    let yaml = format!("upstreams:\n  github:\n    url: {upstream}\n{observability}");
    Config::parse(&yaml, "bench.yaml", &|_| None).unwrap()
}

fn observability(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mcpgate-bench-obs-{}", std::process::id()));
    let audit = dir.join("audit.jsonl");
    let (otlp, upstream) = rt.block_on(async {
        let otlp = common::serve(
            axum::Router::new().route("/v1/traces", axum::routing::post(|_: Bytes| async { "" })),
        )
        .await;
        let upstream = common::serve(common::json_upstream()).await;
        (otlp, format!("{upstream}/mcp"))
    });
    let metrics = "observability:\n  metrics: {}\n".to_string();
    let audited = format!(
        "{metrics}  audit:\n    sink: file\n    path: {}\n",
        audit.display()
    );
    let everything = format!(
        "{audited}  tracing:\n    otlp_endpoint: {otlp}/v1/traces\n    sample_ratio: 1.0\n"
    );
    let tracing_cfg = config(&upstream, &everything);
    let provider = rt
        .block_on(async {
            mcpgate::observability::trace::init("text", tracing_cfg.observability.tracing.as_ref())
        })
        .unwrap();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut g = c.benchmark_group("through the gateway");
    for (name, obs) in [
        ("observability off", String::new()),
        ("metrics", metrics.clone()),
        ("metrics + audit", audited.clone()),
        ("metrics + audit + spans exported", everything.clone()),
    ] {
        let gw = Arc::new(Gateway::new(config(&upstream, &obs)));
        let url = rt.block_on(common::serve(mcpgate::router(gw))) + "/servers/github/mcp";
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(common::call(
                    &client,
                    &url,
                    CALL,
                    &[(
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    )],
                ))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("record one request");
    let body = mcpgate::mcp::ParsedBody::parse(CALL.as_bytes()).unwrap();
    for (name, obs) in [
        ("metrics", metrics),
        ("metrics + audit", audited),
        ("metrics + audit + span", everything),
    ] {
        let cfg = config(&upstream, &obs);
        let sessions = Arc::new(mcpgate::session::Sessions::new(&cfg.sessions).0);
        let obs =
            Arc::new(Observability::new(&cfg, prometheus::Registry::new(), sessions).unwrap());
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let span = obs.span("bench", "github", &http::HeaderMap::new());
                    let mut s = Summary::new("bench".into(), "github", Method::POST, span);
                    s.describe(&body);
                    s.upstream_status = Some(200);
                    s.upstream_seconds = Some(0.0001);
                    s.forwarded_tools = vec!["search_code".into()];
                    let response = Response::new(Body::from(Bytes::from_static(b"{}")));
                    let response = obs.finish(s, response);
                    black_box(response.into_body().collect().await.unwrap());
                })
            })
        });
    }
    g.finish();
    if let Some(p) = provider {
        p.shutdown();
    }
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, observability);
criterion_main!(benches);
