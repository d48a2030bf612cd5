//! The plugins' key/value store: the [`KvStore`] seam, and the in-memory store every replica has
//! by default ([`redis::RedisKv`] shares one across replicas). Counters are kept as decimal
//! text, as Redis keeps them, so both stores agree on what `get` returns for a key that `incr`
//! made.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::BoxFuture;

pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

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

/// (namespace, key) → entry.
type Entries = HashMap<(Box<str>, Box<str>), Entry>;

/// A bounded in-process store. When full, expired entries are swept; if it is still full, writes
/// of new keys fail with `Unavailable` rather than evicting someone's quota counter.
pub struct MemoryKv {
    entries: Mutex<Entries>,
    max_entries: usize,
}

impl MemoryKv {
    pub fn new(max_entries: usize) -> Self {
        MemoryKv {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Entries) -> R) -> R {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    fn make_room(&self, map: &mut Entries, now: Instant) -> Result<(), KvError> {
        if map.len() < self.max_entries {
            return Ok(());
        }
        map.retain(|_, e| e.live(now));
        if map.len() < self.max_entries {
            Ok(())
        } else {
            Err(KvError::Unavailable(format!(
                "the plugin store is full ({} keys)",
                self.max_entries
            )))
        }
    }

    fn key(namespace: &str, key: &str) -> (Box<str>, Box<str>) {
        (namespace.into(), key.into())
    }
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv::new(DEFAULT_MAX_ENTRIES)
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
            self.with(|map| {
                map.get(&Self::key(namespace, key))
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
            self.with(|map| {
                let k = Self::key(namespace, key);
                if !map.contains_key(&k) {
                    self.make_room(map, now)?;
                }
                map.insert(
                    k,
                    Entry {
                        value,
                        expires: ttl.map(|t| now + t),
                    },
                );
                Ok(())
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
            self.with(|map| map.remove(&Self::key(namespace, key)));
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
            self.with(|map| {
                let k = Self::key(namespace, key);
                let current = match map.get(&k).filter(|e| e.live(now)) {
                    Some(e) => Some(parse_counter(&e.value)?),
                    None => None,
                };
                let next = current
                    .unwrap_or(0)
                    .checked_add(delta)
                    .ok_or_else(|| KvError::Invalid("counter overflow".into()))?;
                match map.get_mut(&k).filter(|_| current.is_some()) {
                    Some(e) => e.value = next.to_string().into_bytes(),
                    None => {
                        self.make_room(map, now)?;
                        map.insert(
                            k,
                            Entry {
                                value: next.to_string().into_bytes(),
                                expires: ttl.map(|t| now + t),
                            },
                        );
                    }
                }
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
        let kv = MemoryKv::new(3);
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
        // Full: a new key is refused, an existing one still updates.
        kv.set("b", "x", b"1".to_vec(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(matches!(
            kv.set("b", "y", vec![], None).await,
            Err(KvError::Unavailable(_))
        ));
        kv.set("a", "s", b"other".to_vec(), None).await.unwrap();
        kv.delete("a", "s").await.unwrap();
        assert_eq!(kv.get("a", "s").await, Ok(None));
        assert!(matches!(kv.get("a", "").await, Err(KvError::Invalid(_))));
        assert!(matches!(
            kv.set("a", "big", vec![0; MAX_VALUE_BYTES + 1], None).await,
            Err(KvError::Invalid(_))
        ));
    }

    #[test]
    fn expiry_uses_the_ttl_of_the_creating_call() {
        let kv = MemoryKv::new(10);
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
