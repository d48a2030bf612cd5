//! Token leases over the Redis buckets (`rate_limit.lease_tokens`, the default with
//! `backend: redis`): a replica takes up to N tokens of a bucket in one round trip
//! (`lease.lua`) and spends them from memory, so most requests never wait for Redis.
//!
//! - **N** is `lease_tokens` (default 64), at most a tenth of the bucket's capacity; a bucket
//!   smaller than 20 tokens is leased one token at a time, which is the exact mode (one round
//!   trip per request), so small limits stay exact.
//! - **All or nothing**: a request takes one token from each of its buckets. Buckets with a
//!   local token are charged locally; the others are leased in one script call, and if any of
//!   them is empty nothing is taken (the local charges are given back).
//! - **One refill at a time**: while a request refills a bucket's lease, others that find it
//!   empty wait for that refill (at most 50 ms, then they ask Redis themselves) instead of each
//!   asking Redis.
//! - **Freshness**: a lease not refilled for `lease_ttl` (default 1 s) is never spent; its
//!   tokens go back to Redis (when it is next touched, and by the background sweep).
//! - **The bound** (SECURITY.md): across R replicas, in any window of `lease_ttl`, a bucket may
//!   admit up to N × R requests more than its own arithmetic allows (tokens leased before a
//!   refill and spent after it), and a replica may refuse while up to N × (R − 1) tokens sit
//!   leased elsewhere. `X-RateLimit-Remaining` is this replica's view: Redis's tokens at its
//!   last lease plus its own unspent ones.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::redis::RedisBackend;
use super::{Backend, BucketKey, Decision, Limit, tightest};
use crate::pipeline::BoxFuture;

/// `rate_limit.lease_tokens` when absent.
pub const DEFAULT_LEASE_TOKENS: u32 = 64;
/// The most `rate_limit.lease_tokens` may be.
pub const MAX_LEASE_TOKENS: u32 = 10_000;
/// `rate_limit.lease_ttl` when absent.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(1);

const SHARDS: usize = 16;

/// Tokens of one bucket this replica holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    tokens: u32,
    limit: Limit,
    /// When it was last refilled from Redis.
    taken: Instant,
    /// Redis's tokens after that lease.
    redis_left: f64,
}

/// The leases of this process, kept across reloads (like the memory buckets): a reload that
/// keeps `lease_tokens` and `lease_ttl` keeps them.
pub struct Leases {
    shards: Vec<Mutex<HashMap<BucketKey, Lease>>>,
    hasher: std::collections::hash_map::RandomState,
    max_per_shard: usize,
    /// The most tokens of one bucket held at once (`lease_tokens`).
    pub tokens: u32,
    pub ttl: Duration,
    /// Buckets whose lease one request is refilling from Redis now: the others wait for it
    /// rather than each asking Redis (which at c=32 made nearly every request a round trip).
    refilling: Mutex<HashMap<BucketKey, Arc<tokio::sync::Notify>>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("tokens", &self.tokens)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// `max_buckets` bounds the leases held (`rate_limit.max_buckets`): past it a bucket is
    /// charged exactly, one round trip per request.
    pub fn new(tokens: u32, ttl: Duration, max_buckets: usize) -> Leases {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_per_shard: max_buckets.div_ceil(SHARDS).max(1),
            tokens,
            ttl,
            refilling: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, key: &BucketKey) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Lease>> {
        self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many tokens of a bucket of this shape one lease takes: `lease_tokens`, at most a
    /// tenth of its capacity, at least one.
    pub fn size(&self, limit: &Limit) -> u32 {
        let tenth = (limit.capacity / 10.0).floor();
        (self.tokens as f64).min(tenth).max(1.0) as u32
    }

    /// Takes one local token of `key`, if a fresh lease of the same limit holds one; the
    /// remaining tokens as this replica sees them. An expired or changed lease is removed and
    /// its tokens returned in `stale`.
    fn take_local(
        &self,
        key: &BucketKey,
        limit: &Limit,
        now: Instant,
        stale: &mut Vec<(BucketKey, Limit, u32)>,
    ) -> Option<f64> {
        let mut shard = self.shard(key);
        let lease = shard.get_mut(key)?;
        if lease.limit != *limit || now.saturating_duration_since(lease.taken) >= self.ttl {
            let old = shard.remove(key)?;
            if old.tokens > 0 {
                stale.push((key.clone(), old.limit, old.tokens));
            }
            return None;
        }
        if lease.tokens == 0 {
            return None;
        }
        lease.tokens -= 1;
        Some(lease.redis_left + f64::from(lease.tokens))
    }

    /// Gives one local token back to `key`'s lease; `false` when it holds none (the token goes
    /// back to Redis instead).
    fn give_back_local(&self, key: &BucketKey, limit: &Limit) -> bool {
        let mut shard = self.shard(key);
        match shard.get_mut(key) {
            Some(lease) if lease.limit == *limit => {
                lease.tokens += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds `granted` tokens leased just now to `key`'s lease (after the requester took its
    /// own); tokens past the lease size, or past the table's bound, are returned in `excess`.
    fn add(
        &self,
        key: &BucketKey,
        limit: &Limit,
        granted: u32,
        redis_left: f64,
        now: Instant,
        excess: &mut Vec<(BucketKey, Limit, u32)>,
    ) -> f64 {
        let size = self.size(limit);
        let mut shard = self.shard(key);
        if !shard.contains_key(key) && shard.len() >= self.max_per_shard {
            let ttl = self.ttl;
            shard.retain(|k, l| {
                let keep = now.saturating_duration_since(l.taken) < ttl;
                if !keep && l.tokens > 0 {
                    excess.push((k.clone(), l.limit, l.tokens));
                }
                keep
            });
            if shard.len() >= self.max_per_shard {
                if granted > 0 {
                    excess.push((key.clone(), *limit, granted));
                }
                return redis_left;
            }
        }
        let lease = shard.entry(key.clone()).or_insert(Lease {
            tokens: 0,
            limit: *limit,
            taken: now,
            redis_left,
        });
        if lease.limit != *limit {
            if lease.tokens > 0 {
                excess.push((key.clone(), lease.limit, lease.tokens));
            }
            lease.tokens = 0;
            lease.limit = *limit;
        }
        let total = lease.tokens + granted;
        lease.tokens = total.min(size);
        if total > size {
            excess.push((key.clone(), *limit, total - size));
        }
        lease.taken = now;
        lease.redis_left = redis_left;
        redis_left + f64::from(lease.tokens)
    }

    /// Removes every lease not refilled for `ttl` (all of them with `all`), returning their
    /// unspent tokens.
    fn expire(&self, now: Instant, all: bool) -> Vec<(BucketKey, Limit, u32)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, l| {
                    let keep = !all && now.saturating_duration_since(l.taken) < self.ttl;
                    if !keep && l.tokens > 0 {
                        out.push((k.clone(), l.limit, l.tokens));
                    }
                    keep
                });
        }
        out
    }

    /// Claims the refill of `key`'s lease: `Ok` when this caller is to refill it, `Err` with
    /// the refill under way otherwise.
    fn begin_refill(&self, key: &BucketKey) -> Result<(), Arc<tokio::sync::Notify>> {
        let mut refilling = self
            .refilling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match refilling.get(key) {
            Some(n) => Err(n.clone()),
            None => {
                refilling.insert(key.clone(), Arc::new(tokio::sync::Notify::new()));
                Ok(())
            }
        }
    }

    /// Ends a refill this caller claimed, waking whoever waits for it.
    fn end_refill(&self, key: &BucketKey) {
        let done = self
            .refilling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        if let Some(n) = done {
            n.notify_waiters();
        }
    }

    /// Ends the refills listed when dropped: a request cancelled while it waits for Redis (its
    /// client went away) must not leave its buckets marked as refilling, or every later miss
    /// would wait for a refill that never ends.
    fn claims<'a>(&'a self, keys: Vec<&'a BucketKey>) -> Claims<'a> {
        Claims { leases: self, keys }
    }

    /// Waits (at most `limit`) for a refill under way to end.
    async fn wait_refill(
        &self,
        key: &BucketKey,
        refill: Arc<tokio::sync::Notify>,
        limit: Duration,
    ) {
        let notified = refill.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Registered: if it is still the refill under way, its end will wake this.
        let still = self
            .refilling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .is_some_and(|n| Arc::ptr_eq(n, &refill));
        if still {
            let _ = tokio::time::timeout(limit, notified).await;
        }
    }

    /// Tokens held now, summed over every lease.
    pub fn held(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .map(|l| u64::from(l.tokens))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Refills a request claimed ([`Leases::claims`]), ended on drop.
struct Claims<'a> {
    leases: &'a Leases,
    keys: Vec<&'a BucketKey>,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for k in &self.keys {
            self.leases.end_refill(k);
        }
    }
}

/// The Redis backend with leases.
pub struct LeasedBackend {
    redis: RedisBackend,
    leases: Arc<Leases>,
}

impl LeasedBackend {
    pub fn new(redis: RedisBackend, leases: Arc<Leases>) -> LeasedBackend {
        LeasedBackend { redis, leases }
    }

    /// Whether it leases as a config with these settings would (a reload keeps it then).
    pub fn same_shape(&self, tokens: u32, ttl: Duration, max_buckets: usize) -> bool {
        self.leases.tokens == tokens
            && self.leases.ttl == ttl
            && self.leases.max_per_shard == max_buckets.div_ceil(SHARDS).max(1)
    }

    /// The lease table.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Returns tokens to Redis in the background (a failure only means they refill later).
    fn return_later(&self, tokens: Vec<(BucketKey, Limit, u32)>) {
        if tokens.is_empty() {
            return;
        }
        let redis = self.redis.clone();
        tokio::spawn(async move { give_back(&redis, &tokens).await });
    }

    /// Returns the unspent tokens of leases that went stale (the background sweep), or of every
    /// lease (`all`: at shutdown).
    pub async fn sweep(&self, all: bool) {
        let stale = self.leases.expire(Instant::now(), all);
        give_back(&self.redis, &stale).await;
    }

    async fn take_charged(&self, buckets: &[(BucketKey, Limit)]) -> Result<Decision, String> {
        let undo = |local: &[Option<f64>]| {
            let mut back = Vec::new();
            for ((k, l), got) in buckets.iter().zip(local) {
                if got.is_some() && !self.leases.give_back_local(k, l) {
                    back.push((k.clone(), *l, 1));
                }
            }
            self.return_later(back);
        };
        let mut round = 0;
        let (local, mine) = loop {
            let now = Instant::now();
            let mut stale = Vec::new();
            // Local tokens first; `local[i]`: what bucket i has left as this replica sees it.
            let local: Vec<Option<f64>> = buckets
                .iter()
                .map(|(k, l)| self.leases.take_local(k, l, now, &mut stale))
                .collect();
            self.return_later(stale);
            if local.iter().all(Option::is_some) {
                return Ok(Decision::Allowed(tightest(
                    buckets
                        .iter()
                        .map(|(_, l)| l)
                        .zip(local.into_iter().flatten()),
                )));
            }
            // The buckets to refill: claimed by this request, or being refilled by another.
            let mut mine = Vec::new();
            let mut other = None;
            for ((k, _), got) in buckets.iter().zip(&local) {
                if got.is_none() {
                    match self.leases.begin_refill(k) {
                        Ok(()) => mine.push(k),
                        Err(n) => other = other.or(Some((k, n))),
                    }
                }
            }
            match other {
                // Another request's refill comes first: wait for it (holding nothing), retry.
                Some((k, refill)) if round < 2 => {
                    undo(&local);
                    drop(self.leases.claims(mine));
                    self.leases
                        .wait_refill(k, refill, Duration::from_millis(50))
                        .await;
                    round += 1;
                }
                _ => break (local, self.leases.claims(mine)),
            }
        };
        let wants: Vec<u32> = buckets
            .iter()
            .zip(&local)
            .map(|((_, l), got)| {
                if got.is_some() {
                    0
                } else {
                    self.leases.size(l)
                }
            })
            .collect();
        let leased = self.redis.lease(buckets, &wants).await;
        let grants = match leased {
            Ok(Ok(grants)) => grants,
            Ok(Err(refused)) => {
                undo(&local);
                return Ok(refused);
            }
            Err(e) => {
                undo(&local);
                return Err(e);
            }
        };
        let now = Instant::now();
        let mut excess = Vec::new();
        let remaining: Vec<f64> = buckets
            .iter()
            .zip(local)
            .zip(grants)
            .map(|(((k, l), got), (granted, left))| match got {
                Some(r) => r,
                // One of the granted tokens is this request's.
                None => self
                    .leases
                    .add(k, l, granted.saturating_sub(1), left, now, &mut excess),
            })
            .collect();
        // The leases hold the new tokens: wake the requests waiting for them.
        drop(mine);
        self.return_later(excess);
        Ok(Decision::Allowed(tightest(
            buckets.iter().map(|(_, l)| l).zip(remaining),
        )))
    }
}

async fn give_back(redis: &RedisBackend, tokens: &[(BucketKey, Limit, u32)]) {
    let listed: Vec<(&BucketKey, &Limit, u32)> =
        tokens.iter().map(|(k, l, n)| (k, l, *n)).collect();
    if let Err(e) = redis.give_back(&listed).await {
        // Logged and counted where it failed (crate::redis); the buckets refill anyway.
        tracing::debug!(error = %e, "returning leased tokens failed");
    }
}

impl Backend for LeasedBackend {
    fn take<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
        charge: bool,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        if charge {
            Box::pin(self.take_charged(buckets))
        } else {
            self.redis.take(buckets, false)
        }
    }

    /// The tokens go to this replica's lease where it holds one (they were Redis's, taken by
    /// a lease), else back to Redis.
    fn refund<'a>(
        &'a self,
        buckets: &'a [(BucketKey, Limit)],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let back: Vec<(&BucketKey, &Limit, u32)> = buckets
                .iter()
                .filter(|(k, l)| !self.leases.give_back_local(k, l))
                .map(|(k, l)| (k, l, 1))
                .collect();
            self.redis.give_back(&back).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(capacity: f64) -> Limit {
        Limit {
            capacity,
            refill_rate: 1.0,
        }
    }

    #[test]
    fn lease_sizes_keep_small_buckets_exact() {
        let l = Leases::new(64, DEFAULT_LEASE_TTL, 1000);
        assert_eq!(l.size(&limit(5.0)), 1);
        assert_eq!(l.size(&limit(19.0)), 1);
        assert_eq!(l.size(&limit(50.0)), 5);
        assert_eq!(l.size(&limit(1e6)), 64);
        assert_eq!(l.size(&limit(300.0)), 30);
        assert_eq!(Leases::new(0, DEFAULT_LEASE_TTL, 1).size(&limit(1e6)), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn local_tokens_are_spent_until_the_lease_is_stale() {
        let l = Leases::new(16, Duration::from_secs(1), 1000);
        let key = BucketKey::Client("a".into());
        let lim = limit(1000.0);
        let mut stale = Vec::new();
        let now = Instant::now();
        assert_eq!(l.take_local(&key, &lim, now, &mut stale), None);
        // A grant of 16 (one was the requester's): 15 held, at most the lease size kept.
        let mut excess = Vec::new();
        assert_eq!(l.add(&key, &lim, 15, 984.0, now, &mut excess), 999.0);
        assert!(excess.is_empty());
        for left in (0..15).rev() {
            assert_eq!(
                l.take_local(&key, &lim, now, &mut stale),
                Some(984.0 + f64::from(left))
            );
        }
        assert_eq!(l.take_local(&key, &lim, now, &mut stale), None);
        // More than a lease holds comes back as excess.
        l.add(&key, &lim, 20, 900.0, now, &mut excess);
        assert_eq!(excess, vec![(key.clone(), lim, 4)]);
        assert!(l.give_back_local(&key, &lim));
        assert_eq!(l.held(), 17);
        // Stale: never spent, returned.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.take_local(&key, &lim, Instant::now(), &mut stale), None);
        assert_eq!(stale, vec![(key.clone(), lim, 17)]);
        assert_eq!(l.held(), 0);
        // A changed limit is a new lease.
        l.add(&key, &lim, 3, 10.0, Instant::now(), &mut excess);
        let other = limit(2000.0);
        stale.clear();
        assert_eq!(l.take_local(&key, &other, Instant::now(), &mut stale), None);
        assert_eq!(stale, vec![(key, lim, 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refill_dropped_midway_is_ended() {
        let l = Leases::new(64, DEFAULT_LEASE_TTL, 1000);
        let key = BucketKey::Server("s".into());
        assert!(l.begin_refill(&key).is_ok());
        let other = l.begin_refill(&key).unwrap_err();
        // A request cancelled while it holds the claim (its future dropped) ends it.
        drop(l.claims(vec![&key]));
        assert!(l.begin_refill(&key).is_ok());
        // A waiter for a refill that already ended does not wait.
        let started = Instant::now();
        l.wait_refill(&key, other, Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(l.claims(vec![&key]));
        assert!(l.refilling.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded() {
        let l = Leases::new(16, Duration::from_secs(1), 16);
        let lim = limit(1000.0);
        let mut excess = Vec::new();
        for i in 0..1000 {
            l.add(
                &BucketKey::Client(i.to_string().into()),
                &lim,
                5,
                100.0,
                Instant::now(),
                &mut excess,
            );
        }
        let kept = l
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum::<usize>();
        assert!(kept <= 16, "{kept}");
        // What could not be kept was handed back, none lost.
        let back: u64 = excess.iter().map(|(_, _, n)| u64::from(*n)).sum();
        assert_eq!(back + l.held(), 5000);
        let held = l.held();
        assert!(held > 0);
        let expired = l.expire(Instant::now(), true);
        assert_eq!(
            expired.iter().map(|(_, _, n)| u64::from(*n)).sum::<u64>(),
            held
        );
        assert_eq!(l.held(), 0);
    }
}
