//! `mcpgate-bench`: measures mcpgate against the floor (a plain hyper proxy) and against no
//! proxy at all, on this machine, in one run. See BENCHMARKS.md.
//!
//!   mcpgate-bench [--rounds N] [--duration SECS] [--quick] [--out FILE] [--plots DIR]
//!                 [--only federation|streams|big|allocations]
//!
//! Every process runs on 127.0.0.1 (in a fresh network namespace when `unshare -n` works);
//! load comes from `wrk`. Configurations are measured alternately within each round, and the
//! table reports per-round ratios to the floor, medians over rounds, and CPU time per request
//! from each proxy's own accounting (/proc/<pid>/stat).

mod plots;
mod report;
mod scenarios;

use mcpgate_bench::{client, procs};

use std::path::PathBuf;
use std::time::Duration;

pub struct Options {
    pub rounds: usize,
    pub duration: Duration,
    pub quick: bool,
    pub out: Option<PathBuf>,
    /// `--plots DIR`: where the pictures go (SVG).
    pub plots: Option<PathBuf>,
    /// `--only federation|streams|big|allocations`: only that one-off measurement (the
    /// federated fan-out; open server streams; 1 MiB results and a 1,000-tool list; heap
    /// allocations per request).
    pub only: Option<String>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    Options {
        rounds: value("--rounds")
            .map(|v| v.parse().expect("--rounds takes a number"))
            .unwrap_or(if quick { 1 } else { 3 }),
        duration: Duration::from_secs_f64(
            value("--duration")
                .map(|v| v.parse().expect("--duration takes seconds"))
                .unwrap_or(if quick { 1.0 } else { 4.0 }),
        ),
        quick,
        out: value("--out").map(PathBuf::from),
        plots: value("--plots").map(PathBuf::from),
        only: value("--only"),
    }
}

fn main() {
    procs::enter_network_namespace();
    let opts = options();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = scenarios::run(&opts, &rt);
    let mut text = report.markdown();
    if let Some(dir) = &opts.plots {
        let drawn = plots::draw(&report, dir);
        text.push_str("\n### Pictures\n\n");
        for file in drawn {
            text.push_str(&format!("![{file}]({}/{file})\n\n", dir.display()));
        }
    }
    println!("{text}");
    if let Some(out) = &opts.out {
        std::fs::write(out, &text).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        eprintln!("written to {}", out.display());
    }
}
