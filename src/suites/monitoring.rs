//! Monitoring thresholds (suites/monitoring.toml).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_MONITORING_TOML, SuiteError, load_toml, parse_toml};

/// Monitoring thresholds (suites/monitoring.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Where in the plan.
    pub citation: String,
    /// p50 execution latency target.
    pub exec_latency_p50_target_lt_seconds: f64,
    /// p99 execution latency target.
    pub exec_latency_p99_target_lt_seconds: f64,
    /// p99 execution latency alert.
    pub exec_latency_p99_alert_gt_seconds: f64,
    /// Error rate target.
    pub error_rate_target_lt_percent: f64,
    /// Error rate alert.
    pub error_rate_alert_gt_percent: f64,
    /// Success rate target (the plan: > 99.5 %).
    #[serde(default = "default_success_target")]
    pub success_rate_target_gt_percent: f64,
    /// Success rate alert (the plan: alert below 99 %).
    #[serde(default = "default_success_alert")]
    pub success_rate_alert_lt_percent: f64,
    /// Monthly cost budget.
    pub cost_budget_usd_per_month: f64,
    /// Monthly cost alert.
    pub cost_alert_gt_usd_per_month: f64,
    /// State consistency target.
    pub state_consistency_target_percent: f64,
    /// Alert when more state losses than this are seen.
    pub state_loss_alert_gt_count: u64,
}

fn default_success_target() -> f64 {
    99.5
}

fn default_success_alert() -> f64 {
    99.0
}

impl Monitoring {
    /// The shipped thresholds.
    pub fn builtin() -> Monitoring {
        parse_toml(DEFAULT_MONITORING_TOML, "<builtin monitoring.toml>")
            .expect("shipped suites/monitoring.toml is valid")
    }

    /// Loads thresholds from a file.
    pub fn load(path: &Path) -> Result<Monitoring, SuiteError> {
        load_toml(path)
    }
}
