//! Rate limiting: token buckets per client, per server and per tool.
//!
//! Each JSON-RPC request takes one token from every bucket that applies to it: the caller's
//! (`per_client`: one for every route, or one on each route with `per_client_scope: route`, which
//! is what MCPGate's `defaults` meant), the route's, shared by all callers (`per_server`), and for
//! `tools/call` the (caller, server, tool) bucket (`per_tool`). If any bucket is empty the request is refused with
//! 429, `Retry-After` and a JSON-RPC error carrying its id, and no bucket is charged. Every response
//! on a limited route carries `X-RateLimit-Limit/Remaining/Reset` for the tightest bucket.
//! Notifications and the client's responses are not charged; a modern MRTR retry is a new
//! request and is charged like any other.
//!
//! The bucket arithmetic lives in [`Bucket`]; where buckets are kept is the [`Backend`] seam:
//! [`MemoryBackend`] here, [`redis::RedisBackend`] (one atomic script over the same arithmetic)
//! for many replicas. When the backend fails, `on_redis_error` decides: `fail_open` serves the
//! request unlimited, `fail_closed` refuses it with 503 and JSON-RPC -32014.

pub mod config;
pub mod lease;
pub mod redis;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::config::{OnError, StateBackend};
use crate::error::{GatewayError, StageKind};
use crate::mcp::jsonrpc;
use crate::pipeline::{BoxFuture, RequestContext, Stage, Verdict};

/// Seconds as a `Duration`, saturating: a tiny refill rate must not overflow (and panic).
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// A bucket's shape: it holds at most `capacity` tokens and gains `refill_rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub capacity: f64,
    pub refill_rate: f64,
}

impl Limit {
    /// How long an untouched bucket takes to refill completely: after that it is the same as a
    /// new one, so the backend may forget it.
    pub fn full_after(&self, tokens: f64) -> Duration {
        let missing = (self.capacity - tokens).max(0.0);
        if missing == 0.0 {
            Duration::ZERO
        } else if self.refill_rate <= 0.0 {
            Duration::MAX
        } else {
            secs(missing / self.refill_rate)
        }
    }

    /// Time until a bucket holding `tokens` has one token.
    pub fn retry_after(&self, tokens: f64) -> Duration {
        if tokens >= 1.0 {
            Duration::ZERO
        } else if self.refill_rate <= 0.0 {
            Duration::MAX
        } else {
            secs((1.0 - tokens) / self.refill_rate)
        }
    }
}

/// One token bucket. Time is tokio's clock, so tests can pause and advance it.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(limit: &Limit, now: Instant) -> Self {
        Bucket {
            tokens: limit.capacity,
            updated: now,
        }
    }

    fn refill(&mut self, limit: &Limit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.refill_rate).min(limit.capacity);
        self.updated = now;
    }

    /// Tokens available now (without changing the bucket).
    pub fn available(&self, limit: &Limit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * limit.refill_rate).min(limit.capacity)
    }

    /// A full bucket is the same as a new one: the backend may forget it.
    pub fn is_full(&self, limit: &Limit, now: Instant) -> bool {
        self.available(limit, now) >= limit.capacity
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, limit: &Limit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn give_back(&mut self, limit: &Limit) {
        self.tokens = (self.tokens + 1.0).min(limit.capacity);
    }

    /// Time until one token is available.
    pub fn retry_after(&self, limit: &Limit) -> Duration {
        limit.retry_after(self.tokens)
    }
}

/// Which bucket: the level and the identity it counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Client(Arc<str>),
    /// The caller's bucket on one route (`per_client_scope: route`).
    ClientOnServer {
        client: Arc<str>,
        server: Arc<str>,
    },
    Server(Arc<str>),
    Tool {
        client: Arc<str>,
        server: Arc<str>,
        tool: Arc<str>,
    },
}

impl BucketKey {
    pub fn level(&self) -> &'static str {
        match self {
            BucketKey::Client(_) | BucketKey::ClientOnServer { .. } => "client",
            BucketKey::Server(_) => "server",
            BucketKey::Tool { .. } => "tool",
        }
    }
}

/// The state of the tightest bucket after a decision, for the response headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub limit: f64,
    pub remaining: f64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

impl Snapshot {
    /// A bucket of this shape holding `remaining` tokens.
    pub fn of(limit: &Limit, remaining: f64) -> Snapshot {
        Snapshot {
            limit: limit.capacity,
            remaining,
            reset: limit.full_after(remaining),
        }
    }
}

/// The tightest of several buckets (the lowest share of its capacity left; the first on a tie),
/// as both backends report it.
pub fn tightest<'a>(buckets: impl IntoIterator<Item = (&'a Limit, f64)>) -> Snapshot {
    let mut out: Option<Snapshot> = None;
    for (limit, remaining) in buckets {
        if out
            .as_ref()
            .is_none_or(|t| remaining / limit.capacity < t.remaining / t.limit)
        {
            out = Some(Snapshot::of(limit, remaining));
        }
    }
    out.unwrap_or(Snapshot {
        limit: 0.0,
        remaining: 0.0,
        reset: Duration::ZERO,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allowed(Snapshot),
    /// Refused by the bucket at `level`; nothing was charged.
    Limited {
        level: &'static str,
        retry_after: Duration,
        snapshot: Snapshot,
    },
}

/// Where buckets live. Async so a networked backend (Redis) fits the same seam.
pub trait Backend: Send + Sync + 'static {
    /// Takes one token from every bucket, or from none if any is empty. With `charge: false` it
    /// only reports the buckets' state (for responses that are not charged).
    fn take<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
        charge: bool,
    ) -> BoxFuture<'a, Result<Decision, String>>;

    /// Gives one token back to every bucket listed (a bucket listed twice gets two), never
    /// beyond its capacity: the charge of a request that was not forwarded after all.
    fn refund<'a>(&'a self, buckets: &'a [(BucketKey, Limit)])
    -> BoxFuture<'a, Result<(), String>>;
}

/// Which buckets an admin request means: every field given must match (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct BucketFilter {
    pub client: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
}

impl BucketFilter {
    fn selects(&self, key: &BucketKey) -> bool {
        let (client, server, tool) = match key {
            BucketKey::Client(c) => (Some(c), None, None),
            BucketKey::ClientOnServer { client, server } => (Some(client), Some(server), None),
            BucketKey::Server(s) => (None, Some(s), None),
            BucketKey::Tool {
                client,
                server,
                tool,
            } => (Some(client), Some(server), Some(tool)),
        };
        let matches = |want: &Option<String>, have: Option<&Arc<str>>| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| h.as_ref() == w))
        };
        matches(&self.client, client) && matches(&self.server, server) && matches(&self.tool, tool)
    }
}

/// One bucket as [`MemoryBackend::inspect`] sees it.
#[derive(Debug, Clone)]
pub struct BucketState {
    pub key: BucketKey,
    pub limit: Limit,
    /// Tokens available now.
    pub tokens: f64,
}

/// The tokens one request took, kept in its context until it is forwarded (or refunded).
#[derive(Debug, Clone, Default)]
struct Charged(Vec<(BucketKey, Limit)>);

const SHARDS: usize = 16;

/// Buckets in process memory: sharded maps, bounded, idle buckets forgotten.
pub struct MemoryBackend {
    shards: Vec<Mutex<HashMap<BucketKey, (Bucket, Limit)>>>,
    max_buckets: usize,
    max_per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl MemoryBackend {
    pub fn new(max_buckets: usize) -> Self {
        MemoryBackend {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_buckets,
            max_per_shard: max_buckets.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, key: &BucketKey) -> &Mutex<HashMap<BucketKey, (Bucket, Limit)>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Forgets buckets that have refilled completely (indistinguishable from new ones). A shard
    /// whose lock a panicking thread poisoned is swept all the same (its buckets are plain data),
    /// so the background sweeper never dies of it.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, (b, l)| !b.is_full(l, now));
        }
    }

    /// The bound it was built with (`rate_limit.max_buckets`).
    pub fn max_buckets(&self) -> usize {
        self.max_buckets
    }

    /// The buckets `filter` selects, with the tokens they hold now (the admin API's view).
    /// Buckets not listed are full (a forgotten bucket is the same as a new one).
    pub fn inspect(&self, filter: &BucketFilter) -> Vec<BucketState> {
        let now = Instant::now();
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            out.extend(shard.iter().filter(|(key, _)| filter.selects(key)).map(
                |(key, (bucket, limit))| BucketState {
                    key: key.clone(),
                    limit: *limit,
                    tokens: bucket.available(limit, now),
                },
            ));
        }
        out
    }

    /// Refills the buckets `filter` selects (forgets them: a new bucket is full); how many.
    pub fn reset(&self, filter: &BucketFilter) -> usize {
        let mut reset = 0;
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|key, _| !filter.selects(key));
            reset += before - shard.len();
        }
        reset
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_bucket<R>(
        &self,
        key: &BucketKey,
        limit: &Limit,
        now: Instant,
        f: impl FnOnce(&mut Bucket) -> R,
    ) -> R {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The common case: the bucket exists (one lookup, no key copy).
        if let Some(entry) = shard.get_mut(key) {
            entry.1 = *limit;
            return f(&mut entry.0);
        }
        if shard.len() >= self.max_per_shard {
            // Full: forget refilled buckets first; if that frees nothing, forget the fullest
            // bucket (the one closest to a fresh one), so memory stays bounded.
            shard.retain(|_, (b, l)| !b.is_full(l, now));
            if shard.len() >= self.max_per_shard
                && let Some(k) = shard
                    .iter()
                    .max_by(|a, b| {
                        let fa = a.1.0.available(&a.1.1, now) / a.1.1.capacity;
                        let fb = b.1.0.available(&b.1.1, now) / b.1.1.capacity;
                        fa.total_cmp(&fb)
                    })
                    .map(|(k, _)| k.clone())
            {
                shard.remove(&k);
            }
        }
        let entry = shard
            .entry(key.clone())
            .or_insert_with(|| (Bucket::new(limit, now), *limit));
        f(&mut entry.0)
    }

    /// The state of the tightest bucket, charging nothing.
    pub fn peek_now(&self, buckets: &[(BucketKey, Limit)]) -> Snapshot {
        let now = Instant::now();
        tightest(buckets.iter().map(|(key, limit)| {
            let shard = self
                .shard(key)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let remaining = shard
                .get(key)
                .map_or(limit.capacity, |(b, _)| b.available(limit, now));
            (limit, remaining)
        }))
    }

    /// The synchronous core of [`Backend::refund`]. A bucket forgotten meanwhile (it refilled
    /// and was swept) is already full.
    pub fn refund_now(&self, buckets: &[(BucketKey, Limit)]) {
        for (key, limit) in buckets {
            let mut shard = self
                .shard(key)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((bucket, _)) = shard.get_mut(key) {
                bucket.give_back(limit);
            }
        }
    }

    /// The synchronous core of [`Backend::take`].
    pub fn take_now(&self, buckets: &[(BucketKey, Limit)]) -> Decision {
        let now = Instant::now();
        let mut taken = Vec::with_capacity(buckets.len());
        for (key, limit) in buckets {
            let outcome = self.with_bucket(key, limit, now, |b| {
                if b.try_take(limit, now) {
                    Ok(b.tokens)
                } else {
                    Err(b.tokens)
                }
            });
            match outcome {
                Ok(remaining) => taken.push((key, limit, remaining)),
                Err(remaining) => {
                    for (k, l, _) in taken {
                        self.with_bucket(k, l, now, |b| b.give_back(l));
                    }
                    return Decision::Limited {
                        level: key.level(),
                        retry_after: limit.retry_after(remaining),
                        snapshot: Snapshot::of(limit, remaining),
                    };
                }
            }
        }
        Decision::Allowed(tightest(taken.into_iter().map(|(_, l, r)| (l, r))))
    }
}

impl Backend for MemoryBackend {
    fn take<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
        charge: bool,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        Box::pin(async move {
            Ok(if charge {
                self.take_now(buckets)
            } else {
                Decision::Allowed(self.peek_now(buckets))
            })
        })
    }

    fn refund<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.refund_now(buckets);
            Ok(())
        })
    }
}

/// One level's default limit and its overrides by name (client id, server name, or tool pattern).
#[derive(Debug, Clone)]
pub struct LevelLimits {
    pub default: Option<Limit>,
    pub overrides: Vec<(crate::stages::policy::Pattern, Limit)>,
}

impl LevelLimits {
    /// The limit for `name`: the first matching override, else the default; `None` = unlimited.
    pub fn for_name(&self, name: &str) -> Option<Limit> {
        self.find(|p| p.matches(name))
    }

    /// The first override whose pattern satisfies `matches`, else the default.
    fn find(&self, matches: impl Fn(&crate::stages::policy::Pattern) -> bool) -> Option<Limit> {
        self.overrides
            .iter()
            .find(|(p, _)| matches(p))
            .map(|(_, l)| *l)
            .or(self.default)
    }
}

/// Which requests of a caller share its `per_client` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientScope {
    /// One bucket per caller, whatever the route (the default).
    Gateway,
    /// One bucket per caller on each route (MCPGate's `defaults`).
    Route,
}

/// The compiled `rate_limit:` section.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub per_client: LevelLimits,
    /// Whether `per_client` buckets (and `clients:` overrides) are per route.
    pub per_client_scope: ClientScope,
    pub per_server: LevelLimits,
    pub per_tool: LevelLimits,
    pub max_buckets: usize,
    /// With Redis: the most tokens of a bucket one replica leases at once (0: exact, one round
    /// trip per request), see [`lease`].
    pub lease_tokens: u32,
    /// With Redis: a lease not refilled this long is never spent (its tokens go back).
    pub lease_ttl: Duration,
    /// Where buckets live.
    pub backend: StateBackend,
    /// What a failing backend (Redis unreachable) does to the request.
    pub on_redis_error: OnError,
}

/// The rate-limit stage.
pub struct RateLimit {
    config: RateLimitConfig,
    backend: Arc<dyn Backend>,
}

impl RateLimit {
    pub fn new(config: RateLimitConfig, backend: Arc<dyn Backend>) -> Self {
        RateLimit { config, backend }
    }

    /// The buckets one request message takes from.
    pub fn buckets(
        &self,
        client: &Arc<str>,
        server: &Arc<str>,
        tool: Option<&Arc<str>>,
    ) -> Vec<(BucketKey, Limit)> {
        let mut out = Vec::with_capacity(3);
        if let Some(l) = self.config.per_client.for_name(client) {
            let key = match self.config.per_client_scope {
                ClientScope::Gateway => BucketKey::Client(client.clone()),
                ClientScope::Route => BucketKey::ClientOnServer {
                    client: client.clone(),
                    server: server.clone(),
                },
            };
            out.push((key, l));
        }
        if let Some(l) = self.config.per_server.for_name(server) {
            out.push((BucketKey::Server(server.clone()), l));
        }
        if let Some(tool) = tool {
            // Overrides may name `<server>/<tool>`; build that name only when there are any.
            let per_tool = &self.config.per_tool;
            let qualified = (!per_tool.overrides.is_empty()).then(|| format!("{server}/{tool}"));
            let limit = per_tool
                .find(|p| p.matches(tool) || qualified.as_deref().is_some_and(|q| p.matches(q)));
            if let Some(l) = limit {
                out.push((
                    BucketKey::Tool {
                        client: client.clone(),
                        server: server.clone(),
                        tool: tool.clone(),
                    },
                    l,
                ));
            }
        }
        out
    }
}

fn secs_ceil(d: Duration) -> u64 {
    if d == Duration::MAX {
        u64::from(u32::MAX)
    } else {
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

const LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
const REMAINING: http::HeaderName = http::HeaderName::from_static("x-ratelimit-remaining");
const RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

fn set_headers(cx: &mut RequestContext, snap: &Snapshot) {
    let h = &mut cx.response_headers;
    h.insert(LIMIT, HeaderValue::from(snap.limit.floor() as u64));
    h.insert(
        REMAINING,
        HeaderValue::from(snap.remaining.max(0.0).floor() as u64),
    );
    h.insert(RESET, HeaderValue::from(secs_ceil(snap.reset)));
}

impl Stage for RateLimit {
    fn name(&self) -> &str {
        "rate_limit"
    }

    fn kind(&self) -> StageKind {
        StageKind::RateLimit
    }

    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            // Requests are charged; GET, DELETE, notifications and the client's responses only
            // get the headers. A batch is charged per request it holds.
            let (charge, tool) = match cx.message() {
                Some(msg) if msg.is_request() => (
                    true,
                    (msg.method() == "tools/call")
                        .then(|| msg.target.clone())
                        .flatten(),
                ),
                _ => (false, None),
            };
            let client = cx.client_key();
            let buckets = self.buckets(&client, &cx.upstream.name, tool.as_ref());
            if buckets.is_empty() {
                return Verdict::Continue;
            }
            match self.backend.take(&buckets, charge).await {
                Ok(Decision::Allowed(snap)) => {
                    set_headers(cx, &snap);
                    if charge {
                        match cx.extensions.get_mut::<Charged>() {
                            Some(charged) => charged.0.extend(buckets),
                            None => {
                                cx.extensions.insert(Charged(buckets));
                            }
                        }
                    }
                    Verdict::Continue
                }
                Ok(Decision::Limited {
                    level,
                    retry_after,
                    snapshot,
                }) => {
                    set_headers(cx, &snapshot);
                    let retry = secs_ceil(retry_after).max(1);
                    Verdict::Reject(GatewayError::Rejected {
                        stage: StageKind::RateLimit,
                        status: StatusCode::TOO_MANY_REQUESTS,
                        code: jsonrpc::RATE_LIMITED,
                        message: format!("rate limit exceeded ({level} limit); retry in {retry}s"),
                        data: Some(serde_json::json!({"limit": level, "retryAfter": retry})),
                        headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(retry))],
                    })
                }
                // The failure itself is logged and counted where it happened (crate::redis).
                Err(_) if self.config.on_redis_error == OnError::FailOpen => Verdict::Continue,
                // The client learns that, not where the store is or why (logged in crate::redis).
                Err(_) => Verdict::Reject(GatewayError::Rejected {
                    stage: StageKind::RateLimit,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: jsonrpc::STATE_UNAVAILABLE,
                    message: "rate limit store unavailable; retry shortly".into(),
                    data: None,
                    headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u32))],
                }),
            }
        })
    }

    fn refund<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(Charged(buckets)) = cx.extensions.remove::<Charged>() else {
                return;
            };
            if let Err(e) = self.backend.refund(&buckets).await {
                // Logged and counted where it failed (crate::redis); the tokens refill anyway.
                tracing::debug!(error = %e, "rate limit refund failed");
            }
        })
    }
}

#[cfg(test)]
mod tests;
