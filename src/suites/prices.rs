//! Prices (suites/prices.toml) and the usage profile (suites/cost.toml) the cost projection
//! (`cost`) prices a deployment with.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{SuiteError, load_toml, parse_toml};

/// The shipped prices.
pub const DEFAULT_PRICES_TOML: &str = include_str!("../../suites/prices.toml");
/// The shipped usage profile.
pub const DEFAULT_COST_TOML: &str = include_str!("../../suites/cost.toml");

/// Cloud Run jobs prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPrices {
    /// USD per vCPU-second.
    pub vcpu_second_usd: f64,
    /// USD per GiB-second.
    pub gib_second_usd: f64,
    /// Seconds billed at least for each instance (execution) started (60 when a prices file
    /// predates this field).
    #[serde(default = "one_minute")]
    pub min_billed_seconds_per_instance: f64,
}

fn one_minute() -> f64 {
    60.0
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
    /// Days per month.
    pub days_per_month: f64,
    /// Class A operations per command besides polls and heartbeats.
    pub class_a_ops_per_command: f64,
    /// Class B operations per command besides polls.
    pub class_b_ops_per_command: f64,
    /// Average data kept in the bucket, GiB.
    pub stored_gib: f64,
}

/// suites/cost.toml: how the backend is used (the deployment comes from the backend's
/// configuration, [`Deployment`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
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
