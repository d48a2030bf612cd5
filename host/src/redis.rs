//! Redis: the state every replica shares (rate-limit buckets, the plugins' `kv`).
//!
//! One [`Redis`] per process: a `redis` crate [`ConnectionManager`] (one multiplexed connection,
//! reconnected with exponential backoff by the crate) behind two guarantees of our own:
//!
//! - **No hung request.** Every operation is bounded by `redis.timeout`, waiting for a
//!   reconnection included.
//! - **Fail fast while Redis is down.** After a connection failure or a timeout the breaker
//!   opens: operations fail at once, except one probe per backoff interval (25 ms doubling to
//!   500 ms), so an outage costs requests no latency and recovery is noticed within half a
//!   second. The first failure and the recovery are logged once each; every failure is counted.
//!
//! What a failure does to the request is each user's choice (`on_redis_error`): the rate limiter
//! and the kv store decide, not this module.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub const DEFAULT_KEY_PREFIX: &str = "mcpgate:";
pub const DEFAULT_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;

const PROBE_MIN: Duration = Duration::from_millis(25);
const PROBE_MAX: Duration = Duration::from_millis(500);

/// The `redis:` section, validated.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` or `unix:///path/to/socket`.
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one server.
    pub key_prefix: String,
    /// Bound on one operation, including any wait for a reconnection.
    pub timeout: Duration,
    /// Bound on one connection attempt.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid redis url>".to_string(),
    }
}

/// Checks a `redis.url` the way the client will read it. `Err` is a message for the config error.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| format!("`{}` is not a URL: {e}", redacted(url)))?;
    match parsed.scheme() {
        "redis" | "unix" | "redis+unix" => {}
        "rediss" => {
            return Err("TLS to Redis (rediss://) is not built in; reach Redis over a private network or a TLS sidecar (stunnel, a service mesh) with redis://".into());
        }
        other => {
            return Err(format!(
                "unsupported scheme `{other}` (expected redis:// or unix://)"
            ));
        }
    }
    redis::Client::open(url.trim())
        .map(drop)
        .map_err(|e| format!("`{}` is not a Redis URL: {e}", redacted(url)))
}

/// Who is asking: a metric label, and the word in log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    RateLimit,
    Kv,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::RateLimit => "rate_limit",
            Use::Kv => "kv",
        }
    }
}

/// What a failed operation tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Redis cannot be reached, did not answer in time, or is not accepting commands.
    Unavailable(String),
    /// Redis answered with an error about this operation (a wrong type, a script error).
    Rejected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unavailable(m) | Failure::Rejected(m) => f.write_str(m),
        }
    }
}

/// Failure kinds, as the `kind` label of `mcpgate_redis_errors_total` (indexes into `KINDS`).
#[derive(Clone, Copy)]
enum Kind {
    Timeout,
    Connection,
    BreakerOpen,
    Rejected,
}
const KINDS: [&str; 4] = ["timeout", "connection", "breaker_open", "rejected"];
const USES: [Use; 2] = [Use::RateLimit, Use::Kv];

struct Metrics {
    up: IntGauge,
    /// `[use][kind]`, resolved at start: recording takes no lock.
    errors: [[IntCounter; 4]; 2],
    duration: [Histogram; 2],
}

impl Metrics {
    fn new(registry: &prometheus::Registry) -> prometheus::Result<Metrics> {
        let up = IntGauge::new(
            "mcpgate_redis_up",
            "1 while the last Redis operation succeeded, 0 after a connection failure or timeout",
        )?;
        let errors = IntCounterVec::new(
            prometheus::Opts::new(
                "mcpgate_redis_errors_total",
                "Failed Redis operations by use (rate_limit, kv) and kind (timeout, connection, breaker_open, rejected)",
            ),
            &["use", "kind"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcpgate_redis_op_duration_seconds",
                "Time of one successful Redis operation (a bucket script, a kv command)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5,
            ]),
            &["use"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let errors = USES.map(|u| KINDS.map(|k| errors.with_label_values(&[u.as_str(), k])));
        let duration = USES.map(|u| duration.with_label_values(&[u.as_str()]));
        up.set(1);
        Ok(Metrics {
            up,
            errors,
            duration,
        })
    }

    fn error(&self, what: Use, kind: Kind) {
        self.errors[what as usize][kind as usize].inc();
    }
}

/// Open / closed state of the breaker, lock-free.
struct Breaker {
    epoch: Instant,
    down: AtomicBool,
    /// Milliseconds since `epoch` before which no probe is let through.
    next_probe: AtomicU64,
    backoff_ms: AtomicU64,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this operation may go to Redis: always while closed; while open, one probe per
    /// backoff interval.
    fn admit(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe.load(Ordering::Acquire);
        if now < next {
            return false;
        }
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        self.next_probe
            .compare_exchange(next, now + backoff, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Records a connection failure; true if the breaker was closed until now.
    fn trip(&self) -> bool {
        let was_up = !self.down.swap(true, Ordering::AcqRel);
        let backoff = if was_up {
            PROBE_MIN.as_millis() as u64
        } else {
            (self.backoff_ms.load(Ordering::Relaxed) * 2).min(PROBE_MAX.as_millis() as u64)
        };
        self.backoff_ms.store(backoff, Ordering::Relaxed);
        self.next_probe
            .fetch_max(self.now_ms() + backoff, Ordering::AcqRel);
        was_up
    }

    /// Records a success; true if the breaker was open until now.
    fn reset(&self) -> bool {
        self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel)
    }
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    target: String,
    breaker: Breaker,
    metrics: Metrics,
}

/// The process's Redis handle; cheap to clone.
#[derive(Clone)]
pub struct Redis(Arc<Inner>);

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.0.target)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Prepares the connection (made on first use, so the gateway starts while Redis is still
    /// down) and registers the `mcpgate_redis_*` series. Must run inside a tokio runtime.
    pub fn new(config: &RedisConfig, registry: &prometheus::Registry) -> Result<Redis, String> {
        let target = redacted(&config.url);
        let client = redis::Client::open(config.url.trim())
            .map_err(|e| format!("redis.url `{target}`: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout))
            .set_min_delay(PROBE_MIN)
            .set_max_delay(PROBE_MAX)
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("redis.url `{target}`: {e}"))?;
        let metrics = Metrics::new(registry).map_err(|e| format!("redis metrics: {e}"))?;
        Ok(Redis(Arc::new(Inner {
            conn,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            target,
            breaker: Breaker {
                epoch: Instant::now(),
                down: AtomicBool::new(false),
                next_probe: AtomicU64::new(0),
                backoff_ms: AtomicU64::new(PROBE_MIN.as_millis() as u64),
            },
            metrics,
        })))
    }

    /// The configured key prefix (`mcpgate:` by default).
    pub fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// Runs one operation on the shared connection, bounded by `redis.timeout` and the breaker.
    pub async fn run<T, F, Fut>(&self, what: Use, op: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = &*self.0;
        if !inner.breaker.admit() {
            inner.metrics.error(what, Kind::BreakerOpen);
            return Err(Failure::Unavailable(format!(
                "redis at {} is unreachable (reconnecting)",
                inner.target
            )));
        }
        let started = Instant::now();
        let (kind, message) =
            match tokio::time::timeout(inner.timeout, op(inner.conn.clone())).await {
                Ok(Ok(value)) => {
                    inner.metrics.duration[what as usize].observe(started.elapsed().as_secs_f64());
                    if inner.breaker.reset() {
                        inner.metrics.up.set(1);
                        tracing::info!(redis = %inner.target, "redis reachable again");
                    }
                    return Ok(value);
                }
                Ok(Err(e)) if is_rejection(&e) => {
                    inner.metrics.error(what, Kind::Rejected);
                    return Err(Failure::Rejected(e.to_string()));
                }
                Ok(Err(e)) => {
                    let kind = if e.is_timeout() {
                        Kind::Timeout
                    } else {
                        Kind::Connection
                    };
                    (kind, format!("redis at {}: {e}", inner.target))
                }
                Err(_) => (
                    Kind::Timeout,
                    format!(
                        "redis at {} did not answer within {} ms",
                        inner.target,
                        inner.timeout.as_millis()
                    ),
                ),
            };
        inner.metrics.error(what, kind);
        if inner.breaker.trip() {
            inner.metrics.up.set(0);
            tracing::warn!(redis = %inner.target, error = %message, use_ = what.as_str(), "redis unavailable; each use applies its on_redis_error until it is back");
        }
        Err(Failure::Unavailable(message))
    }
}

/// Redis answered, and the answer is about this operation, not about Redis's health.
fn is_rejection(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ResponseError | ServerErrorKind::ExecAbort | ServerErrorKind::NoPerm
        ) | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_redacted() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("unix:///run/redis.sock").is_ok());
        assert!(check_url("rediss://h:6380").unwrap_err().contains("TLS"));
        assert!(check_url("http://h").unwrap_err().contains("scheme `http`"));
        let e = check_url("not a url :pw@").unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
        assert_eq!(
            redacted("redis://user:s3cret@h:1/2"),
            "redis://user:***@h:1/2"
        );
        assert!(
            !format!(
                "{:?}",
                RedisConfig {
                    url: "redis://:s3cret@h".into(),
                    key_prefix: String::new(),
                    timeout: Duration::ZERO,
                    connect_timeout: Duration::ZERO,
                }
            )
            .contains("s3cret")
        );
    }

    #[test]
    fn breaker_lets_one_probe_through_per_interval() {
        let b = Breaker {
            epoch: Instant::now(),
            down: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(25),
        };
        assert!(b.admit() && b.admit(), "closed: everything goes through");
        assert!(b.trip(), "the first failure is reported");
        assert!(!b.trip(), "later ones are not");
        assert!(!b.admit(), "open: no probe before the backoff");
        std::thread::sleep(Duration::from_millis(120));
        assert!(b.admit(), "one probe after the backoff");
        assert!(!b.admit(), "and only one");
        assert!(b.reset(), "a success closes it, reported once");
        assert!(!b.reset());
        assert!(b.admit());
    }
}
