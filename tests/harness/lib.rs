//! Harness for the end-to-end tests: find the built `mcpgate` binary and the SDK peers installed
//! by `scripts/setup.sh`, run them as child processes on 127.0.0.1 with OS-chosen ports, and make
//! sure every child dies with the test.

pub mod services;
pub mod ws;
pub use ws::{Ws, WsEvent, ws_connect, ws_connect_offering};

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `mcpgate` binary cargo built next to this test (same profile, same target dir).
pub fn mcpgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join(format!("mcpgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p mcpgate` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh to install the SDK peers",
        path.display()
    );
    path
}

pub fn python() -> PathBuf {
    installed(repo().join("tests/e2e/.venv/bin/python"))
}

pub fn node_modules() -> PathBuf {
    installed(repo().join("tests/e2e/node_modules/@modelcontextprotocol/sdk"));
    repo().join("tests/e2e/node_modules")
}

/// Runs `mcpgate <args>` to completion in the repository, with a clean environment (as on a
/// fresh machine: only PATH and HOME, plus `env`); returns (success, stdout, stderr).
pub fn run_mcpgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(mcpgate_bin());
    cmd.args(args).current_dir(repo()).env_clear();
    for keep in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed when dropped; its output lines are collected for assertions and
/// for the panic message when something fails.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{} did not print {needle:?} within {timeout:?}; exit: {:?}; output:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a line containing `needle` anywhere in the output, including lines already
    /// read by earlier waits: for lines whose order the process does not fix (logged by
    /// different tasks).
    pub fn expect_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        self.wait_for(needle, timeout)
    }

    /// Everything printed so far (non-blocking).
    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the OS just handed out on 127.0.0.1, for peers that cannot report their own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let dir = std::env::temp_dir().join(format!("mcpgate-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `mcpgate start` with this config on an OS-chosen port; returns the process and its
/// base URL (`http://127.0.0.1:<port>`).
pub fn start_gateway(config: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    start_gateway_from(&mcpgate_bin(), config, &[("RUST_LOG", "info")], env)
}

/// [`start_gateway`] with another `mcpgate` binary (a release build, for benchmarks), and
/// default environment variables that `env` may override.
pub fn start_gateway_from(
    bin: &Path,
    config: &Path,
    defaults: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["start", "--port", "0", "--config"]).arg(config);
    for (k, v) in defaults.iter().chain(env) {
        cmd.env(k, v);
    }
    let mut gw = Proc::spawn("mcpgate", &mut cmd);
    let line = gw.wait_for("mcpgate listening on ", Duration::from_secs(30));
    let base = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    (gw, base)
}

/// Starts a peer that prints `PORT <n>` once it listens on 127.0.0.1; returns it and
/// `http://127.0.0.1:<n>`.
pub fn start_ported(name: &str, cmd: &mut Command) -> (Proc, String) {
    let mut p = Proc::spawn(name, cmd);
    let line = p.wait_for("PORT ", Duration::from_secs(60));
    let port = line.trim().trim_start_matches("PORT ").to_string();
    (p, format!("http://127.0.0.1:{port}"))
}

/// Starts the repository's demo MCP server (Python SDK); returns it and its /mcp URL.
pub fn start_demo_server() -> (Proc, String) {
    let (server, base) = start_ported(
        "demo_server.py",
        Command::new(python())
            .arg(repo().join("examples/demo_server.py"))
            .env("PYTHONUNBUFFERED", "1"),
    );
    (server, format!("{base}/mcp"))
}

/// Starts `@modelcontextprotocol/server-everything` (TypeScript SDK) over Streamable HTTP on a
/// free port; returns it and its /mcp URL.
pub fn start_everything() -> (Proc, String) {
    let port = free_port();
    let node_modules = node_modules();
    let mut server = Proc::spawn(
        "server-everything",
        Command::new("node")
            .arg(node_modules.join("@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .current_dir(node_modules.parent().unwrap()),
    );
    server.wait_for("listening on port", Duration::from_secs(60));
    (server, format!("http://127.0.0.1:{port}/mcp"))
}

/// What every run of tests/e2e/ts_client.mjs against server-everything must show, whatever is in
/// between: echo and sum answered, four progress notifications, two sampling round trips (each
/// answer naming its prompt), the session ended by DELETE and refused afterwards (404).
pub fn assert_everything_session(out: &serde_json::Value) {
    assert_eq!(out["echo"], "Echo: hello through the gateway", "{out}");
    assert_eq!(out["sum"], "The sum of 2 and 40 is 42.", "{out}");
    assert_eq!(
        out["slow"]["progress"].as_array().map(Vec::len),
        Some(4),
        "{out}"
    );
    assert_eq!(out["samplingRequests"], 2, "{out}");
    for (i, prompt) in ["first", "second"].into_iter().enumerate() {
        let answer = out["sampling"][i].as_str().unwrap_or_default();
        let want = format!(
            "sampled #{}: Resource trigger-sampling-request context: {prompt}",
            i + 1
        );
        assert!(answer.contains(&want), "{want}: {out}");
    }
    assert_eq!(out["terminated"], true, "{out}");
    assert_eq!(out["afterDeleteStatus"], 404, "{out}");
}

/// Runs a client to completion and parses the one JSON object it prints last.
pub fn run_client(name: &str, cmd: &mut Command, timeout: Duration) -> serde_json::Value {
    finish_client(Proc::spawn(name, cmd), timeout)
}

/// Waits for a started client to exit successfully and parses the one JSON object it printed
/// last.
pub fn finish_client(mut p: Proc, timeout: Duration) -> serde_json::Value {
    let name = p.name.clone();
    let status = p.wait(timeout);
    // The reader threads may lag the exit by a moment.
    std::thread::sleep(Duration::from_millis(200));
    let lines = p.drain();
    assert!(
        status.is_some_and(|s| s.success()),
        "{name} failed ({status:?}):\n{}",
        lines.join("\n")
    );
    lines
        .iter()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| panic!("{name} printed no JSON:\n{}", lines.join("\n")))
}

/// An HTTP response read off a plain connection: status, headers (names lowercase) and the body
/// as sent (chunked bodies keep their framing).
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs a JSON body over a plain HTTP/1.1 connection (closed after the response), as a client
/// without an SDK would.
pub fn raw_post(base: &str, path: &str, headers: &[(&str, &str)], body: &str) -> RawResponse {
    raw_request(base, "POST", path, headers, body)
}

/// [`raw_post`] with any method.
pub fn raw_request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    RawResponse {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

/// The admin API of a gateway started with `admin:` (see [`start_with_admin`]).
pub struct AdminApi {
    pub base: String,
    pub token: String,
}

impl AdminApi {
    /// `method path` with the admin token; the status and the body as JSON (`Null` if not JSON).
    pub fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let r = raw_request(&self.base, method, path, &[("authorization", &auth)], "");
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        )
    }

    /// `GET path`, which must answer 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Sends SIGHUP (reload) to a started gateway.
pub fn sighup(gw: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP {}", gw.pid());
}

/// The admin token the tests' gateways are started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Starts a gateway whose config has an `admin:` section reading `ADMIN_TOKEN` from the
/// environment (`token_env: ADMIN_TOKEN`); returns it, its base URL and its admin API.
pub fn start_with_admin(config: &Path, env: &[(&str, &str)]) -> (Proc, String, AdminApi) {
    let mut all = vec![("ADMIN_TOKEN", ADMIN_TOKEN)];
    all.extend_from_slice(env);
    let (mut gw, base) = start_gateway(config, &all);
    let line = gw.wait_for("mcpgate admin listening on ", Duration::from_secs(30));
    let admin = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    (
        gw,
        base,
        AdminApi {
            base: admin,
            token: ADMIN_TOKEN.to_string(),
        },
    )
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..size), rest.get(size..)) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.strip_prefix("\r\n").unwrap_or(after);
    }
    out
}

impl RawResponse {
    /// The JSON-RPC messages of the body: the JSON body, or each SSE event's data.
    pub fn messages(&self) -> Vec<String> {
        let sse = self
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !sse {
            return vec![self.body.clone()];
        }
        self.body
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                (!data.is_empty() && !data.concat().trim().is_empty()).then(|| data.join("\n"))
            })
            .collect()
    }
}

/// A `/metrics` scrape parsed by the Prometheus project's own parser (`prometheus_client`, run
/// by tests/e2e/scrape_metrics.py): a malformed exposition fails the scrape.
pub struct Scrape {
    pub content_type: String,
    /// Family name → type.
    pub types: HashMap<String, String>,
    /// (sample name, labels, value).
    pub samples: Vec<(String, HashMap<String, String>, f64)>,
}

/// Scrapes `url` (a gateway's metrics path).
pub fn scrape(url: &str) -> Scrape {
    let v = run_client(
        "scrape_metrics.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/scrape_metrics.py"))
            .arg(url),
        Duration::from_secs(60),
    );
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for (family, f) in v["families"].as_object().unwrap() {
        types.insert(family.clone(), f["type"].as_str().unwrap().to_string());
        for s in f["samples"].as_array().unwrap() {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            samples.push((
                s["name"].as_str().unwrap().to_string(),
                labels,
                s["value"].as_f64().unwrap(),
            ));
        }
    }
    Scrape {
        content_type: v["content_type"].as_str().unwrap_or_default().to_string(),
        types,
        samples,
    }
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The label names the samples called `name` carry (`le` of buckets left out).
    pub fn label_names(&self, name: &str) -> HashSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .flat_map(|(_, l, _)| l.keys().filter(|k| *k != "le").cloned())
            .collect()
    }
}

// ---- raw HTTP: what misbehaving callers send, byte for byte ---------------------------------

/// The stateless protocol revision.
pub const MODERN: &str = "2026-07-28";
/// The last session-based revision.
pub const LEGACY: &str = "2025-11-25";

/// A gateway started from `yaml`, in a temporary folder that lives as long as the returned guard.
pub fn gateway_from(tag: &str, yaml: &str, env: &[(&str, &str)]) -> (Proc, String, TempDir) {
    let dir = TempDir::new(tag);
    let cfg = dir.file("gw.yaml", yaml);
    let (gw, base) = start_gateway(&cfg, env);
    (gw, base, dir)
}

/// A client speaking raw HTTP, so that ids can be spelled any way JSON allows.
pub struct Client {
    base: String,
    path: String,
    era: &'static str,
    session: Option<String>,
}

impl Client {
    pub fn new(base: &str, route: &str, era: &'static str) -> Client {
        Client::at(base, &format!("/servers/{route}/mcp"), era)
    }

    /// A client of the MCP endpoint at `path` (which may carry a query string).
    pub fn at(base: &str, path: &str, era: &'static str) -> Client {
        let mut c = Client {
            base: base.to_string(),
            path: path.to_string(),
            era,
            session: None,
        };
        if era == LEGACY {
            let init = c.send(
                "0",
                "initialize",
                json!({"protocolVersion": LEGACY, "capabilities": {},
                       "clientInfo": {"name": "hostile", "version": "1"}}),
            );
            assert_eq!(init.status, 200, "{}", init.body);
            c.session = init.header("mcp-session-id").map(str::to_string);
            assert!(c.session.is_some(), "{:?}", init.headers);
            let done = c.post(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                &[],
            );
            assert_eq!(done.status, 202, "{}", done.body);
        }
        c
    }

    /// The session id the gateway gave this (session-based) client.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Opens the session's GET stream on a connection of its own, unread ([`read_until`]).
    pub fn open_get_stream(&self) -> std::net::TcpStream {
        let mut s = connect(&self.base);
        let session = self.session.as_deref().expect("a session-based client");
        s.write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nMCP-Protocol-Version: {}\r\nMcp-Session-Id: {session}\r\n\r\n",
                self.path,
                self.base.trim_start_matches("http://"),
                self.era
            )
            .as_bytes(),
        )
        .unwrap();
        s
    }

    pub fn post(&self, body: &str, extra: &[(&str, &str)]) -> RawResponse {
        let mut headers: Vec<(&str, &str)> = vec![("mcp-protocol-version", self.era)];
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id", s));
        }
        headers.extend_from_slice(extra);
        raw_post(&self.base, &self.path, &headers, body)
    }

    /// [`Client::send`] with `params` as JSON text (an object), sent as written.
    pub fn send_text(
        &self,
        id: &str,
        method: &str,
        name: Option<&str>,
        params: &str,
    ) -> RawResponse {
        let mut extra = vec![("mcp-method", method)];
        let params = if self.era == MODERN {
            if let Some(name) = name {
                extra.push(("mcp-name", name));
            }
            let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
            format!(
                "{{{meta},{}",
                params.trim_start().strip_prefix('{').unwrap()
            )
        } else {
            extra.clear();
            params.to_string()
        };
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        self.post(&body, &extra)
    }

    /// Sends a request whose id is the raw JSON text `id`.
    pub fn send(&self, id: &str, method: &str, mut params: Value) -> RawResponse {
        let mut extra = vec![("mcp-method", method.to_string())];
        if self.era == MODERN {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {}
            });
            if let Some(name) = params["name"].as_str().or(params["uri"].as_str()) {
                extra.push(("mcp-name", name.to_string()));
            }
        }
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let extra = if self.era == MODERN {
            &extra[..]
        } else {
            &[][..]
        };
        self.post(&body, extra)
    }

    /// The answer to a request: the one message of the response that carries `result` or
    /// `error`, as raw text.
    pub fn answer(&self, id: &str, method: &str, params: Value) -> String {
        let r = self.send(id, method, params);
        assert_eq!(r.status, 200, "{id} {method}: {}", r.body);
        let answers: Vec<String> = r
            .messages()
            .into_iter()
            .filter(|m| {
                serde_json::from_str::<Value>(m)
                    .is_ok_and(|v| v.get("result").is_some() || v.get("error").is_some())
            })
            .collect();
        assert_eq!(answers.len(), 1, "{id} {method}: {:?}", r.messages());
        answers.into_iter().next().unwrap()
    }
}

/// A raw TCP connection to the gateway, for clients that misbehave at the byte level.
pub fn connect(base: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads from `s` until what came contains `needle` (or 30 s pass: a failure); returns what came.
pub fn read_until(s: &mut std::net::TcpStream, needle: &str) -> String {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&out).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no `{needle}` within 30 s; got {}",
            String::from_utf8_lossy(&out)
        );
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before `{needle}`; got {}",
                String::from_utf8_lossy(&out)
            ),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}; got {}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the gateway closes the connection (or 20 s pass: a failure); returns what came.
pub fn read_until_closed(s: &mut std::net::TcpStream) -> Result<String, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            Err(e) => return Err(format!("still open after 20 s ({e}); got {out:?}")),
        }
    }
}

/// GETs `path` on its own connection; returns the body.
pub fn get(base: &str, path: &str) -> String {
    use std::io::Write as _;
    let mut s = connect(base);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let text = read_until_closed(&mut s).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(text)
}

/// Starts `tests/e2e/hostile_server.py` (a Python SDK server, see its docstring) with `flags`;
/// returns it and its /mcp URL.
pub fn hostile_server(flags: &[&str]) -> (Proc, String) {
    let (p, base) = start_ported(
        "hostile_server.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/hostile_server.py"))
            .args(flags)
            .env("PYTHONUNBUFFERED", "1"),
    );
    (p, format!("{base}/mcp"))
}

/// Starts `tests/e2e/raw_upstream.py` (an upstream that misbehaves on demand) with `flags`;
/// returns it and its base URL.
pub fn raw_upstream(flags: &[&str]) -> (Proc, String) {
    start_ported(
        "raw_upstream.py",
        Command::new(python())
            .arg(repo().join("tests/e2e/raw_upstream.py"))
            .args(flags)
            .env("PYTHONUNBUFFERED", "1"),
    )
}

/// Sends a 2026-07-28 `tools/call` (id as raw JSON) on a connection of its own and returns the
/// connection unread, for a test that reads the answer slowly, partly or not at all.
pub fn open_call(
    base: &str,
    route: &str,
    id: &str,
    tool: &str,
    arguments: &str,
) -> std::net::TcpStream {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let mut s = connect(base);
    s.write_all(
        format!(
            "POST /servers/{route}/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s
}

/// The value of the Prometheus sample line that starts with `series` (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
