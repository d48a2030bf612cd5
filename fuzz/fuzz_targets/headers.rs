//! Routing-header validation: the modern `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name`
//! headers against the body they travel with, literal or in the `=?base64?…?=` sentinel.
//!
//! Structure-aware: the fuzzer builds a real message and a header set (each header absent,
//! literal, base64-wrapped, padded with blanks, repeated, or raw bytes). Never a panic; and when
//! validation passes, every routing header present says exactly what the body says, so a policy
//! that trusts a header judges what the upstream will run.

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcpgate::mcp::headers::{self, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION};
use mcpgate::mcp::{Era, MessageKind, ParsedBody};

#[derive(Arbitrary, Debug)]
enum Spelling {
    Absent,
    Literal(String),
    Base64(String),
    Padded(String),
    Repeated(String, String),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    name: Option<String>,
    version: Option<String>,
    notification: bool,
    header_version: Spelling,
    header_method: Spelling,
    header_name: Spelling,
}

fn put(headers: &mut HeaderMap, name: &HeaderName, spelling: &Spelling) {
    let values: Vec<Vec<u8>> = match spelling {
        Spelling::Absent => vec![],
        Spelling::Literal(s) => vec![s.clone().into_bytes()],
        Spelling::Base64(s) => vec![
            format!(
                "=?base64?{}?=",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
            .into_bytes(),
        ],
        Spelling::Padded(s) => vec![format!(" \t{s} ").into_bytes()],
        Spelling::Repeated(a, b) => vec![a.clone().into_bytes(), b.clone().into_bytes()],
        Spelling::Raw(bytes) => vec![bytes.clone()],
    };
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            headers.append(name.clone(), v);
        }
    }
}

fn decoded(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    assert!(
        all.next().is_none(),
        "a repeated `{name}` passed validation"
    );
    Some(
        headers::decode_value(first.as_bytes())
            .expect("a header that passed decodes")
            .into_owned(),
    )
}

fuzz_target!(|input: Input| {
    let mut params = serde_json::Map::new();
    if let Some(name) = &input.name {
        let key = if input.method.starts_with("resources/") {
            "uri"
        } else {
            "name"
        };
        params.insert(key.into(), name.clone().into());
    }
    if let Some(v) = &input.version {
        params.insert(
            "_meta".into(),
            serde_json::json!({ "io.modelcontextprotocol/protocolVersion": v }),
        );
    }
    let mut message =
        serde_json::json!({"jsonrpc": "2.0", "method": input.method, "params": params});
    if !input.notification {
        message["id"] = 1.into();
    }
    let body = serde_json::to_vec(&message).unwrap();
    let parsed = ParsedBody::parse(&body).expect("a well-formed message parses");
    let msg = &parsed.messages[0];

    let mut map = HeaderMap::new();
    put(&mut map, &MCP_PROTOCOL_VERSION, &input.header_version);
    put(&mut map, &MCP_METHOD, &input.header_method);
    put(&mut map, &MCP_NAME, &input.header_name);
    let Ok(()) = headers::validate(&map, msg) else {
        return;
    };
    if msg.era == Era::Legacy || msg.kind == MessageKind::Response {
        return;
    }
    assert_eq!(
        decoded(&map, &MCP_PROTOCOL_VERSION).as_deref(),
        msg.protocol_version.as_deref(),
        "version header"
    );
    assert_eq!(
        decoded(&map, &MCP_METHOD).as_deref(),
        Some(msg.method()),
        "method header"
    );
    if let Some(name) = decoded(&map, &MCP_NAME) {
        assert_eq!(Some(name.as_str()), msg.target.as_deref(), "name header");
    }
    if msg.target.is_some() {
        assert!(
            map.contains_key(&MCP_NAME),
            "a named call passed without Mcp-Name"
        );
    }
});
