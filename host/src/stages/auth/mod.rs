//! Authentication and OAuth 2.1 resource-server behaviour.
//!
//! - `api-key`: a configured header carries the key; keys are stored as SHA-256 digests (from an
//!   env var at load, or `sha256:` in the file) and compared in constant time against all keys.
//! - `jwt`: bearer tokens verified against a JWKS that is fetched, cached, refreshed after
//!   `jwks_ttl`, and refetched when a token names an unknown `kid` (at most once per
//!   `jwks_min_refetch`, single-flight). Only the configured algorithms are accepted, the key's
//!   own `alg` must agree with the token's, and issuer, audience, expiry and not-before are checked.
//! - `oidc`: as `jwt`, with the JWKS location discovered from `<issuer>/.well-known/openid-configuration`.
//!
//! The caller's identity (key id, or the `client_id_claim` of the token) fills
//! [`RequestContext::caller`]. Failures are 401 with `WWW-Authenticate: Bearer
//! resource_metadata="…"` pointing at the route's Protected Resource Metadata (RFC 9728), which the
//! server module serves; a token without a required scope is 403 `insufficient_scope`. Any
//! malformed credential is a 401, never a 500.

pub mod config;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::error::{GatewayError, StageKind};
use crate::mcp::jsonrpc;
use crate::pipeline::{BoxFuture, Caller, RequestContext, Stage, Verdict};
use crate::proxy::UpstreamClient;

pub use config::{ApiKey, AuthConfig, JwtConfig, KeySource};

/// The Protected Resource Metadata URL of a route, and the route's own URL (its `resource`).
pub fn resource_urls(
    public_url: Option<&str>,
    scheme: &str,
    headers: &http::HeaderMap,
    route: &str,
) -> (String, String) {
    let base = match public_url {
        Some(u) => u.to_string(),
        None => {
            // The edge refuses a Host that is not an authority; this is the second line.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_authority(h))
                .unwrap_or("localhost");
            format!("{scheme}://{host}")
        }
    };
    (
        format!("{base}/.well-known/oauth-protected-resource/servers/{route}/mcp"),
        format!("{base}/servers/{route}/mcp"),
    )
}

/// Whether `text` is an HTTP authority, `host[:port]`: a DNS name, an IPv4 address or a bracketed
/// IPv6 address, and digits for the port. Nothing else may reach a URL the gateway derives from
/// a request's `Host` (a `"` would end the `WWW-Authenticate` parameter it is quoted in).
pub fn is_authority(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.starts_with('[')) => {
            (h, Some(p))
        }
        _ => (text, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid(String),
    InsufficientScope(Vec<String>),
}

struct KeyState {
    /// Parsed keys of the last JWKS fetched, with their decoding keys (shared, not copied, per
    /// request).
    keys: Vec<Arc<(Jwk, DecodingKey)>>,
    /// When the keys were last fetched successfully.
    fetched: Option<Instant>,
    jwks_uri: Option<String>,
    /// When a fetch last started, and how many have failed in a row since the last success.
    attempted: Option<Instant>,
    failures: u32,
}

impl KeyState {
    /// Whether a new fetch may start: not before `jwks_min_refetch` after the last attempt, and,
    /// while the provider keeps failing, not before a backoff doubling from 1 s up to a minute.
    fn fetch_allowed(&self, min_refetch: Duration) -> bool {
        let wait = if self.failures == 0 {
            min_refetch
        } else {
            Duration::from_secs(1 << self.failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
        };
        self.attempted.is_none_or(|t| t.elapsed() >= wait)
    }
}

/// The JWKS cache of one `jwt`/`oidc` configuration.
///
/// Requests never wait on the identity provider for longer than `jwks_fetch_timeout`, and never
/// one after another: one fetch at a time runs in the background (single flight), with backoff
/// while the provider fails. Keys already known keep serving while a newer set is fetched or
/// while the provider is down; only a token naming a key not known yet waits, bounded, for the
/// fetch in flight.
pub struct KeyStore {
    config: JwtConfig,
    client: UpstreamClient,
    state: RwLock<KeyState>,
    fetching: AtomicBool,
    fetched: tokio::sync::Notify,
}

/// The longest backoff between fetches while the identity provider keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl KeyStore {
    pub fn new(config: JwtConfig, client: UpstreamClient) -> Self {
        let jwks_uri = match &config.source {
            KeySource::Jwks(u) => Some(u.clone()),
            KeySource::Oidc(_) => None,
        };
        KeyStore {
            config,
            client,
            state: RwLock::new(KeyState {
                keys: Vec::new(),
                fetched: None,
                jwks_uri,
                attempted: None,
                failures: 0,
            }),
            fetching: AtomicBool::new(false),
            fetched: tokio::sync::Notify::new(),
        }
    }

    fn find(
        keys: &[Arc<(Jwk, DecodingKey)>],
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Arc<(Jwk, DecodingKey)>> {
        keys.iter()
            .find(|entry| {
                let (jwk, key) = &***entry;
                let kid_ok = match kid {
                    Some(k) => jwk.common.key_id.as_deref() == Some(k),
                    None => true,
                };
                kid_ok && key.family() == alg.family()
            })
            .cloned()
    }

    /// The key a token names. A known key answers at once (a stale set is refreshed in the
    /// background); a key not known yet waits for a fetch, at most `jwks_fetch_timeout`.
    pub async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<(Jwk, DecodingKey)>, AuthError> {
        let (found, stale, allowed) = {
            let state = self.state.read().await;
            (
                Self::find(&state.keys, kid, alg),
                state
                    .fetched
                    .is_none_or(|t| t.elapsed() >= self.config.jwks_ttl),
                state.fetch_allowed(self.config.jwks_min_refetch),
            )
        };
        if let Some(found) = found {
            if stale && allowed {
                self.start_fetch();
            }
            return Ok(found);
        }
        // Unknown kid, or no keys yet: a fetch may bring it; wait for it, bounded.
        let done = self.fetched.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if allowed {
            self.start_fetch();
        }
        if self.fetching.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(self.config.jwks_fetch_timeout, done).await;
        }
        let state = self.state.read().await;
        Self::find(&state.keys, kid, alg).ok_or_else(|| {
            AuthError::Invalid(match kid {
                _ if state.keys.is_empty() => "signing keys are unavailable".to_string(),
                Some(k) => format!("unknown signing key `{k}`"),
                None => "no signing key matches the token".into(),
            })
        })
    }

    /// Starts a fetch in the background unless one is running (single flight).
    fn start_fetch(self: &Arc<Self>) {
        if self.fetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            store.state.write().await.attempted = Some(Instant::now());
            let result = store.fetch().await;
            {
                let mut state = store.state.write().await;
                match &result {
                    Ok(()) => state.failures = 0,
                    Err(_) => state.failures = state.failures.saturating_add(1),
                }
            }
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot fetch the JWKS; the keys known so far keep serving");
            }
            store.fetching.store(false, Ordering::Release);
            store.fetched.notify_waiters();
        });
    }

    async fn fetch(&self) -> Result<(), String> {
        // Read the cached location first: the read guard must be gone before any write below.
        let cached = self.state.read().await.jwks_uri.clone();
        let jwks_uri = match (&self.config.source, cached) {
            (_, Some(u)) => u,
            (KeySource::Oidc(issuer), None) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc = self
                    .client
                    .get_json(&url, self.config.jwks_fetch_timeout)
                    .await?;
                if doc
                    .get("issuer")
                    .and_then(Value::as_str)
                    .map(|i| i.trim_end_matches('/'))
                    != Some(issuer.trim_end_matches('/'))
                {
                    return Err(format!("discovery document at {url} names another issuer"));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or(format!("{url} has no jwks_uri"))?
                    .to_string();
                self.state.write().await.jwks_uri = Some(uri.clone());
                uri
            }
            (KeySource::Jwks(u), None) => u.clone(),
        };
        let body = self
            .client
            .get_json(&jwks_uri, self.config.jwks_fetch_timeout)
            .await?;
        let set: JwkSet =
            serde_json::from_value(body).map_err(|e| format!("{jwks_uri} is not a JWKS: {e}"))?;
        let keys: Vec<Arc<(Jwk, DecodingKey)>> = set
            .keys
            .into_iter()
            .filter(|k| {
                !matches!(
                    k.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            })
            .filter_map(|k| DecodingKey::from_jwk(&k).ok().map(|d| Arc::new((k, d))))
            .collect();
        let mut state = self.state.write().await;
        state.keys = keys;
        state.fetched = Some(Instant::now());
        Ok(())
    }

    /// Verifies a bearer token; returns the caller.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Caller, AuthError> {
        let cfg = &self.config;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        if !cfg.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let entry = self.key_for(header.kid.as_deref(), header.alg).await?;
        let (jwk, key) = &*entry;
        if let Some(key_alg) = jwk.common.key_algorithm
            && Algorithm::try_from(key_alg).ok() != Some(header.alg)
        {
            return Err(AuthError::Invalid(
                "the token's algorithm does not match its key".into(),
            ));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = cfg.leeway.as_secs();
        v.validate_nbf = true;
        v.set_audience(&cfg.audience);
        let mut required = vec!["exp", "aud"];
        if let Some(iss) = &cfg.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &v)
            .map_err(|e| AuthError::Invalid(format!("token rejected: {e}")))?;
        let claims = data.claims;
        let id = match claims.get(&cfg.client_id_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(AuthError::Invalid(format!(
                    "token has no `{}` claim",
                    cfg.client_id_claim
                )));
            }
        };
        let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            (None, Some(Value::Array(a))) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let missing: Vec<String> = cfg
            .scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope(missing));
        }
        Ok(Caller {
            id: Arc::from(id),
            scopes,
        })
    }
}

/// The authentication stage.
pub struct Auth {
    config: AuthConfig,
    keys: Option<Arc<KeyStore>>,
    public_url: Option<String>,
    scheme: &'static str,
}

impl Auth {
    /// `public_url`: where clients reach the gateway (`server.public_url`); without it the
    /// metadata URL is derived from each request's `Host` and the listener's `scheme`.
    pub fn new(
        config: AuthConfig,
        client: UpstreamClient,
        public_url: Option<String>,
        scheme: &'static str,
    ) -> Self {
        let keys = config
            .jwt()
            .map(|j| Arc::new(KeyStore::new(j.clone(), client)));
        Auth {
            config,
            keys,
            public_url,
            scheme,
        }
    }

    /// The caller whose key `headers` carry in `header` (`Authorization` as `Bearer <key>`),
    /// compared against every key's digest in constant time.
    pub(crate) fn check_api_key(
        header: &HeaderName,
        keys: &[ApiKey],
        headers: &http::HeaderMap,
    ) -> Result<Caller, AuthError> {
        let raw = headers.get(header).ok_or(AuthError::Missing)?;
        let text = raw
            .to_str()
            .map_err(|_| AuthError::Invalid("API key is not text".into()))?
            .trim();
        let presented = if header == header::AUTHORIZATION {
            text.strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .unwrap_or(text)
                .trim()
        } else {
            text
        };
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare against every key, in constant time, so timing tells nothing about which matched.
        let mut found: Option<&ApiKey> = None;
        for k in keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
            .map(|k| Caller {
                id: k.id.clone(),
                scopes: Vec::new(),
            })
            .ok_or(AuthError::Invalid("invalid API key".into()))
    }

    fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
        let raw = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let text = raw
            .to_str()
            .map_err(|_| AuthError::Invalid("Authorization is not text".into()))?
            .trim();
        let (scheme, token) = text.split_once(' ').ok_or(AuthError::Invalid(
            "expected `Authorization: Bearer <token>`".into(),
        ))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Invalid(
                "expected `Authorization: Bearer <token>`".into(),
            ));
        }
        Ok(token.trim())
    }

    fn refuse(&self, cx: &RequestContext, e: AuthError) -> GatewayError {
        let route = cx.upstream.name.clone();
        let (metadata, _) =
            resource_urls(self.public_url.as_deref(), self.scheme, &cx.headers, &route);
        let (status, code, message, challenge) = match (&self.config, e) {
            (AuthConfig::ApiKey { header, .. }, AuthError::Missing) => (
                StatusCode::UNAUTHORIZED,
                jsonrpc::UNAUTHENTICATED,
                format!("authentication required: send your API key in the `{header}` header"),
                format!("ApiKey header=\"{header}\""),
            ),
            (AuthConfig::ApiKey { header, .. }, AuthError::Invalid(why)) => (
                StatusCode::UNAUTHORIZED,
                jsonrpc::UNAUTHENTICATED,
                format!("authentication failed: {why}"),
                format!("ApiKey header=\"{header}\""),
            ),
            (AuthConfig::Jwt(j), AuthError::Missing) => (
                StatusCode::UNAUTHORIZED,
                jsonrpc::UNAUTHENTICATED,
                "authentication required: send `Authorization: Bearer <token>`".to_string(),
                bearer_challenge(&metadata, &j.scopes, None),
            ),
            (AuthConfig::Jwt(j), AuthError::Invalid(why)) => (
                StatusCode::UNAUTHORIZED,
                jsonrpc::UNAUTHENTICATED,
                format!("authentication failed: {why}"),
                bearer_challenge(&metadata, &j.scopes, Some(("invalid_token", &why))),
            ),
            (AuthConfig::Jwt(j), AuthError::InsufficientScope(missing)) => (
                StatusCode::FORBIDDEN,
                jsonrpc::INSUFFICIENT_SCOPE,
                format!("insufficient scope: the token lacks {}", missing.join(", ")),
                bearer_challenge(
                    &metadata,
                    &j.scopes,
                    Some(("insufficient_scope", "the token lacks a required scope")),
                ),
            ),
            // API keys carry no scopes.
            (AuthConfig::ApiKey { header, .. }, AuthError::InsufficientScope(_)) => (
                StatusCode::FORBIDDEN,
                jsonrpc::INSUFFICIENT_SCOPE,
                "insufficient scope".to_string(),
                format!("ApiKey header=\"{header}\""),
            ),
        };
        let challenge = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        GatewayError::Rejected {
            stage: StageKind::Auth,
            status,
            code,
            message,
            data: None,
            headers: vec![(header::WWW_AUTHENTICATE, challenge)],
        }
    }
}

fn bearer_challenge(metadata: &str, scopes: &[String], error: Option<(&str, &str)>) -> String {
    let mut c = format!("Bearer resource_metadata=\"{metadata}\"");
    if !scopes.is_empty() {
        c.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
    }
    if let Some((code, description)) = error {
        let description: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        c.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    c
}

impl Stage for Auth {
    fn name(&self) -> &str {
        "auth"
    }

    fn kind(&self) -> StageKind {
        StageKind::Auth
    }

    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            // Once per request: a batch's later messages share the first one's caller.
            if cx.caller.is_some() {
                return Verdict::Continue;
            }
            let result = match (&self.config, &self.keys) {
                (AuthConfig::ApiKey { header, keys }, _) => {
                    Self::check_api_key(header, keys, &cx.headers)
                }
                (AuthConfig::Jwt(_), Some(store)) => match Self::bearer(&cx.headers) {
                    Ok(token) => store.verify(token).await,
                    Err(e) => Err(e),
                },
                (AuthConfig::Jwt(_), None) => Err(AuthError::Invalid("no key store".into())),
            };
            match result {
                Ok(caller) => {
                    cx.caller = Some(caller);
                    Verdict::Continue
                }
                Err(e) => Verdict::Reject(self.refuse(cx, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "localhost",
            "127.0.0.1:8080",
            "mcp.example.com",
            "[::1]:443",
            "[fd00::1]",
            "a-b.c",
        ] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil\"x",
            "a b",
            "host:",
            "host:99999x",
            "user@host",
            "host/path",
            "[::1",
            "::1",
            "host:80:80",
            "[zz::1]:80",
            "h\u{e9}",
        ] {
            assert!(!is_authority(bad), "{bad:?}");
        }
    }
}
