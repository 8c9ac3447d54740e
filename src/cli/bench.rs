//! `sandbox-harness bench`: the benchmark against the acceptance tables.

use std::process::ExitCode;

use sandbox_harness::pipeline::{self, PipelineError};
use sandbox_harness::suites;

use super::measure::{self, MeasureArgs};

/// Flags of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    measure: MeasureArgs,
}

/// Measures, writes JSON, Markdown and HTML; exits 1 when the bench is partial.
pub async fn run(args: BenchArgs) -> ExitCode {
    super::fail_on(bench_only(&args.measure).await)
}

async fn bench_only(m: &MeasureArgs) -> Result<ExitCode, PipelineError> {
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let report = measure::measure_opened(&suites, m, None).await?;
    let gate = pipeline::evaluate_gate(
        1,
        &suites,
        Some(&report),
        &pipeline::GateEvidence::default(),
    )?;
    let written = pipeline::write_bench_reports(&report, &suites, 1, None, &m.out)?;
    measure::print_bench(&report, &suites, 1, &gate, &written);
    Ok(super::passed(!report.partial))
}
