//! Monthly cost projection of the Cloud Run backend from measured durations, job resources and a
//! usage profile; prices come from suites/prices.toml so they can be updated without a rebuild.

use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::acceptance::{Monitoring, SuiteError, load_toml, parse_toml};
use crate::bench::{BenchReport, Measurement};

/// The shipped prices.
pub const DEFAULT_PRICES_TOML: &str = include_str!("../suites/prices.toml");
/// The shipped usage profile.
pub const DEFAULT_COST_TOML: &str = include_str!("../suites/cost.toml");

/// Cloud Run jobs prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPrices {
    /// USD per vCPU-second.
    pub vcpu_second_usd: f64,
    /// USD per GiB-second.
    pub gib_second_usd: f64,
}

/// Cloud Storage prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragePrices {
    /// USD per 1,000 class A operations.
    pub class_a_per_1000_ops_usd: f64,
    /// USD per 1,000 class B operations.
    pub class_b_per_1000_ops_usd: f64,
    /// USD per GiB-month of Standard storage.
    pub standard_storage_gib_month_usd: f64,
}

/// suites/prices.toml.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Jobs.
    pub cloud_run_jobs: JobPrices,
    /// Storage.
    pub cloud_storage: StoragePrices,
}

impl Prices {
    /// The shipped prices.
    pub fn builtin() -> Prices {
        parse_toml(DEFAULT_PRICES_TOML, "<builtin prices.toml>")
            .expect("shipped suites/prices.toml is valid")
    }

    /// Loads prices from a file.
    pub fn load(path: &Path) -> Result<Prices, SuiteError> {
        load_toml(path)
    }
}

/// Resources of one worker execution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResources {
    /// vCPUs.
    pub vcpu: f64,
    /// Memory, GiB.
    pub memory_gib: f64,
}

/// Class of a storage operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpClass {
    /// Class A (writes, lists).
    A,
    /// Class B (reads).
    B,
}

/// How the backend is used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageProfile {
    /// Sessions (sandboxes) per day.
    pub sessions_per_day: f64,
    /// Commands per session.
    pub commands_per_session: f64,
    /// Agent think time between commands (worker up and billed), s.
    pub think_time_seconds: f64,
    /// Worker idle timeout after the last command, s.
    pub worker_idle_timeout_seconds: f64,
    /// Days per month.
    pub days_per_month: f64,
    /// Class A operations per command.
    pub class_a_ops_per_command: f64,
    /// Class B operations per command.
    pub class_b_ops_per_command: f64,
    /// Harness outbox polling interval while a command runs, s.
    pub harness_poll_interval_seconds: f64,
    /// Worker inbox polling interval while idle, s.
    pub worker_poll_interval_seconds: f64,
    /// The class of the worker's poll operation.
    pub worker_poll_op_class: OpClass,
    /// Average data kept in the bucket, GiB.
    pub stored_gib: f64,
}

/// suites/cost.toml.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
    /// Job resources.
    pub resources: JobResources,
    /// Usage.
    pub usage: UsageProfile,
}

impl CostProfile {
    /// The shipped profile.
    pub fn builtin() -> CostProfile {
        parse_toml(DEFAULT_COST_TOML, "<builtin cost.toml>")
            .expect("shipped suites/cost.toml is valid")
    }

    /// Loads a profile from a file.
    pub fn load(path: &Path) -> Result<CostProfile, SuiteError> {
        load_toml(path)
    }
}

/// The measured durations the projection uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasuredDurations {
    /// Mean duration of one command, s.
    pub exec_mean_seconds: f64,
    /// Cold start (worker start before the first command), s.
    pub cold_start_seconds: f64,
    /// Where the figures come from.
    pub from_emulator: bool,
}

impl MeasuredDurations {
    /// Takes the mean warm-exec and p50 cold start of `backend` from a report.
    pub fn from_report(report: &BenchReport, backend: &str) -> Option<MeasuredDurations> {
        let b = report.backend(backend)?;
        let exec = b
            .measurements
            .get(&Measurement::WarmExec)
            .and_then(|m| m.latency.as_ref())
            .map(|l| l.mean_seconds)
            .or_else(|| b.exec_latency.as_ref().map(|l| l.mean_seconds))?;
        let cold = b
            .measurements
            .get(&Measurement::ColdStart)
            .and_then(|m| m.latency.as_ref())
            .map_or(0.0, |l| l.p50_seconds);
        Some(MeasuredDurations {
            exec_mean_seconds: exec,
            cold_start_seconds: cold,
            from_emulator: matches!(
                b.origin,
                crate::bench::BackendOrigin::CloudRunEmulator { .. }
            ),
        })
    }
}

/// One line of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostItem {
    /// What.
    pub item: String,
    /// Quantity per month.
    pub quantity: f64,
    /// Unit of the quantity.
    pub unit: String,
    /// USD per unit.
    pub unit_price_usd: f64,
    /// USD per month.
    pub monthly_usd: f64,
}

/// How the projection compares with the plan's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetStatus {
    /// At or below the budget.
    WithinBudget,
    /// Above the budget, at or below the alert.
    OverBudget,
    /// Above the alert threshold.
    Alert,
}

/// The projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    /// Inputs.
    pub measured: MeasuredDurations,
    /// Profile.
    pub profile: CostProfile,
    /// Billed worker seconds per session.
    pub billed_seconds_per_session: f64,
    /// Lines.
    pub items: Vec<CostItem>,
    /// Sum, USD per month.
    pub total_usd_per_month: f64,
    /// Budget, USD per month.
    pub budget_usd_per_month: f64,
    /// Alert threshold, USD per month.
    pub alert_usd_per_month: f64,
    /// Status.
    pub status: BudgetStatus,
}

/// Projects a month of Cloud Run usage.
///
/// Per session the worker is billed from its start (the cold start) through every command and the
/// think time between commands, plus the idle timeout after the last one. Free tiers are ignored.
pub fn project(
    prices: &Prices,
    profile: &CostProfile,
    measured: MeasuredDurations,
    thresholds: &Monitoring,
) -> CostBreakdown {
    let u = &profile.usage;
    let r = &profile.resources;
    let sessions = u.sessions_per_day * u.days_per_month;
    let cmds = sessions * u.commands_per_session;
    let busy = u.commands_per_session * measured.exec_mean_seconds;
    let billed = measured.cold_start_seconds
        + busy
        + u.commands_per_session * u.think_time_seconds
        + u.worker_idle_timeout_seconds;
    let idle = (billed - busy).max(0.0);
    let worker_polls = if u.worker_poll_interval_seconds > 0.0 {
        sessions * idle / u.worker_poll_interval_seconds
    } else {
        0.0
    };
    let harness_polls = if u.harness_poll_interval_seconds > 0.0 {
        cmds * measured.exec_mean_seconds / u.harness_poll_interval_seconds
    } else {
        0.0
    };
    let (mut class_a, mut class_b) = (
        cmds * u.class_a_ops_per_command,
        cmds * u.class_b_ops_per_command + harness_polls,
    );
    match u.worker_poll_op_class {
        OpClass::A => class_a += worker_polls,
        OpClass::B => class_b += worker_polls,
    }
    let jp = &prices.cloud_run_jobs;
    let sp = &prices.cloud_storage;
    let item = |item: &str, quantity: f64, unit: &str, unit_price_usd: f64| CostItem {
        item: item.into(),
        quantity,
        unit: unit.into(),
        unit_price_usd,
        monthly_usd: quantity * unit_price_usd,
    };
    let items = vec![
        item(
            "Cloud Run jobs CPU",
            sessions * billed * r.vcpu,
            "vCPU-s",
            jp.vcpu_second_usd,
        ),
        item(
            "Cloud Run jobs memory",
            sessions * billed * r.memory_gib,
            "GiB-s",
            jp.gib_second_usd,
        ),
        item(
            "Cloud Storage class A (writes, lists, worker polls)",
            class_a / 1000.0,
            "1,000 ops",
            sp.class_a_per_1000_ops_usd,
        ),
        item(
            "Cloud Storage class B (reads, harness polls)",
            class_b / 1000.0,
            "1,000 ops",
            sp.class_b_per_1000_ops_usd,
        ),
        item(
            "Cloud Storage Standard storage",
            u.stored_gib,
            "GiB-month",
            sp.standard_storage_gib_month_usd,
        ),
    ];
    let total: f64 = items.iter().map(|i| i.monthly_usd).sum();
    let status = if total > thresholds.cost_alert_gt_usd_per_month {
        BudgetStatus::Alert
    } else if total > thresholds.cost_budget_usd_per_month {
        BudgetStatus::OverBudget
    } else {
        BudgetStatus::WithinBudget
    };
    CostBreakdown {
        measured,
        profile: *profile,
        billed_seconds_per_session: billed,
        items,
        total_usd_per_month: total,
        budget_usd_per_month: thresholds.cost_budget_usd_per_month,
        alert_usd_per_month: thresholds.cost_alert_gt_usd_per_month,
        status,
    }
}

impl CostBreakdown {
    /// The breakdown as a table with its inputs and verdict.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .items
            .iter()
            .map(|i| {
                vec![
                    i.item.clone(),
                    format!("{:.1} {}", i.quantity, i.unit),
                    format!("${}", i.unit_price_usd),
                    format!("${:.2}", i.monthly_usd),
                ]
            })
            .collect();
        let mut out = crate::report::render_table(
            &["Item", "Quantity / month", "Unit price", "USD / month"],
            &rows,
        );
        let u = &self.profile.usage;
        let _ = writeln!(
            out,
            "\nTotal ${:.2} per month against a ${:.0} budget (alert above ${:.0}): {}.",
            self.total_usd_per_month,
            self.budget_usd_per_month,
            self.alert_usd_per_month,
            match self.status {
                BudgetStatus::WithinBudget => "within budget",
                BudgetStatus::OverBudget => "OVER BUDGET",
                BudgetStatus::Alert => "ALERT",
            }
        );
        let _ = writeln!(
            out,
            "Inputs: {} sessions/day x {} days, {} commands/session, mean command {:.3} s and cold start {:.3} s ({}), think time {} s, idle timeout {} s, {} vCPU / {} GiB: {:.0} billed worker seconds per session. Free tiers ignored.",
            u.sessions_per_day,
            u.days_per_month,
            u.commands_per_session,
            self.measured.exec_mean_seconds,
            self.measured.cold_start_seconds,
            if self.measured.from_emulator {
                "measured on the emulator"
            } else {
                "measured"
            },
            u.think_time_seconds,
            u.worker_idle_timeout_seconds,
            self.profile.resources.vcpu,
            self.profile.resources.memory_gib,
            self.billed_seconds_per_session
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> MeasuredDurations {
        MeasuredDurations {
            exec_mean_seconds: 1.0,
            cold_start_seconds: 5.0,
            from_emulator: true,
        }
    }

    #[test]
    fn shipped_files_parse() {
        let p = Prices::builtin();
        assert_eq!(p.cloud_run_jobs.vcpu_second_usd, 0.000018);
        assert_eq!(p.cloud_run_jobs.gib_second_usd, 0.000002);
        CostProfile::builtin();
    }

    #[test]
    fn hand_computed_projection() {
        let prices = Prices::builtin();
        let mut profile = CostProfile::builtin();
        let u = &mut profile.usage;
        u.sessions_per_day = 10.0;
        u.days_per_month = 30.0;
        u.commands_per_session = 10.0;
        u.think_time_seconds = 0.0;
        u.worker_idle_timeout_seconds = 85.0;
        u.class_a_ops_per_command = 3.0;
        u.class_b_ops_per_command = 2.0;
        u.harness_poll_interval_seconds = 0.0;
        u.worker_poll_interval_seconds = 0.0;
        u.stored_gib = 0.0;
        profile.resources = JobResources {
            vcpu: 1.0,
            memory_gib: 2.0,
        };
        let b = project(&prices, &profile, measured(), &Monitoring::builtin());
        // billed = 5 + 10*1 + 0 + 85 = 100 s/session; 300 sessions -> 30,000 s.
        assert!((b.billed_seconds_per_session - 100.0).abs() < 1e-9);
        let cpu = 30_000.0 * 0.000018;
        let mem = 60_000.0 * 0.000002;
        let a = 9.0 * 0.005; // 9,000 ops
        let bb = 6.0 * 0.0004; // 6,000 ops
        assert!(
            (b.total_usd_per_month - (cpu + mem + a + bb)).abs() < 1e-9,
            "{}",
            b.total_usd_per_month
        );
        assert_eq!(b.status, BudgetStatus::WithinBudget);
        assert!(b.render().contains("within budget"));
    }

    #[test]
    fn the_cost_profile_prices_the_job_the_backend_configures() {
        let cfg = crate::backends::cloudrun::CloudRunConfig::default();
        let r = CostProfile::builtin().resources;
        assert_eq!(cfg.cpu.parse::<f64>().ok(), Some(r.vcpu));
        let mib: f64 = cfg.memory.strip_suffix("Mi").unwrap().parse().unwrap();
        assert_eq!(mib / 1024.0, r.memory_gib);
    }

    #[test]
    fn budget_and_alert() {
        let prices = Prices::builtin();
        let mut profile = CostProfile::builtin();
        profile.usage.sessions_per_day = 100_000.0;
        let b = project(&prices, &profile, measured(), &Monitoring::builtin());
        assert_eq!(b.status, BudgetStatus::Alert);
    }
}
