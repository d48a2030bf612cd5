//! Tracing: the process's subscriber (logs, and OTLP export when configured) and W3C trace
//! context in and out.
//!
//! Each MCP request runs in an `mcp.request` span carrying its request id, server, method and
//! tool; the wait for the upstream runs in a child `mcp.upstream` span. When spans are exported,
//! a client's `traceparent` becomes the request span's parent and the upstream receives a
//! `traceparent` naming the `mcp.upstream` span, so the gateway is one hop of the client's trace.
//! Without export the client's `traceparent` is forwarded untouched (the gateway is invisible).
//!
//! Export is OTLP/HTTP with protobuf bodies, sent by the gateway's own HTTP client from the
//! SDK's batch processor (batch delay and size follow the standard `OTEL_BSP_*` variables).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::TracingConfig;
use crate::proxy::{FetchError, UpstreamClient};

/// Installs the process's subscriber: logs to stderr (`text` or `json`), filtered by `RUST_LOG`
/// (default `info`), plus the OpenTelemetry layer when `tracing.otlp_endpoint` is set. Returns
/// the provider to shut down (flush) at exit. Must run inside the tokio runtime.
pub fn init(log_format: &str, tracing: Option<&TracingConfig>) -> Result<Option<Provider>, String> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let provider = tracing
        .and_then(|t| t.otlp_endpoint.as_ref().map(|e| (t, e)))
        .map(|(t, endpoint)| provider(t, endpoint, tokio::runtime::Handle::current()))
        .transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.0.tracer("mcpgate"))
            .with_tracked_inactivity(false)
    });
    // Colours only for a terminal: log files and collectors get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if log_format == "json" {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(provider)
}

/// The OTLP tracer provider; [`Provider::shutdown`] exports what is still batched.
pub struct Provider(SdkTracerProvider);

impl Provider {
    /// Flushes and stops the exporter. Blocks: call it from a blocking thread.
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("tracing: could not flush spans at exit: {e}");
        }
    }
}

fn provider(
    cfg: &TracingConfig,
    endpoint: &str,
    runtime: tokio::runtime::Handle,
) -> Result<Provider, String> {
    let client = ExportClient {
        client: UpstreamClient::new(),
        runtime,
        timeout: cfg.timeout,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint)
        .with_timeout(cfg.timeout)
        .with_headers(cfg.headers.clone().into_iter().collect())
        .build()
        .map_err(|e| format!("observability.tracing: cannot build the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(if cfg.honor_client_sampling {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)))
        } else {
            // The client's trace id is still adopted; its sampled flag is not obeyed.
            Sampler::TraceIdRatioBased(cfg.sample_ratio)
        })
        .with_resource(resource)
        .build();
    Ok(Provider(provider))
}

/// Sends export requests with the gateway's HTTP client on the gateway's runtime (the SDK's
/// batch processor runs on a thread of its own, outside tokio).
#[derive(Debug)]
struct ExportClient {
    client: UpstreamClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

type ExportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'a>>;

impl HttpClient for ExportClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<Bytes>,
    ) -> ExportFuture<'async_trait>
    where
        Self: 'async_trait,
        'life0: 'async_trait,
    {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self
            .runtime
            .spawn(async move { client.fetch(request, timeout, 4 << 20).await });
        Box::pin(async move {
            let (parts, body) =
                task.await
                    .map_err(|e| Box::new(e) as HttpError)?
                    .map_err(|e| -> HttpError {
                        match e {
                            FetchError::Timeout => "OTLP export timed out".into(),
                            FetchError::Failed(m) => m.into(),
                        }
                    })?;
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Makes `span` a child of the trace context the client sent (`traceparent`, `tracestate`), if any.
pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Without a valid traceparent the context is empty and the span starts a new trace.
    let _ = span.set_parent(parent);
}

/// Writes `span`'s context as `traceparent` / `tracestate` (replacing the client's).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}
