//! Response bodies, relayed as they arrive.
//!
//! The common case is [`Relay`]: frames are handed to the client the moment the upstream sends
//! them (hyper polls it only when the client can take more, which is the backpressure), silence
//! longer than the idle timeout ends the stream with an error, and a shutdown ends long-lived GET
//! streams cleanly so clients reconnect elsewhere with `Last-Event-ID`.
//!
//! Only when a stage asked to see a response does a body get read more closely, by the
//! pipeline's response hooks (`pipeline::bodies`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
