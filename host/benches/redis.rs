//! What the Redis backend costs per request next to the memory backend. Starts its own
//! `redis-server` on a free loopback port (`scripts/setup.sh` installs it). Run with
//! `cargo bench -p mcpgate --bench redis`.
//!
//! - `rate limit decision`: one request's decision over three buckets (client, server, tool),
//!   one at a time, and 32 at once (the per-request time is the row's time / 32: concurrent
//!   requests share the one multiplexed connection, so Redis round trips overlap).
//! - `through the gateway`: one `tools/call` over loopback HTTP with the rate-limit stage on
//!   the memory backend, then on Redis; the difference is what Redis adds to a request.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mcpgate::redis::{Redis, RedisConfig};
use mcpgate::stages::ratelimit::redis::RedisBackend;
use mcpgate::stages::ratelimit::{Backend, BucketKey, Limit, MemoryBackend};
use mcpgate::{Config, Gateway};
use mcpgate_e2e::services::RedisServer;

const CALL: &str = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_code","arguments":{"query":"fn main"}}}"#;

fn huge() -> Limit {
    Limit {
        capacity: 1e12,
        refill_rate: 1e9,
    }
}

fn buckets(i: usize) -> Vec<(BucketKey, Limit)> {
    let client: Arc<str> = format!("client-{}", i % 64).into();
    vec![
        (BucketKey::Client(client.clone()), huge()),
        (BucketKey::Server("github".into()), huge()),
        (
            BucketKey::Tool {
                client,
                server: "github".into(),
                tool: "search_code".into(),
            },
            huge(),
        ),
    ]
}

fn backends(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis_config = RedisConfig {
        url: server.url(),
        key_prefix: "bench:".into(),
        timeout: std::time::Duration::from_secs(1),
        connect_timeout: std::time::Duration::from_secs(1),
    };
    let redis = rt
        .block_on(async { Redis::new(&redis_config, &prometheus::Registry::new()) })
        .unwrap();
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new(100_000));
    let on_redis: Arc<dyn Backend> = Arc::new(RedisBackend::new(redis));
    let sets: Vec<_> = (0..64).map(buckets).collect();

    let mut g = c.benchmark_group("rate limit decision");
    for (name, backend) in [("memory", &memory), ("redis", &on_redis)] {
        let mut i = 0;
        g.bench_function(format!("{name}, one request"), |b| {
            b.iter(|| {
                i += 1;
                let d = rt.block_on(backend.take(&sets[i % 64], true)).unwrap();
                black_box(d);
            })
        });
        g.bench_function(format!("{name}, 32 concurrent requests"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let all = (0..32).map(|j| backend.take(&sets[j], true));
                    for d in futures_util::future::join_all(all).await {
                        black_box(d.unwrap());
                    }
                })
            })
        });
    }
    g.finish();

    let upstream = rt.block_on(common::serve(common::json_upstream()));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut g = c.benchmark_group("through the gateway");
    let limits = "  per_client: {capacity: 1000000000000, refill_rate: 1000000000}\n  per_server: {capacity: 1000000000000, refill_rate: 1000000000}\n  per_tool: {capacity: 1000000000000, refill_rate: 1000000000}\n";
    for (name, section) in [
        ("no rate limit", String::new()),
        (
            "rate limit, memory",
            format!("rate_limit:\n  backend: memory\n{limits}"),
        ),
        (
            "rate limit, redis",
            format!(
                "redis:\n  url: {}\n  key_prefix: \"bench-gw:\"\nrate_limit:\n  backend: redis\n{limits}",
                server.url()
            ),
        ),
    ] {
        let yaml = format!("upstreams:\n  github:\n    url: {upstream}/mcp\n{section}");
        let cfg = Config::parse(&yaml, "bench.yaml", &|_| None).unwrap();
        let gw = rt.block_on(async { Arc::new(Gateway::new(cfg)) });
        let url = rt.block_on(common::serve(mcpgate::router(gw))) + "/servers/github/mcp";
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(common::call(&client, &url, CALL, &[])))
        });
    }
    g.finish();
    drop(server);
}

criterion_group!(benches, backends);
criterion_main!(benches);
