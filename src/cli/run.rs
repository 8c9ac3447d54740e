//! `sandbox-harness run`: the main job (conformance, bench, phase verdicts, reports).

use std::process::ExitCode;

use sandbox_harness::pipeline::{self, PipelineError};
use sandbox_harness::{conformance, suites};

use super::measure::{self, MeasureArgs};

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    measure: MeasureArgs,
    /// Leave out the conformance suite.
    #[arg(long)]
    no_conformance: bool,
    /// Phase whose gates are evaluated and reported.
    #[arg(long, default_value_t = 1)]
    phase: u32,
}

/// Runs the main job; exits 1 naming each failure.
pub async fn run(args: RunArgs) -> ExitCode {
    super::fail_on(main_job(args).await)
}

async fn main_job(args: RunArgs) -> Result<ExitCode, PipelineError> {
    let m = &args.measure;
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let started = std::time::Instant::now();
    let conf = if args.no_conformance {
        None
    } else {
        // Conformance checks behaviour on a twin of its own (profile `none` unless told).
        let r = super::conform_and_close(m, false).await?;
        println!("{}", conformance::render_terminal(&r));
        Some(r)
    };
    let conformance_secs = started.elapsed().as_secs_f64();
    let events = m.events_or_default();
    let report = measure::measure_opened(&suites, m, Some(events.clone())).await?;
    let bench_secs = started.elapsed().as_secs_f64() - conformance_secs;
    let evidence = pipeline::GateEvidence {
        conformance: conf.as_ref().map(pipeline::conformance_summary),
        metrics: Some(pipeline::metrics_of(&events, &suites, Some(&report))?),
        ..pipeline::GateEvidence::default()
    };
    let phase = args.phase;
    let gate = pipeline::evaluate_gate(phase, &suites, Some(&report), &evidence)?;
    let written =
        pipeline::write_bench_reports(&report, &suites, phase, Some(gate.clone()), &m.out)?;
    measure::print_bench(&report, &suites, phase, &gate, &written);
    // Where the time went (each backend's parts: the report's "Time per part").
    let per_backend: Vec<String> = report
        .backends
        .iter()
        .map(|b| {
            let secs: f64 = b.parts.iter().map(|p| p.seconds).sum();
            format!("{} {secs:.0} s", b.name)
        })
        .collect();
    let total = started.elapsed().as_secs_f64();
    eprintln!(
        "sandbox-harness: main job {total:.0} s: conformance {conformance_secs:.0} s, bench {bench_secs:.0} s ({}), reports and gates {:.0} s",
        per_backend.join(", "),
        total - conformance_secs - bench_secs
    );
    let conf_failed = conf.as_ref().is_some_and(|c| c.exit_code(false) != 0);
    let verdict = pipeline::job_verdict(&gate, conf_failed, &report);
    for f in &verdict.failures {
        eprintln!("sandbox-harness: FAIL {f}");
    }
    Ok(ExitCode::from(verdict.exit_code))
}
