//! Response bodies, relayed as they arrive.
//!
//! The common case is [`Relay`]: frames are handed to the client the moment the upstream sends
//! them (hyper polls it only when the client can take more, which is the backpressure), silence
//! longer than the idle timeout ends the stream with an error, and a shutdown ends long-lived GET
//! streams cleanly so clients reconnect elsewhere with `Last-Event-ID`.
//!
//! Only when a stage asked to see a response does a body get read more closely:
//! [`hooked_sse`] splits the stream into events and runs the hooks on each message, and
//! [`hooked_json`] reads the one JSON response (bounded) to run the hooks on it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::mcp::jsonrpc;
use crate::mcp::sse::{EventSplitter, event_data, replace_data};
use crate::pipeline::{Processed, RequestContext, ResponseHooks};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream went silent for longer than the route's `stream_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream stream idle for more than {0:?}")]
pub struct IdleTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// A pass-through body with an idle timeout and an optional shutdown signal.
    pub struct Relay<B> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        // Armed only when the upstream makes us wait: a body that is already there (most JSON
        // answers) never touches the timer wheel.
        sleep: Option<Pin<Box<Sleep>>>,
        // A frame arrived since the timer was last set: restart the idle clock at the next wait.
        rearm: bool,
        shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        ended: bool,
    }
}

impl<B> Relay<B> {
    /// `shutdown`: end the stream cleanly when cancelled (used for GET streams, which never end
    /// on their own).
    pub fn new(inner: B, idle: Option<Duration>, shutdown: Option<CancellationToken>) -> Self {
        Relay {
            inner,
            idle,
            sleep: None,
            rearm: true,
            shutdown: shutdown.map(|t| Box::pin(t.cancelled_owned())),
            ended: false,
        }
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Some(shutdown) = this.shutdown.as_mut()
            && shutdown.as_mut().poll(cx).is_ready()
        {
            *this.ended = true;
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.rearm = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                *this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(idle) = *this.idle else {
                    return Poll::Pending;
                };
                if std::mem::take(this.rearm) {
                    let deadline = Instant::now() + idle;
                    match this.sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(sleep) = this.sleep.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    *this.ended = true;
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An SSE body whose response messages pass through the hooks; every other event (progress,
/// logs, priming events, keep-alive comments) is forwarded byte for byte as soon as it is complete.
/// `body` is the upstream's, already wrapped in a [`Relay`] (idle timeout, shutdown). A message
/// the hooks refuse ([`Processed::Refused`]) is dropped from the stream and logged. An event that
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
}

impl<B> HookedSse<B> {
    /// A chunk from the upstream: each complete event goes through the hooks; an event that
    /// grows past `limit` (`server.max_inspected_bytes`) ends the stream, and the requests it
    /// leaves unanswered get an error each.
    async fn data(&mut self, data: &[u8], limit: usize) {
        self.splitter.push(data);
        while let Some(event) = self.splitter.next_event() {
            if let Some(event) = hook_event(&self.cx, &self.hooks, event).await {
                self.out.push_back(event);
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

/// One event through the hooks: as it was, rewritten, or `None` when refused.
async fn hook_event(cx: &RequestContext, hooks: &ResponseHooks, event: Bytes) -> Option<Bytes> {
    let Some(data) = event_data(&event) else {
        return Some(event);
    };
    match hooks.process(cx, &data).await {
        Processed::Untouched => Some(event),
        Processed::Replaced(message) => Some(replace_data(&event, &message)),
        Processed::Refused(why) => {
            tracing::warn!(
                request_id = %cx.request_id,
                upstream = %cx.upstream.name,
                reason = %why,
                "dropped a message from the upstream's stream that the gateway cannot inspect"
            );
            None
        }
    }
}

/// Reads one JSON response (up to `limit` bytes) and runs the hooks on it (a message or a batch
/// of them); returns the bytes to send: the upstream's own when it answers no hooked request.
/// `body` is the upstream's, already wrapped in a [`Relay`] (idle timeout). A body over `limit`
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
