//! The soak (issue 16, RELIABILITY.md): a release mcpgate under mixed load for minutes, watched
//! for what grows.
//!
//!   mcpgate-soak [--minutes M] [--sample-secs S] [--workers N] [--out DIR]
//!
//! Peers: the Python SDK server (`tests/e2e/hostile_server.py`, SSE and `--json` answers) for
//! the legacy era, the Rust benchmark upstream for the stateless era. Each worker loops over a
//! mix: a legacy session's whole life (initialize, initialized, tools/list filtered by the
//! policy, calls, a denied call, DELETE), legacy JSON calls, stateless calls with routing headers
//! (and one whose header lies, 400), calls through the redact plugin, a caller whose rate limit
//! runs dry (429) and one without a key (401). Every `--sample-secs` it records the gateway's RSS,
//! open fds and live tasks (`mcpgate_runtime_tasks`) and the answers by class.
//!
//! Fails (exit 1) on any 5xx (no fault is injected here), on an answer class a step does not
//! expect, on RSS growing after the first sample by more than 16 MiB + 10 % (or in the second
//! half by more than 2 MiB + 2 %), on open fds
//! growing by more than 64, or when, the load stopped, tasks and fds do not come back to within a
//! few of where they were before it (once the upstream pool closed its idle connections). Writes `soak.md` (the table), `soak.csv` and `rss.svg`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use mcpgate_bench::client::{Http, http};
use mcpgate_bench::procs::{Proc, bin, rss, start_mcpgate, start_ported};

const MODERN: &str = "2026-07-28";
/// How long the load's leftovers may take to go once it stopped: the upstream pool keeps idle
/// keep-alive connections (a descriptor and a task each) for 60 s, evicted by a sweep that runs
/// every 60 s: up to two minutes.
const SETTLE: Duration = Duration::from_secs(130);
/// Tasks and descriptors the idle gateway may hold beyond what it held before the load.
const IDLE_SLACK: usize = 2;
const LEGACY: &str = "2025-06-18";

struct Options {
    minutes: f64,
    sample: Duration,
    workers: usize,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        minutes: 10.0,
        sample: Duration::from_secs(60),
        workers: 8,
        out: PathBuf::from("target/soak"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--minutes" => o.minutes = value.parse().expect("--minutes: a number"),
            "--sample-secs" => {
                o.sample = Duration::from_secs(value.parse().expect("--sample-secs: seconds"));
            }
            "--workers" => o.workers = value.parse().expect("--workers: a count"),
            "--out" => o.out = PathBuf::from(value),
            other => panic!("unknown option {other} (see the header of bench/src/bin/soak.rs)"),
        }
        i += 2;
    }
    o
}

/// Answers by class, counted by every worker.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    expected_4xx: AtomicU64,
    limited: AtomicU64,
    unexpected: AtomicU64,
    server_errors: AtomicU64,
}

impl Tally {
    fn take(&self) -> [u64; 5] {
        [
            self.ok.swap(0, Ordering::Relaxed),
            self.expected_4xx.swap(0, Ordering::Relaxed),
            self.limited.swap(0, Ordering::Relaxed),
            self.unexpected.swap(0, Ordering::Relaxed),
            self.server_errors.swap(0, Ordering::Relaxed),
        ]
    }
}

struct Load {
    client: Http,
    base: String,
    tally: Tally,
    /// The first few unexpected answers, for the report.
    surprises: std::sync::Mutex<Vec<String>>,
}

impl Load {
    /// Sends one request, reads the whole answer, counts it against what the step `expects`.
    async fn send(
        &self,
        method: http::Method,
        route: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        expects: u16,
    ) -> Option<(u16, Option<String>, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}/servers/{route}/mcp", self.base))
            .header("accept", "application/json, text/event-stream");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let answer =
            match tokio::time::timeout(Duration::from_secs(30), self.client.request(req)).await {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let session = resp
                        .headers()
                        .get("mcp-session-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    body.ok().map(|b| (status, session, b))
                }
                _ => None,
            };
        let status = answer.as_ref().map_or(0, |a| a.0);
        let t = &self.tally;
        match status {
            s if s >= 500 => t.server_errors.fetch_add(1, Ordering::Relaxed),
            s if s == expects && s < 300 => t.ok.fetch_add(1, Ordering::Relaxed),
            429 if expects == 429 => t.limited.fetch_add(1, Ordering::Relaxed),
            s if s == expects => t.expected_4xx.fetch_add(1, Ordering::Relaxed),
            // The rate-limited caller is sometimes let through as its bucket refills.
            s if expects == 429 && s < 300 => t.ok.fetch_add(1, Ordering::Relaxed),
            _ => t.unexpected.fetch_add(1, Ordering::Relaxed),
        };
        if status >= 500 || (status != expects && !(expects == 429 && status < 300)) {
            let mut s = self.surprises.lock().unwrap();
            if s.len() < 10 {
                let body = answer
                    .as_ref()
                    .map(|a| String::from_utf8_lossy(&a.2).into_owned());
                s.push(format!("{route}: wanted {expects}, got {status}: {body:?}"));
            }
        }
        answer
    }

    async fn legacy_session(&self, route: &str, key: &str, n: u64) {
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{LEGACY}","capabilities":{{}},"clientInfo":{{"name":"soak","version":"1"}}}}}}"#
        );
        let h = [("x-api-key", key)];
        let Some((_, Some(session), _)) = self
            .send(http::Method::POST, route, &h, Some(init), 200)
            .await
        else {
            return;
        };
        let h = [
            ("x-api-key", key),
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", LEGACY),
        ];
        let post =
            |body: String, expects| self.send(http::Method::POST, route, &h, Some(body), expects);
        post(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
            202,
        )
        .await;
        post(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(),
            200,
        )
        .await;
        for i in 0..3 {
            post(
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"soak {n} {i} mail me at someone@example.com"}}}}}}"#,
                    i + 2
                ),
                200,
            )
            .await;
        }
        // Denied by the policy: HTTP 200 with JSON-RPC -32007.
        post(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"leak","arguments":{}}}"#.into(), 200).await;
        self.send(http::Method::DELETE, route, &h, None, 200).await;
    }

    async fn modern(&self, route: &str, key: &str, n: u64, lie: bool) {
        let name = if lie { "other" } else { "search_code" };
        let h = [
            ("x-api-key", key),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ];
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"search_code","arguments":{{"q":"soak {n}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}"}}}}}}"#
        );
        self.send(
            http::Method::POST,
            route,
            &h,
            Some(body),
            if lie { 400 } else { 200 },
        )
        .await;
    }

    /// One round of the mix.
    async fn round(&self, worker: usize, n: u64) {
        match n % 6 {
            0 => self.legacy_session("py", "soak-key-0123456789", n).await,
            1 => {
                self.legacy_session("pyjson", "soak-key-0123456789", n)
                    .await
            }
            2 | 3 => {
                for i in 0..10 {
                    self.modern("fast", "soak-key-0123456789", n * 10 + i, i == 9)
                        .await;
                }
            }
            4 => {
                for i in 0..5 {
                    self.modern("plug", "soak-key-0123456789", n * 10 + i, false)
                        .await;
                }
            }
            _ => {
                let limited = if worker.is_multiple_of(2) { 429 } else { 401 };
                let key = if limited == 429 {
                    "limited-key-0123456789"
                } else {
                    "wrong-key"
                };
                for i in 0..5 {
                    let h = [
                        ("x-api-key", key),
                        ("mcp-protocol-version", MODERN),
                        ("mcp-method", "tools/list"),
                    ];
                    let body = format!(
                        r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}"}}}}}}"#
                    );
                    self.send(http::Method::POST, "fast", &h, Some(body), limited)
                        .await;
                }
            }
        }
    }
}

struct Sample {
    at: Duration,
    rss_mib: f64,
    fds: usize,
    tasks: u64,
    counts: [u64; 5],
}

impl Sample {
    /// RSS (with `digits` decimals), fds, tasks and the answer counts, as text.
    fn fields(&self, digits: usize) -> Vec<String> {
        let mut out = vec![
            format!("{:.digits$}", self.rss_mib),
            self.fds.to_string(),
            self.tasks.to_string(),
        ];
        out.extend(self.counts.iter().map(u64::to_string));
        out
    }
}

fn fds(p: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid())).map_or(0, |d| d.count())
}

async fn tasks(client: &Http, base: &str) -> u64 {
    let req = Request::get(format!("{base}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(resp) = client.request(req).await else {
        return 0;
    };
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("mcpgate_runtime_tasks "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn config(py: &str, pyjson: &str, fast: &str, plugins: &str, audit: &str) -> String {
    format!(
        r#"server:
  workers: 2
# Bounded tables reach their bound in the first minute (sessions churn at ~50/s), so that what
# still grows after it is a leak, not a table filling up to a default of 100 000.
sessions:
  max_active: 1000
observability:
  metrics: {{enabled: true}}
  audit: {{enabled: true, sink: file, path: "{audit}"}}
auth:
  type: api-key
  keys:
    - {{id: soak, key_env: SOAK_KEY}}
    - {{id: limited, key_env: LIMITED_KEY}}
rate_limit:
  per_client: {{capacity: 1000000000, refill_rate: 1000000000}}
  clients:
    limited: {{capacity: 5, refill_rate: 2}}
policy:
  default: allow
  rules:
    - {{tools: ["leak*"], decision: deny, reason: no leaking}}
plugin_runtime:
  dir: {plugins}
plugins:
  redact:
    file: redact.wasm
    config: {{detectors: [email], arguments: true, results: true}}
    timeout: 1000
upstreams:
  py: {{url: "{py}"}}
  pyjson: {{url: "{pyjson}"}}
  fast: {{url: "{fast}"}}
  plug: {{url: "{fast}", pipeline: [auth, rate_limit, redact]}}
"#
    )
}

fn main() {
    let o = options();
    let repo = mcpgate_e2e::repo();
    let (_py, py) = mcpgate_e2e::hostile_server(&[]);
    let (_pyjson, pyjson) = mcpgate_e2e::hostile_server(&["--json"]);
    let (_fast, fast) = start_ported(
        "bench-upstream",
        &mut std::process::Command::new(bin("bench-upstream")),
    );
    let dir = mcpgate_e2e::TempDir::new("soak");
    let cfg = dir.file(
        "soak.yaml",
        &config(
            &py,
            &pyjson,
            &format!("{fast}/mcp"),
            &repo.join("plugins").display().to_string(),
            &dir.0.join("audit.jsonl").display().to_string(),
        ),
    );
    let (gw, base, _) = start_mcpgate(
        &cfg,
        &[
            ("SOAK_KEY", "soak-key-0123456789"),
            ("LIMITED_KEY", "limited-key-0123456789"),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let load = Arc::new(Load {
        client: http(),
        base: base.clone(),
        tally: Tally::default(),
        surprises: std::sync::Mutex::new(Vec::new()),
    });
    let idle_before = rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        (tasks(&load.client, &base).await, fds(&gw))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let total = Duration::from_secs_f64(o.minutes * 60.0);
    let mut samples = Vec::new();
    rt.block_on(async {
        let mut workers = Vec::new();
        for w in 0..o.workers {
            let load = load.clone();
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let mut n = w as u64;
                while !stop.load(Ordering::Relaxed) {
                    load.round(w, n).await;
                    n += 1;
                }
            }));
        }
        while started.elapsed() < total {
            let next = o.sample.min(total.saturating_sub(started.elapsed()));
            tokio::time::sleep(next).await;
            let s = Sample {
                at: started.elapsed(),
                rss_mib: rss(&gw) as f64 / (1024.0 * 1024.0),
                fds: fds(&gw),
                tasks: tasks(&load.client, &base).await,
                counts: load.tally.take(),
            };
            eprintln!(
                "soak: {:>5.0}s rss {:.1} MiB, {} fds, {} tasks, answers ok/4xx/429/unexpected/5xx {:?}",
                s.at.as_secs_f64(),
                s.rss_mib,
                s.fds,
                s.tasks,
                s.counts
            );
            samples.push(s);
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.await;
        }
    });
    // Quiet again: what the load left behind.
    let stopped = Instant::now();
    let idle_after = rt.block_on(async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (tasks(&load.client, &base).await, fds(&gw));
            let settled =
                now.0 <= idle_before.0 + IDLE_SLACK as u64 && now.1 <= idle_before.1 + IDLE_SLACK;
            if settled || stopped.elapsed() > SETTLE {
                break now;
            }
        }
    });
    eprintln!(
        "soak: idle again after {:.0} s",
        stopped.elapsed().as_secs_f64()
    );
    let verdict = judge(&samples, idle_before, idle_after, &load);
    std::fs::create_dir_all(&o.out).unwrap();
    let table = markdown(&samples, idle_before, idle_after, &verdict, &o);
    std::fs::write(o.out.join("soak.md"), &table).unwrap();
    std::fs::write(o.out.join("soak.csv"), csv(&samples)).unwrap();
    std::fs::write(o.out.join("rss.svg"), svg(&samples)).unwrap();
    println!("{table}");
    println!("written to {}", o.out.display());
    drop(gw);
    if !verdict.is_empty() {
        std::process::exit(1);
    }
}

/// What went wrong, empty when the soak passed.
fn judge(
    samples: &[Sample],
    before: (u64, usize),
    after: (u64, usize),
    load: &Load,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sum = |i: usize| samples.iter().map(|s| s.counts[i]).sum::<u64>();
    if sum(4) > 0 {
        problems.push(format!("{} answers were 5xx", sum(4)));
    }
    if sum(3) > 0 {
        problems.push(format!("{} answers were not what the step expects", sum(3)));
    }
    if sum(0) == 0 {
        problems.push("no request succeeded".into());
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let allowed = 16.0 + first.rss_mib * 0.10;
        if last.rss_mib - first.rss_mib > allowed {
            problems.push(format!(
                "RSS grew from {:.1} to {:.1} MiB after the first sample (allowed {allowed:.1})",
                first.rss_mib, last.rss_mib
            ));
        }
        // The second half must be flat: a slow leak shows there even when the total stays
        // under the bound above.
        let half = &samples[samples.len() / 2];
        let allowed = 2.0 + half.rss_mib * 0.02;
        if samples.len() >= 4 && last.rss_mib - half.rss_mib > allowed {
            problems.push(format!(
                "RSS still grew in the second half: {:.1} to {:.1} MiB (allowed {allowed:.1})",
                half.rss_mib, last.rss_mib
            ));
        }
        if last.fds > first.fds + 64 {
            problems.push(format!("open fds grew from {} to {}", first.fds, last.fds));
        }
    }
    if after.0 > before.0 + IDLE_SLACK as u64 {
        problems.push(format!(
            "tasks did not come back: {} before the load, {} after",
            before.0, after.0
        ));
    }
    if after.1 > before.1 + IDLE_SLACK {
        problems.push(format!(
            "fds did not come back: {} before the load, {} after",
            before.1, after.1
        ));
    }
    for s in load.surprises.lock().unwrap().iter() {
        problems.push(format!("  e.g. {s}"));
    }
    problems
}

fn markdown(
    samples: &[Sample],
    before: (u64, usize),
    after: (u64, usize),
    verdict: &[String],
    o: &Options,
) -> String {
    let mut out = format!(
        "Soak: {} min, {} workers, sampled every {} s. Idle before the load: {} tasks, {} fds; after it (once the upstream pool's idle connections expired, at most {} s): {} tasks, {} fds.\n\n",
        o.minutes,
        o.workers,
        o.sample.as_secs(),
        before.0,
        before.1,
        SETTLE.as_secs(),
        after.0,
        after.1
    );
    out.push_str("| minute | RSS MiB | open fds | tasks | ok | expected 4xx | 429 | unexpected | 5xx | req/s |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev = Duration::ZERO;
    for s in samples {
        let secs = (s.at - prev).as_secs_f64().max(0.001);
        prev = s.at;
        let total: u64 = s.counts.iter().sum();
        let mut row = vec![format!("{:.1}", s.at.as_secs_f64() / 60.0)];
        row.extend(s.fields(1));
        row.push(format!("{:.0}", total as f64 / secs));
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
    if verdict.is_empty() {
        out.push_str("Verdict: passed (no 5xx, no unexpected answer, no growth).\n");
    } else {
        out.push_str("Verdict: FAILED\n");
        for v in verdict {
            out.push_str(&format!("- {v}\n"));
        }
    }
    out
}

fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "seconds,rss_mib,fds,tasks,ok,expected_4xx,limited,unexpected,server_errors\n",
    );
    for s in samples {
        let mut row = vec![format!("{:.0}", s.at.as_secs_f64())];
        row.extend(s.fields(2));
        out.push_str(&format!("{}\n", row.join(",")));
    }
    out
}

/// RSS over time as a small SVG line chart (no plotting dependency for one line).
fn svg(samples: &[Sample]) -> String {
    let (w, h, pad) = (640.0, 240.0, 40.0);
    let max_t = samples.last().map_or(1.0, |s| s.at.as_secs_f64()).max(1.0);
    let max_r = samples.iter().map(|s| s.rss_mib).fold(1.0, f64::max) * 1.25;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / max_t;
    let y = |r: f64| h - pad - (h - 2.0 * pad) * r / max_r;
    let points: Vec<String> = std::iter::once((0.0, samples.first().map_or(0.0, |s| s.rss_mib)))
        .chain(samples.iter().map(|s| (s.at.as_secs_f64(), s.rss_mib)))
        .skip(1)
        .map(|(t, r)| format!("{:.1},{:.1}", x(t), y(r)))
        .collect();
    let mut grid = BTreeMap::new();
    for i in 0..=4 {
        let r = max_r * f64::from(i) / 4.0;
        grid.insert(i, format!(
            r##"<line x1="{pad}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{ty:.1}" font-size="11">{r:.0}</text>"##,
            y = y(r),
            x2 = w - pad,
            ty = y(r) + 4.0
        ));
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
{grid}
<text x="{pad}" y="16" font-size="13">mcpgate RSS (MiB) over {mins:.0} min of mixed load</text>
<text x="{xl}" y="{yl}" font-size="11">minutes</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>
</svg>
"##,
        grid = grid.into_values().collect::<Vec<_>>().join("\n"),
        mins = max_t / 60.0,
        xl = w / 2.0,
        yl = h - 8.0,
        points = points.join(" ")
    )
}
