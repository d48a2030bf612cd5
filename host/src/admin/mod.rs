//! The admin listener (`admin:`): a JSON API for operators, the live dashboard, and `/metrics`
//! when `observability.metrics.listener: admin`. Its own socket (loopback by default), its own
//! connection bound, and a bearer token on every request but the dashboard's static files
//! (which hold no data: the page asks for the token and sends it with each call).
//!
//! - `api.rs`: the JSON endpoints (routes, sessions, buckets, config, plugins, reload, status).
//! - `snapshot.rs`: what the dashboard shows, and its live stream (`/admin/events`).
//! - `assets/`: the dashboard page and the OpenAPI document, embedded in the binary.

mod api;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::server::Gateway;

/// An admin API error: the status and a message, as JSON.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": {"status": status.as_u16(), "message": message.into()}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mcpgate-admin\""),
        );
    }
    response
}

/// Shared by the admin handlers.
#[derive(Clone)]
pub(crate) struct Admin {
    pub gateway: Arc<Gateway>,
    pub token_sha256: [u8; 32],
    pub streams: Arc<Semaphore>,
    pub dashboard: bool,
}

/// The admin routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let config = gateway.config();
    let admin_cfg = config.admin.clone();
    let admin = Admin {
        token_sha256: admin_cfg.as_ref().map_or([0; 32], |a| a.token_sha256),
        dashboard: admin_cfg.as_ref().is_some_and(|a| a.dashboard),
        streams: Arc::new(Semaphore::new(
            admin_cfg.as_ref().map_or(1, |a| a.max_event_streams),
        )),
        gateway: gateway.clone(),
    };
    let mut api = Router::new()
        .route("/admin/status", get(api::status))
        .route("/admin/routes", get(api::routes))
        .route("/admin/sessions", get(api::sessions))
        .route("/admin/sessions/{id}", delete(api::end_session))
        .route(
            "/admin/buckets",
            get(api::buckets).delete(api::reset_buckets),
        )
        .route("/admin/config", get(api::config))
        .route("/admin/plugins", get(api::plugins))
        .route("/admin/reload", post(api::reload))
        .route("/admin/decisions", get(api::decisions))
        .route("/admin/snapshot", get(snapshot::current))
        .route("/admin/events", get(snapshot::events))
        .route("/admin/openapi.json", get(openapi));
    if let Some(m) = config
        .observability
        .metrics
        .as_ref()
        .filter(|m| m.listener == crate::config::MetricsListener::Admin)
    {
        api = api.route(&m.path, get(metrics));
    }
    let api = api.layer(axum::middleware::from_fn_with_state(
        admin.clone(),
        authenticate,
    ));
    let mut open = Router::new();
    if admin.dashboard {
        open = open
            .route(
                "/",
                get(|| asset("text/html; charset=utf-8", DASHBOARD_HTML)),
            )
            // No icon: an empty answer, so browsers do not log a 404 for it.
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/assets/dashboard.js",
                get(|| asset("text/javascript; charset=utf-8", DASHBOARD_JS)),
            )
            .route(
                "/assets/dashboard.css",
                get(|| asset("text/css; charset=utf-8", DASHBOARD_CSS)),
            );
    }
    open.merge(api)
        .fallback(|method: Method| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint answers {method} here: see /admin/openapi.json"),
            )
        })
        .method_not_allowed_fallback(|method: Method| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on this admin endpoint: see /admin/openapi.json"),
            )
        })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(admin)
}

const DASHBOARD_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
const OPENAPI: &str = include_str!("assets/openapi.json");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn openapi() -> Response {
    asset("application/json", OPENAPI).await
}

/// Prometheus text, behind the admin token (`observability.metrics.listener: admin`).
async fn metrics(State(admin): State<Admin>) -> Response {
    let text = crate::observability::metrics::encode(&admin.gateway.obs.registry);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Every API request presents `Authorization: Bearer <admin token>` (compared in constant
/// time, as SHA-256 digests). A token in the query string is not looked at.
async fn authenticate(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = presented else {
        return error(
            StatusCode::UNAUTHORIZED,
            "the admin API needs `Authorization: Bearer <token>` (the token admin.token_env names)",
        );
    };
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    if !bool::from(digest.ct_eq(&admin.token_sha256)) {
        return error(StatusCode::UNAUTHORIZED, "wrong admin token");
    }
    next.run(request).await
}

/// The admin listener's pages may not be framed, sniffed or cached by shared caches.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Serves the admin listener until `shutdown`: at most `admin.max_connections` connections,
/// each bounded like the gateway's (a first byte and each request head within
/// `server.header_timeout`, a client that stops reading within `server.write_timeout`).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let app = router(gateway.clone());
    let max = gateway
        .config()
        .admin
        .as_ref()
        .map_or(1, |a| a.max_connections);
    let permits = Arc::new(Semaphore::new(max));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config().server.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max,
                "admin connection refused: too many open (admin.max_connections)"
            );
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // Bounded like the gateway's own connections: a first byte and each head within
        // server.header_timeout, a client that stops reading within server.write_timeout.
        let tcp = crate::conn::StallGuard::new(
            tcp,
            gateway.connections.write_timeout,
            gateway.connections.header_timeout,
        );
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            use tower::ServiceExt as _;
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
