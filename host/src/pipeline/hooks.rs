//! Response hooks: the requests a stage asked to see the answer to go out under ids of the
//! gateway's own ([`HookedId`]), and their answers, recognised by that id on whichever stream or
//! replica they arrive, go through the stages' `on_response` before the client gets its own id
//! back. Every other response streams on untouched.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Pipeline, Reply, RequestContext, ResponseVerdict, Stage};
use crate::error::GatewayError;
use crate::mcp::{Message, scan};
use crate::session::{HookedId, REQUEST_ID_PREFIX, Sessions};

impl Pipeline {
    /// Whether any stage (or observer) may ask to see responses: then streams that answer no
    /// request of their own (legacy GET streams, resumed streams) are inspected too.
    pub fn hooks_responses(&self) -> bool {
        self.observers
            .iter()
            .chain(self.stages.iter())
            .any(|s| s.hooks_responses())
    }

    /// The stages (observers first) that want the response to `request`.
    fn interested(&self, cx: &RequestContext, request: &Message) -> Vec<Arc<dyn Stage>> {
        self.observers
            .iter()
            .chain(self.stages.iter())
            .filter(|s| s.wants_response(cx, request))
            .cloned()
            .collect()
    }

    /// The response hooks this request needs. Each request message some stage asked about is
    /// forwarded under an id of the gateway's own ([`HookedId`], sealed by `ids`) instead of the
    /// client's, so its response is recognised by that id alone, whatever the server does to the
    /// spelling of ids and on whichever stream (or replica) the response arrives; the hooks then
    /// give the client back its exact id. Empty hooks mean "stream untouched".
    pub fn hook_requests(
        &self,
        cx: &mut RequestContext,
        ids: &Arc<Sessions>,
    ) -> Result<ResponseHooks, GatewayError> {
        let mut chosen = Vec::new();
        if let Some(body) = &cx.body {
            for (index, msg) in body.messages.iter().enumerate() {
                if !msg.is_request() {
                    continue;
                }
                let stages = self.interested(cx, msg);
                if !stages.is_empty() {
                    chosen.push((index, stages));
                }
            }
        }
        let caller = hooked_caller(cx).to_string();
        let mut wanted = Vec::with_capacity(chosen.len());
        for (index, stages) in chosen {
            let Some(msg) = cx.body.as_ref().and_then(|b| b.messages.get(index)) else {
                continue;
            };
            let claims = HookedId {
                caller: caller.clone(),
                method: msg.method().to_string(),
                target: msg.target.as_deref().map(str::to_string),
                client_id: msg.id.as_deref().map_or("null", RawValue::get).to_string(),
            };
            let token = ids.seal_request_id(&cx.upstream.name, &claims);
            let token_json = RawValue::from_string(format!("\"{token}\""))
                .map_err(|e| GatewayError::Internal(format!("request id: {e}")))?;
            let forwarded = msg
                .with_id(&token_json)
                .map_err(|e| GatewayError::bad_request(e.code, e.message))?;
            let Some(original) = cx.replace_message(index, forwarded) else {
                continue;
            };
            wanted.push(Wanted {
                token,
                request: original,
                stages,
                answered: std::sync::atomic::AtomicBool::new(false),
            });
        }
        Ok(ResponseHooks {
            inspect: !wanted.is_empty(),
            wanted,
            pipeline: self.clone(),
            ids: ids.clone(),
        })
    }

    /// Hooks for a stream that answers no request of its own (a legacy GET stream, or one a
    /// client resumes with `Last-Event-ID`): a response that carries a hooked request's id
    /// ([`HookedId`]) is hooked here too.
    pub fn stream_hooks(&self, ids: &Arc<Sessions>) -> ResponseHooks {
        ResponseHooks {
            inspect: self.hooks_responses(),
            wanted: Vec::new(),
            pipeline: self.clone(),
            ids: ids.clone(),
        }
    }
}

struct Wanted {
    /// The id the request was forwarded under.
    token: String,
    /// The request as the stages saw it, with the client's id.
    request: Message,
    stages: Vec<Arc<dyn Stage>>,
    /// Whether its answer has gone through the hooks.
    answered: std::sync::atomic::AtomicBool,
}

/// The response hooks of one request or stream (see [`Pipeline::hook_requests`]).
pub struct ResponseHooks {
    wanted: Vec<Wanted>,
    /// Whether bodies must be inspected at all.
    inspect: bool,
    /// For responses to requests of other POSTs (they arrive on GET and resumed streams).
    pipeline: Pipeline,
    ids: Arc<Sessions>,
}

/// What [`ResponseHooks::process`] made of one message (or batch) from the upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    /// Answers no hooked request: the upstream's bytes go on as they are.
    Untouched,
    /// Answers hooked requests: the messages after the hooks, with the clients' ids restored.
    Replaced(Vec<u8>),
    /// Must not reach the client: it answers (or may answer) a hooked request but cannot be
    /// inspected (unreadable, an id of ours that does not open, another caller's request).
    Refused(String),
}

/// The members of a message from the upstream that decide whether it may answer a request,
/// read by a strict walk over its top level ([`crate::mcp::scan::Cursor::strict`]): each of
/// `id`, `result` and `error` at most once (however spelled), `null` as if absent, as
/// `serde_json` reads them into optional fields.
///
/// A result that is an object or an array is not read here: once the id is known (servers send
/// it first) the probe stops at the result; before that, it skips the result unchecked. Either
/// way the rest is left to [`check_message`], run by the first hook that reads the text (the
/// policy's list walk does the same checks as it goes) or by the hooks before the message goes
/// on ([`Reply`]): a large list is walked once, not probed first.
struct Probe<'a> {
    id: Option<&'a str>,
    /// A non-null `result` or `error`.
    answers: bool,
    /// Whether the message still has to go through [`check_message`].
    unchecked: bool,
}

/// Why a probe stopped early (not an error).
const AT_RESULT: &str = "stopped at the result";

impl<'a> Probe<'a> {
    fn read(text: &'a str) -> Result<Probe<'a>, scan::ScanError> {
        walk_message(text, true)
    }
}

/// Which of a JSON-RPC message's `id`, `result` and `error` members a top-level key is (however
/// spelled), each allowed once as `serde_json`'s fields allowed them: the probe, the check and
/// the policy's strict list walk refuse a repeat alike.
#[derive(Default)]
pub(crate) struct AnswerMembers([bool; 3]);

impl AnswerMembers {
    pub(crate) const ID: usize = 0;
    pub(crate) const RESULT: usize = 1;
    pub(crate) const ERROR: usize = 2;

    /// Which of them `key` (quoted, as written) is, if any; an error when it came before.
    pub(crate) fn note(&mut self, key: &str) -> Result<Option<usize>, scan::ScanError> {
        let Some(i) = ["id", "result", "error"]
            .iter()
            .position(|name| scan::key_is(key, name))
        else {
            return Ok(None);
        };
        if std::mem::replace(&mut self.0[i], true) {
            return Err(scan::ScanError("`id`, `result` or `error` given twice"));
        }
        Ok(Some(i))
    }
}

/// `text` is a JSON object as `serde_json` reads it, whose `id`, `result` and `error` members
/// (however spelled) appear at most once each: the check a [`Probe`] leaves to later.
pub(crate) fn check_message(text: &str) -> Result<(), scan::ScanError> {
    walk_message(text, false).map(drop)
}

/// The top-level walk of a [`Probe`] (`probe`: a result object or array is left unread) or of
/// [`check_message`] (everything checked).
fn walk_message(text: &str, probe: bool) -> Result<Probe<'_>, scan::ScanError> {
    const ID: usize = AnswerMembers::ID;
    const RESULT: usize = AnswerMembers::RESULT;
    let mut c = scan::Cursor::strict(text);
    let mut once = AnswerMembers::default();
    // `id`, `result`, `error`: their values, once read (a result left unread: `"{"`).
    let mut seen: [Option<&str>; 3] = [None; 3];
    let mut unchecked = false;
    let walked = c.object(|c, key| {
        let Some(which) = once.note(key)? else {
            return c.skip().map(drop);
        };
        if probe && which == RESULT && matches!(c.peek(), Some(b'{' | b'[')) {
            unchecked = true;
            if seen[ID].is_some() {
                seen[RESULT] = Some("{");
                return Err(scan::ScanError(AT_RESULT));
            }
            seen[RESULT] = Some(c.skip_unchecked()?);
        } else {
            seen[which] = Some(c.skip()?);
        }
        Ok(())
    });
    match walked {
        Err(scan::ScanError(why)) if why == AT_RESULT => {}
        walked => {
            walked?;
            c.end()?;
        }
    }
    let given = |v: Option<&str>| v.is_some_and(|v| v != "null");
    Ok(Probe {
        id: seen[ID].filter(|v| *v != "null"),
        answers: given(seen[RESULT]) || given(seen[AnswerMembers::ERROR]),
        unchecked,
    })
}

impl ResponseHooks {
    /// Whether bodies must be read by [`ResponseHooks::process`] (else they stream untouched).
    pub fn inspects(&self) -> bool {
        self.inspect
    }

    /// JSON-RPC error responses, with `message`, for this request's hooked messages whose answers
    /// have not come through yet: what a stream that must end early sends so that the client's
    /// calls fail instead of waiting forever.
    pub fn unanswered_errors(&self, code: i32, message: &str) -> Vec<Vec<u8>> {
        self.wanted
            .iter()
            .filter(|w| !w.answered.load(std::sync::atomic::Ordering::Relaxed))
            .map(|w| crate::mcp::jsonrpc::error_body(w.request.id.as_deref(), code, message, None))
            .collect()
    }

    /// These hooks, inspecting nothing (for responses that can carry no hooked answer).
    pub fn none(mut self) -> Self {
        self.inspect = false;
        self
    }

    /// Runs the hooks on one SSE event's data or one JSON body from the upstream: a message or a
    /// batch of them. Fails closed: what may answer a hooked request but cannot be read is
    /// [`Processed::Refused`], never passed on.
    pub async fn process(&self, cx: &RequestContext, data: &[u8]) -> Processed {
        let Ok(text) = std::str::from_utf8(data) else {
            return Processed::Refused("the upstream's message is not UTF-8".into());
        };
        let text = text.trim();
        if text.is_empty() {
            // An event without data (SSE priming events, keep-alives) answers nothing.
            return Processed::Untouched;
        }
        if !text.starts_with('[') {
            // One message: `one` reads and checks it.
            return self.one(cx, text, false).await;
        }
        let items = match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => items,
            Err(e) => {
                return Processed::Refused(format!("the upstream's batch is not JSON: {e}"));
            }
        };
        let mut changed = false;
        let mut kept: Vec<String> = Vec::with_capacity(items.len());
        let mut refused = None;
        for item in items {
            // Each item already read whole (and checked) by serde_json.
            match self.one(cx, item.get(), true).await {
                Processed::Untouched => kept.push(item.get().to_string()),
                Processed::Replaced(bytes) => {
                    changed = true;
                    kept.push(String::from_utf8(bytes).unwrap_or_default());
                }
                Processed::Refused(why) => {
                    changed = true;
                    refused = Some(why);
                }
            }
        }
        match (changed, kept.is_empty(), refused) {
            (false, _, _) => Processed::Untouched,
            (true, true, Some(why)) => Processed::Refused(why),
            _ => Processed::Replaced(format!("[{}]", kept.join(",")).into_bytes()),
        }
    }

    /// [`ResponseHooks::process`] for one message; `checked`: known to be JSON already.
    async fn one(&self, cx: &RequestContext, text: &str, checked: bool) -> Processed {
        let not_json = |e: scan::ScanError| {
            Processed::Refused(format!(
                "the upstream's message is not a JSON-RPC object: {e}"
            ))
        };
        let probe = match Probe::read(text) {
            Ok(probe) => probe,
            Err(e) => return not_json(e),
        };
        let unchecked = probe.unchecked && !checked;
        // What answers no hooked request goes on as it came, once known to be JSON.
        let untouched = || match unchecked.then(|| check_message(text)) {
            Some(Err(e)) => not_json(e),
            _ => Processed::Untouched,
        };
        if !probe.answers {
            // Requests and notifications answer nothing.
            return untouched();
        }
        // Only ids of ours are hooked: the gateway forwarded every hooked request under one.
        let Some(token) = probe
            .id
            .and_then(|id| serde_json::from_str::<String>(id).ok())
            .filter(|id| id.starts_with(REQUEST_ID_PREFIX))
        else {
            return untouched();
        };
        let found;
        let opened;
        let mine = self.wanted.iter().find(|w| w.token == token);
        let (request, stages): (&Message, &[Arc<dyn Stage>]) = match mine {
            Some(w) => (&w.request, &w.stages),
            None => {
                // The answer to another POST's request (a GET or resumed stream).
                let Some(claims) = self.ids.open_request_id(&cx.upstream.name, &token) else {
                    return Processed::Refused(
                        "a response under a request id the gateway cannot open".into(),
                    );
                };
                if claims.caller != hooked_caller(cx) {
                    return Processed::Refused("a response to another caller's request".into());
                }
                let Some(request) = reconstructed(&claims) else {
                    return Processed::Refused("a request id with unusable claims".into());
                };
                opened = self.pipeline.interested(cx, &request);
                found = request;
                (&found, &opened)
            }
        };
        let mut reply = if unchecked {
            Reply::unchecked(text)
        } else {
            Reply::new(text)
        };
        let mut modified = false;
        for stage in stages {
            match stage.on_response(cx, request, &mut reply).await {
                ResponseVerdict::Unchanged => {}
                ResponseVerdict::Modified => modified = true,
                ResponseVerdict::Refuse(why) => {
                    return Processed::Refused(format!("{}: {why}", stage.name()));
                }
            }
        }
        let client_id = request.id.as_deref().map_or("null", RawValue::get);
        // Unchanged by the hooks: the upstream's bytes, with only the id given back.
        let parts = match reply.into_parts() {
            Ok(parts) => parts,
            Err(e) => return not_json(e),
        };
        let out = match parts {
            (_, Some(tree), _) if modified => with_client_id(tree, client_id),
            // The upstream's own text: its id is where the probe found it.
            (Cow::Borrowed(same), _, _)
                if let Some(spliced) = probe.id.and_then(|id| splice(same, id, client_id)) =>
            {
                Some(spliced.into_bytes())
            }
            // A hook's text, which says where its id is: replaced in place.
            (Cow::Owned(mut text), _, Some(at)) => {
                text.replace_range(at, client_id);
                Some(text.into_bytes())
            }
            (text, _, _) => crate::mcp::envelope::set_member(&text, "id", client_id)
                .ok()
                .map(String::into_bytes),
        };
        match out {
            Some(bytes) => {
                if let Some(w) = mine {
                    w.answered.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Processed::Replaced(bytes)
            }
            None => Processed::Refused("a hooked response is no longer a JSON-RPC object".into()),
        }
    }
}

/// `text` with the value `id` (a slice of `text` itself, as a borrowing parse returns it)
/// replaced by `client_id`: no pass over the text. `None` when `id` is not a slice of `text`.
fn splice(text: &str, id: &str, client_id: &str) -> Option<String> {
    let start = (id.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let end = start.checked_add(id.len())?;
    // In range (and on character boundaries): then it is the very slice `id`.
    text.get(start..end)?;
    let mut out = String::with_capacity(text.len() - id.len() + client_id.len());
    out.push_str(&text[..start]);
    out.push_str(client_id);
    out.push_str(&text[end..]);
    Some(out)
}

/// Whose hooked request an id is: the authenticated caller, empty without authentication (as
/// legacy sessions are bound).
fn hooked_caller(cx: &RequestContext) -> &str {
    cx.caller.as_ref().map_or("", |c| c.id.as_ref())
}

/// The request a [`HookedId`] stands for, for hooks that see a response away from its POST:
/// method, id and target (name or URI); the arguments are not part of it.
fn reconstructed(claims: &HookedId) -> Option<Message> {
    let mut params = serde_json::Map::new();
    if let Some(target) = &claims.target {
        let key = if claims.method.starts_with("resources/") {
            "uri"
        } else {
            "name"
        };
        params.insert(key.into(), target.clone().into());
    }
    let text = format!(
        r#"{{"jsonrpc":"2.0","id":{},"method":{},"params":{}}}"#,
        claims.client_id,
        serde_json::to_string(&claims.method).ok()?,
        serde_json::Value::Object(params)
    );
    Message::parse(&RawValue::from_string(text).ok()?).ok()
}

/// A response message serialised with `id` (raw JSON) in place of its own.
fn with_client_id(message: serde_json::Value, id: &str) -> Option<Vec<u8>> {
    let serde_json::Value::Object(mut members) = message else {
        return None;
    };
    members.remove("id");
    let rest = serde_json::to_string(&members).ok()?;
    let rest = rest.strip_prefix('{')?;
    let sep = if rest == "}" { "" } else { "," };
    Some(format!("{{\"id\":{id}{sep}{rest}").into_bytes())
}
