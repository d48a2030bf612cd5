//! A test identity provider: an ES256 signing key, its JWKS and OpenID discovery served on
//! 127.0.0.1, and tokens signed with it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{Value, json};

use super::{Upstream, json_response, upstream};

pub struct Key {
    pub kid: String,
    signing: SigningKey,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(signing) = SigningKey::from_bytes(&bytes.into()) {
                return Key {
                    kid: kid.to_string(),
                    signing,
                };
            }
        }
    }

    pub fn jwk(&self) -> Value {
        let point = self.signing.verifying_key().to_encoded_point(false);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":self.kid,"x":b64(point.x().unwrap()),"y":b64(point.y().unwrap())})
    }

    fn encoding(&self) -> EncodingKey {
        EncodingKey::from_ec_der(self.signing.to_pkcs8_der().unwrap().as_bytes())
    }

    /// Signs `claims` (ES256, with this key's kid).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding()).unwrap()
    }

    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding()).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass a gateway configured with `issuer` and audience `aud`.
pub fn claims(issuer: &str, aud: &str, sub: &str) -> Value {
    json!({"iss": issuer, "aud": aud, "sub": sub, "exp": now() + 600, "iat": now(), "scope": "mcp:read mcp:write"})
}

/// The identity provider: serves `/jwks` with whatever keys are published, and OpenID discovery.
pub struct Idp {
    pub server: Upstream,
    pub published: Arc<Mutex<Vec<Value>>>,
}

impl Idp {
    pub async fn start(keys: &[&Key]) -> Idp {
        let published: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.jwk()).collect()));
        let jwks = published.clone();
        let base: Arc<Mutex<String>> = Arc::default();
        let base_for_handler = base.clone();
        let server = upstream(move |s: super::Seen| {
            let jwks = jwks.clone();
            let base = base_for_handler.lock().unwrap().clone();
            async move {
                match s.uri.path() {
                    "/jwks" => json_response(200, json!({"keys": *jwks.lock().unwrap()})),
                    "/.well-known/openid-configuration" => json_response(
                        200,
                        json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}),
                    ),
                    _ => json_response(404, json!({})),
                }
            }
        })
        .await;
        *base.lock().unwrap() = format!("http://{}", server.addr);
        Idp { server, published }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    pub fn publish(&self, keys: &[&Key]) {
        *self.published.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|s| s.uri.path() == "/jwks")
            .count()
    }
}
