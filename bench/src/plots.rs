//! BENCHMARKS.md's pictures, drawn from a run's report as SVG: throughput and CPU per request
//! per target (c=32), latency CDFs at c=1, RSS against open streams.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::report::Report;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Writes every picture the report has data for into `dir`; returns the files written.
pub fn draw(report: &Report, dir: &Path) -> Vec<String> {
    let _ = std::fs::create_dir_all(dir);
    let mut out = Vec::new();
    let mut keep = |name: &str, drawn: Drawn| match drawn {
        Ok(()) => out.push(name.to_string()),
        Err(e) => eprintln!("plot {name}: {e}"),
    };
    let scenario = "legacy (session), JSON, c=32";
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.scenario == scenario)
        .collect();
    if !rows.is_empty() {
        let rps: Vec<(String, f64)> = rows.iter().map(|r| (r.target.clone(), r.rps)).collect();
        keep(
            "throughput-c32.svg",
            bars(
                &dir.join("throughput-c32.svg"),
                "Throughput, legacy JSON, c=32 (req/s)",
                &rps,
            ),
        );
        let cpu: Vec<(String, f64)> = rows
            .iter()
            .filter_map(|r| {
                r.cpu_per_request
                    .map(|c| (r.target.clone(), c.as_secs_f64() * 1e6))
            })
            .collect();
        keep(
            "cpu-per-request-c32.svg",
            bars(
                &dir.join("cpu-per-request-c32.svg"),
                "CPU per request, legacy JSON, c=32 (µs)",
                &cpu,
            ),
        );
    }
    if !report.latency_c1.is_empty() {
        keep(
            "latency-cdf-c1.svg",
            cdf(&dir.join("latency-cdf-c1.svg"), &report.latency_c1),
        );
    }
    if let Some(st) = &report.streams
        && !st.rss.is_empty()
    {
        keep(
            "rss-streams.svg",
            rss_curve(&dir.join("rss-streams.svg"), &st.rss),
        );
    }
    out
}

/// Horizontal bars, one per target.
fn bars(path: &Path, title: &str, values: &[(String, f64)]) -> Drawn {
    let height = 60 + 34 * values.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = values.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..max, 0i32..n)?;
    let names: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(values.len() + 1)
        .y_label_formatter(&|i| {
            usize::try_from(n - 1 - *i)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_default()
        })
        .draw()?;
    for (i, (_, v)) in values.iter().enumerate() {
        let y = n - 1 - i as i32;
        let color = PALETTE[i % PALETTE.len()];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y), (*v, y + 1)],
            color.mix(0.8).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.0}"),
            (*v, y),
            ("sans-serif", 13),
        )))?;
    }
    root.present()?;
    Ok(())
}

/// Cumulative distributions of sequential request latencies, one line per target.
fn cdf(path: &Path, series: &[(String, Vec<Duration>)]) -> Drawn {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let p99 = series
        .iter()
        .filter_map(|(_, d)| d.get(d.len().saturating_sub(1) * 99 / 100))
        .max()
        .map_or(1.0, |d| d.as_secs_f64() * 1e6)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency at c=1 (2026-07-28 tools/call, sequential): share of requests done within",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..p99, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("µs")
        .y_desc("share of requests")
        .draw()?;
    for (i, (name, d)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let n = d.len().max(1) as f64;
        let points = d
            .iter()
            .enumerate()
            .map(|(k, v)| (v.as_secs_f64() * 1e6, (k + 1) as f64 / n))
            .filter(|(x, _)| *x <= p99);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The gateway's RSS against the server streams it holds open, one line per kind.
fn rss_curve(path: &Path, series: &[(String, Vec<(usize, u64)>)]) -> Drawn {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_n = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_mb = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .max()
        .unwrap_or(1) as f64
        / 1048576.0
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gateway RSS against idle server streams open",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_n, 0f64..max_mb)?;
    chart
        .configure_mesh()
        .x_desc("streams open")
        .y_desc("RSS (MB)")
        .draw()?;
    for (i, (name, curve)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|(n, rss)| (*n as f64, *rss as f64 / 1048576.0))
            .collect();
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
