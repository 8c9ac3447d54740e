//! Phase gates (suites/phases.toml) evaluated over the evidence of a run (bench, cost, metrics,
//! conformance, health, preflight); a phase passes when all its gates do.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::bench::BenchReport;
use crate::cost::{BudgetStatus, CostBreakdown};
use crate::metrics::MetricsReport;
use crate::suites::{
    GateCheck, HealthTable, Level, Monitoring, PhaseFile, SuiteError, Tables, Verdict,
};

/// Outcome of the preflight checks (filled in by the preflight tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreflightSummary {
    /// Names of failed checks with why.
    pub failures: Vec<String>,
    /// Checks run.
    pub checks: u64,
}

/// One measured health endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthMeasurement {
    /// "/health", ...
    pub path: String,
    /// Measured latency (e.g. p50), ms; `None` when the endpoint did not answer.
    pub latency_ms: Option<f64>,
    /// The tail (p99, or the largest of few probes), ms; judged against max acceptable. A
    /// measurement without it is judged on `latency_ms` alone.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// Outcome of the conformance suite (filled in by the conformance runner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformanceSummary {
    /// Scenarios run.
    pub scenarios: u64,
    /// Scenarios where the backends behaved differently, with what differed.
    pub divergences: Vec<String>,
    /// What the parity gate needs and the run lacks: each required case (every core case, and
    /// the plan's MUST items such as the 500 MB transfer) that has no result on a required
    /// backend, as "CASE on BACKEND"; a filter, `--skip-heavy` or a skipped backend shows here.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// Everything gates may look at; missing inputs fail the gates that need them.
#[derive(Debug, Clone)]
pub struct GateInputs {
    /// The phases.
    pub phases: PhaseFile,
    /// The acceptance tables (verdicts are recomputed with these).
    pub tables: Tables,
    /// Health thresholds.
    pub health_table: HealthTable,
    /// Monitoring thresholds.
    pub monitoring: Monitoring,
    /// A bench report.
    pub bench: Option<BenchReport>,
    /// Preflight outcome.
    pub preflight: Option<PreflightSummary>,
    /// Health measurements.
    pub health: Option<Vec<HealthMeasurement>>,
    /// Conformance outcome.
    pub conformance: Option<ConformanceSummary>,
    /// Event-log metrics.
    pub metrics: Option<MetricsReport>,
    /// Cost projection.
    pub cost: Option<CostBreakdown>,
}

impl Default for GateInputs {
    fn default() -> Self {
        GateInputs {
            phases: PhaseFile::builtin(),
            tables: Tables::builtin(),
            health_table: HealthTable::builtin(),
            monitoring: Monitoring::builtin(),
            bench: None,
            preflight: None,
            health: None,
            conformance: None,
            metrics: None,
            cost: None,
        }
    }
}

/// One gate evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateOutcome {
    /// Gate id.
    pub id: String,
    /// What it means.
    pub description: String,
    /// What it checked.
    pub check: GateCheck,
    /// Pass or fail.
    pub passed: bool,
    /// Why.
    pub reason: String,
}

/// A phase evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Phase number.
    pub phase: u32,
    /// Phase name.
    pub name: String,
    /// Each gate.
    pub gates: Vec<GateOutcome>,
    /// True when every gate passed.
    pub passed: bool,
}

impl GateResult {
    /// The process exit code: 0 when every gate passed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.passed { 0 } else { 1 }
    }

    /// The gates as a table.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .gates
            .iter()
            .map(|g| {
                vec![
                    g.id.clone(),
                    if g.passed {
                        "pass".into()
                    } else {
                        "FAIL".into()
                    },
                    g.description.clone(),
                    g.reason.clone(),
                ]
            })
            .collect();
        let mut out = crate::output::render_table(&["Gate", "Result", "Checks", "Reason"], &rows);
        let _ = writeln!(
            out,
            "\nPhase {} ({}): {}.",
            self.phase,
            self.name,
            if self.passed {
                "all gates pass"
            } else {
                "FAILED"
            }
        );
        out
    }
}

/// Evaluates every gate of `phase`; `Invalid` when the phase is not defined.
pub fn gate(phase: u32, inputs: &GateInputs) -> Result<GateResult, SuiteError> {
    let p = inputs
        .phases
        .phase(phase)
        .ok_or_else(|| SuiteError::Invalid {
            path: "phases".into(),
            detail: format!(
                "phase {phase} is not defined (defined: {})",
                inputs
                    .phases
                    .phases
                    .iter()
                    .map(|p| p.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let gates: Vec<GateOutcome> = p
        .gates
        .iter()
        .map(|g| {
            let (passed, reason) = evaluate(&g.check, inputs);
            GateOutcome {
                id: g.id.clone(),
                description: g.description.clone(),
                check: g.check.clone(),
                passed,
                reason,
            }
        })
        .collect();
    Ok(GateResult {
        phase: p.number,
        name: p.name.clone(),
        passed: gates.iter().all(|g| g.passed),
        gates,
    })
}

fn evaluate(check: &GateCheck, i: &GateInputs) -> (bool, String) {
    match check {
        GateCheck::BenchReport { backend } => match backend_of(i, backend) {
            Err(e) => (false, e),
            Ok(b) if b.partial => (
                false,
                format!(
                    "the `{backend}` measurements are partial: {}",
                    b.setup_errors.join("; ")
                ),
            ),
            Ok(b) => (
                true,
                format!(
                    "{} operations recorded; {}",
                    b.rates.operations, b.origin_statement
                ),
            ),
        },
        GateCheck::Acceptance { backend, level } => match backend_of(i, backend) {
            Err(e) => (false, e),
            Ok(b) => acceptance(b, backend, *level, &i.tables),
        },
        GateCheck::Preflight => match &i.preflight {
            None => (false, "no preflight result given".into()),
            Some(p) if p.failures.is_empty() => (true, format!("{} checks passed", p.checks)),
            Some(p) => (false, format!("failed: {}", p.failures.join("; "))),
        },
        GateCheck::Health => match &i.health {
            None => (false, "no health measurements given".into()),
            Some(ms) => health(ms, &i.health_table),
        },
        GateCheck::ConformanceParity => match &i.conformance {
            None => (false, "no conformance result given".into()),
            Some(c) if c.scenarios == 0 => (false, "the conformance run had no scenarios".into()),
            Some(c) if !c.missing.is_empty() => (
                false,
                format!(
                    "the conformance run is not the whole suite: {} required result(s) missing: {}{}",
                    c.missing.len(),
                    c.missing.join(", "),
                    if c.divergences.is_empty() {
                        String::new()
                    } else {
                        format!("; and {} divergence(s): {}", c.divergences.len(), c.divergences.join("; "))
                    }
                ),
            ),
            Some(c) if c.divergences.is_empty() => {
                (true, format!("{} scenarios, no divergence", c.scenarios))
            }
            Some(c) => (
                false,
                format!(
                    "{} divergence(s): {}",
                    c.divergences.len(),
                    c.divergences.join("; ")
                ),
            ),
        },
        GateCheck::StateConsistency { backend } => match backend_of(i, backend) {
            Err(e) => (false, e),
            Ok(b) if b.state.checks == 0 => (false, "no state checks were run".into()),
            Ok(b) if b.state.losses == 0 => (true, format!("{} checks, no loss", b.state.checks)),
            Ok(b) => (
                false,
                format!(
                    "{} state loss(es) in {} checks",
                    b.state.losses, b.state.checks
                ),
            ),
        },
        GateCheck::Monitoring => match &i.metrics {
            None => (
                false,
                "no data: no event log given (the bench writes one with --events; `gate --events FILE` judges an existing one)".into(),
            ),
            Some(m) if m.backends.is_empty() => (
                false,
                "no data: the event log holds no executions".into(),
            ),
            Some(m) => monitoring(m),
        },
        GateCheck::CostBudget => match &i.cost {
            None => (false, "no cost projection given".into()),
            Some(c) => (
                c.status == BudgetStatus::WithinBudget,
                format!(
                    "${:.2}/month against ${:.0} budget",
                    c.total_usd_per_month, c.budget_usd_per_month
                ),
            ),
        },
        GateCheck::RealGcp { backend } => match backend_of(i, backend) {
            Err(e) => (false, e),
            Ok(b) if b.origin.is_real_gcp() => (true, b.origin_statement.clone()),
            Ok(b) => (
                false,
                format!("figures are not from Google Cloud: {}", b.origin_statement),
            ),
        },
    }
}

/// The bench report's backend named `name` (by backend kind or configured name).
fn backend_of<'a>(
    i: &'a GateInputs,
    name: &str,
) -> Result<&'a crate::bench::BackendReport, String> {
    let b = i.bench.as_ref().ok_or("no bench report given")?;
    b.backends
        .iter()
        .find(|x| x.backend == name || x.name == name)
        .ok_or_else(|| format!("the bench report has no `{name}` backend"))
}

/// Judges one backend's bench figures against the acceptance tables at `level`.
fn acceptance(
    b: &crate::bench::BackendReport,
    backend: &str,
    level: Level,
    tables: &Tables,
) -> (bool, String) {
    let verdicts = crate::acceptance::judge_backend(b, tables);
    if verdicts.is_empty() {
        return (false, format!("no acceptance table applies to `{backend}`"));
    }
    let failing: Vec<String> = verdicts
        .iter()
        .filter(|v| v.verdict != Verdict::NoThreshold && !v.verdict.satisfies(level))
        .map(|v| {
            format!(
                "{} {} ({})",
                v.row.metric.label(),
                v.verdict,
                crate::output::fmt_figure(v.measured, v.row.metric.is_rate())
            )
        })
        .collect();
    let unthresholded: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::NoThreshold)
        .map(|v| v.row.metric.label())
        .collect();
    let extra = if unthresholded.is_empty() {
        String::new()
    } else {
        format!("; without threshold: {}", unthresholded.join(", "))
    };
    if failing.is_empty() {
        (
            true,
            format!("{} rows at {level:?} level{extra}", verdicts.len()),
        )
    } else {
        (
            false,
            format!("below {level:?}: {}{extra}", failing.join(", ")),
        )
    }
}

/// Judges the health measurements against the health table's acceptable latencies.
fn health(ms: &[HealthMeasurement], table: &HealthTable) -> (bool, String) {
    let mut bad = Vec::new();
    for ep in &table.endpoints {
        let found = ms.iter().find(|m| m.path == ep.path);
        let m = found.and_then(|m| m.latency_ms);
        let v =
            crate::acceptance::health_verdict(ep, m, found.and_then(|m| m.p99_ms.or(m.latency_ms)));
        if !v.satisfies(Level::Acceptable) {
            bad.push(format!(
                "{} {} ({})",
                ep.path,
                v,
                m.map_or("no answer".into(), |m| format!("{m:.0} ms"))
            ));
        }
    }
    if bad.is_empty() {
        (
            true,
            format!(
                "{} endpoints within max acceptable latency",
                table.endpoints.len()
            ),
        )
    } else {
        (false, bad.join(", "))
    }
}

/// Passes when every monitoring check of every backend meets its target.
fn monitoring(m: &MetricsReport) -> (bool, String) {
    // Every check must meet its target: an alert, a missed target, a check without
    // data and one with too few samples all fail the gate, named.
    let bad: Vec<String> = m
        .backends
        .iter()
        .flat_map(|b| {
            b.checks
                .iter()
                .filter(|c| c.status != crate::metrics::CheckStatus::Ok)
                .map(move |c| {
                    let status = match c.status {
                        crate::metrics::CheckStatus::NoData => "no data".to_string(),
                        other => format!("{other:?}"),
                    };
                    format!(
                        "{} {}: {status} ({})",
                        b.backend,
                        c.name,
                        c.measured.map_or("-".into(), |v| format!("{v:.3}"))
                    )
                })
        })
        .collect();
    if bad.is_empty() {
        (
            true,
            format!(
                "every monitoring check meets its target ({} events, {})",
                m.events,
                m.backends
                    .iter()
                    .map(|b| format!("{}: {} operations", b.backend, b.operations))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        (false, bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_phases_parse_and_missing_inputs_fail() {
        let i = GateInputs::default();
        for n in 0..=3 {
            let r = gate(n, &i).unwrap();
            assert!(!r.passed, "phase {n} passed with no inputs");
            assert!(r.gates.iter().all(|g| !g.reason.is_empty()));
            assert_eq!(r.exit_code(), 1);
        }
        assert!(gate(9, &i).is_err());
    }

    #[test]
    fn health_and_preflight_gates() {
        let i = GateInputs {
            preflight: Some(PreflightSummary {
                failures: vec![],
                checks: 4,
            }),
            health: Some(vec![
                HealthMeasurement {
                    path: "/health".into(),
                    latency_ms: Some(40.0),
                    p99_ms: Some(60.0),
                },
                HealthMeasurement {
                    path: "/ready".into(),
                    latency_ms: Some(700.0),
                    p99_ms: Some(900.0),
                },
                HealthMeasurement {
                    path: "/live".into(),
                    latency_ms: Some(10.0),
                    p99_ms: Some(20.0),
                },
            ]),
            ..Default::default()
        };
        let r = gate(0, &i).unwrap();
        let by = |id: &str| r.gates.iter().find(|g| g.id == id).unwrap();
        assert!(by("preflight").passed);
        assert!(by("health").passed, "{}", by("health").reason);
        assert!(!by("docker_baseline_report").passed);
        let mut i = i;
        // /live's median is fine but its tail is beyond 100 ms max acceptable.
        i.health.as_mut().unwrap()[2].p99_ms = Some(150.0);
        let r = gate(0, &i).unwrap();
        assert!(!r.gates.iter().find(|g| g.id == "health").unwrap().passed);
    }
}
