//! Legacy-era sessions: gateway-issued ids that any replica can read.
//!
//! When an upstream's `initialize` response carries `Mcp-Session-Id`, the client gets a sealed
//! token instead: XChaCha20-Poly1305 over (upstream session id, local id, caller, issue and expiry
//! times), with the route's name as associated data so a token minted for one route is useless on
//! another. Any replica holding the same key opens it, so there is no shared store and no sticky
//! load balancing. The caller slot binds the session to whoever authenticated when it was minted.
//!
//! The [`SessionTable`] is local bookkeeping only (a gauge and an admin view): bounded, reaped,
//! and the one place a DELETE is remembered so this replica answers 404 for an ended session.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use lru::LruCache;
use rand::RngCore as _;

mod binding;
#[cfg(test)]
mod tests;

pub use binding::{Answered, SessionBinding};

const TOKEN_PREFIX: &str = "mg1.";
const FORMAT_VERSION: u8 = 1;
const AAD_PREFIX: &[u8] = b"mcpgate/session/v1\0";

/// The `sessions:` section, as the config validated it.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// 32-byte AEAD key; `None` means "generate one at start" (single replica only).
    pub key: Option<[u8; 32]>,
    /// Absolute lifetime of a gateway-issued session id.
    pub ttl: Duration,
    /// Local bookkeeping forgets a session unused for this long.
    pub idle_timeout: Duration,
    /// Bound on locally tracked sessions.
    pub max_active: usize,
}

/// What a sealed session id says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    /// The session id the upstream issued, sent to the upstream in place of the client's token.
    pub upstream_session: String,
    /// The gateway's own id for bookkeeping (hex), stable across replicas.
    pub id: String,
    /// The identity the session is bound to (`None` until authentication is configured).
    pub caller: Option<String>,
    pub issued_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Not a token of ours, tampered with, for another route, or sealed with another key.
    Unknown,
    Expired,
    /// Ended by a DELETE seen by this replica.
    Ended,
    /// Presented by a caller other than the one it was issued to.
    WrongCaller,
}

/// Prefix of the ids the gateway gives hooked requests ([`Sessions::seal_request_id`]).
pub const REQUEST_ID_PREFIX: &str = "mg1r.";
const REQUEST_AAD_PREFIX: &[u8] = b"mcpgate/request-id/v1\0";

/// What the gateway's own id for a hooked request says: enough to recognise its response on
/// whichever stream (or replica) it arrives, run the hooks, and give the client back its exact id.
///
/// A request whose response a stage inspects (a filtered `tools/list`, a plugin's
/// `on_response`) is forwarded with this sealed id in place of the client's, so matching never
/// depends on how a server re-spells the client's id (`"\u0031"` vs `"1"`, `-0` vs `0`), and a
/// response that shows up on a GET stream or a resumed stream is still recognised as hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookedId {
    /// The authenticated caller's id (empty without authentication): a response is hooked
    /// only for them.
    pub caller: String,
    pub method: String,
    /// The tool or prompt name, or resource URI.
    pub target: Option<String>,
    /// The client's id as the client spelled it (JSON text).
    pub client_id: String,
}

fn request_aad(upstream: &str) -> Vec<u8> {
    [REQUEST_AAD_PREFIX, upstream.as_bytes()].concat()
}

/// A length-prefixed (u32) field.
fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let field = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(field)
}

/// One tracked session, for the gauge and the admin view.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub id: String,
    pub upstream: String,
    pub caller: Option<String>,
    pub idle: Duration,
    /// Unix seconds when the session began.
    pub issued_at: u64,
}

#[derive(Debug)]
struct Entry {
    upstream: String,
    caller: Option<String>,
    last_seen: Instant,
    expires_at: u64,
    issued_at: u64,
    upstream_session: String,
    /// The token this replica opened (or minted) for it.
    token: String,
}

/// The local bookkeeping, in least-recently-used order so that making room at `max_active` is
/// O(1) (a full table is where a client opening sessions in a loop would push it).
struct Table {
    active: LruCache<String, Entry>,
    /// Token → session id for the tracked sessions: a token this replica has already opened is
    /// answered from the table, without decrypting it again.
    tokens: HashMap<String, String>,
    /// Ended sessions (id → when their tokens expire anyway), oldest first out when full.
    ended: LruCache<String, u64>,
}

impl Table {
    fn new(max_active: usize) -> Table {
        let cap = NonZeroUsize::new(max_active).unwrap_or(NonZeroUsize::MIN);
        Table {
            active: LruCache::new(cap),
            tokens: HashMap::new(),
            ended: LruCache::new(cap),
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(e) = self.active.pop(id) {
            self.tokens.remove(&e.token);
        }
    }
}

/// Seals and opens session ids, and tracks the ones this replica has seen.
pub struct Sessions {
    cipher: XChaCha20Poly1305,
    ttl: Duration,
    idle_timeout: Duration,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Bytes as lowercase hex (session ids, tokens, file digests).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn aad(upstream: &str) -> Vec<u8> {
    [AAD_PREFIX, upstream.as_bytes()].concat()
}

impl Sessions {
    /// Builds from config. The second value is true when no key was configured and one was
    /// generated: fine for one replica, fatal to sessions for several (the caller warns).
    pub fn new(config: &SessionConfig) -> (Sessions, bool) {
        let (key, generated) = match config.key {
            Some(k) => (k, false),
            None => {
                let mut k = [0u8; 32];
                rand::rng().fill_bytes(&mut k);
                (k, true)
            }
        };
        let sessions = Sessions {
            cipher: XChaCha20Poly1305::new(&key.into()),
            ttl: config.ttl,
            idle_timeout: config.idle_timeout,
            table: Mutex::new(Table::new(config.max_active)),
        };
        (sessions, generated)
    }

    /// Seals a new client-facing session id for an upstream session, and starts tracking it.
    pub fn mint(&self, upstream: &str, upstream_session: &str, caller: Option<&str>) -> String {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let issued_at = now_unix();
        let claims = SessionClaims {
            upstream_session: upstream_session.to_string(),
            id: hex(&id),
            caller: caller.map(str::to_string),
            issued_at,
            expires_at: issued_at.saturating_add(self.ttl.as_secs().max(1)),
        };
        let token = self.seal(upstream, &claims);
        self.track(upstream, &claims, &token);
        token
    }

    fn seal(&self, upstream: &str, c: &SessionClaims) -> String {
        // version | issued u64 | expires u64 | id 16 | caller len u16 | caller | upstream session
        let mut plain = Vec::with_capacity(64 + c.upstream_session.len());
        plain.push(FORMAT_VERSION);
        plain.extend_from_slice(&c.issued_at.to_be_bytes());
        plain.extend_from_slice(&c.expires_at.to_be_bytes());
        plain.extend_from_slice(c.id.as_bytes());
        let caller = c.caller.as_deref().unwrap_or("").as_bytes();
        let caller_len = u16::try_from(caller.len()).unwrap_or(u16::MAX);
        plain.extend_from_slice(&caller_len.to_be_bytes());
        plain.extend_from_slice(&caller[..usize::from(caller_len)]);
        plain.extend_from_slice(c.upstream_session.as_bytes());
        format!("{TOKEN_PREFIX}{}", self.seal_bytes(&aad(upstream), &plain))
    }

    /// base64url(nonce ‖ XChaCha20-Poly1305(plain, aad)), with a random 192-bit nonce.
    fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext of [`Sessions::seal_bytes`]' output, if it is authentic for `aad`.
    fn open_bytes(&self, aad: &[u8], text: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }

    fn unseal(&self, upstream: &str, token: &str) -> Option<SessionClaims> {
        let plain = self.open_bytes(&aad(upstream), token.strip_prefix(TOKEN_PREFIX)?)?;
        let (&version, rest) = plain.split_first()?;
        if version != FORMAT_VERSION || rest.len() < 8 + 8 + 32 + 2 {
            return None;
        }
        let issued_at = u64::from_be_bytes(rest[0..8].try_into().ok()?);
        let expires_at = u64::from_be_bytes(rest[8..16].try_into().ok()?);
        let id = std::str::from_utf8(&rest[16..48]).ok()?.to_string();
        let caller_len = usize::from(u16::from_be_bytes(rest[48..50].try_into().ok()?));
        let caller = rest.get(50..50 + caller_len)?;
        let upstream_session = std::str::from_utf8(rest.get(50 + caller_len..)?)
            .ok()?
            .to_string();
        Some(SessionClaims {
            upstream_session,
            id,
            caller: (!caller.is_empty()).then(|| String::from_utf8_lossy(caller).into_owned()),
            issued_at,
            expires_at,
        })
    }

    /// The id the gateway gives a request whose response a stage will inspect (see
    /// [`HookedId`]): `mg1r.` + the sealed claims, a plain ASCII string every JSON-RPC peer echoes
    /// as it is. Bound to the route like session ids.
    pub fn seal_request_id(&self, upstream: &str, claims: &HookedId) -> String {
        let mut plain = Vec::with_capacity(
            16 + claims.method.len() + claims.client_id.len() + claims.caller.len(),
        );
        plain.push(FORMAT_VERSION);
        put_field(&mut plain, claims.caller.as_bytes());
        put_field(&mut plain, claims.method.as_bytes());
        put_field(
            &mut plain,
            claims.target.as_deref().unwrap_or("").as_bytes(),
        );
        plain.push(u8::from(claims.target.is_some()));
        plain.extend_from_slice(claims.client_id.as_bytes());
        format!(
            "{REQUEST_ID_PREFIX}{}",
            self.seal_bytes(&request_aad(upstream), &plain)
        )
    }

    /// The claims of an id [`Sessions::seal_request_id`] made for `upstream`; `None` when it is
    /// not ours, tampered with, for another route or sealed with another key.
    pub fn open_request_id(&self, upstream: &str, id: &str) -> Option<HookedId> {
        let plain = self.open_bytes(&request_aad(upstream), id.strip_prefix(REQUEST_ID_PREFIX)?)?;
        let (&version, mut rest) = plain.split_first()?;
        if version != FORMAT_VERSION {
            return None;
        }
        let caller = take_field(&mut rest)?;
        let method = take_field(&mut rest)?;
        let target = take_field(&mut rest)?;
        let (&has_target, client_id) = rest.split_first()?;
        let client_id = String::from_utf8(client_id.to_vec()).ok()?;
        serde_json::from_str::<&serde_json::value::RawValue>(&client_id).ok()?;
        Some(HookedId {
            caller: String::from_utf8(caller.to_vec()).ok()?,
            method: String::from_utf8(method.to_vec()).ok()?,
            target: (has_target == 1)
                .then(|| String::from_utf8(target.to_vec()).ok())
                .flatten(),
            client_id,
        })
    }

    /// Opens a client's session id for `upstream`, checks it is live and belongs to `caller`.
    pub fn open(
        &self,
        upstream: &str,
        token: &str,
        caller: Option<&str>,
    ) -> Result<SessionClaims, SessionError> {
        if let Some(known) = self.open_known(upstream, token) {
            return Self::check(known, caller);
        }
        let claims = self.unseal(upstream, token).ok_or(SessionError::Unknown)?;
        let claims = Self::check(Ok(claims), caller)?;
        if self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ended
            .contains(&claims.id)
        {
            return Err(SessionError::Ended);
        }
        self.track(upstream, &claims, token);
        Ok(claims)
    }

    /// A token this replica already opened for `upstream`: its claims from the table (marked as
    /// seen), `Err(Ended)` if it ended here, `None` if it is not known.
    fn open_known(
        &self,
        upstream: &str,
        token: &str,
    ) -> Option<Result<SessionClaims, SessionError>> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = table.tokens.get(token)?.clone();
        if table.ended.contains(&id) {
            return Some(Err(SessionError::Ended));
        }
        let e = table
            .active
            .get_mut(&id)
            .filter(|e| e.upstream == upstream)?;
        e.last_seen = Instant::now();
        Some(Ok(SessionClaims {
            upstream_session: e.upstream_session.clone(),
            id,
            caller: e.caller.clone(),
            issued_at: e.issued_at,
            expires_at: e.expires_at,
        }))
    }

    /// The checks every open makes: not expired, presented by its caller.
    fn check(
        claims: Result<SessionClaims, SessionError>,
        caller: Option<&str>,
    ) -> Result<SessionClaims, SessionError> {
        let claims = claims?;
        if claims.expires_at <= now_unix() {
            return Err(SessionError::Expired);
        }
        if claims.caller.as_deref() != caller {
            return Err(SessionError::WrongCaller);
        }
        Ok(claims)
    }

    /// Remembers that a session ended (DELETE), so this replica answers 404 for it from now on
    /// (the oldest ended sessions are forgotten first when `max_active` are remembered).
    pub fn end(&self, claims: &SessionClaims) {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.remove(&claims.id);
        table.ended.push(claims.id.clone(), claims.expires_at);
    }

    /// Ends a tracked session by its id (the admin API): this replica answers 404 for it from
    /// now on. `false` when no session with that id is tracked here.
    pub fn end_by_id(&self, id: &str) -> bool {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(expires_at) = table.active.peek(id).map(|e| e.expires_at) else {
            return false;
        };
        table.remove(id);
        table.ended.push(id.to_string(), expires_at);
        true
    }

    fn track(&self, upstream: &str, claims: &SessionClaims, token: &str) {
        let now = Instant::now();
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = table.active.get_mut(&claims.id) {
            e.last_seen = now;
            return;
        }
        table.tokens.insert(token.to_string(), claims.id.clone());
        let evicted = table.active.push(
            claims.id.clone(),
            Entry {
                upstream: upstream.to_string(),
                caller: claims.caller.clone(),
                last_seen: now,
                expires_at: claims.expires_at,
                issued_at: claims.issued_at,
                upstream_session: claims.upstream_session.clone(),
                token: token.to_string(),
            },
        );
        // Full: the least recently used session was forgotten. Bookkeeping only: the session
        // itself lives on in its token, and is tracked again when it is next used.
        if let Some((id, old)) = evicted
            && id != claims.id
        {
            table.tokens.remove(&old.token);
        }
    }

    /// Forgets what was idle longer than `idle` (from the least recently used end: O(what is
    /// forgotten)), then expired ended sessions.
    fn reap_locked(table: &mut Table, now: Instant, idle: Duration) {
        let unix = now_unix();
        while let Some((_, e)) = table.active.peek_lru() {
            if now.duration_since(e.last_seen) < idle && e.expires_at > unix {
                break;
            }
            if let Some((_, e)) = table.active.pop_lru() {
                table.tokens.remove(&e.token);
            }
        }
        while table.ended.peek_lru().is_some_and(|(_, exp)| *exp <= unix) {
            table.ended.pop_lru();
        }
    }

    /// Forgets idle and expired sessions; run periodically.
    pub fn reap(&self) {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::reap_locked(&mut table, Instant::now(), self.idle_timeout);
    }

    /// Tracked sessions of one upstream (or all), for the gauge and admin view.
    pub fn active(&self, upstream: Option<&str>) -> Vec<ActiveSession> {
        let now = Instant::now();
        let table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table
            .active
            .iter()
            .filter(|(_, e)| upstream.is_none_or(|u| u == e.upstream))
            .map(|(id, e)| ActiveSession {
                id: id.clone(),
                upstream: e.upstream.clone(),
                caller: e.caller.clone(),
                idle: now.duration_since(e.last_seen),
                issued_at: e.issued_at,
            })
            .collect()
    }

    /// Tracked sessions per upstream (for the `mcpgate_active_sessions` gauge, at scrape time).
    pub fn counts(&self) -> HashMap<String, usize> {
        let table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counts = HashMap::new();
        for (_, e) in table.active.iter() {
            *counts.entry(e.upstream.clone()).or_default() += 1;
        }
        counts
    }

    pub fn active_count(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .active
            .len()
    }
}
