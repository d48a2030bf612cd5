//! The plugins' key/value store: the [`KvStore`] seam, and the in-memory store every replica has
//! by default ([`redis::RedisKv`] shares one across replicas). Counters are kept as decimal
//! text, as Redis keeps them, so both stores agree on what `get` returns for a key that `incr`
//! made. The in-memory store is bounded per plugin, in keys and in bytes.

pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BoxFuture;

pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub use crate::config::{
    DEFAULT_KV_MAX_BYTES as DEFAULT_MAX_BYTES, DEFAULT_KV_MAX_ENTRIES as DEFAULT_MAX_ENTRIES,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store cannot be reached (or is full).
    Unavailable(String),
    /// The key or value is too large, or `incr` met a value that is not a counter.
    Invalid(String),
}

/// Where plugin state lives. `namespace` is the plugin's name: plugins never see each other's keys.
pub trait KvStore: Send + Sync + 'static {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>>;
    fn set<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>>;
    fn delete<'a>(&'a self, namespace: &'a str, key: &'a str)
    -> BoxFuture<'a, Result<(), KvError>>;
    fn incr<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>>;
}

/// Checks a key and value against the limits every store enforces.
pub fn check(key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "keys must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        return Err(KvError::Invalid(format!(
            "values must be at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// What an entry costs against its plugin's `max_bytes`: its key and its value.
fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

/// One plugin's keys, and what they cost.
#[derive(Default)]
struct Space {
    entries: HashMap<Box<str>, Entry>,
    bytes: usize,
}

impl Space {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.bytes -= cost(key, &e.value);
        Some(e)
    }

    fn sweep(&mut self, now: Instant) {
        let Space { entries, bytes } = self;
        entries.retain(|k, e| {
            let live = e.live(now);
            if !live {
                *bytes -= cost(k, &e.value);
            }
            live
        });
    }
}

/// A bounded in-process store: each plugin (namespace) holds at most `max_entries` keys and
/// `max_bytes` of keys and values, so one plugin can fill only its own share. A write that would
/// go past either first sweeps that plugin's expired keys; if it still does not fit it fails
/// with `Unavailable` rather than evicting someone's quota counter. Each plugin's keys have
/// their own lock.
pub struct MemoryKv {
    spaces: Mutex<HashMap<Box<str>, Arc<Mutex<Space>>>>,
    max_entries: usize,
    max_bytes: usize,
}

impl MemoryKv {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        MemoryKv {
            spaces: Mutex::new(HashMap::new()),
            max_entries,
            max_bytes,
        }
    }

    fn with<R>(&self, namespace: &str, f: impl FnOnce(&mut Space) -> R) -> R {
        let space = {
            let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
            match spaces.get(namespace) {
                Some(s) => s.clone(),
                None => spaces.entry(namespace.into()).or_default().clone(),
            }
        };
        let mut space = space.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut space)
    }

    /// Whether `key` may hold `new` bytes (key and value) in `space`, within the plugin's limits.
    fn fits(&self, space: &Space, key: &str, new: usize) -> bool {
        let old = space.entries.get(key).map(|e| cost(key, &e.value));
        space.entries.len() + usize::from(old.is_none()) <= self.max_entries
            && space.bytes - old.unwrap_or(0) + new <= self.max_bytes
    }

    /// Stores `value` under `key`, within the plugin's limits (sweeping the plugin's expired
    /// keys first when it would not fit).
    fn put(
        &self,
        space: &mut Space,
        key: &str,
        value: Vec<u8>,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), KvError> {
        let new = cost(key, &value);
        if !self.fits(space, key, new) {
            space.sweep(now);
            if !self.fits(space, key, new) {
                return Err(KvError::Unavailable(format!(
                    "the plugin's store is full ({} keys, {} bytes at most)",
                    self.max_entries, self.max_bytes
                )));
            }
        }
        space.remove(key);
        space.bytes += new;
        space.entries.insert(key.into(), Entry { value, expires });
        Ok(())
    }
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    }
}

impl KvStore for MemoryKv {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        let result = check(key, None).map(|()| {
            let now = Instant::now();
            self.with(namespace, |space| {
                space
                    .entries
                    .get(key)
                    .filter(|e| e.live(now))
                    .map(|e| e.value.clone())
            })
        });
        Box::pin(std::future::ready(result))
    }

    fn set<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        let result = check(key, Some(&value)).and_then(|()| {
            let now = Instant::now();
            self.with(namespace, |space| {
                self.put(space, key, value, ttl.map(|t| now + t), now)
            })
        });
        Box::pin(std::future::ready(result))
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        let result = check(key, None).map(|()| {
            self.with(namespace, |space| space.remove(key));
        });
        Box::pin(std::future::ready(result))
    }

    fn incr<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        let result = check(key, None).and_then(|()| {
            let now = Instant::now();
            self.with(namespace, |space| {
                let live = space.entries.get(key).filter(|e| e.live(now));
                let current = live.map(|e| parse_counter(&e.value)).transpose()?;
                // A live counter keeps the expiry of the call that created it.
                let expires = match live {
                    Some(e) => e.expires,
                    None => ttl.map(|t| now + t),
                };
                let next = current
                    .unwrap_or(0)
                    .checked_add(delta)
                    .ok_or_else(|| KvError::Invalid("counter overflow".into()))?;
                self.put(space, key, next.to_string().into_bytes(), expires, now)?;
                Ok(next)
            })
        });
        Box::pin(std::future::ready(result))
    }
}

fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| KvError::Invalid("the value is not a counter".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_namespaces_and_expiry() {
        let kv = MemoryKv::new(2, 1 << 20);
        assert_eq!(
            kv.incr("a", "n", 2, Some(Duration::from_secs(10))).await,
            Ok(2)
        );
        assert_eq!(
            kv.incr("a", "n", 3, Some(Duration::from_secs(1))).await,
            Ok(5)
        );
        assert_eq!(kv.get("a", "n").await, Ok(Some(b"5".to_vec())));
        // Another plugin's namespace is another key space.
        assert_eq!(kv.get("b", "n").await, Ok(None));
        kv.set("a", "s", b"text".to_vec(), None).await.unwrap();
        assert!(matches!(
            kv.incr("a", "s", 1, None).await,
            Err(KvError::Invalid(_))
        ));
        // Full (two keys per plugin): a new key is refused, an existing one still updates, and
        // another plugin has its own room.
        assert!(matches!(
            kv.set("a", "y", vec![], None).await,
            Err(KvError::Unavailable(_))
        ));
        kv.set("b", "x", b"1".to_vec(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        kv.set("a", "s", b"other".to_vec(), None).await.unwrap();
        kv.delete("a", "s").await.unwrap();
        assert_eq!(kv.get("a", "s").await, Ok(None));
        assert!(matches!(kv.get("a", "").await, Err(KvError::Invalid(_))));
        assert!(matches!(
            kv.set("a", "big", vec![0; MAX_VALUE_BYTES + 1], None).await,
            Err(KvError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn one_plugin_fills_only_its_own_bytes() {
        let kv = MemoryKv::new(1000, 1024);
        // 4 entries of 1 + 255 bytes fill plugin `greedy`'s 1024 bytes exactly.
        for k in ["a", "b", "c", "d"] {
            kv.set("greedy", k, vec![0; 255], None).await.unwrap();
        }
        assert!(matches!(
            kv.set("greedy", "e", vec![], None).await,
            Err(KvError::Unavailable(_))
        ));
        // Growing a value past the budget fails; shrinking one makes room.
        assert!(matches!(
            kv.set("greedy", "a", vec![0; 256], None).await,
            Err(KvError::Unavailable(_))
        ));
        kv.set("greedy", "a", vec![0; 100], None).await.unwrap();
        kv.set("greedy", "e", vec![0; 150], None).await.unwrap();
        // Another plugin is untouched by all that.
        kv.set("quota", "n", vec![0; 1000], None).await.unwrap();
        assert_eq!(kv.incr("quota2", "calls", 1, None).await, Ok(1));
        // Deleting and expiring give the bytes back.
        kv.delete("greedy", "b").await.unwrap();
        kv.set("greedy", "f", vec![0; 255], Some(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        kv.set("greedy", "g", vec![0; 255], None).await.unwrap();
    }

    #[test]
    fn expiry_uses_the_ttl_of_the_creating_call() {
        let kv = MemoryKv::new(10, 1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                kv.incr("p", "k", 1, Some(Duration::from_millis(500))).await,
                Ok(1)
            );
            // A later ttl does not extend the window.
            assert_eq!(
                kv.incr("p", "k", 1, Some(Duration::from_secs(60))).await,
                Ok(2)
            );
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(kv.incr("p", "k", 1, None).await, Ok(1));
        });
    }
}
