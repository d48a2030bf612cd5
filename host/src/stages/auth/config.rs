//! The `auth:` section: its YAML schema, its checks (each error at its key's line) and the
//! compiled form the stage runs with. An auth option is added here and in `super` only.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, header};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::Validator;

pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

pub const DEFAULT_LEEWAY_MS: u64 = 30_000;

pub const DEFAULT_JWKS_MIN_REFETCH_MS: u64 = 30_000;

pub const DEFAULT_JWKS_TTL_MS: u64 = 3_600_000;

pub const DEFAULT_JWKS_FETCH_TIMEOUT_MS: u64 = 5_000;

/// One API key: the caller it identifies and the SHA-256 of the key.
#[derive(Clone)]
pub struct ApiKey {
    pub id: Arc<str>,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS URL.
    Jwks(String),
    /// An OpenID provider's issuer URL (discovery finds the JWKS).
    Oidc(String),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub source: KeySource,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub client_id_claim: String,
    pub leeway: Duration,
    /// Scopes every token must carry (403 `insufficient_scope` otherwise).
    pub scopes: Vec<String>,
    /// Where clients get tokens, advertised in the resource metadata.
    pub authorization_servers: Vec<String>,
    pub jwks_min_refetch: Duration,
    pub jwks_ttl: Duration,
    /// Bound on one fetch of the discovery document or the JWKS, and so on any request's wait
    /// for keys.
    pub jwks_fetch_timeout: Duration,
}

/// The compiled `auth:` section.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    ApiKey {
        header: HeaderName,
        keys: Vec<ApiKey>,
    },
    Jwt(Box<JwtConfig>),
}

impl AuthConfig {
    /// The header the gateway consumes itself (never forwarded upstream).
    pub fn credential_header(&self) -> HeaderName {
        match self {
            AuthConfig::ApiKey { header, .. } => header.clone(),
            AuthConfig::Jwt(_) => header::AUTHORIZATION,
        }
    }

    pub fn jwt(&self) -> Option<&JwtConfig> {
        match self {
            AuthConfig::Jwt(j) => Some(j),
            AuthConfig::ApiKey { .. } => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAuth {
    #[serde(rename = "type")]
    kind: Option<String>,
    // api-key
    header: Option<String>,
    keys: Option<Vec<RawApiKey>>,
    // jwt / oidc
    jwks_uri: Option<String>,
    issuer: Option<String>,
    audience: Option<OneOrMany>,
    algorithms: Option<Vec<String>>,
    client_id_claim: Option<String>,
    leeway: Option<u64>,
    scopes: Option<Vec<String>>,
    authorization_servers: Option<Vec<String>>,
    jwks_min_refetch: Option<u64>,
    jwks_ttl: Option<u64>,
    jwks_fetch_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApiKey {
    id: Option<String>,
    key_env: Option<String>,
    key: Option<String>,
}

const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex = text.trim().strip_prefix("sha256:").ok_or_else(|| {
        "keys written in the file must be hashes, `sha256:<64 hex digits>` (printf %s KEY | sha256sum); or take the key from the environment with `key: ${VAR}` or `key_env: VAR`".to_string()
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("`sha256:` must be followed by 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl Validator<'_> {
    pub(crate) fn auth(&mut self, raw: RawAuth) -> Option<AuthConfig> {
        let kind = raw.kind.clone();
        match kind.as_deref() {
            Some("api-key") => self.api_key(raw),
            Some(t @ ("jwt" | "oidc")) => self.jwt(t == "oidc", raw),
            Some(other) => {
                self.error(
                    "auth.type",
                    format!("unknown auth type `{other}` (expected `api-key`, `jwt` or `oidc`)"),
                );
                None
            }
            None => {
                self.missing("auth.type", "required: `api-key`, `jwt` or `oidc`");
                None
            }
        }
    }

    fn not_for(&mut self, key: &str, present: bool, kind: &str) {
        if present {
            self.error(
                &format!("auth.{key}"),
                format!("`{key}` does not apply to `type: {kind}`"),
            );
        }
    }

    fn api_key(&mut self, raw: RawAuth) -> Option<AuthConfig> {
        for (key, present) in [
            ("jwks_uri", raw.jwks_uri.is_some()),
            ("issuer", raw.issuer.is_some()),
            ("audience", raw.audience.is_some()),
            ("algorithms", raw.algorithms.is_some()),
            ("scopes", raw.scopes.is_some()),
        ] {
            self.not_for(key, present, "api-key");
        }
        let header_text = raw
            .header
            .unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_string());
        let header = http::HeaderName::from_bytes(header_text.trim().as_bytes())
            .map_err(|_| {
                self.error(
                    "auth.header",
                    format!("`{header_text}` is not a valid header name"),
                )
            })
            .ok();
        let Some(keys) = raw.keys.filter(|k| !k.is_empty()) else {
            self.missing(
                "auth.keys",
                "required: a list of keys, each with an `id` and `key_env: VAR`, `key: ${VAR}` or `key: sha256:<hex>`",
            );
            return None;
        };
        let mut out: Vec<ApiKey> = Vec::with_capacity(keys.len());
        // Where each accepted key came from, to name both places when two keys are the same.
        let mut sources: Vec<String> = Vec::with_capacity(keys.len());
        for (i, k) in keys.into_iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            let Some(id) = k.id.filter(|id| !id.trim().is_empty()) else {
                self.missing(
                    &format!("{path}.id"),
                    "required: the caller's identity for this key",
                );
                continue;
            };
            if out.iter().any(|o| *o.id == *id) {
                self.error(
                    &format!("{path}.id"),
                    format!("id `{id}` is used by another key"),
                );
            }
            let Some((source, digest)) = self.key_source(&path, k.key_env, k.key) else {
                continue;
            };
            let Some(digest) = digest else { continue };
            if let Some(j) = out.iter().position(|o| o.digest == digest) {
                self.error(
                    &source,
                    format!(
                        "the same key as {} (id `{}`): every caller needs a key of its own, or the gateway cannot tell them apart",
                        sources[j], out[j].id
                    ),
                );
                continue;
            }
            sources.push(source);
            out.push(ApiKey {
                id: Arc::from(id),
                digest,
            });
        }
        Some(AuthConfig::ApiKey {
            header: header?,
            keys: out,
        })
    }

    /// Where the key of `auth.keys[i]` (`path`) comes from, and its digest (`None` when it was
    /// reported as wrong); `None` when the entry gives no usable source.
    fn key_source(
        &mut self,
        path: &str,
        key_env: Option<String>,
        key: Option<String>,
    ) -> Option<(String, Option<[u8; 32]>)> {
        match (key_env, key) {
            (Some(var), None) => {
                let source = format!("{path}.key_env");
                let digest = self
                    .env_secret(&source, &var)
                    .and_then(|v| self.key_digest(&source, &v));
                Some((source, digest))
            }
            (None, Some(text)) => {
                let source = format!("{path}.key");
                let digest = self.file_key(&source, &text);
                Some((source, digest))
            }
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{path}.key"),
                    "give either `key_env` or `key`, not both",
                );
                None
            }
            // A `key: ${VAR}` whose variable is unset was reported (and removed) already.
            (None, None) if self.has_error_at(&format!("{path}.key")) => None,
            (None, None) => {
                self.missing(
                    &format!("{path}.key_env"),
                    "required: `key_env: VAR`, `key: ${VAR}` or `key: sha256:<hex>`",
                );
                None
            }
        }
    }

    /// `auth.keys[].key`: a `sha256:` digest (written in the file or not), or a key that came
    /// wholly from the environment (`key: ${VAR}`, MCPGate's spelling), hashed here like a
    /// `key_env` one. A plain-text key written in the file is refused: the file would hold the
    /// secret.
    fn file_key(&mut self, path: &str, text: &str) -> Option<[u8; 32]> {
        let result = if text.trim().starts_with("sha256:") || !self.came_from_env(path) {
            parse_sha256(text)
        } else {
            return self.key_digest(path, text);
        };
        result.map_err(|e| self.error(path, e)).ok()
    }

    /// The stored digest of a plain key (from the environment). Clients' keys are compared
    /// trimmed (a header value cannot carry surrounding whitespace), so the stored one is too:
    /// a trailing newline from `$(cat keyfile)` must not make a key unusable.
    fn key_digest(&mut self, path: &str, key: &str) -> Option<[u8; 32]> {
        let key = key.trim();
        if key.is_empty() {
            self.error(
                path,
                "the environment variable holds only whitespace, which no client can send as a key",
            );
            return None;
        }
        if key.bytes().any(|b| b.is_ascii_control()) {
            // Never echo the value: it is a secret.
            self.error(
                path,
                "the key holds control characters, which no client can send in a header",
            );
            return None;
        }
        Some(Sha256::digest(key.as_bytes()).into())
    }

    fn jwt(&mut self, oidc: bool, raw: RawAuth) -> Option<AuthConfig> {
        let kind = if oidc { "oidc" } else { "jwt" };
        self.not_for("keys", raw.keys.is_some(), kind);
        self.not_for("header", raw.header.is_some(), kind);
        let issuer = raw.issuer.as_deref().and_then(|i| {
            self.http_url("auth.issuer", i)
                .map(|_| i.trim().to_string())
        });
        let source = self.key_source_of(oidc, &raw, issuer.as_deref());
        let audience = raw.audience.map(OneOrMany::into_vec).unwrap_or_default();
        if audience.is_empty() {
            self.missing(
                "auth.audience",
                "required: the audience tokens must be issued for (usually this gateway's URL)",
            );
        }
        let algorithms = self.algorithms(raw.algorithms);
        let authorization_servers = raw
            .authorization_servers
            .unwrap_or_else(|| issuer.iter().cloned().collect());
        if authorization_servers.is_empty() {
            self.missing("auth.authorization_servers", "required when `issuer` is not set: where clients obtain tokens (for OAuth resource metadata)");
        }
        Some(AuthConfig::Jwt(Box::new(JwtConfig {
            source: source?,
            issuer,
            audience,
            algorithms,
            client_id_claim: raw.client_id_claim.unwrap_or_else(|| "sub".to_string()),
            leeway: Duration::from_millis(raw.leeway.unwrap_or(DEFAULT_LEEWAY_MS)),
            scopes: raw.scopes.unwrap_or_default(),
            authorization_servers,
            jwks_min_refetch: Duration::from_millis(
                raw.jwks_min_refetch.unwrap_or(DEFAULT_JWKS_MIN_REFETCH_MS),
            ),
            jwks_ttl: Duration::from_millis(raw.jwks_ttl.unwrap_or(DEFAULT_JWKS_TTL_MS)),
            jwks_fetch_timeout: self.positive_ms(
                "auth.jwks_fetch_timeout",
                raw.jwks_fetch_timeout,
                DEFAULT_JWKS_FETCH_TIMEOUT_MS,
            ),
        })))
    }

    /// Where a `jwt` section's keys come from (`jwks_uri`), or an `oidc` one's (its issuer).
    fn key_source_of(
        &mut self,
        oidc: bool,
        raw: &RawAuth,
        issuer: Option<&str>,
    ) -> Option<KeySource> {
        if oidc {
            self.not_for("jwks_uri", raw.jwks_uri.is_some(), "oidc");
            if raw.issuer.is_none() {
                self.missing("auth.issuer", "required: the OpenID provider's issuer URL (discovery reads <issuer>/.well-known/openid-configuration)");
            }
            return issuer.map(|i| KeySource::Oidc(i.to_string()));
        }
        match &raw.jwks_uri {
            Some(u) => self
                .http_url("auth.jwks_uri", u)
                .map(|_| KeySource::Jwks(u.trim().to_string())),
            None => {
                self.missing(
                    "auth.jwks_uri",
                    "required: where the signing keys (JWKS) are published",
                );
                None
            }
        }
    }

    /// `auth.algorithms`: asymmetric ones only (default RS256 and ES256).
    fn algorithms(&mut self, raw: Option<Vec<String>>) -> Vec<jsonwebtoken::Algorithm> {
        let Some(list) = raw else {
            return vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256,
            ];
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let parsed = ALGORITHMS
                    .contains(&a.as_str())
                    .then(|| a.parse::<jsonwebtoken::Algorithm>().ok())
                    .flatten();
                if parsed.is_none() {
                    self.error(
                        &format!("auth.algorithms[{i}]"),
                        format!(
                            "`{a}` is not allowed (choose from {})",
                            ALGORITHMS.join(", ")
                        ),
                    );
                }
                parsed
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{api_keys, assert_error_at, assert_errors_at, parse, sha256};

    /// Each mistake in `auth:` is reported at its key, with a line.
    #[test]
    fn auth_section_errors() {
        assert_errors_at(&[
            ("auth:\n  type: magic\n", "auth.type", "unknown auth type"),
            ("auth:\n  type: api-key\n", "auth.keys", "required"),
            (
                "auth:\n  type: api-key\n  keys: [{id: a, key: plaintext}]\n",
                "auth.keys[0].key",
                "sha256:",
            ),
            (
                "auth:\n  type: api-key\n  keys: [{id: a, key_env: NOT_SET}]\n",
                "auth.keys[0].key_env",
                "not set",
            ),
            (
                "auth:\n  type: api-key\n  keys: [{key_env: GH_TOKEN}]\n",
                "auth.keys[0].id",
                "required",
            ),
            (
                "auth:\n  type: api-key\n  keys: [{id: a, key_env: GH_TOKEN}, {id: a, key_env: API_VALUE}]\n",
                "auth.keys[1].id",
                "used by another key",
            ),
            (
                "auth:\n  type: api-key\n  issuer: https://x\n  keys: [{id: a, key_env: GH_TOKEN}]\n",
                "auth.issuer",
                "does not apply",
            ),
            (
                "auth:\n  type: jwt\n  audience: x\n",
                "auth.jwks_uri",
                "required",
            ),
            (
                "auth:\n  type: jwt\n  jwks_uri: https://x/jwks\n  issuer: https://x\n",
                "auth.audience",
                "required",
            ),
            (
                "auth:\n  type: jwt\n  jwks_uri: https://x/jwks\n  issuer: https://x\n  audience: a\n  algorithms: [HS256]\n",
                "auth.algorithms[0]",
                "not allowed",
            ),
            (
                "auth:\n  type: jwt\n  jwks_uri: https://x/jwks\n  audience: a\n",
                "auth.authorization_servers",
                "required",
            ),
            (
                "auth:\n  type: oidc\n  audience: a\n",
                "auth.issuer",
                "required",
            ),
        ]);
    }

    /// An `auth: {type: api-key}` section with these `keys:` entries, and a route.
    fn keys_section(keys: &str) -> String {
        format!("auth:\n  type: api-key\n  keys:\n{keys}upstreams:\n  a:\n    url: http://x/mcp\n")
    }

    #[test]
    fn api_keys_that_are_wholly_from_the_environment_or_hashes_are_accepted() {
        // Accepted: keys that are wholly variables, and hashes wherever they come from.
        let cfg_ok = parse(&keys_section(
            "    - {id: a, key: \"${ENG_API_KEY}\"}\n\
             \x20   - {id: b, key: \"${GH_TOKEN}${API_VALUE}\"}\n\
             \x20   - {id: c, key: \"${KEY_HASH}\"}\n\
             \x20   - {id: d, key_env: CONTRACTOR_API_KEY}\n",
        ))
        .unwrap();
        assert_eq!(
            api_keys(&cfg_ok),
            [
                ("a".to_string(), sha256("eng-key-1")),
                ("b".to_string(), sha256("ghp_secretv-123")),
                ("c".to_string(), [0xab; 32]),
                ("d".to_string(), sha256("contractor-key-2")),
            ]
        );
        // A trailing newline (as `$(cat keyfile)` leaves) is not part of the key a client can send.
        let trimmed = parse(&keys_section("    - {id: a, key: \"${WITH_NEWLINE}\"}\n")).unwrap();
        assert_eq!(api_keys(&trimmed), [("a".to_string(), sha256("eng-key-1"))]);
    }

    #[test]
    fn literal_api_keys_are_refused_and_no_secret_is_shown() {
        // Refused, each with the reason at the key's line. Values from the environment are secrets
        // and never appear in a message.
        let cases: &[(&str, &str, &str)] = &[
            (
                "    - {id: a, key: eng-key-1}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            (
                "    - {id: a, key: \"x${ENG_API_KEY}\"}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            (
                "    - {id: a, key: \"${NOPE:-devkey}\"}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            (
                "    - {id: a, key: \"$${ENG_API_KEY}\"}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            // Not nested interpolation: the default is the literal text `${ENG_API_KEY`.
            (
                "    - {id: a, key: \"${NOPE:-${ENG_API_KEY}}\"}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            (
                "    - {id: a, key: \"${ENG_API_KEY}x\"}\n",
                "auth.keys[0].key",
                "must be hashes",
            ),
            (
                "    - {id: a, key: \"${EMPTY}\"}\n",
                "auth.keys[0].key",
                "only whitespace",
            ),
            (
                "    - {id: a, key: \"${BLANK}\"}\n",
                "auth.keys[0].key",
                "only whitespace",
            ),
            (
                "    - {id: a, key_env: BLANK}\n",
                "auth.keys[0].key_env",
                "only whitespace",
            ),
            (
                "    - {id: a, key: \"${NOPE}\"}\n",
                "auth.keys[0].key",
                "`NOPE` is not set",
            ),
            (
                "    - {id: a, key: \"${ENG_API_KEY}\"}\n    - {id: b, key_env: WITH_NEWLINE}\n",
                "auth.keys[1].key_env",
                "the same key as auth.keys[0].key (id `a`)",
            ),
            (
                "    - {id: a, key: \"${ENG_API_KEY}\"}\n    - {id: b, key: \"${ENG_API_KEY}\"}\n",
                "auth.keys[1].key",
                "every caller needs a key of its own",
            ),
        ];
        for (keys, path, needle) in cases {
            let got = assert_error_at(&keys_section(keys), path, needle);
            for (_, _, m) in &got {
                assert!(!m.contains("eng-key-1"), "a secret in a message: {m}");
            }
        }
    }
}
