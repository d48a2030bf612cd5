//! W3C trace context through the gateway, with the process subscriber `mcpgate start` installs
//! (its own test binary: the subscriber is global). With OTLP export on, the client's
//! `traceparent` parents the request span, the upstream receives one naming the gateway's
//! upstream span, and the spans reach an OTLP/HTTP receiver; with export off, the client's
//! `traceparent` is forwarded untouched.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::*;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_in_spans_out_and_upstream_joins_the_trace() {
    // The OTLP/HTTP receiver.
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let store = bodies.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                ""
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let up =
        upstream(|s: Seen| async move { json_response(200, ok_result(&s.json()["id"])) }).await;
    let exporting = config(&format!(
        "upstreams:\n  u:\n    url: {}\nobservability:\n  tracing:\n    otlp_endpoint: {otlp}\n    service_name: tracing-test\n",
        up.url()
    ));
    let provider =
        mcpgate::observability::trace::init("text", exporting.observability.tracing.as_ref())
            .unwrap()
            .expect("a provider when an endpoint is set");
    let gw = gateway_with(exporting, |_| {}).await;
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let resp = post_with(
        &gw.url("u"),
        &legacy_call(1, "t"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let sent = up.last();
    let forwarded = sent
        .header("traceparent")
        .expect("the upstream gets a traceparent");
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!(parts[1], TRACE, "same trace");
    assert_ne!(parts[2], CLIENT_SPAN, "the gateway is a hop of its own");
    assert_eq!(parts[3], "01", "sampled, as the client asked");

    // A request without a traceparent starts a trace of its own, also propagated.
    post(&gw.url("u"), &legacy_call(2, "t"), None).await;
    let fresh = up.last().header("traceparent").unwrap().to_string();
    assert!(!fresh.contains(TRACE), "{fresh}");

    // Export off (spans only in logs): the client's traceparent passes untouched.
    let quiet = gateway(&format!(
        "upstreams:\n  u:\n    url: {}\nobservability:\n  tracing: {{}}\n",
        up.url()
    ))
    .await;
    post_with(
        &quiet.url("u"),
        &legacy_call(3, "t"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(up.last().header("traceparent"), Some(traceparent.as_str()));

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap();
    let spans: Vec<Span> = bodies
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| {
            ExportTraceServiceRequest::decode(b.as_ref())
                .unwrap()
                .resource_spans
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .filter(|s| hex(&s.trace_id) == TRACE)
        .collect();
    let request = spans
        .iter()
        .find(|s| s.name == "mcp.request")
        .expect("request span");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    let leg = spans
        .iter()
        .find(|s| s.name == "mcp.upstream")
        .expect("upstream span");
    assert_eq!(hex(&leg.parent_span_id), hex(&request.span_id));
    // What the upstream received names the upstream span as its parent.
    assert_eq!(parts[2], hex(&leg.span_id));
}
