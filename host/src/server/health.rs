//! Each upstream's health as the traffic it served shows it: whether the last exchange reached
//! it, the last error, and the latency of its response heads. Recorded on the request path with
//! a few atomic stores (a lock only on an error); read by the admin API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::Upstream;

/// One upstream's record.
#[derive(Debug, Default)]
pub struct RouteHealth {
    /// Unix milliseconds of the last exchange that got a response head (0: none yet).
    last_ok_ms: AtomicU64,
    /// Unix milliseconds of the last failed exchange (0: none yet).
    last_error_ms: AtomicU64,
    /// Microseconds until the last response head arrived.
    last_latency_us: AtomicU64,
    /// A moving average of that latency (microseconds, weight 1/8 for the newest).
    average_latency_us: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<String>,
}

fn unix_ms() -> u64 {
    crate::observability::unix_ms(SystemTime::now())
}

impl RouteHealth {
    /// A response head arrived after `latency` (any status below 500).
    pub fn ok(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.last_ok_ms.store(unix_ms(), Ordering::Relaxed);
        self.last_latency_us.store(us, Ordering::Relaxed);
        let avg = self.average_latency_us.load(Ordering::Relaxed);
        let next = if avg == 0 { us } else { avg - avg / 8 + us / 8 };
        self.average_latency_us.store(next, Ordering::Relaxed);
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// The exchange failed: unreachable, timed out, a 5xx.
    pub fn failed(&self, error: &str) {
        self.last_error_ms.store(unix_ms(), Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.clear();
        // Bounded: an upstream's error text is not an unbounded log.
        last.extend(error.chars().take(300));
    }

    fn view(&self) -> HealthView {
        let ms = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|v| *v > 0);
        let (last_ok, last_error_at) = (ms(&self.last_ok_ms), ms(&self.last_error_ms));
        let reachable = match (last_ok, last_error_at) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(ok), Some(err)) => Some(ok >= err),
        };
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        HealthView {
            reachable,
            last_ok_unix_ms: last_ok,
            last_error_unix_ms: last_error_at,
            last_error: (!last_error.is_empty()).then_some(last_error),
            last_latency_ms: ms(&self.last_latency_us).map(|us| us as f64 / 1000.0),
            average_latency_ms: ms(&self.average_latency_us).map(|us| us as f64 / 1000.0),
            exchanges: self.ok.load(Ordering::Relaxed),
            failures: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// One upstream's health, as the admin API shows it. `reachable` is `None` until the upstream
/// has served (or failed) one exchange.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub reachable: Option<bool>,
    pub last_ok_unix_ms: Option<u64>,
    pub last_error_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub exchanges: u64,
    pub failures: u64,
}

/// Every upstream's record, kept across reloads (a route added by one gets a record).
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    routes: ArcSwap<HashMap<Arc<str>, Arc<RouteHealth>>>,
}

impl UpstreamHealth {
    pub fn new(upstreams: &[Arc<Upstream>]) -> Self {
        let health = UpstreamHealth::default();
        health.add_routes(upstreams);
        health
    }

    /// Gives the upstreams that have no record one.
    pub fn add_routes(&self, upstreams: &[Arc<Upstream>]) {
        let names = upstreams.iter().map(|u| u.name.clone());
        crate::observability::metrics::add_missing(&self.routes, names, |_| Arc::default());
    }

    /// The record of one upstream.
    pub fn route(&self, name: &str) -> Option<Arc<RouteHealth>> {
        self.routes.load().get(name).cloned()
    }

    /// The view of one upstream (a fresh record's when it has none).
    pub fn view(&self, name: &str) -> HealthView {
        self.route(name).unwrap_or_default().view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_follows_the_latest_exchange() {
        let h = RouteHealth::default();
        assert_eq!(h.view().reachable, None);
        h.failed("connection refused");
        let v = h.view();
        assert_eq!(v.reachable, Some(false));
        assert_eq!(v.last_error.as_deref(), Some("connection refused"));
        std::thread::sleep(Duration::from_millis(2));
        h.ok(Duration::from_millis(8));
        let v = h.view();
        assert_eq!(v.reachable, Some(true));
        assert_eq!(v.last_latency_ms, Some(8.0));
        assert_eq!((v.exchanges, v.failures), (1, 1));
        // A huge error text is kept bounded.
        h.failed(&"x".repeat(10_000));
        assert_eq!(h.view().last_error.unwrap().len(), 300);
    }
}
