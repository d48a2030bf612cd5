//! Services the multi-replica tests run beside the gateways: a real `redis-server` on a free
//! loopback port, and a per-request round-robin load balancer in front of several replicas.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::{Proc, TempDir, free_port};

/// A `redis-server` (from the system's packages; `scripts/setup.sh` installs it) on
/// 127.0.0.1, with persistence off. Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = TempDir::new("redis");
        let mut server = RedisServer {
            port: 0,
            dir,
            proc: None,
        };
        // The port is free when asked for; another process may take it before Redis binds.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server could not bind a free port five times");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data goes with it: persistence is off).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server could not bind port {} again", self.port);
    }

    fn spawn(&mut self) -> bool {
        let bin = which("redis-server").unwrap_or_else(|| {
            panic!("redis-server is not installed: run scripts/setup.sh (it installs the system package)")
        });
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0);
        let mut p = Proc::spawn("redis-server", &mut cmd);
        // Redis prints one of these and exits on a bind error.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let lines = p.drain();
            if lines
                .iter()
                .any(|l| l.contains("Ready to accept connections"))
            {
                self.proc = Some(p);
                return true;
            }
            if lines
                .iter()
                .any(|l| l.contains("Could not create server TCP"))
            {
                return false;
            }
            if p.wait(Duration::from_millis(20)).is_some() {
                return false;
            }
        }
        panic!("redis-server did not start:\n{}", p.drain().join("\n"));
    }
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"])
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// One request the balancer passed on.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The backend's name (as given to [`Balancer::set_backends`]).
    pub backend: String,
    pub method: String,
    /// The JSON-RPC method of a POST body, when it has one.
    pub rpc: Option<String>,
    pub status: u16,
    /// `Mcp-Session-Id` the client sent.
    pub session: Option<String>,
    /// `Mcp-Session-Id` the response carried.
    pub minted: Option<String>,
}

struct Lb {
    backends: Mutex<Vec<(String, String)>>,
    next: AtomicUsize,
    hits: Mutex<Vec<Hit>>,
    client: reqwest::Client,
}

/// A round-robin HTTP load balancer: every request goes to the next backend (no stickiness),
/// responses stream through, and a backend that refuses the connection is skipped (as a load
/// balancer's health check would). Runs on its own runtime; stops when dropped.
pub struct Balancer {
    pub url: String,
    lb: Arc<Lb>,
    _rt: tokio::runtime::Runtime,
}

impl Balancer {
    pub fn start(backends: &[(&str, &str)]) -> Balancer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lb = Arc::new(Lb {
            backends: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            hits: Mutex::new(Vec::new()),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        let app = axum::Router::new().fallback(forward).with_state(lb.clone());
        let addr: SocketAddr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            addr
        });
        let balancer = Balancer {
            url: format!("http://{addr}"),
            lb,
            _rt: rt,
        };
        balancer.set_backends(backends);
        balancer
    }

    /// Replaces the backends: `(name, base URL)`.
    pub fn set_backends(&self, backends: &[(&str, &str)]) {
        *self.lb.backends.lock().unwrap() = backends
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect();
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.lb.hits.lock().unwrap().clone()
    }
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
];

async fn forward(State(lb): State<Arc<Lb>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let rpc = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["method"].as_str().map(String::from));
    let header = |h: &axum::http::HeaderMap, name: &str| {
        h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    };
    let session = header(&parts.headers, "mcp-session-id");
    let backends = lb.backends.lock().unwrap().clone();
    let start = lb.next.fetch_add(1, Ordering::Relaxed);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    for i in 0..backends.len() {
        let (name, base) = &backends[(start + i) % backends.len()];
        let mut upstream = lb
            .client
            .request(parts.method.clone(), format!("{base}{path}"));
        for (k, v) in &parts.headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                upstream = upstream.header(k, v);
            }
        }
        match upstream.body(body.clone()).send().await {
            Ok(resp) => {
                lb.hits.lock().unwrap().push(Hit {
                    backend: name.clone(),
                    method: parts.method.to_string(),
                    rpc: rpc.clone(),
                    status: resp.status().as_u16(),
                    session: session.clone(),
                    minted: header(resp.headers(), "mcp-session-id"),
                });
                let mut out = Response::builder().status(resp.status());
                for (k, v) in resp.headers() {
                    if !HOP_BY_HOP.contains(&k.as_str()) {
                        out = out.header(k, v);
                    }
                }
                return out.body(Body::from_stream(resp.bytes_stream())).unwrap();
            }
            Err(e) if e.is_connect() => continue,
            Err(e) => {
                return Response::builder()
                    .status(502)
                    .body(Body::from(format!("balancer: {e}")))
                    .unwrap();
            }
        }
    }
    Response::builder()
        .status(503)
        .body(Body::from("balancer: no backend reachable"))
        .unwrap()
}
