//! Response bodies the hooks read: [`hooked_sse`] splits an SSE stream into events and runs the
//! hooks on each message, [`hooked_json`] reads the one JSON response (bounded) to run the hooks
//! on it. Both wrap the upstream's body as the proxy relays it (`proxy::relay::Relay`: idle
//! timeout, shutdown).

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;

use super::{Processed, RequestContext, ResponseHooks};
use crate::mcp::jsonrpc;
use crate::mcp::sse::{EventSplitter, event_data, replace_data};
use crate::proxy::relay::BoxError;

/// An SSE body whose response messages pass through the hooks; every other event (progress,
/// logs, priming events, keep-alive comments) is forwarded byte for byte as soon as it is complete.
/// `body` is the upstream's, already wrapped in a `Relay` (idle timeout, shutdown). A message
/// the hooks refuse ([`Processed::Refused`]) is dropped from the stream and logged, and when the
/// stream ends, this request's hooked messages still unanswered get a JSON-RPC error (-32015)
/// naming why, so a client is not left waiting on an answer that was dropped. An event that
/// grows past `limit` bytes without ending ends the stream: the hooked requests it may have
/// answered get a JSON-RPC error instead (-32015), and the upstream's stream is dropped.
pub fn hooked_sse<B>(
    body: B,
    cx: Box<RequestContext>,
    hooks: ResponseHooks,
    limit: usize,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + 'static
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let state = HookedSse {
        body,
        cx,
        hooks,
        splitter: EventSplitter::default(),
        out: VecDeque::new(),
        done: false,
        refused: None,
    };
    let stream = futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(bytes) = s.out.pop_front() {
                return Some((Ok(Frame::data(bytes)), s));
            }
            if s.done {
                return None;
            }
            let frame: Option<Result<Frame<Bytes>, BoxError>> =
                s.body.frame().await.map(|r| r.map_err(Into::into));
            match frame {
                None => {
                    s.done = true;
                    let rest = s.splitter.take_rest();
                    if !rest.is_empty() {
                        s.out.push_back(rest);
                    }
                    if let Some(why) = s.refused.take() {
                        let message = format!(
                            "the answer of upstream `{}` cannot be inspected: {why}",
                            s.cx.upstream.name
                        );
                        for error in s
                            .hooks
                            .unanswered_errors(jsonrpc::UPSTREAM_UNINSPECTABLE, &message)
                        {
                            s.out.push_back(sse_event(&error));
                        }
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        s.data(&data, limit).await;
                    }
                }
            }
        }
    });
    http_body_util::StreamBody::new(stream)
}

/// The state of [`hooked_sse`]: the upstream's body, the events split from it, and what is
/// ready for the client.
struct HookedSse<B> {
    body: B,
    cx: Box<RequestContext>,
    hooks: ResponseHooks,
    splitter: EventSplitter,
    out: VecDeque<Bytes>,
    done: bool,
    /// Why the last message the hooks refused was dropped.
    refused: Option<String>,
}

impl<B> HookedSse<B> {
    /// A chunk from the upstream: each complete event goes through the hooks; an event that
    /// grows past `limit` (`server.max_inspected_bytes`) ends the stream, and the requests it
    /// leaves unanswered get an error each.
    async fn data(&mut self, data: &[u8], limit: usize) {
        self.splitter.push(data);
        while let Some(event) = self.splitter.next_event() {
            match hook_event(&self.cx, &self.hooks, event).await {
                Ok(event) => self.out.push_back(event),
                Err(why) => self.refused = Some(why),
            }
        }
        if self.splitter.pending() <= limit {
            return;
        }
        self.done = true;
        let held = self.splitter.take_rest().len();
        tracing::warn!(
            request_id = %self.cx.request_id,
            upstream = %self.cx.upstream.name,
            bytes = held,
            "the upstream's SSE event exceeds server.max_inspected_bytes; ending the stream"
        );
        let message = format!(
            "the upstream sent a message larger than server.max_inspected_bytes ({limit} bytes), which the gateway cannot inspect"
        );
        for error in self
            .hooks
            .unanswered_errors(jsonrpc::UPSTREAM_UNINSPECTABLE, &message)
        {
            self.out.push_back(sse_event(&error));
        }
    }
}

/// A JSON message as one SSE event.
fn sse_event(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One event through the hooks: as it was, rewritten, or why it was refused (logged).
async fn hook_event(
    cx: &RequestContext,
    hooks: &ResponseHooks,
    event: Bytes,
) -> Result<Bytes, String> {
    let Some(data) = event_data(&event) else {
        return Ok(event);
    };
    match hooks.process(cx, &data).await {
        Processed::Untouched => Ok(event),
        Processed::Replaced(message) => Ok(replace_data(&event, &message)),
        Processed::Refused(why) => {
            tracing::warn!(
                request_id = %cx.request_id,
                upstream = %cx.upstream.name,
                reason = %why,
                "dropped a message from the upstream's stream that the gateway cannot inspect"
            );
            Err(why)
        }
    }
}

/// Reads one JSON response (up to `limit` bytes) and runs the hooks on it (a message or a batch
/// of them); returns the bytes to send: the upstream's own when it answers no hooked request.
/// `body` is the upstream's, already wrapped in a `Relay` (idle timeout). A body over `limit`
/// is an error, and so is one the hooks refuse, except on an HTTP error (`error_status`), whose
/// body need not be JSON-RPC at all and then passes as it is.
pub async fn hooked_json<B>(
    body: B,
    cx: &RequestContext,
    hooks: &ResponseHooks,
    limit: usize,
    error_status: bool,
) -> Result<Bytes, BoxError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await?
        .to_bytes();
    match hooks.process(cx, &bytes).await {
        Processed::Untouched => Ok(bytes),
        Processed::Replaced(message) => Ok(Bytes::from(message)),
        Processed::Refused(_) if error_status => Ok(bytes),
        Processed::Refused(why) => Err(why.into()),
    }
}
