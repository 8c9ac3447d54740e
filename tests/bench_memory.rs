//! The bench engine end to end against the in-memory test double: reports, events, metrics,
//! failure counting, cancellation and gates.

use std::sync::Arc;
use std::time::Duration;

use sandbox_harness::acceptance;
use sandbox_harness::bench::memory::{MemoryBackend, MemoryConfig};
use sandbox_harness::bench::{self, BenchOptions, ErrorClass, EventWriter, Measurement};
use sandbox_harness::gate::{self, GateInputs};
use sandbox_harness::metrics::{self, MetricsOptions};
use sandbox_harness::protocol::{ErrorKind, SandboxBackend};
use sandbox_harness::report::{self, MarkdownOptions};
use sandbox_harness::suites::{self, PhaseFile, Tables};

fn backend(cfg: MemoryConfig) -> Vec<(String, Arc<dyn SandboxBackend>)> {
    vec![(
        "memory".to_string(),
        Arc::new(MemoryBackend::new(cfg)) as Arc<dyn SandboxBackend>,
    )]
}

fn small_opts() -> BenchOptions {
    BenchOptions {
        iterations: 6,
        // 350 mixed operations: enough for a "> 99 %" claim (300), quick on the double.
        mixed_rounds: 50,
        warmup: 1,
        cold_start_iterations: 2,
        concurrency: 2,
        include_large: false,
        progress: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn reports_are_written_and_event_metrics_agree_with_the_bench() {
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("events.jsonl");
    let writer = Arc::new(EventWriter::create(&events_path).unwrap());
    let opts = BenchOptions {
        events: Some(writer.clone()),
        ..small_opts()
    };
    let cfg = MemoryConfig {
        latency: Duration::from_millis(1),
        ..Default::default()
    };
    let mut r = bench::run(backend(cfg), opts).await;
    acceptance::judge(&mut r, &Tables::builtin());
    writer.finish().unwrap();
    assert!(!r.partial, "{:?}", r.partial_reason);
    let b = r.backend("memory").unwrap();
    assert_eq!(b.rates.mixed_success_percent, Some(100.0));
    assert_eq!(b.state.checks, 6);
    assert_eq!(b.state.losses, 0);
    assert_eq!(b.measurements[&Measurement::WarmExec].succeeded, 6);
    assert_eq!(b.measurements[&Measurement::Upload10Mb].succeeded, 6);
    assert_eq!(b.measurements[&Measurement::Download10Mb].succeeded, 6);
    assert_eq!(b.measurements[&Measurement::ColdStart].attempted, 2);
    assert!(!b.measurements.contains_key(&Measurement::Upload500Mb));
    let c = b.concurrency.as_ref().unwrap();
    assert_eq!((c.sessions, c.commands, c.succeeded), (2, 12, 12));
    assert!(c.throughput_commands_per_second > 0.0);
    assert_eq!(b.samples.len() as u64, b.rates.operations);

    // The event log gives the same figures.
    let m = metrics::from_events(&events_path, &MetricsOptions::default()).unwrap();
    let mb = m.backend("memory").unwrap();
    assert_eq!(mb.operations, b.rates.operations);
    assert_eq!(mb.succeeded, b.rates.succeeded);
    assert_eq!(mb.success_percent, b.rates.overall_success_percent);
    let (ev, be) = (
        mb.exec_latency.as_ref().unwrap(),
        b.exec_latency.as_ref().unwrap(),
    );
    assert_eq!(ev.count, be.count);
    assert_eq!(ev.p50_seconds, be.p50_seconds);
    assert_eq!(ev.p99_seconds, be.p99_seconds);
    assert_eq!(mb.state_checks, b.state.checks);
    assert_eq!(mb.state_losses, b.state.losses);

    // Reports.
    let out = dir.path().join("reports");
    let w = report::write_all(&r, &out, &MarkdownOptions::default()).unwrap();
    for p in [&w.json, &w.latest_json, &w.markdown, &w.html] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    // Floats may differ in the last bit through JSON; integers and structure must not.
    let back = report::load(&w.latest_json).unwrap();
    assert_eq!(back.backends[0].samples, r.backends[0].samples);
    assert_eq!(back.backends[0].rates.operations, b.rates.operations);
    assert_eq!(back.backends[0].verdicts.len(), b.verdicts.len());
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    assert!(md.starts_with("# Phase 0 completion report"));
    assert!(
        md.contains("### DockerSandbox baseline")
            && md.contains("### CloudRunJobsSandbox target / acceptable")
    );
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
}

#[tokio::test]
async fn failures_and_state_losses_are_counted_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("events.jsonl");
    let writer = Arc::new(EventWriter::create(&events_path).unwrap());
    let cfg = MemoryConfig {
        fail_every: Some((9, ErrorKind::Network)),
        lose_state_every: Some(4),
        ..Default::default()
    };
    let opts = BenchOptions {
        events: Some(writer.clone()),
        ..small_opts()
    };
    let r = bench::run(backend(cfg), opts).await;
    writer.finish().unwrap();
    let b = r.backend("memory").unwrap();
    let network = b
        .rates
        .errors_by_class
        .get(&ErrorClass::Network)
        .copied()
        .unwrap_or(0);
    assert!(network > 0, "{:?}", b.rates.errors_by_class);
    let failed: u64 = b.rates.errors_by_class.values().sum();
    assert_eq!(b.rates.operations, b.rates.succeeded + failed);
    assert!(b.state.losses > 0);
    assert!(b.rates.error_percent_by_class[&ErrorClass::Network] > 0.1);
    let m = metrics::from_events(&events_path, &MetricsOptions::default()).unwrap();
    let mb = m.backend("memory").unwrap();
    assert_eq!(
        mb.errors_by_class.get("network").copied().unwrap_or(0),
        network
    );
    assert_eq!(mb.state_losses, b.state.losses);
    assert!(mb.alerting());
}

#[tokio::test]
async fn cancellation_returns_what_was_measured_marked_partial() {
    let cfg = MemoryConfig {
        latency: Duration::from_millis(20),
        ..Default::default()
    };
    let opts = BenchOptions {
        iterations: 500,
        ..small_opts()
    };
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cancel.cancel();
    });
    let r = tokio::time::timeout(Duration::from_secs(60), bench::run(backend(cfg), opts))
        .await
        .expect("cancellation stops the run");
    assert!(r.partial);
    assert!(r.partial_reason.as_deref().unwrap().contains("cancelled"));
    let b = r.backend("memory").unwrap();
    assert!(b.partial);
    assert!(!b.samples.is_empty());
}

const GATE_TABLES: &str = r#"
[[table]]
id = "memory"
backend = "memory"
title = "Memory double"
citation = "test"
[[table.row]]
metric = "warm_exec"
statistic = "p50"
plan = "< 5 s"
target = { lt_seconds = WARM }
[[table.row]]
metric = "success_rate"
statistic = "rate"
plan = "> 99 %"
target = { gt_percent = 99.0 }
[[table.row]]
metric = "cold_start"
statistic = "p50"
plan = "N/A"
"#;

const GATE_PHASES: &str = r#"
[[phase]]
number = 1
name = "test"
[[phase.gate]]
id = "report"
check = "bench_report"
backend = "memory"
description = "report exists"
[[phase.gate]]
id = "acceptance"
check = "acceptance"
backend = "memory"
level = "target"
description = "targets met"
[[phase.gate]]
id = "state"
check = "state_consistency"
backend = "memory"
description = "no state loss"
"#;

#[tokio::test]
async fn gate_passes_on_healthy_data_and_fails_on_an_unreachable_threshold() {
    let r = bench::run(backend(MemoryConfig::default()), small_opts()).await;
    let phases = PhaseFile::parse(GATE_PHASES, "test").unwrap();
    let healthy = Tables::parse(&GATE_TABLES.replace("WARM", "5.0"), "test").unwrap();
    let inputs = GateInputs {
        phases: phases.clone(),
        tables: healthy,
        bench: Some(r.clone()),
        ..Default::default()
    };
    let g = gate::gate(1, &inputs).unwrap();
    assert!(g.passed, "{}", g.render());
    assert_eq!(g.exit_code(), 0);
    let acc = g.gates.iter().find(|x| x.id == "acceptance").unwrap();
    assert!(
        acc.reason.contains("without threshold: Cold start"),
        "{}",
        acc.reason
    );

    let impossible = Tables::parse(&GATE_TABLES.replace("WARM", "0.0"), "test").unwrap();
    let inputs = GateInputs {
        tables: impossible,
        ..inputs
    };
    let g = gate::gate(1, &inputs).unwrap();
    assert!(!g.passed);
    assert_eq!(g.exit_code(), 1);
    let acc = g.gates.iter().find(|x| x.id == "acceptance").unwrap();
    assert!(
        !acc.passed && acc.reason.contains("Warm execution fails"),
        "{}",
        acc.reason
    );
    assert!(g.render().contains("FAIL"));
}

const COLD_TABLES: &str = r#"
[[table]]
id = "memory"
backend = "memory"
title = "Memory double"
citation = "test"
[[table.row]]
metric = "cold_start"
statistic = "p50"
plan = "< 10 s"
target = { lt_seconds = 10.0 }
[[table.row]]
metric = "success_rate"
statistic = "rate"
plan = "> 99.5 % / > 99 %"
target = { gt_percent = 99.5 }
acceptable = { gt_percent = 99.0 }
"#;

const COLD_PHASES: &str = r#"
[[phase]]
number = 1
name = "test"
[[phase.gate]]
id = "acceptance"
check = "acceptance"
backend = "memory"
level = "acceptable"
description = "acceptable met"
"#;

/// One failed cold start among twenty: its latency row, which judges only the nineteen that
/// succeeded, must still fail and say why, and the main job's verdict must fail naming it.
#[tokio::test]
async fn one_failing_cold_start_among_twenty_fails_the_row_and_the_run() {
    let tables = Tables::parse(COLD_TABLES, "test").unwrap();
    let opts = BenchOptions {
        warmup: 0,
        cold_start_iterations: 20,
        ..small_opts()
    };
    // The cold starts are the run's first creates: the 7th is one of them.
    let cfg = MemoryConfig {
        fail_nth: vec![("create".into(), 7, ErrorKind::Backend)],
        ..Default::default()
    };
    let mut r = bench::run(backend(cfg), opts).await;
    acceptance::judge(&mut r, &tables);
    let b = r.backend("memory").unwrap();
    let cold = &b.measurements[&Measurement::ColdStart];
    assert_eq!((cold.attempted, cold.succeeded), (20, 19));
    assert_eq!(cold.errors[&ErrorClass::Backend], 1);
    let row = b
        .verdicts
        .iter()
        .find(|v| v.row.metric.as_str() == "cold_start")
        .unwrap();
    assert_eq!(row.verdict, suites::Verdict::Fails);
    assert_eq!(row.note.as_deref(), Some("1 of 20 failed (backend: 1)"));
    // The failed create counts in the success rate, over every operation.
    assert_eq!(b.rates.errors_by_class[&ErrorClass::Backend], 1);
    assert_eq!(b.rates.succeeded + 1, b.rates.operations);

    let suites = suites::Suites {
        tables,
        phases: PhaseFile::parse(COLD_PHASES, "test").unwrap(),
        ..suites::Suites::builtin()
    };
    let gate = sandbox_harness::pipeline::evaluate_gate(
        1,
        &suites,
        Some(&r),
        &sandbox_harness::pipeline::GateEvidence::default(),
    )
    .unwrap();
    let verdict = sandbox_harness::pipeline::job_verdict(&gate, false, &r);
    assert_eq!(verdict.exit_code, 1);
    assert_eq!(verdict.failures.len(), 1, "{:?}", verdict.failures);
    assert!(
        verdict.failures[0].contains("gate acceptance failed")
            && verdict.failures[0].contains("Cold start fails"),
        "{:?}",
        verdict.failures
    );

    // The same run without the planted failure passes.
    let clean = bench::run(
        backend(MemoryConfig::default()),
        BenchOptions {
            warmup: 0,
            cold_start_iterations: 20,
            ..small_opts()
        },
    )
    .await;
    let gate = sandbox_harness::pipeline::evaluate_gate(
        1,
        &suites,
        Some(&clean),
        &sandbox_harness::pipeline::GateEvidence::default(),
    )
    .unwrap();
    let verdict = sandbox_harness::pipeline::job_verdict(&gate, false, &clean);
    assert_eq!(verdict.exit_code, 0, "{:?}", verdict.failures);
}

/// The mixed workload in lanes: the rounds are shared out (the count of recorded operations and
/// events is that of a one-lane run), each lane works on its own file, the lanes overlap in
/// time, and the report records the lanes it ran in.
#[tokio::test]
async fn mixed_workload_lanes_share_the_rounds_and_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("events.jsonl");
    let writer = Arc::new(EventWriter::create(&events_path).unwrap());
    let opts = BenchOptions {
        events: Some(writer.clone()),
        mixed_rounds: 10,
        mixed_lanes: 3,
        ..small_opts()
    };
    let cfg = MemoryConfig {
        latency: Duration::from_millis(20),
        ..Default::default()
    };
    let r = bench::run(backend(cfg), opts).await;
    writer.finish().unwrap();
    assert!(!r.partial, "{:?}", r.partial_reason);
    assert_eq!(r.options.mixed_lanes, 3);
    let b = r.backend("memory").unwrap();
    let m = &b.measurements[&Measurement::Mixed];
    assert_eq!((m.attempted, m.succeeded), (70, 70));
    assert!(
        b.parts.iter().any(|p| p.part == "mixed workload (3 lanes)"),
        "{:?}",
        b.parts
    );

    // The event log counts the same 70 operations, each lane's file in its share of rounds
    // (10 rounds over 3 lanes: 4, 3 and 3).
    let events = bench::events::read_events(&events_path).unwrap();
    let completed: Vec<_> = events
        .iter()
        .filter(|e| {
            e.event == bench::EventKind::JobExecutionCompleted
                && e.measurement.as_deref() == Some("mixed")
        })
        .collect();
    assert_eq!(completed.len(), 70);
    for (lane, rounds) in [(0, 4), (1, 3), (2, 3)] {
        let write = format!("file_write mixed-{lane}.txt");
        let n = completed
            .iter()
            .filter(|e| e.command.as_deref() == Some(write.as_str()))
            .count();
        assert_eq!(n, rounds, "lane {lane}");
    }

    // The lanes ran at once: some mixed operation started before another one ended.
    let mut spans: Vec<(i64, i64)> = b
        .samples
        .iter()
        .filter(|s| s.measurement == Measurement::Mixed)
        .map(|s| {
            let start = s.started_at.timestamp_micros();
            (start, start + s.duration_us as i64)
        })
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).any(|w| w[1].0 < w[0].1),
        "no two mixed operations overlapped"
    );

    // More lanes than rounds: one lane per round.
    let r = bench::run(
        backend(MemoryConfig::default()),
        BenchOptions {
            mixed_rounds: 2,
            mixed_lanes: 8,
            ..small_opts()
        },
    )
    .await;
    assert_eq!(r.options.mixed_lanes, 2);
    let m = &r.backend("memory").unwrap().measurements[&Measurement::Mixed];
    assert_eq!(m.attempted, 14);
}
