//! Many replicas: two `mcpgate` processes share a real `redis-server`.
//!
//! - A burst of Python SDK calls spread over both replicas is limited to the configured total,
//!   and the quota plugin's counters (kv in Redis) hold across replicas.
//! - One legacy session through a round-robin load balancer: initialized through one replica,
//!   continued through the other (calls, progress streams, the GET stream, DELETE), and through a
//!   replica restarted mid-session — the sealed session ids need no shared store.
//! - Redis restarted under load: every request either succeeds or gets a clear error (503,
//!   JSON-RPC -32014 with `fail_closed`; served anyway with `fail_open`), none hangs, and service
//!   resumes once Redis is back.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use mcpgate_e2e::services::{Balancer, RedisServer};
use mcpgate_e2e::*;
use serde_json::Value;

const KEY: &str = "replica-key-8d1f0c2b";
/// One session key for every replica (32 bytes, base64).
const SESSION_KEY: &str = "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn prefix(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{n}:", std::process::id())
}

/// A replica's config: API-key auth, Redis-backed rate limits and plugin kv.
fn config(upstream: &str, redis: &str, prefix: &str, on_redis_error: &str) -> String {
    format!(
        r#"sessions:
  key: {SESSION_KEY}
auth:
  type: api-key
  keys:
    - {{id: tester, key_env: REPLICA_KEY}}
redis:
  url: {redis}
  key_prefix: "{prefix}"
  timeout: 200
rate_limit:
  backend: redis
  on_redis_error: {on_redis_error}
  per_client: {{capacity: 100000, refill_rate: 1000}}
  tools:
    echo: {{capacity: 12, refill_rate: 0.001}}
plugin_runtime:
  dir: {plugins}
  kv: {{backend: redis}}
plugins:
  quota:
    file: quota.wasm
    grants: {{kv: true, metrics: true}}
    config:
      limits:
        - {{tools: [add], calls: 3}}
pipeline: [auth, rate_limit, quota]
upstreams:
  demo:
    url: {upstream}
"#,
        plugins = repo().join("plugins").display()
    )
}

fn replica(cfg: &std::path::Path) -> (Proc, String) {
    start_gateway(cfg, &[("REPLICA_KEY", KEY)])
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn limits_and_plugin_state_are_shared_by_two_replicas() {
    let redis = RedisServer::start();
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("replicas-burst");
    let cfg = dir.file(
        "gw.yaml",
        &config(&upstream, &redis.url(), &prefix("burst"), "fail_closed"),
    );
    let (_a, base_a) = replica(&cfg);
    let (_b, base_b) = replica(&cfg);
    let out = run_client(
        "py_replicas_client burst",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_replicas_client.py"))
            .args(["burst", "X-API-Key", KEY])
            .arg(format!("{base_a}/servers/demo/mcp"))
            .arg(format!("{base_b}/servers/demo/mcp"))
            .arg("30"),
        Duration::from_secs(180),
    );
    let burst = out["burst"].as_array().unwrap();
    let served: Vec<&Value> = burst
        .iter()
        .filter(|c| text(&c["result"]).starts_with("burst "))
        .collect();
    let limited: Vec<&Value> = burst
        .iter()
        .filter(|c| text(&c["result"]).contains("rate limit exceeded (tool limit)"))
        .collect();
    assert_eq!(
        served.len(),
        12,
        "the 12-token bucket is shared: {burst:#?}"
    );
    assert_eq!(limited.len(), 18, "every other call is refused: {burst:#?}");
    let limited_on: HashSet<&str> = limited.iter().map(|c| text(&c["replica"])).collect();
    assert_eq!(
        limited_on.len(),
        2,
        "both replicas refuse once the shared bucket is empty: {burst:#?}"
    );

    let quota: Vec<&str> = out["quota"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["result"]))
        .collect();
    assert_eq!(&quota[..3], &["1", "2", "3"], "{quota:?}");
    for q in &quota[3..] {
        assert!(
            q.contains("quota exceeded: 3 calls to add"),
            "the quota counted calls on both replicas (kv in Redis): {quota:?}"
        );
    }
}

#[test]
fn a_session_continues_on_any_replica_and_survives_a_restart() {
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("replicas-session");
    // No Redis here: the sealed session ids are all the replicas share.
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "sessions:\n  key: {SESSION_KEY}\nauth:\n  type: api-key\n  keys:\n    - {{id: tester, key_env: REPLICA_KEY}}\nupstreams:\n  demo:\n    url: {upstream}\n"
        ),
    );
    let (a, base_a) = replica(&cfg);
    let (b, base_b) = replica(&cfg);
    let lb = Balancer::start(&[("a", &base_a), ("b", &base_b)]);
    let go = dir.0.join("go");
    let mut client = Proc::spawn(
        "py_replicas_client session",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_replicas_client.py"))
            .args(["session", "X-API-Key", KEY])
            .arg(format!("{}/servers/demo/mcp", lb.url))
            .arg(&go),
    );
    client.wait_for("PHASE1 DONE", Duration::from_secs(120));

    // Replica b goes away mid-session and comes back as a new process on a new port.
    drop(b);
    let (_b2, base_b2) = replica(&cfg);
    lb.set_backends(&[("a", &base_a), ("b2", &base_b2)]);
    std::fs::write(&go, "").unwrap();
    let out = finish_client(client, Duration::from_secs(120));
    assert_eq!(
        out["before"],
        serde_json::json!([
            "before 0",
            "before 1",
            "before 2",
            "before 3",
            "counted to 3"
        ])
    );
    assert_eq!(
        out["after"],
        serde_json::json!(["after 0", "after 1", "after 2", "after 3", "counted to 2"])
    );
    assert_eq!(out["progress_before"], serde_json::json!([1.0, 2.0, 3.0]));
    assert_eq!(out["progress_after"], serde_json::json!([1.0, 2.0]));

    let hits = lb.hits();
    let init = hits
        .iter()
        .find(|h| h.rpc.as_deref() == Some("initialize"))
        .expect("initialize went through the balancer");
    let session = init.minted.clone().expect("a session id was minted");
    assert!(session.starts_with("mg1."), "{session}");
    let of_session: Vec<_> = hits
        .iter()
        .filter(|h| h.session.as_deref() == Some(session.as_str()))
        .collect();
    let served_by: HashSet<&str> = of_session.iter().map(|h| h.backend.as_str()).collect();
    assert_eq!(
        served_by,
        HashSet::from(["a", "b", "b2"]),
        "the session was served by every replica, the restarted one included: {of_session:#?}"
    );
    for h in &of_session {
        assert!(
            (200..300).contains(&h.status),
            "no request of the session failed: {h:?}"
        );
    }
    assert!(
        of_session.iter().any(|h| h.method == "GET"),
        "the client opened its GET stream through a replica: {of_session:#?}"
    );
    let delete = of_session
        .iter()
        .find(|h| h.method == "DELETE")
        .expect("the client ended its session");
    assert!(
        of_session
            .iter()
            .any(|h| h.rpc.as_deref() == Some("tools/call") && h.backend == "b2"),
        "the restarted replica served calls of the session: {of_session:#?}"
    );

    // The ended session is gone on both replicas: the one that saw the DELETE remembers it, the
    // other hears it from the upstream.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for base in [&base_a, &base_b2] {
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{base}/servers/demo/mcp"))
                .header("x-api-key", KEY)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-11-25")
                .header("accept", "application/json, text/event-stream")
                .json(&serde_json::json!({"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo","arguments":{"text":"late"}}}))
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(
            status, 404,
            "after DELETE (through {}), {base} refuses the session",
            delete.backend
        );
    }
    drop(a);
}

/// What one request under load came back with.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Outcome {
    Served,
    /// 503 with JSON-RPC -32014 saying the store is unavailable (not where it is).
    StoreUnavailable,
}

async fn call(client: &reqwest::Client, base: &str, i: u64) -> Result<Outcome, String> {
    let body = serde_json::json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{
        "name":"add","arguments":{"a":i,"b":1},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}});
    let resp = client
        .post(format!("{base}/servers/demo/mcp"))
        .header("x-api-key", KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "add")
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request {i}: {e}"))?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    let text = resp.text().await.map_err(|e| format!("body {i}: {e}"))?;
    match status {
        200 if text.contains(&format!("\"text\":\"{}\"", i + 1)) => Ok(Outcome::Served),
        503 if retry_after
            && text.contains("-32014")
            && text.contains("rate limit store unavailable")
            && !text.contains("127.0.0.1")
            && text.contains(&format!("\"id\":{i}")) =>
        {
            Ok(Outcome::StoreUnavailable)
        }
        _ => Err(format!("request {i}: {status} {text}")),
    }
}

/// Four workers call `add` back to back for `duration`; Redis is stopped at 25% and started
/// again at 50%. Returns each request's (sent at, outcome, latency).
fn load_through_a_redis_restart(
    base: &str,
    redis: &mut RedisServer,
    duration: Duration,
) -> Vec<(Duration, Result<Outcome, String>, Duration)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = Instant::now();
    let base = base.to_string();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let base = base.clone();
            rt.spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut out = Vec::new();
                let mut i = w * 1_000_000;
                while start.elapsed() < duration {
                    let sent = start.elapsed();
                    let outcome = call(&client, &base, i).await;
                    out.push((sent, outcome, start.elapsed() - sent));
                    i += 1;
                }
                out
            })
        })
        .collect();
    std::thread::sleep(duration / 4);
    redis.stop();
    std::thread::sleep(duration / 4);
    redis.restart();
    let mut all: Vec<_> = rt
        .block_on(futures_join(workers))
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(sent, _, _)| *sent);
    all
}

async fn futures_join<T: Send + 'static>(
    handles: Vec<tokio::task::JoinHandle<Vec<T>>>,
) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn a_redis_restart_under_load_loses_no_request_silently() {
    let mut redis = RedisServer::start();
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("replicas-restart");
    for on_error in ["fail_closed", "fail_open"] {
        // The quota plugin is not on this route's path: only the rate limiter uses Redis here.
        let cfg = dir.file(
            &format!("{on_error}.yaml"),
            &config(&upstream, &redis.url(), &prefix(on_error), on_error).replace(
                "pipeline: [auth, rate_limit, quota]",
                "pipeline: [auth, rate_limit]",
            ),
        );
        let (mut gw, base) = replica(&cfg);
        let results = load_through_a_redis_restart(&base, &mut redis, Duration::from_secs(6));
        let failures: Vec<&String> = results
            .iter()
            .filter_map(|(_, r, _)| r.as_ref().err())
            .collect();
        assert!(
            failures.is_empty(),
            "{on_error}: every request was served or told the store is unavailable: {failures:#?}"
        );
        let slowest = results.iter().map(|(_, _, l)| *l).max().unwrap();
        assert!(
            slowest < Duration::from_secs(5),
            "{on_error}: no request hung (slowest {slowest:?})"
        );
        let refused = results
            .iter()
            .filter(|(_, r, _)| *r == Ok(Outcome::StoreUnavailable))
            .count();
        if on_error == "fail_closed" {
            assert!(
                refused > 0,
                "fail_closed: calls were refused while Redis was down"
            );
        } else {
            assert_eq!(
                refused, 0,
                "fail_open: calls were served while Redis was down"
            );
        }
        // Service resumed: everything sent in the last second (Redis back for 2 s) was served.
        let tail: Vec<_> = results
            .iter()
            .filter(|(sent, _, _)| *sent > Duration::from_secs(5))
            .collect();
        assert!(!tail.is_empty());
        assert!(
            tail.iter().all(|(_, r, _)| *r == Ok(Outcome::Served)),
            "{on_error}: served again after the restart: {tail:#?}"
        );
        let lines = gw.drain().join("\n");
        assert!(
            lines.contains("redis unavailable") && lines.contains("redis reachable again"),
            "{on_error}: the outage and the recovery were logged:\n{lines}"
        );
    }
}

/// `tools/list` (charged like any request) through `base`; whether it was served.
fn listed(base: &str) -> bool {
    let c = Client::new(base, "demo", MODERN);
    let r = c.send("1", "tools/list", serde_json::json!({}));
    match r.status {
        200 => true,
        429 => false,
        other => panic!("unexpected {other}: {}", r.body),
    }
}

#[test]
fn leased_buckets_never_exceed_a_bucket_and_give_back_what_they_hold() {
    // A bucket of 200 that never refills, shared by two replicas through Redis: leases of 20
    // (a tenth of the bucket; lease_tokens' default, 64, allows it). Without refills, leasing can never admit
    // more than 200; a replica may refuse while the other holds up to 20 unspent tokens, and
    // those come back once the lease goes stale. In exact mode (lease_tokens: 0) the split is
    // exact at every moment.
    let redis = RedisServer::start();
    let (_server, upstream) = start_demo_server();
    let dir = TempDir::new("replicas-lease");
    for (mode, lease) in [("leased", ""), ("exact", "  lease_tokens: 0\n")] {
        let cfg = dir.file(
            &format!("{mode}.yaml"),
            &format!(
                "redis:\n  url: {}\n  key_prefix: \"{}\"\nrate_limit:\n  backend: redis\n{lease}  per_client: {{capacity: 200, refill_rate: 0}}\nupstreams:\n  demo:\n    url: {upstream}\n",
                redis.url(),
                prefix(mode)
            ),
        );
        let (_a, base_a) = replica(&cfg);
        let (_b, base_b) = replica(&cfg);
        let mut served = 0;
        for i in 0..260 {
            served += usize::from(listed(if i % 2 == 0 { &base_a } else { &base_b }));
        }
        if mode == "exact" {
            assert_eq!(served, 200, "exact: every token, never more");
            continue;
        }
        assert!(
            (200 - 20..=200).contains(&served),
            "leased: within one lease of the bucket: {served}"
        );
        // The leases go stale after lease_ttl (1 s) and their tokens back to Redis: one replica
        // can now spend exactly what is left, and no more.
        std::thread::sleep(Duration::from_secs(3));
        let mut more = 0;
        while listed(&base_a) {
            more += 1;
            assert!(more <= 200, "the bucket never empties");
        }
        assert_eq!(served + more, 200, "{served} + {more}");
        assert!(!listed(&base_b));
    }
}
