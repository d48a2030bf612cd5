//! Reading a request body within its limits: `server.max_body_bytes` (413, early from
//! `Content-Length`), `server.body_timeout` (408), and `server.discard_body_bytes` read on and
//! dropped so a client still sending receives the 413 instead of a reset.

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt as _;

use super::Gateway;
use crate::error::GatewayError;
use crate::mcp::jsonrpc;
use crate::proxy::relay::BoxError;

/// Reads a request body up to `server.max_body_bytes`; larger → 413 (early from
/// `Content-Length`); not all there within `server.body_timeout` → 408.
pub(super) async fn read_body<B>(
    gw: &Gateway,
    server: &crate::config::ServerConfig,
    body: B,
    headers: &http::HeaderMap,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let timeout = server.body_timeout;
    match tokio::time::timeout(
        timeout,
        read_bounded(
            body,
            server.max_body_bytes,
            server.discard_body_bytes,
            headers,
        ),
    )
    .await
    {
        Ok(read) => read,
        Err(_) => {
            gw.connections.closed(crate::conn::Closed::BodyTimeout);
            Err(GatewayError::BodyTimeout(timeout))
        }
    }
}

/// [`read_body`] without the timeout. A body over `limit` is read on and dropped, holding none
/// of it, for up to `discard` more bytes (`server.discard_body_bytes`), so that a client still
/// sending receives the 413 instead of a reset.
async fn read_bounded<B>(
    body: B,
    limit: usize,
    discard: usize,
    headers: &http::HeaderMap,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that waits for `100 Continue` gets the 413 instead, without sending its body.
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let discard = limit.saturating_add(discard);
    if declared.is_some_and(|n| n > limit as u64) {
        if !expects_continue && declared.is_some_and(|n| n <= discard as u64) {
            drain(body, discard).await;
        }
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::bad_request(
                jsonrpc::PARSE_ERROR,
                format!("could not read the request body: {}", e.into()),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read = read.saturating_add(data.len());
        if read > limit {
            // Too large: drop the rest too (bounded), then answer.
            if read <= discard {
                drain(body, discard - read).await;
            }
            return Err(GatewayError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops up to `bound` more bytes of a body (the caller's timeout bounds the time).
async fn drain<B>(body: B, bound: usize)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut left = bound;
    while let Some(Ok(frame)) = body.frame().await {
        let n = frame.data_ref().map_or(0, Bytes::len);
        if n > left {
            return;
        }
        left -= n;
    }
}
