//! Sealed ids: legacy session ids (`Mcp-Session-Id`) and hooked request ids (`mg1r.`).
//!
//! A client or upstream can send any string where the gateway expects an id it sealed. Opening
//! garbage, truncations, bit flips, splices and ids sealed for another route never panics and
//! never succeeds: the only strings that open are the exact ones the gateway issued.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mcpgate::config::SessionConfig;
use mcpgate::session::{HookedId, Sessions};

#[derive(Arbitrary, Debug)]
enum Edit {
    Flip { at: u16, bit: u8 },
    Truncate { to: u16 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Replace { at: u16, byte: u8 },
    Append(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Open the gateway's own id after these edits...
    edits: Vec<Edit>,
    /// ...or this string, as is.
    raw: Option<String>,
    request_id: bool,
    caller: Option<String>,
    other_route: bool,
}

struct Issued {
    sessions: Sessions,
    session: String,
    request: String,
    claims: HookedId,
}

static ISSUED: LazyLock<Issued> = LazyLock::new(|| {
    let (sessions, _) = Sessions::new(&SessionConfig {
        key: Some([7; 32]),
        ttl: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        max_active: 16,
    });
    let session = sessions.mint("route", "upstream-session-1", Some("alice"));
    let claims = HookedId {
        caller: "alice".into(),
        method: "tools/list".into(),
        target: Some("echo".into()),
        client_id: r#"{"weird":"id"}"#.into(),
    };
    let request = sessions.seal_request_id("route", &claims);
    Issued {
        sessions,
        session,
        request,
        claims,
    }
});

fn edit(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: u16, len: usize| usize::from(i) % (len + 1);
        match e {
            Edit::Flip { at: i, bit } if !bytes.is_empty() => {
                let i = usize::from(*i) % bytes.len();
                bytes[i] ^= 1 << (bit % 8);
            }
            Edit::Truncate { to } => bytes.truncate(usize::from(*to)),
            Edit::Insert { at: i, byte } => {
                let i = at(*i, bytes.len());
                bytes.insert(i, *byte);
            }
            Edit::Remove { at: i } if !bytes.is_empty() => {
                let i = usize::from(*i) % bytes.len();
                bytes.remove(i);
            }
            Edit::Replace { at: i, byte } if !bytes.is_empty() => {
                let i = usize::from(*i) % bytes.len();
                bytes[i] = *byte;
            }
            Edit::Append(s) => bytes.extend_from_slice(s.as_bytes()),
            _ => {}
        }
    }
    bytes
}

fuzz_target!(|input: Input| {
    let issued = &*ISSUED;
    let original = if input.request_id {
        &issued.request
    } else {
        &issued.session
    };
    let candidate = match input.raw {
        Some(raw) => raw,
        None => match String::from_utf8(edit(original.clone().into_bytes(), &input.edits)) {
            Ok(s) => s,
            Err(_) => return,
        },
    };
    let route = if input.other_route { "other" } else { "route" };
    let genuine = candidate == *original && !input.other_route;
    if input.request_id {
        let opened = issued.sessions.open_request_id(route, &candidate);
        assert_eq!(
            opened.is_some(),
            genuine,
            "request id {candidate:?} on {route}"
        );
        if let Some(claims) = opened {
            assert_eq!(claims, issued.claims);
        }
    } else {
        let caller = input.caller.as_deref();
        let opened = issued.sessions.open(route, &candidate, caller);
        let owner = caller == Some("alice");
        assert_eq!(
            opened.is_ok(),
            genuine && owner,
            "session id {candidate:?} on {route} by {caller:?}"
        );
        if let Ok(claims) = opened {
            assert_eq!(claims.upstream_session, "upstream-session-1");
        }
    }
});
