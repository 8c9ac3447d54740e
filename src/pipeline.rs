//! The runs the command line offers, put together from the parts: opening backends, the
//! conformance suite, the benchmark, the gates of a phase, and the reports they write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::acceptance;
use crate::backends::cloudrun::CloudRunConfig;
use crate::backends::{Backends, OpenBackend, OpenError};
use crate::bench::{self, BenchOptions, BenchReport, EventWriter};
use crate::conformance::{self, Registry, RunOptions, RunReport};
use crate::cost::{self, CostBreakdown};
use crate::gate::{self, GateInputs, GateResult};
use crate::protocol::BackendOrigin;
use crate::report::{self, MarkdownOptions};
use crate::suites::{self, Suites};

/// Why a run could not be carried out at all (failed measurements are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The backend list is wrong or a backend could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Suites (tables, phases, prices) could not be loaded.
    #[error(transparent)]
    Suites(#[from] suites::SuiteError),
    /// Scenario files could not be loaded.
    #[error("conformance cases: {0}")]
    Cases(String),
    /// Reports could not be written.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The events file could not be created.
    #[error(transparent)]
    Events(#[from] bench::events::EventsError),
    /// The events file could not be read.
    #[error(transparent)]
    ReadEvents(#[from] bench::events::ReadEventsError),
    /// Other I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PipelineError {
    /// True when the command line is at fault (exit 2), not the run (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, PipelineError::Open(e) if e.is_usage())
    }
}

/// Writes what `recorder` observed as a latency profile to `path` (named after the file),
/// its sources naming `origin` and the time; returns how many operations it holds.
pub fn write_recorded_profile(
    path: &Path,
    recorder: &crate::gcp::observe::CallRecorder,
    origin: &str,
) -> Result<usize, PipelineError> {
    let name = path
        .file_stem()
        .map_or("recorded".into(), |s| s.to_string_lossy().into_owned());
    let source = format!(
        "bench --record-profile on {origin}, {}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let profile = recorder.to_profile(&name, &source);
    let text = profile
        .to_toml()
        .map_err(|e| std::io::Error::other(format!("cannot serialise the profile: {e}")))?;
    report::write_atomic(path, text.as_bytes())?;
    Ok(profile.latency.len())
}

/// Settings of a conformance run.
#[derive(Debug, Clone, Default)]
pub struct ConformSettings {
    /// Suite options (strict, filter, scenario dirs...).
    pub options: RunOptions,
    /// Where the JSON and Markdown go.
    pub out_dir: PathBuf,
}

/// Runs the conformance suite on opened backends (an unavailable one has its cases skipped), printing progress to stderr and writing the
/// reports.
pub async fn conform(
    backends: &Backends,
    settings: &ConformSettings,
) -> Result<RunReport, PipelineError> {
    let registry = Registry::from_backends(backends);
    let entries = registry.select("all").map_err(PipelineError::Cases)?;
    let mut reporters: Vec<Box<dyn conformance::Reporter>> = vec![Box::new(
        conformance::ConsoleReporter::new(std::io::stderr()),
    )];
    let report = conformance::run_with_reporters(&entries, &settings.options, &mut reporters)
        .await
        .map_err(|e| PipelineError::Cases(e.to_string()))?;
    for p in conformance::write_reports(&report, &settings.out_dir)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(report)
}

/// Reads back a conformance run from the JSON report `conform` wrote.
pub fn load_conformance(path: &Path) -> Result<RunReport, PipelineError> {
    #[derive(serde::Deserialize)]
    struct Saved {
        records: Vec<conformance::CaseRecord>,
        #[serde(default)]
        stats: std::collections::BTreeMap<String, conformance::Statistics>,
        #[serde(default)]
        skipped_backends: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        excluded_heavy: Vec<String>,
        #[serde(default)]
        cleanup_errors: Vec<String>,
        #[serde(default)]
        duration_ms: u64,
        #[serde(default)]
        origins: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path)?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| {
        PipelineError::Cases(format!("{}: not a conformance report: {e}", path.display()))
    })?;
    let mut backends: Vec<String> = Vec::new();
    for r in &saved.records {
        if !backends.contains(&r.backend) {
            backends.push(r.backend.clone());
        }
    }
    Ok(RunReport {
        backends,
        skipped_backends: saved.skipped_backends,
        records: saved.records,
        stats: saved.stats,
        excluded_heavy: saved.excluded_heavy,
        cleanup_errors: saved.cleanup_errors,
        duration_ms: saved.duration_ms,
        origins: saved.origins,
    })
}

/// The backends the parity gate needs results from.
pub const PARITY_BACKENDS: [&str; 2] = ["docker", "cloudrun"];

/// The cases the parity gate needs on every backend of [`PARITY_BACKENDS`]: every built-in core
/// case, and the heavy ones (the 500 MB transfer: the plan's files-up-to-500 MB MUST).
pub fn required_cases() -> Result<Vec<conformance::Case>, PipelineError> {
    Ok(conformance::builtin_cases()
        .map_err(|e| PipelineError::Cases(e.to_string()))?
        .into_iter()
        .filter(|c| c.level == conformance::CaseLevel::Core || c.heavy)
        .collect())
}

/// The gate's view of a conformance run: divergences, and what the run lacks of the whole
/// suite ([`required_cases`] on [`PARITY_BACKENDS`]). A required case that is not core (the
/// 500 MB transfer) must pass too.
pub fn conformance_summary(report: &RunReport) -> gate::ConformanceSummary {
    let verdict = conformance::parity(report);
    let mut divergences: Vec<String> = verdict
        .blocking
        .iter()
        .map(|(case, backend, outcome)| format!("{case} on {backend}: {}", outcome.as_str()))
        .collect();
    divergences.extend(
        verdict
            .divergent
            .iter()
            .map(|c| format!("{c}: outcomes differ between backends")),
    );
    for (backend, why) in &report.skipped_backends {
        divergences.push(format!("{backend} skipped: {why}"));
    }
    let mut missing = Vec::new();
    match required_cases() {
        Err(e) => missing.push(format!("the required case list cannot be built: {e}")),
        Ok(required) => {
            for backend in PARITY_BACKENDS {
                for case in &required {
                    let rec = report
                        .records
                        .iter()
                        .find(|r| r.id == case.id && r.backend == backend);
                    match rec {
                        None => missing.push(format!("{} on {backend}", case.id)),
                        Some(r)
                            if case.level != conformance::CaseLevel::Core
                                && !matches!(
                                    r.outcome,
                                    conformance::Outcome::Passed | conformance::Outcome::Divergent
                                ) =>
                        {
                            divergences.push(format!(
                                "{} on {backend}: {} (a MUST of the plan)",
                                case.id,
                                r.outcome.as_str()
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    let cases: std::collections::BTreeSet<&str> =
        report.records.iter().map(|r| r.id.as_str()).collect();
    gate::ConformanceSummary {
        scenarios: cases.len() as u64,
        divergences,
        missing,
    }
}

/// Settings of a bench run.
pub struct BenchSettings {
    /// Bench options (iterations, concurrency, large transfers...); origins, raw baselines,
    /// tables and events are filled in from the backends and suites.
    pub options: BenchOptions,
    /// Write events to this JSON-lines file.
    pub events: Option<PathBuf>,
    /// Stop cleanly on Ctrl-C.
    pub ctrl_c: bool,
}

/// The Cloud Run twin's budget under a profile whose executions take seconds to start: each
/// cold start costs tens of seconds, each Storage call tens of ms; no warm-up cold starts
/// (each execution draws its start from the profile, so a warm-up changes nothing).
pub const TWIN_BUDGET: bench::BackendBudget = bench::BackendBudget {
    iterations: 10,
    cold_start_iterations: 2,
    cold_start_warmup: 0,
};

/// Runs the benchmark on opened backends.
pub async fn bench(
    backends: &[OpenBackend],
    suites: &Suites,
    settings: BenchSettings,
) -> Result<BenchReport, PipelineError> {
    let mut opts = settings.options;
    let writer = match &settings.events {
        Some(p) => Some(Arc::new(EventWriter::create(p)?)),
        None => None,
    };
    opts.events = writer.clone();
    for b in backends {
        // The twin under a profile with slow executions: a small fixed number of cold
        // samples and fewer iterations keep the main job short (see README, profiles).
        let slow_twin = match &b.origin {
            BackendOrigin::CloudRunEmulator {
                latency_profile: Some(f),
                ..
            }
            | BackendOrigin::CloudRunTwin {
                latency_profile: Some(f),
                ..
            } => f.profile.as_ref().is_some_and(|p| {
                p.phase(crate::suites::profile::EXEC_SCHEDULING)
                    .is_some_and(|d| d.p50_ms >= 5_000.0)
            }),
            _ => false,
        };
        if slow_twin {
            opts.budgets.insert(b.name.clone(), TWIN_BUDGET);
        }
        opts.origins.insert(b.name.clone(), b.origin.clone());
        if let Some(raw) = bench::raw_baseline(b) {
            opts.raw_baselines.insert(b.name.clone(), raw);
        }
        if let Some(probe) = bench::phase_probe(b) {
            opts.phase_probes.insert(b.name.clone(), probe);
        }
    }
    let ctrl_c = settings
        .ctrl_c
        .then(|| bench::cancel_on_ctrl_c(opts.cancel.clone()));
    let list = backends
        .iter()
        .map(|b| (b.name.clone(), b.backend.clone()))
        .collect();
    let mut report = bench::run(list, opts).await;
    acceptance::judge(&mut report, &suites.tables);
    if let Some(h) = ctrl_c {
        h.abort();
    }
    if let Some(w) = writer {
        let lines = w.finish()?;
        if let Some(p) = w.path() {
            eprintln!("wrote {} ({lines} events)", p.display());
        }
    }
    Ok(report)
}

/// The projected Cloud Run cost from a bench report, when it measured Cloud Run.
pub fn cost_of(report: &BenchReport, suites: &Suites) -> Option<CostBreakdown> {
    let measured = cost::MeasuredDurations::from_report(report, "cloudrun")?;
    // The deployment the bench ran (recorded by the Cloud Run phase probe); a report without
    // it is priced with the default configuration, and says so.
    let recorded = report
        .backend("cloudrun")
        .and_then(|b| b.phases.as_ref())
        .and_then(|p| p.deployment.clone());
    let (deployment, source) = match recorded {
        Some(d) => (d, "the configuration the bench ran"),
        None => (
            crate::backends::cloudrun::deployment::Deployment::builtin(),
            "default configuration: the report records none",
        ),
    };
    Some(cost::project(
        &suites.prices,
        &suites.cost_profile,
        &deployment,
        source,
        measured,
        &suites.monitoring,
    ))
}

/// What a gate evaluation looks at besides the bench report.
#[derive(Debug, Clone, Default)]
pub struct GateEvidence {
    /// The conformance run.
    pub conformance: Option<gate::ConformanceSummary>,
    /// The preflight checklist.
    pub preflight: Option<gate::PreflightSummary>,
    /// Health endpoint latencies.
    pub health: Option<Vec<gate::HealthMeasurement>>,
    /// Monitoring figures from the bench's event log.
    pub metrics: Option<crate::metrics::MetricsReport>,
}

/// The monitoring figures of an event log, judged with the suites' thresholds and prices; a
/// Cloud Run bench on the emulator labels the cost projection so.
pub fn metrics_of(
    events: &Path,
    suites: &Suites,
    bench: Option<&BenchReport>,
) -> Result<crate::metrics::MetricsReport, PipelineError> {
    let from_emulator = bench.is_some_and(|b| b.backends.iter().any(|x| x.origin.is_emulated()));
    let opts = crate::metrics::MetricsOptions {
        monitoring: suites.monitoring.clone(),
        prices: suites.prices,
        cost_profile: suites.cost_profile,
        from_emulator,
        ..crate::metrics::MetricsOptions::default()
    };
    Ok(crate::metrics::from_events(events, &opts)?)
}

/// Evaluates the gates of `phase` with what was measured.
pub fn evaluate_gate(
    phase: u32,
    suites: &Suites,
    bench: Option<&BenchReport>,
    evidence: &GateEvidence,
) -> Result<GateResult, PipelineError> {
    let inputs = GateInputs {
        phases: suites.phases.clone(),
        tables: suites.tables.clone(),
        health_table: suites.health.clone(),
        monitoring: suites.monitoring.clone(),
        bench: bench.cloned(),
        conformance: evidence.conformance.clone(),
        preflight: evidence.preflight.clone(),
        health: evidence.health.clone(),
        metrics: evidence.metrics.clone(),
        cost: bench.and_then(|b| cost_of(b, suites)),
    };
    Ok(gate::gate(phase, &inputs)?)
}

/// Runs the preflight checklist for the Cloud Run backend among `backends` (on its embedded
/// emulator, or on the configured endpoints), printing it; `None` without a Cloud Run backend.
pub async fn preflight(backends: &[OpenBackend]) -> Option<gate::PreflightSummary> {
    let cloudrun = backends.iter().find(|b| b.name == "cloudrun")?;
    let cfg = CloudRunConfig::from_env().ok()?;
    let clients = match &cloudrun.local {
        Some(local) => crate::preflight::PreflightClients::for_local(&cfg, local).await,
        None => crate::preflight::PreflightClients::for_config(&cfg).await,
    };
    let summary = match clients {
        Ok(c) => {
            let report = crate::preflight::run_checklist(
                &cfg,
                &c,
                &crate::preflight::PreflightOptions::default(),
            )
            .await;
            println!("{}", report.render());
            report.summary()
        }
        Err(e) => gate::PreflightSummary {
            failures: vec![format!("preflight could not run: {e}")],
            checks: 0,
        },
    };
    Some(summary)
}

/// Probes `/health`, `/ready` and `/live` under `base_url` and returns each endpoint's p50
/// (`None` when a probe got no well-formed answer).
pub async fn health(
    base_url: &str,
    iterations: usize,
    suites: &Suites,
) -> Vec<gate::HealthMeasurement> {
    let client = reqwest::Client::new();
    let samples =
        crate::health::probe(&client, base_url, "", iterations, Duration::from_secs(2)).await;
    let report = crate::health::HealthReport::new(base_url, samples, &suites.health);
    println!("{}", report.render(crate::output::TableStyle::Terminal));
    report
        .endpoints
        .iter()
        .map(|e| gate::HealthMeasurement {
            path: e.path.clone(),
            latency_ms: e
                .latency
                .as_ref()
                .filter(|_| e.ok == e.attempts)
                .map(|l| l.p50_seconds * 1000.0),
            p99_ms: e
                .latency
                .as_ref()
                .filter(|_| e.ok == e.attempts)
                .map(|l| l.p99_seconds * 1000.0),
        })
        .collect()
}

/// Writes the bench reports (JSON, latest.json, Markdown with the gate and cost, HTML).
pub fn write_bench_reports(
    report: &BenchReport,
    suites: &Suites,
    phase: u32,
    gate: Option<GateResult>,
    out_dir: &Path,
) -> Result<report::WrittenReports, PipelineError> {
    let md = MarkdownOptions {
        phase,
        tables: suites.tables.clone(),
        gate,
        cost: cost_of(report, suites),
    };
    Ok(report::write_all(report, out_dir, &md)?)
}

/// What the main job (`run`) concludes: its exit code and each reason it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobVerdict {
    /// 0 when nothing failed, 1 otherwise.
    pub exit_code: u8,
    /// One line per failure: each failed gate with the rows it names, a failed conformance run,
    /// a partial bench.
    pub failures: Vec<String>,
}

/// The main job's verdict: it fails exactly when the phase's gates fail (as `gate` does, naming
/// each failing gate and the rows in its reason), when the conformance run failed, or when the
/// bench is partial.
pub fn job_verdict(gate: &GateResult, conformance_failed: bool, bench: &BenchReport) -> JobVerdict {
    let mut failures: Vec<String> = gate
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| format!("phase {} gate {} failed: {}", gate.phase, g.id, g.reason))
        .collect();
    if conformance_failed {
        failures.push("the conformance run failed (see the parity matrix)".into());
    }
    if bench.partial {
        failures.push(format!(
            "the bench is partial: {}",
            bench.partial_reason.as_deref().unwrap_or("incomplete")
        ));
    }
    JobVerdict {
        exit_code: u8::from(!failures.is_empty()),
        failures,
    }
}

/// Default per-case time limit of pipeline conformance runs.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, backend: &str, outcome: conformance::Outcome) -> conformance::CaseRecord {
        let case = required_cases()
            .unwrap()
            .into_iter()
            .find(|c| c.id == id)
            .unwrap();
        conformance::CaseRecord {
            id: id.into(),
            area: case.area,
            level: case.level,
            backend: backend.into(),
            outcome,
            duration_ms: 1,
            error: None,
            failed_step: None,
            limitation: None,
            divergence: None,
        }
    }

    fn run_report(records: Vec<conformance::CaseRecord>) -> RunReport {
        RunReport {
            backends: PARITY_BACKENDS.iter().map(|b| b.to_string()).collect(),
            skipped_backends: Default::default(),
            records,
            stats: Default::default(),
            excluded_heavy: Vec::new(),
            cleanup_errors: Vec::new(),
            duration_ms: 1,
            origins: Default::default(),
        }
    }

    #[test]
    fn the_parity_gate_needs_the_whole_suite_on_both_backends() {
        let required = required_cases().unwrap();
        assert!(required.iter().any(|c| c.id == "transfer.roundtrip_500mb"));
        let all: Vec<conformance::CaseRecord> = PARITY_BACKENDS
            .iter()
            .flat_map(|b| {
                required
                    .iter()
                    .map(move |c| record(&c.id, b, conformance::Outcome::Passed))
            })
            .collect();
        let inputs = |c: gate::ConformanceSummary| GateInputs {
            conformance: Some(c),
            ..GateInputs::default()
        };
        let parity = |i: &GateInputs| {
            gate::gate(1, i)
                .unwrap()
                .gates
                .into_iter()
                .find(|g| g.id == "conformance_parity")
                .unwrap()
        };
        let full = conformance_summary(&run_report(all.clone()));
        assert!(full.missing.is_empty(), "{:?}", full.missing);
        let g = parity(&inputs(full));
        assert!(g.passed, "{}", g.reason);

        // A filtered run: only the stateful cases.
        let filtered: Vec<_> = all
            .iter()
            .filter(|r| r.id.starts_with("stateful."))
            .cloned()
            .collect();
        let g = parity(&inputs(conformance_summary(&run_report(filtered))));
        assert!(!g.passed);
        assert!(
            g.reason.contains("lifecycle.identity on docker"),
            "{}",
            g.reason
        );
        assert!(
            g.reason.contains("transfer.roundtrip_500mb on cloudrun"),
            "{}",
            g.reason
        );

        // The 500 MB transfer is a MUST: failing it fails the gate though it is not core.
        let mut big_fails = all.clone();
        for r in big_fails
            .iter_mut()
            .filter(|r| r.id == "transfer.roundtrip_500mb")
        {
            r.outcome = conformance::Outcome::Failed;
        }
        let g = parity(&inputs(conformance_summary(&run_report(big_fails))));
        assert!(
            !g.passed && g.reason.contains("a MUST of the plan"),
            "{}",
            g.reason
        );
    }

    /// The cost table prices the deployment the bench recorded: a report taken with another
    /// configuration gets other polling and pool lines.
    #[test]
    fn the_cost_follows_the_recorded_configuration() {
        use crate::bench::{BackendContext, BackendReport, Measurement, Sample};
        let report_with = |cfg: Option<&CloudRunConfig>| {
            let samples = (0..3)
                .map(|_| Sample {
                    measurement: Measurement::WarmExec,
                    op: "exec_stateful".into(),
                    started_at: chrono::Utc::now(),
                    duration_us: 200_000,
                    ok: true,
                    error_class: None,
                    exit_code: Some(0),
                    detail: None,
                })
                .collect();
            let backend = BackendReport::from_samples(
                BackendContext {
                    name: "cloudrun".into(),
                    backend: "cloudrun".into(),
                    phases: cfg.map(|c| bench::phases::PhaseReport {
                        deployment: Some(
                            crate::backends::cloudrun::deployment::Deployment::from_config(c)
                                .unwrap(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                samples,
            );
            BenchReport {
                schema_version: bench::SCHEMA_VERSION,
                started_at: chrono::Utc::now(),
                finished_at: chrono::Utc::now(),
                partial: false,
                partial_reason: None,
                environment: Default::default(),
                options: bench::OptionsRecord::from(&BenchOptions::default()),
                backends: vec![backend],
            }
        };
        let suites = Suites::builtin();
        let polls = |c: &CostBreakdown| {
            c.items
                .iter()
                .find(|i| i.item.starts_with("Worker inbox polls"))
                .map(|i| (i.item.clone(), i.quantity))
                .unwrap()
        };
        let default = cost_of(&report_with(None), &suites).unwrap();
        assert!(
            default
                .deployment_source
                .starts_with("default configuration")
        );
        let cfg = CloudRunConfig {
            poll_min_ms: 200,
            poll_max_ms: 5000,
            pool_size: 3,
            ..CloudRunConfig::default()
        };
        let ran = cost_of(&report_with(Some(&cfg)), &suites).unwrap();
        assert_eq!(ran.deployment_source, "the configuration the bench ran");
        assert!(
            polls(&ran).0.contains("every 200-5000 ms"),
            "{:?}",
            polls(&ran)
        );
        assert!(
            polls(&ran).1 < polls(&default).1,
            "a slower schedule polls less"
        );
        assert!(
            ran.items
                .iter()
                .any(|i| i.item.starts_with("Warm pool: 3 idle"))
        );
        assert!(
            !default
                .items
                .iter()
                .any(|i| i.item.starts_with("Warm pool"))
        );
    }
}
