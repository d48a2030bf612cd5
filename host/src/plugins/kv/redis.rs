//! The plugins' `kv` in Redis, so plugin state (quota counters) is shared by every replica.
//!
//! Keys: `<redis.key_prefix>kv:<plugin>:<key>` (plugin names have no `:`). Values are plain
//! strings, counters are Redis integers: `get` of a counter returns its decimal text, as the
//! memory store does. `incr` sets the expiry only when it creates the key (one script), so a
//! window is never extended by later calls — the memory store's rule.
//!
//! While Redis is unavailable, `on_redis_error` decides: `fail_closed` (the default) hands the
//! plugin `unavailable` and the plugin chooses (the quota plugin's `on_kv_error`); `fail_open`
//! answers as an empty store that drops writes (reads find nothing, counters count from zero).

use std::sync::LazyLock;
use std::time::Duration;

use super::{BoxFuture, KvError, KvStore, check};
use crate::config::OnError;
use crate::redis::{Failure, Redis, Use};

/// INCRBY that sets the expiry only on the call that created the key.
static INCR: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '' then
  if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return value",
    )
});

pub struct RedisKv {
    redis: Redis,
    on_error: OnError,
}

impl RedisKv {
    pub fn new(redis: Redis, on_error: OnError) -> Self {
        RedisKv { redis, on_error }
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}kv:{namespace}:{key}", self.redis.prefix())
    }

    /// A failure as the plugin sees it, or `None` when `fail_open` answers in its place.
    fn failed(&self, failure: Failure) -> Option<KvError> {
        match failure {
            Failure::Rejected(m) => Some(KvError::Invalid(m)),
            Failure::Unavailable(_) if self.on_error == OnError::FailOpen => None,
            Failure::Unavailable(m) => Some(KvError::Unavailable(m)),
        }
    }
}

fn millis(ttl: Option<Duration>) -> String {
    ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).to_string())
        .unwrap_or_default()
}

impl RedisKv {
    /// Runs one command; with Redis unavailable and `fail_open`, answers `when_open` instead.
    async fn query<T: ::redis::FromRedisValue>(
        &self,
        cmd: ::redis::Cmd,
        when_open: T,
    ) -> Result<T, KvError> {
        let got = self
            .redis
            .run(
                Use::Kv,
                |mut c| async move { cmd.query_async(&mut c).await },
            )
            .await;
        got.or_else(|f| self.failed(f).map_or(Ok(when_open), Err))
    }
}

impl KvStore for RedisKv {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        Box::pin(async move {
            check(key, None)?;
            let mut cmd = ::redis::cmd("GET");
            cmd.arg(self.key(namespace, key));
            self.query(cmd, None).await
        })
    }

    fn set<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            check(key, Some(&value))?;
            // An expiry of zero: gone at once, as in the memory store.
            let gone = ttl.is_some_and(|t| t.is_zero());
            let mut cmd = ::redis::cmd(if gone { "DEL" } else { "SET" });
            cmd.arg(self.key(namespace, key));
            if !gone {
                cmd.arg(value);
                if ttl.is_some() {
                    cmd.arg("PX").arg(millis(ttl));
                }
            }
            self.query(cmd, ()).await
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            check(key, None)?;
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(self.key(namespace, key));
            self.query(cmd, ()).await
        })
    }

    fn incr<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        Box::pin(async move {
            check(key, None)?;
            let k = self.key(namespace, key);
            let mut call = INCR.prepare_invoke();
            call.key(k).arg(delta).arg(millis(ttl));
            let counted = self
                .redis
                .run(
                    Use::Kv,
                    |mut c| async move { call.invoke_async(&mut c).await },
                )
                .await;
            counted.or_else(|f| match self.failed(f) {
                // "value is not an integer or out of range": the memory store's two refusals.
                Some(KvError::Invalid(m)) if m.contains("not an integer") => Err(KvError::Invalid(
                    "the value is not a counter, or the counter would overflow".into(),
                )),
                Some(e) => Err(e),
                None => Ok(delta),
            })
        })
    }
}
