//! Every route but the MCP one: health, readiness, metrics, OAuth protected-resource metadata,
//! and the 404 for the rest. [`router`] serves them all, the MCP route included, through the one
//! entry `listen::dispatch`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{self, HeaderValue};
use serde_json::json;

use super::Gateway;
use crate::error::{GatewayError, StageKind};
use crate::mcp::jsonrpc;
use crate::proxy::Peer;

/// The gateway as one axum router, for embedders that serve it themselves (with
/// `into_make_service_with_connect_info::<SocketAddr>()`): every request goes through the same
/// entry as in [`super::run`], the MCP route included.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let others = routes(gateway.clone());
    Router::new().fallback(
        move |ConnectInfo(addr): ConnectInfo<SocketAddr>, request: Request| {
            let config = gateway.config();
            let peer =
                Peer::new(addr, &config.server.trusted_proxies).with_scheme(config.server.scheme());
            let (gateway, others) = (gateway.clone(), others.clone());
            async move {
                match super::listen::dispatch(gateway, others, peer, request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        },
    )
}

/// The routes other than the MCP one.
pub(super) fn routes(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    if let Some(path) = &gateway.obs.metrics_path {
        router = router.route(path, get(metrics));
    }
    router
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/.well-known/oauth-protected-resource/servers/{name}/mcp",
            get(protected_resource_metadata),
        )
        .fallback(|| async {
            GatewayError::bad_request(
                jsonrpc::METHOD_NOT_FOUND,
                "not found: MCP servers live at /servers/<name>/mcp",
            )
            .into_response(None)
        })
        .with_state(gateway)
}

/// Prometheus text exposition of the gateway's registry (plugin series included); behind a
/// bearer token when `observability.metrics.token_env` names one.
async fn metrics(State(gw): State<Arc<Gateway>>, headers: http::HeaderMap) -> Response {
    if let Some(digest) = gw.obs.metrics_token {
        // The same check as API keys: a bearer token, compared by digest in constant time.
        let token = crate::stages::auth::ApiKey {
            id: Arc::from("metrics"),
            digest,
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        let presented =
            crate::stages::auth::Auth::check_api_key(&header::AUTHORIZATION, &[token], &headers);
        if !bearer || presented.is_err() {
            return GatewayError::Rejected {
                stage: StageKind::Auth,
                status: StatusCode::UNAUTHORIZED,
                code: jsonrpc::UNAUTHENTICATED,
                message: "the metrics need `Authorization: Bearer <token>` (observability.metrics.token_env)".into(),
                data: None,
                headers: vec![(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            }
            .into_response(None);
        }
    }
    let text = crate::observability::metrics::encode(&gw.obs.registry);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        let config = gw.config();
        let upstreams: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_ref()).collect();
        // stdio routes report their state; a crash-looping one is reported, not fatal: the
        // other routes still serve.
        let stdio: serde_json::Map<String, serde_json::Value> = gw
            .bridges
            .statuses()
            .into_iter()
            .map(|(name, st)| (name.to_string(), json!(st.state)))
            .collect();
        Json(json!({"status": "ready", "upstreams": upstreams, "stdio": stdio})).into_response()
    }
}

/// RFC 9728 Protected Resource Metadata for a route whose pipeline authenticates with OAuth
/// bearer tokens: `resource` is the route's exact public URL, with the trusted authorization servers.
async fn protected_resource_metadata(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
) -> Response {
    let generation = gw.current();
    let jwt = generation.config.auth.as_ref().and_then(|a| a.jwt());
    let guarded = generation
        .pipelines
        .get(name.as_str())
        .is_some_and(|p| p.has(&StageKind::Auth));
    let (Some(jwt), true) = (jwt, guarded) else {
        return GatewayError::bad_request(
            jsonrpc::METHOD_NOT_FOUND,
            format!("no OAuth-protected MCP server is configured under `{name}`"),
        )
        .into_response(None);
    };
    let server = &generation.config.server;
    let (_, resource) = crate::stages::auth::resource_urls(
        server.public_url.as_deref(),
        server.scheme(),
        &headers,
        &name,
    );
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": jwt.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    });
    if !jwt.scopes.is_empty() {
        doc["scopes_supported"] = json!(jwt.scopes);
    }
    Json(doc).into_response()
}
