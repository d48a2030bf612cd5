//! Keep-alive comments on quiet SSE streams toward the client (`server.sse_keepalive`): load
//! balancers and proxies in between reap a connection that carries nothing for a while, and a
//! tool that thinks for minutes, or a GET stream with nothing to say, is quiet but alive.
//!
//! A comment (`: keep-alive`, which every SSE parser skips) is written only between events, never
//! inside one the upstream has begun and not finished; it is added after the response hooks, so
//! no hook ever sees it, and the upstream's own comments pass through as they are.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The comment written into a quiet stream.
pub const COMMENT: &[u8] = b": keep-alive\n\n";

pin_project_lite::pin_project! {
    /// An SSE body that writes [`COMMENT`] after `every` of quiet between events.
    pub struct KeepAlive<B> {
        #[pin]
        inner: B,
        every: Duration,
        sleep: Pin<Box<Sleep>>,
        // A frame went out since the timer was set: restart the quiet clock at the next wait.
        rearm: bool,
        // The last bytes sent (at most four), to tell whether the stream stands between events.
        tail: Vec<u8>,
    }
}

impl<B> KeepAlive<B> {
    pub fn new(inner: B, every: Duration) -> Self {
        KeepAlive {
            inner,
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
            rearm: true,
            tail: Vec::new(),
        }
    }
}

/// Whether a stream whose last bytes are `tail` stands between events: nothing sent yet, or the
/// last line ended by a blank one (`\n\n`, `\r\r`, `\r\n\r\n`, or a mix of the two endings). A
/// lone trailing `\r` may be the first half of `\r\n`, so it is not taken as a blank line.
fn between_events(tail: &[u8]) -> bool {
    tail.is_empty()
        || [&b"\n\n"[..], b"\r\r", b"\r\n\r\n", b"\n\r\n", b"\r\n\n"]
            .iter()
            .any(|end| tail.ends_with(end))
}

fn remember(tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(&data[data.len().saturating_sub(4)..]);
    let excess = tail.len().saturating_sub(4);
    tail.drain(..excess);
}

impl<B> Body for KeepAlive<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    remember(this.tail, data);
                }
                *this.rearm = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                if std::mem::take(this.rearm) {
                    this.sleep.as_mut().reset(Instant::now() + *this.every);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Quiet for `every`: a comment if the stream stands between events; either way
                // the clock starts again.
                this.sleep.as_mut().reset(Instant::now() + *this.every);
                let _ = this.sleep.as_mut().poll(cx);
                if !between_events(this.tail) {
                    return Poll::Pending;
                }
                remember(this.tail, COMMENT);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(COMMENT)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    type Item = Result<Frame<Bytes>, std::convert::Infallible>;
    type Chunks = tokio::sync::mpsc::UnboundedSender<Item>;
    type Stream = Pin<Box<dyn futures_util::Stream<Item = Item> + Send>>;

    /// A keep-alive body every 100 ms over a stream the test feeds.
    fn body() -> (Chunks, KeepAlive<http_body_util::StreamBody<Stream>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Item>();
        let stream: Stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let body = KeepAlive::new(
            http_body_util::StreamBody::new(stream),
            Duration::from_millis(100),
        );
        (tx, body)
    }

    fn send(tx: &Chunks, text: &str) {
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(text.as_bytes()))))
            .unwrap();
    }

    async fn next(b: &mut (impl Body<Data = Bytes> + Unpin)) -> Option<Bytes> {
        b.frame()
            .await
            .map(|f| f.ok().unwrap().into_data().ok().unwrap())
    }

    #[test]
    fn blank_lines_of_every_spelling_end_an_event() {
        for tail in [
            &b""[..],
            b"x\n\n",
            b"\r\r",
            b"x\r\n\r\n",
            b"\n\r\n",
            b"\r\n\n",
        ] {
            assert!(between_events(tail), "{tail:?}");
        }
        for tail in [&b"data: {"[..], b"x\n", b"x\r\n", b"\n\r", b"x\r"] {
            assert!(!between_events(tail), "{tail:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_comments_only_between_events() {
        let (tx, mut b) = body();
        // Quiet from the start: a comment after each period.
        assert_eq!(next(&mut b).await.unwrap(), COMMENT);
        assert_eq!(next(&mut b).await.unwrap(), COMMENT);
        // A whole event passes as it came, and the quiet after it gets a comment again.
        send(&tx, "data: {\"a\":1}\n\n");
        assert_eq!(next(&mut b).await.unwrap(), "data: {\"a\":1}\n\n");
        assert_eq!(next(&mut b).await.unwrap(), COMMENT);
        // Half an event, then a long quiet: nothing is written into it.
        send(&tx, "data: {\"b\":");
        assert_eq!(next(&mut b).await.unwrap(), "data: {\"b\":");
        let waited = tokio::time::timeout(Duration::from_secs(5), next(&mut b)).await;
        assert!(waited.is_err(), "a comment inside an event: {waited:?}");
        send(&tx, "2}\r\n\r\n");
        assert_eq!(next(&mut b).await.unwrap(), "2}\r\n\r\n");
        assert_eq!(next(&mut b).await.unwrap(), COMMENT);
        // The end of the upstream's stream is the end.
        drop(tx);
        assert_eq!(next(&mut b).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_gets_no_comment() {
        let (tx, mut b) = body();
        for i in 0..20 {
            tokio::time::advance(Duration::from_millis(60)).await;
            let event = format!("data: {i}\n\n");
            send(&tx, &event);
            assert_eq!(next(&mut b).await.unwrap(), event);
        }
    }
}
