//! MCP servers that speak stdio, behind a route (`upstreams.<name>.type: stdio`, issue 19).
//!
//! - `child.rs`: one server process: newline-delimited JSON-RPC in and out, stderr into the log,
//!   an environment of its own, killed with its handle. Nothing it writes is trusted.
//! - `peer.rs`: JSON-RPC with one process: requests under ids of the gateway's own, answers back
//!   under the client's, the rest to listeners; the process's death fails what waits at once.
//! - `bridge.rs`: a stdio server as a Streamable HTTP endpoint on 127.0.0.1 that only this
//!   gateway may use; legacy sessions get a process each, the 2026-07-28 era shares one.
pub mod bridge;
pub mod child;
pub mod peer;

pub use bridge::{BRIDGE_HEADER, Bridge, StdioRoute, StdioStatus};
pub use child::{Child, ChildSpec, FromChild};
pub use peer::{PeerError, StdioPeer};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
pub use crate::loopback::Retired;

/// The bridges of the stdio routes, kept across reloads: a route whose program, arguments,
/// environment and bounds are unchanged keeps its bridge (and its sessions' processes); a
/// changed or removed one is stopped (its sessions end: their clients initialize again).
#[derive(Debug, Default)]
pub struct Bridges {
    running: Mutex<HashMap<Arc<str>, Arc<Bridge>>>,
}

impl Bridges {
    /// Points each stdio upstream of `config` at its bridge (started when it has none), with
    /// the bridge's token as the upstream's credential. The bridges of routes removed or changed
    /// are returned, still running: the caller stops them once the config that no longer uses
    /// them serves ([`Retired::stop`]), so no request meets a stopped bridge in between. Needs a
    /// tokio runtime.
    pub fn attach(&self, config: &mut Config) -> std::io::Result<Retired> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = HashMap::new();
        let mut retired = Retired::default();
        for upstream in &mut config.upstreams {
            let Some(route) = &upstream.stdio else {
                continue;
            };
            let bridge = match running.get(&upstream.name) {
                Some(b) if b.route() == route => b.clone(),
                _ => match Bridge::start(route.clone()) {
                    Ok(b) => b,
                    Err(e) => {
                        // Nothing changes: what ran keeps running; what was started stops.
                        for (name, b) in next {
                            if !running.get(&name).is_some_and(|r| Arc::ptr_eq(r, &b)) {
                                b.stop();
                            }
                        }
                        return Err(e);
                    }
                },
            };
            let mut attached = (**upstream).clone();
            attached.url = bridge.url();
            attached.credential = Some(bridge.credential());
            *upstream = Arc::new(attached);
            next.insert(upstream.name.clone(), bridge);
        }
        for (name, old) in running.drain() {
            if !next.get(&name).is_some_and(|b| Arc::ptr_eq(b, &old)) {
                retired.push(old);
            }
        }
        *running = next;
        Ok(retired)
    }

    /// Every stdio route's state, by route name.
    pub fn statuses(&self) -> Vec<(Arc<str>, StdioStatus)> {
        let mut out: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, b)| (name.clone(), b.status()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Stops every bridge and ends their processes (the gateway's shutdown).
    pub fn stop_all(&self) {
        for (_, b) in self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
        {
            b.stop();
        }
    }

    /// The bridge of a route.
    pub fn get(&self, route: &str) -> Option<Arc<Bridge>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .cloned()
    }
}

/// `mcpgate_upstream_up{server}` for stdio routes, read from the bridges when scraped: 1 while
/// the route's server can serve (running, or started on demand), 0 in a crash loop.
#[derive(Clone)]
struct UpGauge {
    bridges: Arc<Bridges>,
    gauge: prometheus::IntGaugeVec,
}

impl prometheus::core::Collector for UpGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.reset();
        for (name, status) in self.bridges.statuses() {
            self.gauge
                .with_label_values(&[name.as_ref()])
                .set(i64::from(status.state != "crash_loop"));
        }
        self.gauge.collect()
    }
}

impl Bridges {
    /// Registers `mcpgate_upstream_up{server}` (stdio routes) in `registry`.
    pub fn register_metrics(self: &Arc<Self>, registry: &prometheus::Registry) {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "mcpgate_upstream_up",
                "stdio routes: 1 while the server runs or can be started, 0 in a crash loop",
            ),
            &["server"],
        )
        .expect("valid metric");
        let collector = UpGauge {
            bridges: self.clone(),
            gauge,
        };
        crate::observability::metrics::register_shared(registry, Box::new(collector));
    }
}
