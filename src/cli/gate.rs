//! `sandbox-harness gate`: what a migration phase needs, judged; exits 1 naming each failed gate.

use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_harness::pipeline::{self, PipelineError};
use sandbox_harness::{backends, report, suites};

use super::measure::{self, MeasureArgs};

/// Flags of `gate`.
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// The phase (see suites/phases.toml).
    #[arg(long)]
    phase: u32,
    /// Judge an existing bench report instead of measuring.
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// With --report: the conformance report (reports/conformance.json) to judge parity by.
    #[arg(long, value_name = "CONFORMANCE.json", requires = "report")]
    conformance: Option<PathBuf>,
    /// The service whose /health, /ready and /live phase 0 probes (default: the embedded
    /// emulator, when Cloud Run runs on it).
    #[arg(long, value_name = "URL")]
    health_url: Option<String>,
    #[command(flatten)]
    measure: MeasureArgs,
}

/// Judges the phase's gates; exits with the gate's code.
pub async fn run(args: GateArgs) -> ExitCode {
    super::fail_on(gate(args).await)
}

async fn gate(args: GateArgs) -> Result<ExitCode, PipelineError> {
    let m = &args.measure;
    let phase = args.phase;
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let mut evidence = pipeline::GateEvidence::default();
    if let Some(p) = &args.conformance {
        let saved = pipeline::load_conformance(p)?;
        evidence.conformance = Some(pipeline::conformance_summary(&saved));
    }
    let mut events = m.events.clone();
    let bench_report = match &args.report {
        Some(path) => report::load(path)?,
        None => {
            let backends = measure::open_for_conformance(m).await?;
            let gathered = super::until_ctrl_c(gather(&args, &backends, &suites)).await;
            backends.close().await;
            evidence = gathered.ok_or_else(super::interrupted)??;
            let log = m.events_or_default();
            events = Some(log.clone());
            measure::measure_opened(&suites, m, Some(log)).await?
        }
    };
    if let Some(log) = &events {
        evidence.metrics = Some(pipeline::metrics_of(log, &suites, Some(&bench_report))?);
    }
    let result = pipeline::evaluate_gate(phase, &suites, Some(&bench_report), &evidence)?;
    let written =
        pipeline::write_bench_reports(&bench_report, &suites, phase, Some(result.clone()), &m.out)?;
    measure::print_bench(&bench_report, &suites, phase, &result, &written);
    Ok(ExitCode::from(result.exit_code().clamp(0, 255) as u8))
}

/// The evidence besides the bench the phase needs: preflight and health (phase 0), a strict
/// conformance run (phase 1 on).
async fn gather(
    args: &GateArgs,
    backends: &backends::Backends,
    suites: &suites::Suites,
) -> Result<pipeline::GateEvidence, PipelineError> {
    let mut evidence = pipeline::GateEvidence::default();
    if args.phase == 0 {
        evidence.preflight = pipeline::preflight(backends.opened()).await;
        let url = args.health_url.clone().or_else(|| {
            backends
                .opened()
                .iter()
                .find_map(|b| b.local.as_ref().map(|l| l.base_url()))
        });
        if let Some(url) = url {
            eprintln!("health: probing {url} (/health, /ready, /live)");
            evidence.health = Some(pipeline::health(&url, 20, suites).await);
        }
    }
    if args.phase >= 1 {
        let conf = pipeline::conform(backends, &args.measure.conform_settings(true)).await?;
        evidence.conformance = Some(pipeline::conformance_summary(&conf));
    }
    Ok(evidence)
}
