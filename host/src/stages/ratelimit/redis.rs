//! Buckets in Redis, shared by every replica: one script (`buckets.lua`) takes a token from all
//! of a request's buckets or from none, atomically on the server, with the same arithmetic as
//! [`super::Bucket`] — so both backends give the same answers and the same headers.
//!
//! Keys (after `redis.key_prefix`): `rl:c:<client>`, `rl:s:<server>` and
//! `rl:t:<server>:<client length>:<client>:<tool>` (server names have no `:`; the length keeps
//! client and tool apart). All of a request's keys go to one script call, so Redis Cluster
//! (keys in several slots) is not supported; a single primary (with replicas or Sentinel in
//! front) is.

use std::sync::LazyLock;

use super::{Backend, BucketKey, Decision, Limit, Snapshot};
use crate::pipeline::BoxFuture;
use crate::redis::{Redis, Use};

static SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(include_str!("buckets.lua")));
static REFUND: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(include_str!("refund.lua")));
static LEASE: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(include_str!("lease.lua")));

/// The Redis backend of the rate limiter.
#[derive(Clone)]
pub struct RedisBackend {
    redis: Redis,
}

impl RedisBackend {
    pub fn new(redis: Redis) -> Self {
        RedisBackend { redis }
    }
}

/// The Redis key of a bucket.
fn redis_key(prefix: &str, key: &BucketKey) -> String {
    match key {
        BucketKey::Client(c) => format!("{prefix}rl:c:{c}"),
        // Route names are letters, digits, `-` and `_`: the first `:` ends the server.
        BucketKey::ClientOnServer { client, server } => format!("{prefix}rl:cs:{server}:{client}"),
        BucketKey::Server(s) => format!("{prefix}rl:s:{s}"),
        BucketKey::Tool {
            client,
            server,
            tool,
        } => format!("{prefix}rl:t:{server}:{}:{client}:{tool}", client.len()),
    }
}

impl Backend for RedisBackend {
    fn take<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
        charge: bool,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        Box::pin(async move {
            let mut call = SCRIPT.prepare_invoke();
            for (key, _) in buckets {
                call.key(redis_key(self.redis.prefix(), key));
            }
            call.arg(if charge { "1" } else { "0" });
            for (_, limit) in buckets {
                call.arg(limit.capacity.to_string())
                    .arg(limit.refill_rate.to_string());
            }
            let reply: Vec<String> = self.invoke(call).await?;
            decode(buckets, &reply)
        })
    }

    fn refund<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let counted: Vec<(&BucketKey, &Limit, u32)> =
                buckets.iter().map(|(k, l)| (k, l, 1)).collect();
            self.give_back(&counted).await
        })
    }
}

impl RedisBackend {
    /// Runs one of the bucket scripts (bounded and counted as the rate limiter's use of Redis).
    async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        call: ::redis::ScriptInvocation<'static>,
    ) -> Result<T, String> {
        self.redis
            .run(Use::RateLimit, |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Gives `count` tokens back to each bucket listed (never beyond its capacity).
    pub async fn give_back(&self, buckets: &[(&BucketKey, &Limit, u32)]) -> Result<(), String> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut call = REFUND.prepare_invoke();
        for (key, limit, count) in buckets {
            call.key(redis_key(self.redis.prefix(), key));
            call.arg(limit.capacity.to_string()).arg(count.to_string());
        }
        let _: i64 = self.invoke(call).await?;
        Ok(())
    }

    /// Leases tokens (`lease.lua`): for each bucket with `want > 0`, at least one token and up
    /// to `want`, all or nothing. `Ok(Ok(grants))`: per bucket, the tokens granted and those
    /// left in Redis; `Ok(Err(refusal))`: the empty bucket's state, nothing taken.
    pub async fn lease(
        &self,
        buckets: &[(BucketKey, Limit)],
        wants: &[u32],
    ) -> Result<Result<Vec<(u32, f64)>, Decision>, String> {
        let mut call = LEASE.prepare_invoke();
        for ((key, limit), want) in buckets.iter().zip(wants) {
            call.key(redis_key(self.redis.prefix(), key));
            call.arg(limit.capacity.to_string())
                .arg(limit.refill_rate.to_string())
                .arg(want.to_string());
        }
        let reply: Vec<String> = self.invoke(call).await?;
        decode_lease(buckets, &reply)
    }
}

/// `lease.lua`'s reply.
fn decode_lease(
    buckets: &[(BucketKey, Limit)],
    reply: &[String],
) -> Result<Result<Vec<(u32, f64)>, Decision>, String> {
    let bad = || format!("unexpected reply from the lease script: {reply:?}");
    match reply.first().map(String::as_str) {
        Some("1") if reply.len() == 2 * buckets.len() + 1 => reply[1..]
            .chunks(2)
            .map(|pair| {
                let granted = pair[0].parse::<u32>().map_err(|_| bad())?;
                let left = pair[1].parse::<f64>().map_err(|_| bad())?;
                Ok((granted, left))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Ok),
        Some("0") => decode(buckets, reply).map(Err),
        _ => Err(bad()),
    }
}

/// The script's reply as a [`Decision`], exactly as [`super::MemoryBackend`] would state it.
fn decode(buckets: &[(BucketKey, Limit)], reply: &[String]) -> Result<Decision, String> {
    let bad = || format!("unexpected reply from the bucket script: {reply:?}");
    let number = |s: &String| s.parse::<f64>().map_err(|_| bad());
    match reply.first().map(String::as_str) {
        Some("1") if reply.len() == buckets.len() + 1 => {
            let tokens = reply[1..]
                .iter()
                .map(number)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Decision::Allowed(super::tightest(
                buckets.iter().map(|(_, l)| l).zip(tokens),
            )))
        }
        Some("0") if reply.len() == 3 => {
            let i: usize = reply[1].parse().map_err(|_| bad())?;
            let (key, limit) = buckets.get(i.wrapping_sub(1)).ok_or_else(bad)?;
            let remaining = number(&reply[2])?;
            Ok(Decision::Limited {
                level: key.level(),
                retry_after: limit.retry_after(remaining),
                snapshot: Snapshot::of(limit, remaining),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn buckets() -> Vec<(BucketKey, Limit)> {
        vec![
            (
                BucketKey::Client("alice".into()),
                Limit {
                    capacity: 10.0,
                    refill_rate: 1.0,
                },
            ),
            (
                BucketKey::Server("github".into()),
                Limit {
                    capacity: 4.0,
                    refill_rate: 0.5,
                },
            ),
        ]
    }

    #[test]
    fn replies_decode_like_the_memory_backend() {
        let b = buckets();
        let allowed = decode(&b, &["1".into(), "9".into(), "1".into()]).unwrap();
        assert_eq!(
            allowed,
            Decision::Allowed(Snapshot {
                limit: 4.0,
                remaining: 1.0,
                reset: Duration::from_secs(6),
            })
        );
        let limited = decode(&b, &["0".into(), "2".into(), "0.5".into()]).unwrap();
        assert_eq!(
            limited,
            Decision::Limited {
                level: "server",
                retry_after: Duration::from_secs(1),
                snapshot: Snapshot {
                    limit: 4.0,
                    remaining: 0.5,
                    reset: Duration::from_secs(7),
                },
            }
        );
        for junk in [
            vec![],
            vec!["1".to_string()],
            vec!["0".into(), "3".into(), "0".into()],
            vec!["0".into(), "0".into(), "0".into()],
            vec!["1".into(), "x".into(), "1".into()],
        ] {
            assert!(decode(&b, &junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn keys_cannot_collide() {
        let tool = |client: &str, tool: &str| BucketKey::Tool {
            client: client.into(),
            server: "s".into(),
            tool: tool.into(),
        };
        let keys = [
            redis_key("p:", &tool("a:b", "c")),
            redis_key("p:", &tool("a", "b:c")),
            redis_key("p:", &BucketKey::Client("a".into())),
            redis_key("p:", &BucketKey::Server("a".into())),
            redis_key(
                "p:",
                &BucketKey::ClientOnServer {
                    client: "a".into(),
                    server: "s".into(),
                },
            ),
            redis_key(
                "p:",
                &BucketKey::ClientOnServer {
                    client: "s:a".into(),
                    server: "s".into(),
                },
            ),
        ];
        assert_eq!(keys[0], "p:rl:t:s:3:a:b:c");
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }
}
