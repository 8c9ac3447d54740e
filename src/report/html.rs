//! A self-contained HTML report: no scripts, no network; plots are inline SVG generated here.

use std::fmt::Write;

use super::markdown::MarkdownOptions;
use crate::bench::{BenchReport, Measurement};
use crate::output::{fmt_figure, fmt_seconds};

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
const W: f64 = 640.0;
const H: f64 = 260.0;
const ML: f64 = 60.0;
const MR: f64 = 20.0;
const MT: f64 = 20.0;
const MB: f64 = 40.0;
/// Most points drawn per CDF line (samples are thinned evenly beyond it).
const MAX_POINTS: usize = 400;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// An SVG CDF of latencies (seconds), one line per series.
pub fn cdf_svg(title: &str, series: &[(String, Vec<f64>)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>{}</title>"#,
        escape(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let x = ML + f * pw;
        let y = MT + ph - f * ph;
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
            MT + ph
        );
        let _ = write!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            H - MB + 15.0,
            escape(&fmt_seconds(f * max))
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}%</text>"##,
            ML - 5.0,
            y + 4.0,
            (f * 100.0) as u32
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">latency</text>"##,
        ML + pw / 2.0,
        H - 5.0
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            continue;
        }
        let step = n.div_ceil(MAX_POINTS).max(1);
        let mut pts = String::new();
        let mut k = 0;
        while k < n {
            let x = ML + v[k] / max * pw;
            let y = MT + ph - (k + 1) as f64 / n as f64 * ph;
            let _ = write!(pts, "{x:.1},{y:.1} ");
            k += step;
        }
        let x = ML + v[n - 1] / max * pw;
        let _ = write!(pts, "{x:.1},{MT:.1}");
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>"#
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" fill="{color}">{} (n={n})</text>"#,
            ML + 10.0,
            MT + 15.0 + 15.0 * i as f64,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// An SVG horizontal bar chart of labelled values.
pub fn bars_svg(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let row = 22.0;
    let h = MT + row * bars.len() as f64 + 10.0;
    let label_w = 220.0;
    let pw = W - label_w - 90.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img"><title>{}</title>"#,
        escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = MT + i as f64 * row;
        let w = (v / max * pw).max(1.0);
        let color = COLORS[i % COLORS.len()];
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            label_w - 5.0,
            y + 14.0,
            escape(label)
        );
        let _ = write!(
            s,
            r#"<rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/>"#,
            row - 6.0
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{v:.2} {}</text>"#,
            label_w + w + 5.0,
            y + 14.0,
            escape(unit)
        );
    }
    s.push_str("</svg>");
    s
}

/// Renders the HTML report.
pub fn render(report: &BenchReport, opts: &MarkdownOptions) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Phase {} completion report</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}.fails{{color:#b00;font-weight:bold}}.meets{{color:#070}}.warn{{background:#fff3cd;padding:.6em;border:1px solid #e0c060}}</style></head><body>",
        opts.phase
    );
    let _ = write!(h, "<h1>Phase {} completion report</h1>", opts.phase);
    let env = &report.environment;
    let _ = write!(
        h,
        "<p>Measured {} on host <code>{}</code> ({} CPUs), Docker engine {}, commit <code>{}</code>.</p>",
        escape(&report.started_at.to_rfc3339()),
        escape(env.host_name.as_deref().unwrap_or("?")),
        env.cpu_count,
        escape(
            env.docker_engine_version
                .as_deref()
                .unwrap_or("not available")
        ),
        escape(env.git_commit.as_deref().unwrap_or("unknown"))
    );
    if report.partial {
        let _ = write!(
            h,
            "<p class=\"warn\"><b>PARTIAL REPORT</b>: {}</p>",
            escape(report.partial_reason.as_deref().unwrap_or("incomplete"))
        );
    }
    h.push_str("<ul>");
    for b in &report.backends {
        let _ = write!(
            h,
            "<li><b>{}</b>: {}</li>",
            escape(&b.name),
            escape(&b.origin_statement)
        );
    }
    h.push_str("</ul>");
    if env.uses_emulator {
        h.push_str("<p class=\"warn\">Cloud Run figures in this report come from an emulator (the SIMULATED twin or a standalone emulator, as stated above); they are not Google Cloud measurements.</p>");
    }
    verdicts_table(&mut h, report);
    cdf_section(&mut h, report);
    comparison_charts(&mut h, report);
    phases_section(&mut h, report);
    if let Some(c) = &opts.cost {
        let _ = write!(
            h,
            "<h2>Cost projection</h2><pre>{}</pre>",
            escape(&c.render())
        );
    }
    if let Some(g) = &opts.gate {
        let _ = write!(
            h,
            "<h2>Gates of phase {}</h2><pre>{}</pre>",
            g.phase,
            escape(&g.render())
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// Writes the verdicts table: one row per verdict of every backend.
fn verdicts_table(h: &mut String, report: &BenchReport) {
    h.push_str("<h2>Verdicts</h2><table><tr><th>Backend</th><th>Table</th><th>Metric</th><th>Plan</th><th>Measured</th><th>Verdict</th></tr>");
    for b in &report.backends {
        for v in &b.verdicts {
            let class = match v.verdict {
                crate::suites::Verdict::Fails => "fails",
                crate::suites::Verdict::MeetsTarget => "meets",
                _ => "",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                escape(&b.name),
                escape(&v.table),
                escape(v.row.metric.label()),
                escape(&v.row.plan),
                escape(&fmt_figure(v.measured, v.row.metric.is_rate())),
                escape(v.verdict.as_str())
            );
        }
    }
    h.push_str("</table>");
}

/// Writes one CDF chart per measurement that has successful samples.
fn cdf_section(h: &mut String, report: &BenchReport) {
    h.push_str("<h2>Latency distributions (CDF)</h2>");
    for m in Measurement::ALL {
        if m == Measurement::Setup {
            continue;
        }
        let series: Vec<(String, Vec<f64>)> = report
            .backends
            .iter()
            .map(|b| {
                let v: Vec<f64> = b
                    .samples
                    .iter()
                    .filter(|s| s.measurement == m && s.ok)
                    .map(|s| s.duration_us as f64 / 1e6)
                    .collect();
                (b.name.clone(), v)
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<h3>{}</h3>{}",
            escape(m.as_str()),
            cdf_svg(m.as_str(), &series)
        );
    }
}

/// Writes the transfer-throughput and backend-against-backend p50 bar charts.
fn comparison_charts(h: &mut String, report: &BenchReport) {
    let mut tput = Vec::new();
    for b in &report.backends {
        for m in [
            Measurement::Upload10Mb,
            Measurement::Download10Mb,
            Measurement::Upload500Mb,
            Measurement::Download500Mb,
        ] {
            if let Some(t) = b
                .measurements
                .get(&m)
                .and_then(|s| s.throughput_p50_mib_per_second)
            {
                tput.push((format!("{} {}", b.name, m.as_str()), t));
            }
        }
    }
    if !tput.is_empty() {
        let _ = write!(
            h,
            "<h2>Transfer throughput (p50)</h2>{}",
            bars_svg("transfer throughput", "MiB/s", &tput)
        );
    }

    let mut side = Vec::new();
    for m in [
        Measurement::ColdStart,
        Measurement::WarmExec,
        Measurement::BackgroundStart,
        Measurement::Concurrent,
    ] {
        for b in &report.backends {
            if let Some(l) = b.measurements.get(&m).and_then(|s| s.latency.as_ref()) {
                side.push((format!("{} {}", m.as_str(), b.name), l.p50_seconds));
            }
        }
    }
    if !side.is_empty() {
        let _ = write!(
            h,
            "<h2>Docker against Cloud Run (p50 latency)</h2>{}",
            bars_svg("p50 latency by backend", "s", &side)
        );
    }
}

/// Writes the "where the time goes" phase charts and table, when any backend has phases.
fn phases_section(h: &mut String, report: &BenchReport) {
    let backends: Vec<&crate::bench::BackendReport> = report.backends.iter().collect();
    let phases = super::markdown::phases_section(&backends);
    if !phases.is_empty() {
        let _ = write!(h, "<h2>Where the time goes</h2>");
        for b in &report.backends {
            let Some(p) = &b.phases else { continue };
            for t in [&p.cold_start, &p.warm_command].into_iter().flatten() {
                let bars: Vec<(String, f64)> = t
                    .phases
                    .iter()
                    .map(|ph| (ph.name.clone(), ph.seconds.max(0.0)))
                    .collect();
                let _ = write!(
                    h,
                    "{}",
                    bars_svg(&format!("{}: {}", b.name, t.what), "s", &bars)
                );
            }
        }
        let _ = write!(h, "<pre>{}</pre>", escape(&phases));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_escaped_and_self_contained() {
        let svg = cdf_svg("a<b", &[("x&y".into(), vec![0.1, 0.2, 0.3])]);
        assert!(svg.contains("a&lt;b") && svg.contains("x&amp;y (n=3)"));
        assert!(svg.contains("<polyline"));
        let bars = bars_svg("t", "MiB/s", &[("docker upload".into(), 12.5)]);
        assert!(bars.contains("12.50 MiB/s"));
    }
}
