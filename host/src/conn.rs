//! Client connections and their limits: what keeps slow, idle or numerous clients from wearing
//! the gateway down.
//!
//! - **A cap on open connections** (`server.max_connections`, across every serving thread): one
//!   more is answered `503` with a JSON-RPC error at once and closed, instead of waiting in the
//!   kernel's backlog or taking a file descriptor the gateway needs for its upstreams.
//! - **A head within `server.header_timeout`** (HTTP/1, hyper's own timer): a client that trickles
//!   its request head (Slowloris), or a keep-alive connection that sends nothing more, is closed.
//! - **A body within `server.body_timeout`**, enforced where the body is read (408).
//! - **A client that stops reading** its response for `server.write_timeout` is disconnected
//!   ([`StallGuard`]): its stream no longer holds a connection, a task and the upstream's stream.
//! - HTTP/2 connections are pinged; a peer that does not answer is dropped.
//!
//! `mcpgate_client_connections` and `mcpgate_client_connections_closed_total{reason}` show them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::ServerConfig;

/// Why the gateway closed a client connection, for `mcpgate_client_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// `server.max_connections` were open already.
    Limit,
    /// The request head did not arrive within `server.header_timeout` (or an idle keep-alive
    /// connection sent nothing more).
    HeaderTimeout,
    /// The request body did not arrive within `server.body_timeout`.
    BodyTimeout,
    /// The client accepted no bytes for `server.write_timeout`.
    WriteTimeout,
}

impl Closed {
    const ALL: [Closed; 4] = [
        Closed::Limit,
        Closed::HeaderTimeout,
        Closed::BodyTimeout,
        Closed::WriteTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Limit => "limit",
            Closed::HeaderTimeout => "header_timeout",
            Closed::BodyTimeout => "body_timeout",
            Closed::WriteTimeout => "write_timeout",
        }
    }
}

/// The connection limits of one gateway, shared by its serving threads.
pub struct Connections {
    permits: Arc<Semaphore>,
    pub write_timeout: Duration,
    /// `server.header_timeout`: also the bound on a client's first byte.
    pub header_timeout: Duration,
    open: IntGauge,
    closed: IntCounterVec,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// One open client connection: its slot under `server.max_connections`, given back on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connections {
    /// Client connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Limits from `server:`; the two series join `registry`.
    pub fn new(server: &ServerConfig, registry: &Registry) -> Connections {
        let open = IntGauge::new("mcpgate_client_connections", "Client connections open now")
            .expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "mcpgate_client_connections_closed_total",
                "Client connections the gateway closed itself, by reason (limit, header_timeout, body_timeout, write_timeout)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in Closed::ALL {
            closed.with_label_values(&[c.as_str()]);
        }
        for c in [
            Box::new(open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(closed.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::debug!(error = %e, "connection metrics not registered");
            }
        }
        Connections {
            permits: Arc::new(Semaphore::new(server.max_connections)),
            write_timeout: server.write_timeout,
            header_timeout: server.header_timeout,
            open,
            closed,
        }
    }

    /// A slot for a new connection, or `None` when `server.max_connections` are open.
    pub fn admit(&self) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.open.inc();
        Some(Slot {
            _permit: permit,
            open: self.open.clone(),
        })
    }

    /// Counts a connection the gateway closed.
    pub fn closed(&self, why: Closed) {
        self.closed.with_label_values(&[why.as_str()]).inc();
    }

    /// Answers a connection over the limit with 503 and a JSON-RPC error, without reading its
    /// request, and closes it. Bounded in time: a client that does not read is just dropped.
    pub async fn refuse<S: AsyncWrite + Unpin>(&self, mut stream: S) {
        self.closed(Closed::Limit);
        let body = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"the gateway has too many open connections (server.max_connections); retry shortly"}}"#;
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
}

pin_project_lite::pin_project! {
    /// A client connection's I/O that fails a write the client has not accepted any byte of for
    /// `timeout` (it stopped reading; its TCP window is full), and a connection whose first byte
    /// does not arrive within `first_byte` (before hyper knows the protocol, its header timeout
    /// does not run yet). Later reads are not bounded here: an idle keep-alive connection or a
    /// long SSE stream legitimately reads nothing for long, and those are bounded by hyper's
    /// header timeout and the request's own timeouts.
    pub struct StallGuard<T> {
        #[pin]
        inner: T,
        timeout: Duration,
        stalled: Option<Pin<Box<Sleep>>>,
        first_byte: Option<Pin<Box<Sleep>>>,
    }
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, timeout: Duration, first_byte: Duration) -> Self {
        StallGuard {
            inner,
            timeout,
            stalled: None,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
        }
    }
}

/// Why the gateway ended a connection, read from the connection's error: a write that stalled
/// past `server.write_timeout`, or a head (or a first byte) later than `server.header_timeout`.
pub fn closed_by(error: &(dyn std::error::Error + 'static)) -> Option<Closed> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            match io.to_string().as_str() {
                STALLED => return Some(Closed::WriteTimeout),
                SILENT => return Some(Closed::HeaderTimeout),
                _ => {}
            }
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return Some(Closed::HeaderTimeout);
        }
        next = e.source();
    }
    None
}

const STALLED: &str = "the client accepted no bytes within server.write_timeout";
const SILENT: &str = "the client sent nothing within server.header_timeout";

impl<T: AsyncWrite> StallGuard<T> {
    /// `result` of a write-side poll: progress disarms the stall timer, waiting arms it, and a
    /// wait past the timeout becomes an error.
    fn watch<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        match result {
            Poll::Ready(r) => {
                *this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = this.stalled.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + *this.timeout))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, STALLED)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead> AsyncRead for StallGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if this.first_byte.is_some() {
            match &result {
                Poll::Ready(Ok(())) if buf.filled().len() > before => *this.first_byte = None,
                Poll::Pending => {
                    if let Some(timer) = this.first_byte.as_mut()
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, SILENT)));
                    }
                }
                _ => {}
            }
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().project().inner.poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.as_mut().project().inner.poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off_and_one_that_reads_is_not() {
        // A pipe with a small buffer: the writer blocks as soon as the reader stops reading.
        let (client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, Duration::from_millis(200), Duration::MAX);
        let chunk = vec![b'x'; 64 * 1024];
        let started = std::time::Instant::now();
        let err = guarded.write_all(&chunk).await.unwrap_err();
        assert_eq!(closed_by(&err), Some(Closed::WriteTimeout), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(client);

        // A slow but steady reader keeps the writer going past the timeout in total.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, Duration::from_millis(300), Duration::MAX);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        guarded.write_all(&vec![b'y'; 24 * 1024]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap(), 24 * 1024);
    }

    #[tokio::test]
    async fn a_client_that_never_speaks_is_cut_off_and_one_that_speaks_late_is_not() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut silent = StallGuard::new(server, Duration::MAX, Duration::from_millis(100));
        let mut buf = [0u8; 16];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(closed_by(&err), Some(Closed::HeaderTimeout), "{err}");

        let (mut client, server) = tokio::io::duplex(1024);
        let mut talker = StallGuard::new(server, Duration::MAX, Duration::from_millis(100));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(talker.read(&mut buf).await.unwrap(), 3);
        // Once it has spoken, silence is not this guard's business.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b" /").await.unwrap();
        assert_eq!(talker.read(&mut buf).await.unwrap(), 2);
    }
}
