//! What one WebAssembly plugin stage adds per request, with a 1 KiB `tools/call` body: the
//! pipeline without stages, then with one plugin (fresh instance per call, the default; and with
//! `instances: reuse`). Needs the built plugins (scripts/build-plugins.sh). Run with
//! `cargo bench -p mcpgate --bench plugins`; the target is at most 15 µs added per request.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use mcpgate::Config;
use mcpgate::deps::Deps;
use mcpgate::mcp::ParsedBody;
use mcpgate::pipeline::{Outcome, Pipeline, RequestContext};
use mcpgate::plugins::Plugins;
use mcpgate::proxy::UpstreamClient;

/// A tools/call whose body is 1 KiB.
fn body() -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search","arguments":{"limit":20,"query":""#;
    let tail = r#""}}}"#;
    let filler = "fn main() { println(hello); } ".repeat(40);
    let mut text = format!("{head}{filler}");
    text.truncate(1024 - tail.len());
    text.push_str(tail);
    assert_eq!(text.len(), 1024);
    text.into_bytes()
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "accept",
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

fn setup(
    rt: &tokio::runtime::Runtime,
    plugins_yaml: &str,
) -> (Pipeline, Arc<mcpgate::config::Upstream>, Arc<Plugins>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins");
    let yaml = format!(
        "upstreams:\n  github:\n    url: http://127.0.0.1:1/mcp\nplugin_runtime:\n  dir: {dir}\n{plugins_yaml}"
    );
    let cfg = Config::parse(&yaml, "bench.yaml", &|_| None).unwrap();
    let plugins = rt
        .block_on(Plugins::load(&cfg, Deps::default()))
        .unwrap_or_else(|e| panic!("{e} (build the plugins first: scripts/build-plugins.sh)"));
    let built = mcpgate::stages::build(&cfg, &UpstreamClient::new(), &plugins, None, None, None);
    (
        built.pipelines["github"].clone(),
        cfg.upstreams[0].clone(),
        Arc::new(plugins),
    )
}

fn run(
    rt: &tokio::runtime::Runtime,
    p: &Pipeline,
    upstream: &Arc<mcpgate::config::Upstream>,
    headers: &HeaderMap,
    body: &[u8],
) {
    let parsed = ParsedBody::parse(black_box(body)).unwrap();
    let mut cx = RequestContext::new(
        "bench".into(),
        upstream.clone(),
        Method::POST,
        headers.clone(),
        Some(parsed),
    );
    cx.peer = Some([127, 0, 0, 1].into());
    let outcome = rt.block_on(p.on_request(&mut cx));
    assert!(matches!(outcome, Ok(Outcome::Forward)));
    black_box(cx);
}

fn plugins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let headers = headers();
    let body = body();
    let mut g = c.benchmark_group("one plugin stage, 1 KiB tools/call");
    for (name, yaml) in [
        ("no stages (baseline)", "pipeline: []\n"),
        (
            "template (sets a header), fresh instance",
            "plugins:\n  t:\n    file: template.wasm\n    config: {greeting: hi}\n",
        ),
        (
            "arg-guard (validates 2 arguments), fresh instance",
            "plugins:\n  g:\n    file: arg_guard.wasm\n    config:\n      tools:\n        search:\n          arguments:\n            query: {type: string, max_length: 4000}\n            limit: {type: integer, maximum: 100}\n",
        ),
        (
            "arg-guard, reused instances",
            "plugins:\n  g:\n    file: arg_guard.wasm\n    instances: reuse\n    config:\n      tools:\n        search:\n          arguments:\n            query: {type: string, max_length: 4000}\n            limit: {type: integer, maximum: 100}\n",
        ),
        (
            "redact (9 regex detectors), fresh instance",
            "plugins:\n  r:\n    file: redact.wasm\n    config: {results: false}\n",
        ),
        (
            "redact, reused instances",
            "plugins:\n  r:\n    file: redact.wasm\n    instances: reuse\n    config: {results: false}\n",
        ),
    ] {
        let (p, upstream, _plugins) = setup(&rt, yaml);
        g.bench_function(name, |b| {
            b.iter(|| run(&rt, &p, &upstream, &headers, &body))
        });
    }
    g.finish();
}

criterion_group!(benches, plugins);
criterion_main!(benches);
