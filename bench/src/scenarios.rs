//! What is measured: the targets (no proxy, the floor, mcpgate in several configurations), the
//! load scenarios (era × response kind × concurrency), and the one-off measurements (SSE event
//! delay, memory, start-up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Options;
use crate::client;
use crate::procs::{self, Load, Proc};
use crate::report::{Report, Row};
use mcpgate_e2e::services::RedisServer;

pub const API_KEY: &str = "bench-secret-key-0123456789";
const TOOL_ARGS: &str = r#"{"query":"fn main","repo":"mcpgate/mcpgate","limit":20}"#;

/// Auth (API key), rate limit (three bucket levels, never empty) and policy (ten rules).
fn builtins() -> String {
    include_str!("../builtins.yaml").to_string()
}

/// One WebAssembly stage: arg-guard validating the call's three arguments, reused instances.
fn wasm(plugins: &Path, cache: Option<&Path>) -> String {
    let cache = cache.map_or(String::new(), |c| format!("  cache_dir: {}\n", c.display()));
    format!(
        r#"plugin_runtime:
  dir: {}
{cache}plugins:
  guard:
    file: arg_guard.wasm
    instances: reuse
    config:
      tools:
        search_code:
          arguments:
            query: {{type: string, max_length: 4000}}
            repo: {{type: string, max_length: 200}}
            limit: {{type: integer, maximum: 100}}
"#,
        plugins.display()
    )
}

/// The mcpgate configurations, by name; each routes `json` and `sse` to the two upstreams.
fn configs(plugins: &Path, redis: Option<&str>, audit: &Path) -> Vec<(&'static str, String)> {
    let builtins = builtins();
    let wasm = wasm(plugins, None);
    let observed = format!(
        "observability:\n  metrics: {{}}\n  audit: {{sink: file, path: {}}}\n",
        audit.display()
    );
    let fresh = wasm.replace("    instances: reuse\n", "");
    let mut out = vec![
        ("mcpgate, no stages", "pipeline: []\n".to_string()),
        ("mcpgate, auth + rate limit + policy", builtins.clone()),
        (
            "mcpgate, built-ins + 1 wasm stage",
            format!("{builtins}{wasm}pipeline: [auth, rate_limit, policy, guard]\n"),
        ),
        (
            "mcpgate, built-ins + 1 wasm stage (fresh instance per call)",
            format!("{builtins}{fresh}pipeline: [auth, rate_limit, policy, guard]\n"),
        ),
        (
            "mcpgate, built-ins + metrics + audit",
            format!("{builtins}{observed}"),
        ),
    ];
    if let Some(url) = redis {
        out.push((
            "mcpgate, built-ins, redis buckets",
            format!(
                "{}redis:\n  url: {url}\n  key_prefix: \"bench:\"\n",
                builtins.replace("rate_limit:\n", "rate_limit:\n  backend: redis\n")
            ),
        ));
        out.push((
            "mcpgate, built-ins, redis buckets (exact)",
            format!(
                "{}redis:\n  url: {url}\n  key_prefix: \"bench-exact:\"\n",
                builtins.replace(
                    "rate_limit:\n",
                    "rate_limit:\n  backend: redis\n  lease_tokens: 0\n"
                )
            ),
        ));
    }
    out
}

/// One proxy (or none) in front of the two upstreams.
pub struct Target {
    pub name: String,
    /// URL of the `json` and the `sse` route.
    pub urls: [String; 2],
    /// The mcpgate process (drained between runs).
    pub proc: Option<Proc>,
    /// The process whose CPU time is charged to it, for the `json` and the `sse` route (none
    /// for "direct").
    pub pids: [Option<u32>; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

fn body(era: Era) -> String {
    match era {
        Era::Legacy => format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search_code","arguments":{TOOL_ARGS}}}}}"#
        ),
        Era::Modern => format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search_code","arguments":{TOOL_ARGS},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        ),
    }
}

fn headers(era: Era, session: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![("X-API-Key".to_string(), API_KEY.to_string())];
    match era {
        Era::Legacy => {
            h.push(("MCP-Protocol-Version".into(), "2025-11-25".into()));
            if let Some(s) = session {
                h.push(("Mcp-Session-Id".into(), s.into()));
            }
        }
        Era::Modern => {
            h.push(("MCP-Protocol-Version".into(), "2026-07-28".into()));
            h.push(("Mcp-Method".into(), "tools/call".into()));
            h.push(("Mcp-Name".into(), "search_code".into()));
        }
    }
    h
}

fn lua(dir: &Path, name: &str, era: Era, session: Option<&str>) -> PathBuf {
    let mut text = format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n",
        body(era)
    );
    for (k, v) in headers(era, session) {
        text.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
    }
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A `redis-server` for the Redis row, when one is installed (scripts/bench.sh installs it).
fn start_redis() -> Option<RedisServer> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: redis-server is not installed; the redis row is skipped");
        return None;
    }
    Some(RedisServer::start())
}

/// `tools/list` over a federated route of 10 members, sequentially: each member's p50 when asked
/// directly, and the route's p50 through mcpgate (built-ins on the route).
fn federated_fan_out(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    http: &client::Http,
    dir: &Path,
    env: &[(&str, &str)],
) -> (usize, Vec<Duration>, Duration) {
    const MEMBERS: usize = 10;
    let members: Vec<(Proc, String)> = (0..MEMBERS)
        .map(|i| {
            procs::start_ported(
                &format!("bench-upstream (member {i})"),
                Command::new(procs::bin("bench-upstream")).args(["--tools", "20"]),
            )
        })
        .collect();
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    let routes: Vec<(&str, &str)> = names
        .iter()
        .zip(&members)
        .map(|(n, (_, url))| (n.as_str(), url.as_str()))
        .collect();
    let path = write_config(dir, "federated.yaml", &builtins(), &routes);
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(&format!("  fed:\n    members: [{}]\n", names.join(", ")));
    std::fs::write(&path, yaml).unwrap();
    let (gw, base, _) = procs::start_mcpgate(&path, env);
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let headers = [
        ("X-API-Key", API_KEY),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/list"),
    ];
    let requests = if opts.quick { 50 } else { 300 };
    let p50 = |d: Vec<Duration>| d[d.len() / 2];
    let direct = members
        .iter()
        .map(|(_, url)| {
            p50(rt.block_on(client::latencies(
                http,
                &format!("{url}/mcp"),
                &headers,
                list,
                requests,
            )))
        })
        .collect();
    let federated = p50(rt.block_on(client::latencies(
        http,
        &format!("{base}/servers/fed/mcp"),
        &headers,
        list,
        requests,
    )));
    drop((gw, members));
    (MEMBERS, direct, federated)
}

/// Writes a gateway config: `section`, then `routes` as `(name, upstream base URL)`.
fn write_config(dir: &Path, file: &str, section: &str, routes: &[(&str, &str)]) -> PathBuf {
    let mut yaml = format!("{section}upstreams:\n");
    for (name, url) in routes {
        yaml.push_str(&format!("  {name}:\n    url: {url}/mcp\n"));
    }
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    path
}

type Sample = (Load, Option<Duration>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub fn run(opts: &Options, rt: &tokio::runtime::Runtime) -> Report {
    let dir = std::env::temp_dir().join(format!("mcpgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugins = procs::bin_dir().join("../../plugins");
    let plugins = plugins.canonicalize().unwrap_or(plugins);
    assert!(
        plugins.join("arg_guard.wasm").exists(),
        "build the plugins first: scripts/build-plugins.sh"
    );
    let mut report = Report::new(opts, procs::in_own_netns());
    if let Some(only) = opts.only.as_deref() {
        let http = client::http();
        let env = [("BENCH_API_KEY", API_KEY)];
        match only {
            "federation" => {
                report.federation = Some(federated_fan_out(opts, rt, &http, &dir, &env));
            }
            "streams" => report.streams = Some(streams(opts, rt, &http, &dir, &env)),
            "big" => {
                report.big = Some(big_results(opts, rt, &dir, &env, &floors_bin()));
                report.big_list = Some(big_list(opts, rt, &http, &dir, &env));
            }
            "allocations" => {
                let (_up, url) = procs::start_ported(
                    "bench-upstream (json)",
                    &mut Command::new(procs::bin("bench-upstream")),
                );
                report.allocations = Some(allocations(opts, rt, &http, &dir, &env, &url));
            }
            other => {
                panic!("--only takes federation, streams, big or allocations, not {other}")
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        return report;
    }

    let (up_json, json_url) = procs::start_ported(
        "bench-upstream (json)",
        &mut Command::new(procs::bin("bench-upstream")),
    );
    let (up_sse, sse_url) = procs::start_ported(
        "bench-upstream (sse)",
        Command::new(procs::bin("bench-upstream")).args(["--sse", "5"]),
    );
    let redis = start_redis();
    let audit = dir.join("audit.jsonl");

    let mut targets = vec![Target {
        name: "direct (no proxy)".into(),
        urls: [format!("{json_url}/mcp"), format!("{sse_url}/mcp")],
        proc: None,
        pids: [None, None],
    }];
    // The floor at index 1 (ratios are to it), then the floor on mcpgate's runtime layout. Each
    // is a process per upstream, charged for the scenarios on its route.
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .to_string();
    let mut floors = Vec::new();
    for (name, extra) in [
        ("floor (plain hyper proxy)", &[][..]),
        (
            "floor, thread per core (as mcpgate runs)",
            &["--workers", workers.as_str()][..],
        ),
    ] {
        let (json, json_floor) = procs::start_ported(
            &format!("{name} (json)"),
            Command::new(procs::bin("floor-proxy"))
                .arg(&json_url)
                .args(extra),
        );
        let (sse, sse_floor) = procs::start_ported(
            &format!("{name} (sse)"),
            Command::new(procs::bin("floor-proxy"))
                .arg(&sse_url)
                .args(extra),
        );
        targets.push(Target {
            name: name.into(),
            urls: [format!("{json_floor}/mcp"), format!("{sse_floor}/mcp")],
            proc: None,
            pids: [Some(json.pid()), Some(sse.pid())],
        });
        floors.push(json);
        floors.push(sse);
    }
    let env = [("BENCH_API_KEY", API_KEY)];
    let redis_url = redis.as_ref().map(RedisServer::url);
    for (name, section) in configs(&plugins, redis_url.as_deref(), &audit) {
        let path = write_config(
            &dir,
            &format!("{}.yaml", name.replace([' ', ',', '+'], "_")),
            &format!("sessions:\n  key: 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n{section}"),
            &[("json", &json_url), ("sse", &sse_url)],
        );
        let (p, base, _) = procs::start_mcpgate(&path, &env);
        targets.push(Target {
            name: name.into(),
            urls: [
                format!("{base}/servers/json/mcp"),
                format!("{base}/servers/sse/mcp"),
            ],
            pids: [Some(p.pid()), Some(p.pid())],
            proc: Some(p),
        });
    }

    let http = client::http();
    let scenarios: Vec<(Era, usize, usize)> = [Era::Legacy, Era::Modern]
        .into_iter()
        .flat_map(|era| [0usize, 1].map(move |kind| (era, kind)))
        .flat_map(|(era, kind)| [1usize, 32].map(move |c| (era, kind, c)))
        .collect();
    // Scripts: one per (target, era, kind); legacy ones carry a session opened through it.
    let mut scripts = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        for kind in 0..2 {
            for era in [Era::Legacy, Era::Modern] {
                let session = (era == Era::Legacy).then(|| {
                    let h: Vec<(&str, &str)> = [("X-API-Key", API_KEY)].to_vec();
                    rt.block_on(client::initialize(&http, &target.urls[kind], &h))
                });
                let tag = format!(
                    "t{t}-k{kind}-{}",
                    if era == Era::Legacy {
                        "legacy"
                    } else {
                        "modern"
                    }
                );
                scripts.push(((t, kind, era), lua(&dir, &tag, era, session.as_deref())));
            }
        }
    }
    let script = |t: usize, kind: usize, era: Era| {
        scripts
            .iter()
            .find(|(k, _)| *k == (t, kind, era))
            .map(|(_, p)| p.clone())
            .unwrap()
    };

    // Rounds: every scenario, every target in turn, so slow drifts of the machine hit all alike.
    // samples[scenario][target][round]: the load, and CPU time per request.
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); targets.len()]; scenarios.len()];
    for round in 0..opts.rounds {
        eprintln!("round {}/{}", round + 1, opts.rounds);
        for (s, (era, kind, c)) in scenarios.iter().enumerate() {
            for (t, target) in targets.iter_mut().enumerate() {
                let cpu_of = |target: &Target| target.pids[*kind].map(procs::cpu_time);
                let before = cpu_of(target);
                let load = procs::wrk(
                    &target.urls[*kind],
                    &script(t, *kind, *era),
                    *c,
                    opts.duration,
                );
                let cpu = before.zip(cpu_of(target)).map(|(b, a)| a.saturating_sub(b));
                let per_request = cpu.map(|d| d.div_f64(load.requests.max(1) as f64));
                if let Some(p) = target.proc.as_mut() {
                    p.drain();
                }
                samples[s][t].push((load, per_request));
            }
        }
    }
    for (s, (era, kind, c)) in scenarios.iter().enumerate() {
        let floor = &samples[s][1];
        let direct = &samples[s][0];
        for (t, target) in targets.iter().enumerate() {
            let runs = &samples[s][t];
            let ratio = |f: &dyn Fn(usize) -> f64| median((0..runs.len()).map(f).collect());
            report.rows.push(Row {
                scenario: format!(
                    "{}, {}, c={c}",
                    if *era == Era::Legacy {
                        "legacy (session)"
                    } else {
                        "2026-07-28"
                    },
                    if *kind == 0 { "JSON" } else { "SSE (5 events)" },
                ),
                target: target.name.clone(),
                rps: median(runs.iter().map(|r| r.0.rps).collect()),
                rps_vs_floor: ratio(&|i| runs[i].0.rps / floor[i].0.rps),
                p50: Duration::from_secs_f64(median(
                    runs.iter().map(|r| r.0.p50.as_secs_f64()).collect(),
                )),
                p50_added: Duration::from_secs_f64(ratio(&|i| {
                    (runs[i].0.p50.as_secs_f64() - direct[i].0.p50.as_secs_f64()).max(0.0)
                })),
                p99: Duration::from_secs_f64(median(
                    runs.iter().map(|r| r.0.p99.as_secs_f64()).collect(),
                )),
                cpu_per_request: runs[0].1.map(|_| {
                    Duration::from_secs_f64(median(
                        runs.iter()
                            .filter_map(|r| r.1.map(|d| d.as_secs_f64()))
                            .collect(),
                    ))
                }),
                cpu_vs_floor: (runs[0].1.is_some() && floor[0].1.is_some()).then(|| {
                    ratio(&|i| {
                        runs[i].1.unwrap().as_secs_f64()
                            / floor[i].1.unwrap().as_secs_f64().max(1e-9)
                    })
                }),
                errors: runs.iter().map(|r| r.0.errors).sum(),
            });
        }
    }

    // SSE: progress events 1 ms apart; how much later than direct each arrives.
    let (up_paced, paced_url) = procs::start_ported(
        "bench-upstream (paced sse)",
        Command::new(procs::bin("bench-upstream")).args(["--sse", "20", "--interval-us", "1000"]),
    );
    let (floor_paced, floor_paced_url) = procs::start_ported(
        "floor (paced sse)",
        Command::new(procs::bin("floor-proxy")).arg(&paced_url),
    );
    let paced_yaml = write_config(&dir, "paced.yaml", &builtins(), &[("sse", &paced_url)]);
    let (gw_paced, gw_paced_base, _) = procs::start_mcpgate(&paced_yaml, &env);
    let modern: Vec<(String, String)> = headers(Era::Modern, None);
    let modern: Vec<(&str, &str)> = modern
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let requests = if opts.quick { 20 } else { 100 };
    for (name, url) in [
        ("direct (no proxy)", format!("{paced_url}/mcp")),
        (
            "floor (plain hyper proxy)",
            format!("{floor_paced_url}/mcp"),
        ),
        (
            "mcpgate, auth + rate limit + policy",
            format!("{gw_paced_base}/servers/sse/mcp"),
        ),
    ] {
        let mut delays = rt.block_on(client::sse_delays(
            &http,
            &url,
            &modern,
            &body(Era::Modern),
            requests,
        ));
        delays.sort();
        report.sse.push((name.to_string(), delays));
    }
    drop((up_paced, floor_paced, gw_paced));

    // Latency at c=1, request by request (the CDF picture): direct, the floor, the built-ins.
    let modern_body = body(Era::Modern);
    for name in [
        "direct (no proxy)",
        "floor (plain hyper proxy)",
        "mcpgate, auth + rate limit + policy",
    ] {
        let Some(target) = targets.iter().find(|t| t.name == name) else {
            continue;
        };
        let lat = rt.block_on(client::latencies(
            &http,
            &target.urls[0],
            &modern,
            &modern_body,
            if opts.quick { 200 } else { 2000 },
        ));
        report.latency_c1.push((target.name.clone(), lat));
    }

    // A federated route over 10 members: tools/list (20 tools each) through the route, against
    // each member answering directly.
    report.federation = Some(federated_fan_out(opts, rt, &http, &dir, &env));

    report.streams = Some(streams(opts, rt, &http, &dir, &env));
    report.big = Some(big_results(opts, rt, &dir, &env, &floors_bin()));
    report.big_list = Some(big_list(opts, rt, &http, &dir, &env));
    report.allocations = Some(allocations(opts, rt, &http, &dir, &env, &json_url));
    report.workers = Some(workers_scaling(
        opts,
        &dir,
        &env,
        &json_url,
        &script(2, 0, Era::Modern),
    ));

    // Memory: idle, then with 10,000 live legacy sessions; and start-up time with a plugin.
    let builtins_yaml = write_config(&dir, "memory.yaml", &builtins(), &[("json", &json_url)]);
    let (gw, base, _) = procs::start_mcpgate(&builtins_yaml, &env);
    std::thread::sleep(Duration::from_millis(500));
    report.rss_idle = procs::rss(&gw);
    let sessions = if opts.quick { 1_000 } else { 10_000 };
    rt.block_on(client::open_sessions(
        &http,
        &format!("{base}/servers/json/mcp"),
        &[("X-API-Key", API_KEY)],
        sessions,
        32,
    ));
    report.rss_sessions = (sessions, procs::rss(&gw));
    drop(gw);
    let cold_cache = dir.join("wasm-cache");
    let wasm_yaml = write_config(
        &dir,
        "startup.yaml",
        &format!(
            "{}{}pipeline: [auth, rate_limit, policy, guard]\n",
            builtins(),
            wasm(&plugins, Some(&cold_cache))
        ),
        &[("json", &json_url)],
    );
    for label in ["cold compile cache", "warm compile cache"] {
        let (_gw, _, took) = procs::start_mcpgate(&wasm_yaml, &env);
        report.startup.push((label.to_string(), took));
    }
    let (_gw, _, took) = procs::start_mcpgate(&builtins_yaml, &env);
    report.startup.push(("no plugins".to_string(), took));

    drop((up_json, up_sse, floors, targets, redis));
    let _ = std::fs::remove_dir_all(&dir);
    report
}

fn floors_bin() -> PathBuf {
    procs::bin("floor-proxy")
}

/// The most streams the gateway can hold here: each takes a client and an upstream
/// connection, under the process's file limit (`ulimit -n`, which this machine caps).
fn stream_capacity() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    (limit.saturating_sub(512) / 2).min(10_000)
}

/// What [`streams`] measured.
pub struct StreamsReport {
    /// Per kind of stream: (streams open, gateway RSS in bytes), from none to the most.
    pub rss: Vec<(String, Vec<(usize, u64)>)>,
    /// Per target: every event's delay on 1,000 streams that each get one every 100 ms.
    pub delays: Vec<(String, Vec<Duration>)>,
    /// Streams the target refused to open (should be none).
    pub refused: usize,
}

/// Server streams held open through the gateway (the built-ins on the route): its RSS as idle
/// streams grow, for legacy GET streams (a session each) and 2026-07-28 `subscriptions/listen`
/// streams; then 1,000 listen streams, each carrying an event every 100 ms, against the floor
/// and direct: how late each event arrives.
fn streams(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    http: &client::Http,
    dir: &Path,
    env: &[(&str, &str)],
) -> StreamsReport {
    let most = if opts.quick { 1_000 } else { stream_capacity() };
    let steps: Vec<usize> = [0, most / 10, most / 4, most / 2, most * 3 / 4, most]
        .into_iter()
        .collect();
    let (_silent, silent_url) = procs::start_ported(
        "bench-upstream (silent streams)",
        &mut Command::new(procs::bin("bench-upstream")),
    );
    let section = format!(
        "server:\n  max_connections: {}\nsessions:\n  key: 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n{}",
        most * 2 + 100,
        builtins()
    );
    let key = [("X-API-Key", API_KEY)];
    let mut report = StreamsReport {
        rss: Vec::new(),
        delays: Vec::new(),
        refused: 0,
    };
    for (kind, legacy) in [
        ("legacy GET streams (a session each)", true),
        ("2026-07-28 subscriptions/listen streams", false),
    ] {
        let path = write_config(dir, "streams.yaml", &section, &[("s", &silent_url)]);
        let (gw, base, _) = procs::start_mcpgate(&path, env);
        let url = format!("{base}/servers/s/mcp");
        let mut open = client::Streams::default();
        let mut curve = Vec::new();
        for &step in &steps {
            let more = step.saturating_sub(open.len());
            rt.block_on(client::open_streams(
                http, &url, &key, legacy, more, 64, &mut open,
            ));
            std::thread::sleep(Duration::from_millis(500));
            curve.push((open.len(), procs::rss(&gw)));
            eprintln!(
                "{kind}: {} open, RSS {} kB",
                open.len(),
                procs::rss(&gw) / 1024
            );
        }
        report.refused += open.refused;
        drop(open);
        drop(gw);
        report.rss.push((kind.to_string(), curve));
    }
    // The floor holding the same listen streams, for scale: what one proxied stream costs a
    // plain hyper proxy (two connections' buffers and a task).
    {
        let (floor, floor_url) = procs::start_ported(
            "floor (silent streams)",
            Command::new(procs::bin("floor-proxy")).arg(&silent_url),
        );
        let url = format!("{floor_url}/mcp");
        let mut open = client::Streams::default();
        let mut curve = Vec::new();
        for &step in &steps {
            let more = step.saturating_sub(open.len());
            rt.block_on(client::open_streams(
                http, &url, &key, false, more, 64, &mut open,
            ));
            std::thread::sleep(Duration::from_millis(500));
            curve.push((open.len(), procs::rss(&floor)));
        }
        report.refused += open.refused;
        drop(open);
        report.rss.push((
            "floor (plain hyper proxy), subscriptions/listen streams".to_string(),
            curve,
        ));
    }

    // 1,000 streams, an event every 100 ms each.
    let n = if opts.quick { 200 } else { 1_000 };
    let (_ticking, ticking_url) = procs::start_ported(
        "bench-upstream (ticking streams)",
        Command::new(procs::bin("bench-upstream")).args(["--stream-interval-ms", "100"]),
    );
    let (_floor, floor_url) = procs::start_ported(
        "floor (ticking streams)",
        Command::new(procs::bin("floor-proxy")).arg(&ticking_url),
    );
    let path = write_config(dir, "ticking.yaml", &section, &[("s", &ticking_url)]);
    let (_gw, base, _) = procs::start_mcpgate(&path, env);
    let record = if opts.quick { 2 } else { 6 };
    for (name, url) in [
        ("direct (no proxy)", format!("{ticking_url}/mcp")),
        ("floor (plain hyper proxy)", format!("{floor_url}/mcp")),
        (
            "mcpgate, auth + rate limit + policy",
            format!("{base}/servers/s/mcp"),
        ),
    ] {
        let mut open = client::Streams::default();
        rt.block_on(async {
            client::open_streams(http, &url, &key, false, n, 64, &mut open).await;
            // Settle, then record.
            tokio::time::sleep(Duration::from_millis(500)).await;
            open.record(true);
            tokio::time::sleep(Duration::from_secs(record)).await;
        });
        let mut delays = open.record(false);
        report.refused += open.refused;
        drop(open);
        delays.sort();
        report.delays.push((name.to_string(), delays));
    }
    report
}

/// 1 MiB tool results passed through at c=8 (2026-07-28 JSON): requests per second through the
/// floor and the gateway with the built-ins, alternated over rounds, medians.
fn big_results(
    opts: &Options,
    _rt: &tokio::runtime::Runtime,
    dir: &Path,
    env: &[(&str, &str)],
    floor_bin: &Path,
) -> Vec<(String, f64)> {
    let (_up, up_url) = procs::start_ported(
        "bench-upstream (1 MiB results)",
        Command::new(procs::bin("bench-upstream")).args(["--result-bytes", "1048576"]),
    );
    let (_floor, floor_url) = procs::start_ported(
        "floor (1 MiB results)",
        Command::new(floor_bin).arg(&up_url),
    );
    let path = write_config(dir, "big.yaml", &builtins(), &[("big", &up_url)]);
    let (_gw, base, _) = procs::start_mcpgate(&path, env);
    let script = lua(dir, "big", Era::Modern, None);
    let targets = [
        ("direct (no proxy)".to_string(), format!("{up_url}/mcp")),
        (
            "floor (plain hyper proxy)".to_string(),
            format!("{floor_url}/mcp"),
        ),
        (
            "mcpgate, auth + rate limit + policy".to_string(),
            format!("{base}/servers/big/mcp"),
        ),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..opts.rounds {
        for (i, (_, url)) in targets.iter().enumerate() {
            runs[i].push(procs::wrk(url, &script, 8, opts.duration).rps);
        }
    }
    targets
        .into_iter()
        .zip(runs)
        .map(|((name, _), r)| (name, median(r)))
        .collect()
}

/// `tools/list` of 1,000 tools, filtered per caller by the policy (2026-07-28, sequential):
/// p50 direct and through the gateway with the built-ins.
fn big_list(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    http: &client::Http,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Duration, Duration) {
    let (_up, up_url) = procs::start_ported(
        "bench-upstream (1,000 tools)",
        Command::new(procs::bin("bench-upstream")).args(["--tools", "1000"]),
    );
    let path = write_config(dir, "list.yaml", &builtins(), &[("tools", &up_url)]);
    let (_gw, base, _) = procs::start_mcpgate(&path, env);
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let headers = [
        ("X-API-Key", API_KEY),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/list"),
    ];
    let requests = if opts.quick { 50 } else { 500 };
    let p50 = |d: Vec<Duration>| d[d.len() / 2];
    let direct = p50(rt.block_on(client::latencies(
        http,
        &format!("{up_url}/mcp"),
        &headers,
        list,
        requests,
    )));
    let through = p50(rt.block_on(client::latencies(
        http,
        &format!("{base}/servers/tools/mcp"),
        &headers,
        list,
        requests,
    )));
    (direct, through)
}

/// What `mcpgate-counted` measured: per request (target, allocations, bytes), and the live heap
/// per idle stream (kind, bytes).
#[derive(Default)]
pub struct Allocations {
    pub per_request: Vec<(String, f64, f64)>,
    pub per_stream: Vec<(String, f64)>,
}

/// Heap allocations per request in the gateway: `mcpgate-counted` (the same CLI on a counting
/// allocator, rewriting its count to a file every 20 ms) serving 2026-07-28 JSON tools/call at
/// c=1 after a warm-up, with no stages and with the built-ins; then the heap each idle server
/// stream keeps live (legacy GET and 2026-07-28 listen streams, built-ins on the route).
fn allocations(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    http: &client::Http,
    dir: &Path,
    env: &[(&str, &str)],
    json_url: &str,
) -> Allocations {
    let count_file = dir.join("allocations");
    // The count once the gateway is idle (the writer's period, twice over).
    let read = || -> (u64, u64, i64) {
        std::thread::sleep(Duration::from_millis(60));
        let text = std::fs::read_to_string(&count_file)
            .expect("mcpgate-counted writes its allocation count");
        let mut it = text
            .split_whitespace()
            .map(|n| n.parse::<i64>().unwrap_or(0));
        let mut next = || it.next().unwrap_or(0);
        (next() as u64, next() as u64, next())
    };
    let modern: Vec<(String, String)> = headers(Era::Modern, None);
    let modern: Vec<(&str, &str)> = modern
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let count_env = count_file.to_string_lossy().to_string();
    let mut env = env.to_vec();
    env.push(("MCPGATE_COUNT_ALLOCATIONS", &count_env));
    // A counted gateway with `section`, and its route's URL.
    let counted = |section: &str| {
        let path = write_config(dir, "allocs.yaml", section, &[("json", json_url)]);
        let (gw, base) = mcpgate_e2e::start_gateway_from(
            &procs::bin("mcpgate-counted"),
            &path,
            &[("RUST_LOG", "warn")],
            &env,
        );
        (gw, format!("{base}/servers/json/mcp"))
    };
    let requests = if opts.quick { 500 } else { 5000 };
    let mut out = Allocations::default();
    for (name, section) in [
        ("mcpgate, no stages", "pipeline: []\n".to_string()),
        ("mcpgate, auth + rate limit + policy", builtins()),
    ] {
        let (_gw, url) = counted(&section);
        let send = |n| {
            rt.block_on(client::latencies(
                http,
                &url,
                &modern,
                &body(Era::Modern),
                n,
            ))
        };
        send(requests / 5);
        let before = read();
        send(requests);
        let after = read();
        out.per_request.push((
            name.to_string(),
            (after.0 - before.0) as f64 / requests as f64,
            (after.1 - before.1) as f64 / requests as f64,
        ));
    }
    let streams = if opts.quick { 200 } else { 1_000 };
    let key = [("X-API-Key", API_KEY)];
    for (kind, legacy) in [
        ("legacy GET stream (and its session)", true),
        ("2026-07-28 subscriptions/listen stream", false),
    ] {
        let (_gw, url) = counted(&builtins());
        let mut open = client::Streams::default();
        rt.block_on(client::open_streams(
            http, &url, &key, legacy, 16, 16, &mut open,
        ));
        let before = read();
        rt.block_on(client::open_streams(
            http, &url, &key, legacy, streams, 64, &mut open,
        ));
        std::thread::sleep(Duration::from_millis(300));
        let after = read();
        out.per_stream.push((
            kind.to_string(),
            (after.2 - before.2) as f64 / (open.len() - 16).max(1) as f64,
        ));
    }
    out
}

/// The built-ins at c=32 (2026-07-28 JSON) on one serving thread and on two: throughput and
/// CPU per request, alternated over rounds, medians.
fn workers_scaling(
    opts: &Options,
    dir: &Path,
    env: &[(&str, &str)],
    json_url: &str,
    script: &Path,
) -> Vec<(usize, f64, Duration)> {
    let mut gws = Vec::new();
    for workers in [1usize, 2] {
        let path = write_config(
            dir,
            &format!("workers{workers}.yaml"),
            &format!("server:\n  workers: {workers}\n{}", builtins()),
            &[("json", json_url)],
        );
        let (gw, base, _) = procs::start_mcpgate(&path, env);
        gws.push((workers, gw, format!("{base}/servers/json/mcp")));
    }
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); gws.len()];
    for _ in 0..opts.rounds {
        for (i, (_, gw, url)) in gws.iter().enumerate() {
            let before = procs::cpu_time(gw.pid());
            let load = procs::wrk(url, script, 32, opts.duration);
            let cpu = procs::cpu_time(gw.pid()).saturating_sub(before);
            runs[i].push((load.rps, cpu.as_secs_f64() / load.requests.max(1) as f64));
        }
    }
    gws.iter()
        .zip(runs)
        .map(|((w, _, _), r)| {
            (
                *w,
                median(r.iter().map(|x| x.0).collect()),
                Duration::from_secs_f64(median(r.iter().map(|x| x.1).collect())),
            )
        })
        .collect()
}
