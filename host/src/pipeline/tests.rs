use super::*;
use crate::mcp::ParsedBody;
use crate::session::{REQUEST_ID_PREFIX, Sessions};

struct Deny(&'static str);
impl Stage for Deny {
    fn name(&self) -> &str {
        "deny"
    }
    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            match cx.message().and_then(|m| m.target.as_deref()) {
                Some(t) if t == self.0 => {
                    Verdict::Reject(GatewayError::bad_request(-32012, format!("{t} denied")))
                }
                _ => Verdict::Continue,
            }
        })
    }
}

struct Upper;
impl Stage for Upper {
    fn name(&self) -> &str {
        "upper"
    }
    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            if let Some(m) = cx.message_mut() {
                let mut v = m.to_value().unwrap();
                if let Some(name) = v["params"]["name"].as_str() {
                    v["params"]["name"] = name.to_uppercase().into();
                    m.replace(&v).unwrap();
                }
            }
            Verdict::Continue
        })
    }
    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.method() == "tools/list"
    }
    fn hooks_responses(&self) -> bool {
        true
    }
    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _request: &'a Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            response.tree().unwrap()["result"]["seen"] = true.into();
            ResponseVerdict::Modified
        })
    }
}

fn cx(body: &str) -> RequestContext {
    let upstream = Arc::new(Upstream {
        name: "u".into(),
        url: "http://127.0.0.1:1/mcp".parse().unwrap(),
        timeout: Duration::from_secs(1),
        stream_idle_timeout: None,
        credential: None,
        pipeline: None,
        stdio: None,
        federation: None,
    });
    RequestContext::new(
        "req".into(),
        upstream,
        http::Method::POST,
        HeaderMap::new(),
        Some(ParsedBody::parse(body.as_bytes()).unwrap()),
    )
}

#[tokio::test]
async fn every_batch_element_passes_every_stage() {
    let p = Pipeline::new(vec![Arc::new(Upper), Arc::new(Deny("SECRET"))]);
    let mut ok = cx(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                       {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
    );
    assert!(matches!(p.on_request(&mut ok).await, Ok(Outcome::Forward)));
    assert!(ok.body_modified());
    let names: Vec<_> = ok
        .body
        .as_ref()
        .unwrap()
        .messages
        .iter()
        .map(|m| m.target.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["A".into(), "B".into()] as Vec<Arc<str>>);

    // The second element is denied after the first stage rewrote it: the whole batch stops.
    let mut denied = cx(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                           {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret"}}]"#,
    );
    let err = p.on_request(&mut denied).await.err().unwrap();
    assert_eq!(err.to_string(), "SECRET denied");
}

fn sessions() -> Arc<Sessions> {
    Arc::new(
        Sessions::new(&crate::config::SessionConfig {
            key: Some([4; 32]),
            ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_active: 10,
        })
        .0,
    )
}

/// The id a hooked request was forwarded under.
fn forwarded_id(cx: &RequestContext, index: usize) -> String {
    let id = cx.body.as_ref().unwrap().messages[index]
        .id
        .clone()
        .unwrap();
    serde_json::from_str(id.get()).unwrap()
}

fn replaced(p: Processed) -> serde_json::Value {
    match p {
        Processed::Replaced(bytes) => serde_json::from_slice(&bytes).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Looks at `tools/list` answers, changes nothing.
struct Look;
impl Stage for Look {
    fn name(&self) -> &str {
        "look"
    }
    fn on_request<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Continue })
    }
    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.method() == "tools/list"
    }
    fn hooks_responses(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_answer_the_hooks_leave_alone_keeps_its_bytes() {
    let p = Pipeline::new(vec![Arc::new(Look)]);
    let ids = sessions();
    let mut list = cx(r#"{"jsonrpc":"2.0","id":"\u0031","method":"tools/list"}"#);
    let hooks = p.hook_requests(&mut list, &ids).unwrap();
    let token = forwarded_id(&list, 0);
    let answer = format!(
        r#"{{"jsonrpc":"2.0", "id":"{token}","result":{{"n":123456789012345678901234567890,"x":1.50}}}}"#
    );
    assert_eq!(
        hooks.process(&list, answer.as_bytes()).await,
        Processed::Replaced(
            br#"{"jsonrpc":"2.0", "id":"\u0031","result":{"n":123456789012345678901234567890,"x":1.50}}"#.to_vec()
        )
    );
}

/// A `tools/list` that `Upper` hooks, its id spelled so that a server re-serialises it
/// differently (`"\u0031"`, `"1"`): the pipeline, the id sealer, the request, its hooks, and the
/// gateway's id the request went out under.
fn hooked_list() -> (
    Pipeline,
    Arc<Sessions>,
    RequestContext,
    ResponseHooks,
    String,
) {
    let p = Pipeline::new(vec![Arc::new(Upper)]);
    let ids = sessions();
    let mut list = cx(r#"{"jsonrpc":"2.0","id":"\u0031","method":"tools/list"}"#);
    let hooks = p.hook_requests(&mut list, &ids).unwrap();
    assert!(hooks.inspects());
    assert!(list.body_modified());
    let token = forwarded_id(&list, 0);
    assert!(token.starts_with(REQUEST_ID_PREFIX), "{token}");
    (p, ids, list, hooks, token)
}

/// The server's answer to [`hooked_list`]'s request, under the gateway's id.
fn answer_to(token: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"{token}","result":{{"tools":[]}}}}"#)
}

#[tokio::test]
async fn hooked_requests_go_out_under_gateway_ids_and_come_back_with_the_clients() {
    let (_p, _ids, list, hooks, token) = hooked_list();

    // The server answers under the gateway's id: hooked, and the client's exact id is back.
    let answer = answer_to(&token);
    let out = hooks.process(&list, answer.as_bytes()).await;
    let Processed::Replaced(bytes) = &out else {
        panic!("{out:?}")
    };
    assert!(
        String::from_utf8_lossy(bytes).starts_with(r#"{"id":"\u0031","#),
        "{}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(replaced(out)["result"]["seen"], true);

    // What answers no hooked request passes untouched: notifications, server requests, other
    // ids (the client's own spelling included: only the gateway's id is trusted), no data.
    for untouched in [
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":"1","result":{"tools":[{"name":"x"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
        "",
        "  ",
    ] {
        assert_eq!(
            hooks.process(&list, untouched.as_bytes()).await,
            Processed::Untouched,
            "{untouched}"
        );
    }
    // Fail closed: what may answer a hooked request but cannot be read never goes on.
    let tampered = format!(r#"{{"jsonrpc":"2.0","id":"{token}x","result":{{}}}}"#);
    for refused in [
        "not json",
        r#"{"jsonrpc":"2.0","id":"mg1r.AAAA","result":{}}"#,
        tampered.as_str(),
        r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
        "[1, 2",
        "\u{ff}",
    ] {
        assert!(
            matches!(
                hooks.process(&list, refused.as_bytes()).await,
                Processed::Refused(_)
            ),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn in_a_batch_answer_only_the_hooked_element_is_rewritten() {
    let (_p, _ids, list, hooks, token) = hooked_list();
    // A batch: the hooked element is rewritten, the others keep their bytes.
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":9, "result":{{"a": 1.50}}}},{{"jsonrpc":"2.0","id":"{token}","result":{{"tools":[]}}}}]"#
    );
    let v = replaced(hooks.process(&list, batch.as_bytes()).await);
    assert_eq!(v[1]["id"], "1");
    assert_eq!(v[1]["result"]["seen"], true);
    let Processed::Replaced(bytes) = hooks.process(&list, batch.as_bytes()).await else {
        panic!()
    };
    assert!(
        String::from_utf8_lossy(&bytes)
            .starts_with(r#"[{"jsonrpc":"2.0","id":9, "result":{"a": 1.50}}"#)
    );
}

#[tokio::test]
async fn a_stream_of_its_own_recognises_hooked_ids_for_their_caller_only() {
    let (p, ids, _list, _hooks, token) = hooked_list();
    let answer = answer_to(&token);
    // A stream that answers no request of its own (a GET stream) recognises the same id, and
    // only for the caller the request was made by.
    let get = cx(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let stream = p.stream_hooks(&ids);
    assert!(stream.inspects());
    assert_eq!(
        replaced(stream.process(&get, answer.as_bytes()).await)["id"],
        "1"
    );
    let mut other_caller = cx(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    other_caller.caller = Some(Caller {
        id: "mallory".into(),
        scopes: vec![],
    });
    assert!(matches!(
        stream.process(&other_caller, answer.as_bytes()).await,
        Processed::Refused(_)
    ));

    // Requests no stage asked about keep their ids and their bytes.
    let mut call = cx(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
    assert!(!p.hook_requests(&mut call, &ids).unwrap().inspects());
    assert!(!call.body_modified());
    assert!(
        !Pipeline::new(vec![Arc::new(Deny("x"))])
            .stream_hooks(&ids)
            .inspects()
    );
}

/// A response hook that reads nothing, the text or the tree, and changes nothing.
#[derive(Clone, Copy, Debug)]
enum Looks {
    Nothing,
    Text,
    Tree,
}
impl Stage for Looks {
    fn name(&self) -> &str {
        "looks"
    }
    fn on_request<'a>(&'a self, _cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Continue })
    }
    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        request.method() == "tools/list"
    }
    fn hooks_responses(&self) -> bool {
        true
    }
    fn on_response<'a>(
        &'a self,
        _cx: &'a RequestContext,
        _request: &'a Message,
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let read = match self {
                Looks::Nothing => true,
                Looks::Text => response.text().is_some(),
                Looks::Tree => response.tree().is_some(),
            };
            if read {
                ResponseVerdict::Unchanged
            } else {
                ResponseVerdict::Refuse("not JSON")
            }
        })
    }
}

/// The hooks read a message's top level and leave a large result to be checked by its first
/// reader: whether a hook reads it, reads nothing, or the message answers no hooked request,
/// text that is not JSON deep inside a result is refused, never passed on; JSON passes.
#[tokio::test]
async fn a_result_checked_late_is_still_checked_whoever_reads_it() {
    let ids = sessions();
    let inner = [
        (r#"{"name":"a","inputSchema":{"type":"object"}}"#, true),
        (r#"{"name":"a","inputSchema":{"type":"obj\q"}}"#, false),
        (r#"{"name":"a","inputSchema":{"type" "object"}}"#, false),
        (r#"{"name":"a","inputSchema":{"minimum":01}}"#, false),
        (
            "{\"name\":\"a\",\"description\":\"a control \u{1} character\"}",
            false,
        ),
    ];
    for reads in [Looks::Nothing, Looks::Text, Looks::Tree] {
        let p = Pipeline::new(vec![Arc::new(reads)]);
        let mut list = cx(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let hooks = p.hook_requests(&mut list, &ids).unwrap();
        let token = forwarded_id(&list, 0);
        for (entry, json) in inner {
            for id in [format!("\"{token}\""), "7".to_string()] {
                let answer =
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{entry}]}}}}"#);
                let out = hooks.process(&list, answer.as_bytes()).await;
                assert_eq!(
                    !matches!(out, Processed::Refused(_)),
                    json,
                    "reads {reads:?}, id {id}: {answer} gave {out:?}"
                );
            }
        }
        // The probe stops at a result once it knows the id: what follows the result is still
        // read before anything goes on (a second id, result or error refused, as serde_json's
        // fields refused them; text after the message refused).
        for (tail, json) in [
            ("", true),
            (r#","extra":[1,{"a":"b"}]"#, true),
            (r#","id":"other""#, false),
            (r#","id":7"#, false),
            (r#","result":{}"#, false),
            (r#","error":{"code":1},"error":null"#, false),
            (r#","x":01"#, false),
            ("} trailing", false),
        ] {
            let answer =
                format!(r#"{{"jsonrpc":"2.0","id":"{token}","result":{{"tools":[]}}{tail}}}"#);
            let out = hooks.process(&list, answer.as_bytes()).await;
            assert_eq!(
                !matches!(out, Processed::Refused(_)),
                json,
                "reads {reads:?}: {answer} gave {out:?}"
            );
        }
    }
}
