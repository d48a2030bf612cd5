//! The JSON-RPC envelope, parsed once per request and shared by every stage.
//!
//! Parsing borrows from the body and keeps the parts stages care about (`id`, `params`,
//! `arguments`) as raw JSON, so a request that no stage modifies is forwarded with the exact bytes
//! the client sent, and `arguments` are only turned into a `serde_json::Value` by a stage that
//! asks for them.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::{META_PROTOCOL_VERSION, jsonrpc};

/// The protocol era a message belongs to; decided by its body, never by a header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// 2024-11-05 .. 2025-11-25: `initialize`, sessions, GET streams.
    Legacy,
    /// 2026-07-28 and later: stateless, `_meta` version and routing headers on every request.
    Modern,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Notification,
    /// A client's answer to a server→client request (sampling, elicitation, roots): legacy only.
    Response,
}

/// One JSON-RPC message of a POST body.
#[derive(Debug, Clone)]
pub struct Message {
    raw: Box<RawValue>,
    pub kind: MessageKind,
    pub era: Era,
    /// The raw `id`, echoed byte for byte in any error the gateway answers with.
    pub id: Option<Box<RawValue>>,
    pub method: Option<Arc<str>>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`: present exactly on modern messages.
    pub protocol_version: Option<Box<str>>,
    /// The tool or prompt name (`params.name`) or resource URI (`params.uri`) the method acts on.
    pub target: Option<Arc<str>>,
    /// `params.arguments` of `tools/call` and `prompts/get`, as raw JSON.
    pub arguments: Option<Box<RawValue>>,
}

/// A POST body: one message, or (legacy 2025-03-26 only) a batch.
#[derive(Debug, Clone)]
pub struct ParsedBody {
    pub messages: Vec<Message>,
    pub batch: bool,
}

/// Why a body is not a usable JSON-RPC message. Answered by the gateway with HTTP 400.
#[derive(Debug, Clone)]
pub struct EnvelopeError {
    pub code: i32,
    pub message: String,
    /// The request's id, when the body was readable far enough to find it.
    pub id: Option<Box<RawValue>>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}
impl Eq for Message {}

/// What the lenient visitors below share: any JSON value is expected, and arrays and scalars
/// other than strings answer `$default`.
macro_rules! lenient_visitor {
    ($t:ty, $default:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<$t, A::Error> {
            IgnoredAny.visit_seq(seq).map(|_| $default)
        }
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok($default)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok($default)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok($default)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok($default)
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok($default)
        }
    };
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Str<'a>>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Str<'a>>,
    #[serde(default, borrow)]
    params: Option<Params<'a>>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// The parts of `params` the gateway reads, in the same pass as the message. Lenient: `params`
/// that is not an object, or a field of an unexpected type, counts as absent, and the upstream
/// (which owns the method's semantics) answers the client.
#[derive(Default)]
struct Params<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    arguments: Option<&'a RawValue>,
    /// `_meta["io.modelcontextprotocol/protocolVersion"]`, whatever its type (checked by the caller).
    protocol_version: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Params<'de>;
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Params<'de>, A::Error> {
                let mut p = Params::default();
                while let Some(LenientStr(key)) = map.next_key::<LenientStr<'de>>()? {
                    match key.as_deref().unwrap_or_default() {
                        "name" => p.name = map.next_value::<LenientStr<'de>>()?.0,
                        "uri" => p.uri = map.next_value::<LenientStr<'de>>()?.0,
                        "arguments" => p.arguments = Some(map.next_value()?),
                        "_meta" => p.protocol_version = map.next_value::<Meta<'de>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
            fn visit_str<E>(self, _: &str) -> Result<Params<'de>, E> {
                Ok(Params::default())
            }
            lenient_visitor!(Params<'de>, Params::default());
        }
        d.deserialize_any(Visit)
    }
}

/// A string, borrowed from the input where it has no escapes (serde's own `Option<Cow<str>>`
/// always copies); any other type is an error.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// A string, or `None` for a value of any other type.
struct LenientStr<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for LenientStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = LenientStr<'de>;
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<LenientStr<'de>, E> {
                Ok(LenientStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<LenientStr<'de>, E> {
                Ok(LenientStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LenientStr<'de>, A::Error> {
                IgnoredAny.visit_map(map).map(|_| LenientStr(None))
            }
            lenient_visitor!(LenientStr<'de>, LenientStr(None));
        }
        d.deserialize_any(Visit)
    }
}

/// `params._meta`: only the protocol version key is kept (raw); `_meta` that is not an object
/// counts as absent.
struct Meta<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for Meta<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Meta<'de>;
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Meta<'de>, A::Error> {
                let mut version = None;
                while let Some(LenientStr(key)) = map.next_key::<LenientStr<'de>>()? {
                    if key.as_deref() == Some(META_PROTOCOL_VERSION) {
                        version = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Meta(version))
            }
            fn visit_str<E>(self, _: &str) -> Result<Meta<'de>, E> {
                Ok(Meta(None))
            }
            lenient_visitor!(Meta<'de>, Meta(None));
        }
        d.deserialize_any(Visit)
    }
}

/// The JSON object `text` with member `key` set to the raw JSON `value` (replaced in its place,
/// every repeat of it dropped, or added at the end), every other member kept byte for byte and
/// in order. One walk over the text ([`super::scan`]): `text` is JSON already read once.
pub fn set_member(text: &str, key: &str, value: &str) -> Result<String, super::scan::ScanError> {
    let members = super::scan::members(text)?;
    let mut out = String::with_capacity(text.len() + value.len() + key.len() + 4);
    out.push('{');
    let mut found = false;
    for m in &members {
        let is_key = m.is(key);
        if is_key && found {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        if is_key {
            found = true;
            push_key(&mut out, key);
            out.push_str(value);
        } else {
            out.push_str(m.key);
            out.push(':');
            out.push_str(m.value);
        }
    }
    if !found {
        if out.len() > 1 {
            out.push(',');
        }
        push_key(&mut out, key);
        out.push_str(value);
    }
    out.push('}');
    Ok(out)
}

/// `"key":`, the key escaped as JSON.
fn push_key(out: &mut String, key: &str) {
    if key.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
        out.push_str(&serde_json::Value::from(key).to_string());
    } else {
        out.push('"');
        out.push_str(key);
        out.push('"');
    }
    out.push(':');
}

impl Message {
    /// Parses one JSON-RPC message from its raw JSON.
    pub fn parse(raw: &RawValue) -> Result<Message, EnvelopeError> {
        Message::parse_cow(Cow::Borrowed(raw))
    }

    /// [`Message::parse`], keeping `raw` without a copy when it is already owned.
    fn parse_cow(raw: Cow<'_, RawValue>) -> Result<Message, EnvelopeError> {
        // A derived struct also reads a JSON array positionally (`["2.0",1,"tools/call",…]`),
        // which no peer reads as a message (found by fuzzing): only an object is one.
        if !raw.get().starts_with('{') {
            return Err(EnvelopeError {
                code: jsonrpc::INVALID_REQUEST,
                message: "not a JSON-RPC message object: a message is a JSON object".into(),
                id: None,
            });
        }
        let wire: Wire<'_> = serde_json::from_str(raw.get()).map_err(|e| EnvelopeError {
            code: jsonrpc::INVALID_REQUEST,
            message: format!("not a JSON-RPC message object: {e}"),
            id: None,
        })?;
        let id = wire.id.map(|r| r.to_owned());
        let invalid = |message: String| EnvelopeError {
            code: jsonrpc::INVALID_REQUEST,
            message,
            id: id.clone(),
        };
        if wire.jsonrpc.as_ref().map(|v| &*v.0) != Some("2.0") {
            return Err(invalid("`jsonrpc` must be \"2.0\"".into()));
        }
        let kind = match (
            &wire.method,
            &wire.id,
            wire.result.is_some() || wire.error.is_some(),
        ) {
            (Some(_), Some(_), _) => MessageKind::Request,
            (Some(_), None, _) => MessageKind::Notification,
            (None, Some(_), true) => MessageKind::Response,
            _ => {
                return Err(invalid(
                    "a message needs a `method`, or an `id` with `result` or `error`".into(),
                ));
            }
        };
        let params = wire.params.unwrap_or_default();
        let protocol_version = match params.protocol_version {
            Some(v) => Some(
                serde_json::from_str::<Cow<'_, str>>(v.get())
                    .map_err(|_| EnvelopeError {
                        code: jsonrpc::INVALID_PARAMS,
                        message: format!("`_meta[\"{META_PROTOCOL_VERSION}\"]` must be a string"),
                        id: id.clone(),
                    })?
                    .into(),
            ),
            None => None,
        };
        let method: Option<Arc<str>> = wire.method.map(|m| Arc::from(m.0.as_ref()));
        let target = match method.as_deref() {
            Some("tools/call" | "prompts/get") => params.name,
            Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => params.uri,
            _ => None,
        }
        .map(|t| Arc::from(t.as_ref()));
        let arguments = match method.as_deref() {
            Some("tools/call" | "prompts/get") => params.arguments.map(|a| a.to_owned()),
            _ => None,
        };
        Ok(Message {
            raw: raw.into_owned(),
            kind,
            era: if protocol_version.is_some() {
                Era::Modern
            } else {
                Era::Legacy
            },
            id,
            method,
            protocol_version,
            target,
            arguments,
        })
    }

    /// The message exactly as received (or as last replaced by a stage).
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// Replaces the whole message (a stage's rewrite) and re-derives every field from it, so the
    /// fields can never disagree with what is forwarded.
    pub fn replace(&mut self, value: &serde_json::Value) -> Result<(), EnvelopeError> {
        let raw = serde_json::value::to_raw_value(value).map_err(|e| EnvelopeError {
            code: jsonrpc::INTERNAL_ERROR,
            message: format!("rewritten message does not serialise: {e}"),
            id: self.id.clone(),
        })?;
        *self = Message::parse(&raw)?;
        Ok(())
    }

    /// The message with its `id` replaced by `id` (raw JSON), every other member kept byte for
    /// byte and in its place. Used to forward a hooked request under the gateway's own id.
    pub fn with_id(&self, id: &RawValue) -> Result<Message, EnvelopeError> {
        let text = self.spliced(self.raw.get(), "id", id.get())?;
        self.reparsed(text)
    }

    /// The message with `params.arguments` replaced by `arguments` (raw JSON), every other value
    /// kept byte for byte: a plugin's rewrite changes what it changed and nothing else (no
    /// number passes through a float on the way).
    pub fn with_arguments(&self, arguments: &RawValue) -> Result<Message, EnvelopeError> {
        let members = self.members(self.raw.get())?;
        let params = match members.iter().find(|m| m.is("params")) {
            Some(p) if p.value.starts_with('{') => {
                self.spliced(p.value, "arguments", arguments.get())?
            }
            _ => format!(r#"{{"arguments":{}}}"#, arguments.get()),
        };
        let text = self.spliced(self.raw.get(), "params", &params)?;
        self.reparsed(text)
    }

    /// The message with `params.<path>` set to `value` (raw JSON): every other value kept byte
    /// for byte, objects on the way made when missing. Used to give a request's progress token
    /// (`params._meta.progressToken`) one of the gateway's own, and to restore it.
    pub fn with_param(&self, path: &[&str], value: &RawValue) -> Result<Message, EnvelopeError> {
        let mut full = vec!["params"];
        full.extend_from_slice(path);
        let text = self.set_path(self.raw.get(), &full, value.get())?;
        self.reparsed(text)
    }

    fn set_path(&self, text: &str, path: &[&str], value: &str) -> Result<String, EnvelopeError> {
        let Some((key, rest)) = path.split_first() else {
            return Ok(value.to_string());
        };
        let inner = if rest.is_empty() {
            value.to_string()
        } else {
            let members = self.members(text)?;
            let child = members
                .iter()
                .find(|m| m.is(key))
                .map(|m| m.value)
                .filter(|v| v.starts_with('{'))
                .unwrap_or("{}");
            self.set_path(child, rest, value)?
        };
        self.spliced(text, key, &inner)
    }

    fn members<'t>(&self, text: &'t str) -> Result<Vec<super::scan::Member<'t>>, EnvelopeError> {
        super::scan::members(text).map_err(|e| EnvelopeError {
            code: jsonrpc::INVALID_REQUEST,
            message: format!("not a JSON object: {e}"),
            id: self.id.clone(),
        })
    }

    /// [`set_member`], with the error this message's rewrites answer.
    fn spliced(&self, text: &str, key: &str, value: &str) -> Result<String, EnvelopeError> {
        set_member(text, key, value).map_err(|e| EnvelopeError {
            code: jsonrpc::INVALID_REQUEST,
            message: format!("not a JSON object: {e}"),
            id: self.id.clone(),
        })
    }

    fn reparsed(&self, text: String) -> Result<Message, EnvelopeError> {
        let raw = RawValue::from_string(text).map_err(|e| EnvelopeError {
            code: jsonrpc::INTERNAL_ERROR,
            message: format!("rewritten message does not serialise: {e}"),
            id: self.id.clone(),
        })?;
        Message::parse_cow(Cow::Owned(raw))
    }

    /// The message as a `serde_json::Value`, for stages that inspect or rewrite it. Fails for
    /// valid JSON that a `Value` cannot hold (a number such as `1e400`, nesting past 128 levels):
    /// a stage must then refuse, never guess. Numbers beyond `i64`/`u64` become floats in a
    /// `Value`; rewrite arguments with [`Message::with_arguments`] to keep them exact.
    pub fn to_value(&self) -> Result<serde_json::Value, EnvelopeError> {
        serde_json::from_str(self.raw.get()).map_err(|e| EnvelopeError {
            code: jsonrpc::INVALID_PARAMS,
            message: format!("the message cannot be read as a JSON value: {e}"),
            id: self.id.clone(),
        })
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    pub fn is_request(&self) -> bool {
        self.kind == MessageKind::Request
    }
}

impl ParsedBody {
    /// Parses a POST body: a JSON object, or a JSON array (batch) of objects.
    pub fn parse(body: &[u8]) -> Result<ParsedBody, EnvelopeError> {
        let parse_error = |e: serde_json::Error| EnvelopeError {
            code: jsonrpc::PARSE_ERROR,
            message: format!("request body is not valid JSON: {e}"),
            id: None,
        };
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(parse_error)?;
            if items.is_empty() {
                return Err(EnvelopeError {
                    code: jsonrpc::INVALID_REQUEST,
                    message: "an empty batch is not a valid request".into(),
                    id: None,
                });
            }
            let messages = items
                .into_iter()
                .map(Message::parse)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ParsedBody {
                messages,
                batch: true,
            })
        } else {
            let raw: Box<RawValue> = serde_json::from_slice(body).map_err(parse_error)?;
            Ok(ParsedBody {
                messages: vec![Message::parse_cow(Cow::Owned(raw))?],
                batch: false,
            })
        }
    }

    /// The era of the body: modern if any message is. Batches are legacy-only (checked by the
    /// caller, which knows how to answer).
    pub fn era(&self) -> Era {
        if self.messages.iter().any(|m| m.era == Era::Modern) {
            Era::Modern
        } else {
            Era::Legacy
        }
    }

    /// The id to put on an error about the whole body: the single message's id.
    pub fn error_id(&self) -> Option<&RawValue> {
        match self.messages.as_slice() {
            [only] => only.id.as_deref(),
            _ => None,
        }
    }

    /// Serialises the body for forwarding: the client's bytes are reused by the caller unless a
    /// stage replaced a message, in which case this builds the new body.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.batch {
            let parts: Vec<&RawValue> = self.messages.iter().map(|m| m.raw()).collect();
            serde_json::to_vec(&parts).expect("raw values serialise")
        } else {
            self.messages[0].raw().get().as_bytes().to_vec()
        }
    }
}

#[cfg(test)]
mod tests;
