//! The suites: every `suites/*.toml` file as typed data, and its loading and validation.
//!
//! This is the ground floor of the upper half: the bench measures what the tables name, the
//! acceptance module judges a bench report against them, the gates read the phases, the cost
//! projection the prices and usage profile, the twin its latency profiles. Nothing here
//! measures or judges.

pub mod faults;
pub mod health;
pub mod monitoring;
pub mod phases;
pub mod prices;
pub mod profile;
pub mod tables;

use std::path::Path;

pub use health::{HealthEndpoint, HealthTable};
pub use monitoring::Monitoring;
pub use phases::{GateCheck, GateSpec, Phase, PhaseFile};
pub use prices::{CostProfile, Prices, UsageProfile};
pub use profile::LatencyProfile;
pub use tables::{
    Bound, BoundSpec, Cmp, Level, MetricId, Row, RowSource, RowVerdict, Statistic, Table, Tables,
    Unit, Verdict,
};

/// The suites shipped with the harness (used when no file is given).
pub const DEFAULT_ACCEPTANCE_TOML: &str = include_str!("../../suites/acceptance.toml");
/// The shipped monitoring thresholds.
pub const DEFAULT_MONITORING_TOML: &str = include_str!("../../suites/monitoring.toml");
/// The shipped health endpoint table.
pub const DEFAULT_HEALTH_TOML: &str = include_str!("../../suites/health.toml");
/// The shipped phase gates.
pub const DEFAULT_PHASES_TOML: &str = include_str!("../../suites/phases.toml");

/// Failure to load or validate a suite file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("cannot parse {path}: {detail}")]
    Parse {
        /// The file (or "<builtin>").
        path: String,
        /// Why.
        detail: String,
    },
    /// The file parsed but a value is inconsistent.
    #[error("invalid {path}: {detail}")]
    Invalid {
        /// The file (or "<builtin>").
        path: String,
        /// Why.
        detail: String,
    },
}

/// Reads and parses a TOML suite file.
pub(crate) fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text; `origin` names it in errors.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, SuiteError> {
    toml::from_str(text).map_err(|e| SuiteError::Parse {
        path: origin.to_string(),
        detail: e.to_string(),
    })
}

/// Every suite file, loaded from a directory (each file falls back to the shipped copy when the
/// directory does not hold it).
#[derive(Debug, Clone)]
pub struct Suites {
    /// acceptance.toml
    pub tables: Tables,
    /// monitoring.toml
    pub monitoring: Monitoring,
    /// health.toml
    pub health: HealthTable,
    /// phases.toml
    pub phases: PhaseFile,
    /// prices.toml
    pub prices: Prices,
    /// cost.toml
    pub cost_profile: CostProfile,
}

impl Suites {
    /// The shipped suites.
    pub fn builtin() -> Suites {
        Suites {
            tables: Tables::builtin(),
            monitoring: Monitoring::builtin(),
            health: HealthTable::builtin(),
            phases: PhaseFile::builtin(),
            prices: Prices::builtin(),
            cost_profile: CostProfile::builtin(),
        }
    }

    /// Loads the suites in `dir` (e.g. `suites/`); `None` gives the shipped ones.
    pub fn load(dir: Option<&Path>) -> Result<Suites, SuiteError> {
        let mut s = Suites::builtin();
        let Some(dir) = dir else { return Ok(s) };
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        if let Some(p) = file("acceptance.toml") {
            s.tables = Tables::load(&p)?;
        }
        if let Some(p) = file("monitoring.toml") {
            s.monitoring = Monitoring::load(&p)?;
        }
        if let Some(p) = file("health.toml") {
            s.health = HealthTable::load(&p)?;
        }
        if let Some(p) = file("phases.toml") {
            s.phases = PhaseFile::load(&p)?;
        }
        if let Some(p) = file("prices.toml") {
            s.prices = Prices::load(&p)?;
        }
        if let Some(p) = file("cost.toml") {
            s.cost_profile = CostProfile::load(&p)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod suite_tests {
    use super::*;

    #[test]
    fn suites_dir_overrides_the_shipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let prices = prices::DEFAULT_PRICES_TOML.replace("0.000018", "0.5");
        std::fs::write(dir.path().join("prices.toml"), prices).unwrap();
        let s = Suites::load(Some(dir.path())).unwrap();
        assert_eq!(s.prices.cloud_run_jobs.vcpu_second_usd, 0.5);
        assert_eq!(s.tables, Tables::builtin());
        std::fs::write(dir.path().join("monitoring.toml"), "nonsense = 1").unwrap();
        assert!(Suites::load(Some(dir.path())).is_err());
    }
}
