//! The results as a Markdown report, with the targets checked.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Options;

pub struct Row {
    pub scenario: String,
    pub target: String,
    pub rps: f64,
    pub rps_vs_floor: f64,
    pub p50: Duration,
    /// p50 minus direct's p50, median over rounds.
    pub p50_added: Duration,
    pub p99: Duration,
    pub cpu_per_request: Option<Duration>,
    pub cpu_vs_floor: Option<f64>,
    pub errors: u64,
}

pub struct Report {
    rounds: usize,
    duration: Duration,
    netns: bool,
    pub rows: Vec<Row>,
    /// Per target: every SSE event's delay (sorted).
    pub sse: Vec<(String, Vec<Duration>)>,
    pub rss_idle: u64,
    pub rss_sessions: (usize, u64),
    pub startup: Vec<(String, Duration)>,
    /// A federated route's `tools/list` fan-out: members, each member's p50 (direct), the
    /// route's p50.
    pub federation: Option<(usize, Vec<Duration>, Duration)>,
    /// Open server streams: RSS against streams, and event delays on 1,000 ticking streams.
    pub streams: Option<crate::scenarios::StreamsReport>,
    /// 1 MiB results at c=8: requests per second per target.
    pub big: Option<Vec<(String, f64)>>,
    /// tools/list of 1,000 tools filtered by policy: p50 direct, p50 through the gateway.
    pub big_list: Option<(Duration, Duration)>,
    /// The built-ins at c=32 on 1 and 2 serving threads: (workers, req/s, CPU per request).
    pub workers: Option<Vec<(usize, f64, Duration)>>,
    /// Heap allocations per request, and live heap per idle stream, in the gateway.
    pub allocations: Option<crate::scenarios::Allocations>,
    /// Per target: sequential request latencies at c=1 (sorted), for the CDF picture.
    pub latency_c1: Vec<(String, Vec<Duration>)>,
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpu}, {cores} cores, {mem} GiB")
}

impl Report {
    pub fn new(opts: &Options, netns: bool) -> Report {
        Report {
            rounds: opts.rounds,
            duration: opts.duration,
            netns,
            rows: Vec::new(),
            sse: Vec::new(),
            rss_idle: 0,
            rss_sessions: (0, 0),
            startup: Vec::new(),
            federation: None,
            streams: None,
            big: None,
            big_list: None,
            workers: None,
            allocations: None,
            latency_c1: Vec::new(),
        }
    }

    fn row(&self, scenario: &str, target: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.target == target)
    }

    /// The targets (issue 21, performance round two): (what, measured, target, met).
    fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        let full = "mcpgate, auth + rate limit + policy";
        let floor = "floor (plain hyper proxy)";
        let tpc = "floor, thread per core (as mcpgate runs)";
        let c32 = "legacy (session), JSON, c=32";
        let c1 = "legacy (session), JSON, c=1";
        if let (Some(r), Some(f)) = (self.row(c32, full), self.row(c32, tpc))
            && let (Some(x), Some(y)) = (r.cpu_per_request, f.cpu_per_request)
        {
            let ratio = x.as_secs_f64() / y.as_secs_f64().max(1e-9);
            out.push((
                "built-ins, c=32: CPU per request vs the thread-per-core floor".into(),
                format!("{ratio:.2}× ({} vs {})", us(x), us(y)),
                "≤ 1.10×".into(),
                ratio <= 1.10,
            ));
        }
        if let Some(r) = self.row(c32, full) {
            out.push((
                "built-ins, c=32: throughput vs the work-stealing floor".into(),
                format!("{:.2}×", r.rps_vs_floor),
                "≥ 0.95×".into(),
                r.rps_vs_floor >= 0.95,
            ));
        }
        if let (Some(r), Some(f)) = (self.row(c1, full), self.row(c1, floor)) {
            let over = r.p50_added.as_secs_f64() - f.p50_added.as_secs_f64();
            out.push((
                "c=1: p50 added over direct, minus the floor's".into(),
                format!(
                    "{:+.0} µs ({} vs {})",
                    over * 1e6,
                    us(r.p50_added),
                    us(f.p50_added)
                ),
                "≤ +10 µs".into(),
                over <= 10e-6,
            ));
        }
        for (name, what, limit) in [
            (
                "mcpgate, built-ins + 1 wasm stage (fresh instance per call)",
                "one WASM stage, default isolation (fresh instance per call): added CPU",
                15,
            ),
            (
                "mcpgate, built-ins + 1 wasm stage",
                "one WASM stage, `instances: reuse`: added CPU",
                5,
            ),
        ] {
            if let (Some(a), Some(b)) = (self.row(c32, full), self.row(c32, name))
                && let (Some(x), Some(y)) = (a.cpu_per_request, b.cpu_per_request)
            {
                let added = y.saturating_sub(x);
                out.push((
                    what.into(),
                    us(added),
                    format!("≤ {limit} µs"),
                    added <= Duration::from_micros(limit),
                ));
            }
        }
        if let Some(r) = self.row(c32, "mcpgate, built-ins, redis buckets") {
            out.push((
                "built-ins with Redis buckets (leased), c=32: throughput vs floor".into(),
                format!("{:.2}×", r.rps_vs_floor),
                "≥ 0.80×".into(),
                r.rps_vs_floor >= 0.80,
            ));
        }
        if let (Some(r), Some(m)) = (
            self.row(c1, "mcpgate, built-ins, redis buckets"),
            self.row(c1, full),
        ) {
            let added = r.p50.saturating_sub(m.p50);
            out.push((
                "built-ins with Redis buckets (leased), c=1: p50 added over memory".into(),
                us(added),
                "≤ 50 µs".into(),
                added <= Duration::from_micros(50),
            ));
        }
        let mb = |b: u64| b as f64 / 1024.0 / 1024.0;
        if let Some(st) = &self.streams {
            for (kind, curve) in st.rss.iter().filter(|(k, _)| !k.starts_with("floor")) {
                if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
                    // Extrapolated to 10,000 where the file limit stops short of it.
                    let per = (last.1.saturating_sub(first.1)) as f64 / last.0.max(1) as f64;
                    let at_10k = first.1 as f64 + per * 10_000.0;
                    out.push((
                        format!("10,000 idle {kind}: RSS"),
                        if last.0 >= 10_000 {
                            format!("{:.1} MB", mb(last.1))
                        } else {
                            format!(
                                "{:.1} MB at {} streams; {:.1} MB at 10,000 by its slope ({:.1} KB per stream)",
                                mb(last.1),
                                last.0,
                                at_10k / 1024.0 / 1024.0,
                                per / 1024.0
                            )
                        },
                        "≤ 150 MB".into(),
                        at_10k / 1024.0 / 1024.0 <= 150.0,
                    ));
                }
            }
            let p99 = |name: &str| {
                st.delays
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, d)| pct(d, 0.99))
            };
            if let (Some(direct), Some(gw)) = (p99("direct (no proxy)"), p99(full)) {
                let added = gw.saturating_sub(direct);
                out.push((
                    "1,000 streams, an event every 100 ms each: added delay p99".into(),
                    format!("{} ({} vs {})", us(added), us(gw), us(direct)),
                    "≤ 1 ms".into(),
                    added <= Duration::from_millis(1),
                ));
            }
        }
        if let Some(big) = &self.big {
            let rps = |n: &str| big.iter().find(|(t, _)| t == n).map(|(_, r)| *r);
            if let (Some(g), Some(f)) = (rps(full), rps(floor)) {
                let ratio = g / f.max(1e-9);
                out.push((
                    "1 MiB tool results, c=8: throughput vs floor".into(),
                    format!("{ratio:.2}× ({g:.0} vs {f:.0} req/s)"),
                    "≥ 0.95×".into(),
                    ratio >= 0.95,
                ));
            }
        }
        if let Some((direct, through)) = self.big_list {
            let added = through.saturating_sub(direct);
            out.push((
                "tools/list of 1,000 tools filtered by policy: added p50".into(),
                format!("{} ({} vs {})", us(added), us(through), us(direct)),
                "≤ 200 µs".into(),
                added <= Duration::from_micros(200),
            ));
        }
        if let Some((_, direct, federated)) = &self.federation {
            let slowest = direct.iter().max().copied().unwrap_or_default();
            let added = federated.saturating_sub(slowest);
            out.push((
                "federated route over 10 members: tools/list added over the slowest member".into(),
                us(added),
                "≤ 1 ms".into(),
                added <= Duration::from_millis(1),
            ));
        }
        if self.rss_idle > 0 {
            out.push((
                "RSS idle (round one)".into(),
                format!("{:.1} MB", mb(self.rss_idle)),
                "≤ 20 MB".into(),
                mb(self.rss_idle) <= 20.0,
            ));
            out.push((
                format!(
                    "RSS with {} live legacy sessions (round one)",
                    self.rss_sessions.0
                ),
                format!("{:.1} MB", mb(self.rss_sessions.1)),
                "≤ 100 MB (10,000 sessions)".into(),
                mb(self.rss_sessions.1) <= 100.0,
            ));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Machine: {}. {} round(s) of {:.0} s per configuration and scenario, configurations alternated within each round; {}.\n",
            machine(),
            self.rounds,
            self.duration.as_secs_f64(),
            if self.netns {
                "in a private network namespace (loopback only)"
            } else {
                "in the machine's network namespace"
            }
        );
        let _ = writeln!(
            s,
            "### Targets\n\n| what | measured | target | met |\n|---|---|---|---|"
        );
        for (what, got, want, met) in self.targets() {
            let _ = writeln!(
                s,
                "| {what} | {got} | {want} | {} |",
                if met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(
            s,
            "\n### Load (wrk; medians over rounds; ratios per round, then median)\n\n| scenario | target | req/s | vs floor | p50 | p50 added vs direct | p99 | CPU / request | CPU vs floor | errors |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.2}× | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.target,
                r.rps,
                r.rps_vs_floor,
                us(r.p50),
                us(r.p50_added),
                us(r.p99),
                r.cpu_per_request.map_or("–".into(), us),
                r.cpu_vs_floor.map_or("–".into(), |c| format!("{c:.2}×")),
                r.errors
            );
        }
        let _ = writeln!(
            s,
            "\n### SSE: progress events 1 ms apart, delay from upstream write to client read\n\n| target | events | p50 | p90 | p99 |\n|---|---|---|---|---|"
        );
        for (name, d) in &self.sse {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} |",
                d.len(),
                us(pct(d, 0.5)),
                us(pct(d, 0.9)),
                us(pct(d, 0.99))
            );
        }
        if let Some((members, direct, federated)) = &self.federation {
            let slowest = direct.iter().max().copied().unwrap_or_default();
            let _ = writeln!(
                s,
                "\n### Federated route: tools/list over {members} members (2026-07-28, sequential, p50)\n\n| what | p50 |\n|---|---|\n| slowest member, direct | {} |\n| the federated route through mcpgate | {} |\n| added over the slowest member | {} |",
                us(slowest),
                us(*federated),
                us(federated.saturating_sub(slowest))
            );
        }
        if let Some(st) = &self.streams {
            let _ = writeln!(
                s,
                "\n### Open server streams through the gateway (built-ins), idle: RSS\n\n| kind | streams | RSS |\n|---|---|---|"
            );
            for (kind, curve) in &st.rss {
                for (n, rss) in curve {
                    let _ = writeln!(
                        s,
                        "| {kind} | {n} | {:.1} MB |",
                        *rss as f64 / 1024.0 / 1024.0
                    );
                }
            }
            let _ = writeln!(
                s,
                "\n### Streams that each carry an event every 100 ms: delay from upstream write to client read\n\n| target | events | p50 | p90 | p99 |\n|---|---|---|---|---|"
            );
            for (name, d) in &st.delays {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    d.len(),
                    us(pct(d, 0.5)),
                    us(pct(d, 0.9)),
                    us(pct(d, 0.99))
                );
            }
            if st.refused > 0 {
                let _ = writeln!(
                    s,
                    "\n{} streams were refused or failed to open.",
                    st.refused
                );
            }
        }
        if let Some(big) = &self.big {
            let _ = writeln!(
                s,
                "\n### 1 MiB tool results, c=8 (2026-07-28 JSON)\n\n| target | req/s |\n|---|---|"
            );
            for (name, rps) in big {
                let _ = writeln!(s, "| {name} | {rps:.0} |");
            }
        }
        if let Some((direct, through)) = self.big_list {
            let _ = writeln!(
                s,
                "\n### tools/list of 1,000 tools, filtered per caller by the policy (sequential, p50)\n\n| target | p50 |\n|---|---|\n| direct (no proxy) | {} |\n| mcpgate, auth + rate limit + policy | {} |",
                us(direct),
                us(through)
            );
        }
        if let Some(w) = &self.workers {
            let _ = writeln!(
                s,
                "\n### Serving threads: the built-ins at c=32 (2026-07-28 JSON)\n\n| server.workers | req/s | CPU / request |\n|---|---|---|"
            );
            for (n, rps, cpu) in w {
                let _ = writeln!(s, "| {n} | {rps:.0} | {} |", us(*cpu));
            }
        }
        if let Some(a) = &self.allocations {
            let _ = writeln!(
                s,
                "\n### Heap allocations per request in the gateway (2026-07-28 JSON tools/call, c=1)\n\n| target | allocations | bytes |\n|---|---|---|"
            );
            for (name, count, bytes) in &a.per_request {
                let _ = writeln!(s, "| {name} | {count:.1} | {bytes:.0} |");
            }
            let _ = writeln!(
                s,
                "\n### Heap held per idle stream in the gateway (built-ins on the route)\n\n| stream | live heap per stream |\n|---|---|"
            );
            for (kind, bytes) in &a.per_stream {
                let _ = writeln!(s, "| {kind} | {:.1} KB |", bytes / 1024.0);
            }
        }
        let _ = writeln!(
            s,
            "\n### Start-up (spawn to listening)\n\n| config | time |\n|---|---|"
        );
        for (name, d) in &self.startup {
            let _ = writeln!(s, "| {name} | {:.0} ms |", d.as_secs_f64() * 1e3);
        }
        s
    }
}
