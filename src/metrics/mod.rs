//! Metrics from an execution event log (`--events PATH.jsonl`): success and error rates, execution
//! latency, state losses and projected cost, compared with the plan's monitoring thresholds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::events::{Event, EventKind, ReadEventsError, read_events};
use crate::bench::stats::{Summary, seconds_to_micros};
use crate::cost::{self, CostBreakdown, MeasuredDurations};
use crate::suites::Monitoring;
use crate::suites::{CostProfile, Prices};

/// What `from_events` compares with and projects from.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Thresholds.
    pub monitoring: Monitoring,
    /// Prices for the projection.
    pub prices: Prices,
    /// Usage profile for the projection.
    pub cost_profile: CostProfile,
    /// The Cloud Run deployment priced (the default configuration's unless set).
    pub deployment: crate::backends::cloudrun::deployment::Deployment,
    /// Backends whose events project a Cloud Run cost (by backend name).
    pub cost_backends: Vec<String>,
    /// The events come from the emulator (labels the cost projection).
    pub from_emulator: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            monitoring: Monitoring::builtin(),
            prices: Prices::builtin(),
            cost_profile: CostProfile::builtin(),
            deployment: crate::backends::cloudrun::deployment::Deployment::builtin(),
            cost_backends: vec!["cloudrun".into()],
            from_emulator: false,
        }
    }
}

/// Status of one monitoring check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Meets the target.
    Ok,
    /// Misses the target, no alert.
    MissesTarget,
    /// Beyond the alert threshold.
    Alert,
    /// Nothing to judge.
    NoData,
    /// A figure within its target, but with too few samples behind it to claim so (see
    /// `acceptance::required_samples`); the check's name says how many are needed.
    InsufficientSamples,
}

/// One monitoring check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitoringCheck {
    /// What is checked.
    pub name: String,
    /// The thresholds, as text.
    pub threshold: String,
    /// The figure.
    pub measured: Option<f64>,
    /// The status.
    pub status: CheckStatus,
}

/// Figures for one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendMetrics {
    /// Backend name.
    pub backend: String,
    /// Completed operations.
    pub operations: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Success rate, percent.
    pub success_percent: Option<f64>,
    /// Error rate, percent.
    pub error_percent: Option<f64>,
    /// Failures by class.
    pub errors_by_class: BTreeMap<String, u64>,
    /// Failures by class, percent of operations.
    pub error_percent_by_class: BTreeMap<String, f64>,
    /// Latency of successful `exec_stateful` operations.
    pub exec_latency: Option<Summary>,
    /// State checks that held.
    pub state_checks: u64,
    /// State losses.
    pub state_losses: u64,
    /// Projected monthly cost (Cloud Run backends).
    pub projected_cost: Option<CostBreakdown>,
    /// The monitoring checks.
    pub checks: Vec<MonitoringCheck>,
}

impl BackendMetrics {
    /// True when any check is in alert.
    pub fn alerting(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Alert)
    }

    /// True when every check with data is `Ok`.
    pub fn meets_targets(&self) -> bool {
        self.checks
            .iter()
            .all(|c| matches!(c.status, CheckStatus::Ok | CheckStatus::NoData))
    }
}

/// Metrics of an event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Events read.
    pub events: u64,
    /// True when the log records a cancelled run.
    pub cancelled: bool,
    /// Per backend, sorted by name.
    pub backends: Vec<BackendMetrics>,
}

impl MetricsReport {
    /// The metrics of one backend.
    pub fn backend(&self, name: &str) -> Option<&BackendMetrics> {
        self.backends.iter().find(|b| b.backend == name)
    }

    /// The report as a table.
    pub fn render(&self) -> String {
        let mut rows = Vec::new();
        for b in &self.backends {
            for c in &b.checks {
                rows.push(vec![
                    b.backend.clone(),
                    c.name.clone(),
                    c.threshold.clone(),
                    c.measured.map_or("-".into(), |m| format!("{m:.3}")),
                    format!("{:?}", c.status),
                ]);
            }
        }
        let mut out = crate::output::render_table(
            &["Backend", "Check", "Threshold", "Measured", "Status"],
            &rows,
        );
        if self.cancelled {
            out.push_str("\nThe log records a cancelled run; figures cover what was measured.\n");
        }
        for b in &self.backends {
            if let Some(c) = &b.projected_cost {
                out.push_str(&format!(
                    "\nProjected cost ({}):\n\n{}",
                    b.backend,
                    c.render()
                ));
            }
        }
        out
    }
}

/// Computes metrics from an events file.
pub fn from_events(path: &Path, opts: &MetricsOptions) -> Result<MetricsReport, ReadEventsError> {
    Ok(from_event_list(&read_events(path)?, opts))
}

/// Computes metrics from events in memory.
pub fn from_event_list(events: &[Event], opts: &MetricsOptions) -> MetricsReport {
    let mut by_backend: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut cancelled = false;
    for e in events {
        if e.event == EventKind::BenchFinished && e.error_class.as_deref() == Some("cancelled") {
            cancelled = true;
        }
        if e.backend != "*" {
            by_backend.entry(e.backend.as_str()).or_default().push(e);
        }
    }
    let backends = by_backend
        .into_iter()
        .map(|(name, evs)| backend_metrics(name, &evs, opts))
        .collect();
    MetricsReport {
        events: events.len() as u64,
        cancelled,
        backends,
    }
}

/// Samples before a p99 is reported as a p99 (below, it is the largest of n).
pub const P99_MIN_SAMPLES: u64 = 100;

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn backend_metrics(name: &str, evs: &[&Event], opts: &MetricsOptions) -> BackendMetrics {
    let m = &opts.monitoring;
    let completed: Vec<&&Event> = evs
        .iter()
        .filter(|e| e.event == EventKind::JobExecutionCompleted)
        .collect();
    let operations = completed.len() as u64;
    let mut errors_by_class: BTreeMap<String, u64> = BTreeMap::new();
    for e in &completed {
        if let Some(c) = &e.error_class {
            *errors_by_class.entry(c.clone()).or_default() += 1;
        }
    }
    let failed: u64 = errors_by_class.values().sum();
    let succeeded = operations - failed;
    let exec = ok_durations(&completed, &|e| e.op.as_deref() == Some("exec_stateful"));
    let exec_latency = Summary::from_micros(exec);
    let state_checks = evs
        .iter()
        .filter(|e| e.event == EventKind::StateChecked)
        .count() as u64;
    let state_losses = evs
        .iter()
        .filter(|e| e.event == EventKind::StateLoss)
        .count() as u64;
    let success_percent = pct(succeeded, operations);
    let error_percent = pct(failed, operations);
    let error_percent_by_class = errors_by_class
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64 * 100.0 / operations.max(1) as f64))
        .collect();

    let projected_cost = projected_cost(name, &completed, &exec_latency, opts);

    let mut checks = latency_checks(m, exec_latency.as_ref());
    let success_need = rule_of_three(100.0 - m.success_rate_target_gt_percent);
    checks.push(MonitoringCheck {
        name: format!(
            "success rate (%) over {operations} operations (target needs {success_need})"
        ),
        threshold: format!(
            "> {} %, alert < {} %",
            m.success_rate_target_gt_percent, m.success_rate_alert_lt_percent
        ),
        measured: success_percent,
        status: enough(
            three(
                success_percent,
                &|v| v > m.success_rate_target_gt_percent,
                &|v| v < m.success_rate_alert_lt_percent,
            ),
            operations,
            success_need,
        ),
    });
    checks.push(MonitoringCheck {
        name: "error rate (%)".into(),
        threshold: format!(
            "< {} %, alert > {} %",
            m.error_rate_target_lt_percent, m.error_rate_alert_gt_percent
        ),
        measured: error_percent,
        status: enough(
            three(
                error_percent,
                &|v| v < m.error_rate_target_lt_percent,
                &|v| v > m.error_rate_alert_gt_percent,
            ),
            operations,
            rule_of_three(m.error_rate_target_lt_percent),
        ),
    });
    let consistency = pct(state_checks, state_checks + state_losses);
    checks.push(MonitoringCheck {
        name: "state consistency (%)".into(),
        threshold: format!(
            "{} %, alert on more than {} loss(es)",
            m.state_consistency_target_percent, m.state_loss_alert_gt_count
        ),
        measured: consistency,
        status: if state_losses > m.state_loss_alert_gt_count {
            CheckStatus::Alert
        } else {
            three(
                consistency,
                &|v| v >= m.state_consistency_target_percent,
                &|_| false,
            )
        },
    });
    if let Some(c) = &projected_cost {
        let t = c.total_usd_per_month;
        checks.push(MonitoringCheck {
            name: "projected cost (USD/month)".into(),
            threshold: format!(
                "<= ${}, alert > ${}",
                m.cost_budget_usd_per_month, m.cost_alert_gt_usd_per_month
            ),
            measured: Some(t),
            status: three(Some(t), &|v| v <= m.cost_budget_usd_per_month, &|v| {
                v > m.cost_alert_gt_usd_per_month
            }),
        });
    }
    BackendMetrics {
        backend: name.to_string(),
        operations,
        succeeded,
        success_percent,
        error_percent,
        errors_by_class,
        error_percent_by_class,
        exec_latency,
        state_checks,
        state_losses,
        projected_cost,
        checks,
    }
}

/// Durations (µs) of the successful completed executions that `pred` selects.
fn ok_durations(completed: &[&&Event], pred: &dyn Fn(&Event) -> bool) -> Vec<u64> {
    completed
        .iter()
        .filter(|e| e.error_class.is_none() && pred(e))
        .filter_map(|e| e.duration_seconds)
        .map(seconds_to_micros)
        .collect::<Vec<u64>>()
}

/// The Cloud Run cost projected from backend `name`'s durations, if it is one to price.
fn projected_cost(
    name: &str,
    completed: &[&&Event],
    exec_latency: &Option<Summary>,
    opts: &MetricsOptions,
) -> Option<CostBreakdown> {
    let m = &opts.monitoring;
    if opts.cost_backends.iter().any(|b| b == name) {
        let warm = ok_durations(completed, &|e| {
            e.measurement.as_deref() == Some("warm_exec")
        });
        let mean = Summary::from_micros(warm)
            .or_else(|| exec_latency.clone())
            .map(|s| s.mean_seconds);
        let cold = Summary::from_micros(ok_durations(completed, &|e| {
            e.measurement.as_deref() == Some("cold_start")
        }))
        .map_or(0.0, |s| s.p50_seconds);
        mean.map(|exec_mean_seconds| {
            cost::project(
                &opts.prices,
                &opts.cost_profile,
                &opts.deployment,
                "the default Cloud Run configuration",
                MeasuredDurations {
                    exec_mean_seconds,
                    cold_start_seconds: cold,
                    from_emulator: opts.from_emulator,
                },
                m,
            )
        })
    } else {
        None
    }
}

/// A check's status: no data, alert, target met or missed.
fn three(
    v: Option<f64>,
    target_ok: &dyn Fn(f64) -> bool,
    alert: &dyn Fn(f64) -> bool,
) -> CheckStatus {
    match v {
        None => CheckStatus::NoData,
        Some(v) if alert(v) => CheckStatus::Alert,
        Some(v) if target_ok(v) => CheckStatus::Ok,
        Some(_) => CheckStatus::MissesTarget,
    }
}

/// A status that reached its target with fewer samples than the claim needs says so.
fn enough(status: CheckStatus, n: u64, need: u64) -> CheckStatus {
    if status == CheckStatus::Ok && n < need {
        CheckStatus::InsufficientSamples
    } else {
        status
    }
}

/// Samples needed to claim a failure rate below `percent_allowed` (the rule of three).
fn rule_of_three(percent_allowed: f64) -> u64 {
    crate::acceptance::required_samples(
        crate::suites::Statistic::Rate,
        &crate::suites::Bound {
            cmp: crate::suites::Cmp::Lt,
            value: percent_allowed,
            unit: crate::suites::Unit::Percent,
            range_low: None,
        },
    )
}

/// The execution latency checks: p50 against its target, p99 against target and alert.
fn latency_checks(m: &Monitoring, exec_latency: Option<&Summary>) -> Vec<MonitoringCheck> {
    let p50 = exec_latency.map(|s| s.p50_seconds);
    let p99 = exec_latency.map(|s| s.p99_seconds);
    let exec_n = exec_latency.map_or(0, |s| s.count);
    let mut checks = Vec::new();
    checks.push(MonitoringCheck {
        name: "execution latency p50 (s)".into(),
        threshold: format!("< {} s", m.exec_latency_p50_target_lt_seconds),
        measured: p50,
        status: three(p50, &|v| v < m.exec_latency_p50_target_lt_seconds, &|_| {
            false
        }),
    });
    let p99_name = if exec_n >= P99_MIN_SAMPLES {
        "execution latency p99 (s)".to_string()
    } else {
        format!("execution latency p99 (s): max of {exec_n}, p99 needs {P99_MIN_SAMPLES} samples")
    };
    checks.push(MonitoringCheck {
        name: p99_name,
        threshold: format!(
            "< {} s, alert > {} s",
            m.exec_latency_p99_target_lt_seconds, m.exec_latency_p99_alert_gt_seconds
        ),
        measured: p99,
        status: enough(
            three(p99, &|v| v < m.exec_latency_p99_target_lt_seconds, &|v| {
                v > m.exec_latency_p99_alert_gt_seconds
            }),
            exec_n,
            P99_MIN_SAMPLES,
        ),
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(backend: &str, op: &str, secs: f64, err: Option<&str>) -> Event {
        let mut e = Event::new(EventKind::JobExecutionCompleted, backend);
        e.op = Some(op.into());
        e.measurement = Some("warm_exec".into());
        e.duration_seconds = Some(secs);
        e.error_class = err.map(str::to_string);
        e
    }

    #[test]
    fn rates_latency_and_alerts() {
        let mut evs: Vec<Event> = (0..98)
            .map(|i| completed("cloudrun", "exec_stateful", 1.0 + i as f64 / 100.0, None))
            .collect();
        evs.push(completed(
            "cloudrun",
            "exec_stateful",
            20.0,
            Some("timeout"),
        ));
        evs.push(completed("cloudrun", "file_read", 0.1, Some("network")));
        evs.push(Event::new(EventKind::StateLoss, "cloudrun"));
        let r = from_event_list(&evs, &MetricsOptions::default());
        let b = r.backend("cloudrun").unwrap();
        assert_eq!(b.operations, 100);
        assert_eq!(b.succeeded, 98);
        assert_eq!(b.error_percent, Some(2.0));
        assert_eq!(b.errors_by_class["timeout"], 1);
        assert!(b.exec_latency.as_ref().unwrap().p50_seconds < 3.0);
        assert!(b.alerting());
        let err = b
            .checks
            .iter()
            .find(|c| c.name.starts_with("error rate"))
            .unwrap();
        assert_eq!(err.status, CheckStatus::Alert);
        let st = b
            .checks
            .iter()
            .find(|c| c.name.starts_with("state"))
            .unwrap();
        assert_eq!(st.status, CheckStatus::Alert);
        assert!(b.projected_cost.is_some());
        assert!(r.render().contains("execution latency p99"));
    }
}
