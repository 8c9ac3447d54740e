//! The health endpoint table (suites/health.toml).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_HEALTH_TOML, SuiteError, load_toml, parse_toml};

/// One health endpoint's latency thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthEndpoint {
    /// "/health", "/ready", "/live".
    pub path: String,
    /// Target: below this.
    pub target_lt_ms: f64,
    /// What the plan expects typically.
    pub typical_ms: f64,
    /// Beyond this the endpoint fails.
    pub max_acceptable_ms: f64,
}

/// The health endpoint table (suites/health.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTable {
    /// Where in the plan.
    pub citation: String,
    /// Endpoints.
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<HealthEndpoint>,
}

impl HealthTable {
    /// The shipped table.
    pub fn builtin() -> HealthTable {
        parse_toml(DEFAULT_HEALTH_TOML, "<builtin health.toml>")
            .expect("shipped suites/health.toml is valid")
    }

    /// Loads the table from a file.
    pub fn load(path: &Path) -> Result<HealthTable, SuiteError> {
        load_toml(path)
    }
}
