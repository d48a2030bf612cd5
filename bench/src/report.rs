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
        }
    }

    fn row(&self, scenario: &str, target: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.target == target)
    }

    /// The targets: (what, measured, target, met).
    fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        let full = "mcpgate, auth + rate limit + policy";
        if let Some(r) = self.row("legacy (session), JSON, c=32", full) {
            if let Some(cpu) = r.cpu_vs_floor {
                out.push((
                    "built-ins, legacy JSON, c=32: CPU per request vs floor".into(),
                    format!("{cpu:.2}×"),
                    "≤ 1.5×".into(),
                    cpu <= 1.5,
                ));
            }
            out.push((
                "built-ins, legacy JSON, c=32: throughput vs floor".into(),
                format!("{:.2}×", r.rps_vs_floor),
                "≥ 0.65×".into(),
                r.rps_vs_floor >= 0.65,
            ));
        }
        if let (Some(a), Some(b)) = (
            self.row("legacy (session), JSON, c=32", full),
            self.row(
                "legacy (session), JSON, c=32",
                "mcpgate, built-ins + 1 wasm stage",
            ),
        ) && let (Some(x), Some(y)) = (a.cpu_per_request, b.cpu_per_request)
        {
            let added = y.saturating_sub(x);
            out.push((
                "one WASM stage: added CPU per request".into(),
                us(added),
                "≤ 15 µs".into(),
                added <= Duration::from_micros(15),
            ));
        }
        let p50 = |name: &str| {
            self.sse
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| pct(d, 0.5))
        };
        if let (Some(direct), Some(gw)) = (p50("direct (no proxy)"), p50(full)) {
            let added = gw.saturating_sub(direct);
            out.push((
                "SSE events 1 ms apart: added delay (p50) vs direct".into(),
                format!("{:.3} ms", added.as_secs_f64() * 1e3),
                "≤ 0.2 ms".into(),
                added <= Duration::from_micros(200),
            ));
        }
        if let Some(r) = self.row("legacy (session), JSON, c=1", full) {
            out.push((
                "built-ins, legacy JSON, c=1: added p50 vs direct".into(),
                us(r.p50_added),
                "≤ 50 µs".into(),
                r.p50_added <= Duration::from_micros(50),
            ));
        }
        let mb = |b: u64| b as f64 / 1024.0 / 1024.0;
        out.push((
            "RSS idle".into(),
            format!("{:.1} MB", mb(self.rss_idle)),
            "≤ 20 MB".into(),
            mb(self.rss_idle) <= 20.0,
        ));
        out.push((
            format!("RSS with {} live legacy sessions", self.rss_sessions.0),
            format!("{:.1} MB", mb(self.rss_sessions.1)),
            "≤ 100 MB (10,000 sessions)".into(),
            mb(self.rss_sessions.1) <= 100.0,
        ));
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
