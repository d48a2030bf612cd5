//! Federated routes (`upstreams.<name>.members`, issue 20): one endpoint serving several other
//! upstreams, their tools and prompts under prefixed names.
//!
//! - `federator.rs`: the route's endpoint ([`Federator`]), an internal Streamable HTTP server on
//!   127.0.0.1 like a stdio route's bridge (`crate::loopback`): the gateway forwards the route's
//!   traffic to it after the route's whole pipeline ran on the client-facing (prefixed) names, and
//!   it speaks to the members: merged `initialize` and lists, calls routed by prefix, server
//!   requests' ids remapped so answers reach the member that asked.

mod federator;

pub use federator::{CatalogCheck, Collision, FederationMetrics, Federator};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::loopback::Retired;
use crate::proxy::UpstreamClient;

/// The endpoints of the federated routes, one per route for the process's life: a reload gives
/// a route's endpoint its new members; a route no longer federated has its endpoint retired.
#[derive(Debug, Default)]
pub struct Federations {
    running: Mutex<HashMap<Arc<str>, Arc<Federator>>>,
    metrics: std::sync::OnceLock<FederationMetrics>,
    /// `attach` leaves the catalog check to the caller ([`Federations::unchecked`]).
    unchecked: bool,
}

impl Federations {
    /// Endpoints whose catalogs are checked only when asked ([`Federations::catalog_checks`]),
    /// not by `attach`: for `mcpgate validate --members`.
    pub fn unchecked() -> Federations {
        Federations {
            unchecked: true,
            ..Federations::default()
        }
    }

    /// `mcpgate_federation_member_failures_total{route, member}` and
    /// `mcpgate_federation_catalog_requests_total{route, member, result}` join `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        let failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "mcpgate_federation_member_failures_total",
                "Members of federated routes that failed or timed out while the route fanned a request out to them (their entries were left out)",
            ),
            &["route", "member"],
        )
        .expect("valid metric");
        let catalog = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "mcpgate_federation_catalog_requests_total",
                "List pages of federated routes' members, served from the route's catalog cache (hit) or asked of the member (miss)",
            ),
            &["route", "member", "result"],
        )
        .expect("valid metric");
        let collisions = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "mcpgate_federation_name_collisions",
                "Tool and prompt names two members of a federated route would both serve after prefixing (the first member's is served), as the catalog check at start and reload found them",
            ),
            &["route"],
        )
        .expect("valid metric");
        crate::observability::metrics::register_shared(registry, Box::new(failures.clone()));
        crate::observability::metrics::register_shared(registry, Box::new(catalog.clone()));
        crate::observability::metrics::register_shared(registry, Box::new(collisions.clone()));
        let _ = self.metrics.set(FederationMetrics {
            failures,
            catalog,
            collisions,
        });
    }

    /// Points each federated upstream of `config` at its endpoint (started when it has none)
    /// with the endpoint's token as its credential, and gives the endpoint the members as this
    /// config has them (after the stdio routes were attached to their bridges). Endpoints of
    /// routes no longer federated are returned, still serving. Needs a tokio runtime.
    pub fn attach(&self, config: &mut Config, client: &UpstreamClient) -> std::io::Result<Retired> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = HashMap::new();
        let upstreams = config.upstreams.clone();
        for upstream in &mut config.upstreams {
            let Some(federation) = &upstream.federation else {
                continue;
            };
            let federator = match running.get(&upstream.name) {
                Some(f) => f.clone(),
                None => Federator::start(
                    upstream.name.clone(),
                    client.clone(),
                    self.metrics.get().cloned(),
                )?,
            };
            federator.set_members(federation, &upstreams);
            // Once the members' catalogs are known: names two members would both serve.
            if !self.unchecked {
                tokio::spawn(federator.clone().check_catalogs());
            }
            let mut attached = (**upstream).clone();
            attached.url = federator.url();
            attached.credential = Some(federator.credential());
            *upstream = Arc::new(attached);
            next.insert(upstream.name.clone(), federator);
        }
        let mut retired = Retired::default();
        for (name, old) in running.drain() {
            if !next.contains_key(&name) {
                retired.push(old);
            }
        }
        *running = next;
        Ok(retired)
    }

    /// Every federated route's catalog check ([`Federator::catalog_check`]), in route name order.
    pub async fn catalog_checks(&self) -> Vec<(Arc<str>, CatalogCheck)> {
        let mut routes: Vec<(Arc<str>, Arc<Federator>)> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let checks = routes
            .iter()
            .map(|(route, f)| async move { (route.clone(), f.catalog_check().await) });
        futures_util::future::join_all(checks).await
    }

    /// Stops every endpoint (shutdown, after the drain).
    pub fn stop_all(&self) {
        for f in self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            f.stop();
        }
    }
}
