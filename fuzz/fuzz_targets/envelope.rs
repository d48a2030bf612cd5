//! The envelope parser and era classification, against a reference reading.
//!
//! Whatever bytes arrive, parsing never panics; and when the gateway accepts a body, what it
//! judges (method, id, tool or resource name, `_meta` version, era, kind) is what a Python or
//! JavaScript server reading the same bytes would act on. A disagreement is a policy bypass:
//! the gateway would judge one tool while the server calls another.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgate::mcp::envelope::set_member;
use mcpgate::mcp::{Era, MessageKind, ParsedBody, is_modern_version};
use mcpgate_fuzz::{member, messages, string_at};
use serde_json::Value;
use serde_json::value::RawValue;

const VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";

fuzz_target!(|data: &[u8]| {
    let Ok(body) = ParsedBody::parse(data) else {
        return;
    };
    // A body the gateway accepts is JSON any peer accepts (numbers a `Value` cannot hold, such
    // as 1e400, are the one difference, and the peers' readings differ there anyway).
    let Ok(reference) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let reference = if body.batch {
        messages(&reference)
    } else {
        vec![&reference]
    };
    assert_eq!(body.batch, data.trim_ascii_start().first() == Some(&b'['));
    assert_eq!(body.messages.len(), reference.len());
    for (msg, peer) in body.messages.iter().zip(&reference) {
        let method = string_at(peer, &["method"]);
        assert_eq!(msg.method.as_deref(), method, "method");
        let id = member(peer, "id");
        let ours = msg
            .id
            .as_deref()
            .map(|r| serde_json::from_str::<Value>(r.get()).unwrap());
        assert_eq!(ours.as_ref(), id, "id");
        let has_answer = member(peer, "result").is_some() || member(peer, "error").is_some();
        let kind = match (method.is_some(), id.is_some(), has_answer) {
            (true, true, _) => MessageKind::Request,
            (true, false, _) => MessageKind::Notification,
            _ => MessageKind::Response,
        };
        assert_eq!(msg.kind, kind, "kind");
        let key = match method {
            Some("tools/call" | "prompts/get") => Some("name"),
            Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => Some("uri"),
            _ => None,
        };
        let target = key.and_then(|k| string_at(peer, &["params", k]));
        assert_eq!(msg.target.as_deref(), target, "target");
        let version = string_at(peer, &["params", "_meta", VERSION_KEY]);
        assert_eq!(msg.protocol_version.as_deref(), version, "_meta version");
        assert_eq!(msg.era == Era::Modern, version.is_some(), "era");
        if let Some(v) = version {
            // Classification is total and stable: no panic on any string.
            let _ = is_modern_version(v);
        }
        // Forwarding under another id changes the id and nothing the gateway judged.
        let new_id = RawValue::from_string(r#""mg1r.fuzz""#.into()).unwrap();
        if let Ok(moved) = msg.with_id(&new_id) {
            assert_eq!(
                moved.id.as_deref().map(RawValue::get),
                Some(r#""mg1r.fuzz""#)
            );
            assert_eq!(moved.method, msg.method);
            assert_eq!(moved.target, msg.target);
            assert_eq!(moved.protocol_version, msg.protocol_version);
            let peer_view: Value = serde_json::from_str(moved.raw().get()).unwrap();
            assert_eq!(string_at(&peer_view, &["id"]), Some("mg1r.fuzz"));
        }
        // Replacing the arguments keeps the judged name: a plugin cannot rename the call.
        let args = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        if msg.kind == MessageKind::Request
            && let Ok(rewritten) = msg.with_arguments(&args)
        {
            assert_eq!(
                rewritten.target, msg.target,
                "with_arguments changed the target"
            );
            assert_eq!(rewritten.method, msg.method);
        }
    }
    // Serialising for forwarding and parsing again gives the same messages.
    let again = ParsedBody::parse(&body.to_bytes()).expect("the gateway's own bytes parse");
    assert_eq!(again.messages, body.messages);
    // set_member on any object keeps the other members and sets the one named.
    if let Some(first) = body.messages.first()
        && let Ok(text) = set_member(first.raw().get(), "id", "7")
    {
        let v: Value = serde_json::from_str(&text).expect("set_member writes JSON");
        assert_eq!(member(&v, "id"), Some(&Value::from(7)));
    }
});
