//! The few requests the driver makes itself (wrk makes the load): opening sessions, and timing
//! SSE events as they arrive.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn http() -> Http {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpgate-bench","version":"1"}}}"#;

fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// Initializes a legacy session; returns the session id the client got.
pub async fn initialize(client: &Http, url: &str, headers: &[(&str, &str)]) -> String {
    let resp = client
        .request(post(url, headers, INITIALIZE))
        .await
        .unwrap_or_else(|e| panic!("initialize at {url}: {e}"));
    let status = resp.status();
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = resp.into_body().collect().await;
    id.unwrap_or_else(|| panic!("initialize at {url}: {status}, no session id"))
}

/// Opens `count` sessions, `concurrency` at a time.
pub async fn open_sessions(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
    count: usize,
    concurrency: usize,
) {
    let mut done = 0;
    while done < count {
        let batch = concurrency.min(count - done);
        let all = (0..batch).map(|_| initialize(client, url, headers));
        futures_util::future::join_all(all).await;
        done += batch;
    }
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Sends `requests` requests one after another (after a few unmeasured ones); returns how long
/// each took, its whole answer read.
pub async fn latencies(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    requests: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(requests);
    for i in 0..requests + 5 {
        let started = std::time::Instant::now();
        let resp = client
            .request(post(url, headers, body))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 200, "{url}");
        let _ = resp.into_body().collect().await;
        if i >= 5 {
            out.push(started.elapsed());
        }
    }
    out.sort();
    out
}

/// Sends `requests` requests one after another, each answered by an SSE stream whose events
/// carry `"sentUs":"<wall-clock µs>"`; returns how late every event arrived.
pub async fn sse_delays(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    requests: usize,
) -> Vec<Duration> {
    const MARK: &str = "\"sentUs\":\"";
    let mut delays = Vec::new();
    for _ in 0..requests {
        let resp = client
            .request(post(url, headers, body))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 200, "{url}");
        let mut body = resp.into_body();
        let mut pending = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            let arrived = now_us();
            pending.push_str(&String::from_utf8_lossy(&data));
            // Complete events only: everything up to the last blank line.
            let Some(end) = pending.rfind("\n\n") else {
                continue;
            };
            for part in pending[..end].split(MARK).skip(1) {
                if let Some(sent) = part.split('"').next().and_then(|v| v.parse::<u128>().ok()) {
                    let late = arrived.saturating_sub(sent);
                    delays.push(Duration::from_micros(
                        u64::try_from(late).unwrap_or(u64::MAX),
                    ));
                }
            }
            pending.drain(..end + 2);
        }
    }
    delays
}

/// Server streams held open through a proxy (legacy GET streams, 2026-07-28
/// `subscriptions/listen` streams), each read by a task of its own that notes how late every
/// `sentUs` event arrives while `recording` is on. Dropping it closes them.
#[derive(Default)]
pub struct Streams {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    delays: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
    recording: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Streams whose response was not a 200 SSE stream (or failed).
    pub refused: usize,
}

impl Streams {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Starts (or stops) noting event delays; what was noted so far is returned and cleared.
    pub fn record(&self, on: bool) -> Vec<Duration> {
        self.recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut *self.delays.lock().unwrap())
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub const LISTEN: &str = r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// Opens `count` more server streams through `url` into `streams` (`concurrency` opening at a
/// time), each on a connection of its own: `legacy`: a session (initialize) and its GET stream;
/// else a `subscriptions/listen` POST. `headers` carry the credential.
pub async fn open_streams(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
    legacy: bool,
    count: usize,
    concurrency: usize,
    streams: &mut Streams,
) {
    let mut left = count;
    while left > 0 {
        let batch = concurrency.min(left);
        let opens = (0..batch).map(|_| async {
            let req = if legacy {
                let session = initialize(client, url, headers).await;
                let mut req = Request::get(url)
                    .header("accept", "text/event-stream")
                    .header("mcp-protocol-version", "2025-11-25")
                    .header("mcp-session-id", session);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.body(Full::new(Bytes::new())).unwrap()
            } else {
                let mut h = headers.to_vec();
                h.push(("mcp-protocol-version", "2026-07-28"));
                h.push(("mcp-method", "subscriptions/listen"));
                post(url, &h, LISTEN)
            };
            client.request(req).await
        });
        for opened in futures_util::future::join_all(opens).await {
            match opened {
                Ok(resp) if resp.status() == 200 => {
                    let delays = streams.delays.clone();
                    let recording = streams.recording.clone();
                    streams.tasks.push(tokio::spawn(async move {
                        read_events(resp.into_body(), &delays, &recording).await;
                    }));
                }
                _ => streams.refused += 1,
            }
        }
        left -= batch;
    }
}

/// Reads an SSE body to its end, noting each `sentUs` event's delay while `recording`.
async fn read_events(
    mut body: hyper::body::Incoming,
    delays: &std::sync::Mutex<Vec<Duration>>,
    recording: &std::sync::atomic::AtomicBool,
) {
    const MARK: &str = "\"sentUs\":\"";
    let mut pending = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let arrived = now_us();
        pending.push_str(&String::from_utf8_lossy(&data));
        let Some(end) = pending.rfind("\n\n") else {
            continue;
        };
        if recording.load(std::sync::atomic::Ordering::Relaxed) {
            let mut noted = Vec::new();
            for part in pending[..end].split(MARK).skip(1) {
                if let Some(sent) = part.split('"').next().and_then(|v| v.parse::<u128>().ok()) {
                    let late = arrived.saturating_sub(sent);
                    noted.push(Duration::from_micros(
                        u64::try_from(late).unwrap_or(u64::MAX),
                    ));
                }
            }
            delays.lock().unwrap().extend(noted);
        }
        pending.drain(..end + 2);
    }
}
