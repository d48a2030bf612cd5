//! What the fuzz targets share: reference readings of JSON (what a Python or JavaScript peer,
//! which keep the last of duplicate keys, would see) and a way to run the gateway's async hooks,
//! which never wait on I/O here, to completion.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde_json::Value;

/// Runs a future that must finish without waiting (no I/O, no timers): the hooks the targets
/// drive only await other ready futures. Panics if it would wait, which would be a finding too.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a hook waited on something in a pure call"),
    }
}

/// `value[key]` when `value` is an object holding that key.
pub fn member<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object()?.get(key)
}

/// The string at `path` (object keys), if every step is an object and the end is a string.
pub fn string_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = value;
    for key in path {
        at = member(at, key)?;
    }
    at.as_str()
}

/// Whether a message (as a peer reads it) is a response: an object with `result` or `error`.
pub fn is_response(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("result") || o.contains_key("error"))
}

/// The messages a body holds, as a peer reads them: the elements of a batch, or the one value.
pub fn messages(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}
