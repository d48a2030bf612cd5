//! The admin API's JSON endpoints. `assets/openapi.json` describes each one; keep them in step.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, error};
use crate::config::{Config, StateBackend};
use crate::observability::unix_ms;
use crate::stages::ratelimit::{BucketFilter, BucketKey};

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /admin/status`: version, uptime, the serving generation, the last reload.
pub(super) async fn status(State(admin): State<Admin>) -> Response {
    let gw = &admin.gateway;
    let generation = gw.current();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_ms": unix_ms(gw.started()),
        "uptime_seconds": gw.started().elapsed().map_or(0, |d| d.as_secs()),
        "draining": gw.is_draining(),
        "generation": generation.number,
        "generation_loaded_unix_ms": unix_ms(generation.loaded_at),
        "config_file": gw.reloads.source().map(|s| s.path.display().to_string()),
        "last_reload": gw.reloads.last(),
        "open_connections": gw.connections.open(),
        "websocket_connections": gw.websockets.open(),
        "active_sessions": gw.sessions.active_count(),
    }))
    .into_response()
}

/// `GET /admin/routes`: every route of the serving config with its upstream's health.
pub(super) async fn routes(State(admin): State<Admin>) -> Response {
    let gw = &admin.gateway;
    let generation = gw.current();
    let config = &generation.config;
    let counts = gw.sessions.counts();
    let routes: Vec<Value> = config
        .upstreams
        .iter()
        .map(|u| {
            let stages: Vec<&str> = u
                .pipeline
                .as_ref()
                .unwrap_or(&config.pipeline)
                .iter()
                .map(|s| s.as_str())
                .collect();
            json!({
                "name": u.name,
                "path": format!("/servers/{}/mcp", u.name),
                "upstream": crate::config::display_url(&u.url),
                "timeout_ms": ms(u.timeout),
                "stream_idle_timeout_ms": u.stream_idle_timeout.map(ms),
                "stages": stages,
                "sessions": counts.get(u.name.as_ref()).copied().unwrap_or(0),
                "health": gw.health.view(&u.name),
                "stdio": gw.bridges.get(&u.name).map(|b| {
                    let status = b.status();
                    json!({
                        "command": b.route().child.command,
                        "args": b.route().child.args,
                        "max_processes": b.route().max_processes,
                        "status": status,
                    })
                }),
            })
        })
        .collect();
    Json(json!({"generation": generation.number, "routes": routes})).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct SessionQuery {
    route: Option<String>,
}

/// `GET /admin/sessions[?route=]`: the legacy-era sessions this replica tracks.
pub(super) async fn sessions(
    State(admin): State<Admin>,
    Query(q): Query<SessionQuery>,
) -> Response {
    let now = SystemTime::now();
    let sessions: Vec<Value> = admin
        .gateway
        .sessions
        .active(q.route.as_deref())
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "route": s.upstream,
                "caller": s.caller,
                "age_seconds": now
                    .duration_since(UNIX_EPOCH + std::time::Duration::from_secs(s.issued_at))
                    .map_or(0, |d| d.as_secs()),
                "idle_ms": ms(s.idle),
            })
        })
        .collect();
    Json(json!({"count": sessions.len(), "sessions": sessions})).into_response()
}

/// `DELETE /admin/sessions/{id}`: ends a session; its client's next request gets 404 (and
/// starts a new one, as the protocol says).
pub(super) async fn end_session(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    if admin.gateway.sessions.end_by_id(&id) {
        Json(json!({"ended": id})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no active session `{id}` on this replica (GET /admin/sessions lists them)"),
        )
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct BucketQuery {
    client: Option<String>,
    server: Option<String>,
    tool: Option<String>,
}

impl BucketQuery {
    fn filter(self) -> BucketFilter {
        BucketFilter {
            client: self.client,
            server: self.server,
            tool: self.tool,
        }
    }
}

/// The in-memory buckets, or why there are none to show.
fn memory_buckets(
    admin: &Admin,
) -> Result<std::sync::Arc<crate::stages::ratelimit::MemoryBackend>, (StatusCode, &'static str)> {
    let generation = admin.gateway.current();
    match (&generation.buckets, &generation.config.rate_limit) {
        (Some(b), _) => Ok(b.clone()),
        (None, Some(r)) if r.backend == StateBackend::Redis => Err((
            StatusCode::NOT_IMPLEMENTED,
            "rate-limit buckets live in Redis (rate_limit.backend: redis), shared by every replica: inspect or delete them there",
        )),
        _ => Err((
            StatusCode::NOT_FOUND,
            "no rate limit is configured (rate_limit:)",
        )),
    }
}

/// `GET /admin/buckets[?client=&server=&tool=]`: buckets that are not full, with their tokens
/// (a bucket not listed is full).
pub(super) async fn buckets(State(admin): State<Admin>, Query(q): Query<BucketQuery>) -> Response {
    let backend = match memory_buckets(&admin) {
        Ok(b) => b,
        Err((status, message)) => return error(status, message),
    };
    let mut list: Vec<Value> = backend
        .inspect(&q.filter())
        .into_iter()
        .map(|b| {
            let (client, server, tool) = match &b.key {
                BucketKey::Client(c) => (Some(c.clone()), None, None),
                BucketKey::ClientOnServer { client, server } => {
                    (Some(client.clone()), Some(server.clone()), None)
                }
                BucketKey::Server(s) => (None, Some(s.clone()), None),
                BucketKey::Tool {
                    client,
                    server,
                    tool,
                } => (
                    Some(client.clone()),
                    Some(server.clone()),
                    Some(tool.clone()),
                ),
            };
            json!({
                "level": b.key.level(),
                "client": client,
                "server": server,
                "tool": tool,
                "capacity": b.limit.capacity,
                "refill_per_second": b.limit.refill_rate,
                "tokens": (b.tokens * 1000.0).floor() / 1000.0,
            })
        })
        .collect();
    list.sort_by_key(|v| v.to_string());
    Json(json!({"backend": "memory", "count": list.len(), "buckets": list})).into_response()
}

/// `DELETE /admin/buckets[?client=&server=&tool=]`: refills the selected buckets. Without a
/// filter every bucket is refilled.
pub(super) async fn reset_buckets(
    State(admin): State<Admin>,
    Query(q): Query<BucketQuery>,
) -> Response {
    let backend = match memory_buckets(&admin) {
        Ok(b) => b,
        Err((status, message)) => return error(status, message),
    };
    let reset = backend.reset(&q.filter());
    tracing::info!(reset, "rate-limit buckets reset through the admin API");
    Json(json!({"reset": reset})).into_response()
}

/// `GET /admin/config`: the serving config, secrets redacted (see [`redacted_config`]).
pub(super) async fn config(State(admin): State<Admin>) -> Response {
    let generation = admin.gateway.current();
    let mut view = redacted_config(&generation.config);
    view["generation"] = json!(generation.number);
    view["restart_required"] = json!(
        admin
            .gateway
            .reloads
            .last()
            .map(|r| r.restart_required)
            .unwrap_or_default()
    );
    Json(view).into_response()
}

/// `GET /admin/plugins`: the loaded plugins with their file hash and calls.
pub(super) async fn plugins(State(admin): State<Admin>) -> Response {
    let generation = admin.gateway.current();
    Json(json!({"plugins": generation.plugins().statuses()})).into_response()
}

/// `POST /admin/reload`: reloads the config now; 200 with the report when it applied, 422 with
/// every error when it was refused (the running config keeps serving). No body is read.
pub(super) async fn reload(State(admin): State<Admin>) -> Response {
    let report = admin.gateway.reload("admin").await;
    let status = if report.result == "applied" {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(report)).into_response()
}

/// `GET /admin/decisions`: the latest decisions (no bodies), newest first.
pub(super) async fn decisions(State(admin): State<Admin>) -> Response {
    let list = admin
        .gateway
        .obs
        .recent
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default();
    Json(json!({"decisions": list})).into_response()
}

/// Keys whose values are secrets wherever they appear (a literal in the file, a plugin's config).
const SECRET_KEYS: [&str; 9] = [
    "key",
    "keys",
    "token",
    "secret",
    "password",
    "client_secret",
    "api_key",
    "value",
    "credential",
];

/// Whether a key names a secret: one of [`SECRET_KEYS`], or ending in `_key`, `_token`,
/// `_secret`, `_password` (but never `*_env`, which names a variable, not its value).
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_env") {
        return false;
    }
    SECRET_KEYS.contains(&k.as_str())
        || ["_key", "_token", "_secret", "_password"]
            .iter()
            .any(|s| k.ends_with(s))
}

/// Redacts secret-named values, and the password of any URL (`scheme://user:pass@host`).
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = match v {
                        // `${VAR}` as written names a variable: not a secret.
                        Value::String(s) if s.trim().starts_with("${") => Value::String(s.clone()),
                        _ => Value::String("<redacted>".into()),
                    };
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Ok(mut url) = url::Url::parse(s)
                && url.password().is_some()
            {
                let _ = url.set_password(Some("redacted"));
                *s = url.to_string();
            }
        }
        _ => {}
    }
}

/// The serving config: the file as written (`${VAR}` not expanded, literal secrets and URL
/// passwords redacted) and the values the gateway runs with after defaults.
pub(crate) fn redacted_config(config: &Config) -> Value {
    let mut file = (*config.file.0).clone();
    redact(&mut file);
    let s = &config.server;
    json!({
        "file": file,
        "effective": {
            "server": {
                "bind": s.bind.to_string(),
                "port": s.port,
                "workers": s.workers,
                "public_url": s.public_url,
                "tls": s.tls.as_ref().map(|t| json!({"cert": t.cert, "key": t.key})),
                "max_connections": s.max_connections,
                "max_body_bytes": s.max_body_bytes,
                "max_batch_messages": s.max_batch_messages,
                "max_inspected_bytes": s.max_inspected_bytes,
                "discard_body_bytes": s.discard_body_bytes,
                "header_timeout_ms": ms(s.header_timeout),
                "body_timeout_ms": ms(s.body_timeout),
                "write_timeout_ms": ms(s.write_timeout),
                "shutdown_timeout_ms": ms(s.shutdown_timeout),
                "sse_keepalive_ms": s.sse_keepalive.map(ms),
                "watch_config": s.watch_config,
                "trusted_proxies": s.trusted_proxies.len(),
            },
            "sessions": {
                "key": if config.sessions.key.is_some() { "<redacted>" } else { "<generated at start>" },
                "ttl_ms": ms(config.sessions.ttl),
                "idle_timeout_ms": ms(config.sessions.idle_timeout),
                "max_active": config.sessions.max_active,
            },
            "upstreams": config.upstreams.iter().map(|u| json!({
                "name": u.name,
                "url": crate::config::display_url(&u.url),
                "timeout_ms": ms(u.timeout),
                "stream_idle_timeout_ms": u.stream_idle_timeout.map(ms),
                "credential_header": u.credential.as_ref().map(|(h, _)| h.as_str()),
                "pipeline": u.pipeline.as_ref().map(|p| p.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
            "pipeline": config.pipeline.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "auth": config.auth.as_ref().map(|a| match a {
                crate::stages::auth::AuthConfig::ApiKey { header, keys } =>
                    json!({"type": "api_key", "header": header.as_str(), "keys": keys.len()}),
                crate::stages::auth::AuthConfig::Jwt(_) => json!({"type": "jwt"}),
            }),
            "rate_limit": config.rate_limit.as_ref().map(|r| json!({
                "backend": if r.backend == StateBackend::Redis { "redis" } else { "memory" },
                "max_buckets": r.max_buckets,
            })),
            "policy": config.policy.is_some(),
            "plugins": config.plugins.iter().map(|p| json!({
                "name": p.name,
                "file": p.file,
                "timeout_ms": ms(p.timeout),
                "max_memory": p.max_memory,
            })).collect::<Vec<_>>(),
            "redis": config.redis.is_some(),
            "admin": config.admin.as_ref().map(|a| json!({
                "bind": a.bind.to_string(), "port": a.port, "dashboard": a.dashboard,
            })),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secrets_and_url_passwords_are_redacted() {
        let mut v = json!({
            "sessions": {"key": "c2VjcmV0LWtleS1ieXRlcw=="},
            "auth": {"type": "api_key", "keys": [{"key": "sk-live-1", "client_id": "a"}]},
            "redis": {"url": "redis://:hunter2@127.0.0.1:6379"},
            "upstreams": {"x": {"auth": {"token_env": "GH_TOKEN"}}},
            "plugins": {"p": {"config": {"api_key": "abc", "signing_secret": "s", "limit": 3}}},
            "from_env": {"key": "${MCPGATE_SESSION_KEY}"},
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["c2VjcmV0", "sk-live-1", "hunter2", "\"abc\"", "\"s\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        // Names of variables and plain settings stay readable.
        assert_eq!(v["upstreams"]["x"]["auth"]["token_env"], "GH_TOKEN");
        assert_eq!(v["plugins"]["p"]["config"]["limit"], 3);
        assert_eq!(v["from_env"]["key"], "${MCPGATE_SESSION_KEY}");
        assert_eq!(v["auth"]["keys"], "<redacted>");
    }
}
