//! Response bodies, relayed as they arrive.
//!
//! The common case is [`Relay`]: frames are handed to the client the moment the upstream sends
//! them (hyper polls it only when the client can take more, which is the backpressure), silence
//! longer than the idle timeout ends the stream with an error, and a shutdown ends long-lived GET
//! streams cleanly so clients reconnect elsewhere with `Last-Event-ID`.
//!
//! Only when a stage asked to see a response does a body get read more closely:
//! [`hooked_sse`] splits the stream into events and parses just the candidates, and
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

use crate::mcp::sse::{EventSplitter, event_data, replace_data};
use crate::pipeline::{RequestContext, ResponseHooks, ResponseVerdict};

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

async fn next_frame<B>(
    body: &mut B,
    idle: Option<Duration>,
) -> Option<Result<Frame<Bytes>, BoxError>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let frame = match idle {
        Some(d) => match tokio::time::timeout(d, body.frame()).await {
            Ok(f) => f,
            Err(_) => return Some(Err(Box::new(IdleTimeout(d)))),
        },
        None => body.frame().await,
    };
    frame.map(|r| r.map_err(Into::into))
}

/// An SSE body whose response messages pass through the hooks; every other event (progress,
/// logs, priming events, keep-alive comments) is forwarded byte for byte as soon as it is complete.
pub fn hooked_sse<B>(
    body: B,
    cx: Box<RequestContext>,
    hooks: ResponseHooks,
    idle: Option<Duration>,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + 'static
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    struct State<B> {
        body: B,
        cx: Box<RequestContext>,
        hooks: ResponseHooks,
        splitter: EventSplitter,
        out: VecDeque<Bytes>,
        done: bool,
    }
    let state = State {
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
            match next_frame(&mut s.body, idle).await {
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
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    s.splitter.push(&data);
                    while let Some(event) = s.splitter.next_event() {
                        let event = hook_event(&s.cx, &s.hooks, event).await;
                        s.out.push_back(event);
                    }
                }
            }
        }
    });
    http_body_util::StreamBody::new(stream)
}

async fn hook_event(cx: &RequestContext, hooks: &ResponseHooks, event: Bytes) -> Bytes {
    let Some(data) = event_data(&event) else {
        return event;
    };
    if !hooks.may_match(&data) {
        return event;
    }
    let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return event;
    };
    match hooks.apply(cx, &mut message).await {
        ResponseVerdict::Unchanged => event,
        ResponseVerdict::Modified => replace_data(
            &event,
            &serde_json::to_vec(&message).expect("a JSON value serialises"),
        ),
    }
}

/// Reads one JSON response (up to `limit` bytes), runs the hooks on it (or on each element of a
/// batch response), and returns the bytes to send: the upstream's own when nothing changed.
pub async fn hooked_json<B>(
    body: B,
    cx: &RequestContext,
    hooks: &ResponseHooks,
    limit: usize,
    idle: Option<Duration>,
) -> Result<Bytes, BoxError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let limited = http_body_util::Limited::new(body, limit);
    let collect = limited.collect();
    let bytes = match idle {
        Some(d) => tokio::time::timeout(d, collect)
            .await
            .map_err(|_| Box::new(IdleTimeout(d)) as BoxError)??,
        None => collect.await?,
    }
    .to_bytes();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(bytes);
    };
    let mut modified = false;
    match &mut value {
        serde_json::Value::Array(items) => {
            for item in items {
                modified |= hooks.apply(cx, item).await == ResponseVerdict::Modified;
            }
        }
        single => modified = hooks.apply(cx, single).await == ResponseVerdict::Modified,
    }
    if modified {
        Ok(Bytes::from(serde_json::to_vec(&value)?))
    } else {
        Ok(bytes)
    }
}
