//! The Redis backends against a real `redis-server`: the rate limiter's script gives the memory
//! backend's answers and headers, stays exact under concurrent load from several "replicas"
//! (separate connections), and Redis being unreachable is a clear, bounded failure with
//! `fail_closed` and a pass with `fail_open`; the plugins' kv store behaves as the memory one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mcpgate::plugins::KvStore;
use mcpgate::plugins::kv::{KvError, MemoryKv, redis::RedisKv};
use mcpgate::redis::{Redis, RedisConfig};
use mcpgate::stages::ratelimit::redis::RedisBackend;
use mcpgate::stages::ratelimit::{Backend, BucketKey, Decision, Limit, MemoryBackend};
use mcpgate_e2e::services::RedisServer;
use support::*;

fn prefix(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{tag}-{n}:")
}

fn redis_at(url: &str, prefix: &str) -> Redis {
    let config = RedisConfig {
        url: url.to_string(),
        key_prefix: prefix.to_string(),
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
    };
    Redis::new(&config, &prometheus::Registry::new()).unwrap()
}

fn limit(capacity: f64, refill_rate: f64) -> Limit {
    Limit {
        capacity,
        refill_rate,
    }
}

/// A decision with the remaining tokens rounded (time passes between two backends' calls).
fn rounded(d: Decision) -> String {
    match d {
        Decision::Allowed(s) => format!(
            "allowed {}/{} reset {}",
            s.remaining.floor(),
            s.limit,
            s.reset.as_secs()
        ),
        Decision::Limited {
            level,
            retry_after,
            snapshot,
        } => format!(
            "limited at {level} retry {} remaining {}/{}",
            retry_after.as_secs(),
            snapshot.remaining.floor(),
            snapshot.limit
        ),
    }
}

#[tokio::test]
async fn the_script_answers_as_the_memory_backend_does() {
    let server = RedisServer::start();
    let redis = RedisBackend::new(redis_at(&server.url(), &prefix("same")));
    let memory = MemoryBackend::new(1000);
    let client = BucketKey::Client("alice".into());
    let server_key = BucketKey::Server("github".into());
    let tool = BucketKey::Tool {
        client: "alice".into(),
        server: "github".into(),
        tool: "create_issue".into(),
    };
    let all = vec![
        (client.clone(), limit(10.0, 0.001)),
        (server_key.clone(), limit(5.0, 0.001)),
        (tool.clone(), limit(3.0, 0.001)),
    ];
    let without_tool = &all[..2];
    // (buckets, charge) in order; both backends must agree at every step.
    let steps: Vec<(&[(BucketKey, Limit)], bool)> = vec![
        (without_tool, false),
        (&all, true),
        (&all, true),
        (&all, false),
        (&all, true),
        (&all, true), // tool bucket empty: limited at "tool", nothing charged
        (without_tool, true),
        (without_tool, true),
        (without_tool, true), // server bucket (5) empty now
        (without_tool, false),
    ];
    let mut seen = Vec::new();
    for (i, (buckets, charge)) in steps.into_iter().enumerate() {
        let m = rounded(memory.take(buckets, charge).await.unwrap());
        let r = rounded(redis.take(buckets, charge).await.unwrap());
        assert_eq!(r, m, "step {i}");
        seen.push(m);
    }
    assert!(seen[5].starts_with("limited at tool"), "{seen:#?}");
    assert!(seen[8].starts_with("limited at server"), "{seen:#?}");

    // A caller's buckets per route (`per_client_scope: route`, MCPGate's `defaults`) are one
    // per route in both backends.
    let on = |server: &str| {
        vec![(
            BucketKey::ClientOnServer {
                client: "alice".into(),
                server: server.into(),
            },
            limit(2.0, 0.001),
        )]
    };
    let (github, jira) = (on("github"), on("jira"));
    let mut seen = Vec::new();
    for buckets in [&github, &github, &github, &jira] {
        let m = rounded(memory.take(buckets, true).await.unwrap());
        let r = rounded(redis.take(buckets, true).await.unwrap());
        assert_eq!(r, m);
        seen.push(m);
    }
    assert!(seen[2].starts_with("limited at client"), "{seen:#?}");
    assert!(seen[3].starts_with("allowed 1/2"), "{seen:#?}");

    // Refunds (a request refused by a later stage) give tokens back, a listed bucket once per
    // listing, never beyond capacity, alike in both backends.
    let twice = vec![github[0].clone(), github[0].clone(), jira[0].clone()];
    memory.refund(&twice).await.unwrap();
    redis.refund(&twice).await.unwrap();
    for buckets in [&github, &jira] {
        let m = rounded(memory.take(buckets, false).await.unwrap());
        let r = rounded(redis.take(buckets, false).await.unwrap());
        assert_eq!(r, m);
        assert!(m.starts_with("allowed 2/2"), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_concurrent_load_from_several_replicas() {
    let server = RedisServer::start();
    let prefix = prefix("exact");
    // Four "replicas": four connections, each its own Redis handle.
    let replicas: Vec<Arc<RedisBackend>> = (0..4)
        .map(|_| Arc::new(RedisBackend::new(redis_at(&server.url(), &prefix))))
        .collect();
    let buckets = vec![
        (BucketKey::Server("s".into()), limit(100.0, 0.0)),
        (BucketKey::Client("c".into()), limit(1000.0, 0.0)),
    ];
    let mut tasks = Vec::new();
    for (i, backend) in replicas.iter().cycle().take(16).enumerate() {
        let backend = backend.clone();
        let buckets = buckets.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0;
            for _ in 0..25 {
                match backend.take(&buckets, true).await {
                    Ok(Decision::Allowed(_)) => allowed += 1,
                    Ok(Decision::Limited { level, .. }) => assert_eq!(level, "server"),
                    Err(e) => panic!("task {i}: {e}"),
                }
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    assert_eq!(
        allowed, 100,
        "exactly the capacity, out of 400 attempts on 4 connections"
    );
    // Refused requests charged nothing: the client bucket lost exactly 100.
    let peek = replicas[0].take(&buckets[1..], false).await.unwrap();
    assert!(
        matches!(&peek, Decision::Allowed(s) if s.remaining == 900.0),
        "{peek:?}"
    );
}

fn gateway_yaml(upstream: &str, backend: &str, extra: &str) -> String {
    format!(
        "upstreams:\n  s:\n    url: {upstream}\nrate_limit:\n  backend: {backend}\n  per_server: {{capacity: 2, refill_rate: 0.01}}\n{extra}"
    )
}

async fn three_calls(url: &str) -> Vec<(u16, Vec<(String, String)>, serde_json::Value)> {
    let mut out = Vec::new();
    for i in 0..3 {
        let resp = post_with(
            url,
            &modern_call(i, "t"),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "t"),
            ],
        )
        .await;
        let status = resp.status().as_u16();
        let headers = [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "retry-after",
        ]
        .iter()
        .filter_map(|h| {
            resp.headers()
                .get(*h)
                .map(|v| (h.to_string(), v.to_str().unwrap().to_string()))
        })
        .collect();
        out.push((status, headers, resp.json().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn the_gateway_sends_the_same_headers_and_429s_with_either_backend() {
    let server = RedisServer::start();
    let up =
        upstream(|s: Seen| async move { json_response(200, ok_result(&s.json()["id"])) }).await;
    let memory = gateway(&gateway_yaml(&up.url(), "memory", "")).await;
    let redis = gateway(&gateway_yaml(
        &up.url(),
        "redis",
        &format!(
            "redis:\n  url: {}\n  key_prefix: \"{}\"\n",
            server.url(),
            prefix("headers")
        ),
    ))
    .await;
    let m = three_calls(&memory.url("s")).await;
    let r = three_calls(&redis.url("s")).await;
    assert_eq!(r, m);
    assert_eq!(m[2].0, 429, "{m:?}");
    assert_eq!(m[2].2["error"]["code"], -32005);
    assert_eq!(up.requests().len(), 4, "two calls through each gateway");
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_or_open_as_configured() {
    let up =
        upstream(|s: Seen| async move { json_response(200, ok_result(&s.json()["id"])) }).await;
    // Nothing listens there.
    let dead = format!("redis://127.0.0.1:{}/0", mcpgate_e2e::free_port());
    let audit =
        std::env::temp_dir().join(format!("mcpgate-redis-audit-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let redis_section = |on: &str| {
        let audited = if on == "fail_closed" {
            format!("  audit: {{sink: file, path: {}}}\n", audit.display())
        } else {
            String::new()
        };
        format!(
            "  on_redis_error: {on}\nredis:\n  url: {dead}\n  timeout: 300\n  connect_timeout: 300\nobservability:\n  metrics: {{}}\n{audited}"
        )
    };
    let closed = gateway(&gateway_yaml(
        &up.url(),
        "redis",
        &redis_section("fail_closed"),
    ))
    .await;
    let open = gateway(&gateway_yaml(
        &up.url(),
        "redis",
        &redis_section("fail_open"),
    ))
    .await;
    for i in 0..3 {
        let resp = post(&closed.url("s"), &legacy_call(i, "t"), None).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["id"], i);
        assert_eq!(body["error"]["code"], -32014);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("rate limit store unavailable") && !message.contains("127.0.0.1"),
            "the client learns the store is down, not where it is: {message}"
        );
        let resp = post(&open.url("s"), &legacy_call(i, "t"), None).await;
        assert_eq!(resp.status(), 200, "fail_open: served without a limit");
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
    }
    assert_eq!(up.requests().len(), 3, "fail_closed forwarded nothing");
    let metrics = client()
        .get(format!("{}/metrics", closed.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mcpgate_redis_up 0"), "{metrics}");
    let errors: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("mcpgate_redis_errors_total{") && l.contains("use=\"rate_limit\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(errors, 3, "{metrics}");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("mcpgate_rate_limit_rejections_total{") && !l.ends_with(" 0")),
        "an unavailable store is not counted as a rate-limit rejection: {metrics}"
    );
    // The audit log names the cause.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.lines().count() >= 3 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = std::fs::remove_file(&audit);
    let decisions: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decisions.len(), 3, "{records}");
    for r in &decisions {
        assert_eq!(r["decision"], "state_unavailable", "{r}");
        assert_eq!(r["stage"], "rate_limit", "{r}");
        assert_eq!(r["status"], 503, "{r}");
    }
}

#[tokio::test]
async fn plugin_kv_in_redis_behaves_as_the_memory_store() {
    let server = RedisServer::start();
    let redis = RedisKv::new(
        redis_at(&server.url(), &prefix("kv")),
        mcpgate::config::OnError::FailClosed,
    );
    let memory = MemoryKv::new(1000, 1 << 20);
    let stores: [(&str, &dyn KvStore); 2] = [("memory", &memory), ("redis", &redis)];
    for (name, kv) in stores {
        let ttl = Some(Duration::from_secs(30));
        assert_eq!(kv.incr("a", "n", 2, ttl).await, Ok(2), "{name}");
        assert_eq!(kv.incr("a", "n", 3, None).await, Ok(5), "{name}");
        assert_eq!(kv.get("a", "n").await, Ok(Some(b"5".to_vec())), "{name}");
        assert_eq!(
            kv.get("b", "n").await,
            Ok(None),
            "{name}: namespaces are apart"
        );
        kv.set("a", "s", b"text".to_vec(), None).await.unwrap();
        assert!(
            matches!(kv.incr("a", "s", 1, None).await, Err(KvError::Invalid(_))),
            "{name}"
        );
        assert_eq!(kv.get("a", "s").await, Ok(Some(b"text".to_vec())), "{name}");
        kv.delete("a", "s").await.unwrap();
        assert_eq!(kv.get("a", "s").await, Ok(None), "{name}");
        assert!(
            matches!(kv.get("a", "").await, Err(KvError::Invalid(_))),
            "{name}"
        );
        // The first call's ttl sets the window; a later one does not extend it.
        assert_eq!(
            kv.incr("a", "w", 1, Some(Duration::from_millis(400))).await,
            Ok(1),
            "{name}"
        );
        assert_eq!(
            kv.incr("a", "w", 1, Some(Duration::from_secs(60))).await,
            Ok(2),
            "{name}"
        );
        kv.set("a", "gone", b"x".to_vec(), Some(Duration::from_millis(400)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            kv.incr("a", "w", 1, None).await,
            Ok(1),
            "{name}: the window expired"
        );
        assert_eq!(kv.get("a", "gone").await, Ok(None), "{name}");
    }
}

#[tokio::test]
async fn plugin_kv_without_redis_is_unavailable_or_empty() {
    let dead = format!("redis://127.0.0.1:{}/0", mcpgate_e2e::free_port());
    let closed = RedisKv::new(redis_at(&dead, "x:"), mcpgate::config::OnError::FailClosed);
    assert!(
        matches!(closed.incr("p", "k", 1, None).await, Err(KvError::Unavailable(m)) if m.contains("127.0.0.1"))
    );
    assert!(matches!(
        closed.get("p", "k").await,
        Err(KvError::Unavailable(_))
    ));
    let open = RedisKv::new(redis_at(&dead, "x:"), mcpgate::config::OnError::FailOpen);
    assert_eq!(
        open.incr("p", "k", 4, None).await,
        Ok(4),
        "counts from zero"
    );
    assert_eq!(open.get("p", "k").await, Ok(None));
    assert_eq!(open.set("p", "k", b"v".to_vec(), None).await, Ok(()));
    // Bad input is refused before Redis is asked, whatever the mode.
    assert!(matches!(open.get("p", "").await, Err(KvError::Invalid(_))));
}
