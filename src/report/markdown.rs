//! The Markdown "Phase N completion report": the plan's tables with measured columns and
//! verdicts, both backends side by side.

use std::fmt::Write;

use crate::bench::{BackendReport, BenchReport, ErrorClass, Measurement};
use crate::cost::CostBreakdown;
use crate::gate::GateResult;
use crate::output::{fmt_figure, fmt_seconds, render_table};
use crate::suites::{MetricId, RowSource, RowVerdict, Table, Tables};

/// What the Markdown (and HTML) report shows besides the bench data.
#[derive(Debug, Clone)]
pub struct MarkdownOptions {
    /// The phase in the title.
    pub phase: u32,
    /// The tables (for rows no backend measured).
    pub tables: Tables,
    /// The gate result of the phase, when evaluated.
    pub gate: Option<GateResult>,
    /// The cost projection, when computed.
    pub cost: Option<CostBreakdown>,
}

impl Default for MarkdownOptions {
    fn default() -> Self {
        MarkdownOptions {
            phase: 0,
            tables: Tables::builtin(),
            gate: None,
            cost: None,
        }
    }
}

fn verdict_for<'a>(b: &'a BackendReport, table: &str, metric: MetricId) -> Option<&'a RowVerdict> {
    b.verdicts
        .iter()
        .find(|v| v.table == table && v.row.metric == metric)
}

fn bound_text(b: Option<crate::suites::Bound>) -> String {
    b.map_or("-".into(), |b| b.to_string())
}

fn measured_cell(v: Option<&RowVerdict>) -> (String, String) {
    match v {
        None => ("not run".into(), "not measured".into()),
        Some(v) => {
            let mut verdict = v.verdict.to_string();
            if let Some(n) = &v.note {
                let _ = write!(verdict, " ({n})");
            }
            (fmt_figure(v.measured, v.row.metric.is_rate()), verdict)
        }
    }
}

fn table_section(out: &mut String, t: &Table, backends: &[&BackendReport]) {
    let _ = writeln!(out, "### {}\n", t.title);
    let _ = writeln!(out, "Source: {}.\n", t.citation);
    let applicable: Vec<&&BackendReport> = backends
        .iter()
        .filter(|b| t.backend == "*" || b.backend == t.backend)
        .collect();
    let mut headers: Vec<String> = vec![
        "Metric".into(),
        "Plan".into(),
        "Target".into(),
        "Acceptable".into(),
        "Statistic".into(),
    ];
    if applicable.is_empty() {
        headers.push("Measured".into());
        headers.push("Verdict".into());
    }
    for b in &applicable {
        headers.push(format!("Measured ({})", b.name));
        headers.push(format!("Verdict ({})", b.name));
    }
    let mut rows = Vec::new();
    for r in &t.rows {
        let mut row = vec![
            format!(
                "{}{}",
                r.metric.label(),
                if r.source == RowSource::Derived {
                    " *"
                } else {
                    ""
                }
            ),
            r.plan.clone(),
            bound_text(r.target),
            bound_text(r.acceptable),
            r.statistic.as_str().to_string(),
        ];
        if applicable.is_empty() {
            row.push("not run".into());
            row.push("not measured".into());
        }
        for b in &applicable {
            let (m, v) = measured_cell(verdict_for(b, &t.id, r.metric));
            row.push(m);
            row.push(v);
        }
        rows.push(row);
    }
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    out.push_str(&render_table(&h, &rows));
    out.push('\n');
}

/// A p99 cell: the p99 with at least `metrics::P99_MIN_SAMPLES` samples, otherwise what it
/// really is, the largest of n.
fn p99_cell(l: &crate::bench::Summary) -> String {
    if l.count >= crate::metrics::P99_MIN_SAMPLES {
        fmt_seconds(l.p99_seconds)
    } else {
        format!("max of {}: {}", l.count, fmt_seconds(l.max_seconds))
    }
}

/// Renders the Markdown report.
pub fn render(report: &BenchReport, opts: &MarkdownOptions) -> String {
    let mut out = String::new();
    let backends: Vec<&BackendReport> = report.backends.iter().collect();
    intro(&mut out, report, opts);
    side_by_side(&mut out, opts, &backends);
    acceptance_tables(&mut out, opts, &backends);
    distributions(&mut out, &backends);
    time_per_part(&mut out, &backends);
    errors_state_concurrency(&mut out, &backends);
    harness_overhead(&mut out, &backends);
    harness_memory(&mut out, &backends);
    phases_cost_and_gates(&mut out, opts, &backends);
    setup_problems(&mut out, &backends);
    out
}

/// The title, where and when the figures were measured, their origin, the run's budget and how verdicts read.
fn intro(out: &mut String, report: &BenchReport, opts: &MarkdownOptions) {
    let _ = writeln!(out, "# Phase {} completion report\n", opts.phase);
    let env = &report.environment;
    let _ = writeln!(
        out,
        "Measured {} to {} on host `{}` ({} CPUs, {}); Docker engine {}; harness {} at commit `{}`.\n",
        report.started_at.to_rfc3339(),
        report.finished_at.to_rfc3339(),
        env.host_name.as_deref().unwrap_or("?"),
        env.cpu_count,
        env.os,
        env.docker_engine_version
            .as_deref()
            .unwrap_or("not available"),
        env.harness_version,
        env.git_commit.as_deref().unwrap_or("unknown"),
    );
    if report.partial {
        let _ = writeln!(
            out,
            "> **PARTIAL REPORT**: {}. Figures cover only what was measured.\n",
            report.partial_reason.as_deref().unwrap_or("incomplete")
        );
    }
    out.push_str("Where the figures come from:\n\n");
    for b in &report.backends {
        let _ = writeln!(
            out,
            "- **{}** (`{}` backend): {}",
            b.name, b.backend, b.origin_statement
        );
    }
    if env.uses_emulator {
        out.push_str("\n> Cloud Run figures in this report come from an emulator (the SIMULATED twin or a standalone emulator, as stated above). They show the harness and the protocol over emulated APIs with the stated latency profile; they are not Google Cloud measurements.\n");
    }
    let o = &report.options;
    let _ = writeln!(
        out,
        "\nRun: {} iterations after {} warm-up runs (discarded), {} cold starts, mixed workload {} rounds of 7 operations in {} lanes at once (one session and file each, on one sandbox), 500 MB transfers {}, concurrency {}, {} browser starts (where a backend offers a browser).\n",
        o.iterations,
        o.warmup,
        o.cold_start_iterations,
        o.mixed_rounds,
        o.mixed_lanes,
        if o.include_large {
            format!("on ({} round trips)", o.large_transfer_iterations)
        } else {
            "off".into()
        },
        o.concurrency,
        o.browser_starts
    );
    for (label, b) in &o.budgets {
        let _ = writeln!(
            out,
            "{label}: {} iterations and {} cold starts after {} warm-up cold starts (a smaller \
             budget: its latency profile makes each cold start cost tens of seconds).\n",
            b.iterations, b.cold_start_iterations, b.cold_start_warmup
        );
    }
    out.push_str("Verdicts: a plan range \"a-b s\" is met when the measured figure is at most b (faster than a is better, and meets it); \"< x\" and \"> x\" are strict. Latency rows judge the statistic named in the row over the successful samples, and fail when any sample of the measurement failed. The success rate counts every operation the bench performed. A rate bound is met only with enough operations behind it (3/n rule at 95 %: > 99.5 % needs 600, > 99 % 300, < 0.1 % 3000), a p99 only with 100 samples; below that the verdict is \"insufficient samples\".\n\n");
}

/// "Side by side": every metric with the plan, figure and verdict of both backends.
fn side_by_side(out: &mut String, opts: &MarkdownOptions, backends: &[&BackendReport]) {
    out.push_str("## Side by side\n\n");
    let docker_t = opts.tables.tables.iter().find(|t| t.backend == "docker");
    let cloud_t = opts.tables.tables.iter().find(|t| t.backend == "cloudrun");
    let mut rows = Vec::new();
    let find = |name: &str| backends.iter().find(|b| b.backend == name).copied();
    for metric in MetricId::ALL {
        let drow = docker_t.and_then(|t| t.rows.iter().find(|r| r.metric == metric));
        let crow = cloud_t.and_then(|t| t.rows.iter().find(|r| r.metric == metric));
        if drow.is_none() && crow.is_none() {
            continue;
        }
        let cell = |t: Option<&Table>, b: Option<&BackendReport>| {
            let v = match (t, b) {
                (Some(t), Some(b)) => verdict_for(b, &t.id, metric),
                _ => None,
            };
            measured_cell(v)
        };
        // A metric one table has no row for gets no cell there (e.g. the browser rows, which
        // only the Docker baseline has).
        let dash = || ("-".to_string(), "-".to_string());
        let (dm, dv) = drow.map_or_else(dash, |_| cell(docker_t, find("docker")));
        let (cm, cv) = crow.map_or_else(dash, |_| cell(cloud_t, find("cloudrun")));
        rows.push(vec![
            metric.label().to_string(),
            drow.map_or("-".into(), |r| r.plan.clone()),
            dm,
            dv,
            crow.map_or("-".into(), |r| r.plan.clone()),
            cm,
            cv,
        ]);
    }
    out.push_str(&render_table(
        &[
            "Metric",
            "Docker plan",
            "Docker measured",
            "Docker verdict",
            "Cloud Run target / acceptable",
            "Cloud Run measured",
            "Cloud Run verdict",
        ],
        &rows,
    ));
    out.push('\n');
}

/// "Acceptance tables": one table per backend table, then the rows the harness set itself.
fn acceptance_tables(out: &mut String, opts: &MarkdownOptions, backends: &[&BackendReport]) {
    out.push_str("## Acceptance tables\n\n");
    for t in &opts.tables.tables {
        table_section(out, t, backends);
    }
    let derived: Vec<_> = opts
        .tables
        .tables
        .iter()
        .flat_map(|t| t.rows.iter().map(move |r| (t, r)))
        .filter(|(_, r)| r.source == RowSource::Derived)
        .collect();
    if !derived.is_empty() {
        out.push_str("Rows marked * have no figure in the plan; the harness set them:\n\n");
        for (t, r) in derived {
            let _ = writeln!(
                out,
                "- {} / {}: {}",
                t.title,
                r.metric.label(),
                r.why.as_deref().unwrap_or("(no reason given)")
            );
        }
        out.push('\n');
    }
}

/// "Distributions": the latency percentiles and errors of every measurement.
fn distributions(out: &mut String, backends: &[&BackendReport]) {
    out.push_str("## Distributions\n\n");
    let mut rows = Vec::new();
    for b in backends {
        for m in Measurement::ALL {
            let Some(s) = b.measurements.get(&m) else {
                continue;
            };
            let l = s.latency.as_ref();
            let f = |v: Option<f64>| v.map_or("-".into(), fmt_seconds);
            let errors = if s.errors.is_empty() {
                "-".to_string()
            } else {
                s.errors
                    .iter()
                    .map(|(c, n)| format!("{}: {n}", c.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            rows.push(vec![
                b.name.clone(),
                m.as_str().to_string(),
                format!("{}/{}", s.succeeded, s.attempted),
                errors,
                f(l.map(|l| l.p50_seconds)),
                f(l.map(|l| l.p90_seconds)),
                f(l.map(|l| l.p95_seconds)),
                l.map_or("-".into(), p99_cell),
                f(l.map(|l| l.max_seconds)),
                s.throughput_p50_mib_per_second
                    .map_or("-".into(), |t| format!("{t:.1} MiB/s")),
            ]);
        }
    }
    out.push_str(&render_table(
        &[
            "Backend",
            "Measurement",
            "ok/attempted",
            "errors",
            "p50",
            "p90",
            "p95",
            "p99",
            "max",
            "throughput (p50)",
        ],
        &rows,
    ));
    out.push('\n');
}

/// "Time per part": the wall time of each part of the bench.
fn time_per_part(out: &mut String, backends: &[&BackendReport]) {
    out.push_str("## Time per part\n\n");
    let mut rows = Vec::new();
    for b in backends {
        for p in &b.parts {
            rows.push(vec![
                b.name.clone(),
                p.part.clone(),
                format!("{:.1} s", p.seconds),
            ]);
        }
    }
    out.push_str(&render_table(&["Backend", "Part", "wall time"], &rows));
    out.push('\n');
}

/// "Errors, state and concurrency": success rates, error classes, state checks, concurrency.
fn errors_state_concurrency(out: &mut String, backends: &[&BackendReport]) {
    out.push_str("## Errors, state and concurrency\n\n");
    let mut rows = Vec::new();
    for b in backends {
        let errors = if b.rates.errors_by_class.is_empty() {
            "none".to_string()
        } else {
            b.rates
                .errors_by_class
                .iter()
                .map(|(c, n)| format!("{}: {n}", c.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(vec![
            b.name.clone(),
            format!("{}/{}", b.rates.succeeded, b.rates.operations),
            fmt_figure(b.rates.overall_success_percent, true),
            errors,
            format!("{} losses in {} checks", b.state.losses, b.state.checks),
            b.concurrency.as_ref().map_or("-".into(), |c| {
                format!(
                    "C={}: {:.2} commands/s, p50 {}",
                    c.sessions,
                    c.throughput_commands_per_second,
                    c.latency
                        .as_ref()
                        .map_or("-".into(), |l| fmt_seconds(l.p50_seconds))
                )
            }),
            b.exec_latency.as_ref().map_or("-".into(), |l| {
                format!("p50 {} / p99 {}", fmt_seconds(l.p50_seconds), p99_cell(l))
            }),
        ]);
    }
    out.push_str(&render_table(
        &[
            "Backend",
            "ok/operations",
            "overall success",
            "errors by class",
            "state",
            "concurrency",
            "all exec latency",
        ],
        &rows,
    ));
    out.push('\n');
    let wrong = ErrorClass::WrongResult.as_str();
    let _ = writeln!(
        out,
        "Error class `{wrong}` means the operation returned but its result was wrong (output, sha256, or state).\n"
    );
}

/// "Harness overhead": the harness against the raw baselines (only where one was measured).
fn harness_overhead(out: &mut String, backends: &[&BackendReport]) {
    let raws: Vec<_> = backends
        .iter()
        .filter_map(|b| b.raw_baseline.as_ref().map(|r| (b, r)))
        .collect();
    if !raws.is_empty() {
        out.push_str("## Harness overhead\n\n");
        let rows: Vec<Vec<String>> = raws
            .iter()
            .map(|(b, r)| {
                vec![
                    b.name.clone(),
                    r.description.clone(),
                    r.latency
                        .as_ref()
                        .map_or("-".into(), |l| fmt_seconds(l.p50_seconds)),
                    r.harness_warm_exec_p50_seconds
                        .map_or("-".into(), fmt_seconds),
                    r.overhead_p50_seconds.map_or("-".into(), fmt_seconds),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &[
                "Backend",
                "Raw baseline",
                "raw p50",
                "harness warm exec p50",
                "overhead p50",
            ],
            &rows,
        ));
        out.push_str(
            "\nOverhead is the harness's warm exec (shell wrapper, cwd/env capture) minus the raw \
             baseline. A negative overhead means the harness beats a bare engine exec: the Docker \
             backend sends commands to its in-sandbox agent over one open exec stream instead of \
             starting an engine exec per command.\n",
        );
        out.push('\n');
        let transfers: Vec<Vec<String>> = raws
            .iter()
            .filter_map(|(b, r)| r.transfer.as_ref().map(|t| (b, t)))
            .map(|(b, t)| {
                let p50 = |m: Measurement| {
                    b.measurements
                        .get(&m)
                        .and_then(|s| s.latency.as_ref())
                        .map_or("-".into(), |l| fmt_seconds(l.p50_seconds))
                };
                let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
                vec![
                    b.name.clone(),
                    t.description.clone(),
                    t.raw_upload_p50_seconds.map_or("-".into(), fmt_seconds),
                    p50(Measurement::Upload500Mb),
                    ratio(t.upload_ratio),
                    t.raw_download_p50_seconds.map_or("-".into(), fmt_seconds),
                    p50(Measurement::Download500Mb),
                    ratio(t.download_ratio),
                ]
            })
            .collect();
        if !transfers.is_empty() {
            out.push_str("### 500 MB transfers against the bare engine path\n\n");
            out.push_str(&render_table(
                &[
                    "Backend",
                    "Bare path",
                    "bare up p50",
                    "harness up p50",
                    "up ratio",
                    "bare down p50",
                    "harness down p50",
                    "down ratio",
                ],
                &transfers,
            ));
            out.push_str(
                "\nRatio is harness p50 over bare p50. The harness upload writes a temp file and \
                 renames it into place, and the bench hashes every byte of the harness transfers \
                 inside the timed section; the bare path only moves the bytes.\n\n",
            );
        }
    }
}

/// "Harness memory": the process RSS during the 500 MB transfers (only where sampled).
fn harness_memory(out: &mut String, backends: &[&BackendReport]) {
    let memory: Vec<Vec<String>> = backends
        .iter()
        .filter_map(|b| {
            b.large_transfer_rss.map(|w| {
                vec![
                    b.name.clone(),
                    format!("{:.1} MiB", w.start_mib),
                    format!("{:.1} MiB", w.peak_mib),
                    format!("{:.1} MiB", w.growth_mib()),
                ]
            })
        })
        .collect();
    if !memory.is_empty() {
        out.push_str("## Harness memory\n\n");
        out.push_str(&render_table(
            &[
                "Backend",
                "RSS when the 500 MB transfers start",
                "peak RSS during them",
                "growth",
            ],
            &memory,
        ));
        out.push_str(
            "\nThe whole harness process, sampled every 10 ms, with the embedded emulator when \
             Cloud Run runs on it. The start figure is what earlier phases left allocated (the \
             allocator keeps freed memory); the growth is what streaming 500 MB cost. The \
             harness's own target is under 64 MiB.\n\n",
        );
    }
}

/// The phase breakdowns, the Cloud Run cost projection and the phase gates, where present.
fn phases_cost_and_gates(out: &mut String, opts: &MarkdownOptions, backends: &[&BackendReport]) {
    out.push_str(&phases_section(backends));
    if let Some(c) = &opts.cost {
        out.push_str("## Cost projection (Cloud Run)\n\n");
        out.push_str(&c.render());
        out.push('\n');
    }
    if let Some(g) = &opts.gate {
        let _ = writeln!(out, "## Gates of phase {}\n", g.phase);
        out.push_str(&g.render());
        out.push('\n');
    }
}

/// "Set-up problems": what could not be set up per backend (only when something failed).
fn setup_problems(out: &mut String, backends: &[&BackendReport]) {
    let setup: Vec<String> = backends
        .iter()
        .flat_map(|b| {
            b.setup_errors
                .iter()
                .map(move |e| format!("- {}: {e}", b.name))
        })
        .collect();
    if !setup.is_empty() {
        out.push_str("## Set-up problems\n\n");
        out.push_str(&setup.join("\n"));
        out.push('\n');
    }
}

/// The per-phase breakdowns of every backend (or why a backend has none), as text.
pub fn phases_section(backends: &[&BackendReport]) -> String {
    if backends.iter().all(|b| b.phases.is_none()) {
        return String::new();
    }
    let mut out = String::from("## Where the time goes\n\n");
    for b in backends {
        let _ = writeln!(out, "### {} ({})\n", b.name, b.origin_statement);
        match &b.phases {
            Some(p) => out.push_str(&crate::bench::phases::render(p)),
            None => out.push_str(
                "No per-phase breakdown: this backend has no phase probe (a Docker command is one \
                 round trip on an open agent stream; its raw baseline above shows the engine's part).\n",
            ),
        }
        out.push('\n');
    }
    out
}
