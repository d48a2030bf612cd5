use super::*;

fn one(body: &str) -> Message {
    let mut p = ParsedBody::parse(body.as_bytes()).unwrap();
    assert!(!p.batch);
    p.messages.remove(0)
}

#[test]
fn with_arguments_replaces_only_the_arguments() {
    let original = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1},"_meta":{"big":123456789012345678901234567890,"tiny":-1e400}}}"#,
    );
    let args = RawValue::from_string(
        r#"{"note":"[REDACTED]","n":123456789012345678901234567890,"x":1e400}"#.into(),
    )
    .unwrap();
    let rewritten = original.with_arguments(&args).unwrap();
    assert_eq!(
        rewritten.raw().get(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"note":"[REDACTED]","n":123456789012345678901234567890,"x":1e400},"_meta":{"big":123456789012345678901234567890,"tiny":-1e400}}}"#
    );
    assert_eq!(rewritten.arguments.as_ref().unwrap().get(), args.get());
    // Arguments added where there were none.
    let bare = one(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t"}}"#);
    assert_eq!(
        bare.with_arguments(&args).unwrap().raw().get(),
        format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"t","arguments":{}}}}}"#,
            args.get()
        )
    );
    // A message a `Value` cannot hold is an error, never a panic.
    let huge = one(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","arguments":{"x":-1e400}}}"#,
    );
    assert!(huge.to_value().is_err());
}

/// Found by fuzzing (fuzz/fuzz_targets/envelope.rs): the derived reader took an array for a
/// message, so the gateway judged a `tools/call` no server would see.
#[test]
fn only_objects_are_messages() {
    for body in [
        r#"[["2.0",1,"tools/call",{"name":"x"}]]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},["2.0",2,"ping"]]"#,
        r#""2.0""#,
        "7",
    ] {
        let err = ParsedBody::parse(body.as_bytes()).unwrap_err();
        assert_eq!(
            err.code,
            jsonrpc::INVALID_REQUEST,
            "{body}: {}",
            err.message
        );
    }
    for body in [
        " \n\t{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} \n",
        "[ \n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} ]",
    ] {
        assert!(ParsedBody::parse(body.as_bytes()).is_ok(), "{body:?}");
    }
}

#[test]
fn with_id_replaces_only_the_id() {
    let original = one(
        r#"{"method" : "tools/list","jsonrpc":"2.0", "id":"\u0031","params":{"cursor":"c", "n":1.50, "big":123456789012345678901234567890},"x-extra":[ 1 ,2]}"#,
    );
    let id = RawValue::from_string(r#""mg1r.abc""#.into()).unwrap();
    let forwarded = original.with_id(&id).unwrap();
    assert_eq!(
        forwarded.raw().get(),
        r#"{"method":"tools/list","jsonrpc":"2.0","id":"mg1r.abc","params":{"cursor":"c", "n":1.50, "big":123456789012345678901234567890},"x-extra":[ 1 ,2]}"#
    );
    assert_eq!(forwarded.id.as_ref().unwrap().get(), r#""mg1r.abc""#);
    assert_eq!(forwarded.method(), "tools/list");
    assert_eq!(forwarded.kind, original.kind);
    // A key spelled with escapes is still the same key.
    let escaped = one(r#"{"jsonrpc":"2.0","\u0069d":7,"method":"ping"}"#);
    assert_eq!(
        escaped.with_id(&id).unwrap().raw().get(),
        r#"{"jsonrpc":"2.0","id":"mg1r.abc","method":"ping"}"#
    );
}

#[test]
fn classifies_eras_on_the_body() {
    let modern = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":1},
           "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
    );
    assert_eq!(modern.era, Era::Modern);
    assert_eq!(modern.protocol_version.as_deref(), Some("2026-07-28"));
    assert_eq!(modern.target.as_deref(), Some("echo"));
    assert_eq!(modern.arguments.as_ref().unwrap().get(), r#"{"x":1}"#);
    assert_eq!(modern.kind, MessageKind::Request);

    let init = one(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
    );
    assert_eq!(init.era, Era::Legacy);
    let other_meta = one(
        r#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"_meta":{"progressToken":3}}}"#,
    );
    assert_eq!(other_meta.era, Era::Legacy);
    assert_eq!(other_meta.id.as_ref().unwrap().get(), "\"a\"");
}

#[test]
fn kinds_and_targets() {
    let cases = [
        (
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            MessageKind::Notification,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
            MessageKind::Response,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":1,"message":"x"}}"#,
            MessageKind::Response,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"p"}}"#,
            MessageKind::Request,
            Some("p"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"file:///a"}}"#,
            MessageKind::Request,
            Some("file:///a"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":42}}"#,
            MessageKind::Request,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"name":"ignored"}}"#,
            MessageKind::Request,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":[1,2]}"#,
            MessageKind::Request,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":"call"}"#,
            MessageKind::Request,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":{"x":[1]},"uri":null}}"#,
            MessageKind::Request,
            None,
        ),
        // Escaped keys and values; `_meta` that is not an object is no version.
        (
            r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"_meta":[1],"n\u0061me":"e\u0063ho","extra":{"a":[{}]}}}"#,
            MessageKind::Request,
            Some("echo"),
        ),
    ];
    for (body, kind, target) in cases {
        let m = one(body);
        assert_eq!(m.era, Era::Legacy, "{body}");
        assert_eq!(m.kind, kind, "{body}");
        assert_eq!(m.target.as_deref(), target, "{body}");
    }
}

#[test]
fn rejects_what_is_not_json_rpc() {
    let cases = [
        ("{not json", jsonrpc::PARSE_ERROR),
        ("", jsonrpc::PARSE_ERROR),
        ("[]", jsonrpc::INVALID_REQUEST),
        ("42", jsonrpc::INVALID_REQUEST),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            jsonrpc::INVALID_REQUEST,
        ),
        (r#"{"jsonrpc":"2.0","id":1}"#, jsonrpc::INVALID_REQUEST),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 3]"#,
            jsonrpc::INVALID_REQUEST,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":7}}}"#,
            jsonrpc::INVALID_PARAMS,
        ),
    ];
    for (body, code) in cases {
        let err = ParsedBody::parse(body.as_bytes()).unwrap_err();
        assert_eq!(err.code, code, "{body}: {}", err.message);
    }
    let err = ParsedBody::parse(br#"{"jsonrpc":"1.0","id":"k","method":"x"}"#).unwrap_err();
    assert_eq!(err.id.unwrap().get(), "\"k\"");
}

#[test]
fn batches_keep_every_message() {
    let p = ParsedBody::parse(
        br#" [{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
    )
    .unwrap();
    assert!(p.batch);
    assert_eq!(p.messages.len(), 2);
    assert!(p.error_id().is_none());
    let again = ParsedBody::parse(&p.to_bytes()).unwrap();
    assert_eq!(again.messages, p.messages);
}

#[test]
fn replace_rederives_fields() {
    let mut m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{}}}"#,
    );
    let mut v = m.to_value().unwrap();
    v["params"]["name"] = "b".into();
    v["params"]["arguments"] = serde_json::json!({"k": "v"});
    m.replace(&v).unwrap();
    assert_eq!(m.target.as_deref(), Some("b"));
    assert_eq!(m.arguments.unwrap().get(), r#"{"k":"v"}"#);
}

/// Garbage in never panics: random bytes, and valid messages with random bytes spliced in.
#[test]
fn arbitrary_input_is_an_error_or_a_message_never_a_panic() {
    use rand::{Rng as _, SeedableRng as _};
    const SPLICE: &[u8] = br#"{}[]":,0aZ\"#;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let seeds: [&[u8]; 3] = [
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2,{"b":null}]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        br#"[{"jsonrpc":"2.0","id":"a","method":"m"},{"jsonrpc":"2.0","id":2,"result":{}}]"#,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#,
    ];
    let headers = {
        let mut h = http::HeaderMap::new();
        h.insert("mcp-protocol-version", "2026-07-28".parse().unwrap());
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "=?base64?eA==?=".parse().unwrap());
        h
    };
    for i in 0..20_000 {
        let input: Vec<u8> = if i % 4 == 0 {
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
        } else {
            let mut v = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..v.len());
                match rng.random_range(0..3) {
                    0 => v[at] = rng.random(),
                    1 => {
                        v.remove(at);
                    }
                    _ => v.insert(at, SPLICE[rng.random_range(0..SPLICE.len())]),
                }
            }
            v
        };
        if let Ok(parsed) = ParsedBody::parse(&input) {
            for m in &parsed.messages {
                let _ = crate::mcp::headers::validate(&headers, m);
                let _ = m.to_value();
            }
            let _ = ParsedBody::parse(&parsed.to_bytes()).expect("what we forward parses again");
        }
    }
}

#[test]
fn unmodified_single_body_is_forwarded_verbatim() {
    let body = r#"{"jsonrpc":"2.0", "id":1,  "method":"ping"}"#;
    assert_eq!(
        ParsedBody::parse(body.as_bytes()).unwrap().to_bytes(),
        body.as_bytes()
    );
}

#[test]
fn a_param_is_set_in_place_keeping_every_other_byte() {
    let raw = RawValue::from_string(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p","big":1e400,"n":123456789012345678901234567890}}}"#.into(),
    )
    .unwrap();
    let m = Message::parse(&raw).unwrap();
    let ours = RawValue::from_string(r#""g1""#.into()).unwrap();
    let set = m.with_param(&["_meta", "progressToken"], &ours).unwrap();
    let text = set.raw().get();
    assert!(text.contains(r#""progressToken":"g1""#), "{text}");
    assert!(
        text.contains("1e400") && text.contains("123456789012345678901234567890"),
        "{text}"
    );
    assert_eq!(set.target.as_deref(), Some("x"));
    assert_eq!(set.id.as_ref().unwrap().get(), "1");
    // Objects on the way are made when missing.
    let bare = RawValue::from_string(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#.into()).unwrap();
    let set = Message::parse(&bare)
        .unwrap()
        .with_param(&["_meta", "progressToken"], &ours)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(set.raw().get()).unwrap();
    assert_eq!(v["params"]["_meta"]["progressToken"], "g1");
}
