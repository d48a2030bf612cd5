//! One request's legacy session as the MCP exchange sees it: the token it carries, opened before
//! the request is forwarded, and the id its answer carries.

use http::{HeaderMap, HeaderValue};

use super::{SessionClaims, Sessions};
use crate::error::GatewayError;
use crate::mcp::headers::MCP_SESSION_ID;
use crate::mcp::{Era, ParsedBody};

/// One request's legacy session, from the token it carries to the id its answer carries: what
/// the MCP exchange needs from this module before the stages (the token, whether the request
/// initializes) and after the upstream answered (minting, keeping or ending the client's id).
/// Modern (2026-07-28) requests have none: [`SessionBinding::open`] ignores their token and
/// [`SessionBinding::answer`] drops an upstream's id.
#[derive(Debug)]
pub struct SessionBinding {
    era: Era,
    /// The sealed id the client sent (`Mcp-Session-Id`), exactly as sent.
    token: Option<HeaderValue>,
    /// Whether the request holds an `initialize` (its answer mints a session).
    initialize: bool,
}

impl SessionBinding {
    pub fn of(era: Era, headers: &HeaderMap, body: Option<&ParsedBody>) -> SessionBinding {
        SessionBinding {
            era,
            token: headers.get(&MCP_SESSION_ID).cloned(),
            initialize: body.is_some_and(|b| b.messages.iter().any(|m| m.method() == "initialize")),
        }
    }

    /// Opens the gateway's sealed id for `upstream` and `caller`. Unknown, tampered, expired,
    /// ended or someone else's: 404 from the gateway itself. `None` when the request carries
    /// no session to open (modern, `initialize`, or no id).
    pub fn open(
        &self,
        sessions: &Sessions,
        upstream: &str,
        caller: Option<&str>,
    ) -> Result<Option<SessionClaims>, GatewayError> {
        let Some(token) = self
            .token
            .as_ref()
            .filter(|_| self.era == Era::Legacy && !self.initialize)
        else {
            return Ok(None);
        };
        let token = token.to_str().map_err(|_| GatewayError::SessionNotFound)?;
        match sessions.open(upstream, token, caller) {
            Ok(claims) => Ok(Some(claims)),
            Err(reason) => {
                tracing::debug!(?reason, "session rejected");
                Err(GatewayError::SessionNotFound)
            }
        }
    }

    /// The upstream answered (`status`, `headers`): its `Mcp-Session-Id` becomes the client's
    /// sealed id (the one the client sent, when it names the same upstream session; a new one
    /// for an `initialize` or a session the upstream replaced), and a DELETE's success ends the
    /// session on this replica. Modern answers never carry an id.
    pub fn answer(
        &self,
        sessions: &Sessions,
        answered: Answered<'_>,
        status: http::StatusCode,
        headers: &mut HeaderMap,
    ) {
        let upstream_session = headers.remove(&MCP_SESSION_ID);
        if self.era == Era::Legacy
            && let Some(up) = upstream_session
        {
            let token = match (answered.claims, up.to_str()) {
                (Some(s), Ok(up)) if s.upstream_session == up => self.token.clone(),
                (_, Ok(up)) if self.initialize || answered.claims.is_some() => {
                    HeaderValue::from_str(&sessions.mint(answered.upstream, up, answered.caller))
                        .ok()
                }
                _ => None,
            };
            if let Some(t) = token {
                headers.insert(MCP_SESSION_ID, t);
            }
        }
        if answered.method == http::Method::DELETE
            && let Some(claims) = answered.claims
            && (status.is_success() || status == http::StatusCode::NOT_FOUND)
        {
            sessions.end(claims);
        }
    }
}

/// What [`SessionBinding::answer`] needs to know about the request the upstream answered.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub upstream: &'a str,
    pub method: &'a http::Method,
    pub caller: Option<&'a str>,
    /// The session the request opened.
    pub claims: Option<&'a SessionClaims>,
}
