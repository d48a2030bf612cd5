//! Processes under test and the load generator: spawning them on loopback, their CPU time and
//! memory from /proc, and `wrk` runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Re-executes this program inside a new network namespace (loopback only, so nothing else on
/// the machine's network can disturb it), once. Runs in the current namespace where
/// `unshare -n` is refused (not root, no user namespaces).
pub fn enter_network_namespace() {
    const FLAG: &str = "MCPGATE_BENCH_NETNS";
    if std::env::var_os(FLAG).is_some() {
        return;
    }
    let works = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("note: `unshare -n` is not available here; running in this network namespace");
        return;
    }
    let status = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env(FLAG, "1")
        .status()
        .expect("unshare");
    std::process::exit(status.code().unwrap_or(1));
}

/// Whether this run is in its own network namespace.
pub fn in_own_netns() -> bool {
    std::env::var_os("MCPGATE_BENCH_NETNS").is_some()
}

/// The directory holding this program, where cargo put the other release binaries too.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo build --release -p mcpgate -p mcpgate-bench`",
        p.display()
    );
    p
}

pub use mcpgate_e2e::Proc;

/// Resident set size in bytes.
pub fn rss(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks / clock_ticks())
}

pub use mcpgate_e2e::start_ported;

/// Starts the release `mcpgate` with this config on a free port; returns it, its base URL and
/// how long it took until it listened.
pub fn start_mcpgate(config: &Path, env: &[(&str, &str)]) -> (Proc, String, Duration) {
    let started = Instant::now();
    let (p, base) =
        mcpgate_e2e::start_gateway_from(&bin("mcpgate"), config, &[("RUST_LOG", "warn")], env);
    (p, base, started.elapsed())
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub requests: u64,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

fn duration(text: &str) -> Option<Duration> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Load {
    let mut load = Load::default();
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50 = duration(v.trim()).unwrap_or_default();
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99 = duration(v.trim()).unwrap_or_default();
        } else if line.contains(" requests in ") {
            load.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            load.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    load
}

/// Runs wrk against `url` with the Lua script `script` at this concurrency.
pub fn wrk(url: &str, script: &Path, connections: usize, duration: Duration) -> Load {
    let threads = connections.clamp(1, 2).to_string();
    let out = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string()])
        .args([
            "-d",
            &format!("{}s", duration.as_secs_f64().max(1.0).round()),
        ])
        .args(["--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is not installed (scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 2s test @ http://127.0.0.1:1/x\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.20ms  300.00us   9.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    1.50ms\n     99%    3.25ms\n  41234 requests in 2.00s, 9.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  20617.00\nTransfer/sec:      4.50MB\n";
        let l = parse_wrk(out);
        assert_eq!(l.requests, 41234);
        assert_eq!(l.rps, 20617.0);
        assert_eq!(l.p50, Duration::from_micros(812));
        assert_eq!(l.p99, Duration::from_micros(3250));
        assert_eq!(l.errors, 3);
    }
}
