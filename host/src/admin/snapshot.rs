//! What the dashboard shows, as one JSON snapshot: per route the request counts (cumulative: the
//! page turns them into rates), errors, denials, 429s, latency percentiles, open streams and
//! sessions, with upstream health; plugin health; the latest decisions; the reload status.
//! `/admin/events` streams a snapshot every second as SSE.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use prometheus::proto::MetricFamily;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Admin, error};
use crate::observability::metrics::MergedHistogram;
use crate::observability::unix_ms;

/// How often `/admin/events` sends a snapshot.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// Decisions a snapshot carries (the newest).
const SNAPSHOT_DECISIONS: usize = 25;

/// One route's numbers.
#[derive(Debug, Default, Serialize)]
struct RouteStats {
    requests: u64,
    /// Answers with a 5xx status.
    errors: u64,
    denials: u64,
    rate_limited: u64,
    /// Latency bucket upper bounds (seconds) holding the 50th, 90th and 99th percentile of
    /// timed requests; `None` before any.
    p50_seconds: Option<f64>,
    p90_seconds: Option<f64>,
    p99_seconds: Option<f64>,
    sse_streams: i64,
    sessions: usize,
    health: Option<crate::server::health::HealthView>,
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Adds each series of a counter family to its route's field.
fn sum_counter(
    family: &MetricFamily,
    routes: &mut BTreeMap<String, RouteStats>,
    field: impl Fn(&mut RouteStats, u64, &prometheus::proto::Metric),
) {
    for m in family.get_metric() {
        let server = label(m, "server");
        if let Some(r) = routes.get_mut(server) {
            field(r, m.get_counter().get_value() as u64, m);
        }
    }
}

/// Per-route latency percentiles from the request-duration histogram (all methods merged).
fn latency(family: &MetricFamily, routes: &mut BTreeMap<String, RouteStats>) {
    let mut merged: BTreeMap<&str, MergedHistogram> = BTreeMap::new();
    for m in family.get_metric() {
        merged
            .entry(label(m, "server"))
            .or_default()
            .add(m.get_histogram());
    }
    for (server, h) in merged {
        if let Some(r) = routes.get_mut(server) {
            r.p50_seconds = h.quantile(0.5);
            r.p90_seconds = h.quantile(0.9);
            r.p99_seconds = h.quantile(0.99);
        }
    }
}

/// The snapshot now.
pub(crate) fn take(admin: &Admin) -> Value {
    let gw = &admin.gateway;
    let generation = gw.current();
    let counts = gw.sessions.counts();
    let mut routes: BTreeMap<String, RouteStats> = generation
        .config
        .upstreams
        .iter()
        .map(|u| {
            let stats = RouteStats {
                sessions: counts.get(u.name.as_ref()).copied().unwrap_or(0),
                health: Some(gw.health.view(&u.name)),
                ..RouteStats::default()
            };
            (u.name.to_string(), stats)
        })
        .collect();
    for family in gw.obs.registry.gather() {
        match family.name() {
            "mcpgate_requests_total" => sum_counter(&family, &mut routes, |r, n, m| {
                r.requests += n;
                if label(m, "status").starts_with('5') {
                    r.errors += n;
                }
            }),
            "mcpgate_policy_denials_total" => {
                sum_counter(&family, &mut routes, |r, n, _| r.denials += n);
            }
            "mcpgate_rate_limit_rejections_total" => {
                sum_counter(&family, &mut routes, |r, n, _| r.rate_limited += n);
            }
            "mcpgate_request_duration_seconds" => latency(&family, &mut routes),
            "mcpgate_active_sse_streams" => {
                for m in family.get_metric() {
                    if let Some(r) = routes.get_mut(label(m, "server")) {
                        r.sse_streams += m.get_gauge().get_value() as i64;
                    }
                }
            }
            _ => {}
        }
    }
    let mut decisions = gw.obs.recent.as_ref().map(|r| r.list()).unwrap_or_default();
    decisions.truncate(SNAPSHOT_DECISIONS);
    json!({
        "at_unix_ms": unix_ms(std::time::SystemTime::now()),
        "generation": generation.number,
        "draining": gw.is_draining(),
        "uptime_seconds": gw.started().elapsed().map_or(0, |d| d.as_secs()),
        "open_connections": gw.connections.open(),
        "active_sessions": gw.sessions.active_count(),
        "routes": routes,
        "plugins": generation.plugins().statuses(),
        "decisions": decisions,
        "last_reload": gw.reloads.last(),
    })
}

/// `GET /admin/snapshot`: one snapshot.
pub(super) async fn current(State(admin): State<Admin>) -> Response {
    Json(take(&admin)).into_response()
}

/// `GET /admin/events`: a snapshot every [`EVENT_INTERVAL`] as SSE (`event: snapshot`), until the
/// client goes or the gateway drains. At most `admin.max_event_streams` at once.
pub(super) async fn events(State(admin): State<Admin>) -> Response {
    let Ok(permit) = admin.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin.max_event_streams dashboards are streaming already: close one, or poll /admin/snapshot",
        );
    };
    let shutdown = admin.gateway.shutdown_token();
    let stream =
        futures_util::stream::unfold((admin, permit, true), move |(admin, permit, first)| {
            let shutdown = shutdown.clone();
            async move {
                if !first {
                    tokio::select! {
                        () = tokio::time::sleep(EVENT_INTERVAL) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
                let event = format!("event: snapshot\ndata: {}\n\n", take(&admin));
                Some((
                    Ok::<_, Infallible>(Bytes::from(event)),
                    (admin, permit, false),
                ))
            }
        });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
