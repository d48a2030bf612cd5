//! Test utilities: in-process upstreams and gateways on 127.0.0.1:0.
#![allow(dead_code)]

pub mod jwt;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use mcpgate::{Config, Gateway};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw a request")
    }
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an upstream whose every request is recorded, then answered by `handler`.
pub async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let handler = handler.clone();
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let s = Seen {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            record.lock().unwrap().push(s.clone());
            handler(s).await
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Upstream { addr, seen, task }
}

pub fn json_response(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// An SSE response fed by the returned sender; the stream ends when the sender is dropped.
pub fn sse_channel() -> (tokio::sync::mpsc::Sender<Bytes>, Response) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let resp = Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap();
    (tx, resp)
}

pub struct Gw {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gw {
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/servers/{name}/mcp", self.addr)
    }
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Signals shutdown; returns the server task to await.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

pub fn config(yaml: &str) -> Config {
    Config::parse(yaml, "test.yaml", &|k| std::env::var(k).ok()).unwrap_or_else(|e| panic!("{e}"))
}

/// A gateway whose config sees exactly these environment variables.
pub async fn gateway_env(env: &[(&str, &str)], yaml: &str) -> Gw {
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let config = Config::parse(yaml, "test.yaml", &lookup).unwrap_or_else(|e| panic!("{e}"));
    gateway_with(config, |_| {}).await
}

pub async fn gateway(yaml: &str) -> Gw {
    gateway_with(config(yaml), |_| {}).await
}

pub async fn gateway_with(config: Config, setup: impl FnOnce(&mut Gateway)) -> Gw {
    let mut gw = Gateway::new(config);
    setup(&mut gw);
    gateway_built(gw).await
}

/// A gateway in front of one upstream named `name`.
pub async fn gateway_for(name: &str, up: &Upstream, extra: &str) -> Gw {
    gateway(&route_yaml(name, up, extra)).await
}

/// A config with one route, `name`, to `up`, then `extra`.
fn route_yaml(name: &str, up: &Upstream, extra: &str) -> String {
    format!("upstreams:\n  {name}:\n    url: {}\n{extra}", up.url())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub const ACCEPT: &str = "application/json, text/event-stream";

pub fn legacy_call(id: u64, tool: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
}

pub fn modern_call(id: u64, tool: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}})
}

pub fn ok_result(id: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"ok"}]}})
}

/// POSTs one JSON-RPC body with the usual Accept header and these extra headers.
pub async fn post_with(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(url).header("accept", ACCEPT).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// POSTs one JSON-RPC body (with the usual Accept header and, optionally, a session id).
pub async fn post(url: &str, body: &serde_json::Value, session: Option<&str>) -> reqwest::Response {
    match session {
        Some(s) => post_with(url, body, &[("mcp-session-id", s)]).await,
        None => post_with(url, body, &[]).await,
    }
}

/// GETs a JSON document.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn initialize() -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

/// Initializes a legacy session through the gateway; returns the session id the client got.
pub async fn open_session(url: &str) -> String {
    let resp = post(url, &initialize(), None).await;
    assert_eq!(resp.status(), 200);
    resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The repository's `plugins/` folder, where scripts/build-plugins.sh puts the built components.
pub fn plugin_dir() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins");
    assert!(
        std::path::Path::new(dir).join("misbehave.wasm").exists(),
        "the test plugins are not built: run scripts/build-plugins.sh"
    );
    dir.to_string()
}

/// Loads the config's plugins as `mcpgate start` does.
pub async fn load_plugins(
    config: &Config,
) -> Result<mcpgate::plugins::Plugins, mcpgate::config::ConfigErrors> {
    mcpgate::plugins::Plugins::load(config, mcpgate::deps::Deps::for_config(config).unwrap()).await
}

/// A gateway with plugins: `yaml` may use `{plugins}` for the plugin folder.
pub async fn gateway_plugins(yaml: &str) -> (Gw, Arc<mcpgate::plugins::Plugins>) {
    let config = config(&yaml.replace("{plugins}", &plugin_dir()));
    let plugins = Arc::new(
        load_plugins(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let p = plugins.clone();
    let gw = gateway_built(Gateway::with_plugins(config, &p)).await;
    (gw, plugins)
}

async fn gateway_built(gw: Gateway) -> Gw {
    serve_on(gw, None).await
}

/// [`gateway_for`] served as `mcpgate start` serves it: on `workers` threads of their own
/// ([`mcpgate::run_workers`]).
pub async fn gateway_on_workers(name: &str, up: &Upstream, workers: usize) -> Gw {
    serve_on(
        Gateway::new(config(&route_yaml(name, up, ""))),
        Some(workers),
    )
    .await
}

async fn serve_on(gw: Gateway, workers: Option<usize>) -> Gw {
    let gateway = Arc::new(gw);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let stop = async {
        let _ = rx.await;
    };
    let task = match workers {
        None => tokio::spawn(mcpgate::run(listener, gateway.clone(), stop)),
        Some(n) => tokio::spawn(mcpgate::run_workers(listener, gateway.clone(), n, stop)),
    };
    Gw {
        addr,
        gateway,
        shutdown: Some(tx),
        task: Some(task),
    }
}
